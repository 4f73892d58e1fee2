"""Numba kernels for multi-layer perceptrons: one compiled call runs a block of epochs.

Same contract and arithmetic as :mod:`fastgd.backends.numpy.network`. A mini-batch is
split into row chunks that depend on the batch size only (as for the linear models);
every step of the forward and backward pass runs chunk by chunk, in parallel when the
batch is large enough. Matrix products of a chunk go to BLAS (``np.dot``), one thread per
chunk (BLAS itself is pinned to one thread, see :mod:`fastgd.backends._blas`). Whatever
needs the whole batch (batch-norm statistics, the gradient) is summed over the chunks in
chunk order, so results are bit-identical for any thread count.

The parameter update after each batch (penalties, clipping, schedule, optimizer) is the
one of the linear kernels, imported from :mod:`fastgd.backends.numba.update`.
"""

import math

import numpy as np
from numba import njit, prange

from ..._config import MAX_CHUNKS, NUMBA_OPTIONS, PARALLEL_MIN_WORK, ROW_PADDING
from ...specs import network as net
from ...specs import optimizers as opt
from ...specs import stopping
from ..blas import single_threaded_blas
from .losses import _loss_block
from .threads import numba_threads
from .update import (
    _all_finite,
    _apply_update,
    _n_chunks,
    _penalty_value,
    _sum_chunks,
    _tolerance_rule,
)

RELU, LEAKY_RELU, SIGMOID, TANH = net.RELU, net.LEAKY_RELU, net.SIGMOID, net.TANH

# what one call of _chunk_step does
FORWARD = 0  # dense layer (and, without batch norm, activation; the loss at the output)
BN_VARIANCE = 1  # per-chunk sums of squared deviations from the batch mean
BN_APPLY = 2  # normalize, scale, shift, activation
BACKWARD = 3  # gradients of a dense layer; dloss/du of the layer below
BN_BACKWARD = 4  # dloss/dz through the normalization


@njit(inline="always", **NUMBA_OPTIONS)
def _offsets(sizes, batch_norm):
    """Offsets of the parameter blocks (see fastgd.specs.network.layout) and of each
    layer's block in the per-row activation buffers (``column``)."""
    n_layers = sizes.shape[0] - 1
    weight = np.zeros(n_layers, dtype=np.int64)
    bias = np.full(n_layers, -1, dtype=np.int64)
    gamma = np.full(n_layers, -1, dtype=np.int64)
    beta = np.full(n_layers, -1, dtype=np.int64)
    running = np.full(n_layers, -1, dtype=np.int64)
    column = np.zeros(n_layers + 1, dtype=np.int64)
    offset = 0
    for layer in range(n_layers):
        weight[layer] = offset
        offset += sizes[layer] * sizes[layer + 1]
        column[layer + 1] = column[layer] + sizes[layer]
    n_weights = offset
    for layer in range(n_layers):
        if not batch_norm[layer]:  # batch norm's shift takes the place of the bias
            bias[layer] = offset
            offset += sizes[layer + 1]
    n_running = 0
    for layer in range(n_layers):
        if batch_norm[layer]:
            gamma[layer] = offset
            beta[layer] = offset + sizes[layer + 1]
            offset += 2 * sizes[layer + 1]
            running[layer] = n_running
            n_running += 2 * sizes[layer + 1]
    return weight, bias, gamma, beta, running, column, n_weights, offset


@njit(inline="always", **NUMBA_OPTIONS)
def _activate(u, code, slope):
    if code == RELU:
        return u if u > 0 else 0.0 * u
    if code == LEAKY_RELU:
        return u if u > 0 else slope * u
    if code == SIGMOID:
        e = math.exp(-abs(u))  # never overflows
        return 1.0 / (1.0 + e) if u >= 0 else e / (1.0 + e)
    if code == TANH:
        return math.tanh(u)
    return u


