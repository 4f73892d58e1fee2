# Included at the end of _cython_kernels.pyx: the network kernels live in the same
# extension module as the linear ones and use the same update of the flat parameter vector
# (_apply_update), epoch bookkeeping (_end_epoch), output losses (_add_row_loss,
# _add_weighted_row_loss) and optimizer unpacking (_unpack_optimizer), without copies.
# Multi-layer perceptrons: the computation of :mod:`fastgd.backends.numpy_network`.
#
# Layout and codes are those of :mod:`fastgd.specs.network` (the wrapper passes the offsets
# of :func:`fastgd.specs.network.layout`). A mini-batch of B rows is split into
# ``n_chunks = min(max_chunks, max(1, B // min_rows_per_chunk))`` contiguous row chunks, a
# partition that depends on B only. Every step whose rows are independent runs chunk by
# chunk (``prange`` over the chunks, one chunk per iteration, GIL released), with BLAS gemm
# on the chunk's rows (BLAS itself single-threaded: the wrapper limits it). Steps that need
# the whole batch - the batch-norm mean and variance in the forward pass, the sums of
# ``dU`` and ``dU * xhat`` in the backward pass, and the gradient - add per-chunk partial
# sums in chunk order, so results are bit-identical for any number of threads, and for the
# serial and the parallel path.
#
# One batch is a sequence of phases, each run over all chunks:
#
# - forward from layer l: (if layer l - 1 is normalized: normalize its rows with the batch
#   statistics, activate) then dense layers (gemm, bias - normalized layers have none -,
#   activation) up to the first
#   normalized hidden layer, whose column sums of ``z`` it leaves per chunk; or, without one,
#   through the output layer, its loss and dloss/dz (divided by B), and on into the
#   backward pass;
# - variance of a normalized layer: per-chunk column sums of ``(z - mean)**2``;
# - backward, per layer from the top: weight gradient ``A_prev^T @ dZ`` (gemm) and bias sums
#   into the chunk's row of the gradient buffer, ``dA_prev = dZ @ W^T`` (gemm), times
#   ``act'``; at a normalized layer the chunk's sums of ``dU * xhat`` and ``dU`` go to its
#   gamma and beta entries and the phase ends; the next backward phase turns ``dU`` into
#   ``dZ`` with the batch sums and continues down.
#
# ``act'`` is computed from the activation's output ``A`` (for ReLU and leaky ReLU with a
# slope >= 0, ``A > 0`` exactly when ``U > 0``), so ``U`` is never stored.
#
# CSR rows (SparseData) differ in the first layer only: its forward product is sparse x
# dense (_csr_rows_times of _sparse_rows.pxi, per chunk, O(nnz * h)), and its weight
# gradient a scatter over the batch's entries once per batch, after the chunks, serially
# in row order (_csr_first_gradient); every layer above is the dense code.

from libc.math cimport tanh, tanhf

# Activation codes and net_hyper positions of fastgd.specs.network (checked by the wrapper
# at import time).
cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_LEAKY_RELU = 2
    ACT_SIGMOID = 3
    ACT_TANH = 4

cdef enum:
    NET_LEAKY_SLOPE = 0
    NET_BN_MOMENTUM = 1
    NET_BN_EPS = 2
    N_NET_HYPER = 3

ACTIVATION_CODES = (ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU, ACT_SIGMOID, ACT_TANH)
NET_HYPER_POSITIONS = (NET_LEAKY_SLOPE, NET_BN_MOMENTUM, NET_BN_EPS, N_NET_HYPER)

cdef enum:
    PHASE_FORWARD = 0
    PHASE_VARIANCE = 1
    PHASE_BACKWARD = 2

cdef enum:
    # rows of the int64 table of parameter offsets (specs.network.layout), each of L entries
    OFF_WEIGHT = 0
    OFF_BIAS = 1
    OFF_GAMMA = 2
    OFF_BETA = 3
    OFF_RUNNING = 4
    # the table of scratch offsets: z (L), a (L), stats (L), then these four
    BUF_GATHER = 0
    BUF_DELTA0 = 1
    BUF_DELTA1 = 2
    BUF_REDUCED = 3
    # stride of the per-chunk losses (doubles): one cache line per chunk
    LOSS_STRIDE = 8

NETWORK_SCRATCH_SLOTS = (BUF_GATHER, BUF_DELTA0, BUF_DELTA1, BUF_REDUCED)


