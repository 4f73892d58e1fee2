"""Numba kernels of the linear family: the whole training loop in one compiled call.

Same contract and arithmetic as :mod:`fastgd.backends.numpy.linear`. The gradient of a
mini-batch is one fused pass over its rows (decision values, loss derivative,
accumulation) instead of NumPy's two passes over X. A batch is split into chunks that
depend on the batch size only (see :mod:`fastgd._config`); each chunk sums into its own
row of a buffer, and the rows are added in chunk order, so results are bit-identical for
any thread count.

Compile time: a first fit compiles only the kernel its *mode* needs, chosen in Python
before the call (:func:`_train_mode`): ``SINGLE`` (every batch is one chunk),
``SERIAL`` (chunks in a loop), ``PARALLEL`` (chunks of large batches in a ``prange``)
or ``PER_SAMPLE`` (plain SGD one row at a time). The mode is a closure constant of a
kernel factory, so Numba prunes the other modes' branches before inlining them; the
parallel region is compiled only by ``PARALLEL`` kernels. Every mode walks the same
chunks in the same order, so the choice never changes a result.
"""

import math

import numba
import numpy as np
from numba import njit, prange

from ..._config import (
    MAX_CHUNKS,
    NUMBA_OPTIONS,
    PARALLEL_MIN_WORK,
    ROW_PADDING,
    ROWS_PER_BLOCK,
)
from ...specs import optimizers as opt
from ...specs import stopping
from ..contract import EpochBlock, LinearModel, UpdateConfig
from .losses import MSE, _loss_block, _single_output_loss
from .threads import numba_threads
from .update import (
    _all_finite,
    _apply_update,
    _n_chunks,
    _penalty_value,
    _sum_chunks,
    _tolerance_rule,
)

# kernel modes (closure constants of the kernel factories; see the module docstring)
SINGLE = 0
SERIAL = 1
PARALLEL = 2
PER_SAMPLE = 3


@njit(inline="always", **NUMBA_OPTIONS)
def _forward_block(X, params, order, shuffled, lo, hi, k, Z, chunk):
    """Decision values ``z = x @ W + b`` of rows ``lo:hi`` into ``Z[chunk, :hi - lo]``."""
    d = X.shape[1]
    bias = d * k
    for r in range(lo, hi):
        i = order[r] if shuffled else r
        for c in range(k):
            Z[chunk, r - lo, c] = params[bias + c]
        for j in range(d):
            xj = X[i, j]
            for c in range(k):
                Z[chunk, r - lo, c] += xj * params[j * k + c]


@njit(inline="always", **NUMBA_OPTIONS)
def _single_output_row(X, Y, weights, params, i, loss_code, weighted):
    """(Weighted) loss and dloss/dz of row ``i`` of a one-output model."""
    d = X.shape[1]
    v = params[d]
    for j in range(d):
        v += X[i, j] * params[j]
    row_loss, dz = _single_output_loss(v, Y[i, 0], loss_code)
    if weighted:
        row_loss *= weights[i]
        dz *= weights[i]
    return row_loss, dz


@njit(inline="always", **NUMBA_OPTIONS)
def _one_feature_rows(X, Y, weights, params, order, lo, hi, loss_code, shuffled, weighted):
    """Loss and gradient sums ``(loss, d/dw, d/db)`` of rows ``lo:hi`` with one feature."""
    w, b = params[0], params[1]
    loss, grad_w, grad_b = 0.0, 0.0, 0.0
    for r in range(lo, hi):
        # an unsigned index: no test for a negative (wrap-around) index, which kept the
        # loop from vectorizing
        i = np.uint64(order[r] if shuffled else r)
        x = X[i, 0]
        row_loss, dz = _single_output_loss(x * w + b, Y[i, 0], loss_code)
        if weighted:
            row_loss *= weights[i]
            dz *= weights[i]
        loss += row_loss
        grad_w += dz * x
        grad_b += dz
    return loss, grad_w, grad_b


