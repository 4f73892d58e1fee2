# Included at the end of _kernels.pyx (after _network_kernels.pxi): the recurrent kernels
# use the update (_apply_update), epoch bookkeeping (_end_epoch), optimizer unpacking, the
# gemm wrapper and the head activations of the other kernels, without copies.
#
# Recurrent networks: the computation of :mod:`fastgd.backends.numpy.recurrent` with the
# algorithm of the Numba kernels (:mod:`fastgd.backends.numba.recurrent`, whose docstring
# describes it): a batch is split into row chunks (a partition depending on the batch size
# and the hidden size only); each chunk, one per iteration of a ``prange`` with the GIL
# released, gathers its sequences time-major, runs every layer forward over all steps, the
# head and the loss, then backpropagation through time, and writes its gradient into its
# own row of G; the rows are added in chunk order, so results are bit-identical for any
# number of threads. Workspace blocks are laid out [t][row][unit] (offsets from
# :func:`fastgd.backends.recurrent_layout.workspace`); matrix products go to BLAS gemm
# (one thread: the wrapper limits it), except the two per-step products of float32
# kernels (register tiles over a packed W_hh, below).

# cell codes of fastgd.specs.recurrent (checked by the wrapper at import time)
cdef enum:
    CELL_LSTM = 0
    CELL_GRU = 1
    CELL_TANH = 2

# fixed slots of the workspace offsets ``ws``; per-layer blocks follow (see _ws_layer)
cdef enum:
    WS_XS = 0
    WS_D_IN0 = 1
    WS_D_IN1 = 2
    WS_TMP = 3
    WS_DH = 4
    WS_DC = 5
    WS_TMP_H = 6
    WS_HEAD_D0 = 7
    WS_HEAD_D1 = 8
    WS_W_T = 9
    WS_FIXED = 10

cdef enum:
    WS_H = 0
    WS_GATES = 1
    WS_DAH = 2
    WS_C = 3
    WS_AUX = 4
    WS_HEAD_A = 5

RECURRENT_CELL_CODES = (CELL_LSTM, CELL_GRU, CELL_TANH)
RECURRENT_WS_SLOTS = (WS_XS, WS_D_IN0, WS_D_IN1, WS_TMP, WS_DH, WS_DC, WS_TMP_H, WS_HEAD_D0,
                      WS_HEAD_D1, WS_W_T, WS_FIXED)


cdef struct Rnn:
    int cell, head_act, sequence, loss_code, n_threads
    Py_ssize_t parallel_min_work  # of the parameter update
    Py_ssize_t f, h, L, ng, n_head, n_weights, n_params, min_rows, max_chunks
    Py_ssize_t chunk_size, ld_g, R, T, y_steps, m
    # parameter offsets: w_ih (L), w_hh (L), b_ih (L), b_hh (L), head_w (H), head_b (H),
    # head sizes (H + 1)
    const int64_t* par
    # workspace offsets: the WS_FIXED slots, then H, gates, dah, C, aux (L each), head_a (H)
    const int64_t* ws
    void* buf
    void* G
    double* chunk_loss
    int64_t* lens
    const void* X
    const void* Y
    const void* weights
    bint weighted
    const int64_t* lengths
    # the current batch
    const int64_t* order
    bint shuffled
    Py_ssize_t start, rows, n_chunks
    double scale


cdef inline Py_ssize_t _w_ih(const Rnn* rn, Py_ssize_t l) noexcept nogil:
    return rn.par[l]


cdef inline Py_ssize_t _w_hh(const Rnn* rn, Py_ssize_t l) noexcept nogil:
    return rn.par[rn.L + l]


cdef inline Py_ssize_t _b_ih(const Rnn* rn, Py_ssize_t l) noexcept nogil:
    return rn.par[2 * rn.L + l]


cdef inline Py_ssize_t _b_hh(const Rnn* rn, Py_ssize_t l) noexcept nogil:
    return rn.par[3 * rn.L + l]


cdef inline Py_ssize_t _head_w(const Rnn* rn, Py_ssize_t j) noexcept nogil:
    return rn.par[4 * rn.L + j]


cdef inline Py_ssize_t _head_b(const Rnn* rn, Py_ssize_t j) noexcept nogil:
    return rn.par[4 * rn.L + rn.n_head + j]


cdef inline Py_ssize_t _head_size(const Rnn* rn, Py_ssize_t j) noexcept nogil:
    return rn.par[4 * rn.L + 2 * rn.n_head + j]


cdef inline Py_ssize_t _ws_layer(const Rnn* rn, int block, Py_ssize_t l) noexcept nogil:
    return rn.ws[WS_FIXED + block * rn.L + l]


cdef inline Py_ssize_t _ws_head(const Rnn* rn, Py_ssize_t j) noexcept nogil:
    return rn.ws[WS_FIXED + WS_HEAD_A * rn.L + j]


cdef inline Py_ssize_t _rnn_row(const Rnn* rn, Py_ssize_t j) noexcept nogil:
    """Index in X of batch row ``j``."""
    return rn.order[rn.start + j] if rn.shuffled else rn.start + j


cdef inline void _mm(
    char ta, char tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
    Py_ssize_t lda, const floating* B, Py_ssize_t ldb, floating* C, Py_ssize_t ldc,
) noexcept nogil:
    """Row-major ``C (M, N) = op(A) @ op(B)`` (``op(A)`` is (M, K)): the column-major
    ``C^T = op(B)^T @ op(A)^T``, the same transpose flags, the operands swapped."""
    _gemm(tb, ta, N, M, K, B, ldb, A, lda, C, ldc)


