"""Time fastgd's backends against the NumPy baseline (and scikit-learn) in one run.

Usage::

    python benchmarks/compare_backends.py            # the figures quoted in README
    python benchmarks/compare_backends.py --quick    # small sizes, a smoke test
    python benchmarks/compare_backends.py --optimizer adam --batch-sizes 32

Fairness rules: every side runs the same algorithm (the mean squared error, the same optimizer,
same learning rate, same number of epochs and updates); fastgd backends see the same
batches (same seed) and their final parameters are checked against the NumPy reference
before any time is reported; compile time is measured apart and not counted; BLAS and
fastgd use the same number of threads (threadpoolctl); the median of the repeats is
reported, with ratios taken within this one run.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastgd
from fastgd.backends import available_backends
from fastgd.bench.system import blas_info as _blas_info
from fastgd.bench.system import pin_threads as _blas_threads


def make_data(n, d, seed=0):
    """Dense float64 regression data: y = X w + 1 + noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 1.0 + 0.1 * rng.standard_normal(n)
    return X, y


def time_fit(X, y, backend, batch_size, epochs, lr, threads, repeats, optimizer="sgd"):
    """Median train time of ``fastgd.fit`` (compile excluded) and the last result."""
    times = []
    for _ in range(repeats):
        result = fastgd.fit(X, y, batch_size=batch_size, epochs=epochs, lr=lr, seed=0, optimizer=optimizer,
                            backend=backend, n_threads=threads)  # fmt: skip
        times.append(result.train_time)
    return statistics.median(times), result


def time_sklearn_sgd(X, y, epochs, lr, repeats):
    """scikit-learn's SGDRegressor with the same per-sample updates (or None if absent).

    Its squared loss is ``0.5 (p - y)**2``, whose gradient is half of fastgd's mean squared
    error gradient, so ``eta0 = 2 lr`` makes the updates equal.
    """
    try:
        from sklearn.linear_model import SGDRegressor
    except ImportError:
        return None, None
    times = []
    for _ in range(repeats):
        model = SGDRegressor(loss="squared_error", penalty=None, learning_rate="constant",
                             eta0=2 * lr, max_iter=epochs, tol=None, shuffle=True, random_state=0)  # fmt: skip
        started = time.perf_counter()
        model.fit(X, y)
        times.append(time.perf_counter() - started)
    return statistics.median(times), model


def time_demo(repeats):
    """The demo: 1000 full-batch steps on 100 points, plain NumPy loop against fastgd."""
    from fastgd.demo import make_data as demo_data
    from fastgd.demo import plain_numpy_loop

    X, y = demo_data()
    rows = {}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        w, b = plain_numpy_loop(X, y, lr=0.1, steps=1000)
        times.append(time.perf_counter() - started)
    rows["plain NumPy loop"] = (statistics.median(times), w)
    for backend in available_backends():
        median, result = time_fit(X, y, backend, None, 1000, 0.1, None, repeats)
        assert abs(result.coef_[0] - w) < 1e-9, (backend, result.coef_, w)
        rows[f"fastgd {backend}"] = (median, result.coef_[0])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32,256,full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="sgd", help="sgd, adagrad, rmsprop, adam, adamw")
    parser.add_argument("--quick", action="store_true", help="20,000 x 20, one repeat")
    parser.add_argument("--json", default="benchmarks/results/compare_backends.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.repeats = 20_000, 20, 1

    X, y = make_data(args.rows, args.features)
    backends = available_backends()
    print(
        f"data: {args.rows} x {args.features} float64, {args.epochs} epochs, {args.optimizer}, lr={args.lr}"
    )
    print(f"threads: {args.threads}; BLAS: {_blas_info()}; backends: {', '.join(backends)}")
    records = []
    header = (
        f"{'batch':>7} {'backend':<16}{'median s':>10}{'vs numpy':>10}{'vs sklearn':>11}  compile s"
    )
    print(header)
    with _blas_threads(args.threads):
        for text in args.batch_sizes.split(","):
            batch_size = None if text == "full" else int(text)
            results = {}
            for backend in backends:
                if backend == "numpy" and batch_size == 1 and args.rows > 50_000:
                    continue  # millions of Python-level steps: minutes, not informative
                results[backend] = time_fit(X, y, backend, batch_size, args.epochs, args.lr,
                                            args.threads, args.repeats, args.optimizer)  # fmt: skip
            if "numpy" in results:
                reference = results["numpy"][1].params
                for backend, (_, result) in results.items():
                    np.testing.assert_allclose(result.params, reference, rtol=1e-8, atol=1e-10,
                                               err_msg=f"{backend} differs from numpy")  # fmt: skip
            sk_time = None
            if batch_size == 1 and args.optimizer == "sgd":
                sk_time, sk_model = time_sklearn_sgd(X, y, args.epochs, args.lr, args.repeats)
                if sk_model is not None:  # different shuffles: both near the same solution
                    ours = results[backends[0]][1]
                    gap = np.abs(sk_model.coef_ - ours.coef_).max()
                    assert gap < 0.05, f"scikit-learn and fastgd disagree by {gap}"
                    results["scikit-learn"] = (sk_time, None)
            base = results["numpy"][0] if "numpy" in results else None
            for backend, (median, result) in results.items():
                row = dict(batch_size=text, backend=backend, median_s=median,
                           speedup_vs_numpy=base / median if base else None,
                           speedup_vs_sklearn=sk_time / median if sk_time else None,
                           compile_s=result.compile_time if result else None)  # fmt: skip
                records.append(row)
                print(f"{text:>7} {backend:<16}{median:>10.4f}"
                      f"{f'{base / median:.2f}x' if base else '-':>10}"
                      f"{f'{sk_time / median:.2f}x' if sk_time else '-':>11}"
                      f"  {row['compile_s'] if row['compile_s'] is not None else '-'}")  # fmt: skip

    print("\ndemo: 1000 full-batch steps on 100 points")
    demo = time_demo(max(args.repeats, 5))
    base = demo["plain NumPy loop"][0]
    for name, (median, _) in demo.items():
        print(f"  {name:<20}{median * 1e3:>9.3f} ms {base / median:>8.1f}x")
        records.append(dict(batch_size="demo", backend=name, median_s=median, speedup_vs_numpy=base / median))  # fmt: skip

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(args=vars(args), blas=_blas_info(), results=records), indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
