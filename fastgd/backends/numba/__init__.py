"""The Numba backend: the whole training loop in one compiled call per block of epochs.

One module per model kind (:mod:`.linear`, :mod:`.network`) over the containers of
:mod:`fastgd.backends.contract`; the update shared by both (:mod:`.update`), per-row
losses (:mod:`.losses`) and the thread count of a call (:mod:`.threads`).
"""

import numba

from ..contract import LinearModel, ModuleBackend, NetworkModel
from . import hessian, linear, network


def _threads():
    return numba.config.NUMBA_NUM_THREADS


BACKEND = ModuleBackend("numba", {LinearModel: linear, NetworkModel: network}, _threads, hessian)
