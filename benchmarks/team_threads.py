"""Mini-batches on a team of threads against a fork/join per batch, in one process.

Usage::

    python benchmarks/team_threads.py                      # 2 threads, in order
    python benchmarks/team_threads.py --shuffle --batch-sizes 256
    python benchmarks/team_threads.py --backend numba      # Numba's team
    python benchmarks/team_threads.py --handoff            # one handoff between 2 cores
    python benchmarks/team_threads.py --busy 2 --rows 300000   # beside 2 busy processes
    python benchmarks/team_threads.py --backend numba --rows 2048 --features 20 \
        --epochs 1000 --batch-sizes 256                        # many short epochs

Two ways to run the same fits (by default 1,000,000 x 100 float64, mean squared error,
plain SGD, 3 epochs) with the Cython kernel, interleaved round by round so that the load
of the machine hits all alike:

- ``fork/join``: ``TEAM_BATCHES = False``, the kernel before the team existed (a batch
  below ``PARALLEL_MIN_WORK`` runs its chunks serially, a larger one opens a parallel
  region per batch);
- ``team``: the default, every batch on the team (chunks dealt in tickets, as in Numba's
  team). Until 2026-12-02 Cython's team had two barriers per batch and was paced against
  one thread by default (segments on the team or on one thread, whichever measured
  faster); that pacing was removed with the barriers.

``--busy N`` runs N processes that only spin (pure Python loops) beside the fits, as on a
machine with more runnable threads than cores; they are stopped at the end.

Both give the same parameters (checked here). Reported: median, min and max kernel
time of the rounds, and the median's share of the streaming read limit, read at the start
of every round (the median of those readings).

``--backend numba`` runs three ways instead: ``per-batch``, the kernel mode chosen before
Numba had a team (chunks of a batch serially below ``PARALLEL_MIN_WORK``, a parallel
region per batch above it); ``team/chunk``, the team as first built (one parallel region
per epoch, a ticket per chunk: the kernel is told a team of ``MAX_CHUNKS`` members); and
``team``, the default (one ticket per member and batch, no pacing). The per-batch code
differs, so its parameters are checked equal to 1e-12 only; the two teams' parameters
are checked bit for bit, and each way is bit-identical for any thread count.

``--handoff`` measures what a batch on a team cannot avoid: two threads take turns, each
waiting for the other's published counter (Numba's team primitives), reading the other's
101 doubles and writing its own; the time per turn is one one-way handoff between cores.
"""

import argparse
import statistics
import subprocess
import sys

import numpy as np

import fastgd
import fastgd.backends.cython.linear as cython_linear
import fastgd.backends.numba.linear as numba_linear
from fastgd._config import MAX_CHUNKS, TEAM_BATCHES
from fastgd.bench import roofline

DEFAULT_NUMBA_MODE = numba_linear._train_mode
DEFAULT_NUMBA_KERNELS = numba_linear._kernels

MODES = {"fork/join": False, "team": True}


def _numba_per_batch_mode(model, data, update):
    """The Numba kernel mode as chosen before the team (batches of several chunks)."""
    rows = min(update.batch_size, data.X.shape[0])
    return numba_linear._batch_mode(rows, data.X.shape[1] * model.n_outputs)


def _ticket_per_chunk_kernels(shape, mode, sparse=False):
    """Numba's kernels told a team of ``MAX_CHUNKS`` members: a ticket per chunk."""
    train, gradient = DEFAULT_NUMBA_KERNELS(shape, mode, sparse)
    return (lambda *args: train(*args[:-1], (MAX_CHUNKS, args[-1][1]))), gradient


NUMBA_MODES = {
    "per-batch": (_numba_per_batch_mode, DEFAULT_NUMBA_KERNELS),
    "team/chunk": (DEFAULT_NUMBA_MODE, _ticket_per_chunk_kernels),
    "team": (DEFAULT_NUMBA_MODE, DEFAULT_NUMBA_KERNELS),
}


