"""``show_config``: versions, backends, OpenMP and thread counts, for bug reports."""

import platform
import sys


def show_config(file=None):
    """Print the versions, available backends, OpenMP status and thread counts.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: standard output).

    Returns
    -------
    dict
        The same information as a dictionary.
    """
    import numpy as np

    from . import __version__
    from .backends import BACKENDS, available_backends, get_backend, unavailable_reason

    info = {
        "fastgd": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "backends available": ", ".join(available_backends()),
        "default backend": get_backend("auto").name,
    }
    for name in BACKENDS:
        reason = unavailable_reason(name)
        if reason:
            info[f"{name} unavailable"] = reason
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba threads (NUMBA_NUM_THREADS)"] = numba.config.NUMBA_NUM_THREADS
        info["numba threading layer"] = numba.config.THREADING_LAYER
        from .backends.numba.cache import cache_root

        info["numba kernel cache"] = cache_root() or "none: compiled in each process"
    except ImportError:
        pass
    if "cython" in available_backends():
        from .backends.cython import openmp_enabled

        info["cython kernels built with OpenMP"] = openmp_enabled()
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool["user_api"] == "blas":
                info["blas"] = (
                    f"{pool['internal_api']} {pool['version']} ({pool.get('architecture')}, {pool['num_threads']} threads)"
                )
    except ImportError:
        pass
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}} : {value}", file=file)
    return info
