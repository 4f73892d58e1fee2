# Included by _kernels.pyx (it uses Problem, _row, _add_row_loss and the losses there).
"""The row accessor of CSR rows (fastgd.backends.contract.SparseData) for the Cython kernels.

A CSR row is read two ways: its dot product with the weights (decision values) and the
scatter of its gradient ``x * dloss/dz`` into the chunk's dense gradient sums. The chunk
function here is called by ``_chunk_gradient`` in place of the dense rows, so the chunks,
their order, the chunk sums and the update are those of the dense kernels; the per-sample
epoch replaces the dense one for plain SGD at ``batch_size=1``. ``X`` points at the
stored values; the index arrays are int32 or int64 as the caller's matrix has them
(``index_t``: both are compiled). Validation guarantees nondecreasing ``indptr`` from 0
and ``0 <= indices < d``; columns may be unsorted or repeated (repeated entries add up,
as in the dense row they stand for).
"""

ctypedef fused index_t:
    int32_t
    int64_t

# Per-sample SGD with L2 keeps w = s * v; |s| below this folds s into v (see
# _per_sample_sparse_rows)
cdef double SCALE_FLOOR = 1e-6


cdef void _attach_csr(
    Problem* pb, const index_t[::1] indices, const index_t[::1] indptr, Py_ssize_t n_features
) noexcept nogil:
    """Mark the problem as CSR rows when ``indptr`` is not empty (dense rows: both empty)."""
    if indptr.shape[0] == 0:
        return
    pb.sparse = True
    pb.index64 = index_t is int64_t
    pb.n, pb.d = indptr.shape[0] - 1, n_features
    pb.indptr, pb.indices = &indptr[0], (&indices[0] if indices.shape[0] > 0 else NULL)


cdef inline void _sparse_forward(
    const floating* values, const index_t* indices, Py_ssize_t a, Py_ssize_t b,
    const floating* params, Py_ssize_t bias, Py_ssize_t k, double scale, floating* z,
) noexcept nogil:
    """``z = params[bias:] + scale * (x @ V)`` for the row's entries ``a:b``.

    One output: two interleaved partial sums (the loads of v are random and
    latency-bound; two chains overlap them).
    """
    cdef Py_ssize_t e, c, base
    cdef floating s0 = 0, s1 = 0, x
    if k == 1:
        e = a
        while e + 1 < b:
            s0 += values[e] * params[indices[e]]
            s1 += values[e + 1] * params[indices[e + 1]]
            e += 2
        if e < b:
            s0 += values[e] * params[indices[e]]
        z[0] = <floating>(params[bias] + scale * (s0 + s1))
        return
    for c in range(k):
        z[c] = 0
    for e in range(a, b):
        x = values[e]
        base = indices[e] * k
        for c in range(k):
            z[c] += x * params[base + c]
    for c in range(k):
        z[c] = <floating>(params[bias + c] + scale * z[c])


cdef inline double _sparse_row_loss(
    const Problem* pb, Py_ssize_t i, const floating* Y, const floating* sw, floating* z
) noexcept nogil:
    """The row's (weighted) loss; ``z`` becomes (weight times) dloss/dz."""
    cdef double loss
    if sw == NULL:
        loss = _add_row_loss(0.0, z, Y + i * pb.m, pb.loss_code, pb.k)
    else:
        loss = _add_weighted_row_loss(0.0, z, Y + i * pb.m, pb.loss_code, pb.k, sw[i])
    return loss / pb.k if pb.loss_code == MSE else loss


