# Compiler directives (boundscheck, wraparound, initializedcheck, cdivision, language_level)
# are set in setup.py.
"""Cython + OpenMP kernels of the ``cython`` backend (float32 and float64 via ``floating``).

The algorithm is the one of :mod:`fastgd.backends.numba_kernels`: a mini-batch is split
into chunks that depend on the batch size only; each chunk sums the per-sample gradients
of its rows into its own row of a buffer; the rows are added in chunk order. Results are
therefore bit-identical for any number of threads. Batches of one row of plain SGD take a
direct per-sample path. The constants of :mod:`fastgd._config` and all scratch buffers
come from the Python wrapper (``cython_backend.py``), so nothing is duplicated or
allocated here.

Sample weights (an empty array: unweighted) multiply each row's loss and dloss/dz, so
the sums above become weighted sums; the unweighted path skips the multiplications.

After each batch the update of :mod:`fastgd.specs.optimizers` is applied, in its order:
the L2 term is added to the mean gradient, which is clipped (``_prepare_gradient``); the
optimizer updates the parameters elementwise with the learning rate ``lr_t`` of the update
(``_optimizer_step``, the operations of :func:`fastgd.backends.numpy_ref.optimizer_step`
in the same order, in double precision); the L1 proximal step follows
(``_soft_threshold``). The optimizer state is stored in the precision of the data.
``_apply_update`` runs these steps and ``_end_epoch`` the bookkeeping after an epoch
(penalty, divergence test, tolerance rule), for the linear kernels here and the network
kernels of ``_network_kernels.pxi``, which is included at the end of this file so that
both use the one implementation.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from cython.parallel cimport parallel as team_region  # ("parallel" names a flag in .pxi)
from libc.math cimport (
    copysign, exp, expf, fabs, fabsf, isfinite, log, log1p, log1pf, pow, sqrt
)
from libc.float cimport DBL_MAX, FLT_MAX
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

# No ``cimport openmp``: a build without OpenMP must still compile (prange then runs serially).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTGD_OPENMP_ENABLED 1
    #define fastgd_max_threads() omp_get_max_threads()
    #define fastgd_team_size() omp_get_num_threads()
    #else
    #define FASTGD_OPENMP_ENABLED 0
    #define fastgd_max_threads() 1
    #define fastgd_team_size() 1
    #endif
    /* The counters of a team of threads (see _team_member): GCC's and Clang's atomic
       built-ins. A member publishes with a release store after its plain stores (chunk
       sums, parameters); a member that reads the count with acquire sees those stores. */
    #if defined(__GNUC__) || defined(__clang__)
    #include <sched.h>
    #define FASTGD_ATOMICS 1
    static inline long long fastgd_fetch_add(long long* p, long long v) {
        return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
    }
    static inline long long fastgd_load_acquire(long long* p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void fastgd_store_release(long long* p, long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline void fastgd_yield(void) { sched_yield(); }
    #if defined(__x86_64__) || defined(__i386__)
    #define fastgd_spin_pause() __builtin_ia32_pause()
    #define fastgd_cycles() ((long long)__builtin_ia32_rdtsc())
    #else  /* no cycle counter: no wait counts as long */
    #define fastgd_spin_pause() ((void)0)
    #define fastgd_cycles() 0LL
    #endif
    #else  /* no team without atomics: _use_team says no */
    #define FASTGD_ATOMICS 0
    static inline long long fastgd_fetch_add(long long* p, long long v) { long long o = *p; *p += v; return o; }
    static inline long long fastgd_load_acquire(long long* p) { return *p; }
    static inline void fastgd_store_release(long long* p, long long v) { *p = v; }
    static inline void fastgd_yield(void) {}
    #define fastgd_spin_pause() ((void)0)
    #define fastgd_cycles() 0LL
    #endif
    /* Software prefetch as a volatile asm statement where we know the instruction. GCC
       counts __builtin_prefetch as free of side effects: a helper that only prefetched
       (_prefetch_ahead) was judged pure and its calls deleted, so no row was requested
       ahead (GCC 12, 1,000,000 x 100 in order, 1 thread: 50-65% of the streaming limit
       against 75-90% with the requests). A volatile asm is never deleted. */
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define fastgd_prefetch(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char*)(p)))
    #define fastgd_prefetch_l2(p) __asm__ volatile("prefetcht1 %0" : : "m"(*(const char*)(p)))
    #elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    #define fastgd_prefetch(p) __asm__ volatile("prfm pldl1keep, %0" : : "Q"(*(const char*)(p)))
    #define fastgd_prefetch_l2(p) __asm__ volatile("prfm pldl2keep, %0" : : "Q"(*(const char*)(p)))
    #elif defined(__GNUC__) || defined(__clang__)
    #define fastgd_prefetch(p) __builtin_prefetch((p), 0, 3)
    #define fastgd_prefetch_l2(p) __builtin_prefetch((p), 0, 2)
    #elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    #include <xmmintrin.h>
    #define fastgd_prefetch(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
    #define fastgd_prefetch_l2(p) _mm_prefetch((const char*)(p), _MM_HINT_T1)
    #else
    #define fastgd_prefetch(p) ((void)0)
    #define fastgd_prefetch_l2(p) ((void)0)
    #endif
    """
    const int FASTGD_OPENMP_ENABLED
    int fastgd_max_threads() noexcept nogil
    int fastgd_team_size() noexcept nogil
    const int FASTGD_ATOMICS
    long long fastgd_fetch_add(long long* p, long long v) noexcept nogil
    long long fastgd_load_acquire(long long* p) noexcept nogil
    void fastgd_store_release(long long* p, long long v) noexcept nogil
    void fastgd_yield() noexcept nogil
    void fastgd_spin_pause() noexcept nogil
    long long fastgd_cycles() noexcept nogil
    void fastgd_prefetch(const void* p) noexcept nogil
    void fastgd_prefetch_l2(const void* p) noexcept nogil

