"""Numba's thread count for the duration of a kernel call."""

import contextlib

import numba


@contextlib.contextmanager
def numba_threads(n_threads):
    """Context manager: Numba's parallel regions use ``n_threads`` inside, as before after."""
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
