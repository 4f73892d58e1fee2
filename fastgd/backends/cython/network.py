"""Cython kernels of multi-layer perceptrons: a thin dtype dispatcher over ``_kernels``.

Same contract as :mod:`fastgd.backends.numpy.network`. The kernels run with the GIL
released and BLAS limited to one thread: the only parallelism is fastgd's fixed partition
of a batch into chunks, so results do not depend on the thread count.
"""

import numpy as np

from ..._config import MAX_CHUNKS, MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK
from ...specs import losses
from ...specs import network as net
from ..blas import single_threaded_blas
from ..contract import is_sparse
from . import _kernels as _k
from ._checks import (
    _ACTIVATION_CODES,
    _NO_INDEX,
    _STATUS_CODES,
    _check,
    _check_call,
    _check_sparse,
)

_CACHE_LINE_BYTES = 64


def _rows(data, params, loss_code):
    """The kernels' row arguments ``(X, Y, weights, indices, indptr, n_features)`` of
    dense rows (both index arrays empty) or CSR rows (``X`` the (nnz, 1) column of
    stored values, a view)."""
    if is_sparse(data):
        return _check_sparse(data, params, loss_code)
    X, Y, weights = _check(data, params, loss_code)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {X.shape}")
    return X, Y, weights, _NO_INDEX, _NO_INDEX, X.shape[1]


def _check_network(n, d, Y, params, running, model):
    """Cheap checks of the network arguments for ``n`` rows of ``d`` features (the
    kernels trust every offset and index).

    Returns ``sizes``, ``batch_norm`` and ``net_hyper`` as contiguous arrays and the
    (5, L) int64 table of parameter offsets (weight, bias, gamma, beta, running).
    ``running`` is None where the kernel does not take it.
    """
    activation, loss_code = model.activation, model.loss_code
    sizes = np.ascontiguousarray(model.sizes, dtype=np.int64)
    batch_norm = np.ascontiguousarray(model.batch_norm, dtype=np.int64)
    n_layers = sizes.shape[0] - 1 if sizes.ndim == 1 else 0
    if n_layers < 1 or np.any(sizes < 1) or batch_norm.shape != (n_layers,) or batch_norm[-1] != 0:
        raise ValueError(
            f"sizes must hold L + 1 >= 2 positive widths and batch_norm L flags, the output "
            f"layer's 0; got sizes {sizes.tolist()}, batch_norm {batch_norm.tolist()}"
        )
    k = int(sizes[-1])
    if d != sizes[0]:
        raise ValueError(f"X must have shape (n, {sizes[0]}); got ({n}, {d})")
    if Y.ndim != 2 or Y.shape[0] != n or Y.shape[1] < 1:
        raise ValueError(f"Y must have shape ({n}, m); got {Y.shape}")
    if loss_code == losses.MSE and Y.shape[1] != k:
        raise ValueError(f"MSE needs Y of shape ({n}, {k}); got {Y.shape}")
    if loss_code == losses.BINARY_CROSS_ENTROPY and k != 1:
        raise ValueError(f"binary cross-entropy needs one output; got {k}")
    if loss_code == losses.CATEGORICAL_CROSS_ENTROPY:
        labels = Y[:, 0]
        if not np.all((labels >= 0) & (labels < k)):  # NaN fails too
            raise ValueError(f"class indices in Y[:, 0] must be in [0, {k})")
    if activation not in _ACTIVATION_CODES:
        raise ValueError(f"unknown activation code {activation}")
    net_hyper = np.ascontiguousarray(model.net_hyper, dtype=np.float64)
    if net_hyper.shape != (net.N_NET_HYPER,):
        raise ValueError(f"net_hyper must have shape ({net.N_NET_HYPER},); got {net_hyper.shape}")
    if activation == net.LEAKY_RELU and not net_hyper[net.LEAKY_SLOPE] >= 0.0:
        # the kernels take act'(u) from act(u) > 0, which needs a slope >= 0
        raise ValueError(f"the leaky slope must be >= 0; got {net_hyper[net.LEAKY_SLOPE]}")
    layout = net.layout(sizes, batch_norm)
    for name, array, size in (
        ("params", params, layout["n_params"]),
        ("running", running, layout["n_running"]),
    ):
        if name == "running" and running is None:
            continue
        if (
            not isinstance(array, np.ndarray)
            or array.dtype != Y.dtype
            or array.shape != (size,)
            or not array.flags.c_contiguous
            or not array.flags.writeable
        ):
            raise ValueError(
                f"{name} must be a writeable contiguous {Y.dtype} array of shape ({size},)"
            )
    offsets = np.stack([layout[key] for key in ("weight", "bias", "gamma", "beta", "running")])
    return sizes, batch_norm, net_hyper, np.ascontiguousarray(offsets, dtype=np.int64)


