"""Backend registry: one contract, three implementations.

Each backend module exposes ``NAME``, ``loss_and_gradient(...)`` and ``train_epochs(...)``
with identical arguments (arrays, numbers and integer codes only; see
:mod:`fastgd.backends.numpy_ref` for the contract). ``"auto"`` picks the first available of
Numba, Cython, NumPy; the environment variable ``FASTGD_BACKEND`` overrides ``"auto"``.
"""

import importlib
import os

BACKENDS = ("numba", "cython", "numpy")
AUTO_ORDER = ("numba", "cython", "numpy")
_MODULES = {
    "numba": "fastgd.backends.numba_kernels",
    "cython": "fastgd.backends.cython_backend",
    "numpy": "fastgd.backends.numpy_ref",
}
_loaded = {}
_errors = {}


def _load(name):
    if name not in _loaded and name not in _errors:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            _errors[name] = f"{type(exc).__name__}: {exc}"
    return _loaded.get(name)


def available_backends():
    """Names of the backends that can be used on this installation, in preference order.

    Returns
    -------
    list of str
    """
    return [name for name in AUTO_ORDER if _load(name) is not None]


def unavailable_reason(name):
    """Why backend ``name`` could not be loaded, or ``None`` if it is available."""
    _load(name)
    return _errors.get(name)


def get_backend(name="auto"):
    """Return the backend module called ``name``.

    Parameters
    ----------
    name : {"auto", "numba", "cython", "numpy"}
        ``"auto"`` takes ``FASTGD_BACKEND`` if set, else the fastest available backend.

    Returns
    -------
    module
        A module implementing the backend contract.

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
    module = _load(name)
    if module is None:
        raise ValueError(f"backend {name!r} is not available: {_errors[name]}")
    return module