@njit(inline="always", **NUMBA_OPTIONS)
def _single_output_rows(X, Y, weights, params, order, shuffled, lo, hi, loss_code, G, chunk):
    """Gradient sums of rows ``lo:hi`` of a one-output model (``k == 1``) into ``G[chunk]``.

    Returns their loss. One pass: per row the decision value, its loss and dloss/dz, and
    the gradient terms added while the row is still in L1 cache. Unlike the blocked path of
    :func:`_chunk_gradient` no decision value goes through the Z buffer, and with one
    feature the gradient is summed in registers: the general loop carries it from row to
    row through memory, and its two one-trip inner loops cost more than the arithmetic.
    """
    d = X.shape[1]
    weighted = weights.shape[0] > 0
    loss = 0.0
    if d == 1:
        # Called with constant arguments, the loop of a full batch of least squares has no
        # per-row branch left and is vectorized: 0.5 instead of 5 ns per row (measured).
        # Cross-entropy rows cost ~50 ns in exp and log1p; they take the general call.
        if loss_code == MSE and not shuffled and not weighted:
            sums = _one_feature_rows(X, Y, weights, params, order, lo, hi, MSE, False, False)
        else:
            sums = _one_feature_rows(
                X, Y, weights, params, order, lo, hi, loss_code, shuffled, weighted
            )
        G[chunk, 0], G[chunk, 1] = sums[1], sums[2]
        return sums[0]
    for j in range(d + 1):
        G[chunk, j] = 0.0
    for r in range(lo, hi):
        i = order[r] if shuffled else r
        row_loss, dz = _single_output_row(X, Y, weights, params, i, loss_code, weighted)
        loss += row_loss
        for j in range(d):
            G[chunk, j] += dz * X[i, j]
        G[chunk, d] += dz
    return loss


@njit(inline="always", **NUMBA_OPTIONS)
def _backward_block(X, order, shuffled, lo, hi, k, Z, chunk, G):
    """Add ``x * dloss/dz`` (weights) and ``dloss/dz`` (intercepts) of rows ``lo:hi`` to G."""
    d = X.shape[1]
    bias = d * k
    for r in range(lo, hi):
        i = order[r] if shuffled else r
        for j in range(d):
            xj = X[i, j]
            for c in range(k):
                G[chunk, j * k + c] += xj * Z[chunk, r - lo, c]
        for c in range(k):
            G[chunk, bias + c] += Z[chunk, r - lo, c]


def _chunk_gradient(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z):  # fmt: skip
    """Sum the per-sample gradients of one chunk of the batch ``start:stop`` into ``G[chunk]``.

    One output: row by row (:func:`_single_output_rows`). Several: the chunk is walked in
    blocks of ``Z.shape[1]`` rows: decision values, loss derivatives, then gradient
    accumulation; a block's rows of X are still in cache for the last step, so X is
    streamed from memory once. ``G[chunk, n_params]`` receives the summed loss. Arrays are
    indexed, never sliced, in per-row code: a slice is a new array whose reference count
    Numba updates atomically (~50 ns per row, measured).
    """
    X, Y, weights = data.X, data.Y, data.weights
    bias = X.shape[1] * k
    size = stop - start
    lo = start + (chunk * size) // n_chunks
    hi = start + ((chunk + 1) * size) // n_chunks
    if k == 1:
        G[chunk, bias + k] = _single_output_rows(
            X, Y, weights, params, order, shuffled, lo, hi, loss_code, G, chunk
        )
        return
    for j in range(bias + k):
        G[chunk, j] = 0.0
    loss = 0.0
    block = Z.shape[1]
    for block_lo in range(lo, hi, block):
        block_hi = min(block_lo + block, hi)
        _forward_block(X, params, order, shuffled, block_lo, block_hi, k, Z, chunk)
        loss += _loss_block(Y, weights, order, shuffled, block_lo, block_hi, loss_code, k, Z, chunk)
        _backward_block(X, order, shuffled, block_lo, block_hi, k, Z, chunk, G)
    G[chunk, bias + k] = loss


# Inlined into the serial kernels; compiled on its own (once per dtype) as the body of
# the parallel loop, which then stays small: the parallel region compiles in less time.
_chunk_inline = njit(inline="always", **NUMBA_OPTIONS)(_chunk_gradient)
_chunk_call = njit(**NUMBA_OPTIONS)(_chunk_gradient)


