"""BLAS threads: the one place fastgd limits them (threadpoolctl).

The compiled network kernels call BLAS (matrix products of a chunk of rows) from each of
their own threads, one chunk per thread; a multi-threaded BLAS inside would oversubscribe
the cores. :func:`single_threaded_blas` limits every loaded BLAS to one thread for the
duration of a kernel call, so the only parallelism is fastgd's fixed partition of the
batch into chunks, and results do not depend on the thread count. The benchmarks pin
NumPy's BLAS with :func:`blas_threads` for fair comparisons.
"""

import contextlib
import sys
import threading

# threadpoolctl finds the loaded BLAS libraries by reading the process's memory map (about
# 1 to 10 ms, measured: more than a small Newton pass). The controller it builds is kept,
# and built again only when modules were imported since (which may have loaded a BLAS).
_CONTROLLER = {"modules": -1, "controller": None}


def _controller():
    """The cached ``threadpoolctl.ThreadpoolController`` (ImportError without the package)."""
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER["modules"] != len(sys.modules):
        _CONTROLLER["controller"] = ThreadpoolController()
        _CONTROLLER["modules"] = len(sys.modules)
    return _CONTROLLER["controller"]


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
        controller = _controller()
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return controller.limit(limits=n, user_api="blas")


# Kernel calls from several Python threads at once share one limit: the first to enter
# sets it, the last to leave restores the original counts. (Nested threadpoolctl limits
# from several threads would restore out of order: a thread could run its kernel with
# multi-threaded BLAS, or leave the process pinned to one thread after every fit ended.)
_PINNED = {"count": 0, "restore": None}
_PIN_LOCK = threading.Lock()


def _set_process_wide(lib, n):
    """Set a BLAS library's thread count for the whole process.

    threadpoolctl (3.8) lets one Python thread "control" a pthreads OpenBLAS and silently
    ignores the limits other threads set while that thread holds a ``threadpool_limits``
    context. A fit running in another thread (Ctrl-C support trains in a worker thread;
    joblib threading, Dask threaded workers) then ran its kernels with multi-threaded
    BLAS inside its own parallel chunks: 80x slower from oversubscription, and results
    that depended on the thread count. The process-wide setter is called directly.
    """
    setter = getattr(lib, "_real_set_num_threads", None) or lib.set_num_threads
    setter(n)


def _pin_one_thread():
    """Every loaded BLAS to one thread; returns the function that restores them."""
    try:
        libs = [lib for lib in _controller().lib_controllers if lib.user_api == "blas"]
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return lambda: None
    original = [(lib, lib.get_num_threads()) for lib in libs]
    for lib, _ in original:
        _set_process_wide(lib, 1)

    def restore():
        for lib, n in original:
            if n is not None:
                _set_process_wide(lib, n)

    return restore


@contextlib.contextmanager
def single_threaded_blas():
    """Context manager: BLAS libraries use one thread inside it, whichever Python thread
    enters it (thread-safe: concurrent holders share one limit, restored when the last
    leaves)."""
    with _PIN_LOCK:
        if _PINNED["count"] == 0:
            _PINNED["restore"] = _pin_one_thread()
        _PINNED["count"] += 1
    try:
        yield
    finally:
        with _PIN_LOCK:
            _PINNED["count"] -= 1
            if _PINNED["count"] == 0:
                _PINNED["restore"]()
                _PINNED["restore"] = None


# NumPy's and SciPy's wheels each bundle their own OpenBLAS build. NumPy's (ILP64, symbols
# ``scipy_*_64_``) ran dsyrk 1.25-1.4x faster than SciPy's on the Gram products of Newton's
# Hessian pass (100,000 x 100 float64, one thread, interleaved medians: 24.5 against
# 19.1 GFLOP/s; equal or faster at d = 10, 300 and 1000). Its dsyrk (and its ssyrk, for
# ``Newton(hessian_dtype="float32")``) is used where found.
_ILP64_SYRK_SYMBOLS = ("scipy_{}syrk_64_", "{}syrk_64_")


def numpy_dsyrk_address():
    """Address of the ILP64 (64-bit integer) ``dsyrk`` of the BLAS that NumPy links, or 0.

    Returns
    -------
    int
        A Fortran-interface ``dsyrk`` taking 64-bit integer sizes, from the library
        NumPy's wheel bundles; 0 when NumPy's BLAS has no such symbol (another build,
        or threadpoolctl finds no library), and the caller falls back to SciPy's.
    """
    return _numpy_syrk_address("d")


def numpy_ssyrk_address():
    """Address of the ILP64 ``ssyrk`` (float32) of the BLAS that NumPy links, or 0.

    Returns
    -------
    int
        As :func:`numpy_dsyrk_address`, for the single-precision routine.
    """
    return _numpy_syrk_address("s")


def _numpy_syrk_address(prefix):
    """The ILP64 ``{prefix}syrk`` of NumPy's bundled BLAS, or 0."""
    import ctypes
    import os

    import numpy

    libs_dir = os.path.dirname(os.path.dirname(numpy.__file__))
    try:
        libs = [lib for lib in _controller().lib_controllers if lib.user_api == "blas"]
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return 0
    for lib in libs:
        path = os.path.realpath(lib.filepath)
        if not path.startswith(os.path.join(os.path.realpath(libs_dir), "numpy")):
            continue
        handle = ctypes.CDLL(path)
        for symbol in (pattern.format(prefix) for pattern in _ILP64_SYRK_SYMBOLS):
            if hasattr(handle, symbol):
                return ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value or 0
    return 0
