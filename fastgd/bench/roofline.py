"""The machine's limits, measured in the same run as the figures they bound.

- **Streaming read bandwidth**: a compiled, parallel sum of every row of a large float64
  array. A BLAS mat-vec over the same array reaches only about 60% of it,
  so it is not the reference. A data set that fits in a cache is read faster than
  memory allows, every epoch: the same read of an array of its size (``working_sets``)
  is then its limit, so no share exceeds what that size can be read at.
- **Matmul peak**: a square BLAS matrix product per dtype, ``2 n^3`` floating-point
  operations per call.

Each is measured at 1 thread and at every thread count of the run (BLAS pinned with
threadpoolctl, the Numba kernel through its thread count) and reported as the median of a
few repeats. :func:`share` turns a grid record into its share of the relevant limit: bytes
of X per second for the linear family, FLOP/s for networks.
"""

import time

import numpy as np

from ..backends.blas import blas_threads

STREAM_BYTES = 800 * 2**20  # far larger than any last-level cache here
STREAM_BYTES_QUICK = 64 * 2**20
WORKING_SET_MIN = 2**20  # smaller data sets are bounded by this size's read rate
MATMUL_N = 2048
MATMUL_N_QUICK = 512
REPEATS = 5


def _row_sums_kernel():
    """The compiled read of every row (made on first use: importing the suite stays cheap)."""
    from numba import njit, prange

    @njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def row_sums(X, out):
        # fastmath lets LLVM split each row's sum into vector partial sums, so the loop is
        # bound by memory, not by the latency of one chain of additions
        for i in prange(X.shape[0]):
            total = 0.0
            for j in range(X.shape[1]):
                total += X[i, j]
            out[i] = total

    return row_sums


def _median_seconds(call, repeats=REPEATS):
    call()  # compile, fault the pages in, warm the caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def stream_read(threads, nbytes=STREAM_BYTES):
    """Streaming read bandwidth in bytes per second at ``threads`` threads.

    Parameters
    ----------
    threads : int
    nbytes : int, default 800 MiB
        Size of the array read (rows of 1,000 float64 values). Smaller than a cache, it
        is read from that cache (again and again within one timing, so a timing lasts
        about as long as one read of the default size).

    Returns
    -------
    float
    """
    return stream_reader(threads, nbytes)()


