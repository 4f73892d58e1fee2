"""Cython backend: a thin dtype dispatcher over the compiled ``_cython_kernels`` extension.

Same contract as :mod:`fastgd.backends.numpy_ref` (networks: as
:mod:`fastgd.backends.numpy_network`), same algorithm as the Numba backend (chunked
mini-batches, chunk sums added in order, so results are bit-identical for any
``n_threads``). The kernels are compiled for float32 and float64; ``X``, ``Y`` and
``params`` must share one of these dtypes. Importing this module raises ImportError when
the extension is not built, which the backend registry reports.
"""

import numpy as np

from .._config import MAX_CHUNKS, MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, ROWS_PER_BLOCK
from ..specs import losses, stopping
from ..specs import network as net
from ..specs import optimizers as opt
from . import _cython_kernels as _k
from ._blas import single_threaded_blas
from ._cython_kernels import max_threads, openmp_enabled

# prediction is BLAS-bound: it runs in NumPy on every backend
from .numpy_network import network_predict

NAME = "cython"

_CACHE_LINE_BYTES = 64

__all__ = [
    "NAME",
    "loss_and_gradient",
    "max_threads",
    "network_loss_and_gradient",
    "network_predict",
    "network_train_epochs",
    "openmp_enabled",
    "train_epochs",
]

_LOSS_CODES = (losses.MSE, losses.BINARY_CROSS_ENTROPY, losses.CATEGORICAL_CROSS_ENTROPY)
_STATUS_CODES = (stopping.MAX_EPOCHS, stopping.CONVERGED, stopping.DIVERGED)
_OPTIMIZER_CODES = (opt.SGD, opt.ADAGRAD, opt.RMSPROP, opt.ADAM, opt.ADAMW)
_HYPER_POSITIONS = (
    opt.LR, opt.MOMENTUM, opt.DAMPENING, opt.NESTEROV, opt.BETA1, opt.BETA2, opt.EPS,
    opt.WEIGHT_DECAY, opt.AMSGRAD, opt.CENTERED, opt.ALPHA, opt.LR_DECAY, opt.CLIP_VALUE,
    opt.CLIP_NORM, opt.POWER_T, opt.L1, opt.L2, opt.N_HYPER,
)  # fmt: skip
_ACTIVATION_CODES = (net.IDENTITY, net.RELU, net.LEAKY_RELU, net.SIGMOID, net.TANH)
_NET_HYPER_POSITIONS = (net.LEAKY_SLOPE, net.BN_MOMENTUM, net.BN_EPS, net.N_NET_HYPER)
if (
    _k.LOSS_CODES != _LOSS_CODES
    or _k.STATUS_CODES != _STATUS_CODES
    or getattr(_k, "OPTIMIZER_CODES", None) != _OPTIMIZER_CODES
    or getattr(_k, "HYPER_POSITIONS", None) != _HYPER_POSITIONS
    or getattr(_k, "ACTIVATION_CODES", None) != _ACTIVATION_CODES
    or getattr(_k, "NET_HYPER_POSITIONS", None) != _NET_HYPER_POSITIONS
):
    raise ImportError(
        "fastgd.backends._cython_kernels is out of date with fastgd.specs; rebuild it "
        "(pip install -e . or python setup.py build_ext --inplace)"
    )


def _check(X, Y, params, loss_code):
    """Cheap checks of what the kernels cannot check without bounds checking."""
    if not (X.dtype == Y.dtype == params.dtype) or params.dtype not in (np.float32, np.float64):
        raise TypeError(
            "X, Y and params must share one dtype, float32 or float64; got "
            f"{X.dtype}, {Y.dtype}, {params.dtype}"
        )
    if loss_code not in _LOSS_CODES:
        raise ValueError(f"unknown loss code {loss_code}")
    # read-only and contiguous inputs pass through without a copy
    return np.ascontiguousarray(X), np.ascontiguousarray(Y)


def _check_weights(weights, X):
    """Sample weights as a contiguous array: shape (n,), or (0,) for unweighted."""
    if not isinstance(weights, np.ndarray):
        raise TypeError(f"weights must be a NumPy array; got {type(weights).__name__}")
    if weights.dtype != X.dtype:
        raise TypeError(f"weights must have the dtype of X, {X.dtype}; got {weights.dtype}")
    if weights.ndim != 1 or weights.shape[0] not in (0, X.shape[0]):
        raise ValueError(
            f"weights must have shape ({X.shape[0]},), or (0,) for unweighted; got {weights.shape}"
        )
    return np.ascontiguousarray(weights)


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


