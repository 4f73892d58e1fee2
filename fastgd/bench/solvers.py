"""The second-order part of the benchmark: time to the optimum of L2 logistic regression.

fastgd's ``newton`` and ``lbfgs`` (one row per backend) against scikit-learn's
``LogisticRegression(solver="newton-cholesky" | "lbfgs")``, and fastgd's plain SGD and Adam
given the time Newton took. Float64 synthetic data, ``C = 1`` (fastgd's
``alpha = 1 / (C n)`` gives the same optimum), the same threads on every side (BLAS pinned
with threadpoolctl). The optimum ``f*`` is the lowest objective any run reached; a run
"reaches" it when its final objective is within :data:`TARGET` of it, relatively.

Used by ``fastgd bench`` (its "Second-order solvers" table) and by
``benchmarks/second_order.py`` (larger shapes).
"""

import time
import warnings

import numpy as np

import fastgd

from ..backends import get_backend
from ..backends.blas import blas_threads
from ..backends.contract import Data, LinearModel
from ..optim import LBFGS, Newton
from ..specs import losses

TARGET = 1e-8
C = 1.0


def make_data(n, d, seed=0):
    """Features of different scales (so the problem is not trivially conditioned) and
    labels drawn from a logistic model.

    Parameters
    ----------
    n, d : int
    seed : int, default 0

    Returns
    -------
    X : ndarray of shape (n, d), float64
    y : ndarray of shape (n,), int64 labels 0/1
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X *= rng.uniform(0.5, 2.0, d)
    z = X @ (rng.standard_normal(d) / np.sqrt(d)) + 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return X, y


def objective(X, y, coef, intercept, alpha):
    """fastgd's penalised mean objective (scikit-learn's divided by ``C n``), in float64,
    evaluated by the NumPy reference for every run alike."""
    model = LinearModel(losses.BINARY_CROSS_ENTROPY, 1, True)
    params = np.append(np.ravel(coef), np.ravel(intercept)).astype(np.float64)
    data = Data(X, y[:, None].astype(X.dtype), np.empty(0, dtype=X.dtype))
    loss, _ = get_backend("numpy").loss_and_gradient(model, data, params)
    w = params[:-1]
    return loss + 0.5 * alpha * float(w @ w)


def _fastgd(X, y, threads, backend, optimizer, **options):
    """One fastgd fit: ``(seconds, coef, intercept, iterations)``."""
    started = time.perf_counter()
    r = fastgd.fit(X, y, "logistic", optimizer=optimizer, penalty="l2", alpha=1.0 / (C * len(y)),
                   n_threads=threads, backend=backend, **options)  # fmt: skip
    return time.perf_counter() - started, r.coef_, r.intercept_, r.n_epochs


def _sklearn(X, y, threads, solver):
    """One scikit-learn fit at ``tol=1e-8`` (its iterations stop on its own gradient rule)."""
    from sklearn.linear_model import LogisticRegression

    with blas_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        sk = LogisticRegression(C=C, solver=solver, tol=1e-8, max_iter=1000).fit(X, y)
    return time.perf_counter() - started, sk.coef_, sk.intercept_, int(sk.n_iter_[0])


def _first_order(X, y, threads, backend, name, budget):
    """SGD or Adam (batch 256) stopped by a callback once ``budget`` seconds have passed."""
    lr = 0.05 if name == "sgd" else 1e-3
    options = dict(lr=lr, batch_size=256, seed=0)
    _fastgd(X[:512], y[:512], threads, backend, name, epochs=1, **options)  # compile / load
    started = time.perf_counter()
    stop = lambda epoch, info: time.perf_counter() - started > budget  # noqa: E731
    return _fastgd(X, y, threads, backend, name, epochs=100_000, callback=stop, **options)


def _runs(X, y, threads, backends):
    """``{label: call}`` of the exact solvers: fastgd per backend, then scikit-learn."""
    runs = {}
    for solver, make in (("newton", lambda: Newton(tol=1e-8)), ("lbfgs", lambda: LBFGS(tol=1e-8))):
        for b in backends:
            runs[f"fastgd {solver} ({b})"] = lambda b=b, m=make: _fastgd(
                X, y, threads, b, m(), epochs=1000
            )
        try:
            import sklearn  # noqa: F401
        except ImportError:
            continue
        sk = "newton-cholesky" if solver == "newton" else "lbfgs"
        runs[f"scikit-learn {sk}"] = lambda s=sk: _sklearn(X, y, threads, s)
    return runs


def solver_case(n, d, threads, backends, repeats=3, log=print):
    """Time every solver to the optimum of one ``n x d`` problem.

    Parameters
    ----------
    n, d : int
        Rows and features of the synthetic data (:func:`make_data`).
    threads : int
        Threads of every side.
    backends : sequence of str
        fastgd backends to run (the NumPy reference is slow at these sizes; leave it out).
    repeats : int, default 3
        Rounds of timed runs, every solver once per round (the median is reported); each
        solver is warmed up once first.
    log : callable

    Returns
    -------
    list of dict
        One record per solver: ``shape, threads, solver, family`` (``"newton"``,
        ``"lbfgs"`` or ``"first-order"``), ``median_s``, ``iterations``, ``gap`` (relative
        to the best objective of the case), ``reached`` and ``vs`` (time relative to the
        fastest fastgd run of the same family).
    """
    X, y = make_data(n, d)
    alpha = 1.0 / (C * n)
    runs = _runs(X, y, threads, backends)
    for call in runs.values():
        call()  # compile, load or warm the BLAS
    # round-robin: every solver runs once per round, so load from other processes on a
    # shared machine spreads over all of them instead of falling on one
    times, outs = {label: [] for label in runs}, {}
    for _ in range(repeats):
        for label, call in runs.items():
            seconds, coef, intercept, iterations = call()
            times[label].append(seconds)
            outs[label] = (coef, intercept, iterations)
    records = []
    for label, (coef, intercept, iterations) in outs.items():
        records.append(dict(solver=label, family="newton" if "newton" in label else "lbfgs",
                            median_s=float(np.median(times[label])), iterations=iterations,
                            objective=objective(X, y, coef, intercept, alpha)))  # fmt: skip
        log(f"  {n} x {d}: {label} {records[-1]['median_s']:.3f} s")
    budget = min(r["median_s"] for r in records if r["solver"].startswith("fastgd newton"))
    for name in ("sgd", "adam"):
        seconds, coef, intercept, epochs = _first_order(X, y, threads, backends[0], name, budget)
        records.append(dict(solver=f"fastgd {name} ({backends[0]}, batch 256, {epochs} epochs)",
                            family="first-order", median_s=seconds, iterations=epochs,
                            objective=objective(X, y, coef, intercept, alpha)))  # fmt: skip
    return _finish(records, f"{n}x{d}", threads)


def _finish(records, shape, threads):
    """Gap to the best objective, whether it was reached, time relative to fastgd's best."""
    best = min(r["objective"] for r in records)
    fastest = {}
    for r in records:
        if r["solver"].startswith("fastgd") and r["family"] != "first-order":
            fastest[r["family"]] = min(fastest.get(r["family"], np.inf), r["median_s"])
    for r in records:
        r["gap"] = (r["objective"] - best) / abs(best)
        r["reached"] = bool(r["gap"] <= TARGET)
        r["vs"] = r["median_s"] / fastest[r["family"]] if r["family"] in fastest else None
        r.update(shape=shape, threads=threads)
    return records


def solver_rows(records):
    """The table of :func:`solver_case` records: a header and rows of strings.

    Parameters
    ----------
    records : list of dict

    Returns
    -------
    header : list of str
    rows : list of list of str
    """
    header = ["shape", "solver", "time (s)", "iterations", "gap to f*", "reached", "vs fastgd"]
    rows = []
    for r in records:
        vs = "-" if r["vs"] is None else f"{r['vs']:.2f}x"
        rows.append([r["shape"], r["solver"], f"{r['median_s']:.3f}", str(r["iterations"]),
                     f"{r['gap']:.1e}", "yes" if r["reached"] else "no", vs])  # fmt: skip
    return header, rows