def stream_reader(threads, nbytes=STREAM_BYTES):
    """A measurement of the streaming read bandwidth to take again and again: the array
    is allocated once, and each call returns the bandwidth of that moment.

    On a shared machine the bandwidth moves by a sixth from one minute to the next, so a
    benchmark that reads it just before each timing it bounds (a pair per repeat) gives
    steadier shares than one read for the whole run.

    Parameters
    ----------
    threads, nbytes : int
        As for :func:`stream_read`.

    Returns
    -------
    callable
        With no arguments; returns bytes per second (a float).
    """
    import numba

    kernel = _row_sums_kernel()
    X = np.ones((max(1, nbytes // 8000), 1000))
    out = np.empty(X.shape[0])
    reads = max(1, STREAM_BYTES // (8 * X.nbytes))

    def read():
        for _ in range(reads):
            kernel(X, out)

    def measure():
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            seconds = _median_seconds(read)
        finally:
            numba.set_num_threads(previous)
        return reads * X.nbytes / seconds

    return measure


def matmul_rate(dtype, threads, n=MATMUL_N):
    """FLOP/s of an ``n x n`` BLAS matrix product in ``dtype`` at ``threads`` threads.

    Parameters
    ----------
    dtype : str or numpy dtype
    threads : int
    n : int, default 2048

    Returns
    -------
    float
    """
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(dtype)
    B = rng.standard_normal((n, n)).astype(dtype)
    C = np.empty((n, n), dtype=dtype)
    with blas_threads(threads):
        seconds = _median_seconds(lambda: np.matmul(A, B, out=C))
    return 2.0 * n**3 / seconds


def measure(threads, dtypes, quick=False, log=print, working_sets=()):
    """The limits of this machine at each thread count.

    Parameters
    ----------
    threads : sequence of int
    dtypes : sequence of str
    quick : bool, default False
        Smaller arrays (a rough figure: 64 MiB may partly sit in cache).
    log : callable
    working_sets : sequence of int, default ()
        Bytes of the data sets of the run smaller than the streaming array: each one's
        read rate is measured too (they may fit in a cache); sizes below
        :data:`WORKING_SET_MIN` are measured at that size.

    Returns
    -------
    dict
        ``{"stream_gbs": {threads: GB/s}, "matmul_gflops": {dtype: {threads: GFLOP/s}},
        "stream_bytes": int, "matmul_n": int, "working_set_gbs": {bytes: {threads:
        GB/s}}}`` (thread counts and byte counts as strings, for JSON).
    """
    nbytes = STREAM_BYTES_QUICK if quick else STREAM_BYTES
    n = MATMUL_N_QUICK if quick else MATMUL_N
    sets = sorted({max(int(b), WORKING_SET_MIN) for b in working_sets if 0 < b < nbytes} - {nbytes})
    limits = dict(stream_gbs={}, matmul_gflops={d: {} for d in dtypes}, stream_bytes=nbytes,
                  matmul_n=n, working_set_gbs={str(b): {} for b in sets})  # fmt: skip
    for t in sorted(set(threads)):
        limits["stream_gbs"][str(t)] = stream_read(t, nbytes) / 1e9
        for dtype in dtypes:
            limits["matmul_gflops"][dtype][str(t)] = matmul_rate(dtype, t, n) / 1e9
        for b in sets:
            limits["working_set_gbs"][str(b)][str(t)] = stream_read(t, b) / 1e9
        log(f"  {t} thread(s): read {limits['stream_gbs'][str(t)]:.1f} GB/s, matmul "
            + ", ".join(f"{d} {limits['matmul_gflops'][d][str(t)]:.0f} GFLOP/s" for d in dtypes)
            + "".join(f"; {b / 2**20:.1f} MiB read at {limits['working_set_gbs'][str(b)][str(t)]:.0f} GB/s" for b in sets))  # fmt: skip
    return limits


def read_limit(limits, threads, working_set=None):
    """The read rate (GB/s) that bounds a data set of ``working_set`` bytes: the rate
    measured at the smallest working set not smaller than it, or the streaming rate."""
    rate = limits["stream_gbs"].get(str(threads))
    measured = limits.get("working_set_gbs", {})
    if working_set is not None and rate:
        fits = [int(b) for b in measured if int(b) >= working_set]
        if fits:
            rate = max(rate, measured[str(min(fits))].get(str(threads), rate))
    return rate


def network_flops_per_sample(sizes):
    """Multiply-adds of one sample's forward and backward pass through dense layers of
    widths ``sizes``, counted as FLOPs: 2 per multiply-add forward, 4 backward (the
    gradients of the weights and of the layer's input), the first layer's input gradient
    left out."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False)]
    return 2 * sum(products) + 4 * sum(products) - 2 * products[0]


def share(record, limits, sizes=None, row_bytes=None):
    """A grid record's share of the limit that bounds it, or None.

    Parameters
    ----------
    record : dict
        A grid record (``samples_per_s``, ``features``, ``dtype``, ``threads``; with
        ``rows``, its data set's read rate bounds it, see :func:`read_limit`).
    limits : dict
        From :func:`measure`.
    sizes : sequence of int, optional
        A network's layer widths, input to output: the share is of the matmul peak.
        Without it (the linear family) the share is of the read bandwidth, counting the
        bytes of X read per second.
    row_bytes : int, optional
        Bytes of one row of X as stored (CSR: its values and column indices); default
        ``features * itemsize`` (dense rows).

    Returns
    -------
    float or None
    """
    rate, threads = record.get("samples_per_s"), str(record["threads"])
    if not rate or not limits:
        return None
    if sizes is None:
        if row_bytes is None:
            row_bytes = record["features"] * np.dtype(record["dtype"]).itemsize
        rows = record.get("rows")
        limit = read_limit(limits, threads, None if rows is None else rows * row_bytes)
        return None if not limit else rate * row_bytes / (limit * 1e9)
    limit = limits["matmul_gflops"].get(record["dtype"], {}).get(threads)
    return None if not limit else rate * network_flops_per_sample(sizes) / (limit * 1e9)
