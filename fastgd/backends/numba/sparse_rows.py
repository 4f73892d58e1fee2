"""Numba: the row accessor of sparse (CSR) data, :class:`~fastgd.backends.contract.SparseData`.

Two operations read a CSR row: its dot product with the weights (the decision values)
and the scatter of its gradient ``x * dloss/dz`` into the gradient sums. The chunk
function here has the signature of the dense chunk functions of :mod:`.linear`, so the
epoch loop, the chunk order, the chunk sums and the update are theirs; the per-sample
epoch replaces the dense one for plain SGD at ``batch_size=1``. The same two operations,
``h`` outputs wide, are the first layer of a network on CSR rows (:func:`_csr_rows_times`,
:func:`_csr_rows_scatter`, called by :mod:`.network`).

Indices are read as unsigned integers: Numba adds a test and fix-up for negative
(wrap-around) indices on every signed index loaded from data, which cost about 40% of a
per-sample step here; validation guarantees ``0 <= index < n_features`` and that
``indptr`` is nondecreasing from 0. (uint64 is never mixed with int64 in arithmetic:
Numba would promote the sum to float64.)
"""

import numpy as np

from ..._config import NUMBA_OPTIONS
from .cache import njit
from .losses import _loss_block, _single_output_loss
from .update import _interrupted

# Per-sample SGD with L2 keeps the weights as ``w = s * v``; when |s| falls below this,
# s is folded into v (an O(d) pass, about every 14 / (lr * l2) updates) so that v never
# overflows, nor loses range in float32.
SCALE_FLOOR = 1e-6


@njit(inline="always", **NUMBA_OPTIONS)
def _row_bounds(indptr, order, shuffled, r):
    """``(i, a, b)``: the original index of the r-th row of the order and its entries
    ``a:b``, all unsigned."""
    i = np.uint64(order[r] if shuffled else r)
    return i, np.uint64(indptr[i]), np.uint64(indptr[i + np.uint64(1)])


@njit(inline="always", **NUMBA_OPTIONS)
def _row_dot(values, indices, a, b, params, scale, bias_value):
    """``bias_value + scale * sum_e values[e] * params[indices[e]]`` (one output).

    Two interleaved partial sums: the loads of ``params`` are random, and two independent
    chains overlap their latency (measured 185 against 239 ns per SGD step with one sum,
    50 non-zeros per row, 100,000 weights).
    """
    one, two = np.uint64(1), np.uint64(2)
    v0, v1 = 0.0, 0.0
    e = a
    while e + one < b:
        v0 += values[e] * params[np.uint64(indices[e])]
        v1 += values[e + one] * params[np.uint64(indices[e + one])]
        e += two
    if e < b:
        v0 += values[e] * params[np.uint64(indices[e])]
    return bias_value + scale * (v0 + v1)


@njit(inline="always", **NUMBA_OPTIONS)
def _row_forward(values, indices, a, b, params, k, scale, Z, chunk):
    """Decision values ``b + scale * (x @ V)`` of a row with ``k`` outputs into
    ``Z[chunk, 0, :]``."""
    bias = np.int64(params.shape[0] - k)
    for c in range(k):
        Z[chunk, 0, c] = 0.0
    for e in range(a, b):
        x = values[e]
        base = np.int64(indices[e]) * k
        for c in range(k):
            Z[chunk, 0, c] += x * params[base + c]
    for c in range(k):
        Z[chunk, 0, c] = params[bias + c] + scale * Z[chunk, 0, c]


