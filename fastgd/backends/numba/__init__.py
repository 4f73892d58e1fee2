"""The Numba backend: the whole training loop in one compiled call per block of epochs.

One module per model kind (:mod:`.linear`, :mod:`.network`, :mod:`.recurrent`) over the containers of
:mod:`fastgd.backends.contract`; the update shared by both (:mod:`.update`), per-row
losses (:mod:`.losses`) and the thread count of a call (:mod:`.threads`).
"""

import numba
import numpy as np

from ..contract import LinearModel, ModuleBackend, NetworkModel, RecurrentModel
from . import hessian, linear, network, recurrent
from .threads import kernel_guard


def _threads():
    return numba.config.NUMBA_NUM_THREADS


def _read_only(data):
    """Read-only views of the rows, which the kernels only read.

    Numba compiles a separate specialization of every kernel for read-only arrays (memmaps,
    pandas 3 frames, arrays the user locked): marking every call's data read-only gives
    one specialization whatever the user's arrays are, and costs three views per call.
    """
    views = []
    for array in data:
        if isinstance(array, np.ndarray):
            array = array.view()
            array.flags.writeable = False
        else:  # SparseData.n_features
            array = int(array)
        views.append(array)
    return type(data)(*views)


BACKEND = ModuleBackend(
    "numba",
    {LinearModel: linear, NetworkModel: network, RecurrentModel: recurrent},
    _threads,
    prepare=_read_only,
    hessian=hessian,
    guard=kernel_guard,
)