# the rational tanh of float32 kernels (fastgd.specs.recurrent.TANH_P, checked by the wrapper)
RECURRENT_TANH = (9.0, (0.9999999975404305, 0.1308602606724582, 0.0031061615795704126, 1.117604580804453e-05, -2.0305364695052594e-08, 5.312259544516103e-11, -8.566427456752759e-14), (1.0, 0.46419355066248247, 0.024504089558936484, 0.00025492788649432354))


# tanh as x P(x^2) / Q(x^2) in float arithmetic (float constants: a double one would
# promote the whole evaluation to double, half as many lanes per vector instruction):
# multiply-adds, a division and clamps, so that the loops calling it vectorize
cdef extern from *:
    """
    static inline float fastgd_tanh_rational(float x) {
        float x2, p, q, y;
        x = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
        x2 = x * x;
        p = ((((((-8.566427456752759e-14f * x2 + 5.312259544516103e-11f) * x2
                 + -2.0305364695052594e-08f) * x2 + 1.117604580804453e-05f) * x2
               + 0.0031061615795704126f) * x2 + 0.1308602606724582f) * x2
             + 0.9999999975404305f) * x;
        q = ((0.00025492788649432354f * x2 + 0.024504089558936484f) * x2
             + 0.46419355066248247f) * x2 + 1.0f;
        y = p / q;
        return y < -1.0f ? -1.0f : (y > 1.0f ? 1.0f : y);
    }
    """
    float fastgd_tanh_rational(float x) noexcept nogil


cdef inline floating _th(floating x) noexcept nogil:
    """tanh: the rational function in float32, libm's in float64 (as the reference)."""
    if floating is float:
        return fastgd_tanh_rational(x)
    else:
        return tanh(x)


cdef inline floating _sig(floating a) noexcept nogil:
    if floating is float:
        return <float>0.5 + <float>0.5 * fastgd_tanh_rational(<float>0.5 * a)
    else:
        # 1 / (1 + exp(-a)): exp overflows to inf for a << 0, giving exactly 0, never NaN
        return 1.0 / (1.0 + _exp(-a))


cdef void _col_sums(const floating* block, Py_ssize_t rows, Py_ssize_t n, floating* out) noexcept nogil:
    """``out[j] = sum of block[:, j]``, rows added in order."""
    cdef Py_ssize_t q, j
    for j in range(n):
        out[j] = 0.0
    for q in range(rows):
        for j in range(n):
            out[j] += block[q * n + j]


# ---------------------------------------------------------------------------------------
# the per-step recurrent products


# float32 kernels compute a step's two products C = A B (B = W_hh^T forward, W_hh
# backward) with their own register tiles over B packed once per layer and batch, not
# BLAS (which packs W_hh again at every call): the constants of fastgd.specs.recurrent
# (checked by the wrapper), as in the Numba kernels. The w block of the workspace starts
# with one tile of C (a partial last strip goes through it), then holds W_hh.
cdef enum:
    STRIP = 16
    TILE_ROWS = 6
    W_TAIL = STRIP * TILE_ROWS

RECURRENT_PACKED = (STRIP, TILE_ROWS)