cdef struct Net:
    # The network, the data and the buffers of one kernel call. Typed arrays are void
    # pointers here (a struct cannot hold fused types); the functions below cast them to
    # the precision of their ``floating* buf`` argument.
    Py_ssize_t n_layers, d, m, k, n_params
    const int64_t* sizes  # L + 1 layer widths
    const int64_t* bn  # L flags; the output layer's is 0
    const int64_t* offsets  # (5, L) parameter offsets, rows OFF_*
    const int64_t* buffers  # scratch offsets: z (L), a (L), stats (L), then BUF_*
    int activation, loss_code
    double slope, momentum, eps
    const void* X
    const void* Y
    const void* sw  # sample weights by row, NULL if unweighted
    void* params
    # per-chunk gradient sums: chunk c sums parameter j at G + c * ld_g + j, for j >= first;
    # G[:n_params] receives the batch's gradient. Dense rows: first = 0, one row per chunk.
    # CSR rows: first = d * sizes[1], the end of W_1, whose gradient is scattered once per
    # batch into G[:first] (_csr_first_gradient), so the chunks' rows (ld_g >= n_params -
    # first) hold the other parameters and overlap in the W_1 part that no chunk writes
    void* G
    void* S  # (max_chunks, ld_s) per-chunk column sums of the batch-norm statistics
    Py_ssize_t ld_g, ld_s, first
    double* chunk_loss  # (max_chunks, LOSS_STRIDE): the loss sum of each chunk
    Py_ssize_t max_chunks, min_rows_per_chunk, parallel_min_work
    Py_ssize_t work_per_row  # multiply-adds per row of forward and backward
    int n_threads
    # the current batch: rows start:start + rows of the order
    Py_ssize_t start, rows, n_chunks
    bint shuffled
    const int64_t* order
    # CSR rows (_sparse_rows.pxi): X then points at the stored values; the index arrays
    # (int32 or int64, as the caller's matrix has them) are kept untyped here
    bint sparse, index64
    const void* indptr
    const void* indices


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline void _gemm(
    char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* a,
    Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating* c, Py_ssize_t ldc,
) noexcept nogil:
    """Column-major ``C (m, n) = op(A) @ op(B)`` (BLAS gemm, alpha 1, beta 0).

    A row-major product ``C = A @ B`` is the column-major ``C^T = B^T @ A^T``: the callers
    swap the operands.
    """
    cdef int im = <int>m, in_ = <int>n, ik = <int>k
    cdef int ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    cdef floating one = 1.0, zero = 0.0
    if floating is float:
        sgemm(&transa, &transb, &im, &in_, &ik, &one, <float*>a, &ilda, <float*>b, &ildb,
              &zero, c, &ildc)
    else:
        dgemm(&transa, &transb, &im, &in_, &ik, &one, <double*>a, &ilda, <double*>b, &ildb,
              &zero, c, &ildc)


cdef inline void _activate_row(
    floating* a, Py_ssize_t n, int code, double slope
) noexcept nogil:
    """``a = act(a)`` in place, as :func:`fastgd.backends.numpy_network.activate`."""
    cdef Py_ssize_t j
    cdef floating u, e
    if code == ACT_RELU:
        for j in range(n):
            # a NaN stays NaN, as np.maximum
            a[j] = 0.0 if a[j] < 0 else a[j]
    elif code == ACT_LEAKY_RELU:
        for j in range(n):
            u = a[j]
            # slope * u in double, rounded once, as NumPy's (slope * U).astype(U.dtype)
            a[j] = u if u > 0 else <floating>(slope * u)
    elif code == ACT_SIGMOID:
        for j in range(n):
            u = a[j]
            e = _exp(-_abs(u))  # never overflows
            a[j] = 1.0 / (1.0 + e) if u >= 0 else e / (1.0 + e)
    elif code == ACT_TANH:
        for j in range(n):
            a[j] = _tanh(a[j])


cdef inline void _times_slope_row(
    floating* g, const floating* a, Py_ssize_t n, int code, floating slope
) noexcept nogil:
    """``g *= act'(u)`` from ``a = act(u)``, as numpy_network.activation_slope."""
    cdef Py_ssize_t j
    cdef floating one = 1.0, zero = 0.0
    if code == ACT_RELU:
        for j in range(n):
            g[j] = g[j] * (one if a[j] > 0 else zero)  # 0 * NaN stays NaN
    elif code == ACT_LEAKY_RELU:
        for j in range(n):
            g[j] = g[j] * (one if a[j] > 0 else slope)
    elif code == ACT_SIGMOID:
        for j in range(n):
            g[j] = g[j] * (a[j] * (1.0 - a[j]))
    elif code == ACT_TANH:
        for j in range(n):
            g[j] = g[j] * (1.0 - a[j] * a[j])


cdef inline Py_ssize_t _chunk_lo(const Net* net, Py_ssize_t chunk) noexcept nogil:
    return (chunk * net.rows) // net.n_chunks


cdef inline floating* _z_rows(const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t lo) noexcept nogil:  # fmt: skip
    """Row ``lo`` of z of ``layer`` (normalized hidden layers: then x_hat; output: dz)."""
    return buf + net.buffers[layer] + lo * net.sizes[layer + 1]


cdef inline floating* _a_rows(const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t lo) noexcept nogil:  # fmt: skip
    """Row ``lo`` of the activations of hidden ``layer``."""
    return buf + net.buffers[net.n_layers + layer] + lo * net.sizes[layer + 1]


cdef inline floating* _stats(const Net* net, floating* buf, Py_ssize_t layer) noexcept nogil:
    """mean, var, inv_std (n_out each) of normalized hidden ``layer`` for this batch."""
    return buf + net.buffers[2 * net.n_layers + layer]


cdef inline floating* _slot(const Net* net, floating* buf, int which) noexcept nogil:
    return buf + net.buffers[3 * net.n_layers + which]


cdef inline floating* _delta_rows(const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t lo) noexcept nogil:  # fmt: skip
    """Row ``lo`` of dloss/da (then du, dz) of hidden ``layer``; two buffers alternate."""
    return _slot(net, buf, BUF_DELTA0 if layer % 2 == 0 else BUF_DELTA1) + lo * net.sizes[layer + 1]  # fmt: skip


