"""What Ctrl-C support costs, and how fast a SIGINT stops a fit.

Usage (from the repository root; run it also from a copy of an older tree to compare)::

    flock /tmp/fastgd-bench.lock python benchmarks/interrupt_overhead.py
    flock /tmp/fastgd-bench.lock python benchmarks/interrupt_overhead.py --latency

(``PYTHONPATH=<tree>`` in front when the installed fastgd is another checkout's.)

Overhead, medians of ``--repeats`` fits (training time only, compile excluded), small
data (100 x 5 float64) where fixed costs are largest:

- ``per-row``: ``batch_size=1`` plain SGD, one kernel call of 20,000 epochs (the
  per-sample path polls the request before every row): nanoseconds per update;
- ``per-batch``: ``batch_size=4`` with Adam (the batch loop polls before every batch);
- ``per-call``: ``batch_size=1`` with a callback, so every epoch is one kernel call:
  microseconds per call, in the main thread (calls shorter than ``DIRECT_BELOW`` are
  then made directly), in the main thread with every call handed to the worker thread
  (``DIRECT_BELOW = 0``), and in another thread (no SIGINT handling: direct calls).

Latency (``--latency``): a helper thread sends SIGINT to this process one second into a
long fit; the time from the signal until ``fit`` has returned, for a per-sample fit and
a full-batch fit over 500,000 x 40 rows.
"""

import argparse
import os
import signal
import statistics
import threading
import time
import warnings

import numpy as np

import fastgd

try:
    from fastgd.training import interrupt
except ImportError:  # a tree from before Ctrl-C support
    interrupt = argparse.Namespace(DIRECT_BELOW=0.0)


def _train_time(run, repeats):
    run()  # compile (or load) first
    return statistics.median(run() for _ in range(repeats))


def _fit_time(X, y, backend, **options):
    def run():
        return fastgd.fit(X, y, backend=backend, shuffle=False, tol=None, **options).train_time

    return run


def _in_thread(run):
    def threaded():
        out = []
        thread = threading.Thread(target=lambda: out.append(run()))
        thread.start()
        thread.join()
        return out[0]

    return threaded


def overhead(backends, repeats):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 5))
    y = X @ rng.standard_normal(5)
    print("backend  per-row ns/update  per-batch ns/update  per-call us: main  main, offloaded"
          "  other thread")  # fmt: skip
    for backend in backends:
        epochs = 200 if backend == "numpy" else 20_000  # the reference: a Python step per batch
        row = _train_time(_fit_time(X, y, backend, batch_size=1, lr=0.01, epochs=epochs), repeats)
        batch = _train_time(
            _fit_time(X, y, backend, batch_size=4, optimizer="adam", epochs=epochs // 4), repeats
        )
        calls = 200 if backend == "numpy" else 2_000
        noop = dict(batch_size=1, lr=0.01, epochs=calls, callback=lambda e, i: None)
        main = _train_time(_fit_time(X, y, backend, **noop), repeats)
        direct_below, interrupt.DIRECT_BELOW = interrupt.DIRECT_BELOW, 0.0
        offloaded = _train_time(_fit_time(X, y, backend, **noop), repeats)
        interrupt.DIRECT_BELOW = direct_below
        other = _train_time(_in_thread(_fit_time(X, y, backend, **noop)), repeats)
        print(
            f"{backend:8} {row / (epochs * 100) * 1e9:17.2f} {batch / (epochs // 4 * 25) * 1e9:20.2f}"
            f" {main / calls * 1e6:18.2f} {offloaded / calls * 1e6:16.2f} {other / calls * 1e6:13.2f}"
        )


def latency(backends, repeats):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500_000, 40))
    y = X @ rng.standard_normal(40)
    print("backend  case        SIGINT -> fit returned (s), median   epochs done   updates")
    for backend in backends:
        for case, options in (
            ("per-row", dict(batch_size=1, lr=1e-4)),
            ("full-batch", dict(batch_size=None, lr=0.01)),
        ):
            waits, result = [], None
            for _ in range(repeats):
                sent = {}

                def interrupt(sent=sent):
                    time.sleep(1.0)
                    sent["at"] = time.perf_counter()
                    os.kill(os.getpid(), signal.SIGINT)

                helper = threading.Thread(target=interrupt)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fastgd.fit(X[:1000], y[:1000], backend=backend, epochs=1, **options)
                    helper.start()
                    result = fastgd.fit(X, y, backend=backend, epochs=10**6, shuffle=False,
                                        tol=None, **options)  # fmt: skip
                waits.append(time.perf_counter() - sent["at"])
                helper.join()
                assert result.stop_reason == "interrupted", result.stop_reason
            print(f"{backend:8} {case:11} {statistics.median(waits):33.3f} {result.n_epochs:13d}"
                  f" {result.n_updates:9d}")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numba,cython,numpy")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b in fastgd.available_backends()]
    if args.latency:
        latency(backends, args.repeats)
    else:
        overhead(backends, args.repeats)


if __name__ == "__main__":
    main()
