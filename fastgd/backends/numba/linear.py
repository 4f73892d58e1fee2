"""Numba kernels of the linear family: the whole training loop in one compiled call.

Same contract and arithmetic as :mod:`fastgd.backends.numpy.linear`. The gradient of a mini-batch is one
fused pass over its rows (decision values, loss derivative, accumulation) instead of
NumPy's two passes over X. A batch is split into chunks that depend on the batch size
only (see :mod:`fastgd._config`); each chunk sums into its own row of a buffer, and the
rows are added in chunk order, so results are bit-identical for any thread count.
"""

import math

import numpy as np
from numba import njit, prange

from ..._config import MAX_CHUNKS, NUMBA_OPTIONS, PARALLEL_MIN_WORK, ROW_PADDING, ROWS_PER_BLOCK
from ...specs import optimizers as opt
from ...specs import stopping
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


@njit(inline="always", **NUMBA_OPTIONS)
def _chunk_gradient(
    X, Y, weights, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z
):
    """Sum the per-sample gradients of one chunk of the batch ``start:stop`` into ``G[chunk]``.

    One output: row by row (:func:`_single_output_rows`). Several: the chunk is walked in
    blocks of ``Z.shape[1]`` rows: decision values, loss derivatives, then gradient
    accumulation; a block's rows of X are still in cache for the last step, so X is
    streamed from memory once. ``G[chunk, n_params]`` receives the
    summed loss. Arrays are indexed, never sliced, in per-row code: a slice is a new array
    whose reference count Numba updates atomically (~50 ns per row, measured).
    """
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


@njit(inline="always", **NUMBA_OPTIONS)
def _batch_serial(
    X, Y, weights, params, order, shuffled, start, stop, n_chunks, loss_code, k, G, Z
):
    for chunk in range(n_chunks):
        _chunk_gradient(
            X, Y, weights, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z
        )


@njit(parallel=True, **NUMBA_OPTIONS)
def _batch_parallel(
    X, Y, weights, params, order, shuffled, start, stop, n_chunks, loss_code, k, G, Z
):
    for chunk in prange(n_chunks):
        _chunk_gradient(
            X, Y, weights, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z
        )


@njit(inline="always", **NUMBA_OPTIONS)
def _batch_gradient(X, Y, weights, params, order, shuffled, start, stop, loss_code, k, G, Z):
    """Fill ``G[:n_chunks]`` with chunk partial sums; returns n_chunks."""
    n_chunks = _n_chunks(stop - start)
    if n_chunks == 1:
        # a direct call: through the chunk loop, a small batch took ~150 ns longer (measured)
        _chunk_gradient(
            X, Y, weights, params, order, shuffled, start, stop, 1, 0, loss_code, k, G, Z
        )
    elif (stop - start) * X.shape[1] * k >= PARALLEL_MIN_WORK:
        _batch_parallel(
            X, Y, weights, params, order, shuffled, start, stop, n_chunks, loss_code, k, G, Z
        )
    else:
        _batch_serial(
            X, Y, weights, params, order, shuffled, start, stop, n_chunks, loss_code, k, G, Z
        )
    return n_chunks


@njit(**NUMBA_OPTIONS)
def _loss_and_gradient(X, Y, weights, params, loss_code, n_outputs, fit_intercept):
    n, d = X.shape
    p = params.shape[0]
    G = np.empty((MAX_CHUNKS, p + 1 + ROW_PADDING), dtype=params.dtype)
    Z = np.empty((MAX_CHUNKS, ROWS_PER_BLOCK, n_outputs), dtype=params.dtype)
    order = np.empty(0, dtype=np.int64)
    n_chunks = _batch_gradient(
        X, Y, weights, params, order, False, 0, n, loss_code, n_outputs, G, Z
    )
    _sum_chunks(G, n_chunks, p + 1)
    grad = np.zeros(p, dtype=params.dtype)
    n_trained = p if fit_intercept else d * n_outputs
    for j in range(n_trained):
        grad[j] = G[0, j] / n
    return G[0, p] / n, grad


