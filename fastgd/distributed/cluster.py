"""Rounds of per-chunk tasks on a ``distributed.Client`` or on Dask's local scheduler.

A round submits one task per chunk (unique keys, not cached), gathers the results in chunk
order and, for the full-batch passes, sums them by :func:`tree_sum`, whose pairing depends
on the number of chunks only: which worker ran what never changes a result. Each task
times its own computation, so the driver can split a round's wall time into compute (the
slowest chunk) and communication (scheduling, transfers, serialization: the rest).
"""

import itertools
import time
import uuid

import numpy as np

# Results larger than this (a Newton Hessian of d ~ 1,500) are summed on the workers by
# the same pairwise tree, so the driver receives one matrix instead of one per chunk.
WORKER_REDUCTION_BYTES = 16 << 20


def tree_sum(parts):
    """Sum ``parts`` (numbers, arrays or tuples of them; None stays None) pairwise:
    ``((p0 + p1) + (p2 + p3)) + p4`` for five parts, a shape set by ``len(parts)`` only."""
    parts = list(parts)
    while len(parts) > 1:
        paired = [_add(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        parts = paired + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def _add(a, b):
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b, strict=True))
    return None if a is None else a + b


def _timed(fn, *args):
    """Run ``fn(*args)`` in a worker; returns ``(result, seconds)``."""
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def current_client():
    """The ``distributed.Client`` in use, or None (then Dask's local scheduler runs)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _value(timed):
    return timed[0]


def _seconds(*timed):
    return [seconds for _, seconds in timed]


class Cluster:
    """Where the chunks live and the rounds run.

    Parameters
    ----------
    client : distributed.Client or None
        None: the chunks are computed into this process and rounds run on Dask's local
        scheduler (threads by default).
    """

    def __init__(self, client):
        self.client = client
        self.token = uuid.uuid4().hex[:8]
        self._rounds = itertools.count()
        self.wall = self.compute = self.worker = 0.0
        self.n_rounds = 0

    def persist(self, delayed_chunks):
        """Prepared chunks kept in memory: futures with lineage (a lost one is recomputed
        from its graph), or the computed values on the local scheduler."""
        if self.client is not None:
            return self.client.compute(list(delayed_chunks))
        import dask

        return list(dask.compute(*delayed_chunks))

    def gather(self, chunks):
        """The values of small per-chunk results (e.g. chunk statistics), in chunk order."""
        return self.client.gather(list(chunks)) if self.client is not None else list(chunks)

    def map(self, fn, chunks, args=(), per_chunk=None):
        """``[fn(chunk_i, *per_chunk[i], *args) for each chunk]``, run where the chunks are,
        returned in chunk order; the round is timed."""
        per_chunk = per_chunk or [()] * len(chunks)
        started = time.perf_counter()
        if self.client is not None:
            results = self._map_client(fn, chunks, args, per_chunk)
        else:
            results = self._map_local(fn, chunks, args, per_chunk)
        self._book(time.perf_counter() - started, [seconds for _, seconds in results])
        return [value for value, _ in results]

    def _map_client(self, fn, chunks, args, per_chunk):
        client, number = self.client, next(self._rounds)
        big = [a for a in args if isinstance(a, np.ndarray) and a.nbytes > 1 << 20]
        if big:  # large parameters (networks) travel once per worker, not once per task
            sent = iter(client.scatter(big, broadcast=True, hash=False))
            args = [next(sent) if any(a is b for b in big) else a for a in args]
        futures = [
            client.submit(_timed, fn, chunk, *extra, *args, pure=False,
                          key=f"fastgd-{fn.__name__}-{self.token}-{number}-{i}")
            for i, (chunk, extra) in enumerate(zip(chunks, per_chunk, strict=True))
        ]  # fmt: skip
        return client.gather(futures)

    def _map_local(self, fn, chunks, args, per_chunk):
        import dask

        calls = [
            dask.delayed(_timed, pure=False)(fn, chunk, *extra, *args)
            for chunk, extra in zip(chunks, per_chunk, strict=True)
        ]
        return list(dask.compute(*calls))

    def reduce(self, fn, chunks, args=(), per_chunk=None, nbytes=0):
        """``tree_sum`` of :meth:`map`'s results; summed on the workers by the same tree
        when each result is larger than :data:`WORKER_REDUCTION_BYTES`."""
        if self.client is None or nbytes <= WORKER_REDUCTION_BYTES:
            return tree_sum(self.map(fn, chunks, args, per_chunk))
        return self._reduce_on_workers(fn, chunks, args, per_chunk or [()] * len(chunks))

    def _reduce_on_workers(self, fn, chunks, args, per_chunk):
        client, number = self.client, next(self._rounds)
        started = time.perf_counter()
        key = f"fastgd-{fn.__name__}-{self.token}-{number}"
        parts = [
            client.submit(_timed, fn, chunk, *extra, *args, pure=False, key=f"{key}-{i}")
            for i, (chunk, extra) in enumerate(zip(chunks, per_chunk, strict=True))
        ]
        seconds = client.submit(_seconds, *parts, key=f"{key}-seconds")
        level = [client.submit(_value, p, key=f"{key}-value-{i}") for i, p in enumerate(parts)]
        depth = 0
        while len(level) > 1:  # the pairing of tree_sum, as tasks
            pairs = [
                client.submit(_add, level[i], level[i + 1], key=f"{key}-sum-{depth}-{i}")
                for i in range(0, len(level) - 1, 2)
            ]
            level, depth = pairs + ([level[-1]] if len(level) % 2 else []), depth + 1
        total, seconds = client.gather([level[0], seconds])
        self._book(time.perf_counter() - started, seconds)
        return total

    def _book(self, wall, seconds):
        self.n_rounds += 1
        self.wall += wall
        self.compute += max(seconds)
        self.worker += sum(seconds)

    def report(self, n_chunks):
        """Timings of the fit's rounds (``FitResult.distributed``)."""
        return {
            "scheduler": "distributed" if self.client is not None else "local",
            "n_chunks": int(n_chunks),
            "n_rounds": int(self.n_rounds),
            "round_time": float(self.wall),
            "compute_time": float(self.compute),
            "worker_time": float(self.worker),
            "communication_time": float(max(self.wall - self.compute, 0.0)),
        }