@njit(inline="always", **NUMBA_OPTIONS)
def _sparse_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z):  # fmt: skip
    """Chunk gradient of CSR rows: the sums of the dense chunk functions of :mod:`.linear`.

    Per row: the decision values (dot product over the row's entries), the (weighted)
    loss and dloss/dz, then the scatter ``G[j] += x_j * dloss/dz`` over the same entries.
    ``G[chunk]`` is a dense accumulator of all ``d * k + k`` gradient sums, zeroed here,
    so the update after the batch is the dense one (dense semantics for every optimizer).
    Repeated columns in a row add up, as in the dense row they stand for.
    """
    values, indices, indptr, Y, weights = data.values, data.indices, data.indptr, data.Y, data.weights  # fmt: skip
    size = stop - start
    lo, hi = start + (chunk * size) // n_chunks, start + ((chunk + 1) * size) // n_chunks
    bias = params.shape[0] - k
    weighted = weights.shape[0] > 0
    for j in range(bias + k):
        G[chunk, j] = 0.0
    loss = 0.0
    for r in range(lo, hi):
        i, a, b = _row_bounds(indptr, order, shuffled, r)
        if k == 1:
            row_loss, dz = _single_output_loss(
                _row_dot(values, indices, a, b, params, 1.0, params[bias]), Y[i, 0], loss_code
            )
            if weighted:
                row_loss *= weights[i]
                dz *= weights[i]
            loss += row_loss
            for e in range(a, b):
                G[chunk, np.uint64(indices[e])] += dz * values[e]
            G[chunk, bias] += dz
        else:
            _row_forward(values, indices, a, b, params, k, 1.0, Z, chunk)
            loss += _loss_block(Y, weights, order, shuffled, r, r + 1, loss_code, k, Z, chunk)
            for e in range(a, b):
                x = values[e]
                base = np.int64(indices[e]) * k
                for c in range(k):
                    G[chunk, base + c] += x * Z[chunk, 0, c]
            for c in range(k):
                G[chunk, bias + c] += Z[chunk, 0, c]
    G[chunk, bias + k] = loss


@njit(inline="always", **NUMBA_OPTIONS)
def _fold_scale(params, n_weights, scale):
    """``v <- s * v`` on the weights; the scale is then 1 (an O(d k) pass)."""
    if scale != 1.0:
        for j in range(n_weights):
            params[j] *= scale


@njit(inline="always", **NUMBA_OPTIONS)
def _shrink(params, n_weights, scale, decay):
    """The L2 shrink of every weight, ``s <- s * (1 - lr * l2)``; folded into v (an
    O(d k) pass) when ``|s|`` falls below :data:`SCALE_FLOOR`. Returns the new scale."""
    scale *= decay
    if abs(scale) < SCALE_FLOOR:
        _fold_scale(params, n_weights, scale)
        return 1.0
    return scale


@njit(inline="always", **NUMBA_OPTIONS)
def _per_sample_sparse(data, params, order, shuffled, loss_code, n_trained, lr, l2, stop_state):  # fmt: skip
    """One epoch of per-sample plain SGD on CSR rows, one output: O(nnz of the row) per
    update. Returns the epoch's summed (weighted) loss and the rows done (fewer than n
    when interrupted: ``stop_state`` is polled before each row; the scale is folded in
    then too).

    The dense update is ``w <- w - lr * (x * dz + l2 * w)`` (``dz`` = dloss/dz at the
    old ``w``; the intercepts are not penalized). Shrinking every weight by
    ``1 - lr * l2`` would cost O(d) per sample, so the weights are kept as
    ``w = s * v`` with one scalar ``s`` (the classic sparse-SGD weight scale):

    1. ``z = s * (x . v) + b``, the loss and ``dz`` (reads the row's entries only);
    2. ``s <- s * (1 - lr * l2)``: the L2 shrink of every weight at once, O(1);
    3. ``v_J <- v_J - lr * dz * x_J / s`` on the row's columns J, so that
       ``s' v'_J = (1 - lr l2) w_J - lr dz x_J``, the dense update; untouched weights
       are only shrunk, which step 2 did;
    4. ``b <- b - lr * dz``.

    In exact arithmetic this is the dense update; in floating point it differs by
    rounding. When ``|s|`` falls below :data:`SCALE_FLOOR`, ``v <- s v, s <- 1`` (O(d),
    rare); at the end of the epoch ``s`` is folded into ``v``, so the parameters every
    reader sees (epoch loss, divergence test, snapshots) are the plain weights. Without
    L2, ``s`` stays 1.
    """
    values, indices, indptr, Y, weights = data.values, data.indices, data.indptr, data.Y, data.weights  # fmt: skip
    bias = params.shape[0] - 1
    weighted = weights.shape[0] > 0
    decay = 1.0 - lr * l2
    scale = 1.0
    loss_sum = 0.0
    n = order.shape[0] if shuffled else indptr.shape[0] - 1  # early stopping: fewer rows
    done = n
    for r in range(n):
        if _interrupted(stop_state):
            done = r
            break
        i, a, b = _row_bounds(indptr, order, shuffled, r)
        z = _row_dot(values, indices, a, b, params, scale, params[bias])
        row_loss, dz = _single_output_loss(z, Y[i, 0], loss_code)
        if weighted:
            row_loss *= weights[i]
            dz *= weights[i]
        loss_sum += row_loss
        if l2 > 0.0:
            scale = _shrink(params, bias, scale, decay)
        step = lr * dz / scale
        for e in range(a, b):
            params[np.uint64(indices[e])] -= step * values[e]
        if n_trained > bias:
            params[bias] -= lr * dz
    _fold_scale(params, bias, scale)
    return loss_sum, done


