"""BLAS threads: the one place fastgd limits them (threadpoolctl).

The compiled network kernels call BLAS (matrix products of a chunk of rows) from each of
their own threads, one chunk per thread; a multi-threaded BLAS inside would oversubscribe
the cores. :func:`single_threaded_blas` limits every loaded BLAS to one thread for the
duration of a kernel call, so the only parallelism is fastgd's fixed partition of the
batch into chunks, and results do not depend on the thread count. The benchmarks pin
NumPy's BLAS with :func:`blas_threads` for fair comparisons.
"""

import contextlib


def blas_threads(n):
    """Context manager: the loaded BLAS libraries use at most ``n`` threads inside it.

    Parameters
    ----------
    n : int

    Returns
    -------
    context manager
        A no-op when threadpoolctl is not installed.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def single_threaded_blas():
    """Context manager: BLAS libraries use one thread inside it."""
    return blas_threads(1)
