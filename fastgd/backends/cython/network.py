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
from . import _kernels as _k
from ._checks import _ACTIVATION_CODES, _STATUS_CODES, _check, _check_call

_CACHE_LINE_BYTES = 64


def _check_network(X, Y, params, running, model):
    """Cheap checks of the network arguments (the kernels trust every offset and index).

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
    n, k = X.shape[0], int(sizes[-1])
    if X.ndim != 2 or X.shape[1] != sizes[0]:
        raise ValueError(f"X must have shape (n, {sizes[0]}); got {X.shape}")
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
            or array.dtype != X.dtype
            or array.shape != (size,)
            or not array.flags.c_contiguous
            or not array.flags.writeable
        ):
            raise ValueError(
                f"{name} must be a writeable contiguous {X.dtype} array of shape ({size},)"
            )
    offsets = np.stack([layout[key] for key in ("weight", "bias", "gamma", "beta", "running")])
    return sizes, batch_norm, net_hyper, np.ascontiguousarray(offsets, dtype=np.int64)


def _network_scratch(sizes, batch_norm, rows, dtype, shuffled):
    """Scratch of the network kernels for batches of up to ``rows`` rows.

    Returns ``buffers`` (offsets into ``scratch``: per layer z, a and the batch statistics,
    -1 where a layer has none, then the slots of ``_k.NETWORK_SCRATCH_SLOTS``), ``scratch``,
    the per-chunk rows ``G`` (gradients) and ``S`` (batch-norm column sums), each row
    padded by a cache line against false sharing, and the per-chunk losses.
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
    gather, delta0, delta1, reduced = _k.NETWORK_SCRATCH_SLOTS
    buffers[base + gather] = take(rows * int(sizes[0]) if shuffled else 0)
    buffers[base + delta0] = take(rows * widest)
    buffers[base + delta1] = take(rows * widest)
    buffers[base + reduced] = take(3 * widest)

    def padded(size):
        return -(-(size + line) // line) * line

    n_params = net.layout(sizes, batch_norm)["n_params"]
    G = np.empty((MAX_CHUNKS, padded(n_params)), dtype=dtype)
    S = np.empty((MAX_CHUNKS, padded(widest)), dtype=dtype)
    chunk_loss = np.empty((MAX_CHUNKS, _CACHE_LINE_BYTES // 8))
    return buffers, np.empty(max(total, 1), dtype=dtype), G, S, chunk_loss


def loss_and_gradient(model, data, params):
    """Mean loss of a network over all rows (one batch, training mode) and its gradient.

    See :func:`fastgd.backends.numpy.network.loss_and_gradient`. Uses OpenMP's default
    number of threads (the result does not depend on it).
    """
    X, Y, weights = _check(data, params, model.loss_code)
    sizes, batch_norm, net_hyper, offsets = _check_network(X, Y, params, None, model)
    buffers, scratch, G, S, chunk_loss = _network_scratch(
        sizes, batch_norm, X.shape[0], params.dtype, False
    )
    grad = np.empty_like(params)
    with single_threaded_blas():
        loss = _k.network_loss_and_gradient(
            X, Y, weights, params, sizes, batch_norm, int(model.activation), net_hyper,
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
    X, Y, weights = _check(data, params, model.loss_code)
    sizes, batch_norm, net_hyper, offsets = _check_network(X, Y, params, running, model)
    hyper, lr_epochs, orders = _check_call(X.shape[0], state, update, block)
    _check_grad_norms(block, sizes.shape[0] - 1)
    buffers, scratch, G, S, chunk_loss = _network_scratch(
        sizes, batch_norm, min(int(update.batch_size), X.shape[0]), params.dtype,
        orders.shape[0] > 0,
    )  # fmt: skip
    with single_threaded_blas():
        n_done, status = _k.network_train_epochs(
            X, Y, weights, params, running, orders, lr_epochs, int(block.n_epochs), sizes,
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