cdef inline const floating* _input_rows(
    const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t lo, Py_ssize_t hi, bint gather
) noexcept nogil:
    """Row ``lo`` of the input of ``layer`` (compact rows of sizes[layer] entries).

    Layer 0 reads X directly in the natural order; a shuffled batch's rows are gathered into
    a contiguous buffer (``gather``: copy them now, in the forward pass).
    """
    cdef Py_ssize_t d = net.d, r
    cdef const floating* X = <const floating*>net.X
    cdef floating* dst
    if layer > 0:
        return _a_rows(net, buf, layer - 1, lo)
    if not net.shuffled:
        return X + (net.start + lo) * d
    dst = _slot(net, buf, BUF_GATHER) + lo * d
    if gather:
        for r in range(lo, hi):
            if r + PREFETCH_AHEAD < hi:
                _prefetch_row(X + net.order[net.start + r + PREFETCH_AHEAD] * d, d, False)
            memcpy(dst + (r - lo) * d, X + net.order[net.start + r] * d, d * sizeof(floating))
    return dst


cdef inline void _normalize_rows(
    const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t lo, Py_ssize_t hi
) noexcept nogil:
    """x_hat = (z - mean) * inv_std (stored over z), a = act(gamma * x_hat + beta)."""
    cdef Py_ssize_t n = net.sizes[layer + 1], r, j
    cdef const floating* params = <const floating*>net.params
    cdef const floating* gamma = params + net.offsets[OFF_GAMMA * net.n_layers + layer]
    cdef const floating* beta = params + net.offsets[OFF_BETA * net.n_layers + layer]
    cdef const floating* mean = _stats(net, buf, layer)
    cdef const floating* inv_std = mean + 2 * n
    cdef floating* z
    cdef floating* a
    cdef floating xh
    for r in range(lo, hi):
        z = _z_rows(net, buf, layer, r)
        a = _a_rows(net, buf, layer, r)
        for j in range(n):
            xh = (z[j] - mean[j]) * inv_std[j]
            z[j] = xh
            a[j] = gamma[j] * xh + beta[j]
        _activate_row(a, n, net.activation, net.slope)


cdef void _csr_first_forward(
    const Net* net, Py_ssize_t lo, Py_ssize_t rows, const floating* W, floating* z
) noexcept nogil:
    """CSR rows: ``z = X_rows @ W_1`` for rows lo:lo + rows of the batch."""
    cdef const int64_t* order = net.order if net.shuffled else NULL
    cdef const floating* values = <const floating*>net.X
    if net.index64:
        _csr_rows_times(values, <const int64_t*>net.indices, <const int64_t*>net.indptr,
                        order, net.start + lo, rows, W, net.sizes[1], z)
    else:
        _csr_rows_times(values, <const int32_t*>net.indices, <const int32_t*>net.indptr,
                        order, net.start + lo, rows, W, net.sizes[1], z)


cdef void _csr_first_gradient(const Net* net, floating* buf, floating* G) noexcept nogil:
    """CSR rows: ``G[W_1] = X_batch^T @ dz_1`` after the chunks' backward passes (which
    left dz_1 of every row in the first layer's dloss/du rows): zeroed, then scattered row
    after row, serially, so that the order of every sum is fixed by the data alone.
    (Per-chunk accumulators would need d x h entries each; the scatter costs O(nnz * h),
    as the forward product.)"""
    cdef const int64_t* order = net.order if net.shuffled else NULL
    cdef const floating* values = <const floating*>net.X
    cdef const floating* dz = (
        _delta_rows(net, buf, 0, 0) if net.n_layers > 1 else _z_rows(net, buf, 0, 0)
    )
    cdef floating* gw = G + net.offsets[OFF_WEIGHT * net.n_layers]
    memset(gw, 0, net.first * sizeof(floating))
    if net.index64:
        _csr_rows_scatter(values, <const int64_t*>net.indices, <const int64_t*>net.indptr,
                          order, net.start, net.rows, dz, net.sizes[1], gw)
    else:
        _csr_rows_scatter(values, <const int32_t*>net.indices, <const int32_t*>net.indptr,
                          order, net.start, net.rows, dz, net.sizes[1], gw)


cdef inline void _output_loss(
    const Net* net, floating* buf, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t chunk
) noexcept nogil:
    """Loss of the chunk's rows (into chunk_loss) and dz = dloss/dz / B over z."""
    cdef Py_ssize_t L = net.n_layers, k = net.k, m = net.m, r, i, c
    cdef const floating* Y = <const floating*>net.Y
    cdef const floating* sw = <const floating*>net.sw
    cdef floating rows = <floating>net.rows
    cdef floating* z
    cdef double loss = 0.0
    for r in range(lo, hi):
        i = net.order[net.start + r] if net.shuffled else net.start + r
        z = _z_rows(net, buf, L - 1, r)
        if sw == NULL:
            loss = _add_row_loss(loss, z, Y + i * m, net.loss_code, k)
        else:
            loss = _add_weighted_row_loss(loss, z, Y + i * m, net.loss_code, k, sw[i])
        for c in range(k):
            z[c] = z[c] / rows  # the gradient of the batch's mean loss
    net.chunk_loss[chunk * LOSS_STRIDE] = loss / k if net.loss_code == MSE else loss