# Packing: P[(s K + k) 16 + q] = B[k, 16 s + q] = W[k sk + (16 s + q) sc], 0 past column N.
# A tile: R rows of C (ldc apart) = R rows of A (K apart) times the strip p; each entry
# of C is a lane of one of 2 R vectors of 8 floats (registers) and sums over k in order
# by fused multiply-adds; at each k the strip gives two vector loads and each row of A
# one value, broadcast (GCC/Clang vector extensions; plain loops with the same order of
# terms elsewhere).
cdef extern from *:
    """
    static void fastgd_pack_strips(Py_ssize_t K, Py_ssize_t N, const float *W, Py_ssize_t sk,
                                   Py_ssize_t sc, float *P) {
        for (Py_ssize_t s = 0; s * 16 < N; s++)
            for (Py_ssize_t k = 0; k < K; k++)
                for (Py_ssize_t q = 0; q < 16; q++)
                    P[(s * K + k) * 16 + q] = s * 16 + q < N ? W[k * sk + (s * 16 + q) * sc] : 0.0f;
    }

    #if defined(__GNUC__)
    typedef float fastgd_v8 __attribute__((vector_size(32), aligned(4)));
    #define FASTGD_TILE(R)                                                                  \\
    static inline void fastgd_tile##R(Py_ssize_t K, const float *A, const float *p,        \\
                                      float *C, Py_ssize_t ldc) {                          \\
        fastgd_v8 acc[R][2];                                                               \\
        int i;                                                                             \\
        for (i = 0; i < R; i++) acc[i][0] = acc[i][1] = (fastgd_v8){0.0f};                \\
        for (Py_ssize_t k = 0; k < K; k++) {                                               \\
            const fastgd_v8 b0 = *(const fastgd_v8 *)(p + 16 * k);                        \\
            const fastgd_v8 b1 = *(const fastgd_v8 *)(p + 16 * k + 8);                    \\
            _Pragma("GCC unroll 8")                                                        \\
            for (i = 0; i < R; i++) {                                                      \\
                const float a = A[i * K + k];                                              \\
                acc[i][0] += a * b0;                                                       \\
                acc[i][1] += a * b1;                                                       \\
            }                                                                              \\
        }                                                                                  \\
        for (i = 0; i < R; i++) {                                                          \\
            *(fastgd_v8 *)(C + i * ldc) = acc[i][0];                                       \\
            *(fastgd_v8 *)(C + i * ldc + 8) = acc[i][1];                                   \\
        }                                                                                  \\
    }
    #else
    #define FASTGD_TILE(R)                                                                  \\
    static void fastgd_tile##R(Py_ssize_t K, const float *A, const float *p, float *C,     \\
                               Py_ssize_t ldc) {                                           \\
        for (int i = 0; i < R; i++)                                                        \\
            for (int q = 0; q < 16; q++) {                                                 \\
                float s = 0.0f;                                                            \\
                for (Py_ssize_t k = 0; k < K; k++) s += A[i * K + k] * p[16 * k + q];     \\
                C[i * ldc + q] = s;                                                        \\
            }                                                                              \\
    }
    #endif
    FASTGD_TILE(6)
    FASTGD_TILE(4)
    FASTGD_TILE(2)
    FASTGD_TILE(1)

    /* rows 0 .. M - 1 of C (ldc apart) = A (M, K) times one strip: tiles of 6, then 4, 2, 1 */
    static void fastgd_strip_rows(Py_ssize_t M, Py_ssize_t K, const float *A, const float *p,
                                  float *C, Py_ssize_t ldc) {
        Py_ssize_t i = 0;
        for (; i + 6 <= M; i += 6) fastgd_tile6(K, A + i * K, p, C + i * ldc, ldc);
        if (i + 4 <= M) { fastgd_tile4(K, A + i * K, p, C + i * ldc, ldc); i += 4; }
        if (i + 2 <= M) { fastgd_tile2(K, A + i * K, p, C + i * ldc, ldc); i += 2; }
        if (i < M) fastgd_tile1(K, A + i * K, p, C + i * ldc, ldc);
    }

    /* C (M, N) = A (M, K) B, B packed after the tile at the start of w */
    static void fastgd_packed_matmul(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A,
                                     float *w, float *C) {
        const float *P = w + 96;
        Py_ssize_t s, full = N / 16, i0, i, q, rows;
        for (s = 0; s < full; s++) fastgd_strip_rows(M, K, A, P + s * K * 16, C + s * 16, N);
        if (full * 16 < N)
            for (i0 = 0; i0 < M; i0 += 6) {
                rows = M - i0 < 6 ? M - i0 : 6;
                fastgd_strip_rows(rows, K, A + i0 * K, P + full * K * 16, w, 16);
                for (i = 0; i < rows; i++)
                    for (q = 0; q < N - full * 16; q++) C[(i0 + i) * N + full * 16 + q] = w[i * 16 + q];
            }
    }
    """
    void fastgd_pack_strips(Py_ssize_t K, Py_ssize_t N, const float* W, Py_ssize_t sk,
                            Py_ssize_t sc, float* P) noexcept nogil
    void fastgd_packed_matmul(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                              float* w, float* C) noexcept nogil


cdef void _transpose_into(const floating* W, Py_ssize_t rows, Py_ssize_t cols,
                          floating* W_t) noexcept nogil:
    """``W_t`` (cols, rows) = ``W`` (rows, cols) transposed, row-major."""
    cdef Py_ssize_t q, u
    for q in range(rows):
        for u in range(cols):
            W_t[u * rows + q] = W[q * cols + u]


cdef inline void _prepare_product(const floating* W_hh, Py_ssize_t gh, Py_ssize_t n,
                                  bint forward, floating* w) noexcept nogil:
    """Lay out ``W_hh`` (gh, n) in the w block for a layer's per-step products: float32,
    packed in strips (``B = W_hh^T`` forward, ``W_hh`` backward); float64, ``W_hh^T``."""
    if floating is float:
        if forward:
            fastgd_pack_strips(n, gh, W_hh, 1, n, w + W_TAIL)
        else:
            fastgd_pack_strips(gh, n, W_hh, n, 1, w + W_TAIL)
    else:
        _transpose_into(W_hh, gh, n, w + W_TAIL)


cdef inline void _step_product(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                               floating* w, floating* C, bint forward) noexcept nogil:
    """A step's ``C (M, N) = A (M, K) @ B``, ``B = W_hh^T`` (``forward``) or ``W_hh``,
    laid out in ``w`` by :func:`_prepare_product` (float64: BLAS on ``W_hh^T``)."""
    if floating is float:
        fastgd_packed_matmul(M, N, K, A, w, C)
    elif forward:
        _mm(c'N', c'N', M, N, K, A, K, w + W_TAIL, N, C, N)
    else:
        _mm(c'N', c'T', M, N, K, A, K, w + W_TAIL, K, C, N)


# ---------------------------------------------------------------------------------------
# forward


cdef Py_ssize_t _rnn_gather(Rnn* rn, floating* buf, int64_t* lens, Py_ssize_t lo,
                            Py_ssize_t r) noexcept nogil:
    """Lengths of the chunk's rows and its inputs time-major; returns ``T_c``."""
    cdef const floating* X = <const floating*>rn.X
    cdef floating* xs = buf + rn.ws[WS_XS]
    cdef Py_ssize_t j, t, u, i, longest = 1, f = rn.f
    for j in range(r):
        lens[j] = rn.lengths[_rnn_row(rn, lo + j)]
        if lens[j] > longest:
            longest = lens[j]
    for j in range(r):
        i = _rnn_row(rn, lo + j)
        for t in range(longest):
            for u in range(f):
                xs[(t * r + j) * f + u] = X[(i * rn.T + t) * f + u]
    return longest


