"""fastgd: fast gradient-descent training on the CPU, the loop in compiled code.

>>> import fastgd
>>> result = fastgd.fit(X, y, model="logistic", batch_size=32, epochs=10)  # doctest: +SKIP
"""

from .api import DivergenceError, DivergenceWarning, InterruptedWarning, fit
from .backends import available_backends
from .diagnostics import GradientWarning
from .network import MLP
from .recurrent import RNN
from .result import FitResult
from .sysinfo import show_config

__version__ = "0.1.0"

_LAZY = {"LinearRegressor": "estimators", "LinearClassifier": "estimators", "MLPRegressor": "estimators", "MLPClassifier": "estimators", "save": "persistence", "load": "persistence", "Checkpoint": "persistence"}  # fmt: skip


def __getattr__(name):  # the estimators import scikit-learn only when first used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "fit",
    "FitResult",
    "LinearRegressor",
    "LinearClassifier",
    "MLPRegressor",
    "MLPClassifier",
    "save",
    "load",
    "Checkpoint",
    "MLP",
    "RNN",
    "GradientWarning",
    "DivergenceWarning",
    "DivergenceError",
    "InterruptedWarning",
    "available_backends",
    "show_config",
    "__version__",
]
