"""Numba's thread count for the duration of a kernel call, and the guard of concurrent calls.

Several Python threads may train at once (joblib's threading backend, Dask's threaded
workers, a web server). Numba's ``omp`` and ``tbb`` threading layers run parallel regions
launched from several threads at once; the ``workqueue`` layer (chosen when neither
OpenMP nor TBB loads) aborts the process instead. :func:`kernel_guard` therefore holds one
process-wide lock around every kernel call while the layer is ``workqueue``, or not yet
known (Numba chooses it at the first parallel call); once another layer is known it takes
no lock.
"""

import contextlib
import threading

import numba

_LOCK = threading.RLock()
_LAYER = {"name": None}


@contextlib.contextmanager
def numba_threads(n_threads):
    """Context manager: Numba's parallel regions use ``n_threads`` inside, as before after."""
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def threading_layer():
    """The threading layer Numba chose in this process, or None before its first
    parallel call."""
    if _LAYER["name"] is None:
        try:
            _LAYER["name"] = numba.threading_layer()
        except ValueError:  # no parallel region has run yet
            return None
    return _LAYER["name"]


def kernel_guard():
    """Context manager around one kernel call: the process-wide lock while the threading
    layer is ``workqueue`` or not yet chosen, nothing once it is ``omp`` or ``tbb``."""
    if threading_layer() in ("omp", "tbb"):
        return contextlib.nullcontext()
    return _LOCK