cdef void _rnn_step(const Rnn* rn, const floating* params, floating* buf, Py_ssize_t l,
                    Py_ssize_t t, Py_ssize_t r, const int64_t* lens) noexcept nogil:
    """Gates and new state of step ``t`` of every row (``tmp`` holds ``h_{t-1} W_hh^T``)."""
    cdef Py_ssize_t n = rn.h, gh = rn.ng * rn.h, j, u, q
    cdef floating* gates = buf + _ws_layer(rn, WS_GATES, l) + t * r * gh
    cdef floating* H = buf + _ws_layer(rn, WS_H, l)
    cdef floating* C = buf + _ws_layer(rn, WS_C, l)
    cdef floating* aux = buf + _ws_layer(rn, WS_AUX, l) + t * r * n
    cdef const floating* tmp = buf + rn.ws[WS_TMP]
    cdef const floating* bi = params + _b_ih(rn, l)
    cdef const floating* bh = params + _b_hh(rn, l)
    cdef floating* g
    cdef const floating* p
    cdef floating* h_prev
    cdef floating* h_new
    cdef floating* c_new
    cdef floating* tc
    cdef const floating* c_prev
    cdef floating rg, zg, hn, cand
    cdef floating one = 1.0  # not the double 1.0: float32 kernels stay in float
    for j in range(r):
        g, p = gates + j * gh, tmp + j * gh
        h_prev, h_new = H + (t * r + j) * n, H + ((t + 1) * r + j) * n
        if t >= lens[j]:  # padding: carry the state
            for u in range(n):
                h_new[u] = h_prev[u]
                if rn.cell == CELL_LSTM:
                    C[((t + 1) * r + j) * n + u] = C[(t * r + j) * n + u]
            continue
        if rn.cell == CELL_LSTM:
            for q in range(gh):
                g[q] = g[q] + p[q] + (bi[q] + bh[q])
            # one simple loop per activation (no branch per unit): they vectorize
            for q in range(2 * n):
                g[q] = _sig(g[q])
            for q in range(2 * n, 3 * n):
                g[q] = _th(g[q])
            for q in range(3 * n, gh):
                g[q] = _sig(g[q])
            # the state update in three simple loops, so that each vectorizes (one loop
            # writing C, aux and h stayed scalar: the pointers might overlap)
            c_prev, c_new, tc = C + (t * r + j) * n, C + ((t + 1) * r + j) * n, aux + j * n
            for u in range(n):
                c_new[u] = g[n + u] * c_prev[u] + g[u] * g[2 * n + u]
            for u in range(n):
                tc[u] = _th(c_new[u])
            for u in range(n):
                h_new[u] = g[3 * n + u] * tc[u]
        elif rn.cell == CELL_GRU:
            for u in range(n):
                rg = _sig(g[u] + bi[u] + p[u] + bh[u])
                zg = _sig(g[n + u] + bi[n + u] + p[n + u] + bh[n + u])
                hn = p[2 * n + u] + bh[2 * n + u]
                cand = _th(g[2 * n + u] + bi[2 * n + u] + rg * hn)
                g[u], g[n + u], g[2 * n + u] = rg, zg, cand
                aux[j * n + u] = hn
                h_new[u] = (one - zg) * cand + zg * h_prev[u]
        else:
            for u in range(n):
                h_new[u] = _th(g[u] + bi[u] + p[u] + bh[u])


cdef floating* _rnn_input(const Rnn* rn, floating* buf, Py_ssize_t l, Py_ssize_t r) noexcept nogil:
    """Inputs of layer ``l``, (T_c r, n_in): gathered X, or the states of the layer below
    (from step 0 on, past the zero initial state)."""
    if l == 0:
        return buf + rn.ws[WS_XS]
    return buf + _ws_layer(rn, WS_H, l - 1) + r * rn.h


cdef void _rnn_layer_forward(const Rnn* rn, const floating* params, floating* buf, Py_ssize_t l,
                             Py_ssize_t r, const int64_t* lens, Py_ssize_t longest) noexcept nogil:
    cdef Py_ssize_t n = rn.h, gh = rn.ng * rn.h, t, q, u
    cdef Py_ssize_t n_in = rn.f if l == 0 else n
    cdef floating* H = buf + _ws_layer(rn, WS_H, l)
    cdef floating* tmp = buf + rn.ws[WS_TMP]
    cdef const floating* W_hh = params + _w_hh(rn, l)
    cdef floating* w = buf + rn.ws[WS_W_T]  # W_hh for the per-step products
    _mm(c'N', c'T', longest * r, gh, n_in, _rnn_input(rn, buf, l, r), n_in,
        params + _w_ih(rn, l), n_in, buf + _ws_layer(rn, WS_GATES, l), gh)
    for q in range(r * n):
        H[q] = 0.0
        if rn.cell == CELL_LSTM:
            buf[_ws_layer(rn, WS_C, l) + q] = 0.0
    _prepare_product(W_hh, gh, n, True, w)
    for t in range(longest):
        _step_product(r, gh, n, H + t * r * n, w, tmp, True)
        _rnn_step(rn, params, buf, l, t, r, lens)


# ---------------------------------------------------------------------------------------
# head and loss