def loss_and_gradient(X, Y, weights, params, loss_code, n_outputs, fit_intercept):
    """Mean (weighted) loss and gradient over all rows.

    See :func:`fastgd.backends.numpy_ref.loss_and_gradient`. Uses OpenMP's default number
    of threads (the result does not depend on it).
    """
    X, Y = _check(X, Y, params, loss_code)
    weights = _check_weights(weights, X)
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    grad = np.zeros_like(params)
    buf, zbuf = _scratch(params, n_outputs)
    loss = _k.loss_and_gradient(
        X, Y, weights, params, int(loss_code), int(n_outputs), bool(fit_intercept), grad, buf,
        zbuf, MAX_CHUNKS, MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, ROWS_PER_BLOCK, max_threads(),
    )  # fmt: skip
    return float(loss), grad


def _check_optimizer(params, opt_code, hyper, opt_state, step_count):
    """Checks of the optimizer arguments; returns ``hyper`` as a contiguous float64 array.

    ``opt_state`` and ``step_count`` are updated in place, so they are never copied: they
    must already have the right dtype and layout.
    """
    if opt_code not in _OPTIMIZER_CODES:
        raise ValueError(f"unknown optimizer code {opt_code}")
    hyper = np.ascontiguousarray(hyper, dtype=np.float64)
    if hyper.shape != (opt.N_HYPER,):
        raise ValueError(f"hyper must have shape ({opt.N_HYPER},); got {hyper.shape}")
    n_rows = len(opt.STATE_ROWS[opt_code])
    if (
        not isinstance(opt_state, np.ndarray)
        or opt_state.dtype != params.dtype
        or opt_state.ndim != 2
        or opt_state.shape[0] < n_rows
        or opt_state.shape[1] != params.shape[0]
        or not opt_state.flags.c_contiguous
        or not opt_state.flags.writeable
    ):
        raise ValueError(
            f"opt_state must be a writeable C-contiguous {params.dtype} array of shape "
            f"({n_rows}, {params.shape[0]})"
        )
    if (
        not isinstance(step_count, np.ndarray)
        or step_count.dtype != np.int64
        or step_count.shape != (1,)
        or not step_count.flags.writeable
    ):
        raise ValueError("step_count must be a writeable int64 array of shape (1,)")
    return hyper


def train_epochs(
    X, Y, weights, params, orders, lr_epochs, n_epochs, loss_code, n_outputs, fit_intercept,
    batch_size, opt_code, hyper, opt_state, step_count, tol, n_iter_no_change, stop_state,
    history, n_threads,
):  # fmt: skip
    """Compiled training loop; see :func:`fastgd.backends.numpy_ref.train_epochs`.

    The loop runs with the GIL released; ``n_threads`` is the OpenMP team size of the
    parallel chunk loop (ignored when the extension was built without OpenMP).
    ``opt_state`` (same dtype as ``params``, C-contiguous) and ``step_count`` (int64) are
    updated in place. ``lr_epochs`` (float64, at least ``n_epochs`` entries) gives the
    learning rate of each epoch of this call; ``hyper[LR]`` is not read.
    """
    X, Y = _check(X, Y, params, loss_code)
    weights = _check_weights(weights, X)
    hyper = _check_optimizer(params, opt_code, hyper, opt_state, step_count)
    lr_epochs = np.ascontiguousarray(lr_epochs, dtype=np.float64)
    if lr_epochs.ndim != 1 or lr_epochs.shape[0] < n_epochs:
        raise ValueError(
            f"lr_epochs must be 1-D with at least n_epochs = {n_epochs} entries; "
            f"got shape {lr_epochs.shape}"
        )
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    n = X.shape[0]
    if n == 0 or batch_size < 1:
        raise ValueError(f"need at least one row and batch_size >= 1; got {n} rows, {batch_size}")
    if orders.shape[0] > 0 and orders.shape[1] != n:
        raise ValueError(f"orders must have shape (n_blocks, {n}); got {orders.shape}")
    if stop_state.shape[0] < 2 or history.shape[0] < n_epochs:
        raise ValueError("stop_state needs 2 entries and history at least n_epochs")
    buf, zbuf = _scratch(params, n_outputs)
    start_params = np.empty_like(params)
    start_state = np.empty_like(opt_state)
    n_done, status = _k.train_epochs(
        X, Y, weights, params, orders, lr_epochs, int(n_epochs), int(loss_code), int(n_outputs),
        bool(fit_intercept), int(batch_size), int(opt_code), hyper, opt_state, step_count,
        float(tol), float(n_iter_no_change), stop_state, history, buf, zbuf, start_params,
        start_state, MAX_CHUNKS, MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, ROWS_PER_BLOCK,
        max(1, int(n_threads)),
    )  # fmt: skip
    return n_done, _STATUS_CODES[status]


# ---------------------------------------------------------------------------------------
# Multi-layer perceptrons


def _check_network(X, Y, params, running, sizes, batch_norm, activation, net_hyper, loss_code):  # fmt: skip
    """Cheap checks of the network arguments (the kernels trust every offset and index).

    Returns ``sizes``, ``batch_norm`` and ``net_hyper`` as contiguous arrays and the
    (5, L) int64 table of parameter offsets (weight, bias, gamma, beta, running).
    ``running`` is None where the kernel does not take it.
    """
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    batch_norm = np.ascontiguousarray(batch_norm, dtype=np.int64)
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
    net_hyper = np.ascontiguousarray(net_hyper, dtype=np.float64)
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