cdef void _backward_chunk(
    const Net* net, floating* buf, Py_ssize_t layer, floating* dz, Py_ssize_t lo,
    Py_ssize_t hi, Py_ssize_t chunk,
) noexcept nogil:
    """Backward from ``layer``, whose dz rows lo:hi are ``dz``, down to layer 0 or to a
    normalized hidden layer (then its chunk sums of du * x_hat and du end the phase)."""
    cdef Py_ssize_t L = net.n_layers, rows = hi - lo, l, n_in, n_out, r, j
    cdef const floating* params = <const floating*>net.params
    cdef floating* G = <floating*>net.G + chunk * net.ld_g
    cdef floating slope = <floating>net.slope
    cdef const floating* a_in = NULL  # set for every layer above 0 (CSR rows: not at 0)
    cdef const floating* a
    cdef const floating* xh
    cdef floating* gb
    cdef floating* gg
    cdef floating* da
    l = layer
    while True:
        n_in, n_out = net.sizes[l], net.sizes[l + 1]
        if l > 0 or not net.sparse:  # (CSR rows: W_1's gradient is scattered per batch)
            a_in = _input_rows(net, buf, l, lo, hi, False)
            # weights: G_W (n_in, n_out) = A_in^T @ dZ
            _gemm(c'N', c'T', n_out, n_in, rows, dz, n_out, a_in, n_in,
                  G + net.offsets[OFF_WEIGHT * L + l], n_out)
        if not net.bn[l]:  # a normalized layer has no bias
            gb = G + net.offsets[OFF_BIAS * L + l]
            for j in range(n_out):
                gb[j] = dz[j]
            for r in range(1, rows):
                for j in range(n_out):
                    gb[j] += dz[r * n_out + j]
        if l == 0:
            return
        # dA_prev (rows, n_in) = dZ @ W^T, then du = dA_prev * act'(u_prev)
        da = _delta_rows(net, buf, l - 1, lo)
        _gemm(c'T', c'N', n_in, rows, n_out, params + net.offsets[OFF_WEIGHT * L + l], n_out,
              dz, n_out, da, n_in)
        a = a_in
        if net.activation != ACT_IDENTITY:
            for r in range(rows):
                _times_slope_row(da + r * n_in, a + r * n_in, n_in, net.activation, slope)
        l -= 1
        dz = da
        if net.bn[l]:
            xh = _z_rows(net, buf, l, lo)
            gg = G + net.offsets[OFF_GAMMA * L + l]
            gb = G + net.offsets[OFF_BETA * L + l]
            for j in range(n_in):
                gg[j] = da[j] * xh[j]
                gb[j] = da[j]
            for r in range(1, rows):
                for j in range(n_in):
                    gg[j] += da[r * n_in + j] * xh[r * n_in + j]
                    gb[j] += da[r * n_in + j]
            return


cdef void _forward_chunk(
    const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t chunk
) noexcept nogil:
    """The forward phase from ``layer`` on the chunk's rows (see the module docstring)."""
    cdef Py_ssize_t L = net.n_layers, l, n_in, n_out, r, j
    cdef Py_ssize_t lo = _chunk_lo(net, chunk), hi = _chunk_lo(net, chunk + 1)
    cdef Py_ssize_t rows = hi - lo
    cdef const floating* params = <const floating*>net.params
    cdef floating* S = <floating*>net.S + chunk * net.ld_s
    cdef const floating* a_in
    cdef const floating* b
    cdef floating* z
    if layer > 0 and net.bn[layer - 1]:
        _normalize_rows(net, buf, layer - 1, lo, hi)
    # the input rows (gathered now if shuffled); CSR rows are read by the product itself
    if net.sparse and layer == 0:
        a_in = NULL
    else:
        a_in = _input_rows(net, buf, layer, lo, hi, True)
    for l in range(layer, L):
        n_in, n_out = net.sizes[l], net.sizes[l + 1]
        if l == L - 1 or net.bn[l]:  # (the wrapper checks that the output's flag is 0)
            z = _z_rows(net, buf, l, lo)
        else:
            z = _a_rows(net, buf, l, lo)
        # Z (rows, n_out) = A_in @ W (+ b, except in normalized layers, which have no bias)
        if l == 0 and net.sparse:
            _csr_first_forward(net, lo, rows, params + net.offsets[OFF_WEIGHT * L], z)
        else:
            _gemm(c'N', c'N', n_out, rows, n_in, params + net.offsets[OFF_WEIGHT * L + l],
                  n_out, a_in, n_in, z, n_out)
        if net.bn[l]:  # the chunk's column sums of z, for the batch mean
            for j in range(n_out):
                S[j] = z[j]
            for r in range(1, rows):
                for j in range(n_out):
                    S[j] += z[r * n_out + j]
            return
        b = params + net.offsets[OFF_BIAS * L + l]
        if l == L - 1:
            for r in range(rows):
                for j in range(n_out):
                    z[r * n_out + j] += b[j]
            _output_loss(net, buf, lo, hi, chunk)
            _backward_chunk(net, buf, l, z, lo, hi, chunk)
            return
        for r in range(rows):
            for j in range(n_out):
                z[r * n_out + j] += b[j]
            _activate_row(z + r * n_out, n_out, net.activation, net.slope)
        a_in = z


