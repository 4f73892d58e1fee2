"""fastgd: fast gradient-descent training on the CPU, the loop in compiled code.

>>> import fastgd
>>> result = fastgd.fit(X, y, model="logistic", batch_size=32, epochs=10)  # doctest: +SKIP
"""

from .api import DivergenceError, DivergenceWarning, fit
from .backends import available_backends
from .diagnostics import GradientWarning
from .network import MLP
from .result import FitResult
from .sysinfo import show_config

__version__ = "0.1.0"

__all__ = [
    "fit",
    "FitResult",
    "MLP",
    "GradientWarning",
    "DivergenceWarning",
    "DivergenceError",
    "available_backends",
    "show_config",
    "__version__",
]