@njit(parallel=True, **NUMBA_OPTIONS)
def _batch_parallel(data, params, order, shuffled, start, stop, n_chunks, loss_code, k, G, Z):
    for chunk in prange(n_chunks):
        _chunk_call(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z)


@njit(inline="always", **NUMBA_OPTIONS)
def _batch_serial(data, params, order, shuffled, start, stop, loss_code, k, G, Z):
    """Fill ``G[:n_chunks]`` with chunk partial sums, chunk after chunk; returns n_chunks."""
    n_chunks = _n_chunks(stop - start)
    if n_chunks == 1:
        # a direct call: through the chunk loop, a small batch took ~150 ns longer (measured)
        _chunk_inline(data, params, order, shuffled, start, stop, 1, 0, loss_code, k, G, Z)
    else:
        for chunk in range(n_chunks):
            _chunk_inline(
                data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z
            )
    return n_chunks


@njit(inline="always", **NUMBA_OPTIONS)
def _batch_threaded(data, params, order, shuffled, start, stop, loss_code, k, G, Z):
    """As :func:`_batch_serial`, with the chunks of a large batch on several threads."""
    n_chunks = _n_chunks(stop - start)
    if n_chunks > 1 and (stop - start) * data.X.shape[1] * k >= PARALLEL_MIN_WORK:
        _batch_parallel(data, params, order, shuffled, start, stop, n_chunks, loss_code, k, G, Z)
        return n_chunks
    return _batch_serial(data, params, order, shuffled, start, stop, loss_code, k, G, Z)


@njit(inline="always", **NUMBA_OPTIONS)
def _per_sample_epoch(data, params, order, shuffled, loss_code, k, n_trained, lr, Z):
    """One epoch of per-sample SGD; returns the summed loss.

    The same arithmetic as a mini-batch of one row (the gradient is ``dz * x``, divided by
    1), without the chunk buffer: each step updates the parameters directly.
    """
    X, Y, weights = data.X, data.Y, data.weights
    d = X.shape[1]
    bias = d * k
    weighted = weights.shape[0] > 0
    loss_sum = 0.0
    for r in range(X.shape[0]):
        i = order[r] if shuffled else r
        if k == 1:
            row_loss, g = _single_output_row(X, Y, weights, params, i, loss_code, weighted)
            loss_sum += row_loss
            for j in range(d):
                params[j] -= lr * (g * X[i, j])
            if n_trained > d:
                params[d] -= lr * g
            continue
        _forward_block(X, params, order, shuffled, r, r + 1, k, Z, 0)
        loss_sum += _loss_block(Y, weights, order, shuffled, r, r + 1, loss_code, k, Z, 0)
        for j in range(d):
            xj = X[i, j]
            for c in range(k):
                params[j * k + c] -= lr * (xj * Z[0, 0, c])
        for c in range(n_trained - bias):
            params[bias + c] -= lr * Z[0, 0, c]
    return loss_sum


@njit(inline="always", **NUMBA_OPTIONS)
def _copy_state(params, opt_state, params_to, opt_state_to):
    """Copy params and optimizer state, element by element.

    Element loops, not slice assignment: a slice assignment builds array views (~40 ns
    per epoch, measured) and pulls in Numba's shape-mismatch error path, seconds of
    compile time.
    """
    for j in range(params.shape[0]):
        params_to[j] = params[j]
    for a in range(opt_state.shape[0]):
        for j in range(opt_state.shape[1]):
            opt_state_to[a, j] = opt_state[a, j]


