"""What a Dask round costs fastgd beyond its kernels, and where a Newton fit's time goes.

On a ``LocalCluster`` of 2 worker processes with 1 thread each (the setting of
``dask_scaling.py``), with 1,000,000 x 100 float64 logistic data in 10 persisted chunks:

- an empty round: one no-op task per worker, submitted and gathered (Dask's floor);
- a fastgd round doing nothing: :meth:`fastgd.distributed.cluster.Cluster.map` of a no-op
  over the prepared chunks (one task per worker over the chunks it holds);
- a gradient round: the same with the loss-and-gradient pass of every chunk (what each
  L-BFGS evaluation runs), its wall time split into the busiest worker's compute and the
  rest;
- the preparation (:func:`fastgd.distributed.data.prepare_dask_problem`: labels, chunk
  checks and conversion);
- with ``--timeline``, the task stream of one Newton fit: when each task started and
  ended, in ms from the call.

Medians of ``--repeat`` (rounds) interleaved. Run (holds the benchmark lock)::

    flock /tmp/fastgd-bench.lock python benchmarks/dask_rounds.py --repeat 31 --timeline
"""

import argparse
import os
import statistics
import time

import numpy as np
from dask_scaling import make_data
from distributed import Client, LocalCluster, get_task_stream

import fastgd
from fastgd.backends.contract import LinearModel
from fastgd.distributed.cluster import Cluster
from fastgd.distributed.data import prepare_dask_problem
from fastgd.distributed.tasks import full_batch_share
from fastgd.specs import losses

PREPARE = dict(sample_weight=None, classes=None, fit_intercept=False)


def _noop(x):
    return x


def _nothing(chunk, scale, *args):
    return 0.0, np.zeros(101), None


def rounds(client, X, y, repeat):
    """Median seconds of each kind of round, and of a gradient round's compute."""
    cluster = Cluster(client)
    chunks = prepare_dask_problem(X, y, "logistic", PREPARE, cluster).data.chunks
    workers = list(client.scheduler_info()["workers"])
    model, x = LinearModel(losses.BINARY_CROSS_ENTROPY, 1, False), np.zeros(101)
    scales = [(0.1,)] * len(chunks)
    args = ("numba", model, x, False, "float64")
    runs = {
        "empty round": lambda: client.gather(
            [client.submit(_noop, x, pure=False, workers=[w]) for w in workers]
        ),  # fmt: skip
        "fastgd round doing nothing": lambda: cluster.map(_nothing, chunks, args, scales),
        "gradient round": lambda: cluster.map(full_batch_share, chunks, args, scales),
        "preparation": lambda: prepare_dask_problem(X, y, "logistic", PREPARE, Cluster(client)),
    }
    times = {name: [] for name in runs}
    computes = []
    for _ in range(repeat):
        for name, run in runs.items():
            compute = cluster.compute
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
            if name == "gradient round":
                computes.append(cluster.compute - compute)
            if name == "preparation":  # its chunks are released: let the workers settle
                time.sleep(0.2)
    for name, seconds in times.items():
        print(f"{name:28s} {1e3 * statistics.median(seconds):6.1f} ms")
    compute = statistics.median(computes)
    print(f"{'  of which compute':28s} {1e3 * compute:6.1f} ms (busiest worker), communication "
          f"{1e3 * (statistics.median(times['gradient round']) - compute):.1f} ms")  # fmt: skip


def timeline(client, X, y):
    """The task stream of one Newton fit (the third of three)."""
    for _ in range(3):
        with get_task_stream(client) as stream:
            started = time.time()
            r = fastgd.fit(X, y, "logistic", optimizer="newton", fit_intercept=False,
                           penalty=None, tol=1e-4)  # fmt: skip
            wall = time.time() - started
    print(f"\nNewton fit: {1e3 * wall:.0f} ms; {r.distributed}")
    rows = []
    for task in stream.data:
        key = task["key"] if isinstance(task["key"], str) else task["key"][0]
        for span in task["startstops"]:
            if span["action"] == "compute":
                rows.append((span["start"] - started, span["stop"] - started, key.split("-")[0 if not key.startswith("fastgd") else 1]))  # fmt: skip
    for start, stop, name in sorted(rows):
        print(f"{1e3 * start:7.1f} {1e3 * stop:7.1f}  {name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--timeline", action="store_true", help="the task stream of a Newton fit")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, env={"PYTHONPATH": root})  # fmt: skip
    with Client(cluster) as client:
        X, y = make_data(client, 1_000_000, 100, 10)
        rounds(client, X, y, args.repeat)
        if args.timeline:
            timeline(client, X, y)
    cluster.close()


if __name__ == "__main__":
    main()