@njit(inline="always", **NUMBA_OPTIONS)
def _per_sample_epoch(X, Y, weights, params, order, shuffled, loss_code, k, n_trained, lr, Z):
    """One epoch of per-sample SGD; returns the summed loss.

    The same arithmetic as a mini-batch of one row (the gradient is ``dz * x``, divided by
    1), without the chunk buffer: each step updates the parameters directly.
    """
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


@njit(**NUMBA_OPTIONS)
def _train_epochs(
    X, Y, weights, params, orders, lr_epochs, n_epochs, loss_code, k, fit_intercept, batch_size,
    opt_code, hyper, opt_state, step_count, tol, n_iter_no_change, stop_state, history,
):  # fmt: skip
    n, d = X.shape
    p = params.shape[0]
    n_weights = d * k
    n_trained = p if fit_intercept else n_weights
    shuffled = orders.shape[0] > 0
    G = np.empty((MAX_CHUNKS, p + 1 + ROW_PADDING), dtype=params.dtype)
    Z = np.empty((MAX_CHUNKS, ROWS_PER_BLOCK, k), dtype=params.dtype)
    start_params = np.empty_like(params)
    start_state = np.empty_like(opt_state)
    natural = np.empty(0, dtype=np.int64)
    l1, l2, power_t = hyper[opt.L1], hyper[opt.L2], hyper[opt.POWER_T]
    penalized = l1 > 0.0 or l2 > 0.0
    # mean, L2 term and clipping need a pass over G before the update
    finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or l2 > 0.0
    plain_sgd = (
        opt_code == opt.SGD and hyper[opt.MOMENTUM] == 0.0 and not finishing and l1 == 0.0
        and power_t == 0.0
    )  # fmt: skip
    for epoch in range(n_epochs):
        # element loops: a slice assignment builds array views, ~40 ns per epoch (measured)
        for j in range(p):
            start_params[j] = params[j]
        for a in range(opt_state.shape[0]):
            for j in range(opt_state.shape[1]):
                start_state[a, j] = opt_state[a, j]
        start_step = step_count[0]
        order = orders[epoch % orders.shape[0]] if shuffled else natural
        loss_sum = 0.0
        batched_rows = n
        if batch_size == 1 and plain_sgd:
            loss_sum = _per_sample_epoch(
                X, Y, weights, params, order, shuffled, loss_code, k, n_trained, lr_epochs[epoch], Z
            )
            step_count[0] += n
            batched_rows = 0
        for start in range(0, batched_rows, batch_size):
            stop = min(start + batch_size, n)
            n_chunks = _batch_gradient(
                X, Y, weights, params, order, shuffled, start, stop, loss_code, k, G, Z
            )
            _sum_chunks(G, n_chunks, p + 1)
            loss_sum += G[0, p]
            _apply_update(
                params, G, 1.0 / (stop - start), n_weights, n_trained, opt_code, hyper, opt_state,
                step_count, lr_epochs[epoch], finishing,
            )  # fmt: skip
        epoch_loss = loss_sum / n
        if penalized:
            epoch_loss += _penalty_value(params, n_weights, l1, l2)
        history[epoch] = epoch_loss
        if not (math.isfinite(epoch_loss) and _all_finite(params)):
            params[:] = start_params
            opt_state[:, :] = start_state
            step_count[0] = start_step
            return epoch + 1, stopping.DIVERGED
        if _tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
            return epoch + 1, stopping.CONVERGED
    return n_epochs, stopping.MAX_EPOCHS


def loss_and_gradient(model, data, params):
    """Mean loss and gradient over all rows; see :func:`fastgd.backends.numpy.linear.loss_and_gradient`."""
    return _loss_and_gradient(*data, params, *model)


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop; see :meth:`fastgd.backends.contract.Backend.train_epochs`."""
    with numba_threads(n_threads):
        return _train_epochs(
            *data, state.params, block.orders, block.lr_epochs, block.n_epochs, *model,
            update.batch_size, update.opt_code, update.hyper, state.opt_state, state.step_count,
            update.tol, update.n_iter_no_change, state.stop_state, block.history,
        )  # fmt: skip


def compiled_signatures():
    """Number of compiled specializations of the training kernel (to detect recompiles)."""
    return len(_train_epochs.signatures)