@njit(inline="always", **NUMBA_OPTIONS)
def _activation_slope(u, a, code, slope):
    """act'(u), from the output a = act(u) where that is cheaper."""
    if code == RELU:
        return 1.0 if u > 0 else 0.0
    if code == LEAKY_RELU:
        return 1.0 if u > 0 else slope
    if code == SIGMOID:
        return a * (1.0 - a)
    if code == TANH:
        return 1.0 - a * a
    return 1.0


@njit(inline="always", **NUMBA_OPTIONS)
def _rows(flat, batch_max, column, rows, width):
    """The (rows, width) block of a layer in a flat per-row buffer (contiguous)."""
    first = batch_max * column
    return flat[first : first + rows * width].reshape((rows, width))


@njit(**NUMBA_OPTIONS)  # not inlined: one compiled body shared by both callers (compile time)
def _chunk_step(
    step, layer, chunk, n_chunks, start, rows, batch_max, X, Y, weights, order, shuffled,
    params, sizes, batch_norm, activation, slope, loss_code, offsets, A, U, XH, D, G, stats,
):  # fmt: skip
    """One step of the forward or backward pass on one chunk of the batch.

    The batch is rows ``start:start + rows`` of the epoch's order; the chunk is its rows
    ``lo:hi``. Per layer ``l`` the buffers hold (row by row): ``A`` its input activations
    (block ``l``; block 0 is the gathered X), ``U`` its pre-activation values (after batch
    norm; for the output layer, the decision values and then dloss/dz), ``XH`` the
    normalized values, ``D`` dloss/d(pre-activation) during the backward pass. ``stats``
    holds the batch-wide mean, 1/std and backward sums of a normalized layer.
    """
    weight, bias, gamma, beta, running, column, n_weights, n_params = offsets
    n_layers = sizes.shape[0] - 1
    lo = (chunk * rows) // n_chunks
    hi = ((chunk + 1) * rows) // n_chunks
    n_in, n_out = sizes[layer], sizes[layer + 1]
    A_in = _rows(A, batch_max, column[layer], rows, n_in)
    U_out = _rows(U, batch_max, column[layer + 1] - sizes[0], rows, n_out)
    W = params[weight[layer] : weight[layer] + n_in * n_out].reshape((n_in, n_out))
    normalized = batch_norm[layer] != 0
    if step == FORWARD:
        if layer == 0:  # gather this chunk's samples: X rows in the epoch's order
            for r in range(lo, hi):
                i = order[start + r] if shuffled else start + r
                for j in range(n_in):
                    A_in[r, j] = X[i, j]
        Z = np.dot(A_in[lo:hi], W)
        b = bias[layer]
        for r in range(lo, hi):
            for j in range(n_out):
                U_out[r, j] = Z[r - lo, j] if normalized else Z[r - lo, j] + params[b + j]
        if layer == n_layers - 1:
            # loss and dloss/dz of the output (weighted); the gradient is of the batch mean
            out3 = U_out[lo:hi].reshape((1, hi - lo, n_out))
            G[chunk, n_params] = _loss_block(
                Y, weights, order, shuffled, start + lo, start + hi, loss_code, n_out, out3, 0
            )
            inv_rows = 1.0 / rows
            for r in range(lo, hi):
                for j in range(n_out):
                    U_out[r, j] *= inv_rows
        elif normalized:
            for j in range(n_out):
                stats[chunk, j] = 0.0
            for r in range(lo, hi):
                for j in range(n_out):
                    stats[chunk, j] += U_out[r, j]
        else:
            A_out = _rows(A, batch_max, column[layer + 1], rows, n_out)
            for r in range(lo, hi):
                for j in range(n_out):
                    A_out[r, j] = _activate(U_out[r, j], activation, slope)
    elif step == BN_VARIANCE:
        mean = stats[MAX_CHUNKS]
        for j in range(n_out):
            stats[chunk, j] = 0.0
        for r in range(lo, hi):
            for j in range(n_out):
                deviation = U_out[r, j] - mean[j]
                stats[chunk, j] += deviation * deviation
    elif step == BN_APPLY:
        mean, inv_std = stats[MAX_CHUNKS], stats[MAX_CHUNKS + 1]
        X_hat = _rows(XH, batch_max, column[layer + 1] - sizes[0], rows, n_out)
        A_out = _rows(A, batch_max, column[layer + 1], rows, n_out)
        g, be = gamma[layer], beta[layer]
        for r in range(lo, hi):
            for j in range(n_out):
                x_hat = (U_out[r, j] - mean[j]) * inv_std[j]
                X_hat[r, j] = x_hat
                u = params[g + j] * x_hat + params[be + j]
                U_out[r, j] = u
                A_out[r, j] = _activate(u, activation, slope)
    elif step == BACKWARD:
        # dZ of this layer: the output's dloss/dz lives in U, a hidden layer's in D
        if layer == n_layers - 1:
            dZ = U_out
        else:
            dZ = _rows(D, batch_max, column[layer + 1] - sizes[0], rows, n_out)
        grad_W = np.dot(A_in[lo:hi].T, dZ[lo:hi])
        w, b = weight[layer], bias[layer]
        for j in range(n_in):
            for c in range(n_out):
                G[chunk, w + j * n_out + c] = grad_W[j, c]
        if not normalized:
            for c in range(n_out):
                G[chunk, b + c] = 0.0
            for r in range(lo, hi):
                for c in range(n_out):
                    G[chunk, b + c] += dZ[r, c]
        if layer > 0:
            below = layer - 1  # the hidden layer whose activations fed this one
            dA = np.dot(dZ[lo:hi], W.T)
            U_in = _rows(U, batch_max, column[layer] - sizes[0], rows, n_in)
            dU = _rows(D, batch_max, column[layer] - sizes[0], rows, n_in)
            for r in range(lo, hi):
                for j in range(n_in):
                    dU[r, j] = dA[r - lo, j] * _activation_slope(
                        U_in[r, j], A_in[r, j], activation, slope
                    )
            if batch_norm[below]:
                # chunk sums of dU (the shift's gradient) and dU * x_hat (the scale's)
                X_hat = _rows(XH, batch_max, column[layer] - sizes[0], rows, n_in)
                g, be = gamma[below], beta[below]
                for j in range(n_in):
                    G[chunk, g + j] = 0.0
                    G[chunk, be + j] = 0.0
                for r in range(lo, hi):
                    for j in range(n_in):
                        G[chunk, g + j] += dU[r, j] * X_hat[r, j]
                        G[chunk, be + j] += dU[r, j]
    else:  # BN_BACKWARD of this (hidden, normalized) layer:
        # dz = inv_std / B * (B dx_hat - sum(dx_hat) - x_hat sum(dx_hat x_hat)), dx_hat = gamma du
        inv_std, sum_du, sum_du_xhat = (
            stats[MAX_CHUNKS + 1],
            stats[MAX_CHUNKS + 2],
            stats[MAX_CHUNKS + 3],
        )
        dU = _rows(D, batch_max, column[layer + 1] - sizes[0], rows, n_out)
        X_hat = _rows(XH, batch_max, column[layer + 1] - sizes[0], rows, n_out)
        g = gamma[layer]
        for r in range(lo, hi):
            for j in range(n_out):
                scale = params[g + j]
                dU[r, j] = (inv_std[j] / rows) * (
                    rows * (dU[r, j] * scale) - scale * sum_du[j] - X_hat[r, j] * (scale * sum_du_xhat[j])
                )  # fmt: skip


