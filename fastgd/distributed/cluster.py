"""Rounds of per-chunk work on a ``distributed.Client`` or on Dask's local scheduler.

A round submits one task per worker, over the chunks that worker holds (unique keys, not
cached: a round costs a few scheduler messages, measured 2-3x cheaper than one task per
chunk with 10 chunks on 2 workers), gathers each chunk's result in chunk order and, for the
full-batch passes, sums them by :func:`tree_sum`, whose pairing depends on the number of
chunks only: which worker ran what never changes a result. Each task times its own
computation, so the driver can split a round's wall time into compute (the busiest worker)
and communication (scheduling, transfers, serialization: the rest).
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


def _run_group(fn, args, extras, *chunks):
    """``fn(chunk, *extra, *args)`` for each chunk of one worker; returns the values, the
    seconds they took together and the address of the worker that ran them."""
    from distributed import get_worker

    started = time.perf_counter()
    values = [fn(chunk, *extra, *args) for chunk, extra in zip(chunks, extras, strict=True)]
    return values, time.perf_counter() - started, get_worker().address


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
        self._grouped = None  # (chunk keys, [(worker, chunk indices)]) of the last round

    def persist(self, delayed_chunks, small=()):
        """Prepared chunks kept in memory: futures with lineage (a lost one is recomputed
        from its graph), or the computed values on the local scheduler; and the values of
        the ``small`` results (``dask.delayed`` objects or plain values) computed with
        them: one graph, one wait, which raises the error of the first failed task (chunks
        first, in chunk order, then the small results).

        Returns
        -------
        (list of chunks, list of the small values)
        """
        import dask

        chunks, small = list(delayed_chunks), list(small)
        lazy = [i for i, item in enumerate(small) if dask.is_dask_collection(item)]
        if self.client is None:
            values = dask.compute(*chunks, *[small[i] for i in lazy])
        else:
            from distributed import wait

            futures = self.client.compute([*chunks, *[small[i] for i in lazy]])
            wait(futures)  # no transfer: the chunks stay where they were computed
            for future in futures:  # the first failure (error, cancelled) in chunk order
                if future.status in ("error", "cancelled"):
                    future.result()  # raises (a finished chunk is not fetched)
            values = futures[: len(chunks)] + self.client.gather(futures[len(chunks) :])
            self._groups(values[: len(chunks)])  # asked now, not just before the first round
        for i, value in zip(lazy, values[len(chunks) :], strict=True):
            small[i] = value
        return list(values[: len(chunks)]), small

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
        """One task per worker over the chunks it holds: a round costs a few scheduler
        messages, not one per chunk (each result is still a chunk's own, summed in chunk
        order by the caller, so the placement never changes a number)."""
        client, number = self.client, next(self._rounds)
        big = [a for a in args if isinstance(a, np.ndarray) and a.nbytes > 1 << 20]
        if big:  # large parameters (networks) travel once per worker, not once per task
            sent = iter(client.scatter(big, broadcast=True, hash=False))
            args = [next(sent) if any(a is b for b in big) else a for a in args]
        groups = self._groups(chunks)
        futures = [
            client.submit(_run_group, fn, args, [per_chunk[i] for i in group],
                          *[chunks[i] for i in group], pure=False,
                          key=f"fastgd-{fn.__name__}-{self.token}-{number}-{j}")
            for j, (_, group) in enumerate(groups)
        ]  # fmt: skip
        results = [None] * len(chunks)
        for (worker, group), (values, seconds, ran_on) in zip(groups, client.gather(futures), strict=True):  # fmt: skip
            for i, value in zip(group, values, strict=True):
                results[i] = (value, 0.0)
            results[group[0]] = (results[group[0]][0], seconds)  # the worker's compute time
            if ran_on != worker:  # chunks moved (a worker lost or added): group them again
                self._grouped = None
        return results

    def _groups(self, chunks):
        """``[(worker, chunk indices)]``: the chunks grouped by the worker holding them,
        asked of the scheduler (``who_has``) once, and again after a round whose task ran
        elsewhere (a chunk copied to several workers goes to the one given fewer chunks).

        Not asked every round: a synchronous call to the scheduler just before a round's
        submissions delayed the round by about 6 ms (a round doing nothing: 20 against 15
        ms on the 2-core VM, ``benchmarks/dask_rounds.py``). Groups are a matter of speed
        only: a task runs wherever its chunks are, and each result is still its own
        chunk's."""
        keys = tuple(chunk.key for chunk in chunks)
        if self._grouped is None or self._grouped[0] != keys:
            who_has = self.client.who_has(chunks)
            by_worker = {}
            for i, key in enumerate(keys):  # a chunk held twice goes to the less busy holder
                holders = sorted(who_has.get(key, ()), key=lambda w: (len(by_worker.get(w, ())), w))  # fmt: skip
                by_worker.setdefault(holders[0] if holders else None, []).append(i)
            self._grouped = (keys, [(worker, sorted(g)) for worker, g in by_worker.items()])
        return self._grouped[1]

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
