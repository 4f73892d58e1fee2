"""The Cython backend: the kernels of ``_kernels.pyx`` (OpenMP ``prange``), compiled ahead
of time for float32 and float64.

One wrapper module per model kind (:mod:`.linear`, :mod:`.network`, :mod:`.recurrent`) unpacks the containers
of :mod:`fastgd.backends.contract` once and checks what the kernels cannot check without
bounds checking (:mod:`._checks`). Importing this package raises ImportError when the
extension is not built, which the backend registry reports.
"""

from ..contract import LinearModel, ModuleBackend, NetworkModel, RecurrentModel
from . import hessian, linear, network, recurrent
from ._kernels import max_threads, openmp_enabled

BACKEND = ModuleBackend(
    "cython",
    {LinearModel: linear, NetworkModel: network, RecurrentModel: recurrent},
    max_threads,
    hessian=hessian,
)

__all__ = ["BACKEND", "openmp_enabled"]