# what the whole batch must agree on after a step, before the next one can run
NO_SYNC = 0
BN_MEAN = 1  # the batch mean of a normalized layer (after its FORWARD)
BN_STD = 2  # its variance (after BN_VARIANCE)
BN_SUMS = 3  # the backward sums of the normalized layer below (after a BACKWARD)


@njit(**NUMBA_OPTIONS)
def _program(sizes, batch_norm):
    """The steps of one batch as rows ``(step, layer, sync)``.

    Steps between two synchronization points run one after the other within each chunk,
    so a network without batch norm runs its whole forward and backward pass in a single
    parallel region per batch (a region costs a few microseconds on a quiet machine, far
    more on a busy one).
    """
    n_layers = sizes.shape[0] - 1
    program = np.zeros((5 * n_layers, 3), dtype=np.int64)
    k = 0
    for layer in range(n_layers):
        program[k, 0], program[k, 1] = FORWARD, layer
        k += 1
        if batch_norm[layer]:
            program[k - 1, 2] = BN_MEAN
            program[k, 0], program[k, 1], program[k, 2] = BN_VARIANCE, layer, BN_STD
            program[k + 1, 0], program[k + 1, 1] = BN_APPLY, layer
            k += 2
    for layer in range(n_layers - 1, -1, -1):
        program[k, 0], program[k, 1] = BACKWARD, layer
        k += 1
        if layer > 0 and batch_norm[layer - 1]:
            program[k - 1, 2] = BN_SUMS
            program[k, 0], program[k, 1] = BN_BACKWARD, layer - 1
            k += 1
    return program[:k]