# exp(x) for x <= 0 in plain arithmetic that the compiler vectorizes with the loop around it
# (libm's exp is a call per value, about a fifth of a softmax mini-batch's time with 10
# classes), as Numba's fastgd.backends.numba.fastexp: n = floor(x / ln 2 + 1/2) clamped to
# [-1022, 0] (a NaN becomes -1022, so the conversion to an integer is defined), r = x - n
# ln 2 with ln 2 in two parts (n * LN2_HI is exact), exp(r) by its Taylor polynomial of
# degree 13, times 2**n built from its exponent bits. Within 2 units in the last place
# for -708.39 <= x <= 0 (tested), 0 below, NaN kept. Built without -ffast-math, so the
# two-part reduction is never re-associated.
cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    static inline double fastgd_exp_nonpositive(double x) {
        const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
        double n = floor(x * 1.4426950408889634074 + 0.5);
        n = n > -1022.0 ? n : -1022.0;
        n = n < 0.0 ? n : 0.0;
        double r = (x - n * ln2_hi) - n * ln2_lo;
        double p = 1.0 / 6227020800.0;                      /* 1 / 13! */
        p = p * r + 1.0 / 479001600.0;  p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;    p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;      p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;         p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;                p = p * r + 1.0;
        p = p * r + 1.0;
        int64_t bits = ((int64_t)n + 1023) << 52;
        double scale;
        memcpy(&scale, &bits, sizeof scale);
        return x < -708.39 ? 0.0 : p * scale;
    }
    """
    double fastgd_exp_nonpositive(double x) noexcept nogil


def _exp_nonpositive_values(const double[::1] x, double[::1] out):
    """``out[i] = fastgd_exp_nonpositive(x[i])`` for every i (a test hook)."""
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = fastgd_exp_nonpositive(x[i])


# Ctrl-C (fastgd.training.interrupt): ``stop_state[FASTGD_INTERRUPT]`` is set to 1 by
# another thread while a kernel runs. It is read through a volatile pointer at every poll:
# a plain read could be hoisted out of a loop whose stores the compiler proves never touch
# it (strict aliasing: a float32 model stores no double), and the request never be seen.
cdef extern from *:
    """
    #define FASTGD_INTERRUPT 3
    static inline int fastgd_interrupted(const double* stop_state) {
        return ((const volatile double*)stop_state)[FASTGD_INTERRUPT] != 0.0;
    }
    """
    const int FASTGD_INTERRUPT
    bint fastgd_interrupted(const double* stop_state) noexcept nogil

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
    INTERRUPTED = 3

# Optimizer codes and hyperparameter positions of fastgd.specs.optimizers (also checked by
# the wrapper at import time).
cdef enum:
    SGD = 0
    ADAGRAD = 1
    RMSPROP = 2
    ADAM = 3
    ADAMW = 4

cdef enum:
    H_LR = 0
    H_MOMENTUM = 1
    H_DAMPENING = 2
    H_NESTEROV = 3
    H_BETA1 = 4
    H_BETA2 = 5
    H_EPS = 6
    H_WEIGHT_DECAY = 7
    H_AMSGRAD = 8
    H_CENTERED = 9
    H_ALPHA = 10
    H_LR_DECAY = 11
    H_CLIP_VALUE = 12
    H_CLIP_NORM = 13
    H_POWER_T = 14
    H_L1 = 15
    H_L2 = 16
    N_HYPER = 17

# fastgd.specs.stopping.RUNAWAY_FACTOR (checked by the wrapper at import time)
cdef double RUNAWAY_FACTOR = 1e4

LOSS_CODES = (MSE, BINARY_CROSS_ENTROPY, CATEGORICAL_CROSS_ENTROPY)
STATUS_CODES = (MAX_EPOCHS, CONVERGED, DIVERGED, INTERRUPTED)
INTERRUPT_POSITION = FASTGD_INTERRUPT
RUNAWAY = RUNAWAY_FACTOR
OPTIMIZER_CODES = (SGD, ADAGRAD, RMSPROP, ADAM, ADAMW)
# (LR, MOMENTUM, DAMPENING, NESTEROV, BETA1, BETA2, EPS, WEIGHT_DECAY, AMSGRAD, CENTERED,
#  ALPHA, LR_DECAY, CLIP_VALUE, CLIP_NORM, POWER_T, L1, L2, N_HYPER)
HYPER_POSITIONS = (
    H_LR, H_MOMENTUM, H_DAMPENING, H_NESTEROV, H_BETA1, H_BETA2, H_EPS, H_WEIGHT_DECAY,
    H_AMSGRAD, H_CENTERED, H_ALPHA, H_LR_DECAY, H_CLIP_VALUE, H_CLIP_NORM, H_POWER_T, H_L1,
    H_L2, N_HYPER,
)

cdef enum:
    # The row PREFETCH_AHEAD places later in the order is requested from memory while the
    # current one is computed (no effect on results). Needed for shuffled orders, whose rows
    # are scattered; it also helped the natural order here, as hardware prefetchers stop at
    # page boundaries. Shuffled rows of a linear model are requested SHUFFLED_AHEAD places
    # ahead: each costs a full memory latency, and 4 rows in flight left the AVX-512 VM's
    # core waiting (1,000,000 x 100, 3 shuffled epochs on 1 thread, batch 256: about 200 ms
    # with 4, 157-172 with 8, 163-181 with 12; in order 12 was slower than 4). Requested
    # into L2 (prefetcht1), 12 ahead is the better distance (Zen 4 VM, kernel alone, 1
    # thread, 2 rounds each: 8 ahead 11-20% of the streaming limit, 12: 15-20%, 16: 15-17%).
    PREFETCH_AHEAD = 4
    SHUFFLED_AHEAD = 12
    # The pipelined row loops of one-output models (_one_output_rows, and per-sample SGD's
    # _per_sample_one_output) request rows read in order this many places ahead: they
    # consume rows faster than the row-by-row loops did. Mini-batches: 4 left the loop at
    # 65-68% of the streaming limit (12: 70-78%, 20: 74-85%, 1 thread); per-sample SGD, 3
    # epochs of 1,000,000 x 100: 89-94 ms with 4, 72-76 ms with 16.
    IN_ORDER_AHEAD = 16
    # Shuffled rows are requested a second time, this many places ahead, into L1 (as
    # fastgd._config.SHUFFLED_L1_AHEAD for Numba): requested into L2 only, a row's lines
    # still missed L1 when the pass read them, and the loads of the weights and G waited
    # behind those misses (_near_into_l1).
    SHUFFLED_L1_AHEAD = 6
    CACHE_LINE_BYTES = 64


cdef struct Problem:
    # Sizes and settings shared by all the chunks of a call (typed arrays are passed
    # separately: a struct cannot hold fused types).
    Py_ssize_t n, d, m, k  # rows, features, target columns, outputs
    Py_ssize_t n_params  # d * k + k; buffer rows hold n_params gradients, then the loss
    Py_ssize_t ld_g, ld_z  # row strides of the (padded) per-chunk buffers G and Z
    int loss_code
    bint shuffled
    const int64_t* order  # the epoch's row order if shuffled
    # CSR rows (_sparse_rows.pxi): X then points at the stored values, and the index
    # arrays (int32 or int64, as the caller's matrix has them) are kept untyped here
    bint sparse, index64
    const void* indptr
    const void* indices
    # fastgd._config
    Py_ssize_t max_chunks, min_rows_per_chunk, parallel_min_work, rows_per_block
    int n_threads
    # mini-batches of several chunks on a team of threads (fastgd._config.TEAM_BATCHES)
    bint team_batches
    # a team member that spun longer than this many cycles for an update asks the member
    # that published it to sit out (fastgd._config.TEAM_WAIT_CYCLES)
    long long team_wait_cycles
    # stop_state of a training call (polled for Ctrl-C by the per-sample paths), or NULL
    const double* stop_state


cdef struct Optimizer:
    # An optimizer code and its hyperparameters, unpacked from the ``hyper`` vector. The
    # learning rate is not here: it changes with each update (lr_epochs and power_t).
    int code
    double momentum, dampening, beta1, beta2, eps, weight_decay, alpha, lr_decay
    double clip_value, clip_norm  # gradient clipping before the step; 0 disables each
    double power_t  # update t uses lr_epochs[epoch] / t**power_t; 0 disables
    double l1, l2  # penalty strengths on the weights (not the intercepts); 0 disables each
    bint nesterov, amsgrad, centered


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


# The linear kernels request rows into L2 only (prefetcht1), in order as shuffled. A request
# into L1 holds one of the core's few L1 miss buffers until its line arrives, and on a Zen 4
# VM those buffers, not the memory, capped the requests in flight; L1's own prefetcher
# then takes the lines from L2. Zen 4 VM, 1,000,000 x 100, 1 thread, kernel alone: rows in
# order, batch 32 / 256, 42-49% / 42-49% of the streaming limit with prefetcht0 against
# 71-85% / 76-87% with prefetcht1; shuffled 14-17% -> 15-20% (with 12 rows ahead). The
# network kernels still request into L1 (into_l2 False; not measured).
cdef inline void _prefetch_row(const floating* x, Py_ssize_t d, bint into_l2) noexcept nogil:
    """Request row ``x[:d]`` one cache line at a time, into L2 only if ``into_l2`` (a
    constant at every call, so the test is compiled away): every line from the one
    holding ``x[0]`` to the one holding ``x[d - 1]``, counted from the first line's start,
    so that a row starting mid-line gets its last line too, with no request twice."""
    cdef size_t line = (<size_t>x) & ~(<size_t>(CACHE_LINE_BYTES - 1))
    cdef size_t last = <size_t>(x + d - 1)
    if d <= 0:
        return
    while line <= last:
        if into_l2:
            fastgd_prefetch_l2(<const void*>line)
        else:
            fastgd_prefetch(<const void*>line)
        line += CACHE_LINE_BYTES


cdef inline Py_ssize_t _row(const Problem* pb, Py_ssize_t r) noexcept nogil:
    return pb.order[r] if pb.shuffled else r


cdef inline void _near_into_l1(
    const Problem* pb, const floating* X, Py_ssize_t r,
) noexcept nogil:
    """Request into L1 every line of the row SHUFFLED_L1_AHEAD places after place r of a
    shuffled order (already requested into L2 further ahead); nothing past the last
    row. Called for shuffled orders only."""
    cdef const floating* x
    if r + SHUFFLED_L1_AHEAD >= pb.n:
        return
    x = X + pb.order[r + SHUFFLED_L1_AHEAD] * pb.d
    _prefetch_row(x, pb.d, False)


cdef inline void _prefetch_ahead(
    const Problem* pb, const floating* X, const floating* Y, Py_ssize_t r,
    Py_ssize_t distance,
) noexcept nogil:
    """Request from memory the row ``distance`` places after place r of the order (its
    row of X and its targets); nothing past the last row."""
    cdef Py_ssize_t ahead
    if r + distance >= pb.n:
        return
    ahead = _row(pb, r + distance)
    _prefetch_row(X + ahead * pb.d, pb.d, True)  # into L2 only (see _prefetch_row)
    fastgd_prefetch_l2(Y + ahead * pb.m)
    if pb.shuffled:
        _near_into_l1(pb, X, r)


cdef inline const floating* _row_ahead(
    const Problem* pb, const floating* X, const floating* Y, Py_ssize_t r,
    Py_ssize_t distance,
) noexcept nogil:
    """The row of X ``distance`` places after place r of the order (the last row past the
    end), whose target is requested from memory here; its cache lines are requested by
    the pass over the current rows (``fastgd_dot2_add2``)."""
    cdef Py_ssize_t ahead = _row(pb, min(r + distance, pb.n - 1))
    fastgd_prefetch_l2(Y + ahead * pb.m)
    return X + ahead * pb.d


cdef inline void _forward_row(
    const Problem* pb, const floating* X, const floating* Y, const floating* params,
    Py_ssize_t r, floating* z,
) noexcept nogil:
    """Decision values ``z = x @ W + b`` of the r-th row of the order."""
    cdef Py_ssize_t d = pb.d, k = pb.k
    cdef Py_ssize_t bias = d * k
    cdef Py_ssize_t j, c
    cdef const floating* x = X + _row(pb, r) * d
    cdef const floating* w
    cdef floating xj
    _prefetch_ahead(pb, X, Y, r, SHUFFLED_AHEAD if pb.shuffled else PREFETCH_AHEAD)
    if k == 1:  # one output: a plain dot product
        z[0] = params[bias] + _dot(x, params, d)
    else:
        for c in range(k):
            z[c] = params[bias + c]
        for j in range(d):
            xj = x[j]
            w = params + j * k
            for c in range(k):
                z[c] += xj * w[c]


cdef inline floating _one_output_loss(
    floating v, floating y, int loss_code, double* loss
) noexcept nogil:
    """dloss/dz of one sample of a one-output model at decision value ``v``; adds its loss
    term to ``loss[0]`` (:func:`_add_row_loss` uses it for k = 1 too). On values kept in
    registers: a decision value stored to memory and loaded back every row was part of
    what held the Cython row loop below Numba's."""
    cdef floating e
    if loss_code == MSE:
        e = v - y
        loss[0] += e * e
        return 2.0 * e
    # log(1 + exp(v)) - y v and sigmoid(v) - y through exp(-|v|), which never overflows
    e = _exp(-_abs(v))
    if v >= 0:
        loss[0] += v + _log1p(e) - y * v
        return 1.0 / (1.0 + e) - y
    loss[0] += _log1p(e) - y * v
    return e / (1.0 + e) - y


cdef inline double _add_row_loss(
    double loss, floating* z, const floating* y, int loss_code, Py_ssize_t k
) noexcept nogil:
    """``loss`` plus the loss term of one sample; overwrites ``z`` with dloss/dz.

    The terms are computed in the data precision and added to the double ``loss`` one by
    one, as in Numba's ``_loss_block`` (the MSE terms are divided by k once per block).
    """
    cdef Py_ssize_t c, label
    cdef floating e, zmax, z_label
    cdef double s
    if loss_code == MSE:
        for c in range(k):
            e = z[c] - y[c]
            loss += e * e
            z[c] = (2.0 / k) * e
        return loss
    if loss_code == BINARY_CROSS_ENTROPY:
        z[0] = _one_output_loss(z[0], y[0], BINARY_CROSS_ENTROPY, &loss)
        return loss
    # categorical cross-entropy: logsumexp(z) - z[label] with the exponentials shifted by
    # max(z) so that they cannot overflow; z[label] is read before z becomes the softmax
    label = <Py_ssize_t>y[0]
    z_label = z[label]
    zmax = z[0]
    for c in range(1, k):
        if z[c] > zmax:
            zmax = z[c]
    s = 0.0
    for c in range(k):  # (apart from the sum: a loop without a reduction vectorizes)
        z[c] = <floating>fastgd_exp_nonpositive(z[c] - zmax)
    for c in range(k):
        s += z[c]
    for c in range(k):
        z[c] = z[c] / s
    z[label] -= 1.0
    loss += zmax + log(s) - z_label
    return loss


cdef inline double _add_weighted_row_loss(
    double loss, floating* z, const floating* y, int loss_code, Py_ssize_t k, floating sw
) noexcept nogil:
    """As :func:`_add_row_loss` for a sample of weight ``sw``.

    Adds ``sw`` times the sample's loss term (the term summed, then multiplied, in double)
    and leaves ``sw * dloss/dz`` in ``z``, in the data precision as NumPy's
    ``weights[:, None] * dZ``.
    """
    cdef Py_ssize_t c
    cdef double row_loss = _add_row_loss(0.0, z, y, loss_code, k)
    for c in range(k):
        z[c] = sw * z[c]
    return loss + sw * row_loss


cdef inline double _one_feature_least_squares(
    const floating* x, const floating* y, Py_ssize_t m, floating w, floating b, Py_ssize_t rows,
    floating* G,
) noexcept nogil:
    """Least squares with one feature, rows in natural order, unweighted: the loss sum.

    ``G[0]`` and ``G[1]`` receive the gradient sums. The same per-row arithmetic as the
    general path (``e = (b + x w) - y`` in the data precision, ``dz = 2 e``), but the sums
    stay in registers, two rows at a time in independent chains, instead of going through
    G row after row: the demo's 100-point full batch, 1 instead of ~10 ns per row.
    """
    cdef double loss0 = 0.0, loss1 = 0.0, gw0 = 0.0, gw1 = 0.0, gb0 = 0.0, gb1 = 0.0
    cdef floating e0, e1
    cdef Py_ssize_t r
    cdef Py_ssize_t even = rows - rows % 2
    for r in range(0, even, 2):
        e0 = (b + x[r] * w) - y[r * m]
        e1 = (b + x[r + 1] * w) - y[(r + 1) * m]
        loss0 += e0 * e0
        loss1 += e1 * e1
        gw0 += (2 * e0) * x[r]
        gw1 += (2 * e1) * x[r + 1]
        gb0 += 2 * e0
        gb1 += 2 * e1
    if even < rows:
        e0 = (b + x[even] * w) - y[even * m]
        loss0 += e0 * e0
        gw0 += (2 * e0) * x[even]
        gb0 += 2 * e0
    G[0] = <floating>(gw0 + gw1)
    G[1] = <floating>(gb0 + gb1)
    return loss0 + loss1


cdef inline void _gemm_add(
    char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* a,
    Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating* c, Py_ssize_t ldc,
) noexcept nogil:
    """Column-major ``C (m, n) += op(A) @ op(B)`` (BLAS gemm, alpha 1, beta 1)."""
    cdef int im = <int>m, in_ = <int>n, ik = <int>k
    cdef int ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    cdef floating one = 1.0
    if floating is float:
        sgemm(&transa, &transb, &im, &in_, &ik, &one, <float*>a, &ilda, <float*>b, &ildb,
              &one, c, &ildc)
    else:
        dgemm(&transa, &transb, &im, &in_, &ik, &one, <double*>a, &ilda, <double*>b, &ildb,
              &one, c, &ildc)


