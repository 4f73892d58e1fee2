"""Checks of the Cython kernels' arguments (the kernels trust every shape and index), and
the check that the compiled extension matches the codes of :mod:`fastgd.specs`."""

import numpy as np

from ...specs import losses, stopping
from ...specs import network as net
from ...specs import optimizers as opt
from . import _kernels as _k

_LOSS_CODES = (losses.MSE, losses.BINARY_CROSS_ENTROPY, losses.CATEGORICAL_CROSS_ENTROPY)
_STATUS_CODES = (stopping.MAX_EPOCHS, stopping.CONVERGED, stopping.DIVERGED, stopping.INTERRUPTED)
_OPTIMIZER_CODES = (opt.SGD, opt.ADAGRAD, opt.RMSPROP, opt.ADAM, opt.ADAMW)
_HYPER_POSITIONS = (
    opt.LR, opt.MOMENTUM, opt.DAMPENING, opt.NESTEROV, opt.BETA1, opt.BETA2, opt.EPS,
    opt.WEIGHT_DECAY, opt.AMSGRAD, opt.CENTERED, opt.ALPHA, opt.LR_DECAY, opt.CLIP_VALUE,
    opt.CLIP_NORM, opt.POWER_T, opt.L1, opt.L2, opt.N_HYPER,
)  # fmt: skip
_ACTIVATION_CODES = (net.IDENTITY, net.RELU, net.LEAKY_RELU, net.SIGMOID, net.TANH)
_NO_INDEX = np.empty(0, dtype=np.int32)  # the index arrays of dense rows
_NET_HYPER_POSITIONS = (net.LEAKY_SLOPE, net.BN_MOMENTUM, net.BN_EPS, net.N_NET_HYPER)
if (
    _k.LOSS_CODES != _LOSS_CODES
    or _k.STATUS_CODES != _STATUS_CODES
    or getattr(_k, "INTERRUPT_POSITION", None) != stopping.INTERRUPT
    or getattr(_k, "RUNAWAY", None) != stopping.RUNAWAY_FACTOR
    or getattr(_k, "OPTIMIZER_CODES", None) != _OPTIMIZER_CODES
    or getattr(_k, "HYPER_POSITIONS", None) != _HYPER_POSITIONS
    or getattr(_k, "ACTIVATION_CODES", None) != _ACTIVATION_CODES
    or getattr(_k, "NET_HYPER_POSITIONS", None) != _NET_HYPER_POSITIONS
):
    raise ImportError(
        "fastgd.backends._cython_kernels is out of date with fastgd.specs; rebuild it "
        "(pip install -e . or python setup.py build_ext --inplace)"
    )


def _check(data, params, loss_code):
    """``(X, Y, weights)`` contiguous, after the checks the kernels cannot make themselves."""
    X, Y, weights = data
    if not (X.dtype == Y.dtype == params.dtype) or params.dtype not in (np.float32, np.float64):
        raise TypeError(
            "X, Y and params must share one dtype, float32 or float64; got "
            f"{X.dtype}, {Y.dtype}, {params.dtype}"
        )
    if loss_code not in _LOSS_CODES:
        raise ValueError(f"unknown loss code {loss_code}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    # read-only and contiguous inputs pass through without a copy
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    return X, Y, _check_weights(weights, X)


def _check_sparse(data, params, loss_code):
    """``(values (nnz, 1), Y, weights, indices, indptr, n_features)`` of CSR rows, after the
    checks the kernels cannot make (structure and values were checked by validation)."""
    values, indices, indptr = data.values, data.indices, data.indptr
    Y = np.ascontiguousarray(data.Y)
    if not (values.dtype == Y.dtype == params.dtype) or params.dtype not in (np.float32, np.float64):  # fmt: skip
        raise TypeError(
            "values, Y and params must share one dtype, float32 or float64; got "
            f"{values.dtype}, {Y.dtype}, {params.dtype}"
        )
    if loss_code not in _LOSS_CODES:
        raise ValueError(f"unknown loss code {loss_code}")
    n = indptr.shape[0] - 1
    if n < 1 or Y.shape[0] != n:
        raise ValueError(f"CSR rows: indptr has {n} rows and Y {Y.shape[0]}")
    if indptr.dtype not in (np.int32, np.int64) or indices.dtype != indptr.dtype:
        raise TypeError("indices and indptr must both be int32 or both int64")
    nnz = int(indptr[-1])
    if values.shape[0] < nnz or indices.shape[0] < nnz:
        raise ValueError(f"CSR rows: indptr ends at {nnz}, past the stored entries")
    values = np.ascontiguousarray(values).reshape(-1, 1)
    indices, indptr = np.ascontiguousarray(indices), np.ascontiguousarray(indptr)
    weights = _check_weights(data.weights, Y)
    return values, Y, weights, indices, indptr, int(data.n_features)


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


def _check_call(n, state, update, block):
    """Checks of one training call on ``n`` rows; returns ``hyper``, ``lr_epochs`` and
    ``orders`` as the kernels take them (the state arrays are updated in place, so they
    are never copied)."""
    n_epochs = block.n_epochs
    hyper = _check_optimizer(state.params, update.opt_code, update.hyper, state.opt_state, state.step_count)  # fmt: skip
    lr_epochs = np.ascontiguousarray(block.lr_epochs, dtype=np.float64)
    if lr_epochs.ndim != 1 or lr_epochs.shape[0] < n_epochs:
        raise ValueError(
            f"lr_epochs must be 1-D with at least n_epochs = {n_epochs} entries; "
            f"got shape {lr_epochs.shape}"
        )
    orders = np.ascontiguousarray(block.orders, dtype=np.int64)
    if update.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {update.batch_size}")
    if orders.ndim != 2 or (orders.shape[0] > 0 and not 0 < orders.shape[1] <= n):
        raise ValueError(
            f"orders must have shape (n_blocks, m) with 0 < m <= {n}, or (0, 0); got {orders.shape}"
        )
    # fewer rows than n (early stopping's training rows): the kernels trust the indices
    if 0 < orders.shape[1] < n and (orders.min() < 0 or orders.max() >= n):
        raise ValueError(f"orders must hold row indices in [0, {n})")
    if state.stop_state.shape[0] < 4 or block.history.shape[0] < n_epochs:
        raise ValueError("stop_state needs 4 entries and history at least n_epochs")
    return hyper, lr_epochs, orders
