"""Time to the optimum of L2 logistic regression: fastgd's Newton and L-BFGS against
scikit-learn's ``newton-cholesky`` and ``lbfgs``, and fastgd's SGD and Adam in the same time.

Float64, synthetic data, ``C = 1`` (fastgd ``alpha = 1 / (C n)``), 2 threads on both sides
(BLAS pinned with threadpoolctl). The optimum ``f*`` is the lowest objective any solver
reached; a run "reaches" it when its final objective is within 1e-8 relative. Each solver
runs ``--repeat`` times; the table shows medians and the ratio to fastgd.

Run (unset the OpenBLAS overrides of this machine class for a fair NumPy/SciPy BLAS)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/second_order.py \
        --shapes 1000000x100 100000x1000 --threads 2 --repeat 3
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

import fastgd
from fastgd.backends import get_backend
from fastgd.backends.blas import blas_threads
from fastgd.backends.contract import Data, LinearModel
from fastgd.optim import LBFGS, Newton

TARGET = 1e-8


def make_data(n, d, seed=0):
    """Features of different scales, labels from a logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X *= rng.uniform(0.5, 2.0, d)
    z = X @ (rng.standard_normal(d) / np.sqrt(d)) + 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return X, y


def objective(X, y, coef, intercept, alpha, backend):
    """The penalised mean objective (fastgd's = scikit-learn's / (C n)), in float64."""
    model = LinearModel(1, 1, True)
    params = np.append(np.ravel(coef), np.ravel(intercept)).astype(np.float64)
    loss, _, _ = backend.loss_gradient_hessian(
        model, Data(X, y[:, None].astype(X.dtype), np.empty(0)), params, 2, hessian=False
    )
    w = params[:-1]
    return loss + 0.5 * alpha * float(w @ w)


def run_fastgd(X, y, alpha, threads, optimizer, backend, **kw):
    started = time.perf_counter()
    r = fastgd.fit(X, y, "logistic", optimizer=optimizer, penalty="l2", alpha=alpha,
                   n_threads=threads, backend=backend, **kw)  # fmt: skip
    return time.perf_counter() - started, r.coef_, r.intercept_, r.n_epochs


def run_sklearn(X, y, C, threads, solver):
    with blas_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        sk = LogisticRegression(C=C, solver=solver, tol=1e-8, max_iter=1000).fit(X, y)
    return time.perf_counter() - started, sk.coef_, sk.intercept_, int(sk.n_iter_[0])


def first_order(X, y, alpha, threads, optimizer, budget, lr, backend):
    """Epochs until ``budget`` seconds have passed (the callback stops the fit)."""
    options = dict(optimizer=optimizer, lr=lr, penalty="l2", alpha=alpha, batch_size=256,
                   n_threads=threads, seed=0, backend=backend)  # fmt: skip
    fastgd.fit(X[:1000], y[:1000], "logistic", epochs=1, **options)  # compile / load first
    started = time.perf_counter()
    r = fastgd.fit(X, y, "logistic", epochs=10_000, **options,
                   callback=lambda e, info: time.perf_counter() - started > budget)  # fmt: skip
    return time.perf_counter() - started, r.coef_, r.intercept_, r.n_epochs


def case(n, d, threads, repeat, backend):
    X, y = make_data(n, d)
    C = 1.0
    alpha = 1.0 / (C * n)
    ev = get_backend(backend)
    runs = {
        "fastgd newton": lambda: run_fastgd(X, y, alpha, threads, Newton(tol=1e-8), backend),
        "sklearn newton-cholesky": lambda: run_sklearn(X, y, C, threads, "newton-cholesky"),
        "fastgd lbfgs": lambda: run_fastgd(X, y, alpha, threads, LBFGS(tol=1e-8), backend, epochs=1000),
        "sklearn lbfgs": lambda: run_sklearn(X, y, C, threads, "lbfgs"),
    }  # fmt: skip
    rows = {}
    for name, call in runs.items():
        call() if name.startswith("fastgd") and not rows else None  # compile / load once
        times, out = [], None
        for _ in range(repeat):
            t, coef, b, iters = call()
            times.append(t)
            out = (coef, b, iters)
        rows[name] = [float(np.median(times)), objective(X, y, out[0], out[1], alpha, ev), out[2]]
    budget = rows["fastgd newton"][0]
    for name, lr in (("sgd", 0.05), ("adam", 1e-3)):
        t, coef, b, epochs = first_order(X, y, alpha, threads, name, budget, lr, backend)
        rows[f"fastgd {name} ({epochs} epochs)"] = [t, objective(X, y, coef, b, alpha, ev), epochs]
    best = min(v[1] for v in rows.values())
    print(f"\n{n:,} x {d}, float64, {threads} threads, backend={backend}, median of {repeat}")
    print("| solver | time (s) | iterations | rel. gap to f* | reached 1e-8 | vs fastgd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (t, f, iters) in rows.items():
        ref = rows["fastgd lbfgs" if "lbfgs" in name else "fastgd newton"][0]
        gap = (f - best) / abs(best)
        print(f"| {name} | {t:.3f} | {iters} | {gap:.1e} | {'yes' if gap <= TARGET else 'no'} "
              f"| {t / ref:.2f}x |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1000000x100", "100000x1000"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", default="cython")
    args = parser.parse_args()
    for shape in args.shapes:
        n, d = map(int, shape.split("x"))
        case(n, d, args.threads, args.repeat, args.backend)


if __name__ == "__main__":
    main()