cdef inline const floating* _several_forward(
    const Problem* pb, const floating* X, const floating* params, Py_ssize_t lo,
    Py_ssize_t hi, floating* Z,
) noexcept nogil:
    """Decision values ``Z = X_b W + b`` of rows ``lo:hi`` of a multi-output model, by one
    BLAS product; returns the block ``X_b`` (rows of X in order, else gathered after the
    block's Z in the chunk's buffer), which the gradient product reads again."""
    cdef Py_ssize_t d = pb.d, k = pb.k, rows = hi - lo, r, c
    cdef floating* gathered = Z + pb.rows_per_block * k
    cdef const floating* xb = X + lo * d
    if pb.shuffled:
        for r in range(lo, hi):
            if r + PREFETCH_AHEAD < pb.n:
                _prefetch_row(X + _row(pb, r + PREFETCH_AHEAD) * d, d, True)
            memcpy(gathered + (r - lo) * d, X + _row(pb, r) * d, d * sizeof(floating))
        xb = gathered
    # Z (rows, k) = X_b @ W, as the column-major Z^T = W^T X_b^T
    _gemm(c'N', c'N', k, rows, d, params, k, xb, d, Z, k)
    for r in range(rows):
        for c in range(k):
            Z[r * k + c] += params[d * k + c]
    return xb


cdef inline floating _one_output_term(
    floating v, const floating* Y, const floating* sw, Py_ssize_t i, Py_ssize_t m,
    int loss_code, double* loss,
) noexcept nogil:
    """:func:`_one_output_loss` of row i, whose weight (``sw``, or NULL) multiplies the
    loss term and dloss/dz as in :func:`_add_weighted_row_loss`."""
    cdef double row_loss = 0.0
    cdef floating dz
    if sw == NULL:
        return _one_output_loss(v, Y[i * m], loss_code, loss)
    dz = _one_output_loss(v, Y[i * m], loss_code, &row_loss)
    loss[0] += sw[i] * row_loss
    return sw[i] * dz


cdef inline double _one_output_rows(
    const Problem* pb, const floating* X, const floating* Y, const floating* sw,
    const floating* params, Py_ssize_t lo, Py_ssize_t hi, floating* G, int loss_code,
) noexcept nogil:
    """Loss sum of rows lo:hi of a one-output model; adds their gradient terms to G.

    Two rows at a time, software-pipelined as in Numba's ``_one_output_rows``: the loss
    and gradient terms of rows r and r + 1 come after the decision values of rows r + 2
    and r + 3, computed in the same pass over the weights and G
    (``fastgd_dot2_add2``), so that the next rows' dot products overlap the dependent
    chain of the current ones, and each weight and each entry of G is loaded (and G
    stored) once for two rows. The same operations in the same order for each sum as one
    row at a time; the last rows compute decision values again, unused. Called with a
    constant ``loss_code`` (see :func:`_one_output_chunk`).

    The rows ``distance`` places ahead are requested into L2 inside that pass, a cache
    line per 8 features (:func:`_row_ahead`), not by a loop of their own: on the Zen 4
    VM the kernel is bound by the core, and that loop's instructions cost 10-13% of it
    (1 thread, the same process alternating the two builds, medians of 9: rows in L2
    batch 32 / 256 / full 0.093 / 0.095 / 0.091 -> 0.083 / 0.082 / 0.079 s; 1,000,000 x
    100 0.127 / 0.126 / 0.117 -> 0.113 / 0.107 / 0.110 s, shuffled batch 32 / 256
    0.61 / 0.53 -> 0.48 / 0.44 s, while other jobs slowed the VM's memory).
    """
    cdef Py_ssize_t d = pb.d, m = pb.m, r = lo, i1, i2
    cdef Py_ssize_t distance = SHUFFLED_AHEAD if pb.shuffled else IN_ORDER_AHEAD
    cdef bint shuffled = pb.shuffled
    cdef double loss = 0.0
    cdef floating va, vb, dz1, dz2
    cdef const floating* xa
    cdef const floating* xb
    cdef const floating* ra
    cdef const floating* rb
    if lo >= hi:
        return loss
    va = params[d] + _dot(X + _row(pb, lo) * d, params, d)
    vb = params[d] + _dot(X + _row(pb, min(lo + 1, hi - 1)) * d, params, d)
    while r + 1 < hi:
        ra = _row_ahead(pb, X, Y, r, distance)
        rb = _row_ahead(pb, X, Y, r + 1, distance)
        if shuffled:
            _near_into_l1(pb, X, r)
            _near_into_l1(pb, X, r + 1)
        i1, i2 = _row(pb, r), _row(pb, r + 1)
        dz1 = _one_output_term(va, Y, sw, i1, m, loss_code, &loss)
        dz2 = _one_output_term(vb, Y, sw, i2, m, loss_code, &loss)
        G[d] += dz1
        G[d] += dz2
        xa, xb = X + _row(pb, min(r + 2, hi - 1)) * d, X + _row(pb, min(r + 3, hi - 1)) * d
        # the C function itself (inlined here; through a Cython wrapper, a call per pair)
        if floating is double:
            fastgd_dot2_add2_double(xa, xb, params, X + i1 * d, X + i2 * d, dz1, dz2, G, d, ra, rb, &va, &vb)
        else:
            fastgd_dot2_add2_float(xa, xb, params, X + i1 * d, X + i2 * d, dz1, dz2, G, d, ra, rb, &va, &vb)
        va, vb = va + params[d], vb + params[d]
        r += 2
    if r < hi:  # an odd row count: the last row alone (its decision value is va)
        i1 = _row(pb, r)
        dz1 = _one_output_term(va, Y, sw, i1, m, loss_code, &loss)
        G[d] += dz1
        _dot_and_add(X + i1 * d, params, X + i1 * d, dz1, G, d)
    return loss


cdef inline double _one_output_chunk(
    const Problem* pb, const floating* X, const floating* Y, const floating* sw,
    const floating* params, Py_ssize_t lo, Py_ssize_t hi, floating* G,
) noexcept nogil:
    """:func:`_one_output_rows` over the whole chunk, compiled once per loss with the loss
    code a constant, as Numba's row loop is: a loop that tests a run-time code in every
    row keeps the other loss's path live and spills registers. The rows of a chunk go in
    one pass (the pipeline restarted every 64 rows before, with one dot product unused
    each time). MSE's division of the loss by k is left out: k = 1."""
    if pb.loss_code == MSE:
        return _one_output_rows(pb, X, Y, sw, params, lo, hi, G, MSE)
    return _one_output_rows(pb, X, Y, sw, params, lo, hi, G, BINARY_CROSS_ENTROPY)