cdef double _rnn_row_loss(floating* z, const floating* y, Py_ssize_t k, double w, int loss_code,
                          double scale) noexcept nogil:
    """Weighted loss of one output row; ``z`` becomes ``w * dloss/dz * scale``."""
    cdef Py_ssize_t c, label
    cdef floating e, v, zmax, z_label
    cdef double total = 0.0, s
    if loss_code == MSE:
        for c in range(k):
            e = z[c] - y[c]
            total += e * e
            z[c] = (2.0 / k) * e * w * scale
        return w * total / k
    if loss_code == BINARY_CROSS_ENTROPY:
        v = z[0]
        e = _exp(-_abs(v))  # never overflows
        if v >= 0:
            total = v + _log1p(e) - y[0] * v
            z[0] = (1.0 / (1.0 + e) - y[0]) * w * scale
        else:
            total = _log1p(e) - y[0] * v
            z[0] = (e / (1.0 + e) - y[0]) * w * scale
        return w * total
    label = <Py_ssize_t>y[0]
    z_label, zmax = z[label], z[0]
    for c in range(1, k):
        if z[c] > zmax:
            zmax = z[c]
    s = 0.0
    for c in range(k):
        z[c] = _exp(z[c] - zmax)
        s += z[c]
    for c in range(k):
        z[c] = z[c] / s * w * scale
    z[label] -= w * scale
    return w * (zmax + log(s) - z_label)


cdef floating* _rnn_head_input(const Rnn* rn, floating* buf, Py_ssize_t r,
                               Py_ssize_t longest) noexcept nogil:
    """The top layer's last states (r, h), or every step's (T_c r, h)."""
    cdef floating* top = buf + _ws_layer(rn, WS_H, rn.L - 1)
    if rn.sequence:
        return top + r * rn.h
    return top + longest * r * rn.h


cdef double _rnn_head_loss(const Rnn* rn, const floating* params, floating* buf,
                           const int64_t* lens, Py_ssize_t lo, Py_ssize_t r,
                           Py_ssize_t longest) noexcept nogil:
    """Head forward and the loss of the chunk's rows; the output becomes dloss/dz."""
    cdef Py_ssize_t N = longest * r if rn.sequence else r
    cdef Py_ssize_t j, q, c, n_in, n_out, t, jr, i, k = _head_size(rn, rn.n_head)
    cdef floating* U = _rnn_head_input(rn, buf, r, longest)
    cdef floating* Z
    cdef const floating* Y = <const floating*>rn.Y
    cdef const floating* wts = <const floating*>rn.weights
    cdef double loss = 0.0, w
    for j in range(rn.n_head):
        n_in, n_out = _head_size(rn, j), _head_size(rn, j + 1)
        Z = buf + _ws_head(rn, j)
        _mm(c'N', c'T', N, n_out, n_in, U, n_in, params + _head_w(rn, j), n_in, Z, n_out)
        for q in range(N):
            for c in range(n_out):
                Z[q * n_out + c] += params[_head_b(rn, j) + c]
            if j < rn.n_head - 1:
                _activate_row(Z + q * n_out, n_out, rn.head_act, 0.0)
        U = Z
    for q in range(N):
        if rn.sequence:
            t, jr = q // r, q % r
        else:
            t, jr = 0, q
        if rn.sequence and t >= lens[jr]:  # a padded step: no loss, no gradient
            for c in range(k):
                U[q * k + c] = 0.0
            continue
        i = _rnn_row(rn, lo + jr)
        w = wts[i] if rn.weighted else 1.0
        loss += _rnn_row_loss(U + q * k, Y + (i * rn.y_steps + t) * rn.m, k, w, rn.loss_code,
                              rn.scale)
    return loss


cdef floating* _rnn_head_backward(const Rnn* rn, const floating* params, floating* G,
                                  floating* buf, Py_ssize_t r, Py_ssize_t longest) noexcept nogil:
    """Head gradients into the chunk's G row; returns dloss/d(head input) (N, h)."""
    cdef Py_ssize_t N = longest * r if rn.sequence else r
    cdef Py_ssize_t j, q, n_in, n_out
    cdef floating* dz = buf + _ws_head(rn, rn.n_head - 1)
    cdef floating* U
    cdef floating* du
    for j in range(rn.n_head - 1, -1, -1):
        n_in, n_out = _head_size(rn, j), _head_size(rn, j + 1)
        U = _rnn_head_input(rn, buf, r, longest) if j == 0 else buf + _ws_head(rn, j - 1)
        _mm(c'T', c'N', n_out, n_in, N, dz, n_out, U, n_in, G + _head_w(rn, j), n_in)
        _col_sums(dz, N, n_out, G + _head_b(rn, j))
        du = buf + rn.ws[WS_HEAD_D0 if j % 2 == 0 else WS_HEAD_D1]
        _mm(c'N', c'N', N, n_in, n_out, dz, n_out, params + _head_w(rn, j), n_in, du, n_in)
        if j > 0:
            for q in range(N):
                _times_slope_row(du + q * n_in, U + q * n_in, n_in, rn.head_act, 0.0)
        dz = du
    return dz


# ---------------------------------------------------------------------------------------
# backpropagation through time