cdef double _sparse_chunk_rows(
    const Problem* pb, Py_ssize_t lo, Py_ssize_t hi, const floating* values,
    const index_t* indices, const index_t* indptr, const floating* Y, const floating* sw,
    const floating* params, floating* G, floating* z,
) noexcept nogil:
    """Gradient sums of rows ``lo:hi`` of the order into the (zeroed) dense ``G``; the
    summed loss is returned. Per row: decision values, loss and dloss/dz, scatter."""
    cdef Py_ssize_t k = pb.k, bias = pb.d * pb.k
    cdef Py_ssize_t r, i, e, a, b, c, base
    cdef floating g, x
    cdef double loss = 0.0
    for r in range(lo, hi):
        i = _row(pb, r)
        a, b = indptr[i], indptr[i + 1]
        _sparse_forward(values, indices, a, b, params, bias, k, 1.0, z)
        loss += _sparse_row_loss(pb, i, Y, sw, z)
        if k == 1:
            g = z[0]
            for e in range(a, b):
                G[indices[e]] += g * values[e]
        else:
            for e in range(a, b):
                x = values[e]
                base = indices[e] * k
                for c in range(k):
                    G[base + c] += x * z[c]
        for c in range(k):
            G[bias + c] += z[c]
    return loss


cdef double _sparse_chunk(
    const Problem* pb, Py_ssize_t lo, Py_ssize_t hi, const floating* X, const floating* Y,
    const floating* sw, const floating* params, floating* G, floating* z,
) noexcept nogil:
    """:func:`_sparse_chunk_rows` with the index arrays of their integer type."""
    if pb.index64:
        return _sparse_chunk_rows(pb, lo, hi, X, <const int64_t*>pb.indices,
                                  <const int64_t*>pb.indptr, Y, sw, params, G, z)
    return _sparse_chunk_rows(pb, lo, hi, X, <const int32_t*>pb.indices,
                              <const int32_t*>pb.indptr, Y, sw, params, G, z)


cdef inline void _fold_scale(floating* params, Py_ssize_t n_weights, double scale) noexcept nogil:
    """``v <- s * v`` on the weights; the scale is then 1 (an O(d k) pass)."""
    cdef Py_ssize_t j
    if scale != 1.0:
        for j in range(n_weights):
            params[j] = <floating>(params[j] * scale)


cdef double _per_sample_sparse_rows(
    const Problem* pb, const floating* values, const index_t* indices, const index_t* indptr,
    const floating* Y, const floating* sw, floating* params, Py_ssize_t n_trained, double lr,
    double l2, floating* z, Py_ssize_t* done,
) noexcept nogil:
    """One epoch of per-sample plain SGD on CSR rows, O(nnz of the row) per update.

    The dense update is ``w <- w - lr * (x * dz + l2 * w)`` (``dz`` = dloss/dz at the old
    ``w``; intercepts unpenalized). Shrinking every weight by ``1 - lr * l2`` costs O(d)
    per sample, so the weights are kept as ``w = s * v`` with one scalar ``s``:

    1. ``z = s * (x . v) + b``, the loss and ``dz``, over the row's entries only;
    2. ``s <- s * (1 - lr * l2)``: the L2 shrink of every weight at once, O(1);
    3. ``v_J <- v_J - lr * dz * x_J / s`` on the row's columns J: then
       ``s' v'_J = (1 - lr l2) w_J - lr dz x_J``, the dense update; the other weights
       are only shrunk, which step 2 did;
    4. ``b <- b - lr * dz``.

    Exact in exact arithmetic, equal to the dense update up to rounding. When ``|s|``
    falls below SCALE_FLOOR, ``v <- s v, s <- 1`` (O(d k), about every 14 / (lr l2)
    updates); at the end of the epoch ``s`` is folded into ``v``, so every reader of the
    parameters (epoch loss, divergence test, snapshots) sees the plain weights. Without
    L2, ``s`` stays 1. Returns the summed (weighted) loss, and the rows done in ``done[0]``
    (fewer than n when interrupted: ``pb.stop_state`` is polled before each row; ``s`` is
    folded in then too).
    """
    cdef Py_ssize_t k = pb.k, bias = pb.d * pb.k
    cdef Py_ssize_t r, i, e, a, b, c, base
    cdef double scale = 1.0, decay = 1.0 - lr * l2, step, x
    cdef double loss_sum = 0.0
    done[0] = pb.n
    for r in range(pb.n):
        if fastgd_interrupted(pb.stop_state):
            done[0] = r
            break
        i = _row(pb, r)
        a, b = indptr[i], indptr[i + 1]
        _sparse_forward(values, indices, a, b, params, bias, k, scale, z)
        loss_sum += _sparse_row_loss(pb, i, Y, sw, z)
        if l2 > 0.0:
            scale *= decay
            if fabs(scale) < SCALE_FLOOR:
                _fold_scale(params, bias, scale)
                scale = 1.0
        if k == 1:
            step = lr * z[0] / scale
            for e in range(a, b):
                params[indices[e]] -= step * values[e]
        else:
            for e in range(a, b):
                x = values[e] / scale
                base = indices[e] * k
                for c in range(k):
                    params[base + c] -= lr * (x * z[c])
        for c in range(n_trained - bias):
            params[bias + c] -= lr * z[c]
    _fold_scale(params, bias, scale)
    return loss_sum


