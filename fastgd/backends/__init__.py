"""Backend registry: one contract (:mod:`.contract`), three implementations.

``backends/numpy/`` is the readable reference, ``backends/numba/`` and ``backends/cython/``
the compiled ones; each package exposes ``BACKEND``, an object satisfying
:class:`~fastgd.backends.contract.Backend`. ``"auto"`` picks the first available in
:data:`BACKENDS` order; the environment variable ``FASTGD_BACKEND`` overrides ``"auto"``.
"""

import importlib
import os

# in preference order: what "auto" takes first
BACKENDS = ("numba", "cython", "numpy")
_loaded = {}
_errors = {}


def _load(name):
    if name not in _loaded and name not in _errors:
        try:
            _loaded[name] = importlib.import_module(f"fastgd.backends.{name}").BACKEND
        except ImportError as exc:
            _errors[name] = f"{type(exc).__name__}: {exc}"
    return _loaded.get(name)


def available_backends():
    """Names of the backends that can be used on this installation, in preference order.

    Returns
    -------
    list of str
    """
    return [name for name in BACKENDS if _load(name) is not None]


def unavailable_reason(name):
    """Why backend ``name`` could not be loaded, or ``None`` if it is available.

    Parameters
    ----------
    name : str
        A backend name.

    Returns
    -------
    str or None
    """
    _load(name)
    return _errors.get(name)


def get_backend(name="auto"):
    """Return the backend called ``name``.

    Parameters
    ----------
    name : {"auto", "numba", "cython", "numpy"}
        ``"auto"`` takes ``FASTGD_BACKEND`` if set, else the fastest available backend.

    Returns
    -------
    fastgd.backends.contract.Backend
        Its ``name``, ``max_threads()``, ``train_epochs(...)`` and ``loss_and_gradient(...)``.

    Raises
    ------
    ValueError
        If ``name`` is not a backend name, or the backend is not available here.
    """
    if not isinstance(name, str) or (name != "auto" and name not in BACKENDS):
        raise ValueError(
            f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {name!r}"
        )
    if name == "auto":
        override = os.environ.get("FASTGD_BACKEND")
        if override:
            if override not in BACKENDS:
                raise ValueError(
                    f"environment variable FASTGD_BACKEND={override!r} is not one of {BACKENDS}"
                )
            return get_backend(override)
        return _load(available_backends()[0])
    backend = _load(name)
    if backend is None:
        raise ValueError(f"backend {name!r} is not available: {_errors[name]}")
    return backend