cdef void _rnn_grad_step(const Rnn* rn, floating* buf, Py_ssize_t l, Py_ssize_t t, Py_ssize_t r,
                         const int64_t* lens, floating* dh, floating* dc) noexcept nogil:
    """Gate gradients of step ``t`` over the stored gates (GRU: the hidden side in
    ``dah``); ``dh`` keeps the part that does not go through ``W_hh``."""
    cdef Py_ssize_t n = rn.h, gh = rn.ng * rn.h, j, u, q
    cdef floating* g
    cdef floating* gd
    cdef floating* H = buf + _ws_layer(rn, WS_H, l)
    cdef const floating* C = buf + _ws_layer(rn, WS_C, l)
    cdef const floating* aux = buf + _ws_layer(rn, WS_AUX, l) + t * r * n
    cdef floating i_, f_, g_, o_, tc, d, rg, zg, cand, da_n, da_r, da_z, h
    cdef floating one = 1.0  # not the double 1.0: float32 kernels stay in float
    for j in range(r):
        g = buf + _ws_layer(rn, WS_GATES, l) + (t * r + j) * gh
        gd = buf + _ws_layer(rn, WS_DAH, l) + (t * r + j) * gh
        if t >= lens[j]:
            for q in range(gh):
                g[q] = 0.0
                gd[q] = 0.0
            continue
        if rn.cell == CELL_LSTM:
            # three loops of few arrays each, so that each vectorizes; dc holds
            # dloss/dc_t between the first and the last
            for u in range(n):
                o_, tc = g[3 * n + u], aux[j * n + u]
                dc[j * n + u] = dc[j * n + u] + dh[j * n + u] * o_ * (one - tc * tc)
            for u in range(n):
                o_, tc = g[3 * n + u], aux[j * n + u]
                g[3 * n + u] = dh[j * n + u] * tc * o_ * (one - o_)
                dh[j * n + u] = 0.0
            for u in range(n):
                i_, f_, g_, d = g[u], g[n + u], g[2 * n + u], dc[j * n + u]
                g[u] = d * g_ * i_ * (one - i_)
                g[n + u] = d * C[(t * r + j) * n + u] * f_ * (one - f_)
                g[2 * n + u] = d * i_ * (one - g_ * g_)
                dc[j * n + u] = d * f_
        elif rn.cell == CELL_GRU:
            for u in range(n):
                rg, zg, cand = g[u], g[n + u], g[2 * n + u]
                d = dh[j * n + u]
                da_n = d * (one - zg) * (one - cand * cand)
                da_r = da_n * aux[j * n + u] * rg * (one - rg)
                da_z = d * (H[(t * r + j) * n + u] - cand) * zg * (one - zg)
                g[u], g[n + u], g[2 * n + u] = da_r, da_z, da_n
                gd[u], gd[n + u], gd[2 * n + u] = da_r, da_z, da_n * rg
                dh[j * n + u] = d * zg
        else:
            for u in range(n):
                h = H[((t + 1) * r + j) * n + u]
                g[u] = dh[j * n + u] * (one - h * h)
                dh[j * n + u] = 0.0


cdef void _rnn_layer_backward(const Rnn* rn, const floating* params, floating* G, floating* buf,
                              Py_ssize_t l, Py_ssize_t r, const int64_t* lens,
                              Py_ssize_t longest, const floating* d_top) noexcept nogil:
    """BPTT through layer ``l``; ``d_top``: dloss/dh from above, (r, h) for the last state
    of the top layer with output "last", else one row per step (T_c r, h)."""
    cdef Py_ssize_t n = rn.h, gh = rn.ng * rn.h, t, q
    cdef Py_ssize_t n_in = rn.f if l == 0 else n
    cdef bint per_step = rn.sequence or l < rn.L - 1
    cdef floating* dh = buf + rn.ws[WS_DH]
    cdef floating* dc = buf + rn.ws[WS_DC]
    cdef floating* tmp_h = buf + rn.ws[WS_TMP_H]
    cdef floating* w = buf + rn.ws[WS_W_T]
    cdef floating* dAh = buf + _ws_layer(rn, WS_DAH, l)
    cdef floating* dA = buf + _ws_layer(rn, WS_GATES, l)
    _prepare_product(params + _w_hh(rn, l), gh, n, False, w)  # the layers share w
    for q in range(r * n):
        dh[q] = 0.0 if per_step else d_top[q]
        dc[q] = 0.0
    for t in range(longest - 1, -1, -1):
        if per_step:
            for q in range(r * n):
                dh[q] += d_top[t * r * n + q]
        _rnn_grad_step(rn, buf, l, t, r, lens, dh, dc)
        _step_product(r, n, gh, dAh + t * r * gh, w, tmp_h, False)  # dA_h W_hh
        for q in range(r * n):
            dh[q] += tmp_h[q]
    # every step's weight gradients in one product each, the bias sums, the layer below
    _mm(c'T', c'N', gh, n_in, longest * r, dA, gh, _rnn_input(rn, buf, l, r), n_in,
        G + _w_ih(rn, l), n_in)
    _mm(c'T', c'N', gh, n, longest * r, dAh, gh, buf + _ws_layer(rn, WS_H, l), n,
        G + _w_hh(rn, l), n)
    _col_sums(dA, longest * r, gh, G + _b_ih(rn, l))
    if rn.cell == CELL_GRU:
        _col_sums(dAh, longest * r, gh, G + _b_hh(rn, l))
    else:  # LSTM, tanh: dA_h is dA, the two bias gradients are equal
        memcpy(G + _b_hh(rn, l), G + _b_ih(rn, l), gh * sizeof(floating))
    if l > 0:
        _mm(c'N', c'N', longest * r, n, gh, dA, gh, params + _w_ih(rn, l), n,
            buf + rn.ws[WS_D_IN0 if l % 2 == 0 else WS_D_IN1], n)


