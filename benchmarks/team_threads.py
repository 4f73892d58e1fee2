"""Mini-batches on a team of threads (Cython) against a fork/join per batch, in one process.

Usage::

    python benchmarks/team_threads.py                      # 2 threads, in order
    python benchmarks/team_threads.py --shuffle --batch-sizes 256

Three ways to run the same fits (1,000,000 x 100 float64, mean squared error, plain SGD,
3 epochs), interleaved round by round so that the load of the machine hits all alike:

- ``fork/join``: ``TEAM_SEGMENT_WORK = -1``, the kernel before the team existed (a batch
  below ``PARALLEL_MIN_WORK`` runs its chunks serially, a larger one opens a parallel
  region per batch);
- ``team``: ``TEAM_SEGMENT_WORK = 0``, every batch on the team (two barriers per batch);
- ``paced``: the default, segments on the team or on one thread, whichever measures faster.

All three give the same parameters (checked here). Reported: median, min and max kernel
time of the rounds, and the median's share of the streaming read limit measured at start.
"""

import argparse
import statistics
import sys

import numpy as np

import fastgd
import fastgd.backends.cython.linear as cython_linear
from fastgd._config import TEAM_SEGMENT_WORK
from fastgd.bench import roofline

MODES = {"fork/join": -1, "team": 0, "paced": TEAM_SEGMENT_WORK}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="256,512,1024,4096")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shuffle", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, 100))
    y = X @ rng.standard_normal(100) + 1.0
    stream = roofline.stream_read(args.threads)
    print(f"streaming read limit ({args.threads} threads): {stream / 1e9:.1f} GB/s")
    times = {(b, m): [] for b in args.batch_sizes.split(",") for m in MODES}
    params = {}
    for round_ in range(args.rounds):
        for (batch, mode), seconds in times.items():
            cython_linear.TEAM_SEGMENT_WORK = MODES[mode]
            options = dict(batch_size=int(batch), epochs=3, lr=1e-3, seed=0, backend="cython",
                           n_threads=args.threads, shuffle=args.shuffle)  # fmt: skip
            if round_ == 0:
                fastgd.fit(X, y, **options)  # warm the caches
            result = fastgd.fit(X, y, **options)
            seconds.append(result.train_time)
            reference = params.setdefault(batch, result.params)
            assert np.array_equal(result.params, reference), (batch, mode)
    cython_linear.TEAM_SEGMENT_WORK = TEAM_SEGMENT_WORK
    print(f"{'batch':>6} {'mode':<10}{'median s':>10}{'min s':>9}{'max s':>9}{'of limit':>10}")
    for (batch, mode), seconds in times.items():
        median = statistics.median(seconds)
        share = X.nbytes * 3 / median / stream
        print(f"{batch:>6} {mode:<10}{median:>10.4f}{min(seconds):>9.4f}{max(seconds):>9.4f}"
              f"{100 * share:>9.0f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
