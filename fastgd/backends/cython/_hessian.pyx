# Compiler directives (boundscheck, wraparound, initializedcheck, cdivision, language_level)
# are set in setup.py.
"""Cython + OpenMP kernel of the Newton pass of the linear family (float32 and float64 X).

The algorithm of :mod:`fastgd.backends.numba.hessian`: ``prange`` over the fixed row
chunks; each chunk walks its rows block by block. One output: each row is read from
memory once (:func:`_one_output`: three sweeps over a block in the per-core cache) and
the block's Gram product ``S^T S`` of the rows scaled by
``sqrt(h)`` runs on register tiles, or on BLAS's syrk for rows of more than
TILE_MAX_COLUMNS values (:func:`_block_gram`). Several outputs: float64 rows in place,
float32 rows copied to float64, and BLAS (``scipy.linalg.cython_blas``, single-threaded:
the wrapper limits it) computes the decision values ``Z = X~ P`` (``X~ = [X, 1]``, gemm),
then, after the per-row loss, derivative ``D`` and curvature weights ``h`` (loops), adds
``X~^T D`` to the chunk's gradient sum and ``X~^T diag(h_p) X~`` to its Hessian sums.
These products run on the ``d`` columns of X; the intercept's row of ``X~`` is summed
apart. A diagonal class block (``h >= 0``) is the symmetric rank-m update ``S^T S`` of
the rows scaled by ``sqrt(h)`` (dsyrk: half the flops of a general product; only the
row-major upper triangle is written); an off-diagonal softmax block (``h`` of either
sign) is a dgemm of ``h``-scaled rows with ``X~``. The wrapper adds the chunk sums in
chunk order, so results do not depend on the thread count.

BLAS is column-major: a row-major (r, c) array is its column-major (c, r) transpose, so
``Z = X~ P`` is computed as ``Z^T = P^T X~^T`` and so on (each call says which).
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport exp, fabs, log, log1p, sqrt
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport dgemm, dgemv, dsyrk, ssyrk

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define fastgd_hessian_prefetch(p) __builtin_prefetch((p), 0, 3)
    #else
    #define fastgd_hessian_prefetch(p) ((void)0)
    #endif
    """
    void fastgd_prefetch "fastgd_hessian_prefetch"(const void* p) noexcept nogil

cdef enum:
    # rows ahead of the current one requested from memory in a sweep of decision values
    # (4 as in _kernels.pyx; 12, Numba's distance, measured no faster here), and the line
    # size the requests step by
    PREFETCH_AHEAD = 4
    CACHE_LINE_BYTES = 64

# An ILP64 (64-bit integer sizes) dsyrk, set by the wrapper to NumPy's bundled OpenBLAS's
# where it has one (faster on these Gram products, see fastgd.backends.blas); NULL: SciPy's.
ctypedef void (*dsyrk64_t)(char*, char*, int64_t*, int64_t*, double*, double*, int64_t*,
                           double*, double*, int64_t*) noexcept nogil
cdef dsyrk64_t _dsyrk64 = NULL


ctypedef void (*ssyrk64_t)(char*, char*, int64_t*, int64_t*, float*, float*, int64_t*,
                           float*, float*, int64_t*) noexcept nogil
cdef ssyrk64_t _ssyrk64 = NULL


def use_dsyrk64(size_t address):
    """Use the ILP64 dsyrk at ``address`` for the Gram products (0: SciPy's dsyrk)."""
    global _dsyrk64
    _dsyrk64 = <dsyrk64_t>address


def use_ssyrk64(size_t address):
    """Use the ILP64 ssyrk at ``address`` for the float32 Gram products of rows wider
    than TILE_MAX_COLUMNS (0: SciPy's)."""
    global _ssyrk64
    _ssyrk64 = <ssyrk64_t>address

# The kernel's want_h: no Hessian, Gram products in float64, or in float32 (each row
# block's product, added into the float64 chunk sums: Newton(hessian_dtype="float32")).
cdef enum:
    NO_HESSIAN = 0
    GRAM64 = 1
    GRAM32 = 2