def _network_scratch(sizes, batch_norm, rows, dtype, gather, csr=False):
    """Scratch of the network kernels for batches of up to ``rows`` rows.

    Returns ``buffers`` (offsets into ``scratch``: per layer z, a and the batch statistics,
    -1 where a layer has none, then the slots of ``_k.NETWORK_SCRATCH_SLOTS``), ``scratch``,
    the per-chunk rows ``G`` (gradients) and ``S`` (batch-norm column sums), each row
    padded by a cache line against false sharing, and the per-chunk losses. ``gather``:
    room for the gathered input rows of shuffled batches (dense rows). ``csr``: the
    gradient buffer of CSR rows (``Net.G`` in ``_network_kernels.pxi``): W_1's gradient
    once, then chunk rows of the other parameters only.
    """
    n_layers = len(sizes) - 1
    line = _CACHE_LINE_BYTES // np.dtype(dtype).itemsize
    buffers = np.full(3 * n_layers + len(_k.NETWORK_SCRATCH_SLOTS), -1, dtype=np.int64)
    total = 0

    def take(count):  # whole cache lines, so that every block starts on one
        nonlocal total
        offset = total
        total += -(-count // line) * line
        return offset

    for layer in range(n_layers):
        n_out = int(sizes[layer + 1])
        hidden = layer < n_layers - 1
        if not hidden or batch_norm[layer]:
            buffers[layer] = take(rows * n_out)  # z (x_hat; the output's dloss/dz)
        if hidden:
            buffers[n_layers + layer] = take(rows * n_out)  # activations
            if batch_norm[layer]:
                buffers[2 * n_layers + layer] = take(3 * n_out)  # mean, var, inv_std
    widest = int(max(sizes[1:-1], default=1))
    base = 3 * n_layers
    gather_slot, delta0, delta1, reduced = _k.NETWORK_SCRATCH_SLOTS
    buffers[base + gather_slot] = take(rows * int(sizes[0]) if gather else 0)
    buffers[base + delta0] = take(rows * widest)
    buffers[base + delta1] = take(rows * widest)
    buffers[base + reduced] = take(3 * widest)

    def padded(size):
        return -(-(size + line) // line) * line

    n_params = net.layout(sizes, batch_norm)["n_params"]
    first = int(sizes[0] * sizes[1]) if csr else 0  # W_1, outside the chunk rows
    ld_g = padded(n_params - first)
    G = np.empty((-(-first // ld_g) + MAX_CHUNKS, ld_g), dtype=dtype)
    S = np.empty((MAX_CHUNKS, padded(widest)), dtype=dtype)
    chunk_loss = np.empty((MAX_CHUNKS, _CACHE_LINE_BYTES // 8))
    return buffers, np.empty(max(total, 1), dtype=dtype), G, S, chunk_loss


def loss_and_gradient(model, data, params):
    """Mean loss of a network over all rows (one batch, training mode) and its gradient.

    See :func:`fastgd.backends.numpy.network.loss_and_gradient`. Uses OpenMP's default
    number of threads (the result does not depend on it).
    """
    rows = _rows(data, params, model.loss_code)
    n, d = data.Y.shape[0], rows[-1]
    sizes, batch_norm, net_hyper, offsets = _check_network(n, d, rows[1], params, None, model)
    buffers, scratch, G, S, chunk_loss = _network_scratch(
        sizes, batch_norm, n, params.dtype, False, is_sparse(data)
    )
    grad = np.empty_like(params)
    with single_threaded_blas():
        loss = _k.network_loss_and_gradient(
            *rows, params, sizes, batch_norm, int(model.activation), net_hyper,
            int(model.loss_code), offsets, buffers, scratch, G, S, chunk_loss, grad, MAX_CHUNKS,
            MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, _k.max_threads(),
        )  # fmt: skip
    return float(loss), grad


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop of a network; see
    :meth:`fastgd.backends.contract.Backend.train_epochs`.

    Runs with the GIL released and BLAS limited to one thread; ``n_threads`` is the OpenMP
    team size of the parallel chunk loops (the results do not depend on it).
    """
    params, running, opt_state = state.params, state.running, state.opt_state
    rows = _rows(data, params, model.loss_code)
    n, d, csr = data.Y.shape[0], rows[-1], is_sparse(data)
    sizes, batch_norm, net_hyper, offsets = _check_network(n, d, rows[1], params, running, model)
    hyper, lr_epochs, orders = _check_call(n, state, update, block)
    _check_grad_norms(block, sizes.shape[0] - 1)
    buffers, scratch, G, S, chunk_loss = _network_scratch(
        sizes, batch_norm, min(int(update.batch_size), n), params.dtype,
        orders.shape[0] > 0 and not csr, csr,
    )  # fmt: skip
    with single_threaded_blas():
        n_done, status = _k.network_train_epochs(
            *rows, params, running, orders, lr_epochs, int(block.n_epochs), sizes,
            batch_norm, int(model.activation), net_hyper, int(model.loss_code),
            int(update.batch_size), int(update.opt_code), hyper, opt_state, state.step_count,
            float(update.tol), float(update.n_iter_no_change), state.stop_state, block.history,
            block.grad_norms, offsets, buffers, scratch, G, S, chunk_loss, np.empty_like(params),
            np.empty_like(running), np.empty_like(opt_state), MAX_CHUNKS, MIN_ROWS_PER_CHUNK,
            PARALLEL_MIN_WORK, max(1, int(n_threads)),
        )  # fmt: skip
    return n_done, _STATUS_CODES[status]


def _check_grad_norms(block, n_layers):
    grad_norms = block.grad_norms
    if (
        not isinstance(grad_norms, np.ndarray)
        or grad_norms.dtype != np.float64
        or grad_norms.ndim != 2
        or grad_norms.shape[0] < block.n_epochs
        or grad_norms.shape[1] != n_layers
        or not grad_norms.flags.c_contiguous
        or not grad_norms.flags.writeable
    ):
        raise ValueError(
            f"grad_norms must be a writeable C-contiguous float64 array of shape "
            f"(>= {block.n_epochs}, {n_layers})"
        )
