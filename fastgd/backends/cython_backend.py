"""Cython backend: a thin dtype dispatcher over the compiled ``_cython_kernels`` extension.

Same contract as :mod:`fastgd.backends.numpy_ref`, same algorithm as
:mod:`fastgd.backends.numba_kernels` (chunked mini-batches, chunk sums added in order, so
results are bit-identical for any ``n_threads``). The kernels are compiled for float32 and
float64; ``X``, ``Y`` and ``params`` must share one of these dtypes. Importing this module
raises ImportError when the extension is not built, which the backend registry reports.
"""

import numpy as np

from .._config import MAX_CHUNKS, MIN_ROWS_PER_CHUNK, PARALLEL_MIN_WORK, ROWS_PER_BLOCK
from ..specs import losses, stopping
from ..specs import optimizers as opt
from . import _cython_kernels as _k
from ._cython_kernels import max_threads, openmp_enabled

NAME = "cython"

_CACHE_LINE_BYTES = 64

__all__ = ["NAME", "loss_and_gradient", "max_threads", "openmp_enabled", "train_epochs"]

_LOSS_CODES = (losses.MSE, losses.BINARY_CROSS_ENTROPY, losses.CATEGORICAL_CROSS_ENTROPY)
_STATUS_CODES = (stopping.MAX_EPOCHS, stopping.CONVERGED, stopping.DIVERGED)
_OPTIMIZER_CODES = (opt.SGD, opt.ADAGRAD, opt.RMSPROP, opt.ADAM, opt.ADAMW)
_HYPER_POSITIONS = (
    opt.LR, opt.MOMENTUM, opt.DAMPENING, opt.NESTEROV, opt.BETA1, opt.BETA2, opt.EPS,
    opt.WEIGHT_DECAY, opt.AMSGRAD, opt.CENTERED, opt.ALPHA, opt.LR_DECAY, opt.CLIP_VALUE,
    opt.CLIP_NORM, opt.POWER_T, opt.L1, opt.L2, opt.N_HYPER,
)  # fmt: skip
if (
    _k.LOSS_CODES != _LOSS_CODES
    or _k.STATUS_CODES != _STATUS_CODES
    or getattr(_k, "OPTIMIZER_CODES", None) != _OPTIMIZER_CODES
    or getattr(_k, "HYPER_POSITIONS", None) != _HYPER_POSITIONS
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