HESSIAN_MODES = (NO_HESSIAN, GRAM64, GRAM32)

# Gram products of rows of at most this many values run on register tiles, wider rows on
# BLAS (fastgd.backends.hessian_layout.TILE_MAX_COLUMNS; the wrapper checks they agree).
cdef enum:
    TILE_MAX_COLUMNS = 256

TILE_COLUMNS = TILE_MAX_COLUMNS

# Loss codes of fastgd.specs.losses (the wrapper checks them at import time).
cdef enum:
    MSE = 0
    BCE = 1
    CE = 2

LOSS_CODES = (MSE, BCE, CE)


cdef inline double _one_terms(double v, double y, int loss_code, double* D,
                             double* h) noexcept nogil:
    """Loss of one output ``v`` with target ``y`` (MSE or binary CE); writes its
    derivative D[0] and curvature h[0]."""
    cdef double e, pr
    if loss_code == MSE:
        e = v - y
        D[0] = 2.0 * e
        h[0] = 2.0
        return e * e
    # e = exp(-|v|) <= 1: no overflow; p (1 - p) = e / (1 + e)^2 without cancellation
    e = exp(-fabs(v))
    pr = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    D[0] = pr - y
    h[0] = e / ((1.0 + e) * (1.0 + e))
    return (v if v > 0 else 0.0) + log1p(e) - y * v


cdef double _row_terms(const double* z, const floating* y, int loss_code, int k, double* D,
                       double* Hw, bint want_h) noexcept nogil:
    """Loss of one row with decision values z; writes its D (k) and Hw (curvatures)."""
    cdef int c, c2, p, label
    cdef double loss, e, m, s
    if loss_code == MSE:
        loss = 0.0
        for c in range(k):
            e = z[c] - y[c]
            loss += e * e / k
            D[c] = 2.0 * e / k
        Hw[0] = 2.0 / k
        return loss
    if loss_code == BCE:
        return _one_terms(z[0], y[0], BCE, D, Hw)
    label = <int>y[0]
    m = z[0]
    for c in range(1, k):
        if z[c] > m:
            m = z[c]
    s = 0.0
    for c in range(k):
        D[c] = exp(z[c] - m)
        s += D[c]
    for c in range(k):
        D[c] /= s
    if want_h:
        p = 0
        for c in range(k):
            for c2 in range(c, k):
                Hw[p] = D[c] * ((1.0 if c == c2 else 0.0) - D[c2])
                p += 1
    loss = m + log(s) - z[label]
    D[label] -= 1.0
    return loss


cdef double _block_terms(const floating[:, ::1] Y, const floating[::1] weights,
                         Py_ssize_t start, Py_ssize_t m, int loss_code, int k, int n_pairs,
                         bint want_h, const double* Z, double* D, double* Hw) noexcept nogil:
    """Weighted loss sum of rows start:start + m; fills their D and Hw (weights applied)."""
    cdef Py_ssize_t r
    cdef int c
    cdef double loss = 0.0, row_loss, w
    cdef bint weighted = weights.shape[0] > 0
    for r in range(m):
        row_loss = _row_terms(Z + r * k, &Y[start + r, 0], loss_code, k, D + r * k,
                              Hw + r * n_pairs, want_h)
        if weighted:
            w = weights[start + r]
            row_loss *= w
            for c in range(k):
                D[r * k + c] *= w
            for c in range(n_pairs):
                Hw[r * n_pairs + c] *= w
        loss += row_loss
    return loss


cdef void _gram(int m, int n, int lds, int ldt, double* S, double* Tp) noexcept nogil:
    """Tp[:n, :n] += S^T S (row-major upper triangle; S is m rows of lds entries, the
    first n used; Tp has rows of ldt entries): dsyrk."""
    cdef char tn = b'N', lower = b'L'
    cdef double one = 1.0
    cdef int64_t n64 = n, m64 = m, lds64 = lds, ldt64 = ldt
    # column-major lower of S^c S^c^T = row-major upper of S^T S
    if _dsyrk64 != NULL:
        _dsyrk64(&lower, &tn, &n64, &m64, &one, S, &lds64, &one, Tp, &ldt64)
    else:
        dsyrk(&lower, &tn, &n, &m, &one, S, &lds, &one, Tp, &ldt)


