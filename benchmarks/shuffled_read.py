"""How fast can shuffled rows be read on this machine, and how close is fastgd to it?

Usage::

    python benchmarks/shuffled_read.py              # 1,000,000 x 100 float64, 1 thread
    python benchmarks/shuffled_read.py --rounds 5

Every round, in one process and on 1 thread, reads the streaming limit (the compiled
read of :mod:`fastgd.bench.roofline`, which ``compare_backends.py`` reports shares of)
and then times (median of 5 each):

- ``read in order``: a compiled read of every row of X in stored order;
- ``shuffled read, ahead k``: the same read with the rows in a random order, each row's
  cache lines requested ``k`` rows ahead into every cache level (``k = 0``: no request,
  every row waits for memory); ``shuffled into L2, ahead k``: requested into L2 only, as
  fastgd's kernels request rows (``fastgd._config.ROW_PREFETCH_LOCALITY``);
- ``minimal SGD, batch b``: the smallest compiled mini-batch SGD loop of least squares
  over the same shuffled order (a row's dot product, then its gradient terms; the
  weights updated after each batch), rows and targets requested 12 ahead into L2;
  ``minimal SGD + L1, batch b``: the same, each row also requested into L1
  ``SHUFFLED_L1_AHEAD`` places ahead, as fastgd's kernels request shuffled rows;
- ``fastgd numba`` / ``fastgd cython``: fastgd's kernel over the same order (its
  ``train_epochs`` called with the epoch's order given, so no permutation is drawn).

Each is reported as its bytes of X per second over that round's streaming limit. The shuffled reads bound what
any kernel can reach with rows in a random order: each row is a separate trip to memory,
and the core has only so many requests in flight.
"""

import argparse
import statistics
import time

import numpy as np
from numba import njit

import fastgd
from fastgd._config import SHUFFLED_L1_AHEAD
from fastgd.backends.numba.prefetch import prefetch_row, prefetch_row_into_l2
from fastgd.bench import roofline

AHEAD = (0, 4, 8, 12, 16, 32)
SGD_AHEAD = 12


# Compiled at each run, not cached on disk: the smoke test loads this file as a module of no
# package, and a cache entry it wrote then failed to load in a run as a script.
@njit(nogil=True, fastmath=True)
def read_rows(X, order, ahead, into_l2=False):
    """Sum of every row of X, read in ``order`` (``ahead``: rows requested ahead, into L2
    only if ``into_l2``)."""
    n, d = X.shape
    total = 0.0
    for r in range(n):
        if ahead > 0 and r + ahead < n:
            if into_l2:
                prefetch_row_into_l2(X, order[r + ahead])
            else:
                prefetch_row(X, order[r + ahead])
        i = order[r]
        for j in range(d):
            total += X[i, j]
    return total


@njit(nogil=True, fastmath=True)
def minimal_sgd(X, y, w, order, batch, lr, near=0):
    """One epoch of plain mini-batch SGD of least squares over the rows in ``order``
    (``near`` > 0: each row also requested into L1 ``near`` places ahead)."""
    n, d = X.shape
    g = np.zeros(d + 1)
    Y = y.reshape((-1, 1))  # (prefetch_row takes a 2-D array)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        g[:] = 0.0
        for r in range(start, stop):
            if r + SGD_AHEAD < n:
                prefetch_row_into_l2(X, order[r + SGD_AHEAD])
                prefetch_row_into_l2(Y, order[r + SGD_AHEAD])
            if near > 0 and r + near < n:
                prefetch_row(X, order[r + near])
            i = order[r]
            v = w[d]
            for j in range(d):
                v += X[i, j] * w[j]
            dz = 2.0 * (v - y[i])
            for j in range(d):
                g[j] += dz * X[i, j]
            g[d] += dz
        for j in range(d + 1):
            w[j] -= lr * g[j] / (stop - start)
    return w


def median_seconds(call, repeats=5):
    """Median wall time of ``call()`` over ``repeats`` calls (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fastgd_epoch(X, y, backend, batch):
    """A call of ``backend``'s ``train_epochs`` for one shuffled epoch (its arguments
    captured from a fit), and the epoch's order."""
    from fastgd.backends import get_backend

    module = get_backend(backend)
    captured = {}
    original = module.train_epochs

    def spy(*args):
        captured["args"] = args
        return original(*args)

    module.train_epochs = spy
    try:
        fastgd.fit(X, y, batch_size=batch, epochs=1, lr=1e-3, seed=0, backend=backend,
                   n_threads=1, shuffle=True)  # fmt: skip
    finally:
        module.train_epochs = original
    args = captured["args"]
    return (lambda: original(*args)), args[4].orders[0]


def one_round(X, calls):
    """Every measurement of a round, as shares of the streaming limit read first."""
    limit = calls["limit"]()
    shares = {"streaming limit (GB/s)": limit / 1e9}
    for name, call in calls["timed"].items():
        shares[name] = X.nbytes / median_seconds(call) / limit
    return shares


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="numba,cython")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.features))
    y = X @ rng.standard_normal(args.features) + 1.0
    w = np.zeros(args.features + 1)
    natural, order = np.arange(args.rows), None
    timed = {"read in order": lambda: read_rows(X, natural, 0)}
    for backend in args.backends.split(","):
        for batch in (32, 256):
            timed[f"fastgd {backend}, batch {batch}"], order = fastgd_epoch(X, y, backend, batch)
    import numba

    numba.set_num_threads(1)
    for ahead in AHEAD:
        timed[f"shuffled read, ahead {ahead}"] = lambda a=ahead: read_rows(X, order, a)
    for ahead in AHEAD[1:]:
        timed[f"shuffled into L2, ahead {ahead}"] = lambda a=ahead: read_rows(X, order, a, True)
    for batch in (32, 256):
        timed[f"minimal SGD, batch {batch}"] = lambda b=batch: minimal_sgd(X, y, w, order, b, 1e-3)
    for batch in (32, 256):
        timed[f"minimal SGD + L1, batch {batch}"] = lambda b=batch: minimal_sgd(X, y, w, order, b, 1e-3, SHUFFLED_L1_AHEAD)  # fmt: skip
    calls = dict(limit=roofline.stream_reader(1), timed=timed)
    rounds = [one_round(X, calls) for _ in range(args.rounds)]
    print(f"{args.rows} x {args.features} float64, 1 thread, {args.rounds} rounds")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        text = "  ".join(f"{v:.1f}" if "GB/s" in name else f"{100 * v:.0f}%" for v in values)
        print(f"  {name:<30} {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