@njit(inline="always", **NUMBA_OPTIONS)
def _end_epoch(state, update, block, epoch, loss_sum, n_weights, saved):
    """Close epoch ``epoch``: history, divergence (restoring ``saved``), tolerance rule.

    ``saved = (params, opt_state, step_count)`` at the start of the epoch. Returns a
    :mod:`fastgd.specs.stopping` code, or -1 to go on.
    """
    params = state.params
    l1, l2 = update.hyper[opt.L1], update.hyper[opt.L2]
    epoch_loss = loss_sum
    if l1 > 0.0 or l2 > 0.0:
        epoch_loss += _penalty_value(params, n_weights, l1, l2)
    block.history[epoch] = epoch_loss
    if not (math.isfinite(epoch_loss) and _all_finite(params)):
        _copy_state(saved[0], saved[1], params, state.opt_state)
        state.step_count[0] = saved[2]
        return stopping.DIVERGED
    if _tolerance_rule(epoch_loss, update.tol, update.n_iter_no_change, state.stop_state):
        return stopping.CONVERGED
    return -1


def _make_train_kernel(mode):
    """The compiled epoch loop of one mode (``SINGLE``, ``SERIAL``, ``PARALLEL``, ``PER_SAMPLE``)."""

    @njit(**NUMBA_OPTIONS)
    def train(model, data, state, update, block):
        n, d = data.X.shape
        params, opt_state, step_count = state.params, state.opt_state, state.step_count
        p, k, loss_code = params.shape[0], model.n_outputs, model.loss_code
        n_trained = p if model.fit_intercept else d * k
        shuffled = block.orders.shape[0] > 0
        G = np.empty((MAX_CHUNKS, p + 1 + ROW_PADDING), dtype=params.dtype)
        Z = np.empty((MAX_CHUNKS, ROWS_PER_BLOCK, k), dtype=params.dtype)
        saved = (np.empty_like(params), np.empty_like(opt_state))
        natural = np.empty(0, dtype=np.int64)
        # mean, L2 term and clipping need a pass over G before the update
        finishing = update.hyper[opt.CLIP_VALUE] > 0.0 or update.hyper[opt.CLIP_NORM] > 0.0
        finishing = finishing or update.hyper[opt.L2] > 0.0
        for epoch in range(block.n_epochs):
            _copy_state(params, opt_state, saved[0], saved[1])
            start_step = step_count[0]
            order = block.orders[epoch % block.orders.shape[0]] if shuffled else natural
            lr = block.lr_epochs[epoch]
            loss_sum = 0.0
            if mode == PER_SAMPLE:
                loss_sum = _per_sample_epoch(data, params, order, shuffled, loss_code, k, n_trained, lr, Z)  # fmt: skip
                step_count[0] += n
            else:
                for start in range(0, n, update.batch_size):
                    stop = min(start + update.batch_size, n)
                    if mode == SINGLE:
                        _chunk_inline(data, params, order, shuffled, start, stop, 1, 0, loss_code, k, G, Z)  # fmt: skip
                    elif mode == SERIAL:
                        n_chunks = _batch_serial(data, params, order, shuffled, start, stop, loss_code, k, G, Z)  # fmt: skip
                        _sum_chunks(G, n_chunks, p + 1)
                    else:
                        n_chunks = _batch_threaded(data, params, order, shuffled, start, stop, loss_code, k, G, Z)  # fmt: skip
                        _sum_chunks(G, n_chunks, p + 1)
                    loss_sum += G[0, p]
                    _apply_update(
                        params, G, 1.0 / (stop - start), d * k, n_trained, update.opt_code,
                        update.hyper, opt_state, step_count, lr, finishing,
                    )  # fmt: skip
            status = _end_epoch(state, update, block, epoch, loss_sum / n, d * k, (saved[0], saved[1], start_step))  # fmt: skip
            if status >= 0:
                return epoch + 1, status
        return block.n_epochs, stopping.MAX_EPOCHS

    return train