cdef void _variance_chunk(
    const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t chunk
) noexcept nogil:
    """The chunk's column sums of (z - mean)**2 of normalized ``layer``."""
    cdef Py_ssize_t n = net.sizes[layer + 1], r, j
    cdef Py_ssize_t lo = _chunk_lo(net, chunk), hi = _chunk_lo(net, chunk + 1)
    cdef floating* S = <floating*>net.S + chunk * net.ld_s
    cdef const floating* mean = _stats(net, buf, layer)
    cdef const floating* z = _z_rows(net, buf, layer, lo)
    cdef floating e
    for j in range(n):
        S[j] = 0.0
    for r in range(hi - lo):
        for j in range(n):
            e = z[r * n + j] - mean[j]
            S[j] += e * e


cdef void _bn_backward_chunk(
    const Net* net, floating* buf, Py_ssize_t layer, Py_ssize_t chunk
) noexcept nogil:
    """dz of normalized ``layer`` from its du, then the backward pass below it.

    As numpy_network: with dx_hat = du * gamma,
    ``dz = inv_std / B * (B * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))``; the
    reduced slot holds inv_std / B, gamma * sum(du) and gamma * sum(du * x_hat).
    """
    cdef Py_ssize_t n = net.sizes[layer + 1], r, j
    cdef Py_ssize_t lo = _chunk_lo(net, chunk), hi = _chunk_lo(net, chunk + 1)
    cdef const floating* params = <const floating*>net.params
    cdef const floating* gamma = params + net.offsets[OFF_GAMMA * net.n_layers + layer]
    cdef const floating* c1 = _slot(net, buf, BUF_REDUCED)
    cdef const floating* c2 = c1 + n
    cdef const floating* c3 = c2 + n
    cdef const floating* xh = _z_rows(net, buf, layer, lo)
    cdef floating* dz = _delta_rows(net, buf, layer, lo)
    cdef floating rows = <floating>net.rows
    for r in range(hi - lo):
        for j in range(n):
            dz[r * n + j] = c1[j] * (
                rows * (dz[r * n + j] * gamma[j]) - c2[j] - xh[r * n + j] * c3[j]
            )
    _backward_chunk(net, buf, layer, dz, lo, hi, chunk)


cdef inline void _chunk_phase(
    const Net* net, floating* buf, int phase, Py_ssize_t layer, Py_ssize_t chunk
) noexcept nogil:
    if phase == PHASE_FORWARD:
        _forward_chunk(net, buf, layer, chunk)
    elif phase == PHASE_VARIANCE:
        _variance_chunk(net, buf, layer, chunk)
    else:
        _bn_backward_chunk(net, buf, layer, chunk)


cdef void _run_phase(
    const Net* net, floating* buf, int phase, Py_ssize_t layer, bint parallel
) noexcept nogil:
    """One phase over all chunks of the batch: in parallel (one chunk per iteration,
    static schedule), or serially in chunk order; each chunk writes only its own rows."""
    cdef Py_ssize_t chunk
    if parallel:
        for chunk in prange(net.n_chunks, num_threads=net.n_threads, schedule="static",
                            chunksize=1):
            _chunk_phase(net, buf, phase, layer, chunk)
    else:
        for chunk in range(net.n_chunks):
            _chunk_phase(net, buf, phase, layer, chunk)


cdef inline void _sum_chunks(
    const floating* rows, Py_ssize_t ld, Py_ssize_t n_chunks, Py_ssize_t n, floating* out
) noexcept nogil:
    """``out[j] = rows[0, j] + rows[1, j] + ...`` in chunk order."""
    cdef Py_ssize_t c, j
    cdef const floating* row
    for j in range(n):
        out[j] = rows[j]
    for c in range(1, n_chunks):
        row = rows + c * ld
        for j in range(n):
            out[j] += row[j]


