# Compiler directives (boundscheck, wraparound, initializedcheck, cdivision, language_level)
# are set in setup.py.
"""Cython + OpenMP kernels of the ``cython`` backend (float32 and float64 via ``floating``).

The algorithm is the one of :mod:`fastgd.backends.numba_kernels`: a mini-batch is split
into chunks that depend on the batch size only, each chunk sums the per-sample gradients of
its rows into its own row of a buffer, and the rows are added in chunk order. Results are
therefore bit-identical for any number of threads. The chunking constants and all scratch
buffers come from the Python wrapper (``cython_backend.py``), so :mod:`fastgd._config`
stays the single source of truth and nothing is allocated here.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, fabs, fabsf, isfinite, log, log1p, log1pf
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

# No ``cimport openmp``: a build without OpenMP must still compile (prange then runs serially).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTGD_OPENMP_ENABLED 1
    #define fastgd_max_threads() omp_get_max_threads()
    #else
    #define FASTGD_OPENMP_ENABLED 0
    #define fastgd_max_threads() 1
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define fastgd_prefetch(p) __builtin_prefetch((p), 0, 3)
    #else
    #define fastgd_prefetch(p) ((void)0)
    #endif
    """
    const int FASTGD_OPENMP_ENABLED
    int fastgd_max_threads() noexcept nogil
    void fastgd_prefetch(const void* p) noexcept nogil

# Loss codes of fastgd.specs.losses and status codes of fastgd.specs.stopping; the wrapper
# checks at import time that they agree.
cdef enum:
    MSE = 0
    BINARY_CROSS_ENTROPY = 1
    CATEGORICAL_CROSS_ENTROPY = 2

cdef enum:
    MAX_EPOCHS = 0
    CONVERGED = 1
    DIVERGED = 2

LOSS_CODES = (MSE, BINARY_CROSS_ENTROPY, CATEGORICAL_CROSS_ENTROPY)
STATUS_CODES = (MAX_EPOCHS, CONVERGED, DIVERGED)

cdef enum:
    # The row PREFETCH_AHEAD places later in the order is requested from memory while the
    # current one is computed (no effect on results). Needed for shuffled orders, whose rows
    # are scattered; it also helped the natural order here (measured: full batch 0.058 s ->
    # 0.046 s on 1e6 x 100 float64), as hardware prefetchers stop at page boundaries.
    PREFETCH_AHEAD = 4
    CACHE_LINE_BYTES = 64


cdef struct Problem:
    # Sizes and settings shared by all the chunks of a call (the typed arrays are passed
    # separately because a struct cannot hold fused types).
    Py_ssize_t n, d, m, k  # rows, features, target columns, outputs
    Py_ssize_t n_params  # d * k + k; buffer rows hold n_params gradients and the loss
    Py_ssize_t ld_buf, ld_z  # row strides of the (padded) chunk buffers
    int loss_code
    bint shuffled
    const int64_t* order  # the epoch's row order if shuffled


def openmp_enabled():
    """True if the extension was compiled with OpenMP (else ``prange`` runs serially)."""
    return bool(FASTGD_OPENMP_ENABLED)


def max_threads():
    """OpenMP's default thread count (``OMP_NUM_THREADS`` or the cores), 1 without OpenMP."""
    return fastgd_max_threads()


# exp, log1p and abs in the precision of the data, like Numba's math functions on float32
cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating _abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline double _row_loss_and_dz(
    floating* z, const floating* y, int loss_code, Py_ssize_t k
) noexcept nogil:
    """Loss of one sample; overwrites ``z`` (decision values) with dloss/dz."""
    cdef Py_ssize_t c, label
    cdef double loss, s
    cdef floating r, v, e, m, z_label
    if loss_code == MSE:
        loss = 0.0
        for c in range(k):
            r = z[c] - y[c]
            loss += r * r  # product in the data precision, sum in double (as in Numba)
            z[c] = (2.0 / k) * r
        return loss / k
    if loss_code == BINARY_CROSS_ENTROPY:
        # log(1 + exp(v)) - y v and sigmoid(v) - y through exp(-|v|), which never overflows
        v = z[0]
        e = _exp(-_abs(v))
        if v >= 0:
            loss = v + _log1p(e) - y[0] * v
            z[0] = 1.0 / (1.0 + e) - y[0]
        else:
            loss = _log1p(e) - y[0] * v
            z[0] = e / (1.0 + e) - y[0]
        return loss
    # categorical cross-entropy: logsumexp(z) - z[label], shifted by max(z) so that exp
    # cannot overflow; z[label] is saved before z is overwritten by the softmax
    label = <Py_ssize_t>y[0]
    z_label = z[label]
    m = z[0]
    for c in range(1, k):
        if z[c] > m:
            m = z[c]
    s = 0.0
    for c in range(k):
        z[c] = _exp(z[c] - m)
        s += z[c]
    for c in range(k):
        z[c] = z[c] / s
    z[label] -= 1.0
    return m + log(s) - z_label