@njit(parallel=True, **NUMBA_OPTIONS)
def _segment_parallel(
    program, first, last, n_chunks, start, rows, batch_max, X, Y, weights, order, shuffled,
    params, sizes, batch_norm, activation, slope, loss_code, offsets, A, U, XH, D, G, stats,
):  # fmt: skip
    for chunk in prange(n_chunks):
        for k in range(first, last):
            _chunk_step(
                program[k, 0], program[k, 1], chunk, n_chunks, start, rows, batch_max, X, Y,
                weights, order, shuffled, params, sizes, batch_norm, activation, slope,
                loss_code, offsets, A, U, XH, D, G, stats,
            )  # fmt: skip


@njit(**NUMBA_OPTIONS)
def _segment_serial(
    program, first, last, n_chunks, start, rows, batch_max, X, Y, weights, order, shuffled,
    params, sizes, batch_norm, activation, slope, loss_code, offsets, A, U, XH, D, G, stats,
):  # fmt: skip
    for chunk in range(n_chunks):
        for k in range(first, last):
            _chunk_step(
                program[k, 0], program[k, 1], chunk, n_chunks, start, rows, batch_max, X, Y,
                weights, order, shuffled, params, sizes, batch_norm, activation, slope,
                loss_code, offsets, A, U, XH, D, G, stats,
            )  # fmt: skip