# The dot products of the linear kernels, in C (for ``restrict``: without it the compiler
# must assume that the stores to G or w may change the rows read, and the fused loops
# stayed scalar: 54-58% of the streaming limit, against 66-69% for two loops apart).
#
# ``x . w`` goes into 32 interleaved partial sums: a single running sum is a chain of
# dependent additions that strict IEEE semantics forbid the compiler to reorder, while
# independent chains are vectorized and pipelined (four AVX-512 vectors of doubles, as
# Numba's loop has with its "reassoc" flag). The features past the last full group of 32
# go in groups of 4 into sums 0-3, and the last d % 4 into sums 0-2, so that every sum
# has a fixed place and stays in a register: with a variable place (``s[j - d32]``) the
# sums went through memory for every row, and on the Zen 5 VM the Cython kernels ran at
# 50-65% of the streaming limit against Numba's 75-90%. The sums are added as a tree.
# Per-sample SGD's step keeps its 32 sums in four named 8-lane vectors: as one array, GCC
# kept sums 0-7 in memory (the tail adds into 0-3), a store and a load in every group of
# 32. Zen 4 VM, 1 thread, batch 1, the same process alternating the two builds: rows in
# L2 cache (1,000 x 100, 3,000 epochs) 0.114-0.121 s -> 0.083-0.085 s, 1,000,000 x 100 (3
# epochs) 0.125 -> 0.095 s. The other two keep the array: written with vectors, GCC no
# longer inlined them into the chunk loops, and a call per row made batches 32 to full
# 5-16% slower in cache.
# The two-row pass (fastgd_dot2_add2) adds its sums with the first two stages of the tree
# as vector additions, and keeps sums 0-3 in registers for the tail: given the sums as
# arrays, GCC stored the vectors and added the 32 sums one lane at a time, a chain of
# scalar additions per row (same sums, same results). Zen 4 VM, 1 thread, the same process
# alternating the two builds, medians of 9: rows in L2 (1,000 x 100, 3,000 epochs) batch
# 32 / 256 / full 0.094 / 0.090 / 0.090 -> 0.081 / 0.079 / 0.082 s; 1,000,000 x 100 (3
# epochs) batch 32 / 256 0.107 / 0.108 -> 0.096 / 0.092 s.
# Compilers without GCC's vector extensions (MSVC), or a build with FASTGD_SCALAR_SUMS
# defined, get the same 32 sums in arrays, added in the same order (tested against both).
# The result differs from a sequential sum by rounding only, and all three functions
# below group the terms the same way (tests/test_grouped_dots.py). Whether a multiply-add
# is fused is the compiler's choice per loop (tuned for Zen, GCC does not fuse the
# 256-bit loop over groups of 4 in x . w), so the last bits may differ between them.
cdef extern from *:
    """
    /* GCC's and Clang's vector extensions (named 8-lane vectors) where the compiler has
       them; elsewhere (MSVC), or with FASTGD_SCALAR_SUMS defined, the same sums in arrays,
       added in the same order. MSVC's C spells restrict __restrict. */
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(FASTGD_SCALAR_SUMS)
    #define FASTGD_VECTORS 1
    #define FASTGD_ALWAYS_INLINE inline __attribute__((always_inline))
    #else
    #define FASTGD_VECTORS 0
    #if defined(_MSC_VER) && !defined(__clang__)
    #define restrict __restrict
    #define FASTGD_ALWAYS_INLINE __forceinline
    #else
    #define FASTGD_ALWAYS_INLINE inline
    #endif
    #endif
    /* The main loop over the full groups of 32, with the 32 sums in the array s (the
       compiler vectorizes it after inlining), or in four named 8-lane vectors. */
    #define FASTGD_ARRAY_SUMS(T, TERM)                                                     \
        for (j = 0; j < d32; j += 32)                                                      \
            for (k = 0; k < 32; k++) { TERM(j + k, k) }
    /* the 32 sums added as a tree */
    #define FASTGD_TREE(T)                                                                  \
    static inline T fastgd_tree_##T(T *s) {                                                \
        Py_ssize_t k;                                                                      \
        for (k = 0; k < 16; k++) s[k] += s[k + 16];                                        \
        for (k = 0; k < 8; k++) s[k] += s[k + 8];                                          \
        for (k = 0; k < 4; k++) s[k] += s[k + 4];                                          \
        return (s[0] + s[2]) + (s[1] + s[3]);                                              \
    }
    FASTGD_TREE(float)
    FASTGD_TREE(double)
    #if FASTGD_VECTORS
    #define FASTGD_VECTOR_SUMS(T, VTERM) {                                                 \
        fastgd_v8_##T s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                              \
        for (j = 0; j < d32; j += 32) {                                                    \
            VTERM(T, j, s0) VTERM(T, j + 8, s1) VTERM(T, j + 16, s2) VTERM(T, j + 24, s3)   \
        }                                                                                  \
        memcpy(s, &s0, sizeof s0); memcpy(s + 8, &s1, sizeof s1);                          \
        memcpy(s + 16, &s2, sizeof s2); memcpy(s + 24, &s3, sizeof s3); }
    typedef double fastgd_v8_double __attribute__((vector_size(64)));
    typedef float fastgd_v8_float __attribute__((vector_size(32)));
    /* the same vectors at any alignment, allowed to alias the arrays they are read from */
    typedef double fastgd_v8u_double __attribute__((vector_size(64), aligned(8), may_alias));
    typedef float fastgd_v8u_float __attribute__((vector_size(32), aligned(4), may_alias));
    #define FASTGD_LOAD8(T, p) (*(const fastgd_v8u_##T *)(p))
    #define FASTGD_STORE8(T, p, v) *(fastgd_v8u_##T *)(p) = (v);
    /* FASTGD_TREE on the 32 sums held in four 8-lane vectors (sums 0-7, 8-15, ...): the
       same additions, its first two stages as vector additions */
    #define FASTGD_VTREE(T)                                                                 \
    static inline T fastgd_vtree_##T(fastgd_v8_##T s0, fastgd_v8_##T s1,                   \
                                     fastgd_v8_##T s2, fastgd_v8_##T s3) {                 \
        T s[8];                                                                            \
        Py_ssize_t k;                                                                      \
        s0 += s2; s1 += s3; s0 += s1;                                                      \
        memcpy(s, &s0, sizeof s0);                                                         \
        for (k = 0; k < 4; k++) s[k] += s[k + 4];                                          \
        return (s[0] + s[2]) + (s[1] + s[3]);                                              \
    }
    FASTGD_VTREE(float)
    FASTGD_VTREE(double)
    #endif
    #define FASTGD_DOT_GROUPS(T, MAIN, MAIN_TERM, TERM)                                     \
        T s[32] = {0};                                                                     \
        Py_ssize_t j = 0, k, d32 = d - d % 32;                                             \
        MAIN(T, MAIN_TERM)                                                                 \
        for (; j + 4 <= d; j += 4)                                                         \
            for (k = 0; k < 4; k++) { TERM(j + k, k) }                                      \
        for (k = 0; k < 3; k++)                                                            \
            if (j + k < d) { TERM(j + k, k) }                                              \
        return fastgd_tree_##T(s);
    /* x . w */
    #define FASTGD_DOT_TERM(i, k) s[k] += x[i] * w[i];
    #define FASTGD_DOT(T)                                                                   \
    static inline T fastgd_dot_##T(const T *restrict x, const T *restrict w, Py_ssize_t d) { \
        FASTGD_DOT_GROUPS(T, FASTGD_ARRAY_SUMS, FASTGD_DOT_TERM, FASTGD_DOT_TERM)           \
    }
    /* xn . w while G[:d] += g x */
    #define FASTGD_DOT_ADD_TERM(i, k) s[k] += xn[i] * w[i]; G[i] += g * x[i];
    #define FASTGD_DOT_ADD(T)                                                               \
    static inline T fastgd_dot_add_##T(const T *restrict xn, const T *restrict w,          \
                                       const T *restrict x, T g, T *restrict G,            \
                                       Py_ssize_t d) {                                     \
        FASTGD_DOT_GROUPS(T, FASTGD_ARRAY_SUMS, FASTGD_DOT_ADD_TERM, FASTGD_DOT_ADD_TERM)   \
    }
    /* w[:d] -= lr (g x), then xn . w of the updated w: each weight before it is read.
       lr is a double: the update is computed in double and rounded to T, as in C's w -= ...
       Requests row pf into L2 as fastgd_dot2_add2 does. */
    #define FASTGD_STEP_DOT_TERM(i, k) w[i] -= lr * (g * x[i]); s[k] += xn[i] * w[i];
    #define FASTGD_STEP_DOT_VTERM(T, i, acc) {                                              \
        fastgd_v8_double step = __builtin_convertvector(g * FASTGD_LOAD8(T, x + (i)),     \
                                                        fastgd_v8_double);                 \
        fastgd_v8_##T wi = __builtin_convertvector(                                        \
            __builtin_convertvector(FASTGD_LOAD8(T, w + (i)), fastgd_v8_double) - lr * step, \
            fastgd_v8_##T);                                                                \
        FASTGD_STORE8(T, w + (i), wi)                                                      \
        acc += FASTGD_LOAD8(T, xn + (i)) * wi;                                             \
        fastgd_prefetch_l2(pf + (i)); }
    #define FASTGD_STEP_DOT(T)                                                              \
    static inline T fastgd_step_dot_##T(const T *restrict xn, T *restrict w,               \
                                        const T *restrict x, double lr, T g,               \
                                        Py_ssize_t d, const T *pf) {                       \
        Py_ssize_t q;                                                                      \
        for (q = FASTGD_STEP_PREFETCH_FROM(d); q < d; q += 8) fastgd_prefetch_l2(pf + q);  \
        fastgd_prefetch_l2(pf + d - 1);                                                    \
        FASTGD_DOT_GROUPS(T, FASTGD_STEP_MAIN, FASTGD_STEP_MAIN_TERM, FASTGD_STEP_DOT_TERM) \
    }
    /* the vector loop requests pf's lines in its groups of 32; the array loop does not */
    #if FASTGD_VECTORS
    #define FASTGD_STEP_MAIN FASTGD_VECTOR_SUMS
    #define FASTGD_STEP_MAIN_TERM FASTGD_STEP_DOT_VTERM
    #define FASTGD_STEP_PREFETCH_FROM(d) ((d) - (d) % 32)
    #else
    #define FASTGD_STEP_MAIN FASTGD_ARRAY_SUMS
    #define FASTGD_STEP_MAIN_TERM FASTGD_STEP_DOT_TERM
    #define FASTGD_STEP_PREFETCH_FROM(d) 0
    #endif
    /* Two rows in one pass over w and G: xa . w and xb . w (each in the sums and the
       order of x . w) while G[:d] += g1 x1, then G[:d] += g2 x2 (each entry of G gets the
       two terms in the order of two passes, without the store and load between them).
       Requests rows pa and pb into L2, one line per 8 features and the line of their
       last feature (the rows are not aligned to cache lines).
       Inlined where it is called (see _one_output_rows). */
    #define FASTGD_DOT2_VTERM(T, i, q) {                                                   \
        fastgd_v8_##T wi = FASTGD_LOAD8(T, w + (i));                                       \
        fastgd_v8_##T gi = FASTGD_LOAD8(T, G + (i)) + g1 * FASTGD_LOAD8(T, x1 + (i));      \
        a##q += FASTGD_LOAD8(T, xa + (i)) * wi;                                            \
        b##q += FASTGD_LOAD8(T, xb + (i)) * wi;                                            \
        gi += g2 * FASTGD_LOAD8(T, x2 + (i));                                              \
        FASTGD_STORE8(T, G + (i), gi)                                                      \
        fastgd_prefetch_l2(pa + (i)); fastgd_prefetch_l2(pb + (i)); }
    #define FASTGD_DOT2_TERM(i, k)                                                          \
        sa[k] += xa[i] * w[i]; sb[k] += xb[i] * w[i]; G[i] += g1 * x1[i]; G[i] += g2 * x2[i];
    #define FASTGD_DOT2_ADD2(T)                                                             \
    static FASTGD_ALWAYS_INLINE void fastgd_dot2_add2_##T(                                 \
            const T *restrict xa, const T *restrict xb, const T *restrict w,               \
            const T *restrict x1, const T *restrict x2, T g1, T g2, T *restrict G,         \
            Py_ssize_t d, const T *pa, const T *pb, T *va, T *vb) {                        \
        FASTGD_DOT2_BODY(T)                                                                \
    }
    #if FASTGD_VECTORS
    #define FASTGD_DOT2_BODY(T)                                                             \
        T sa[4], sb[4];                                                                    \
        fastgd_v8_##T a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                              \
        fastgd_v8_##T b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};                              \
        Py_ssize_t j, k, d32 = d - d % 32;                                                 \
        for (j = 0; j < d32; j += 32) {                                                    \
            FASTGD_DOT2_VTERM(T, j, 0) FASTGD_DOT2_VTERM(T, j + 8, 1)                       \
            FASTGD_DOT2_VTERM(T, j + 16, 2) FASTGD_DOT2_VTERM(T, j + 24, 3)                 \
        }                                                                                  \
        for (k = d32; k < d; k += 8) { fastgd_prefetch_l2(pa + k); fastgd_prefetch_l2(pb + k); } \
        fastgd_prefetch_l2(pa + d - 1); fastgd_prefetch_l2(pb + d - 1);                    \
        for (k = 0; k < 4; k++) { sa[k] = a0[k]; sb[k] = b0[k]; }                          \
        for (; j + 4 <= d; j += 4)                                                         \
            for (k = 0; k < 4; k++) { FASTGD_DOT2_TERM(j + k, k) }                          \
        for (k = 0; k < 3; k++)                                                            \
            if (j + k < d) { FASTGD_DOT2_TERM(j + k, k) }                                  \
        a0 = (fastgd_v8_##T){sa[0], sa[1], sa[2], sa[3], a0[4], a0[5], a0[6], a0[7]};      \
        b0 = (fastgd_v8_##T){sb[0], sb[1], sb[2], sb[3], b0[4], b0[5], b0[6], b0[7]};      \
        *va = fastgd_vtree_##T(a0, a1, a2, a3);                                            \
        *vb = fastgd_vtree_##T(b0, b1, b2, b3);
    #else
    #define FASTGD_DOT2_BODY(T)                                                             \
        T sa[32] = {0}, sb[32] = {0};                                                      \
        Py_ssize_t j, k, d32 = d - d % 32;                                                 \
        for (k = 0; k < d; k += 8) { fastgd_prefetch_l2(pa + k); fastgd_prefetch_l2(pb + k); } \
        fastgd_prefetch_l2(pa + d - 1); fastgd_prefetch_l2(pb + d - 1);                    \
        for (j = 0; j < d32; j += 32)                                                      \
            for (k = 0; k < 32; k++) { FASTGD_DOT2_TERM(j + k, k) }                         \
        for (; j + 4 <= d; j += 4)                                                         \
            for (k = 0; k < 4; k++) { FASTGD_DOT2_TERM(j + k, k) }                          \
        for (k = 0; k < 3; k++)                                                            \
            if (j + k < d) { FASTGD_DOT2_TERM(j + k, k) }                                  \
        *va = fastgd_tree_##T(sa);                                                         \
        *vb = fastgd_tree_##T(sb);
    #endif
    FASTGD_DOT2_ADD2(float)
    FASTGD_DOT2_ADD2(double)
    FASTGD_DOT(float)
    FASTGD_DOT(double)
    FASTGD_DOT_ADD(float)
    FASTGD_DOT_ADD(double)
    FASTGD_STEP_DOT(float)
    FASTGD_STEP_DOT(double)
    """
    void fastgd_dot2_add2_float(const float* xa, const float* xb, const float* w,
                                const float* x1, const float* x2, float g1, float g2,
                                float* G, Py_ssize_t d, const float* pa, const float* pb,
                                float* va, float* vb) noexcept nogil
    void fastgd_dot2_add2_double(const double* xa, const double* xb, const double* w,
                                 const double* x1, const double* x2, double g1, double g2,
                                 double* G, Py_ssize_t d, const double* pa, const double* pb,
                                 double* va, double* vb) noexcept nogil
    float fastgd_dot_float(const float* x, const float* w, Py_ssize_t d) noexcept nogil
    double fastgd_dot_double(const double* x, const double* w, Py_ssize_t d) noexcept nogil
    float fastgd_dot_add_float(const float* xn, const float* w, const float* x, float g,
                               float* G, Py_ssize_t d) noexcept nogil
    double fastgd_dot_add_double(const double* xn, const double* w, const double* x, double g,
                                 double* G, Py_ssize_t d) noexcept nogil
    float fastgd_step_dot_float(const float* xn, float* w, const float* x, double lr, float g,
                                Py_ssize_t d, const float* pf) noexcept nogil
    double fastgd_step_dot_double(const double* xn, double* w, const double* x, double lr,
                                  double g, Py_ssize_t d, const double* pf) noexcept nogil


cdef inline floating _dot(const floating* x, const floating* w, Py_ssize_t d) noexcept nogil:
    """``x . w`` in the partial sums described above."""
    if floating is double:
        return fastgd_dot_double(x, w, d)
    else:
        return fastgd_dot_float(x, w, d)


cdef inline floating _step_and_dot(
    const floating* xn, floating* w, const floating* x, double lr, floating g, Py_ssize_t d,
    const floating* ahead,
) noexcept nogil:
    """``w[:d] -= lr (g x)``, then ``xn . w`` of the updated ``w`` (the partial sums of
    :func:`_dot`), in one loop: a weight is updated before it is read. The row ``ahead``
    is requested into L2 in the same loop (see :func:`_one_output_rows`)."""
    if floating is double:
        return fastgd_step_dot_double(xn, w, x, lr, g, d, ahead)
    else:
        return fastgd_step_dot_float(xn, w, x, lr, g, d, ahead)


cdef inline floating _dot_and_add(
    const floating* xn, const floating* w, const floating* x, floating g, floating* G,
    Py_ssize_t d,
) noexcept nogil:
    """``xn . w`` (the partial sums of :func:`_dot`) while ``G[:d] += g x``, in one loop."""
    if floating is double:
        return fastgd_dot_add_double(xn, w, x, g, G, d)
    else:
        return fastgd_dot_add_float(xn, w, x, g, G, d)