cdef inline floating _dot(const floating* x, const floating* w, Py_ssize_t d) noexcept nogil:
    """sum_j x[j] w[j] in four interleaved partial sums.

    One running sum is a chain of dependent additions that strict IEEE semantics forbid the
    compiler to reorder; four independent chains are vectorized and pipelined. (Numba gets
    the same freedom from its "reassoc" flag; either way the order differs from NumPy's
    BLAS by rounding only.)
    """
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t j
    cdef Py_ssize_t d4 = d - d % 4
    for j in range(0, d4, 4):
        s0 += x[j] * w[j]
        s1 += x[j + 1] * w[j + 1]
        s2 += x[j + 2] * w[j + 2]
        s3 += x[j + 3] * w[j + 3]
    for j in range(d4, d):
        s0 += x[j] * w[j]
    return (s0 + s1) + (s2 + s3)


cdef inline void _prefetch_row(const floating* x, Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t j = 0
    cdef Py_ssize_t step = CACHE_LINE_BYTES // sizeof(floating)
    while j < d:
        fastgd_prefetch(x + j)
        j += step


cdef inline void _chunk_gradient(
    const Problem* pb, const floating* X, const floating* Y, const floating* params,
    Py_ssize_t lo, Py_ssize_t hi, floating* out, floating* z,
) noexcept nogil:
    """Add the per-sample gradients of rows ``lo:hi`` (in batch order) to ``out``.

    ``out`` has length n_params + 1; its last entry receives the summed loss.
    """
    cdef Py_ssize_t d = pb.d, m = pb.m, k = pb.k, n = pb.n
    cdef Py_ssize_t bias = d * k
    cdef bint shuffled = pb.shuffled
    cdef const int64_t* order = pb.order
    cdef int loss_code = pb.loss_code
    cdef Py_ssize_t r, i, ahead, j, c
    cdef const floating* x
    cdef const floating* w
    cdef floating g, xj
    cdef double loss = 0.0
    for r in range(lo, hi):
        i = order[r] if shuffled else r
        x = X + i * d
        if r + PREFETCH_AHEAD < n:
            ahead = order[r + PREFETCH_AHEAD] if shuffled else r + PREFETCH_AHEAD
            _prefetch_row(X + ahead * d, d)
            fastgd_prefetch(Y + ahead * m)
        # decision values z = x @ W + b
        if k == 1:
            z[0] = params[bias] + _dot(x, params, d)
        else:
            for c in range(k):
                z[c] = params[bias + c]
            for j in range(d):
                xj = x[j]
                w = params + j * k
                for c in range(k):
                    z[c] += xj * w[c]
        loss += _row_loss_and_dz(z, Y + i * m, loss_code, k)
        # gradient of this sample: dW += outer(x, dz), db += dz
        if k == 1:
            g = z[0]
            for j in range(d):
                out[j] += g * x[j]
            out[bias] += g
        else:
            for j in range(d):
                xj = x[j]
                for c in range(k):
                    out[j * k + c] += xj * z[c]
            for c in range(k):
                out[bias + c] += z[c]
    out[pb.n_params] += loss


cdef inline void _one_chunk(
    const Problem* pb, Py_ssize_t c, Py_ssize_t n_chunks, Py_ssize_t start, Py_ssize_t stop,
    const floating* X, const floating* Y, const floating* params, floating* buf, floating* zbuf,
) noexcept nogil:
    cdef Py_ssize_t size = stop - start
    cdef Py_ssize_t lo = start + (c * size) // n_chunks
    cdef Py_ssize_t hi = start + ((c + 1) * size) // n_chunks
    cdef floating* out = buf + c * pb.ld_buf
    memset(out, 0, (pb.n_params + 1) * sizeof(floating))
    _chunk_gradient(pb, X, Y, params, lo, hi, out, zbuf + c * pb.ld_z)


cdef Py_ssize_t _batch_gradient(
    const Problem* pb, Py_ssize_t start, Py_ssize_t stop, const floating* X, const floating* Y,
    const floating* params, floating* buf, floating* zbuf, Py_ssize_t max_chunks,
    Py_ssize_t min_rows_per_chunk, Py_ssize_t parallel_min_work, int n_threads,
) noexcept nogil:
    """Fill the first n_chunks rows of ``buf`` with chunk partial sums; return n_chunks."""
    cdef Py_ssize_t c
    cdef Py_ssize_t size = stop - start
    cdef Py_ssize_t n_chunks = min(max_chunks, max(1, size // min_rows_per_chunk))
    if n_chunks > 1 and size * pb.d * pb.k >= parallel_min_work:
        for c in prange(n_chunks, num_threads=n_threads, schedule="static"):
            _one_chunk(pb, c, n_chunks, start, stop, X, Y, params, buf, zbuf)
    else:
        for c in range(n_chunks):
            _one_chunk(pb, c, n_chunks, start, stop, X, Y, params, buf, zbuf)
    return n_chunks


cdef Problem _problem(
    Py_ssize_t n, Py_ssize_t d, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n_params,
    Py_ssize_t ld_buf, Py_ssize_t ld_z, int loss_code,
) noexcept nogil:
    cdef Problem pb
    pb.n, pb.d, pb.m, pb.k = n, d, m, k
    pb.n_params, pb.ld_buf, pb.ld_z = n_params, ld_buf, ld_z
    pb.loss_code = loss_code
    pb.shuffled = False
    pb.order = NULL
    return pb


def loss_and_gradient(
    const floating[:, ::1] X, const floating[:, ::1] Y, floating[::1] params, int loss_code,
    Py_ssize_t n_outputs, bint fit_intercept, floating[::1] grad, floating[:, ::1] buf,
    floating[:, ::1] zbuf, Py_ssize_t max_chunks, Py_ssize_t min_rows_per_chunk,
    Py_ssize_t parallel_min_work, int n_threads,
):
    """Mean loss over all rows; fills ``grad`` (zeros on entry) with the mean gradient.

    ``buf`` and ``zbuf`` are scratch of shapes (>= max_chunks, >= n_params + 1) and
    (>= max_chunks, >= n_outputs).
    """
    cdef Py_ssize_t n = X.shape[0], p = params.shape[0]
    cdef Py_ssize_t n_trained = p if fit_intercept else X.shape[1] * n_outputs
    cdef Py_ssize_t c, j, n_chunks
    cdef double loss = 0.0
    cdef Problem pb = _problem(n, X.shape[1], Y.shape[1], n_outputs, p, buf.shape[1],
                               zbuf.shape[1], loss_code)
    with nogil:
        n_chunks = _batch_gradient(
            &pb, 0, n, &X[0, 0], &Y[0, 0], &params[0], &buf[0, 0], &zbuf[0, 0], max_chunks,
            min_rows_per_chunk, parallel_min_work, n_threads,
        )
        for c in range(n_chunks):
            loss += buf[c, p]
            for j in range(n_trained):
                grad[j] += buf[c, j]
        for j in range(n_trained):
            grad[j] = grad[j] / <double>n  # divided in double, as in Numba
    return loss / n


cdef Py_ssize_t _train_epochs(
    Problem* pb, const floating[:, ::1] X, const floating[:, ::1] Y, floating[::1] params,
    const int64_t[:, ::1] orders, Py_ssize_t n_epochs, bint fit_intercept,
    Py_ssize_t batch_size, double lr, double tol, double n_iter_no_change,
    double[::1] stop_state, double[::1] history, floating[:, ::1] buf, floating[:, ::1] zbuf,
    floating[::1] start_params, Py_ssize_t max_chunks, Py_ssize_t min_rows_per_chunk,
    Py_ssize_t parallel_min_work, int n_threads, int* status,
) noexcept nogil:
    """The loop of :func:`train_epochs`; returns the number of epochs run."""
    cdef Py_ssize_t n = pb.n, p = pb.n_params, ld = pb.ld_buf
    cdef Py_ssize_t n_trained = p if fit_intercept else pb.d * pb.k
    cdef Py_ssize_t epoch, start, stop, n_chunks, c, j
    cdef floating* w = &params[0]
    cdef floating* bp = &buf[0, 0]
    cdef floating g
    cdef double loss_sum, inv_rows, epoch_loss
    cdef bint finite
    pb.shuffled = orders.shape[0] > 0
    for epoch in range(n_epochs):
        memcpy(&start_params[0], w, p * sizeof(floating))
        if pb.shuffled:
            pb.order = &orders[epoch % orders.shape[0], 0]
        loss_sum = 0.0
        start = 0
        while start < n:
            stop = min(start + batch_size, n)
            n_chunks = _batch_gradient(
                pb, start, stop, &X[0, 0], &Y[0, 0], w, bp, &zbuf[0, 0], max_chunks,
                min_rows_per_chunk, parallel_min_work, n_threads,
            )
            inv_rows = 1.0 / (stop - start)
            # chunk partial sums added in chunk order, in the data precision; the step
            # itself is computed in double (lr and inv_rows are double), as in Numba
            for j in range(n_trained):
                g = bp[j]
                for c in range(1, n_chunks):
                    g += bp[c * ld + j]
                w[j] -= lr * (g * inv_rows)
            for c in range(n_chunks):
                loss_sum += bp[c * ld + p]
            start = stop
        epoch_loss = loss_sum / n
        history[epoch] = epoch_loss
        finite = isfinite(epoch_loss)
        for j in range(p):
            if not isfinite(w[j]):
                finite = False
        if not finite:
            memcpy(w, &start_params[0], p * sizeof(floating))
            status[0] = DIVERGED
            return epoch + 1
        # tolerance rule, state carried across calls in stop_state = [best, n_no_change]
        if epoch_loss > stop_state[0] - tol:
            stop_state[1] += 1
        else:
            stop_state[1] = 0
        if epoch_loss < stop_state[0]:
            stop_state[0] = epoch_loss
        if stop_state[1] >= n_iter_no_change:
            status[0] = CONVERGED
            return epoch + 1
    status[0] = MAX_EPOCHS
    return n_epochs


def train_epochs(
    const floating[:, ::1] X, const floating[:, ::1] Y, floating[::1] params,
    const int64_t[:, ::1] orders, Py_ssize_t n_epochs, int loss_code, Py_ssize_t n_outputs,
    bint fit_intercept, Py_ssize_t batch_size, double lr, double tol, double n_iter_no_change,
    double[::1] stop_state, double[::1] history, floating[:, ::1] buf, floating[:, ::1] zbuf,
    floating[::1] start_params, Py_ssize_t max_chunks, Py_ssize_t min_rows_per_chunk,
    Py_ssize_t parallel_min_work, int n_threads,
):
    """Run the epochs with the GIL released; returns ``(n_done, status)``.

    Arguments as in :func:`fastgd.backends.numpy_ref.train_epochs`, plus scratch: ``buf``
    (>= max_chunks, >= n_params + 1), ``zbuf`` (>= max_chunks, >= n_outputs) and
    ``start_params`` (n_params,).
    """
    cdef int status = MAX_EPOCHS
    cdef Py_ssize_t n_done
    cdef Problem pb = _problem(X.shape[0], X.shape[1], Y.shape[1], n_outputs, params.shape[0],
                               buf.shape[1], zbuf.shape[1], loss_code)
    with nogil:
        n_done = _train_epochs(
            &pb, X, Y, params, orders, n_epochs, fit_intercept, batch_size, lr, tol,
            n_iter_no_change, stop_state, history, buf, zbuf, start_params, max_chunks,
            min_rows_per_chunk, parallel_min_work, n_threads, &status,
        )
    return n_done, status
