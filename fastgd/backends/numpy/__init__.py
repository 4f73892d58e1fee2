"""The NumPy reference backend: plain and readable, the oracle of every test.

One module per model kind (:mod:`.linear`, :mod:`.network`, :mod:`.recurrent`) over the containers of
:mod:`fastgd.backends.contract`, and the update shared by both (:mod:`.update`).
"""

import os

from ..contract import LinearModel, ModuleBackend, NetworkModel, RecurrentModel
from . import hessian, linear, network, recurrent


def _threads():
    # NumPy's BLAS has threads of its own; the reference itself runs in one
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


BACKEND = ModuleBackend(
    "numpy",
    {LinearModel: linear, NetworkModel: network, RecurrentModel: recurrent},
    _threads,
    hessian=hessian,
    releases_gil=False,  # Python loops: Ctrl-C is handled between batches in the main thread
)