@njit(**NUMBA_OPTIONS)
def _batch_gradient(
    program, start, rows, batch_max, X, Y, weights, order, shuffled, params, running,
    update_running, sizes, batch_norm, activation, net_hyper, loss_code, offsets, A, U, XH, D,
    G, stats,
):  # fmt: skip
    """Forward and backward pass of one batch; G[0] receives the mean gradient and
    G[0, n_params] the summed loss. Updates the running averages if asked."""
    n_layers = sizes.shape[0] - 1
    n_params = offsets[7]
    slope, momentum, eps = net_hyper[net.LEAKY_SLOPE], net_hyper[net.BN_MOMENTUM], net_hyper[net.BN_EPS]  # fmt: skip
    n_chunks = _n_chunks(rows)
    work = 0
    for layer in range(n_layers):
        work += sizes[layer] * sizes[layer + 1]
    parallel = n_chunks > 1 and rows * work >= PARALLEL_MIN_WORK
    mean, inv_std = stats[MAX_CHUNKS], stats[MAX_CHUNKS + 1]
    first = 0
    while first < program.shape[0]:
        last = first
        while last < program.shape[0] - 1 and program[last, 2] == NO_SYNC:
            last += 1
        if parallel:
            _segment_parallel(
                program, first, last + 1, n_chunks, start, rows, batch_max, X, Y, weights,
                order, shuffled, params, sizes, batch_norm, activation, slope, loss_code,
                offsets, A, U, XH, D, G, stats,
            )  # fmt: skip
        else:
            _segment_serial(
                program, first, last + 1, n_chunks, start, rows, batch_max, X, Y, weights,
                order, shuffled, params, sizes, batch_norm, activation, slope, loss_code,
                offsets, A, U, XH, D, G, stats,
            )  # fmt: skip
        sync, layer = program[last, 2], program[last, 1]
        # batch-wide values from the chunks' partial sums, added in chunk order
        if sync == BN_MEAN:
            for j in range(sizes[layer + 1]):
                total = 0.0
                for c in range(n_chunks):
                    total += stats[c, j]
                mean[j] = total / rows
        elif sync == BN_STD:
            width = sizes[layer + 1]
            r = offsets[4][layer]
            for j in range(width):
                total = 0.0
                for c in range(n_chunks):
                    total += stats[c, j]
                variance = total / rows
                inv_std[j] = 1.0 / math.sqrt(variance + eps)
                stats[MAX_CHUNKS + 4 + layer, j] = inv_std[j]  # again for the backward pass
                if update_running:
                    unbiased = variance * rows / (rows - 1) if rows > 1 else variance
                    running[r + j] = (1.0 - momentum) * running[r + j] + momentum * mean[j]
                    running[r + width + j] = (1.0 - momentum) * running[r + width + j] + momentum * unbiased  # fmt: skip
        elif sync == BN_SUMS:
            below = layer - 1
            g, be = offsets[2][below], offsets[3][below]
            for j in range(sizes[layer]):
                total_du, total_du_xhat = 0.0, 0.0
                for c in range(n_chunks):
                    total_du += G[c, be + j]
                    total_du_xhat += G[c, g + j]
                inv_std[j] = stats[MAX_CHUNKS + 4 + below, j]
                stats[MAX_CHUNKS + 2, j] = total_du
                stats[MAX_CHUNKS + 3, j] = total_du_xhat
        first = last + 1
    _sum_chunks(G, n_chunks, n_params + 1)


@njit(inline="always", **NUMBA_OPTIONS)
def _buffers(sizes, batch_max, dtype_array, n_params):
    n_layers = sizes.shape[0] - 1
    total = 0
    hidden = 0
    widest = 0
    for layer in range(n_layers + 1):
        total += sizes[layer]
        widest = max(widest, sizes[layer])
    hidden = total - sizes[0]
    A = np.empty(batch_max * total, dtype=dtype_array.dtype)
    U = np.empty(batch_max * hidden, dtype=dtype_array.dtype)
    XH = np.empty(batch_max * hidden, dtype=dtype_array.dtype)
    D = np.empty(batch_max * hidden, dtype=dtype_array.dtype)
    G = np.empty((MAX_CHUNKS, n_params + 1 + ROW_PADDING), dtype=dtype_array.dtype)
    stats = np.zeros((MAX_CHUNKS + 4 + n_layers, widest), dtype=np.float64)
    return A, U, XH, D, G, stats


@njit(**NUMBA_OPTIONS)
def _network_loss_and_gradient(X, Y, weights, params, sizes, batch_norm, activation, net_hyper, loss_code):  # fmt: skip
    n = X.shape[0]
    offsets = _offsets(sizes, batch_norm)
    n_params = offsets[7]
    A, U, XH, D, G, stats = _buffers(sizes, n, params, n_params)
    order = np.empty(0, dtype=np.int64)
    running = np.empty(0, dtype=params.dtype)
    _batch_gradient(
        _program(sizes, batch_norm), 0, n, n, X, Y, weights, order, False, params, running,
        False, sizes, batch_norm, activation, net_hyper, loss_code, offsets, A, U, XH, D, G,
        stats,
    )  # fmt: skip
    grad = np.empty_like(params)
    for j in range(n_params):
        grad[j] = G[0, j]
    return G[0, n_params] / n, grad


