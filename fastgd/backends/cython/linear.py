"""Cython kernels of the linear family: a thin dtype dispatcher over ``_kernels``.

Same contract as :mod:`fastgd.backends.numpy.linear`, same algorithm as the Numba backend
(chunked mini-batches, chunk sums added in order, so results are bit-identical for any
``n_threads``). The kernels are compiled for float32 and float64.
"""

import numpy as np

from ..._config import MAX_CHUNKS, MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, ROWS_PER_BLOCK
from . import _kernels as _k
from ._checks import _STATUS_CODES, _check, _check_call

_CACHE_LINE_BYTES = 64


def _scratch(params, n_outputs):
    """Per-chunk rows of gradient sums G (n_params, then the loss) and of z values Z.

    Each row is followed by at least one unused cache line, so that chunks run by different
    threads never write to the same line (false sharing slows the small z rows a lot).
    """
    line = _CACHE_LINE_BYTES // params.itemsize

    def padded(size):
        return -(-(size + line) // line) * line

    buf = np.empty((MAX_CHUNKS, padded(params.shape[0] + 1)), dtype=params.dtype)
    zbuf = np.empty((MAX_CHUNKS, padded(ROWS_PER_BLOCK * n_outputs)), dtype=params.dtype)
    return buf, zbuf


def loss_and_gradient(model, data, params):
    """Mean (weighted) loss and gradient over all rows.

    See :func:`fastgd.backends.numpy.linear.loss_and_gradient`. Uses OpenMP's default
    number of threads (the result does not depend on it).
    """
    X, Y, weights = _check(data, params, model.loss_code)
    grad = np.zeros_like(params)
    buf, zbuf = _scratch(params, model.n_outputs)
    loss = _k.loss_and_gradient(
        X, Y, weights, params, int(model.loss_code), int(model.n_outputs),
        bool(model.fit_intercept), grad, buf, zbuf, MAX_CHUNKS, MIN_ROWS_PER_CHUNK,
        PARALLEL_MIN_WORK, ROWS_PER_BLOCK, _k.max_threads(),
    )  # fmt: skip
    return float(loss), grad


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop; see :meth:`fastgd.backends.contract.Backend.train_epochs`.

    The loop runs with the GIL released; ``n_threads`` is the OpenMP team size of the
    parallel chunk loop (ignored when the extension was built without OpenMP).
    """
    X, Y, weights = _check(data, state.params, model.loss_code)
    hyper, lr_epochs, orders = _check_call(X, state, update, block)
    params, opt_state = state.params, state.opt_state
    buf, zbuf = _scratch(params, model.n_outputs)
    n_done, status = _k.train_epochs(
        X, Y, weights, params, orders, lr_epochs, int(block.n_epochs), int(model.loss_code),
        int(model.n_outputs), bool(model.fit_intercept), int(update.batch_size),
        int(update.opt_code), hyper, opt_state, state.step_count, float(update.tol),
        float(update.n_iter_no_change), state.stop_state, block.history, buf, zbuf,
        np.empty_like(params), np.empty_like(opt_state), MAX_CHUNKS, MIN_ROWS_PER_CHUNK,
        PARALLEL_MIN_WORK, ROWS_PER_BLOCK, max(1, int(n_threads)),
    )  # fmt: skip
    return n_done, _STATUS_CODES[status]
