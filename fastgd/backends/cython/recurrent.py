"""Cython kernels of recurrent networks: a thin dtype dispatcher over ``_kernels``.

Same contract as :mod:`fastgd.backends.numpy.recurrent`, same algorithm and workspace
layout as the Numba kernels (``_recurrent_kernels.pxi``). The kernels run with the GIL
released and BLAS limited to one thread; results do not depend on the thread count.
"""

import numpy as np

from ..._config import MAX_CHUNKS, PARALLEL_MIN_WORK
from ...specs import losses
from ...specs import recurrent as rec
from ..blas import single_threaded_blas
from ..recurrent_layout import check_memory, chunk_rows, workspace
from . import _kernels as _k
from ._checks import _STATUS_CODES, _check_call, _check_weights

_CACHE_LINE_BYTES = 64
_WS_FIXED = ("xs", "d_in0", "d_in1", "tmp", "dh", "dc", "tmp_h", "head_d0", "head_d1", "w_t")
if (
    _k.RECURRENT_CELL_CODES != (rec.LSTM, rec.GRU, rec.TANH)
    or _k.RECURRENT_WS_SLOTS != tuple(range(len(_WS_FIXED) + 1))
    or _k.RECURRENT_TANH != (rec.TANH_CLAMP, rec.TANH_P, rec.TANH_Q)
    or _k.RECURRENT_PACKED != (rec.STRIP, rec.TILE_ROWS)
):  # pragma: no cover - stale
    raise ImportError("fastgd.backends.cython._kernels is out of date; rebuild it")


def _arrays(model, data, params):
    """The checked data (Y always 3-D) and the int64 descriptions of the model."""
    X, Y, weights, lengths = data
    if not (X.dtype == Y.dtype == params.dtype) or params.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"X, Y and params must share one dtype, float32 or float64; got {X.dtype}, {Y.dtype}, {params.dtype}"  # fmt: skip
        )
    n, T = X.shape[0], X.shape[1]
    head = np.ascontiguousarray(model.head_sizes, dtype=np.int64)
    k = int(head[-1])
    Y = Y if Y.ndim == 3 else Y.reshape(n, 1, -1)
    if X.ndim != 3 or X.shape[2] != model.n_features or Y.shape[0] != n or Y.shape[1] not in (1, T):
        raise ValueError(f"X must be (n, T, {model.n_features}) and Y (n, m) or (n, T, m)")
    if model.loss_code == losses.MSE and Y.shape[2] != k:
        raise ValueError(f"MSE needs {k} targets; got {Y.shape[2]}")
    if model.loss_code == losses.CATEGORICAL_CROSS_ENTROPY and not np.all((Y[..., 0] >= 0) & (Y[..., 0] < k)):  # fmt: skip
        raise ValueError(f"class indices must be in [0, {k})")
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if lengths.shape != (n,) or lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must have shape ({n},) and values in [1, {T}]")
    off = rec.layout(model.cell, model.n_features, model.hidden, model.n_layers, head)
    if params.shape != (off["n_params"],) or not params.flags.c_contiguous:
        raise ValueError(f"params must be a contiguous array of shape ({off['n_params']},)")
    par = np.concatenate([off[key] for key in ("w_ih", "w_hh", "b_ih", "b_hh", "head_w", "head_b")] + [head])  # fmt: skip
    desc = np.array([
        model.cell, model.n_features, model.hidden, model.n_layers, rec.GATES[int(model.cell)],
        len(head) - 1, model.head_activation, model.sequence, model.loss_code,
        off["n_weights"], off["n_params"], chunk_rows(int(model.hidden)), MAX_CHUNKS,
        PARALLEL_MIN_WORK,
    ], dtype=np.int64)  # fmt: skip
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    data = (X, Y, _check_weights(weights, X), lengths)
    return data, desc, np.ascontiguousarray(par, dtype=np.int64), int(off["n_params"])


def _scratch(model, rows, n_steps, dtype, n_params):
    """Workspace offsets and the per-chunk buffers for batches of up to ``rows`` rows."""
    itemsize = np.dtype(dtype).itemsize
    ws = workspace(model, rows, n_steps, itemsize)
    line = _CACHE_LINE_BYTES // itemsize
    padded = -(-(n_params + line) // line) * line
    check_memory(ws["size"], padded, itemsize)
    offsets = [ws[key] for key in _WS_FIXED]
    for key in ("H", "gates", "dah", "C", "aux", "head_a"):
        offsets += ws[key]
    return (
        np.array(offsets, dtype=np.int64),
        np.empty((MAX_CHUNKS, ws["size"]), dtype=dtype),
        np.empty((MAX_CHUNKS, padded), dtype=dtype),
        np.empty((MAX_CHUNKS, _CACHE_LINE_BYTES // 8)),
        np.empty((MAX_CHUNKS, ws["R"]), dtype=np.int64),
    )


def loss_and_gradient(model, data, params):
    """Compiled; see :func:`fastgd.backends.numpy.recurrent.loss_and_gradient`."""
    (X, Y, weights, lengths), desc, par, n_params = _arrays(model, data, params)
    ws, buf, G, chunk_loss, lens = _scratch(model, X.shape[0], X.shape[1], params.dtype, n_params)
    grad = np.empty_like(params)
    with single_threaded_blas():
        loss = _k.recurrent_loss_and_gradient(
            X, Y, weights, lengths, params, desc, par, ws, buf, G, chunk_loss, lens, grad,
            _k.max_threads(),
        )  # fmt: skip
    return float(loss), grad


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop; see :meth:`fastgd.backends.contract.Backend.train_epochs`."""
    params = state.params
    (X, Y, weights, lengths), desc, par, n_params = _arrays(model, data, params)
    hyper, lr_epochs, orders = _check_call(X.shape[0], state, update, block)
    n_layers = int(model.n_layers) + len(model.head_sizes) - 1
    norms = block.grad_norms
    if norms.dtype != np.float64 or norms.shape[0] < block.n_epochs or (
        norms.shape[0] and norms.shape[1] != n_layers
    ) or not norms.flags.c_contiguous:  # fmt: skip
        raise ValueError(f"grad_norms must be C-contiguous float64 (>= n_epochs, {n_layers})")
    rows = min(int(update.batch_size), X.shape[0])
    ws, buf, G, chunk_loss, lens = _scratch(model, rows, X.shape[1], params.dtype, n_params)
    with single_threaded_blas():
        n_done, status = _k.recurrent_train_epochs(
            X, Y, weights, lengths, params, orders, lr_epochs, int(block.n_epochs), desc, par, ws,
            int(update.batch_size), int(update.opt_code), hyper, state.opt_state,
            state.step_count, float(update.tol), float(update.n_iter_no_change),
            state.stop_state, block.history, norms, buf, G, chunk_loss, lens,
            np.empty_like(params), np.empty_like(state.opt_state), max(1, int(n_threads)),
        )  # fmt: skip
    return n_done, _STATUS_CODES[status]