def _grouped_dot_values(const double[::1] xn, const double[::1] x, double[::1] w,
                        double g, double lr, double[::1] G):
    """``(x . w, xn . w, xn . w')`` by :func:`_dot`, :func:`_dot_and_add` (which adds
    ``g x`` to ``G``) and :func:`_step_and_dot` (which makes ``w' = w - lr g x`` in ``w``),
    for the tests of the partial sums (a test hook)."""
    cdef Py_ssize_t d = x.shape[0]
    cdef double plain = _dot(&x[0], &w[0], d)
    cdef double added = _dot_and_add(&xn[0], &w[0], &x[0], g, &G[0], d)
    return plain, added, _step_and_dot(&xn[0], &w[0], &x[0], lr, g, d, &xn[0])


def _two_row_values(const double[::1] xa, const double[::1] xb, const double[::1] w,
                    const double[::1] x1, const double[::1] x2, double g1, double g2,
                    double[::1] G):
    """``(xa . w, xb . w)`` by ``fastgd_dot2_add2``, which adds ``g1 x1`` then ``g2 x2``
    to ``G`` (a test hook)."""
    cdef double va, vb
    fastgd_dot2_add2_double(&xa[0], &xb[0], &w[0], &x1[0], &x2[0], g1, g2, &G[0],
                            xa.shape[0], &xa[0], &xb[0], &va, &vb)
    return va, vb


cdef inline void _chunk_gradient(
    const Problem* pb, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n_chunks, Py_ssize_t chunk,
    const floating* X, const floating* Y, const floating* sw, const floating* params,
    floating* Gbuf, floating* Zbuf,
) noexcept nogil:
    """Sum the per-sample gradients of one chunk of the batch ``start:stop`` into its G row.

    The chunk is walked in blocks of rows_per_block rows, as in Numba: decision values of
    the block, their losses, then the gradient sums while the block of X is in cache. The
    row's entry n_params receives the summed loss. With one output the rows go in one
    pass instead, each row's gradient terms added while it is in L1 cache
    (:func:`_one_output_chunk`), measured faster here for this memory-bound case.
    ``sw`` holds the sample weights by original row index, or is NULL (unweighted: the
    loss terms and dloss/dz are used as they are, without multiplying by 1).
    """
    cdef Py_ssize_t d = pb.d, k = pb.k, m = pb.m
    cdef Py_ssize_t size = stop - start
    cdef Py_ssize_t lo = start + (chunk * size) // n_chunks
    cdef Py_ssize_t hi = start + ((chunk + 1) * size) // n_chunks
    cdef floating* G = Gbuf + chunk * pb.ld_g
    cdef floating* Z = Zbuf + chunk * pb.ld_z
    cdef Py_ssize_t block_lo = lo, block_hi, r, i, c
    cdef double loss = 0.0, block_loss
    cdef const floating* xb
    memset(G, 0, pb.n_params * sizeof(floating))
    if pb.sparse:  # the CSR row accessor: X holds the stored values
        G[pb.n_params] = _sparse_chunk(pb, lo, hi, X, Y, sw, params, G, Z)
        return
    if d == 1 and k == 1 and sw == NULL and not pb.shuffled and pb.loss_code == MSE:
        G[pb.n_params] = _one_feature_least_squares(X + lo, Y + lo * m, m, params[0], params[1],
                                                    hi - lo, G)
        return
    if k == 1:
        G[pb.n_params] = _one_output_chunk(pb, X, Y, sw, params, lo, hi, G)
        return
    while block_lo < hi:
        block_hi = min(block_lo + pb.rows_per_block, hi)
        block_loss = 0.0
        xb = _several_forward(pb, X, params, block_lo, block_hi, Z)
        if sw == NULL:
            for r in range(block_lo, block_hi):
                block_loss = _add_row_loss(block_loss, Z + (r - block_lo) * k,
                                           Y + _row(pb, r) * m, pb.loss_code, k)
        else:
            for r in range(block_lo, block_hi):
                i = _row(pb, r)
                block_loss = _add_weighted_row_loss(block_loss, Z + (r - block_lo) * k,
                                                    Y + i * m, pb.loss_code, k, sw[i])
        # G_W (d, k) += X_b^T D, as the column-major G^T (k, d) += D^T X_b
        _gemm_add(c'N', c'T', k, d, block_hi - block_lo, Z, k, xb, d, G, k)
        for r in range(block_hi - block_lo):
            for c in range(k):
                G[d * k + c] += Z[r * k + c]
        loss += block_loss / k if pb.loss_code == MSE else block_loss
        block_lo = block_hi
    G[pb.n_params] = loss


include "_sparse_rows.pxi"


cdef Py_ssize_t _batch_gradient(
    const Problem* pb, Py_ssize_t start, Py_ssize_t stop, const floating* X, const floating* Y,
    const floating* sw, const floating* params, floating* G, floating* Z,
) noexcept nogil:
    """Gradient and loss sums of rows ``start:stop`` in row 0 of G; returns n_chunks.

    Each chunk fills its own row of G (in parallel if the batch is large enough), then the
    rows are added into row 0 in chunk order, in the data precision (loss slot included).
    """
    cdef Py_ssize_t chunk
    cdef Py_ssize_t size = stop - start
    cdef Py_ssize_t n_chunks = _n_chunks(pb, size)
    # CSR chunks run serially: a parallel split of sparse rows was measured slower (the
    # randomly touched cache lines of w and G move between cores); same chunks, same sums
    if n_chunks > 1 and not pb.sparse and size * pb.d * pb.k >= pb.parallel_min_work:
        for chunk in prange(n_chunks, num_threads=pb.n_threads, schedule="static"):
            _chunk_gradient(pb, start, stop, n_chunks, chunk, X, Y, sw, params, G, Z)
    else:
        for chunk in range(n_chunks):
            _chunk_gradient(pb, start, stop, n_chunks, chunk, X, Y, sw, params, G, Z)
    _add_chunk_rows(pb, G, n_chunks)
    return n_chunks