@njit(inline="always", **NUMBA_OPTIONS)
def _per_sample_sparse_several(data, params, order, shuffled, loss_code, k, n_trained, lr, l2, Z, stop_state):  # fmt: skip
    """:func:`_per_sample_sparse` for ``k`` outputs (dloss/dz through ``Z[0, 0]``)."""
    values, indices, indptr, Y, weights = data.values, data.indices, data.indptr, data.Y, data.weights  # fmt: skip
    bias = params.shape[0] - k
    decay = 1.0 - lr * l2
    scale = 1.0
    loss_sum = 0.0
    n = order.shape[0] if shuffled else indptr.shape[0] - 1  # early stopping: fewer rows
    done = n
    for r in range(n):
        if _interrupted(stop_state):
            done = r
            break
        i, a, b = _row_bounds(indptr, order, shuffled, r)
        _row_forward(values, indices, a, b, params, k, scale, Z, 0)
        loss_sum += _loss_block(Y, weights, order, shuffled, r, r + 1, loss_code, k, Z, 0)
        if l2 > 0.0:
            scale = _shrink(params, bias, scale, decay)
        for e in range(a, b):
            x = values[e] / scale
            base = np.int64(indices[e]) * k
            for c in range(k):
                params[base + c] -= lr * (x * Z[0, 0, c])
        for c in range(n_trained - bias):
            params[bias + c] -= lr * Z[0, 0, c]
    _fold_scale(params, bias, scale)
    return loss_sum, done


# ---------------------------------------------------------------------------------------
# the first dense layer of a network on CSR rows (fastgd.backends.numba.network)


@njit(inline="always", **NUMBA_OPTIONS)
def _csr_rows_times(data, order, shuffled, first, W, out):
    """``out = X_rows @ W``: the rows ``first, first + 1, ...`` of the order (as many as
    ``out`` has), times the dense ``W`` of shape (d, h).

    Row by row, the sum over its entries of ``value * W[column, :]``: O(nnz * h), each
    term an h-wide multiply-add on a contiguous row of W (vectorized).
    """
    values, indices, indptr = data.values, data.indices, data.indptr
    rows, h = out.shape
    for r in range(rows):
        _, a, b = _row_bounds(indptr, order, shuffled, first + r)
        for c in range(h):
            out[r, c] = 0.0
        for e in range(a, b):
            x = values[e]
            j = np.uint64(indices[e])
            for c in range(h):
                out[r, c] += x * W[j, c]


@njit(inline="always", **NUMBA_OPTIONS)
def _csr_rows_scatter(data, order, shuffled, first, D, G):
    """``G += X_rows^T @ D`` for the rows ``first, ...`` of the order (as many as ``D``
    has; ``G`` of shape (d, h)): each entry adds ``value * D[r, :]`` to its column's row
    of G, row after row in order, so every sum has one fixed order of terms. Repeated
    columns add up, as in the dense row they stand for."""
    values, indices, indptr = data.values, data.indices, data.indptr
    rows, h = D.shape
    for r in range(rows):
        _, a, b = _row_bounds(indptr, order, shuffled, first + r)
        for e in range(a, b):
            x = values[e]
            j = np.uint64(indices[e])
            for c in range(h):
                G[j, c] += x * D[r, c]