# ---------------------------------------------------------------------------------------
# a chunk, a batch, the epochs


cdef void _rnn_chunk(Rnn* rn, const floating* params, Py_ssize_t chunk) noexcept nogil:
    """Forward, loss and BPTT of one chunk's sequences into its rows of the scratch."""
    cdef Py_ssize_t lo = (chunk * rn.rows) // rn.n_chunks
    cdef Py_ssize_t r = ((chunk + 1) * rn.rows) // rn.n_chunks - lo
    cdef floating* buf = (<floating*>rn.buf) + chunk * rn.chunk_size
    cdef floating* G = (<floating*>rn.G) + chunk * rn.ld_g
    cdef int64_t* lens = rn.lens + chunk * rn.R
    cdef Py_ssize_t longest, l
    cdef const floating* d_top
    longest = _rnn_gather(rn, buf, lens, lo, r)
    for l in range(rn.L):
        _rnn_layer_forward(rn, params, buf, l, r, lens, longest)
    rn.chunk_loss[chunk * 8] = _rnn_head_loss(rn, params, buf, lens, lo, r, longest)
    d_top = _rnn_head_backward(rn, params, G, buf, r, longest)
    for l in range(rn.L - 1, -1, -1):
        _rnn_layer_backward(rn, params, G, buf, l, r, lens, longest, d_top)
        d_top = buf + rn.ws[WS_D_IN0 if l % 2 == 0 else WS_D_IN1]