cdef inline double _sum_squares(const floating* g, Py_ssize_t n) noexcept nogil:
    """sum_j g[j]**2 in double, in eight interleaved partial sums (one running sum is a
    chain of dependent additions, about four cycles per entry)."""
    cdef double s[8]
    cdef double v
    cdef Py_ssize_t j, i
    cdef Py_ssize_t n8 = n - n % 8
    for i in range(8):
        s[i] = 0.0
    for j in range(0, n8, 8):
        for i in range(8):
            v = g[j + i]
            s[i] += v * v
    for j in range(n8, n):
        v = g[j]
        s[0] += v * v
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef double _network_batch(
    Net* net, floating* buf, Py_ssize_t start, Py_ssize_t stop, floating* running
) noexcept nogil:
    """Loss sum of rows start:stop of the order and their mean gradient in row 0 of G.

    Moves the running averages (``running``, or NULL: not updated) toward this batch's
    statistics, as numpy_network._update_running.
    """
    cdef Py_ssize_t L = net.n_layers, B = stop - start, layer, l, n, j, c
    cdef floating* G = <floating*>net.G
    cdef floating* S = <floating*>net.S
    cdef const floating* params = <const floating*>net.params
    cdef floating* mean
    cdef floating* var
    cdef floating* inv_std
    cdef floating* red
    cdef floating* rm
    cdef const floating* gamma
    cdef floating Bf = <floating>B, unbias
    cdef double momentum = net.momentum, loss
    cdef bint parallel
    net.start, net.rows = start, B
    net.n_chunks = min(net.max_chunks, max(1, B // net.min_rows_per_chunk))
    parallel = net.n_chunks > 1 and B * net.work_per_row >= net.parallel_min_work
    # forward, phase by phase: each ends at a normalized hidden layer or runs on through
    # the output layer into the backward pass
    layer = 0
    while True:
        _run_phase(net, buf, PHASE_FORWARD, layer, parallel)
        l = layer
        while l < L - 1 and not net.bn[l]:
            l += 1
        if l == L - 1:
            break
        n = net.sizes[l + 1]
        mean = _stats(net, buf, l)
        var = mean + n
        inv_std = var + n
        _sum_chunks(S, net.ld_s, net.n_chunks, n, mean)
        for j in range(n):
            mean[j] = mean[j] / Bf
        _run_phase(net, buf, PHASE_VARIANCE, l, parallel)
        _sum_chunks(S, net.ld_s, net.n_chunks, n, var)
        for j in range(n):
            var[j] = var[j] / Bf  # biased
            # in double, rounded once, as NumPy's (1.0 / np.sqrt(var + eps)).astype(dtype)
            inv_std[j] = <floating>(1.0 / sqrt(<double>var[j] + net.eps))
        if running != NULL:
            rm = running + net.offsets[OFF_RUNNING * L + l]
            unbias = <floating>(B / (B - 1.0)) if B > 1 else 1.0
            for j in range(n):
                rm[j] = <floating>((1.0 - momentum) * rm[j] + momentum * mean[j])
                rm[n + j] = <floating>(
                    (1.0 - momentum) * rm[n + j] + momentum * <floating>(var[j] * unbias)
                )
        layer = l + 1
    # backward through the normalized hidden layers, from the top
    red = _slot(net, buf, BUF_REDUCED)
    l = L - 2
    while l >= 0:
        if not net.bn[l]:
            l -= 1
            continue
        n = net.sizes[l + 1]
        gamma = params + net.offsets[OFF_GAMMA * L + l]
        inv_std = _stats(net, buf, l) + 2 * n
        # sum(du * x_hat) and sum(du): the chunks' gamma and beta gradient entries
        _sum_chunks(G + net.offsets[OFF_GAMMA * L + l], net.ld_g, net.n_chunks, n, red + 2 * n)
        _sum_chunks(G + net.offsets[OFF_BETA * L + l], net.ld_g, net.n_chunks, n, red + n)
        for j in range(n):
            red[j] = inv_std[j] / Bf
            red[n + j] = gamma[j] * red[n + j]
            red[2 * n + j] = gamma[j] * red[2 * n + j]
        _run_phase(net, buf, PHASE_BACKWARD, l, parallel)
        l -= 1
    # the gradient: the chunks' rows added in chunk order (CSR rows: W_1's scattered)
    _sum_chunks(G + net.first, net.ld_g, net.n_chunks, net.n_params - net.first, G + net.first)
    if net.sparse:
        _csr_first_gradient(net, buf, G)
    loss = 0.0
    for c in range(net.n_chunks):
        loss += net.chunk_loss[c * LOSS_STRIDE]
    return loss


cdef Net _net(
    const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] weights,
    floating[::1] params, const int64_t[::1] sizes, const int64_t[::1] batch_norm,
    int activation, const double[::1] net_hyper, int loss_code, const int64_t[:, ::1] offsets,
    const int64_t[::1] buffers, floating[:, ::1] G, floating[:, ::1] S,
    double[:, ::1] chunk_loss, Py_ssize_t max_chunks, Py_ssize_t min_rows_per_chunk,
    Py_ssize_t parallel_min_work, int n_threads,
):
    cdef Net net
    net.n_layers = sizes.shape[0] - 1
    net.d, net.m, net.k = X.shape[1], Y.shape[1], sizes[net.n_layers]
    net.n_params = params.shape[0]
    net.sizes, net.bn = &sizes[0], &batch_norm[0]
    net.offsets, net.buffers = &offsets[0, 0], &buffers[0]
    net.activation, net.loss_code = activation, loss_code
    net.slope = net_hyper[NET_LEAKY_SLOPE]
    net.momentum, net.eps = net_hyper[NET_BN_MOMENTUM], net_hyper[NET_BN_EPS]
    net.X, net.Y = &X[0, 0], &Y[0, 0]
    net.sw = &weights[0] if weights.shape[0] > 0 else NULL
    net.params = &params[0]
    net.G, net.S = &G[0, 0], &S[0, 0]
    net.ld_g, net.ld_s = G.shape[1], S.shape[1]
    net.chunk_loss = &chunk_loss[0, 0]
    net.max_chunks, net.min_rows_per_chunk = max_chunks, min_rows_per_chunk
    net.parallel_min_work, net.n_threads = parallel_min_work, n_threads
    _set_work_per_row(&net, net.d)
    net.start, net.rows, net.n_chunks = 0, 0, 1
    net.shuffled = False
    net.order = NULL
    net.sparse, net.index64, net.indptr, net.indices, net.first = False, False, NULL, NULL, 0
    return net


cdef void _set_work_per_row(Net* net, Py_ssize_t inputs) noexcept nogil:
    """Multiply-adds per row (the parallel threshold): forward and weight-gradient
    products of every layer, input gradients above layer 0, whose rows have ``inputs``
    entries (dense: d; CSR: the stored entries per row)."""
    cdef Py_ssize_t l
    net.work_per_row = 2 * inputs * net.sizes[1]
    for l in range(1, net.n_layers):
        net.work_per_row += 3 * net.sizes[l] * net.sizes[l + 1]


cdef Py_ssize_t _net_csr(
    Net* net, const index_t[::1] indices, const index_t[::1] indptr, Py_ssize_t n_features
) noexcept nogil:
    """Make ``net`` read CSR rows when ``indptr`` is not empty (dense rows: both index
    arrays empty). Returns the number of rows."""
    cdef Py_ssize_t n = indptr.shape[0] - 1
    if indptr.shape[0] == 0:
        return 0
    net.sparse, net.index64 = True, index_t is int64_t
    net.d, net.first = n_features, n_features * net.sizes[1]
    net.indptr, net.indices = &indptr[0], (&indices[0] if indices.shape[0] > 0 else NULL)
    _set_work_per_row(net, (indptr[n] + n - 1) // n)  # stored entries per row, rounded up
    return n


def network_loss_and_gradient(
    const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] weights,
    const index_t[::1] indices, const index_t[::1] indptr, Py_ssize_t n_features,
    floating[::1] params, const int64_t[::1] sizes, const int64_t[::1] batch_norm,
    int activation, const double[::1] net_hyper, int loss_code, const int64_t[:, ::1] offsets,
    const int64_t[::1] buffers, floating[::1] scratch, floating[:, ::1] G, floating[:, ::1] S,
    double[:, ::1] chunk_loss, floating[::1] grad, Py_ssize_t max_chunks,
    Py_ssize_t min_rows_per_chunk, Py_ssize_t parallel_min_work, int n_threads,
):
    """Mean loss of all rows as one batch (training mode); the gradient into ``grad``.

    Scratch as in :func:`network_train_epochs`, for all rows; CSR rows as there.
    """
    cdef Net net = _net(X, Y, weights, params, sizes, batch_norm, activation, net_hyper,
                        loss_code, offsets, buffers, G, S, chunk_loss, max_chunks,
                        min_rows_per_chunk, parallel_min_work, n_threads)
    cdef Py_ssize_t n = _net_csr(&net, indices, indptr, n_features)  # CSR rows, or 0
    cdef double loss
    if n == 0:
        n = X.shape[0]
    with nogil:
        loss = _network_batch(&net, &scratch[0], 0, n, <floating*>NULL)
        memcpy(&grad[0], &G[0, 0], net.n_params * sizeof(floating))
    return loss / n


cdef Py_ssize_t _network_train_epochs(
    Net* net, floating* buf, floating* w, floating* running, Py_ssize_t n_running,
    const int64_t[:, ::1] orders, const double[::1] lr_epochs, Py_ssize_t n_epochs,
    Py_ssize_t n, Py_ssize_t batch_size, const Optimizer* opt, floating* state,
    Py_ssize_t state_size, int64_t* step_count, double tol, double n_iter_no_change,
    double* stop_state, double* history, double* grad_norms, Py_ssize_t ld_norms,
    floating* start_params, floating* start_running, floating* start_state, int* status,
) noexcept nogil:
    """The loop of :func:`network_train_epochs`; returns the number of epochs run."""
    cdef Py_ssize_t L = net.n_layers, p = net.n_params
    # the weight matrices come first, the last one ends the penalized entries
    cdef Py_ssize_t n_weights = net.offsets[OFF_WEIGHT * L + L - 1] + net.sizes[L - 1] * net.k
    cdef Py_ssize_t epoch, start, stop, l, n_batches, w0
    cdef floating* G = <floating*>net.G
    cdef double* norms
    cdef double loss_sum
    cdef int64_t start_step
    cdef int end
    net.shuffled = orders.shape[0] > 0
    for epoch in range(n_epochs):
        memcpy(start_params, w, p * sizeof(floating))
        if n_running > 0:
            memcpy(start_running, running, n_running * sizeof(floating))
        if state_size > 0:
            memcpy(start_state, state, state_size * sizeof(floating))
        start_step = step_count[0]
        if net.shuffled:
            net.order = &orders[epoch % orders.shape[0], 0]
        norms = grad_norms + epoch * ld_norms
        for l in range(L):
            norms[l] = 0.0
        loss_sum = 0.0
        n_batches = 0
        start = 0
        end = -1
        while start < n:
            if fastgd_interrupted(stop_state):  # Ctrl-C: polled before each batch
                end = INTERRUPTED
                break
            stop = min(start + batch_size, n)
            loss_sum += _network_batch(net, buf, start, stop, running)
            # squared norm of each layer's weight gradient (the batch's mean gradient)
            for l in range(L):
                w0 = net.offsets[OFF_WEIGHT * L + l]
                norms[l] += _sum_squares(G + w0, net.sizes[l] * net.sizes[l + 1])
            n_batches += 1
            # G holds the mean gradient already (dz was divided by the batch size)
            _apply_update(opt, w, G, 1.0, state, p, n_weights, p, step_count, lr_epochs[epoch],
                          net.n_threads, net.parallel_min_work)
            start = stop
        if end != INTERRUPTED:
            for l in range(L):
                norms[l] = sqrt(norms[l] / n_batches)
            end = _end_epoch(opt, w, p, n_weights, loss_sum / n, &history[epoch], stop_state,
                             tol, n_iter_no_change)
        # interrupted: the state after the last whole update, unless it is not finite
        if end == DIVERGED or (end == INTERRUPTED and not _all_finite(w, p)):
            memcpy(w, start_params, p * sizeof(floating))
            if n_running > 0:
                memcpy(running, start_running, n_running * sizeof(floating))
            if state_size > 0:
                memcpy(state, start_state, state_size * sizeof(floating))
            step_count[0] = start_step
        if end == INTERRUPTED:  # the interrupted epoch is not counted as done
            status[0] = end
            return epoch
        if end >= 0:
            status[0] = end
            return epoch + 1
    status[0] = MAX_EPOCHS
    return n_epochs


def network_train_epochs(
    const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] weights,
    const index_t[::1] indices, const index_t[::1] indptr, Py_ssize_t n_features,
    floating[::1] params, floating[::1] running, const int64_t[:, ::1] orders,
    const double[::1] lr_epochs, Py_ssize_t n_epochs, const int64_t[::1] sizes,
    const int64_t[::1] batch_norm, int activation, const double[::1] net_hyper, int loss_code,
    Py_ssize_t batch_size, int opt_code, const double[::1] hyper, floating[:, ::1] opt_state,
    int64_t[::1] step_count, double tol, double n_iter_no_change, double[::1] stop_state,
    double[::1] history, double[:, ::1] grad_norms, const int64_t[:, ::1] offsets,
    const int64_t[::1] buffers, floating[::1] scratch, floating[:, ::1] G, floating[:, ::1] S,
    double[:, ::1] chunk_loss, floating[::1] start_params, floating[::1] start_running,
    floating[:, ::1] start_state, Py_ssize_t max_chunks, Py_ssize_t min_rows_per_chunk,
    Py_ssize_t parallel_min_work, int n_threads,
):
    """Run the epochs with the GIL released; returns ``(n_done, status)``.

    Arguments as in :func:`fastgd.backends.numpy_network.network_train_epochs`, plus
    ``offsets`` (5, L), the parameter offsets of :func:`fastgd.specs.network.layout`
    (weight, bias, gamma, beta, running), and scratch from the wrapper: ``buffers``, the
    offsets in ``scratch`` of each layer's z, a and batch statistics (3 L entries, -1 where
    unused), then of the gathered input rows, the two backward buffers and the reduced
    batch-norm sums (NETWORK_SCRATCH_SLOTS); ``G`` (>= max_chunks, >= n_params), ``S``
    (>= max_chunks, >= widest hidden layer), ``chunk_loss`` (>= max_chunks, LOSS_STRIDE),
    and copies for the divergence restore. The wrapper checks shapes and dtypes.

    CSR rows (``indptr`` not empty): ``X`` is the (nnz, 1) column of stored values,
    ``indices`` and ``indptr`` the index arrays and ``n_features`` the columns; ``G``
    then holds ``n_features * sizes[1]`` entries for W_1's gradient and, from there,
    max_chunks rows of ``ld_g = G.shape[1] >= n_params - n_features * sizes[1]`` (see
    ``Net.G``). Dense rows: both index arrays empty.
    """
    cdef Net net = _net(X, Y, weights, params, sizes, batch_norm, activation, net_hyper,
                        loss_code, offsets, buffers, G, S, chunk_loss, max_chunks,
                        min_rows_per_chunk, parallel_min_work, n_threads)
    cdef Py_ssize_t n = _net_csr(&net, indices, indptr, n_features)  # CSR rows, or 0
    cdef Optimizer opt = _unpack_optimizer(opt_code, hyper)
    cdef int status = MAX_EPOCHS
    cdef Py_ssize_t n_done
    cdef Py_ssize_t state_size = opt_state.shape[0] * opt_state.shape[1]
    # empty arrays (no batch norm, no optimizer state) give their data pointer, never read
    cdef floating* run = &running[0] if running.shape[0] > 0 else NULL
    cdef floating* start_run = &start_running[0] if running.shape[0] > 0 else NULL
    cdef floating* state = &opt_state[0, 0] if state_size > 0 else NULL
    cdef floating* saved_state = &start_state[0, 0] if state_size > 0 else NULL
    if n == 0:
        n = X.shape[0]
    if orders.shape[0] > 0:  # the orders' rows (early stopping: the training rows only)
        n = orders.shape[1]
    with nogil:
        n_done = _network_train_epochs(
            &net, &scratch[0], &params[0], run, running.shape[0], orders, lr_epochs,
            n_epochs, n, batch_size, &opt, state, state_size, &step_count[0], tol,
            n_iter_no_change, &stop_state[0], &history[0], &grad_norms[0, 0],
            grad_norms.shape[1], &start_params[0], start_run, saved_state, &status,
        )
    return n_done, status