def _handoffs(turns):
    """Seconds per one-way handoff (counter and 101-double payload) between 2 threads."""
    import time

    import numba
    from numba import njit, prange

    from fastgd.backends.numba.team import _load_acquire, _spin_pause, _store_release

    @njit(nogil=True)
    def member(me, sync, a, b, n):
        total = 0.0
        source, target = (b, a) if me else (a, b)
        for i in range(n):
            while _load_acquire(sync, 0) < 2 * i + me:
                _spin_pause()
            for j in range(source.shape[0]):
                total += source[j]
            for j in range(target.shape[0]):
                target[j] = total + j
            _store_release(sync, 0, 2 * i + me + 1)
        return total

    @njit(parallel=True, nogil=True)
    def ping_pong(sync, a, b, n, out):
        for t in prange(2):
            out[t] = member(t, sync, a, b, n)

    a, b, out = np.zeros(101), np.zeros(101), np.zeros(2)
    numba.set_num_threads(2)
    ping_pong(np.zeros(8, np.int64), a, b, 10, out)  # compile
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        ping_pong(np.zeros(8, np.int64), a, b, turns, out)
        seconds.append((time.perf_counter() - started) / (2 * turns))
    return statistics.median(seconds)


def _set_mode(backend, mode):
    """Select ``mode`` of ``backend``."""
    if backend == "cython":
        cython_linear.TEAM_BATCHES = MODES[mode]
    else:
        numba_linear._train_mode, numba_linear._kernels = NUMBA_MODES[mode]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="256,512,1024,4096")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--backend", choices=("cython", "numba"), default="cython")
    parser.add_argument("--handoff", action="store_true", help="time a handoff between 2 threads")
    parser.add_argument("--busy", type=int, default=0, help="busy processes beside the fits")
    args = parser.parse_args(argv)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        return _run(args)
    finally:
        for process in busy:
            process.kill()


def _run(args):
    """The measurements of :func:`main`."""
    if args.handoff:
        print(f"one-way handoff, 101 doubles: {_handoffs(200_000) * 1e9:.0f} ns (median of 5)")
        return 0
    modes = MODES if args.backend == "cython" else NUMBA_MODES
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.features))
    y = X @ rng.standard_normal(args.features) + 1.0
    times = {(b, m): [] for b in args.batch_sizes.split(",") for m in modes}
    params, limits = {}, []
    for round_ in range(args.rounds):
        # the limit is read in every round, as the fits are: on a shared machine it moves
        # by a sixth from one minute to the next, and a share of one reading taken at the
        # start moved with it
        limits.append(roofline.stream_read(args.threads))
        for (batch, mode), seconds in times.items():
            _set_mode(args.backend, mode)
            options = dict(batch_size=int(batch), epochs=args.epochs, lr=1e-3, seed=0,
                           backend=args.backend, n_threads=args.threads,
                           shuffle=args.shuffle)  # fmt: skip
            if round_ == 0:
                fastgd.fit(X, y, **options)  # warm the caches
            result = fastgd.fit(X, y, **options)
            seconds.append(result.train_time)
            # bit for bit within a group (the teams; Numba's per-batch code, which sums in
            # another order, apart), and to 1e-12 across groups
            group = args.backend == "cython" or mode != "per-batch"
            exact = params.setdefault((batch, group), result.params)
            assert np.array_equal(result.params, exact), (batch, mode)
            close = params.setdefault(batch, result.params)
            np.testing.assert_allclose(result.params, close, rtol=1e-12, atol=1e-12)
    cython_linear.TEAM_BATCHES = TEAM_BATCHES
    numba_linear._train_mode, numba_linear._kernels = NUMBA_MODES["team"]
    stream = statistics.median(limits)
    print(f"streaming read limit ({args.threads} threads): median {stream / 1e9:.1f} GB/s of "
          f"{len(limits)} rounds ({min(limits) / 1e9:.1f}-{max(limits) / 1e9:.1f})")  # fmt: skip
    print(f"{'batch':>6} {'mode':<12}{'median s':>10}{'min s':>9}{'max s':>9}{'of limit':>10}")
    for (batch, mode), seconds in times.items():
        median = statistics.median(seconds)
        share = X.nbytes * args.epochs / median / stream
        print(f"{batch:>6} {mode:<12}{median:>10.4f}{min(seconds):>9.4f}{max(seconds):>9.4f}"
              f"{100 * share:>9.0f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