cdef double _rnn_batch(Rnn* rn, const floating* params, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    """The batch ``start:stop``: its loss times its rows; G row 0 gets its mean gradient."""
    cdef Py_ssize_t chunk, j, c
    cdef floating* G = <floating*>rn.G
    cdef double loss = 0.0
    cdef int64_t total
    rn.start, rn.rows = start, stop - start
    rn.n_chunks = min(rn.max_chunks, max(1, rn.rows // rn.min_rows))
    total = rn.rows
    if rn.sequence:
        total = 0
        for j in range(rn.rows):
            total += rn.lengths[_rnn_row(rn, j)]
    rn.scale = 1.0 / total
    if rn.n_threads > 1 and rn.n_chunks > 1:
        for chunk in prange(rn.n_chunks, num_threads=rn.n_threads, schedule="static",
                            chunksize=1):
            _rnn_chunk(rn, params, chunk)
    else:
        for chunk in range(rn.n_chunks):
            _rnn_chunk(rn, params, chunk)
    for c in range(1, rn.n_chunks):  # in chunk order: the deterministic sum
        for j in range(rn.n_params):
            G[j] += G[c * rn.ld_g + j]
    for c in range(rn.n_chunks):
        loss += rn.chunk_loss[c * 8]
    return loss * rn.scale * rn.rows


cdef void _rnn_layer_norms(const Rnn* rn, const floating* G, double* norms) noexcept nogil:
    """``norms[i] += |weight gradient of layer i|**2``: [W_ih, W_hh] of each recurrent
    layer (adjacent), then each head layer's W."""
    cdef Py_ssize_t i, j, first, last
    for i in range(rn.L + rn.n_head):
        if i < rn.L:
            first, last = _w_ih(rn, i), _w_hh(rn, i) + rn.ng * rn.h * rn.h
        else:
            j = i - rn.L
            first = _head_w(rn, j)
            last = first + _head_size(rn, j) * _head_size(rn, j + 1)
        norms[i] += _sum_squares(G + first, last - first)


cdef Py_ssize_t _rnn_train_epochs(
    Rnn* rn, floating* w, const int64_t[:, ::1] orders, const double[::1] lr_epochs,
    Py_ssize_t n_epochs, Py_ssize_t n, Py_ssize_t batch_size, const Optimizer* opt,
    floating* state, Py_ssize_t state_size, int64_t* step_count, double tol,
    double n_iter_no_change, double* stop_state, double* history, double* grad_norms,
    Py_ssize_t ld_norms, floating* start_params, floating* start_state, int* status,
) noexcept nogil:
    cdef Py_ssize_t p = rn.n_params, epoch, start, stop, l, n_batches
    cdef floating* G = <floating*>rn.G
    cdef double* norms
    cdef double loss_sum
    cdef int64_t start_step
    cdef int end
    rn.shuffled = orders.shape[0] > 0
    for epoch in range(n_epochs):
        memcpy(start_params, w, p * sizeof(floating))
        if state_size > 0:
            memcpy(start_state, state, state_size * sizeof(floating))
        start_step = step_count[0]
        if rn.shuffled:
            rn.order = &orders[epoch % orders.shape[0], 0]
        norms = grad_norms + epoch * ld_norms
        for l in range(ld_norms):
            norms[l] = 0.0
        loss_sum, n_batches, start = 0.0, 0, 0
        end = -1
        while start < n:
            if fastgd_interrupted(stop_state):  # Ctrl-C: polled before each batch
                end = INTERRUPTED
                break
            stop = min(start + batch_size, n)
            loss_sum += _rnn_batch(rn, w, start, stop)
            _rnn_layer_norms(rn, G, norms)
            n_batches += 1
            _apply_update(opt, w, G, 1.0, state, p, rn.n_weights, p, step_count,
                          lr_epochs[epoch], rn.n_threads, rn.parallel_min_work)
            start = stop
        if end != INTERRUPTED:
            for l in range(ld_norms):
                norms[l] = sqrt(norms[l] / n_batches)
            end = _end_epoch(opt, w, p, rn.n_weights, loss_sum / n, &history[epoch],
                             stop_state, tol, n_iter_no_change)
        # interrupted: the state after the last whole update, unless it is not finite
        if end == DIVERGED or (end == INTERRUPTED and not _all_finite(w, p)):
            memcpy(w, start_params, p * sizeof(floating))
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


cdef Rnn _rnn(
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y, const floating[::1] weights,
    const int64_t[::1] lengths, const int64_t[::1] model, const int64_t[::1] par,
    const int64_t[::1] ws, floating[:, ::1] buf, floating[:, ::1] G, double[:, ::1] chunk_loss,
    int64_t[:, ::1] lens, int n_threads,
):
    """The struct of a call; ``model`` holds cell, f, h, L, G, head layers, head
    activation, sequence, loss code, n_weights, n_params, minimum chunk rows, max_chunks,
    the parallel threshold of the update."""
    cdef Rnn rn
    rn.cell, rn.f, rn.h, rn.L, rn.ng = model[0], model[1], model[2], model[3], model[4]
    rn.n_head, rn.head_act, rn.sequence, rn.loss_code = model[5], model[6], model[7], model[8]
    rn.n_weights, rn.n_params, rn.min_rows, rn.max_chunks = model[9], model[10], model[11], model[12]
    rn.parallel_min_work = model[13]
    rn.n_threads = n_threads
    rn.par, rn.ws = &par[0], &ws[0]
    rn.buf, rn.G, rn.chunk_loss, rn.lens = &buf[0, 0], &G[0, 0], &chunk_loss[0, 0], &lens[0, 0]
    rn.chunk_size, rn.ld_g, rn.R = buf.shape[1], G.shape[1], lens.shape[1]
    rn.X, rn.Y, rn.lengths = &X[0, 0, 0], &Y[0, 0, 0], &lengths[0]
    rn.T, rn.y_steps, rn.m = X.shape[1], Y.shape[1], Y.shape[2]
    rn.weighted = weights.shape[0] > 0
    rn.weights = NULL
    if rn.weighted:
        rn.weights = &weights[0]
    rn.shuffled, rn.order = False, NULL
    return rn


def recurrent_loss_and_gradient(
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y, const floating[::1] weights,
    const int64_t[::1] lengths, floating[::1] params, const int64_t[::1] model,
    const int64_t[::1] par, const int64_t[::1] ws, floating[:, ::1] buf, floating[:, ::1] G,
    double[:, ::1] chunk_loss, int64_t[:, ::1] lens, floating[::1] grad, int n_threads,
):
    """Mean loss over all sequences (one batch) and its gradient into ``grad``."""
    cdef Rnn rn = _rnn(X, Y, weights, lengths, model, par, ws, buf, G, chunk_loss, lens,
                       n_threads)
    cdef double loss
    with nogil:
        loss = _rnn_batch(&rn, &params[0], 0, X.shape[0])
        memcpy(&grad[0], &G[0, 0], rn.n_params * sizeof(floating))
    return loss / X.shape[0]


def recurrent_train_epochs(
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y, const floating[::1] weights,
    const int64_t[::1] lengths, floating[::1] params, const int64_t[:, ::1] orders,
    const double[::1] lr_epochs, Py_ssize_t n_epochs, const int64_t[::1] model,
    const int64_t[::1] par, const int64_t[::1] ws, Py_ssize_t batch_size, int opt_code,
    const double[::1] hyper, floating[:, ::1] opt_state, int64_t[::1] step_count, double tol,
    double n_iter_no_change, double[::1] stop_state, double[::1] history,
    double[:, ::1] grad_norms, floating[:, ::1] buf, floating[:, ::1] G,
    double[:, ::1] chunk_loss, int64_t[:, ::1] lens, floating[::1] start_params,
    floating[:, ::1] start_state, int n_threads,
):
    """Run the epochs with the GIL released; returns ``(n_done, status)``. The wrapper
    (:mod:`fastgd.backends.cython.recurrent`) checks shapes and dtypes."""
    cdef Rnn rn = _rnn(X, Y, weights, lengths, model, par, ws, buf, G, chunk_loss, lens,
                       n_threads)
    cdef Optimizer opt = _unpack_optimizer(opt_code, hyper)
    cdef int status = MAX_EPOCHS
    cdef Py_ssize_t n_done
    cdef Py_ssize_t state_size = opt_state.shape[0] * opt_state.shape[1]
    cdef floating* state = &opt_state[0, 0] if state_size > 0 else NULL
    cdef floating* saved_state = &start_state[0, 0] if state_size > 0 else NULL
    cdef double* norms = &grad_norms[0, 0] if grad_norms.shape[0] > 0 else NULL
    # the orders' rows (early stopping: the training rows only)
    cdef Py_ssize_t n = orders.shape[1] if orders.shape[0] > 0 else X.shape[0]
    with nogil:
        n_done = _rnn_train_epochs(
            &rn, &params[0], orders, lr_epochs, n_epochs, n, batch_size, &opt, state,
            state_size, &step_count[0], tol, n_iter_no_change, &stop_state[0], &history[0],
            norms, grad_norms.shape[1], &start_params[0], saved_state, &status,
        )
    return n_done, status
