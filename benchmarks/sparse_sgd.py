"""Sparse (CSR) logistic regression and MLP: fastgd against scikit-learn and plain SciPy loops.

Usage::

    python benchmarks/sparse_sgd.py           # README figures
    python benchmarks/sparse_sgd.py --quick   # a smoke test
    python benchmarks/sparse_sgd.py --only mlp --rows 100000   # the MLP rows only

Data: synthetic binary classification, ``rows x features`` float64 CSR with ``nnz``
non-zeros per row (uniform random columns, N(0, 1) values, int32 indices), labels from a
random linear model plus noise.

- ``batch_size=1``: one epoch of per-sample SGD, the same updates on both sides (natural
  order, constant rate 0.01, L2 penalty alpha=1e-4 applied every update, no intercept):
  fastgd's Numba and Cython backends against scikit-learn's ``SGDClassifier`` (log loss,
  ``learning_rate="constant"``, ``shuffle=False``, ``max_iter=1``). Both keep the weights
  as a scale times a vector, so both cost O(nnz) per update. The final weights are
  compared before a time is reported.
- ``batch_size=256``: one epoch of mini-batch SGD (lr 0.1, no penalty, no intercept)
  against the loop a NumPy/SciPy user writes: ``z = X[a:b] @ w``, ``r = (sigmoid(z) - y) /
  rows``, ``w -= lr * (X[a:b].T @ r)``, with contiguous row slices (no shuffling: the
  cheapest slicing). Same updates, weights compared.

- MLP: one epoch of ``fastgd.MLP(hidden=(64,))`` (ReLU, one sigmoid output, binary
  cross-entropy) with Adam (lr 1e-3) at ``batch_size=256`` on ``--mlp-rows`` rows, against
  the loop a NumPy/SciPy user writes from the same initial parameters: ``U = X[a:b] @ W1
  + b1`` (sparse x dense), ReLU, the output layer, the backward pass with ``X[a:b].T @
  dU`` for W1's gradient, and Adam on every array (in place where NumPy allows). Adam
  keeps dense semantics on both sides: all ``d x 64`` first-layer weights and moments
  move at every update. Samples per second; the weights are compared.

One thread everywhere (BLAS pinned, ``n_threads=1``; fastgd's sparse chunks run serially
anyway). Compile time is excluded (a first small fit compiles); medians of ``--repeat``
rounds, each round running every contender once (interleaved, so that the load of a
shared machine affects them alike).
"""

import argparse
import json
import statistics
import time
import warnings

import numpy as np

import fastgd
from fastgd.backends import available_backends
from fastgd.bench.system import blas_info, pin_threads


