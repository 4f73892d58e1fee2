"""Time fastgd's backends against the tight NumPy loop (and scikit-learn) in one run.

Usage::

    python benchmarks/compare_backends.py            # the figures quoted in README
    python benchmarks/compare_backends.py --quick    # small sizes, a smoke test
    python benchmarks/compare_backends.py --optimizer adam --batch-sizes 32

The baseline (``numpy-loop``) is the tightest plain-NumPy SGD loop a user would write
(contiguous slices, BLAS on the same threads: :mod:`fastgd.bench.numpy_loop`); fastgd's
NumPy *reference backend* is a separate row (``numpy``). Times are wall times of the whole
``fit`` call (validation included); ``kernel`` is fastgd's training time alone, and
``of limit`` its bytes of X per second as a share of the streaming read bandwidth, the
median over the repeats of each fit's share of a reading taken just before it
(:mod:`fastgd.bench.roofline`).

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
from fastgd import _config
from fastgd.backends import available_backends
from fastgd.bench import roofline
from fastgd.bench.models import MODELS
from fastgd.bench.numpy_loop import run_numpy_loop
from fastgd.bench.system import blas_info as _blas_info
from fastgd.bench.system import pin_threads as _blas_threads


def make_data(n, d, seed=0, classes=1):
    """Dense float64 data: regression ``y = X w + 1 + noise``, or with ``classes`` > 1
    labels ``argmax(X W + noise)`` for softmax regression."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if classes > 1:
        scores = X @ rng.standard_normal((d, classes)) + rng.standard_normal((n, classes))
        return X, scores.argmax(axis=1)
    y = X @ rng.standard_normal(d) + 1.0 + 0.1 * rng.standard_normal(n)
    return X, y


def model_of(y):
    """``"softmax"`` for integer labels, else ``"linear"`` (the mean squared error)."""
    return "softmax" if y.dtype.kind in "iu" else "linear"


def time_fit(
    X, y, backend, batch_size, epochs, lr, threads, repeats, optimizer="sgd", shuffle=False,
    limit=None,
):  # fmt: skip
    """Median wall time of the whole ``fastgd.fit`` call (compile excluded: warmed up
    first), the median kernel time, the last result, the warm-up's compile time and the
    median share of the streaming limit (None without ``limit``).

    ``limit``: a :func:`fastgd.bench.roofline.stream_reader`, read just before each
    repeat; each repeat's bytes of X per second over its own reading give its share."""
    options = dict(model=model_of(y), batch_size=batch_size, epochs=epochs, lr=lr, seed=0,
                   optimizer=optimizer, backend=backend, n_threads=threads, shuffle=shuffle)  # fmt: skip
    compile_s = fastgd.fit(X, y, **options).compile_time
    walls, kernels, shares = [], [], []
    for _ in range(repeats):
        bandwidth = limit() if limit else None
        started = time.perf_counter()
        result = fastgd.fit(X, y, **options)
        walls.append(time.perf_counter() - started)
        kernels.append(result.train_time)
        if bandwidth:
            shares.append(X.nbytes * epochs / result.train_time / bandwidth)
    share = statistics.median(shares) if shares else None
    return statistics.median(walls), statistics.median(kernels), result, compile_s, share


def time_numpy_loop(X, y, batch_size, epochs, lr, threads, repeats, shuffle):
    """The tight NumPy loop (plain SGD only): median time and its final parameters."""
    times, outcome = [], None
    for _ in range(repeats):
        outcome = run_numpy_loop(MODELS[model_of(y)], X, y, batch_size=batch_size, epochs=epochs,
                                 lr=lr, seed=0, threads=threads, shuffle=shuffle)  # fmt: skip
        times.append(outcome.seconds)
    return statistics.median(times), outcome.params


def time_sklearn_sgd(X, y, epochs, lr, repeats, shuffle):
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
                             eta0=2 * lr, max_iter=epochs, tol=None, shuffle=shuffle, random_state=0)  # fmt: skip
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
        median, _, result, _, _ = time_fit(X, y, backend, None, 1000, 0.1, None, repeats)
        assert abs(result.coef_[0] - w) < 1e-9, (backend, result.coef_, w)
        rows[f"fastgd {backend}"] = (median, result.coef_[0])
    return rows


def batch_rows(X, y, args, batch_size, text, backends, limit=None):
    """Rows of one batch size: every backend (checked against the reference), the NumPy
    loop (plain SGD) and scikit-learn (batch size 1), with ratios to the NumPy loop;
    fastgd's shares of the streaming limit read before each repeat (``limit``)."""
    results = {}
    if args.optimizer == "sgd" and not (batch_size == 1 and args.rows > 50_000):
        seconds, params = time_numpy_loop(X, y, batch_size, args.epochs, args.lr, args.threads,
                                          args.repeats, args.shuffle)  # fmt: skip
        results["numpy-loop"] = dict(fit_s=seconds, params=params)
    for backend in backends:
        if backend == "numpy" and batch_size == 1 and args.rows > 50_000:
            continue  # millions of Python-level steps: minutes, not informative
        wall, kernel, result, compile_s, share = time_fit(
            X, y, backend, batch_size, args.epochs, args.lr, args.threads, args.repeats,
            args.optimizer, args.shuffle, limit,
        )  # fmt: skip
        results[backend] = dict(fit_s=wall, kernel_s=kernel, params=result.params,
                                compile_s=compile_s, coef=result.coef_, of_limit=share)  # fmt: skip
    _check(results)
    sk_time = None
    if batch_size == 1 and args.optimizer == "sgd" and args.classes == 1:
        sk_time, sk_model = time_sklearn_sgd(
            X, y, args.epochs, args.lr, args.repeats, bool(args.shuffle)
        )
        if sk_model is not None:  # in order: the same updates; shuffled: its own order
            gap = np.abs(sk_model.coef_ - results[backends[0]]["coef"]).max()
            assert gap < (0.05 if args.shuffle else 1e-8), (
                f"scikit-learn and fastgd disagree by {gap}"
            )
            results["scikit-learn"] = dict(fit_s=sk_time)
    base = results.get("numpy-loop", {}).get("fit_s")
    return [dict(batch_size=text, impl=impl, fit_s=r["fit_s"], kernel_s=r.get("kernel_s"),
                 speedup_vs_loop=base / r["fit_s"] if base else None,
                 speedup_vs_sklearn=sk_time / r["fit_s"] if sk_time else None,
                 compile_s=r.get("compile_s"), of_limit=r.get("of_limit"))
            for impl, r in results.items()]  # fmt: skip