def network_loss_and_gradient(X, Y, weights, params, sizes, batch_norm, activation, net_hyper, loss_code):  # fmt: skip
    """Mean loss of a network over the rows of ``X`` (one batch, training mode) and its
    gradient; see :func:`fastgd.backends.numpy_network.network_loss_and_gradient`.

    Uses OpenMP's default number of threads (the result does not depend on it).
    """
    X, Y = _check(X, Y, params, loss_code)
    weights = _check_weights(weights, X)
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    sizes, batch_norm, net_hyper, offsets = _check_network(
        X, Y, params, None, sizes, batch_norm, activation, net_hyper, loss_code
    )
    buffers, scratch, G, S, chunk_loss = _network_scratch(
        sizes, batch_norm, X.shape[0], params.dtype, False
    )
    grad = np.empty_like(params)
    with single_threaded_blas():
        loss = _k.network_loss_and_gradient(
            X, Y, weights, params, sizes, batch_norm, int(activation), net_hyper,
            int(loss_code), offsets, buffers, scratch, G, S, chunk_loss, grad, MAX_CHUNKS,
            MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, max_threads(),
        )  # fmt: skip
    return float(loss), grad


def network_train_epochs(
    X, Y, weights, params, running, orders, lr_epochs, n_epochs, sizes, batch_norm, activation,
    net_hyper, loss_code, batch_size, opt_code, hyper, opt_state, step_count, tol,
    n_iter_no_change, stop_state, history, grad_norms, n_threads,
):  # fmt: skip
    """Compiled training loop of a network; see
    :func:`fastgd.backends.numpy_network.network_train_epochs`.

    Runs with the GIL released and BLAS limited to one thread; ``n_threads`` is the OpenMP
    team size of the parallel chunk loops (the results do not depend on it). ``params``,
    ``running``, ``opt_state``, ``step_count``, ``stop_state``, ``history`` and
    ``grad_norms`` (float64, C-contiguous, (>= n_epochs, L)) are updated in place.
    """
    X, Y = _check(X, Y, params, loss_code)
    weights = _check_weights(weights, X)
    sizes, batch_norm, net_hyper, offsets = _check_network(
        X, Y, params, running, sizes, batch_norm, activation, net_hyper, loss_code
    )
    hyper = _check_optimizer(params, opt_code, hyper, opt_state, step_count)
    lr_epochs = np.ascontiguousarray(lr_epochs, dtype=np.float64)
    if lr_epochs.ndim != 1 or lr_epochs.shape[0] < n_epochs:
        raise ValueError(
            f"lr_epochs must be 1-D with at least n_epochs = {n_epochs} entries; "
            f"got shape {lr_epochs.shape}"
        )
    orders = np.ascontiguousarray(orders, dtype=np.int64)
    n = X.shape[0]
    if n == 0 or batch_size < 1:
        raise ValueError(f"need at least one row and batch_size >= 1; got {n} rows, {batch_size}")
    if orders.ndim != 2 or (orders.shape[0] > 0 and orders.shape[1] != n):
        raise ValueError(f"orders must have shape (n_blocks, {n}) or (0, 0); got {orders.shape}")
    if stop_state.shape[0] < 2 or history.shape[0] < n_epochs:
        raise ValueError("stop_state needs 2 entries and history at least n_epochs")
    n_layers = sizes.shape[0] - 1
    if (
        not isinstance(grad_norms, np.ndarray)
        or grad_norms.dtype != np.float64
        or grad_norms.ndim != 2
        or grad_norms.shape[0] < n_epochs
        or grad_norms.shape[1] != n_layers
        or not grad_norms.flags.c_contiguous
        or not grad_norms.flags.writeable
    ):
        raise ValueError(
            f"grad_norms must be a writeable C-contiguous float64 array of shape "
            f"(>= {n_epochs}, {n_layers})"
        )
    buffers, scratch, G, S, chunk_loss = _network_scratch(
        sizes, batch_norm, min(int(batch_size), n), params.dtype, orders.shape[0] > 0
    )
    with single_threaded_blas():
        n_done, status = _k.network_train_epochs(
            X, Y, weights, params, running, orders, lr_epochs, int(n_epochs), sizes, batch_norm,
            int(activation), net_hyper, int(loss_code), int(batch_size), int(opt_code), hyper,
            opt_state, step_count, float(tol), float(n_iter_no_change), stop_state, history,
            grad_norms, offsets, buffers, scratch, G, S, chunk_loss, np.empty_like(params),
            np.empty_like(running), np.empty_like(opt_state), MAX_CHUNKS, MIN_ROWS_PER_CHUNK,
            PARALLEL_MIN_WORK, max(1, int(n_threads)),
        )  # fmt: skip
    return n_done, _STATUS_CODES[status]