def _make_gradient_kernel(mode):
    """Mean loss and gradient over all rows, in one mode (``SINGLE``, ``SERIAL``, ``PARALLEL``)."""

    @njit(**NUMBA_OPTIONS)
    def gradient(model, data, params):
        n, d = data.X.shape
        p, k = params.shape[0], model.n_outputs
        G = np.empty((MAX_CHUNKS, p + 1 + ROW_PADDING), dtype=params.dtype)
        Z = np.empty((MAX_CHUNKS, ROWS_PER_BLOCK, k), dtype=params.dtype)
        order = np.empty(0, dtype=np.int64)
        shuffled = order.shape[0] > 0  # a run-time False: no literal-typed argument
        if mode == SINGLE:
            n_chunks = 1
            _chunk_inline(data, params, order, shuffled, 0, n, 1, 0, model.loss_code, k, G, Z)
        elif mode == SERIAL:
            n_chunks = _batch_serial(data, params, order, shuffled, 0, n, model.loss_code, k, G, Z)  # fmt: skip
        else:
            n_chunks = _batch_threaded(data, params, order, shuffled, 0, n, model.loss_code, k, G, Z)  # fmt: skip
        _sum_chunks(G, n_chunks, p + 1)
        grad = np.zeros(p, dtype=params.dtype)
        n_trained = p if model.fit_intercept else d * k
        for j in range(n_trained):
            grad[j] = G[0, j] / n
        return G[0, p] / n, grad

    return gradient


_TRAIN_KERNELS = {}
_GRADIENT_KERNELS = {}


def _kernel(kernels, factory, mode):
    """The kernel of ``mode``, made on first use (compiled, or loaded from the disk cache)."""
    if mode not in kernels:
        kernels[mode] = factory(mode)
    return kernels[mode]


def _batch_mode(rows, work_per_row, n_threads):
    """Mode for batches of at most ``rows`` rows: ``SINGLE``, ``SERIAL`` or ``PARALLEL``."""
    if _n_chunks.py_func(rows) == 1:
        return SINGLE
    if n_threads > 1 and rows * work_per_row >= PARALLEL_MIN_WORK:
        return PARALLEL
    return SERIAL


def _train_mode(model, data, update, n_threads):
    """The kernel mode a call needs (Python knows the batch sizes before the call)."""
    hyper = update.hyper
    finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or hyper[opt.L2] > 0.0
    plain_sgd = (
        update.opt_code == opt.SGD
        and hyper[opt.MOMENTUM] == 0.0
        and not finishing
        and hyper[opt.L1] == 0.0
        and hyper[opt.POWER_T] == 0.0
    )
    if update.batch_size == 1 and plain_sgd:
        return PER_SAMPLE
    n, d = data.X.shape
    return _batch_mode(min(update.batch_size, n), d * model.n_outputs, n_threads)


def _typed_model(model):
    """The model with Python scalars of fixed types (one signature per dtype)."""
    return LinearModel(int(model.loss_code), int(model.n_outputs), bool(model.fit_intercept))


def _typed(model, update, block):
    """The containers with Python scalars of fixed types (one signature per dtype)."""
    model = _typed_model(model)
    update = UpdateConfig(
        int(update.batch_size), int(update.opt_code), update.hyper, float(update.tol),
        int(update.n_iter_no_change),
    )  # fmt: skip
    block = EpochBlock(block.orders, block.lr_epochs, int(block.n_epochs), block.history, block.grad_norms)  # fmt: skip
    return model, update, block


def loss_and_gradient(model, data, params):
    """Mean loss and gradient over all rows; see :func:`fastgd.backends.numpy.linear.loss_and_gradient`."""
    n, d = data.X.shape
    mode = _batch_mode(n, d * int(model.n_outputs), numba.get_num_threads())
    kernel = _kernel(_GRADIENT_KERNELS, _make_gradient_kernel, mode)
    return kernel(_typed_model(model), data, params)


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop; see :meth:`fastgd.backends.contract.Backend.train_epochs`."""
    kernel = _kernel(_TRAIN_KERNELS, _make_train_kernel, _train_mode(model, data, update, n_threads))  # fmt: skip
    model, update, block = _typed(model, update, block)
    with numba_threads(n_threads):
        return kernel(model, data, state, update, block)


def compiled_signatures():
    """Number of compiled specializations of the linear kernels (to detect recompiles)."""
    kernels = [*_TRAIN_KERNELS.values(), *_GRADIENT_KERNELS.values(), _chunk_call, _batch_parallel]
    return sum(len(k.signatures) for k in kernels)


def dispatchers():
    """The linear kernels' dispatchers made so far in this process (for cache checks)."""
    return [*_TRAIN_KERNELS.values(), *_GRADIENT_KERNELS.values(), _chunk_call, _batch_parallel]