cdef void _gram32(int m, int n, int ld, float* S, float* C) noexcept nogil:
    """C[:n, :n] = S^T S (row-major upper triangle; S is m rows of ld floats, the first n
    used; C is ld x ld, overwritten): ssyrk."""
    cdef char tn = b'N', lower = b'L'
    cdef float one = 1.0, zero = 0.0
    cdef int64_t n64 = n, m64 = m, ld64 = ld
    if _ssyrk64 != NULL:
        _ssyrk64(&lower, &tn, &n64, &m64, &one, S, &ld64, &zero, C, &ld64)
    else:
        ssyrk(&lower, &tn, &n, &m, &one, S, &ld, &zero, C, &ld)


# Gram products S^T S by register tiles (float32 or float64), read straight from the
# row-major S (m rows of ld values, ld a whole number of vectors: L = 8 floats or 4
# doubles in 32 bytes (AVX2), twice as many in 64 where the build targets AVX-512): a
# tile is R rows of C by L H columns, each entry a lane of one of R H vectors (registers)
# summing over the rows of S in order by fused multiply-adds; at each row, H vector loads
# of S[r, j0:j0 + L H] and R broadcast values S[r, i0 + i] (GCC/Clang vector extensions;
# plain loops with the same order of terms elsewhere). The tiles of a strip of columns
# reach its diagonal block. Two vectors per row: tiles of 6 rows (12 accumulators of
# AVX2's 16 registers; 12 rows, 24 accumulators, of AVX-512's 32), then 8, 4, 2, 1; one
# vector (the last strip): tiles of 12 rows, so that 12 independent sums still hide the
# latency of the fused multiply-add, then 8, 4, 2, 1. Each entry sums over the rows in
# the same order at any width. The Numba kernels emit the same tiles
# (fastgd.backends.numba.tiles).
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FASTGD_VBYTES 64
    #define FASTGD_WIDE 12
    #else
    #define FASTGD_VBYTES 32
    #define FASTGD_WIDE 6
    #endif
    #if defined(__GNUC__)
    typedef float fastgd_vfloat __attribute__((vector_size(FASTGD_VBYTES), aligned(4)));
    typedef double fastgd_vdouble __attribute__((vector_size(FASTGD_VBYTES), aligned(8)));
    #define FASTGD_GRAM_TILE(T, L, R, H)                                                    \\
    static inline void fastgd_gram_##T##R##x##H(Py_ssize_t m, Py_ssize_t ld, const T *a,   \\
                                                const T *b, T *C, Py_ssize_t ldc) {        \\
        fastgd_v##T acc[R][H];                                                             \\
        int i, h;                                                                          \\
        for (i = 0; i < R; i++) for (h = 0; h < H; h++) acc[i][h] = (fastgd_v##T){0};     \\
        for (Py_ssize_t k = 0; k < m; k++) {                                               \\
            fastgd_v##T bv[H];                                                             \\
            for (h = 0; h < H; h++) bv[h] = *(const fastgd_v##T *)(b + k * ld + L * h);   \\
            _Pragma("GCC unroll 12")                                                       \\
            for (i = 0; i < R; i++) {                                                      \\
                const T v = a[k * ld + i];                                                 \\
                for (h = 0; h < H; h++) acc[i][h] += v * bv[h];                            \\
            }                                                                              \\
        }                                                                                  \\
        for (i = 0; i < R; i++)                                                            \\
            for (h = 0; h < H; h++) *(fastgd_v##T *)(C + i * ldc + L * h) = acc[i][h];    \\
    }
    #else
    #define FASTGD_GRAM_TILE(T, L, R, H)                                                    \\
    static void fastgd_gram_##T##R##x##H(Py_ssize_t m, Py_ssize_t ld, const T *a,          \\
                                         const T *b, T *C, Py_ssize_t ldc) {               \\
        for (int i = 0; i < R; i++)                                                        \\
            for (int q = 0; q < L * H; q++) {                                              \\
                T s = 0;                                                                   \\
                for (Py_ssize_t k = 0; k < m; k++) s += a[k * ld + i] * b[k * ld + q];    \\
                C[i * ldc + q] = s;                                                        \\
            }                                                                              \\
    }
    #endif

    #define FASTGD_GRAM_AT(T, R, H)                                                         \\
        fastgd_gram_##T##R##x##H(m, ld, S + i, S + j0, C + i * ld + j0, ld)
    #define FASTGD_GRAM_AT2(T, R, L)                                                       \\
        fastgd_gram_##T##R##x1(m, ld, S + i, S + j0 + L, C + i * ld + j0 + L, ld)

    /* the upper triangle of C (ld x ld) = S^T S, S m rows of ld values: strips of two
       vectors of columns, then one, each with its tiles down to the diagonal. In a strip
       of two, the rows of the second vector's diagonal block (j0 + L .. j0 + 2L - 1) get
       the second vector only: their first lies below the diagonal */
    #define FASTGD_GRAM(T, L)                                                               \\
    FASTGD_GRAM_TILE(T, L, FASTGD_WIDE, 2) FASTGD_GRAM_TILE(T, L, 8, 2)                     \\
    FASTGD_GRAM_TILE(T, L, 4, 2) FASTGD_GRAM_TILE(T, L, 2, 2) FASTGD_GRAM_TILE(T, L, 1, 2)  \\
    FASTGD_GRAM_TILE(T, L, 12, 1) FASTGD_GRAM_TILE(T, L, 8, 1)                              \\
    FASTGD_GRAM_TILE(T, L, 4, 1) FASTGD_GRAM_TILE(T, L, 2, 1) FASTGD_GRAM_TILE(T, L, 1, 1)  \\
    static void fastgd_gram_##T(Py_ssize_t m, Py_ssize_t ld, const T *S, T *C) {            \\
        Py_ssize_t i, j0 = 0;                                                              \\
        for (; j0 + 2 * L <= ld; j0 += 2 * L) {                                            \\
            for (i = 0; i + FASTGD_WIDE <= j0 + L; i += FASTGD_WIDE)                       \\
                FASTGD_GRAM_AT(T, FASTGD_WIDE, 2);                                         \\
            if (FASTGD_WIDE > 8 && i + 8 <= j0 + L) { FASTGD_GRAM_AT(T, 8, 2); i += 8; }   \\
            if (i + 4 <= j0 + L) { FASTGD_GRAM_AT(T, 4, 2); i += 4; }                      \\
            if (i + 2 <= j0 + L) { FASTGD_GRAM_AT(T, 2, 2); i += 2; }                      \\
            if (i < j0 + L) { FASTGD_GRAM_AT(T, 1, 2); i += 1; }                           \\
            for (; i + 12 <= j0 + 2 * L; i += 12) FASTGD_GRAM_AT2(T, 12, L);               \\
            if (i + 8 <= j0 + 2 * L) { FASTGD_GRAM_AT2(T, 8, L); i += 8; }                 \\
            if (i + 4 <= j0 + 2 * L) { FASTGD_GRAM_AT2(T, 4, L); i += 4; }                 \\
            if (i + 2 <= j0 + 2 * L) { FASTGD_GRAM_AT2(T, 2, L); i += 2; }                 \\
            if (i < j0 + 2 * L) FASTGD_GRAM_AT2(T, 1, L);                                  \\
        }                                                                                  \\
        if (j0 == ld) return;                                                              \\
        for (i = 0; i + 12 <= j0 + L; i += 12) FASTGD_GRAM_AT(T, 12, 1);                   \\
        if (i + 8 <= j0 + L) { FASTGD_GRAM_AT(T, 8, 1); i += 8; }                          \\
        if (i + 4 <= j0 + L) { FASTGD_GRAM_AT(T, 4, 1); i += 4; }                          \\
        if (i + 2 <= j0 + L) { FASTGD_GRAM_AT(T, 2, 1); i += 2; }                          \\
        if (i < j0 + L) FASTGD_GRAM_AT(T, 1, 1);                                           \\
    }
    FASTGD_GRAM(float, FASTGD_VBYTES / 4)
    FASTGD_GRAM(double, FASTGD_VBYTES / 8)
    """
    void fastgd_gram_float(Py_ssize_t m, Py_ssize_t ld, const float* S, float* C) noexcept nogil
    void fastgd_gram_double(Py_ssize_t m, Py_ssize_t ld, const double* S, double* C) noexcept nogil


cdef void _block_gram(int m, int n, int ld, floating* S, floating* C, double* Tp) noexcept nogil:
    """Tp += S^T S for a block S (m rows of ld values, the first n used, zeros past them;
    ld a whole number of vectors) and Tp (n x n, float64). Up to TILE_MAX_COLUMNS:
    register tiles into the scratch C (ld x ld, the type of S; overwritten), whose upper
    triangle is then added to Tp; wider rows: BLAS's syrk (float64 straight into Tp).
    Each float32 block's product is rounded on its own (~m eps32 at worst) and the
    blocks are summed in float64: the error does not grow with the rows."""
    cdef int i, j
    if ld > TILE_MAX_COLUMNS:
        if floating is double:
            _gram(m, n, ld, n, S, Tp)
            return
        else:
            _gram32(m, n, ld, S, C)
    elif floating is float:
        fastgd_gram_float(m, ld, S, C)
    else:
        fastgd_gram_double(m, ld, S, C)
    for i in range(n):
        for j in range(i, n):
            Tp[i * n + j] += C[i * ld + j]


cdef inline double _dot(const floating* x, const double* p, Py_ssize_t d) noexcept nogil:
    """``x . p`` in float64 with 16 partial sums, added as a tree at the end: they
    vectorize (one running sum would not, as C keeps the order of additions) into two
    independent chains of fused multiply-adds per AVX-512 register width (with 8, one
    chain's latency set the pace of the decision-value sweep, as in _kernels.pyx)."""
    cdef double s[16]
    cdef Py_ssize_t j, k
    cdef Py_ssize_t d16 = d - d % 16
    for k in range(16):
        s[k] = 0.0
    for j in range(0, d16, 16):
        for k in range(16):
            s[k] += x[j + k] * p[j + k]
    for j in range(d16, d):  # the rest, one term per partial sum
        s[j - d16] += x[j] * p[j]
    for k in range(8):
        s[k] += s[k + 8]
    for k in range(4):
        s[k] += s[k + 4]
    return (s[0] + s[2]) + (s[1] + s[3])


cdef double _one_output(const floating[:, ::1] X, const floating[:, ::1] Y,
                        const floating[::1] weights, const double* P, int loss_code,
                        int want_h, Py_ssize_t start, int m, int ld, int ld64, double* S,
                        float* S32, double* G, double* D, double* Hw) noexcept nogil:
    """One output (MSE or binary CE), rows start:start + m: their weighted loss sum; adds
    D [x, 1] to G and, with a Hessian, writes the rows sqrt(h) [x, 1] into S (float64,
    rows ld64 apart) or S32 (float32, ld apart) for the Gram product. Without a Hessian
    each row is read once; with one, three sweeps over the block (decision values, loss
    terms into the scratch D and Hw, gradient and scaled rows), as in the Numba kernel
    (fastgd.backends.numba.hessian._one_output says why)."""
    if not want_h:
        return _gradient_rows(X, Y, weights, P, loss_code, start, m, G)
    _decision_values(X, P, start, m, D)
    loss = _loss_terms(Y, weights, loss_code, start, m, D, Hw)
    _gradient_and_scaled_rows(X, start, m, D, Hw, want_h, ld, ld64, S, S32, G)
    return loss


cdef double _gradient_rows(const floating[:, ::1] X, const floating[:, ::1] Y,
                           const floating[::1] weights, const double* P, int loss_code,
                           Py_ssize_t start, int m, double* G) noexcept nogil:
    """Loss sum of rows start:start + m and G += D [x, 1], each row read once."""
    cdef Py_ssize_t d = X.shape[1], r, j
    cdef double f, e, h, w, loss = 0.0
    cdef const floating* x
    cdef bint weighted = weights.shape[0] > 0
    for r in range(m):
        x = &X[start + r, 0]
        f = _one_terms(P[d] + _dot(x, P, d), Y[start + r, 0], loss_code, &e, &h)
        if weighted:
            w = weights[start + r]
            f, e = f * w, e * w
        loss += f
        for j in range(d):
            G[j] += e * x[j]
        G[d] += e
    return loss


cdef void _decision_values(const floating[:, ::1] X, const double* P, Py_ssize_t start,
                           int m, double* V) noexcept nogil:
    """V[r] = [x, 1] . P over rows start:start + m, the row PREFETCH_AHEAD places ahead
    requested from memory (a sweep of dot products alone outruns the hardware
    prefetcher)."""
    cdef Py_ssize_t d = X.shape[1], n = X.shape[0], r, j
    for r in range(m):
        if start + r + PREFETCH_AHEAD < n:
            j = 0
            while j < d:
                fastgd_prefetch(&X[start + r + PREFETCH_AHEAD, j])
                j += CACHE_LINE_BYTES // sizeof(floating)
        V[r] = P[d] + _dot(&X[start + r, 0], P, d)


cdef double _loss_terms(const floating[:, ::1] Y, const floating[::1] weights,
                        int loss_code, Py_ssize_t start, int m, double* D,
                        double* R) noexcept nogil:
    """Weighted loss sum of rows start:start + m whose decision values are D[:m];
    overwrites them with the derivatives and writes R[r] = sqrt(h) (h < 0: 0)."""
    cdef Py_ssize_t r
    cdef double f, e, h, w, loss = 0.0
    cdef bint weighted = weights.shape[0] > 0
    for r in range(m):
        f = _one_terms(D[r], Y[start + r, 0], loss_code, &e, &h)
        if weighted:
            w = weights[start + r]
            f, e, h = f * w, e * w, h * w
        loss += f
        D[r] = e
        R[r] = sqrt(h) if h > 0 else 0.0
    return loss


cdef void _gradient_and_scaled_rows(const floating[:, ::1] X, Py_ssize_t start, int m,
                                    const double* D, const double* R, int want_h, int ld,
                                    int ld64, double* S, float* S32,
                                    double* G) noexcept nogil:
    """G += D [x, 1] and the rows R[r] [x, 1] into S (ld64 apart) or, with GRAM32, S32
    (ld apart)."""
    cdef Py_ssize_t d = X.shape[1], r, j
    cdef const floating* x
    cdef double e, root
    for r in range(m):
        x = &X[start + r, 0]
        e, root = D[r], R[r]
        for j in range(d):
            G[j] += e * x[j]
        G[d] += e
        if want_h == GRAM32:
            for j in range(d):
                S32[r * ld + j] = <float>(root * x[j])
            S32[r * ld + d] = <float>root
        else:
            for j in range(d):
                S[r * ld64 + j] = root * x[j]
            S[r * ld64 + d] = root


cdef void _hessian_block32(const double* Xp, const double* Hw, int m, int d, int k,
                           int n_pairs, double* S, double* w, int ld, float* S32, float* C32,
                           double* T) noexcept nogil:
    """_hessian_block with the Gram pairs (``h >= 0``) in float32: the rows of
    ``X~ = [X, 1]`` scaled by ``sqrt(h)`` rounded to float32 (S32, m rows of ld), their
    product, intercept included, by register tiles (:func:`_gram32`). Softmax's off-diagonal pairs
    are the float64 dgemm of _hessian_block (intercept's column by dgemv, corner sum h)."""
    cdef char tn = b'N', tt = b'T'
    cdef double one = 1.0, hsum, h, root
    cdef int c, c2, p = 0, r, j, d1 = d + 1, inc = 1
    cdef double* Tp
    for c in range(k if n_pairs > 1 else 1):
        for c2 in range(c, k if n_pairs > 1 else 1):
            Tp = T + <Py_ssize_t>p * d1 * d1
            if c == c2:
                for r in range(m):
                    h = Hw[r * n_pairs + p]
                    root = sqrt(h) if h > 0 else 0.0
                    for j in range(d):
                        S32[r * ld + j] = <float>(root * Xp[r * d + j])
                    S32[r * ld + d] = <float>root
                _block_gram(m, d1, ld, S32, C32, Tp)
                p += 1
                continue
            hsum = 0.0
            for r in range(m):
                h = Hw[r * n_pairs + p]
                for j in range(d):
                    S[r * d + j] = h * Xp[r * d + j]
                hsum += h
                w[r] = 1.0
            # column-major S^c X^c^T = S^T X, symmetric
            dgemm(&tn, &tt, &d, &d, &m, &one, S, &d, <double*>Xp, &d, &one, Tp, &d1)
            # Tp[:d, d] += S^T 1: column-major S^c (d, m) w, into a column (stride d1)
            dgemv(&tn, &d, &m, &one, S, &d, w, &inc, &one, Tp + d, &d1)
            Tp[d * d1 + d] += hsum
            p += 1


cdef void _hessian_block(const double* Xp, const double* Hw, int m, int d, int k,
                         int n_pairs, double* S, double* w, double* T) noexcept nogil:
    """Adds X~^T diag(h_p) X~ of one block (m rows of X, ``X~ = [X, 1]``) to each
    class-pair block of T. A Gram pair (``h >= 0``) is ``S^T S`` with ``S`` the rows
    scaled by ``sqrt(h)`` (dsyrk), another pair ``S^T X`` with ``S = h X`` (dgemm); the
    intercept's column is ``S^T w`` (``w = sqrt(h)`` or 1) and its corner ``sum h``."""
    cdef char tn = b'N', tt = b'T'
    cdef double one = 1.0, hsum, h
    cdef int c, c2, p = 0, r, j, d1 = d + 1, inc = 1
    cdef bint gram
    cdef double* Tp
    for c in range(k if n_pairs > 1 else 1):
        for c2 in range(c, k if n_pairs > 1 else 1):
            Tp = T + <Py_ssize_t>p * d1 * d1
            gram, hsum = c == c2, 0.0
            for r in range(m):
                h = Hw[r * n_pairs + p]
                hsum += h if (h > 0 or not gram) else 0.0
                if gram:
                    h = sqrt(h) if h > 0 else 0.0
                w[r] = h if gram else 1.0
                for j in range(d):
                    S[r * d + j] = h * Xp[r * d + j]
            if gram:
                _gram(m, d, d, d1, S, Tp)
            else:  # column-major S^c X^c^T = S^T X, symmetric
                dgemm(&tn, &tt, &d, &d, &m, &one, S, &d, <double*>Xp, &d, &one, Tp, &d1)
            # Tp[:d, d] += S^T w: column-major S^c (d, m) w, into a column (stride d1)
            dgemv(&tn, &d, &m, &one, S, &d, w, &inc, &one, Tp + d, &d1)
            Tp[d * d1 + d] += hsum
            p += 1


cdef double _chunk(const floating[:, ::1] X, const floating[:, ::1] Y,
                   const floating[::1] weights, const double* P, int loss_code, int k,
                   int n_pairs, int want_h, Py_ssize_t lo, Py_ssize_t hi, int rows,
                   double* Xb, double* S, double* Z, double* D, double* Hw, int ld,
                   float* S32, float* C32, int ld64, double* C64, double* G,
                   double* T) noexcept nogil:
    """Loss sum of rows lo:hi; adds their gradient and Hessian sums to G and T. One
    output: :func:`_one_output`, then the Gram product of the block. Several: the
    products run on the d columns of X (float64 rows in place, float32 rows copied to
    float64 into Xb); the intercept's row of X~ = [X, 1] is summed apart."""
    cdef Py_ssize_t d = X.shape[1], start = lo, r, j
    cdef int di = <int>d, m, c
    cdef char tn = b'N', tt = b'T'
    cdef double zero = 0.0, one = 1.0, loss = 0.0
    cdef const double* Xp
    while start < hi:
        m = <int>(hi - start if hi - start < rows else rows)
        if k == 1:
            loss += _one_output(X, Y, weights, P, loss_code, want_h, start, m, ld, ld64, S,
                                S32, G, D, Hw)
            if want_h == GRAM32:
                _block_gram(m, di + 1, ld, S32, C32, T)
            elif want_h:
                _block_gram(m, di + 1, ld64, S, C64, T)
            start += m
            continue
        if floating is double:
            Xp = &X[start, 0]
        else:
            for r in range(m):
                for j in range(d):
                    Xb[r * d + j] = X[start + r, j]
            Xp = Xb
        # Z (m, k) = X P[:d] + P[d]: column-major Z^c (k, m) = P^c (k, d) X^c (d, m)
        dgemm(&tn, &tn, &k, &m, &di, &one, <double*>P, &k, <double*>Xp, &di, &zero, Z, &k)
        for r in range(m):
            for c in range(k):
                Z[r * k + c] += P[d * k + c]
        loss += _block_terms(Y, weights, start, m, loss_code, k, n_pairs, want_h, Z, D, Hw)
        # G[:d] (d, k) += X^T D: column-major G^c (k, d) += D^c (k, m) X^c^T (m, d)
        dgemm(&tn, &tt, &k, &di, &m, &one, D, &k, <double*>Xp, &di, &one, G, &k)
        for r in range(m):
            for c in range(k):
                G[d * k + c] += D[r * k + c]
        if want_h == GRAM32:
            _hessian_block32(Xp, Hw, m, di, k, n_pairs, S, Z, ld, S32, C32, T)
        elif want_h:
            _hessian_block(Xp, Hw, m, di, k, n_pairs, S, Z, T)
        start += m
    return loss


def loss_gradient_hessian(
    const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] weights,
    const double[:, ::1] P, int loss_code, int want_h, const int64_t[::1] bounds,
    int rows, double[::1] F, double[:, :, ::1] G, double[:, :, :, ::1] T,
    double[:, ::1] Xb, double[:, ::1] S, double[:, ::1] Z, double[:, ::1] D,
    double[:, ::1] Hw, int ld, float[:, ::1] S32, float[:, ::1] C32, int ld64,
    double[:, ::1] C64, int n_threads,
):
    """Per-chunk sums F (loss), G (gradient, (d + 1, k)) and T (Hessian blocks) over the
    chunks ``bounds[c]:bounds[c + 1]``; scratch rows (Xb, S, Z, D, Hw) per thread, and
    with ``want_h == GRAM32`` a float32 block (S32, rows x ld, ``ld`` the d + 1 columns
    rounded up to a multiple of 8, zeros past them) and triangle (C32, ld^2) per thread;
    with GRAM64 a float64 triangle (C64, ld64^2; S has rows of ld64, the d + 1 columns
    rounded up to a multiple of 4, zeros past them)."""
    cdef Py_ssize_t c, n_chunks = bounds.shape[0] - 1
    cdef int t, k = <int>P.shape[1], n_pairs = <int>T.shape[1]
    for c in prange(n_chunks, nogil=True, schedule="dynamic", chunksize=1,
                    num_threads=n_threads):
        t = threadid()
        F[c] = _chunk(X, Y, weights, &P[0, 0], loss_code, k, n_pairs, want_h, bounds[c],
                      bounds[c + 1], rows, &Xb[t, 0], &S[t, 0], &Z[t, 0], &D[t, 0],
                      &Hw[t, 0], ld, &S32[t, 0], &C32[t, 0], ld64, &C64[t, 0], &G[c, 0, 0],
                      &T[c, 0, 0, 0])