cdef double _per_sample_sparse(
    const Problem* pb, const floating* X, const floating* Y, const floating* sw,
    floating* params, Py_ssize_t n_trained, double lr, double l2, floating* z,
    Py_ssize_t* done,
) noexcept nogil:
    """:func:`_per_sample_sparse_rows` with the index arrays of their integer type."""
    if pb.index64:
        return _per_sample_sparse_rows(pb, X, <const int64_t*>pb.indices,
                                       <const int64_t*>pb.indptr, Y, sw, params, n_trained,
                                       lr, l2, z, done)
    return _per_sample_sparse_rows(pb, X, <const int32_t*>pb.indices, <const int32_t*>pb.indptr,
                                   Y, sw, params, n_trained, lr, l2, z, done)


# The first dense layer of a network on CSR rows (_network_kernels.pxi): a sparse x dense
# product forward and a scatter for the weight gradient, over the rows ``first, ...`` of
# ``order`` (NULL: the natural order).

cdef void _csr_rows_times(
    const floating* values, const index_t* indices, const index_t* indptr,
    const int64_t* order, Py_ssize_t first, Py_ssize_t rows, const floating* W,
    Py_ssize_t h, floating* out,
) noexcept nogil:
    """``out (rows, h) = X_rows @ W (d, h)``: per row, the sum over its entries of
    ``value * W[column, :]``, O(nnz * h), each term an h-wide multiply-add on a
    contiguous row of W."""
    cdef Py_ssize_t r, i, e, c
    cdef const floating* w
    cdef floating* o
    cdef floating x
    for r in range(rows):
        i = order[first + r] if order != NULL else first + r
        o = out + r * h
        for c in range(h):
            o[c] = 0
        for e in range(indptr[i], indptr[i + 1]):
            x = values[e]
            w = W + <Py_ssize_t>indices[e] * h
            for c in range(h):
                o[c] += x * w[c]


cdef void _csr_rows_scatter(
    const floating* values, const index_t* indices, const index_t* indptr,
    const int64_t* order, Py_ssize_t first, Py_ssize_t rows, const floating* D,
    Py_ssize_t h, floating* G,
) noexcept nogil:
    """``G (d, h) += X_rows^T @ D (rows, h)``: each entry adds ``value * D[r, :]`` to its
    column's row of G, row after row in order, so every sum has one fixed order of terms
    (repeated columns add up, as in the dense row they stand for)."""
    cdef Py_ssize_t r, i, e, c
    cdef const floating* dr
    cdef floating* g
    cdef floating x
    for r in range(rows):
        i = order[first + r] if order != NULL else first + r
        dr = D + r * h
        for e in range(indptr[i], indptr[i + 1]):
            x = values[e]
            g = G + <Py_ssize_t>indices[e] * h
            for c in range(h):
                g[c] += x * dr[c]