def make_data(n, d, nnz, seed=0):
    """CSR float64 ``(n, d)`` with ``nnz`` entries per row, and 0/1 labels."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * nnz + 1, nnz, dtype=np.int64).astype(np.int32)
    indices = rng.integers(0, d, n * nnz, dtype=np.int32)
    values = rng.standard_normal(n * nnz)
    X = sparse.csr_matrix((values, indices, indptr), shape=(n, d))
    w = rng.standard_normal(d) / np.sqrt(nnz)
    y = (X @ w + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    return X, y


def _interleaved(runs, repeat):
    """``{name: (median seconds, last output)}`` of ``runs`` (name -> callable returning
    ``(seconds, output)``), run in rounds of one call each: on a shared machine a change of
    load then hits every side alike, instead of whichever ran during it."""
    times = {name: [] for name in runs}
    outs = {}
    for _ in range(repeat):
        for name, run in runs.items():
            seconds, outs[name] = run()
            times[name].append(seconds)
    return {name: (statistics.median(times[name]), outs[name]) for name in runs}


def fastgd_fit(X, y, backend, batch_size, lr, alpha):
    penalty = "l2" if alpha else None
    result = fastgd.fit(
        X, y, "logistic", backend=backend, batch_size=batch_size, epochs=1, shuffle=False,
        lr=lr, penalty=penalty, alpha=alpha, fit_intercept=False, n_threads=1,
    )  # fmt: skip
    return result.train_time, result.coef_


def sklearn_fit(X, y, lr, alpha):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    clf = SGDClassifier(
        loss="log_loss", learning_rate="constant", eta0=lr, penalty="l2", alpha=alpha,
        shuffle=False, max_iter=1, tol=None, fit_intercept=False, average=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - started
    return seconds, clf.coef_.ravel()


def scipy_loop(X, y, batch_size, lr):
    """Mini-batch SGD on logistic regression as a NumPy/SciPy user writes it."""
    n, d = X.shape
    w = np.zeros(d)
    labels = y.astype(np.float64)
    started = time.perf_counter()
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        rows = X[a:b]
        z = rows @ w
        r = (0.5 * (1.0 + np.tanh(0.5 * z)) - labels[a:b]) / (b - a)
        w -= lr * (rows.T @ r)
    return time.perf_counter() - started, w


def fastgd_mlp_fit(X, y, backend, hidden, batch_size, lr):
    model = fastgd.MLP(hidden=(hidden,))
    result = fastgd.fit(
        X, y, model, backend=backend, batch_size=batch_size, epochs=1, shuffle=False,
        optimizer="adam", lr=lr, seed=0, n_threads=1,
    )  # fmt: skip
    return result.train_time, result.params


def numpy_mlp_loop(X, y, hidden, batch_size, lr):
    """One epoch of the MLP of :func:`fastgd_mlp_fit` as a NumPy/SciPy user writes it:
    same initial parameters (fastgd's, seed 0), same batches, Adam with torch's formulas.
    Returns the seconds and the final flat parameters ``[W1, W2, b1, b2]``."""
    n, d = X.shape
    params = fastgd.MLP(hidden=(hidden,)).spec(d, 1, 2).init_params(np.float64, 0)[0]
    W1 = params[: d * hidden].reshape(d, hidden)  # views: the updates write into params
    W2 = params[d * hidden : d * hidden + hidden].reshape(hidden, 1)
    b1, b2 = params[d * hidden + hidden : -1], params[-1:]
    arrays = (W1, W2, b1, b2)
    moments = [(np.zeros_like(a), np.zeros_like(a)) for a in arrays]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    labels = y.astype(np.float64)[:, None]
    started = time.perf_counter()
    for t, a in enumerate(range(0, n, batch_size), start=1):
        b = min(a + batch_size, n)
        rows = X[a:b]
        U = rows @ W1 + b1  # sparse x dense: a dense (rows, hidden) array
        H = np.maximum(U, 0.0)
        z = H @ W2 + b2
        dz = (0.5 * (1.0 + np.tanh(0.5 * z)) - labels[a:b]) / (b - a)
        dH = (dz @ W2.T) * (U > 0)
        grads = (rows.T @ dH, H.T @ dz, dH.sum(axis=0), dz.sum(axis=0))
        step, correction = lr / (1.0 - beta1**t), np.sqrt(1.0 - beta2**t)
        for p, g, (m, v) in zip(arrays, grads, moments, strict=True):
            g = np.asarray(g)
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * (g * g)
            p -= step * m / (np.sqrt(v) / correction + eps)
    return time.perf_counter() - started, params


def relative_gap(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100_000)
    parser.add_argument("--nnz", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mlp-rows", type=int, default=25_600, help="rows of the MLP epoch")
    parser.add_argument("--hidden", type=int, default=64, help="width of the MLP's layer")
    parser.add_argument("--only", choices=("linear", "mlp"), help="run one part only")
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 1 repeat")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.mlp_rows, args.repeat = 100_000, 2_560, 1
    X, y = make_data(max(args.rows, args.mlp_rows), args.features, args.nnz)
    backends = [b for b in ("numba", "cython") if b in available_backends()]
    print(f"{X.shape[0]:,} x {args.features:,} CSR float64, {args.nnz} non-zeros per row; "
          f"1 thread; BLAS {blas_info()}; median of {args.repeat}")  # fmt: skip
    figures = {}
    with pin_threads(1):
        if args.only != "mlp":
            figures.update(_linear(*_head(X, y, args.rows), backends, args.repeat))
        if args.only != "linear":
            figures["mlp"] = _mlp(*_head(X, y, args.mlp_rows), backends, args.repeat, args.hidden)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


def _head(X, y, n):
    """The first ``n`` rows (``X`` itself, not a copy, when that is all of it)."""
    return (X, y) if n >= X.shape[0] else (X[:n], y[:n])


def _linear(X, y, backends, repeat):
    for backend in backends:  # compile (or load) the kernels outside the timings
        for batch_size in (1, 256):
            fastgd_fit(X[:2000], y[:2000], backend, batch_size, 0.01, 1e-4 if batch_size == 1 else 0.0)  # fmt: skip
    return {"batch 1": _per_sample(X, y, backends, repeat), "batch 256": _mini_batch(X, y, backends, repeat)}  # fmt: skip


def _mlp(X, y, backends, repeat, hidden):
    lr, batch_size = 1e-3, 256
    for backend in backends:  # compile (or load) the kernel outside the timings
        fastgd_mlp_fit(X[:1000], y[:1000], backend, hidden, batch_size, lr)
    runs = {"SciPy/NumPy loop": lambda: numpy_mlp_loop(X, y, hidden, batch_size, lr)}
    for backend in backends:
        runs["fastgd " + backend] = lambda b=backend: fastgd_mlp_fit(X, y, b, hidden, batch_size, lr)  # fmt: skip
    print(f"\nMLP(hidden=({hidden},)), Adam, batch_size={batch_size}, one epoch of {X.shape[0]:,} rows")  # fmt: skip
    figures = _table(_interleaved(runs, repeat), None, "the loop's")
    for name, seconds in figures.items():
        print(f"  {name:28s} {X.shape[0] / seconds:10,.0f} samples/s")
    return figures


def _per_sample(X, y, backends, repeat):
    lr, alpha = 0.01, 1e-4
    runs = {"scikit-learn SGDClassifier": lambda: sklearn_fit(X, y, lr, alpha)}
    for backend in backends:
        runs["fastgd " + backend] = lambda b=backend: fastgd_fit(X, y, b, 1, lr, alpha)
    print(f"\nbatch_size=1, one epoch ({X.shape[0]:,} updates)")
    return _table(_interleaved(runs, repeat), X.shape[0], "scikit-learn's")


def _mini_batch(X, y, backends, repeat):
    lr, batch_size = 0.1, 256
    runs = {"SciPy/NumPy loop": lambda: scipy_loop(X, y, batch_size, lr)}
    for backend in backends:
        runs["fastgd " + backend] = lambda b=backend: fastgd_fit(X, y, b, batch_size, lr, 0.0)
    print(f"\nbatch_size={batch_size}, one epoch")
    return _table(_interleaved(runs, repeat), None, "the loop's")


def _table(results, updates, reference_name):
    """Print the medians, speed-ups over the first entry and weight agreement."""
    (base_name, (base, reference)), *others = results.items()
    print(f"  {base_name:28s} {base:8.3f} s   1.00x")
    for name, (seconds, coef) in others:
        per_update = f"{1e9 * seconds / updates:.0f} ns/update; " if updates else ""
        print(f"  {name:28s} {seconds:8.3f} s   {base / seconds:.2f}x faster; {per_update}"
              f"weights within {relative_gap(coef, reference):.1e} of {reference_name}")  # fmt: skip
    return {name: seconds for name, (seconds, _) in results.items()}


if __name__ == "__main__":
    main()