def loss_and_gradient(model, data, params):
    """Compiled; see :func:`fastgd.backends.numpy.network.loss_and_gradient`."""
    with single_threaded_blas():
        return _network_loss_and_gradient(
            *data, params, model.sizes, model.batch_norm, model.activation, model.net_hyper,
            model.loss_code,
        )  # fmt: skip


@njit(**NUMBA_OPTIONS)
def _network_train_epochs(
    X, Y, weights, params, running, orders, lr_epochs, n_epochs, sizes, batch_norm, activation,
    net_hyper, loss_code, batch_size, opt_code, hyper, opt_state, step_count, tol,
    n_iter_no_change, stop_state, history, grad_norms,
):  # fmt: skip
    n = X.shape[0]
    n_layers = sizes.shape[0] - 1
    offsets = _offsets(sizes, batch_norm)
    weight, n_weights, n_params = offsets[0], offsets[6], offsets[7]
    batch_max = min(batch_size, n)
    A, U, XH, D, G, stats = _buffers(sizes, batch_max, params, n_params)
    program = _program(sizes, batch_norm)
    start_params = np.empty_like(params)
    start_running = np.empty_like(running)
    start_state = np.empty_like(opt_state)
    natural = np.empty(0, dtype=np.int64)
    shuffled = orders.shape[0] > 0
    l1, l2 = hyper[opt.L1], hyper[opt.L2]
    finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or l2 > 0.0
    norms_squared = np.zeros(n_layers)
    for epoch in range(n_epochs):
        start_params[:] = params
        start_running[:] = running
        start_state[:, :] = opt_state
        start_step = step_count[0]
        order = orders[epoch % orders.shape[0]] if shuffled else natural
        loss_sum = 0.0
        norms_squared[:] = 0.0
        n_batches = 0
        for start in range(0, n, batch_size):
            rows = min(start + batch_size, n) - start
            _batch_gradient(
                program, start, rows, batch_max, X, Y, weights, order, shuffled, params, running, True,
                sizes, batch_norm, activation, net_hyper, loss_code, offsets, A, U, XH, D, G,
                stats,
            )  # fmt: skip
            loss_sum += G[0, n_params]
            for layer in range(n_layers):
                total = 0.0
                for j in range(weight[layer], weight[layer] + sizes[layer] * sizes[layer + 1]):
                    total += float(G[0, j]) ** 2
                norms_squared[layer] += total
            n_batches += 1
            _apply_update(
                params, G, 1.0, n_weights, n_params, opt_code, hyper, opt_state, step_count,
                lr_epochs[epoch], finishing,
            )  # fmt: skip
        for layer in range(n_layers):
            grad_norms[epoch, layer] = math.sqrt(norms_squared[layer] / n_batches)
        epoch_loss = loss_sum / n
        if l1 > 0.0 or l2 > 0.0:
            epoch_loss += _penalty_value(params, n_weights, l1, l2)
        history[epoch] = epoch_loss
        if not (math.isfinite(epoch_loss) and _all_finite(params)):
            params[:] = start_params
            running[:] = start_running
            opt_state[:, :] = start_state
            step_count[0] = start_step
            return epoch + 1, stopping.DIVERGED
        if _tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
            return epoch + 1, stopping.CONVERGED
    return n_epochs, stopping.MAX_EPOCHS


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled; see :meth:`fastgd.backends.contract.Backend.train_epochs`."""
    with numba_threads(n_threads), single_threaded_blas():
        return _network_train_epochs(
            *data, state.params, state.running, block.orders, block.lr_epochs, block.n_epochs,
            model.sizes, model.batch_norm, model.activation, model.net_hyper, model.loss_code,
            update.batch_size, update.opt_code, update.hyper, state.opt_state, state.step_count,
            update.tol, update.n_iter_no_change, state.stop_state, block.history,
            block.grad_norms,
        )  # fmt: skip