cdef inline Py_ssize_t _n_chunks(const Problem* pb, Py_ssize_t size) noexcept nogil:
    """Chunks of a batch of ``size`` rows: a function of the batch size only."""
    return min(pb.max_chunks, max(1, size // pb.min_rows_per_chunk))


cdef inline void _add_chunk_rows(const Problem* pb, floating* G, Py_ssize_t n_chunks) noexcept nogil:
    """Add rows 1..n_chunks-1 of G into row 0 in chunk order, in the data precision (loss
    slot included): the same sums whichever threads filled the rows."""
    cdef Py_ssize_t c, j
    cdef floating* row
    for c in range(1, n_chunks):
        row = G + c * pb.ld_g
        for j in range(pb.n_params + 1):
            G[j] += row[j]


cdef double _per_sample_one_output(
    const Problem* pb, const floating* X, const floating* Y, const floating* sw,
    floating* params, Py_ssize_t n_trained, double lr, Py_ssize_t* done,
) noexcept nogil:
    """:func:`_per_sample_epoch` of a one-output model, pipelined: one loop over the
    features makes row r's update of the weights and, from the updated weights, row
    r + 1's dot product (:func:`_step_and_dot`); the intercept's update and the next
    decision value follow. Each weight is updated before it is read, so every value is
    the one of the row-by-row loop (the dot product's partial sums are :func:`_dot`'s),
    and an interrupted epoch resumes exactly. The row ``distance`` places ahead is
    requested in that loop (Zen 4 VM, 1 thread, medians of 9-11 alternating fits: 2-4%
    faster in order, no change shuffled)."""
    cdef Py_ssize_t d = pb.d, m = pb.m, r, i, following
    cdef Py_ssize_t distance = SHUFFLED_AHEAD if pb.shuffled else IN_ORDER_AHEAD
    cdef bint shuffled = pb.shuffled
    cdef floating g, v, s = 0
    cdef double loss, loss_sum = 0.0
    cdef const floating* ahead
    done[0] = pb.n
    if pb.n == 0:
        return loss_sum
    v = params[d] + _dot(X + _row(pb, 0) * d, params, d)
    for r in range(pb.n):
        if fastgd_interrupted(pb.stop_state):
            done[0] = r
            break
        ahead = _row_ahead(pb, X, Y, r, distance)
        if shuffled:
            _near_into_l1(pb, X, r)
        i = _row(pb, r)
        loss = 0.0  # a block of one row (MSE's division by k = 1 left out)
        g = _one_output_term(v, Y, sw, i, m, pb.loss_code, &loss)
        loss_sum += loss
        if r + 1 < pb.n:
            s = _step_and_dot(X + _row(pb, r + 1) * d, params, X + i * d, lr, g, d, ahead)
        else:
            s = _step_and_dot(X + i * d, params, X + i * d, lr, g, d, ahead)
        if n_trained > d:
            params[d] -= lr * g
        v = params[d] + s
    return loss_sum


cdef double _per_sample_epoch(
    const Problem* pb, const floating* X, const floating* Y, const floating* sw,
    floating* params, Py_ssize_t n_trained, double lr, floating* z, Py_ssize_t* done,
) noexcept nogil:
    """One epoch of per-sample plain SGD at a fixed rate ``lr``; returns the summed loss,
    the rows done in ``done[0]`` (fewer than n when interrupted: ``pb.stop_state`` is
    polled before each row).

    The same arithmetic as a mini-batch of one row (the gradient is ``dz * x``, divided by
    1), without the chunk buffer: each step updates the parameters directly. Only valid
    without momentum, clipping, penalties and power_t (the caller checks); sample weights
    (``sw``, or NULL) scale the loss term and dz exactly as in the chunked path.
    """
    cdef Py_ssize_t d = pb.d, k = pb.k
    cdef Py_ssize_t bias = d * k
    cdef Py_ssize_t r, i, j, c
    cdef const floating* x
    cdef floating g, xj
    cdef double loss
    cdef double loss_sum = 0.0
    if k == 1:
        return _per_sample_one_output(pb, X, Y, sw, params, n_trained, lr, done)
    done[0] = pb.n
    for r in range(pb.n):
        if fastgd_interrupted(pb.stop_state):
            done[0] = r
            break
        i = _row(pb, r)
        x = X + i * d
        _forward_row(pb, X, Y, params, r, z)
        if sw == NULL:
            loss = _add_row_loss(0.0, z, Y + i * pb.m, pb.loss_code, k)
        else:
            loss = _add_weighted_row_loss(0.0, z, Y + i * pb.m, pb.loss_code, k, sw[i])
        loss_sum += loss / k if pb.loss_code == MSE else loss  # a block of one row
        if k == 1:
            g = z[0]
            for j in range(bias):
                params[j] -= lr * (g * x[j])
        else:
            for j in range(d):
                xj = x[j]
                for c in range(k):
                    params[j * k + c] -= lr * (xj * z[c])
        for c in range(n_trained - bias):
            params[bias + c] -= lr * z[c]
    return loss_sum


cdef void _prepare_gradient(
    const Optimizer* opt, floating* G, double inv_rows, const floating* w,
    Py_ssize_t n_weights, Py_ssize_t n_trained
) noexcept nogil:
    """Turn ``G[:n_trained]`` into the mean gradient plus the L2 term, clipped by value,
    then by global norm (steps 2 and 3 of the update in :mod:`fastgd.specs.optimizers`).

    The mean ``G[j] * inv_rows`` plus ``l2 * w[j]`` on the weights (``j < n_weights``, not
    the intercepts) is computed and clamped in double, stored in the data precision; then
    the operations of :func:`fastgd.backends.numpy_ref.clip_gradient` follow, the squared
    norm summed in double.
    """
    cdef Py_ssize_t j
    cdef double g, total, factor
    cdef double clip_value = opt.clip_value, clip_norm = opt.clip_norm, l2 = opt.l2
    for j in range(n_trained):
        g = G[j] * inv_rows
        if l2 > 0.0 and j < n_weights:
            g = g + l2 * w[j]
        if clip_value > 0.0:
            # as np.clip: a NaN stays NaN
            if g < -clip_value:
                g = -clip_value
            elif g > clip_value:
                g = clip_value
        G[j] = <floating>g
    if clip_norm > 0.0:
        total = 0.0
        for j in range(n_trained):
            g = G[j]
            total += g * g
        factor = clip_norm / (sqrt(total) + 1e-6)
        if factor < 1.0:
            for j in range(n_trained):
                G[j] = <floating>(G[j] * factor)


cdef void _optimizer_step(
    const Optimizer* opt, floating* w, const floating* G, double inv_rows, floating* state,
    Py_ssize_t ld_state, Py_ssize_t n_trained, int64_t t, double lr,
) noexcept nogil:
    """Update number ``t`` (1-based) of ``w[:n_trained]`` from the gradient sums ``G``.

    The gradient of entry j is ``G[j] * inv_rows``; ``lr`` is the update's rate ``lr_t``
    (it also enters Adagrad's decayed rate and AdamW's decoupled decay). Row r of the
    optimizer state starts at ``state + r * ld_state``. The operations are those of
    :func:`fastgd.backends.numpy_ref.optimizer_step`, in its order, in double precision;
    each state entry is stored, then read back, so the update uses the stored value.
    """
    cdef Py_ssize_t j
    cdef double g, step, denom, v, clr, bias1, correction2, decay
    cdef double mu = opt.momentum, alpha = opt.alpha, eps = opt.eps
    cdef double b1 = opt.beta1, b2 = opt.beta2, wd = opt.weight_decay
    cdef floating* s0 = state
    cdef floating* s1 = state + ld_state
    cdef floating* s2 = state + 2 * ld_state
    if opt.code == SGD:
        if mu == 0.0:  # plain SGD, rounded exactly as before optimizers existed
            for j in range(n_trained):
                w[j] -= lr * (G[j] * inv_rows)
            return
        # momentum buffer s0
        for j in range(n_trained):
            g = G[j] * inv_rows
            if t == 1:
                s0[j] = g
            else:
                s0[j] = s0[j] * mu + (1.0 - opt.dampening) * g
            if opt.nesterov:
                step = g + mu * s0[j]
            else:
                step = s0[j]
            w[j] -= lr * step
    elif opt.code == ADAGRAD:
        # sum of squares s0
        clr = lr / (1.0 + <double>(t - 1) * opt.lr_decay)
        for j in range(n_trained):
            g = G[j] * inv_rows
            s0[j] = s0[j] + g * g
            w[j] -= clr * g / (sqrt(<double>s0[j]) + eps)
    elif opt.code == RMSPROP:
        # square_avg s0, grad_avg s1, momentum buffer s2
        for j in range(n_trained):
            g = G[j] * inv_rows
            s0[j] = s0[j] * alpha + (1.0 - alpha) * g * g
            if opt.centered:
                s1[j] = s1[j] * alpha + (1.0 - alpha) * g
                denom = sqrt(s0[j] - <double>s1[j] * s1[j]) + eps
            else:
                denom = sqrt(<double>s0[j]) + eps
            if mu > 0.0:
                s2[j] = s2[j] * mu + g / denom
                w[j] -= lr * s2[j]
            else:
                w[j] -= lr * g / denom
    else:  # ADAM, ADAMW: exp_avg s0, exp_avg_sq s1, max_exp_avg_sq s2
        bias1 = 1.0 - pow(b1, <double>t)
        correction2 = sqrt(1.0 - pow(b2, <double>t))
        clr = lr / bias1
        decay = 1.0 - lr * wd
        if opt.code == ADAM and wd == 0.0 and not opt.amsgrad:
            # the common case, the same operations as below in a loop without branches,
            # which the compiler vectorizes (elementwise, so the results are the same)
            for j in range(n_trained):
                g = G[j] * inv_rows
                s0[j] = s0[j] * b1 + (1.0 - b1) * g
                s1[j] = s1[j] * b2 + (1.0 - b2) * g * g
                w[j] -= clr * s0[j] / (sqrt(<double>s1[j]) / correction2 + eps)
            return
        for j in range(n_trained):
            g = G[j] * inv_rows
            if opt.code == ADAMW:
                w[j] = w[j] * decay
            elif wd != 0.0:
                g = g + wd * w[j]
            s0[j] = s0[j] * b1 + (1.0 - b1) * g
            s1[j] = s1[j] * b2 + (1.0 - b2) * g * g
            v = s1[j]
            if opt.amsgrad:
                # as np.maximum: a NaN in either operand gives NaN
                if s2[j] == s2[j] and not (s2[j] >= v):
                    s2[j] = v
                v = s2[j]
            w[j] -= clr * s0[j] / (sqrt(v) / correction2 + eps)


cdef void _soft_threshold(floating* w, Py_ssize_t n_weights, double threshold) noexcept nogil:
    """The L1 proximal step on ``w[:n_weights]``: ``sign(w) * max(|w| - threshold, 0)``.

    Computed in double and rounded once. A NaN weight stays NaN (``not (a <= 0)`` holds for
    a NaN ``a``), so a diverged run is still detected; shrunk-through weights become +0.
    """
    cdef Py_ssize_t j
    cdef double a
    for j in range(n_weights):
        a = fabs(<double>w[j]) - threshold
        if a <= 0.0:
            w[j] = 0.0
        else:
            w[j] = <floating>copysign(a, <double>w[j])


cdef double _penalty_value(
    const Optimizer* opt, const floating* w, Py_ssize_t n_weights
) noexcept nogil:
    """``l1 * sum|w| + l2 / 2 * sum w**2`` over ``w[:n_weights]``, summed in double."""
    cdef Py_ssize_t j
    cdef double v, sum_abs = 0.0, sum_sq = 0.0
    for j in range(n_weights):
        v = w[j]
        sum_abs += fabs(v)
        sum_sq += v * v
    return opt.l1 * sum_abs + 0.5 * opt.l2 * sum_sq


# The update of a batch and the end of an epoch, shared by the linear and the network
# kernels (the network kernels are included at the end of this file).

cdef enum:
    # The optimizer step costs this many multiply-adds per parameter, roughly (Adam: about
    # ten operations with a square root and two divisions): it runs in parallel when
    # n_trained * UPDATE_WORK_PER_PARAM >= UPDATE_FORK_FACTOR * parallel_min_work.
    UPDATE_WORK_PER_PARAM = 8
    # ... and only past this many times parallel_min_work: the step is one short pass per
    # batch, and a fork/join per batch waits a whole time slice whenever the machine has
    # more runnable threads than cores (measured: a network with 26,000 parameters at
    # batch 32 took several times as long under load, with no gain when idle).
    UPDATE_FORK_FACTOR = 16
    # parameter blocks of the parallel step start on multiples of this many entries (a
    # cache line of float32), so threads never write to the same line
    UPDATE_ALIGN = 16


cdef inline void _step_block(
    const Optimizer* opt, floating* w, const floating* G, double inv_rows, floating* state,
    Py_ssize_t ld_state, Py_ssize_t n_weights, Py_ssize_t n_trained, int64_t t, double lr,
    Py_ssize_t block, Py_ssize_t n_blocks,
) noexcept nogil:
    """Steps 5 and 6 of the update on block ``block`` of ``n_blocks`` of w[:n_trained].

    Both steps are elementwise, so any partition into blocks gives the same results.
    """
    cdef Py_ssize_t lo = (block * n_trained // n_blocks) // UPDATE_ALIGN * UPDATE_ALIGN
    cdef Py_ssize_t hi = n_trained
    if block + 1 < n_blocks:
        hi = ((block + 1) * n_trained // n_blocks) // UPDATE_ALIGN * UPDATE_ALIGN
    if hi <= lo:
        return
    _optimizer_step(opt, w + lo, G + lo, inv_rows, state + lo if state != NULL else NULL,
                    ld_state, hi - lo, t, lr)
    if opt.l1 > 0.0 and lo < n_weights:
        _soft_threshold(w + lo, min(hi, n_weights) - lo, lr * opt.l1)


cdef void _apply_update(
    const Optimizer* opt, floating* w, floating* G, double inv_rows, floating* state,
    Py_ssize_t ld_state, Py_ssize_t n_weights, Py_ssize_t n_trained, int64_t* step_count,
    double lr_epoch, int n_threads, Py_ssize_t parallel_min_work,
) noexcept nogil:
    """One update of ``w[:n_trained]`` from the gradient ``G[j] * inv_rows``.

    Steps 2-6 of :mod:`fastgd.specs.optimizers`, as
    :func:`fastgd.backends.numpy_ref.apply_update`: increments ``step_count[0]`` to ``t``;
    adds the L2 term on ``w[:n_weights]`` and clips (``G`` is then overwritten with the
    mean gradient); ``lr_t = lr_epoch / t**power_t``; the optimizer step; the L1 proximal
    step on ``w[:n_weights]``. ``state`` has rows of ``ld_state`` entries. The last two
    steps are elementwise: with many parameters they run on ``n_threads`` blocks of them
    in parallel, with the same results as serially.
    """
    cdef int64_t t
    cdef double lr
    cdef Py_ssize_t block, n_blocks = n_threads
    step_count[0] += 1
    t = step_count[0]
    # the mean gradient is materialized in G before the step only when it is modified
    if opt.clip_value > 0.0 or opt.clip_norm > 0.0 or opt.l2 > 0.0:
        _prepare_gradient(opt, G, inv_rows, w, n_weights, n_trained)
        inv_rows = 1.0  # G now holds the mean gradient, L2 term added, clipped
    # inverse scaling: lr_t = lr_epoch / t**power_t (pow in double, as NumPy's **)
    lr = lr_epoch / pow(<double>t, opt.power_t) if opt.power_t != 0.0 else lr_epoch
    if n_blocks > 1 and n_trained * UPDATE_WORK_PER_PARAM >= UPDATE_FORK_FACTOR * parallel_min_work:
        for block in prange(n_blocks, num_threads=n_threads, schedule="static", chunksize=1):
            _step_block(opt, w, G, inv_rows, state, ld_state, n_weights, n_trained, t, lr,
                        block, n_blocks)
    else:
        _step_block(opt, w, G, inv_rows, state, ld_state, n_weights, n_trained, t, lr, 0, 1)


cdef inline bint _runaway(double epoch_loss, double* stop_state, double largest) noexcept nogil:
    """:func:`fastgd.specs.stopping.runaway` in C: a finite loss beyond ``largest`` or
    RUNAWAY_FACTOR times the run's first epoch loss (recorded in ``stop_state[2]``)."""
    if stop_state[2] != stop_state[2]:  # NaN: the run's first epoch
        stop_state[2] = epoch_loss
    return epoch_loss > largest or epoch_loss > RUNAWAY_FACTOR * max(stop_state[2], 1.0)


cdef bint _all_finite(const floating* w, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(p):
        if not isfinite(w[j]):
            return False
    return True


cdef int _end_epoch(
    const Optimizer* opt, const floating* w, Py_ssize_t n_params, Py_ssize_t n_weights,
    double epoch_loss, double* history_entry, double* stop_state, double tol,
    double n_iter_no_change,
) noexcept nogil:
    """Bookkeeping after an epoch whose mean data loss is ``epoch_loss``.

    Adds the penalty of the parameters at the end of the epoch, stores the result in
    ``history_entry[0]`` and returns DIVERGED if it or any of ``w[:n_params]`` is not
    finite or has run away (:func:`_runaway`; the caller restores its saved state), else
    CONVERGED if the tolerance rule (state ``stop_state = [best, n_no_change,
    first_loss]``, carried across calls) stops training, else -1.
    """
    cdef Py_ssize_t j
    cdef bint finite
    if opt.l1 > 0.0 or opt.l2 > 0.0:
        epoch_loss += _penalty_value(opt, w, n_weights)
    history_entry[0] = epoch_loss
    finite = isfinite(epoch_loss)
    for j in range(n_params):
        if not isfinite(w[j]):
            finite = False
    if not finite or _runaway(epoch_loss, stop_state, FLT_MAX if floating is float else DBL_MAX):
        return DIVERGED
    if epoch_loss > stop_state[0] - tol:
        stop_state[1] += 1
    else:
        stop_state[1] = 0
    if epoch_loss < stop_state[0]:
        stop_state[0] = epoch_loss
    if stop_state[1] >= n_iter_no_change:
        return CONVERGED
    return -1


cdef Optimizer _unpack_optimizer(int opt_code, const double[::1] hyper):
    """The optimizer code and hyperparameters (``hyper[H_LR]`` is not read: the rates come
    from ``lr_epochs``)."""
    cdef Optimizer opt
    opt.code = opt_code
    opt.momentum, opt.dampening = hyper[H_MOMENTUM], hyper[H_DAMPENING]
    opt.beta1, opt.beta2, opt.eps = hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS]
    opt.weight_decay, opt.alpha, opt.lr_decay = (
        hyper[H_WEIGHT_DECAY], hyper[H_ALPHA], hyper[H_LR_DECAY]
    )
    opt.clip_value, opt.clip_norm = hyper[H_CLIP_VALUE], hyper[H_CLIP_NORM]
    opt.power_t, opt.l1, opt.l2 = hyper[H_POWER_T], hyper[H_L1], hyper[H_L2]
    opt.nesterov = hyper[H_NESTEROV] != 0.0
    opt.amsgrad = hyper[H_AMSGRAD] != 0.0
    opt.centered = hyper[H_CENTERED] != 0.0
    return opt


cdef Problem _problem(
    const floating[:, ::1] X, const floating[:, ::1] Y, floating[::1] params, Py_ssize_t k,
    int loss_code, floating[:, ::1] G, floating[:, ::1] Z, Py_ssize_t max_chunks,
    Py_ssize_t min_rows_per_chunk, Py_ssize_t parallel_min_work, Py_ssize_t rows_per_block,
    int n_threads,
) noexcept nogil:
    cdef Problem pb
    pb.n, pb.d, pb.m, pb.k = X.shape[0], X.shape[1], Y.shape[1], k
    pb.sparse, pb.index64, pb.indptr, pb.indices = False, False, NULL, NULL
    pb.n_params, pb.ld_g, pb.ld_z = params.shape[0], G.shape[1], Z.shape[1]
    pb.loss_code = loss_code
    pb.shuffled = False
    pb.order = NULL
    pb.max_chunks, pb.min_rows_per_chunk = max_chunks, min_rows_per_chunk
    pb.parallel_min_work, pb.rows_per_block = parallel_min_work, rows_per_block
    pb.n_threads = n_threads
    pb.stop_state = NULL
    pb.team_batches, pb.team_wait_cycles = False, 0
    return pb


def loss_and_gradient(
    const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] weights,
    const index_t[::1] indices, const index_t[::1] indptr, Py_ssize_t n_features,
    floating[::1] params, int loss_code, Py_ssize_t n_outputs, bint fit_intercept,
    floating[::1] grad, floating[:, ::1] G, floating[:, ::1] Z, Py_ssize_t max_chunks,
    Py_ssize_t min_rows_per_chunk, Py_ssize_t parallel_min_work, Py_ssize_t rows_per_block,
    int n_threads,
):
    """Mean (weighted) loss over all rows; writes the mean gradient into ``grad[:n_trained]``.

    ``weights`` has n entries or none (unweighted). ``G`` and ``Z`` are scratch of shapes
    (>= max_chunks, >= n_params + 1) and (>= max_chunks, >= rows_per_block * n_outputs).
    CSR rows: ``X`` is the (nnz, 1) column of stored values, ``indices`` and ``indptr``
    the index arrays and ``n_features`` the columns; dense rows: both index arrays empty.
    """
    cdef Problem pb = _problem(X, Y, params, n_outputs, loss_code, G, Z, max_chunks,
                               min_rows_per_chunk, parallel_min_work, rows_per_block, n_threads)
    _attach_csr(&pb, indices, indptr, n_features)
    cdef Py_ssize_t n = pb.n, p = pb.n_params
    cdef Py_ssize_t n_trained = p if fit_intercept else pb.d * n_outputs
    cdef Py_ssize_t j
    cdef double loss
    cdef const floating* sw = &weights[0] if weights.shape[0] > 0 else NULL
    with nogil:
        _batch_gradient(&pb, 0, n, &X[0, 0], &Y[0, 0], sw, &params[0], &G[0, 0], &Z[0, 0])
        for j in range(n_trained):
            grad[j] = G[0, j] / <double>n  # divided in double, as in Numba
        loss = G[0, p] / <double>n
    return loss


# A team of threads (mini-batches of several chunks on several threads): one parallel
# region for many batches instead of a fork and a join per batch, which cost more than a
# batch of a few hundred rows takes. The members take the chunks of the batches one
# *ticket* (a run of consecutive chunks) at a time from a shared counter, wait only for the
# update of the batch before their ticket's, and the member that finishes a batch's last
# ticket adds the chunk rows in chunk order and applies the update (Numba's team, see
# fastgd/backends/numba/team.py, works the same way). No barrier: a member never waits for
# one that has not taken a ticket, so a preempted member stalls the others only while it
# holds a ticket they need, not at every batch; a member that shares its core with another
# thread is asked to sit out a while (_asked_to_sit_out). The team computes the operations
# of one thread in the same order: it never changes a result.


cdef struct Team:
    # The settings of one epoch's updates and what the updating member of each batch
    # records (published with the update count).
    const Optimizer* opt
    Py_ssize_t batch_size, n_weights, n_trained
    int64_t* step_count
    double lr_epoch
    double loss_sum  # the batches' summed losses, added in batch order
    Py_ssize_t done  # rows of the epoch whose update has been applied
    bint stop  # Ctrl-C seen before the next batch: every member leaves the batch loop


cdef inline bint _use_team(const Problem* pb, Py_ssize_t batch_size, Py_ssize_t n_trained) noexcept nogil:
    """Whether an epoch of dense mini-batches may run on a team (:func:`_team_batches`).

    Only batches of several chunks (one chunk has nothing to share), more than one batch per
    epoch (one batch is one fork/join anyway) and an update small enough to run serially
    (member 0 applies it; larger ones are split over threads by :func:`_apply_update`).
    """
    return (FASTGD_OPENMP_ENABLED and FASTGD_ATOMICS and pb.team_batches
            and pb.n_threads > 1
            and not pb.sparse and batch_size < pb.n
            and _n_chunks(pb, batch_size) > 1
            and n_trained * UPDATE_WORK_PER_PARAM < UPDATE_FORK_FACTOR * pb.parallel_min_work)


cdef void _serial_batches(
    const Problem* pb, Team* team, const floating* X, const floating* Y, const floating* sw,
    floating* w, floating* state, floating* G, floating* Z, Py_ssize_t end,
) noexcept nogil:
    """The batches from row ``team.done`` to row ``end``, one after the other (the chunks of
    a large batch in parallel, see :func:`_batch_gradient`, unless ``pb.n_threads`` is 1);
    Ctrl-C polled before each."""
    cdef Py_ssize_t start = team.done, stop
    cdef Py_ssize_t p = pb.n_params
    while start < end:
        if fastgd_interrupted(pb.stop_state):
            team.stop = True
            return
        stop = min(start + team.batch_size, pb.n)
        _batch_gradient(pb, start, stop, X, Y, sw, w, G, Z)
        team.loss_sum += G[p]
        # G holds gradient sums: the step is computed in double from G[j] / rows
        _apply_update(team.opt, w, G, 1.0 / (stop - start), state, p, team.n_weights,
                      team.n_trained, team.step_count, team.lr_epoch, pb.n_threads,
                      pb.parallel_min_work)
        team.done = start = stop


cdef enum:
    # entries of a team's counters, each on its own 64-byte cache line
    TICKETS = 0  # the next ticket to hand out
    FINISHED = 8  # tickets finished so far in the epoch
    UPDATED = 16  # batches of the epoch whose update is published
    HALTED = 17  # 1: the members leave (Ctrl-C)
    UPDATER = 18  # the member that published the last update (written before UPDATED)
    ACTIVE = 24  # members taking tickets (not sitting out)
    JOINED = 25  # members that joined (their numbers: 0, 1, ...)
    EVICTED = 32  # 1 + the number of a member asked to sit out (0: none)
    SYNC_SIZE = 40
    # what a wait for an update was (-1: the team halted; see _wait_for_update)
    READY = 0
    SPUN = 1
    YIELDED = 2
    LONG_WAIT = 3
    YIELDS_BEFORE_EVICTING = 3
    SPINS_BEFORE_YIELD = 2048
    # a wait counts only the stretches between two clock reads shorter than this (about
    # 30 us): a longer one is a time slice during which the waiting member did not run
    WAIT_GAP_CYCLES = 1 << 16
    # a member asked to sit out yields its core for this many cycles, then takes tickets
    # again; each time it is asked again in the epoch, twice as long, up to the maximum
    # (Numba's team: the same constants, and why it yields rather than sleeps)
    SIT_OUT_CYCLES = 1 << 19
    SIT_OUT_MAX_CYCLES = 1 << 25


cdef inline int _wait_for_update(long long* sync, long long batch, long long limit) noexcept nogil:
    """Wait until the updates of the epoch's batches ``0 .. batch - 1`` are published;
    -1 when the team halts instead (the flag is set before the update count, so a member
    waiting for that update sees it), else LONG_WAIT when this member spun for more than
    ``limit`` cycles (``limit`` > 0; the member it waited for was descheduled, see
    :func:`_asked_to_sit_out`), YIELDED when it had to yield its core (the member it
    waited for may share that core), SPUN after a short wait, READY without one (the
    update was there; the member often published it itself). Only stretches between two
    clock reads shorter than WAIT_GAP_CYCLES count. A member that has waited a while
    yields its core, so that on a busy machine the member it waits for gets to run."""
    cdef int spins = 0
    cdef bint yielded = False
    cdef long long last, now, spun = 0
    if fastgd_load_acquire(&sync[UPDATED]) >= batch:  # the common case: no clock read
        return READY if fastgd_load_acquire(&sync[HALTED]) == 0 else -1
    last = fastgd_cycles()
    while fastgd_load_acquire(&sync[UPDATED]) < batch:
        if fastgd_load_acquire(&sync[HALTED]) != 0:
            return -1
        fastgd_spin_pause()
        spins += 1
        if spins == SPINS_BEFORE_YIELD:
            fastgd_yield()
            spins, yielded = 0, True
        now = fastgd_cycles()
        if now - last < WAIT_GAP_CYCLES:
            spun += now - last
        last = now
    if fastgd_load_acquire(&sync[HALTED]) != 0:
        return -1
    if 0 < limit < spun:
        return LONG_WAIT
    return YIELDED if yielded else SPUN


cdef inline long long _join_team(long long* sync) noexcept nogil:
    """Count a new member in; returns its number (0, 1, ...)."""
    fastgd_fetch_add(&sync[ACTIVE], 1)
    return fastgd_fetch_add(&sync[JOINED], 1)


cdef inline bint _asked_to_sit_out(long long* sync, long long me) noexcept nogil:
    """Whether member ``me``, holding no ticket, must sit out: a member that waited long
    for the update it published asked it to (on a machine with more runnable threads
    than cores it shares its core with another thread, and every batch would wait for it
    again), and it is not the last active member (who takes the tickets meanwhile). A
    member sits out only between tickets, so every ticket taken is finished."""
    if fastgd_load_acquire(&sync[EVICTED]) != me + 1:
        return False
    fastgd_store_release(&sync[EVICTED], 0)
    if fastgd_fetch_add(&sync[ACTIVE], -1) > 1:
        return True
    fastgd_fetch_add(&sync[ACTIVE], 1)
    return False


cdef inline bint _sit_out(long long* sync, long long total, long long cycles) noexcept nogil:
    """Yield the core for about ``cycles`` cycles, then take tickets again (True); False,
    and the member's part of the epoch is over, once all ``total`` tickets are taken or
    the team halts. (Without a cycle counter, off x86, where ``fastgd_cycles()`` is 0, a
    sitter stays out until the end of the epoch.)"""
    cdef long long started = fastgd_cycles()
    while True:
        if fastgd_load_acquire(&sync[TICKETS]) >= total or fastgd_load_acquire(&sync[HALTED]) != 0:
            return False
        if fastgd_cycles() - started >= cycles:
            break
        fastgd_yield()
    fastgd_fetch_add(&sync[ACTIVE], 1)
    return True


cdef inline Py_ssize_t _ticket_span(Py_ssize_t n_chunks, Py_ssize_t members, Py_ssize_t* tickets) noexcept nogil:
    """Chunks per ticket of a batch of ``n_chunks`` chunks on a team of ``members``: as
    many tickets as members (at most one per chunk), their number in ``tickets``."""
    cdef Py_ssize_t span
    if n_chunks == 0:
        tickets[0] = 0
        return 1
    span = (n_chunks + min(members, n_chunks) - 1) // min(members, n_chunks)
    tickets[0] = (n_chunks + span - 1) // span
    return span


cdef void _team_member(
    const Problem* pb, Team* team, const floating* X, const floating* Y, const floating* sw,
    floating* w, floating* state, floating* G, floating* Z, Py_ssize_t begin, Py_ssize_t end,
    long long* sync, Py_ssize_t members,
) noexcept nogil:
    """One member of a team running the batches from row ``begin`` to row ``end`` (see
    above). The member that finishes a batch's last ticket adds its chunk rows in chunk
    order, applies the update (the operations of :func:`_serial_batches`, in its order),
    polls Ctrl-C and publishes; the result never depends on which member ran what."""
    cdef Py_ssize_t p = pb.n_params, bs = team.batch_size
    cdef Py_ssize_t full = (end - begin) // bs
    cdef Py_ssize_t rest = end - begin - full * bs
    cdef Py_ssize_t per_full = _n_chunks(pb, bs), per_last = _n_chunks(pb, rest) if rest > 0 else 0
    cdef Py_ssize_t tickets_full, tickets_last, n_chunks, span, tickets, chunk, start, stop
    cdef Py_ssize_t span_full = _ticket_span(per_full, members, &tickets_full)
    cdef Py_ssize_t span_last = _ticket_span(per_last, members, &tickets_last)
    cdef long long total = full * tickets_full + tickets_last, ticket, batch, first
    cdef int waited, yields = 0
    cdef long long pause = SIT_OUT_CYCLES
    cdef long long me = _join_team(sync)
    while True:
        if _asked_to_sit_out(sync, me):
            if not _sit_out(sync, total, pause):
                return
            pause = min(2 * pause, SIT_OUT_MAX_CYCLES)
        ticket = fastgd_fetch_add(&sync[TICKETS], 1)
        if ticket >= total:
            return
        # the last, shorter batch can have more tickets than a full one: told apart by ticket
        batch = min(ticket // tickets_full, full)
        n_chunks, span, tickets = per_full, span_full, tickets_full
        if batch == full:
            n_chunks, span, tickets = per_last, span_last, tickets_last
        first = (ticket - batch * tickets_full) * span
        waited = _wait_for_update(sync, batch, pb.team_wait_cycles)
        if waited < 0:
            return
        # a long wait, or YIELDS_BEFORE_EVICTING in a row, READY ones aside (two members
        # sharing one core, each spinning while the other would compute): the late one goes
        if waited != READY:
            yields = yields + 1 if waited == YIELDED else 0
        if waited == LONG_WAIT or yields == YIELDS_BEFORE_EVICTING:
            fastgd_store_release(&sync[EVICTED], 1 + fastgd_load_acquire(&sync[UPDATER]))
            yields = 0
        start = begin + batch * bs
        stop = min(start + bs, end)
        for chunk in range(first, min(first + span, n_chunks)):
            _chunk_gradient(pb, start, stop, n_chunks, chunk, X, Y, sw, w, G, Z)
        if fastgd_fetch_add(&sync[FINISHED], 1) + 1 == batch * tickets_full + tickets:
            _add_chunk_rows(pb, G, n_chunks)
            team.loss_sum += G[p]
            _apply_update(team.opt, w, G, 1.0 / (stop - start), state, p, team.n_weights,
                          team.n_trained, team.step_count, team.lr_epoch, 1,
                          pb.parallel_min_work)
            team.done = stop
            team.stop = stop < end and fastgd_interrupted(pb.stop_state)
            if team.stop:
                fastgd_store_release(&sync[HALTED], 1)
            fastgd_store_release(&sync[UPDATER], me)
            fastgd_store_release(&sync[UPDATED], batch + 1)


cdef void _team_batches(
    const Problem* pb, Team* team, const floating* X, const floating* Y, const floating* sw,
    floating* w, floating* state, floating* G, floating* Z, Py_ssize_t end,
) noexcept nogil:
    """The batches from row ``team.done`` to row ``end`` in one parallel region (see
    :func:`_team_member`); Ctrl-C polled before each."""
    cdef long long counters[SYNC_SIZE]
    cdef long long* sync = &counters[0]
    cdef Py_ssize_t begin = team.done
    memset(sync, 0, SYNC_SIZE * sizeof(long long))
    team.stop = fastgd_interrupted(pb.stop_state)
    if team.stop or begin >= end:
        return
    with team_region(num_threads=pb.n_threads):
        _team_member(pb, team, X, Y, sw, w, state, G, Z, begin, end, sync, pb.n_threads)


cdef Py_ssize_t _train_epochs(
    Problem* pb, const floating* X, const floating[:, ::1] Y, const floating* sw,
    floating[::1] params, const int64_t[:, ::1] orders, const double[::1] lr_epochs,
    Py_ssize_t n_epochs, bint fit_intercept, Py_ssize_t batch_size, const Optimizer* opt,
    floating* state, Py_ssize_t state_size,
    int64_t* step_count, double tol, double n_iter_no_change, double[::1] stop_state,
    double[::1] history, floating[:, ::1] Gbuf, floating[:, ::1] Zbuf,
    floating[::1] start_params, floating* start_state, int* status,
) noexcept nogil:
    """The loop of :func:`train_epochs`; returns the number of epochs run.

    ``sw`` holds the sample weights, or is NULL (unweighted). ``state`` holds
    ``state_size`` entries, rows of n_params entries; it is saved with the parameters and
    the step count at the start of each epoch and restored with them if the epoch
    diverges.
    """
    cdef Py_ssize_t n = pb.n, p = pb.n_params
    cdef Py_ssize_t n_weights = pb.d * pb.k
    cdef Py_ssize_t n_trained = p if fit_intercept else n_weights
    cdef Py_ssize_t epoch, batched_rows, done
    cdef floating* w = &params[0]
    cdef floating* G = &Gbuf[0, 0]
    cdef double loss_sum, lr_epoch
    cdef int64_t start_step
    cdef int end
    # batches of one row take the direct per-sample path only where it computes the same
    # update: plain SGD (no momentum, no clipping, no penalties) at the epoch's fixed rate
    # (power_t == 0); sample weights are applied inside the per-row loss derivative
    # (CSR rows take it with L2 too: the weight scale of _sparse_rows.pxi)
    cdef bint per_sample = (
        batch_size == 1 and opt.code == SGD and opt.momentum == 0.0
        and opt.clip_value == 0.0 and opt.clip_norm == 0.0 and opt.l1 == 0.0
        and (opt.l2 == 0.0 or pb.sparse) and opt.power_t == 0.0
    )
    cdef Team team
    team.opt, team.batch_size, team.step_count = opt, batch_size, step_count
    team.n_weights, team.n_trained = n_weights, n_trained
    cdef bint team_ok = _use_team(pb, batch_size, n_trained)
    pb.shuffled = orders.shape[0] > 0
    pb.stop_state = &stop_state[0]
    for epoch in range(n_epochs):
        memcpy(&start_params[0], w, p * sizeof(floating))
        if state_size > 0:
            memcpy(start_state, state, state_size * sizeof(floating))
        start_step = step_count[0]
        if pb.shuffled:
            pb.order = &orders[epoch % orders.shape[0], 0]
        lr_epoch = lr_epochs[epoch]  # epoch numbers count from 0 in each call
        loss_sum = 0.0
        batched_rows = n
        end = -1
        if per_sample:
            if pb.sparse:
                loss_sum = _per_sample_sparse(pb, X, &Y[0, 0], sw, w, n_trained, lr_epoch,
                                              opt.l2, &Zbuf[0, 0], &done)
            else:
                loss_sum = _per_sample_epoch(pb, X, &Y[0, 0], sw, w, n_trained, lr_epoch,
                                             &Zbuf[0, 0], &done)
            step_count[0] += done
            batched_rows = 0
            if done < n:
                end = INTERRUPTED
        if batched_rows > 0:  # Ctrl-C is polled before each batch
            team.lr_epoch, team.loss_sum, team.done, team.stop = lr_epoch, 0.0, 0, False
            if team_ok:
                _team_batches(pb, &team, X, &Y[0, 0], sw, w, state, G, &Zbuf[0, 0], n)
            else:
                _serial_batches(pb, &team, X, &Y[0, 0], sw, w, state, G, &Zbuf[0, 0], n)
            loss_sum = team.loss_sum
            if team.stop:
                end = INTERRUPTED
        if end != INTERRUPTED:
            end = _end_epoch(opt, w, p, n_weights, loss_sum / n, &history[epoch],
                             &stop_state[0], tol, n_iter_no_change)
        # interrupted: the state after the last whole update, unless it is not finite
        if end == DIVERGED or (end == INTERRUPTED and not _all_finite(w, p)):
            memcpy(w, &start_params[0], p * sizeof(floating))
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


def train_epochs(
    const floating[:, ::1] X, const floating[:, ::1] Y, const floating[::1] weights,
    const index_t[::1] indices, const index_t[::1] indptr, Py_ssize_t n_features,
    floating[::1] params, const int64_t[:, ::1] orders, const double[::1] lr_epochs,
    Py_ssize_t n_epochs, int loss_code, Py_ssize_t n_outputs,
    bint fit_intercept, Py_ssize_t batch_size, int opt_code, const double[::1] hyper,
    floating[:, ::1] opt_state, int64_t[::1] step_count, double tol, double n_iter_no_change,
    double[::1] stop_state, double[::1] history, floating[:, ::1] G, floating[:, ::1] Z,
    floating[::1] start_params, floating[:, ::1] start_state, Py_ssize_t max_chunks,
    Py_ssize_t min_rows_per_chunk, Py_ssize_t parallel_min_work, Py_ssize_t rows_per_block,
    int n_threads, bint team_batches=False, long long team_wait_cycles=0,
):
    """Run the epochs with the GIL released; returns ``(n_done, status)``.

    Arguments as in :func:`fastgd.backends.numpy_ref.train_epochs`, plus scratch: ``G``
    (>= max_chunks, >= n_params + 1), ``Z`` (>= max_chunks, >= rows_per_block * n_outputs),
    ``start_params`` (n_params,) and ``start_state`` (shaped as ``opt_state``), and the
    constants of :mod:`fastgd._config`. The wrapper checks that ``hyper`` has N_HYPER
    entries, ``weights`` n entries or none, ``lr_epochs`` at least n_epochs, ``opt_state``
    (n_rows, n_params) has the rows the optimizer uses and ``step_count`` one entry.
    CSR rows as in :func:`loss_and_gradient`.
    """
    if (orders.shape[0] > 0 and n_outputs > 1 and indptr.shape[0] == 0
            and Z.shape[1] < rows_per_block * (n_outputs + X.shape[1])):
        raise ValueError("Z must hold a block of decision values and of gathered rows")
    cdef Problem pb = _problem(X, Y, params, n_outputs, loss_code, G, Z, max_chunks,
                               min_rows_per_chunk, parallel_min_work, rows_per_block, n_threads)
    _attach_csr(&pb, indices, indptr, n_features)
    pb.team_batches, pb.team_wait_cycles = team_batches, team_wait_cycles
    cdef int status = MAX_EPOCHS
    cdef Py_ssize_t n_done
    cdef Py_ssize_t state_size = opt_state.shape[0] * opt_state.shape[1]
    cdef floating* state = &opt_state[0, 0] if state_size > 0 else NULL
    cdef floating* saved_state = &start_state[0, 0] if state_size > 0 else NULL
    cdef const floating* sw = &weights[0] if weights.shape[0] > 0 else NULL
    cdef Optimizer opt = _unpack_optimizer(opt_code, hyper)
    if orders.shape[0] > 0:  # the orders' rows (early stopping: the training rows only)
        pb.n = orders.shape[1]
    with nogil:
        n_done = _train_epochs(
            &pb, &X[0, 0], Y, sw, params, orders, lr_epochs, n_epochs, fit_intercept, batch_size,
            &opt, state, state_size, &step_count[0], tol, n_iter_no_change, stop_state,
            history, G, Z, start_params, saved_state, &status,
        )
    return n_done, status


# Multi-layer perceptrons: same module, same update and epoch bookkeeping as above.
include "_network_kernels.pxi"
include "_recurrent_kernels.pxi"