def _check(results):
    """Every implementation's parameters against the NumPy reference backend's (without
    it, against the NumPy loop's, which makes the same updates)."""
    reference = results.get("numpy", results.get("numpy-loop"))
    if reference is None:
        return
    reference = reference["params"]
    for impl, r in results.items():
        np.testing.assert_allclose(r["params"], reference, rtol=1e-8, atol=1e-10,
                                   err_msg=f"{impl} differs from numpy")  # fmt: skip


def print_row(row):
    def fmt(value, spec, suffix=""):
        return "-" if value is None else f"{value:{spec}}{suffix}"

    print(f"{row['batch_size']:>7} {row['impl']:<14}{row['fit_s']:>9.4f}"
          f"{fmt(row['kernel_s'], '.4f'):>10}{fmt(row['speedup_vs_loop'], '.2f', 'x'):>9}"
          f"{fmt(row['speedup_vs_sklearn'], '.2f', 'x'):>11}"
          f"{fmt(row['of_limit'] and 100 * row['of_limit'], '.0f', '%'):>10}"
          f"  {fmt(row['compile_s'], '.3f')}")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--classes", type=int, default=1, help="> 1: softmax regression with this many classes"
    )
    parser.add_argument("--batch-sizes", default="1,32,256,full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="sgd", help="sgd, adagrad, rmsprop, adam, adamw")
    parser.add_argument("--quick", action="store_true", help="20,000 x 20, one repeat")
    parser.add_argument(
        "--shuffle", nargs="?", const="rows", default=False, choices=("rows", "blocks"),
        help="shuffle rows each epoch (default: in order); --shuffle blocks: blocks of rows",
    )  # fmt: skip
    parser.add_argument(
        "--block-rows", type=int, default=None,
        help="rows per block of --shuffle blocks (default: fastgd._config.SHUFFLE_BLOCK_ROWS)",
    )  # fmt: skip
    parser.add_argument("--backends", default=None, help="comma-separated (default: all available)")
    parser.add_argument("--json", default="benchmarks/results/compare_backends.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.repeats = 20_000, 20, 1
    if args.block_rows:  # read by fastgd.training.orders at every epoch
        _config.SHUFFLE_BLOCK_ROWS = args.block_rows

    X, y = make_data(args.rows, args.features, classes=args.classes)
    backends = args.backends.split(",") if args.backends else available_backends()
    print(
        f"data: {args.rows} x {args.features} float64, {model_of(y)}, {args.epochs} epochs, "
        f"{args.optimizer}, lr={args.lr}"
    )
    if args.shuffle:
        blocks = f" of {_config.SHUFFLE_BLOCK_ROWS} rows" if args.shuffle == "blocks" else ""
        print(f"shuffle: {args.shuffle}{blocks}")
    print(f"threads: {args.threads}; BLAS: {_blas_info()}; backends: {', '.join(backends)}")
    print(f"{'batch':>7} {'impl':<14}{'fit s':>9}{'kernel s':>10}{'vs loop':>9}"
          f"{'vs sklearn':>11}{'of limit':>10}  compile s")  # fmt: skip
    records, streams = [], []
    with _blas_threads(args.threads):
        for text in args.batch_sizes.split(","):
            batch_size = None if text == "full" else int(text)
            # the limit is read again before each timed fit: on a shared machine it moves
            # by a sixth from one minute to the next, and the shares with it
            limit = roofline.stream_reader(args.threads) if not args.quick else None
            stream = limit() if limit else None
            if stream:
                streams.append(stream)
                print(f"streaming read limit ({args.threads} threads): {stream / 1e9:.1f} GB/s"
                      " (and again before each timed fit)")  # fmt: skip
            for row in batch_rows(X, y, args, batch_size, text, backends, limit):
                row["stream_read_bps"] = stream
                records.append(row)
                print_row(row)
            del limit  # its 800 MiB array

    print("\ndemo: 1000 full-batch steps on 100 points")
    demo = time_demo(max(args.repeats, 5))
    base = demo["plain NumPy loop"][0]
    for name, (median, _) in demo.items():
        print(f"  {name:<20}{median * 1e3:>9.3f} ms {base / median:>8.1f}x")
        records.append(dict(batch_size="demo", impl=name, fit_s=median, speedup_vs_loop=base / median))  # fmt: skip

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(args=vars(args), blas=_blas_info(), stream_read_bps=streams,
                                    results=records), indent=1))  # fmt: skip
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
