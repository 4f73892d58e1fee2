"""BLAS threads during the network kernels.

The compiled network kernels call BLAS (matrix products of a chunk of rows) from each of
their own threads, one chunk per thread; a multi-threaded BLAS inside would oversubscribe
the cores. :func:`single_threaded_blas` limits every loaded BLAS to one thread for the
duration of a kernel call (threadpoolctl), so the only parallelism is fastgd's fixed
partition of the batch into chunks, and results do not depend on the thread count.
"""

import contextlib


def single_threaded_blas():
    """Context manager: BLAS libraries use one thread inside it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
