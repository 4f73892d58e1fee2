"""Numba kernel of the Newton pass of the linear family: loss, gradient and Hessian in one
read of X.

Contract and layout: :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`.
``prange`` runs over the fixed row chunks of :func:`fastgd.backends.hessian_layout.chunk_bounds`;
each chunk walks its rows block by block, in float64 (also for float32 data).

- One output (least squares, logistic): each row is read from memory once, block by
  block, for its decision value, loss, derivative ``D``, curvature ``h``, gradient term
  ``D [x, 1]`` and scaled copy ``sqrt(h) [x, 1]`` (:func:`_one_output`: three sweeps over
  a block that stays in the per-core cache); the block's Gram product ``S^T S`` of those
  copies runs on register tiles (:mod:`.tiles`) up to
  :data:`~fastgd.backends.hessian_layout.TILE_MAX_COLUMNS` values per row, on BLAS's
  syrk beyond (:func:`_add_block_gram`).
- Several outputs (softmax, multi-target least squares): the decision values ``X~ @ P``
  and ``X~^T D`` are BLAS products (``np.dot``, single-threaded) on the rows of X, and
  ``X~^T diag(h_p) X~`` per class pair (:func:`_block`).

The chunk sums are added in chunk order afterwards, so the result does not depend on the
number of threads.
"""

import math

import numpy as np
import scipy.linalg  # noqa: F401 - loads SciPy's BLAS (Numba's np.dot) before it is limited
from llvmlite import binding as llvm
from numba import cfunc, prange, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic, overload

from ..._config import NUMBA_OPTIONS, PREFETCH_AHEAD
from ...specs import losses
from ..blas import numpy_dsyrk_address, numpy_ssyrk_address, single_threaded_blas
from ..hessian_layout import (
    ROW_BYTES,
    TILE_MAX_COLUMNS,
    assemble,
    block_rows,
    chunk_bounds,
    n_pairs,
)
from .cache import njit
from .prefetch import prefetch_row
from .threads import numba_threads
from .tiles import GRAM_VECTOR_BYTES, gram_strip

MSE = losses.MSE
BCE = losses.BINARY_CROSS_ENTROPY

# dsyrk (C = S^T S + C, one triangle: half the flops of np.dot(S.T, S)) with 64-bit integer
# sizes, called by symbol name: the symbol is registered here, at import, before any kernel
# (compiled or loaded from the disk cache) is linked, so the cached machine code stays
# valid whichever library serves it: NumPy's bundled OpenBLAS where it has an ILP64 dsyrk
# (faster on these products, see fastgd.backends.blas), else SciPy's through a shim.
_DSYRK_ARGS = [types.voidptr] * 10


def _lp64_shim(name="dsyrk"):
    """A C function with the ILP64 signature of ``name`` (``"dsyrk"`` or ``"ssyrk"``) that
    calls SciPy's (32-bit integer) one; compiled only where NumPy's BLAS offers no ILP64
    routine."""
    llvm.add_symbol(f"fastgd_{name}32", get_cython_function_address("scipy.linalg.cython_blas", name))  # fmt: skip
    dsyrk32 = types.ExternalFunction(f"fastgd_{name}32", types.void(*_DSYRK_ARGS))
    i64 = types.CPointer(types.int64)
    signature = types.void(types.voidptr, types.voidptr, i64, i64, types.voidptr,
                           types.voidptr, i64, types.voidptr, types.voidptr, i64)  # fmt: skip

    @cfunc(signature)
    def shim(uplo, trans, n, k, alpha, a, lda, beta, c, ldc):
        sizes = np.empty(4, dtype=np.int32)
        sizes[0], sizes[1], sizes[2], sizes[3] = n[0], k[0], lda[0], ldc[0]
        dsyrk32(uplo, trans, _address(sizes[:1]), _address(sizes[1:2]), alpha, a,
                _address(sizes[2:3]), beta, c, _address(sizes[3:]))  # fmt: skip

    return shim


@intrinsic
def _address(typingctx, array):
    """The data pointer of an array, for BLAS."""

    def codegen(context, builder, signature, args):
        data = context.make_array(array)(context, builder, args[0]).data
        return builder.bitcast(data, cgutils.voidptr_t)

    return types.voidptr(array), codegen


def _register_syrk(name, numpy_address):
    """Registers ``fastgd_{name}64``; returns the shim (kept alive) or None."""
    address, shim = numpy_address(), None
    if not address:
        shim = _lp64_shim(name)
        address = shim.address
    llvm.add_symbol(f"fastgd_{name}64", address)
    return shim


_SHIMS = (_register_syrk("dsyrk", numpy_dsyrk_address), _register_syrk("ssyrk", numpy_ssyrk_address))  # fmt: skip
_dsyrk = types.ExternalFunction("fastgd_dsyrk64", types.void(*_DSYRK_ARGS))
_ssyrk = types.ExternalFunction("fastgd_ssyrk64", types.void(*_DSYRK_ARGS))

# Newton's pass: 0 = no Hessian, 1 = Gram products in float64, 2 = in float32 (each row
# block's product, added into the float64 chunk sums: hessian_dtype="float32").
NO_HESSIAN, GRAM64, GRAM32 = 0, 1, 2


@njit(**NUMBA_OPTIONS)
def _syrk(S, m, n, C, beta):
    """``C[:n, :n] = S[:m, :n]^T S[:m, :n] + beta C[:n, :n]`` on the upper triangle of the
    row-major ``C`` (Fortran's lower) by BLAS, dsyrk or ssyrk (the dtype of ``S`` and
    ``C``): ``S`` is C-contiguous, read as the Fortran matrix S^T (rows ``S.shape[1]``
    apart); ``C`` is square, ``n`` rows or more."""
    chars = np.array([76, 78], dtype=np.uint8)  # "L", "N"
    sizes = np.array([n, m, S.shape[1], C.shape[1]], dtype=np.int64)  # n, k, lda, ldc
    one, b = np.ones(1, dtype=S.dtype), np.full(1, beta, dtype=S.dtype)
    args = (_address(chars[:1]), _address(chars[1:]), _address(sizes[:1]), _address(sizes[1:2]),
            _address(one), _address(S), _address(sizes[2:3]), _address(b), _address(C),
            _address(sizes[3:]))  # fmt: skip
    if S.itemsize == 4:
        _ssyrk(*args)
    else:
        _dsyrk(*args)


@njit(**NUMBA_OPTIONS)
def _add_block_gram(S, m, C, T):
    """``T += S[:m]^T S[:m]`` (upper triangle, float64 ``T`` (n, n)) for the scaled rows
    ``S`` (rows, ld; float32 or float64, ``ld`` a whole number of vectors and at least
    ``n``, zeros past ``n``). Up to TILE_MAX_COLUMNS: register tiles
    (:func:`.tiles.gram_strip`) into the scratch ``C`` (ld, ld, the dtype of ``S``;
    overwritten), whose triangle is then added to ``T``; wider rows: BLAS's syrk (float64
    straight into ``T``). Each float32 block's product is rounded on its own (relative
    error ~m eps32 at worst) and the blocks are summed in float64, so the error does not
    grow with the number of rows."""
    n, ld = T.shape[0], S.shape[1]
    if ld > TILE_MAX_COLUMNS and S.itemsize == 8:
        _syrk(S, m, n, T, 1.0)
        return
    if ld > TILE_MAX_COLUMNS:
        _syrk(S, m, n, C, 0.0)
    else:
        wide = 2 * GRAM_VECTOR_BYTES // S.itemsize  # two vectors
        for j0 in range(0, ld, wide):
            gram_strip(S, m, j0, C, min(wide, ld - j0))
    for i in range(n):
        for j in range(i, n):
            T[i, j] += C[i, j]


def _rows64(X, start, m, Xb):
    """Rows ``start:start + m`` of ``X`` in float64: a view of float64 ``X``, a copy into
    the buffer ``Xb`` otherwise (compiled code only)."""
    raise NotImplementedError("compiled by Numba only")


@overload(_rows64, jit_options={k: v for k, v in NUMBA_OPTIONS.items() if k != "cache"})
def _rows64_of(X, start, m, Xb):
    if X.dtype == types.float64:
        return lambda X, start, m, Xb: X[start : start + m]

    def copy(X, start, m, Xb):
        xb = Xb[:m]
        for r in range(m):
            for j in range(X.shape[1]):
                xb[r, j] = X[start + r, j]
        return xb

    return copy


@njit(**NUMBA_OPTIONS)
def _one_terms(v, y, loss_code):
    """Loss, derivative and curvature of one output ``v`` with target ``y`` (MSE or binary
    CE): scalars in, scalars out, so that a row loop calling it stays fast (a call
    passing arrays costs about 60 ns a row, more than the row's arithmetic)."""
    if loss_code == MSE:
        e = v - y
        return e * e, 2.0 * e, 2.0
    # e = exp(-|v|) <= 1: log(1 + exp(v)) = max(v, 0) + log1p(e) and
    # p (1 - p) = e / (1 + e)^2 without overflow or cancellation
    e = math.exp(-abs(v))
    p = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    return max(v, 0.0) + math.log1p(e) - y * v, p - y, e / ((1.0 + e) * (1.0 + e))


@njit(**NUMBA_OPTIONS)
def _row_terms(z, y, loss_code, D, Hw, r, want_h):
    """Loss of one row with decision values ``z``; writes ``D[r]`` and ``Hw[r]``."""
    k = z.shape[0]
    if loss_code == MSE:
        loss = 0.0
        for c in range(k):
            e = z[c] - y[c]
            loss += e * e / k
            D[r, c] = 2.0 * e / k
        Hw[r, 0] = 2.0 / k
        return loss
    if loss_code == BCE:
        loss, D[r, 0], Hw[r, 0] = _one_terms(z[0], y[0], BCE)
        return loss
    label = int(y[0])
    m = z[0]
    for c in range(1, k):
        m = max(m, z[c])
    s = 0.0
    for c in range(k):
        D[r, c] = math.exp(z[c] - m)
        s += D[r, c]
    for c in range(k):
        D[r, c] /= s
    if want_h:
        p = 0
        for c in range(k):
            for c2 in range(c, k):
                Hw[r, p] = D[r, c] * ((1.0 if c == c2 else 0.0) - D[r, c2])
                p += 1
    loss = m + math.log(s) - z[label]
    D[r, label] -= 1.0
    return loss


@njit(**NUMBA_OPTIONS)
def _weighted_row(z, Y, weights, i, loss_code, D, Hw, r, want_h):
    """Loss of row ``i`` with decision values ``z``, times its weight; writes ``D[r]``
    and ``Hw[r]`` (weight applied)."""
    loss = _row_terms(z, Y[i], loss_code, D, Hw, r, want_h)
    if weights.shape[0] > 0:
        w = weights[i]
        loss *= w
        D[r] *= w
        Hw[r] *= w
    return loss


@njit(**NUMBA_OPTIONS)
def _block_terms(Z, Y, weights, start, loss_code, D, Hw, want_h):
    """Weighted loss sum of a block; fills its ``D`` and ``Hw`` rows (weights applied)."""
    loss = 0.0
    for r in range(Z.shape[0]):
        loss += _weighted_row(Z[r], Y, weights, start + r, loss_code, D, Hw, r, want_h)
    return loss


@njit(**NUMBA_OPTIONS)
def _one_output(X, Y, weights, P, loss_code, start, m, S, G, D, Hw):
    """One output (MSE or binary CE), rows ``start:start + m``: their weighted loss sum;
    adds ``D [x, 1]`` to ``G`` and, with a Hessian, writes the rows ``sqrt(h) [x, 1]``
    into ``S`` (float64 or float32) for the Gram product; ``S`` None: no Hessian (Numba
    compiles this once per type of ``S`` and drops the dead branch).

    Without a Hessian each row is read once (:func:`_gradient_rows`). With one the block
    goes in three sweeps, the rows' decision values, their loss terms (into the scratch
    ``D`` and ``Hw``), then the gradient and scaled rows, the last re-reading the block's
    rows from the per-core cache. Done row by row, each row's chain of dot product, exp,
    log1p and divisions stood between its loads and its stores, and the stores of ``S``
    kept the next rows' loads from overlapping it: measured on one 100,000 x 100 pass
    (AVX-512, one thread), 10.3 ms against 5.6 ms for these sweeps, the Gram product
    apart. Each sum still adds its rows in row order, so the result is the same.
    """
    if S is None:
        return _gradient_rows(X, Y, weights, P, loss_code, start, m, G)
    _decision_values(X, P, start, m, D)
    loss = _loss_terms(Y, weights, loss_code, start, m, D, Hw)
    _gradient_and_scaled_rows(X, start, m, D, Hw, S, G)
    return loss


@njit(**NUMBA_OPTIONS)
def _gradient_rows(X, Y, weights, P, loss_code, start, m, G):
    """The loss sum of rows ``start:start + m`` and ``G += D [x, 1]``, each row read once:
    its decision value ``z = [x, 1] . P`` (a vectorized dot product: one output leaves
    BLAS a matrix-vector product per block, and three block passes cost more than the
    read of X), its loss and derivative, its gradient term."""
    d = X.shape[1]
    p, g = P.reshape(P.size), G.reshape(G.size)
    weighted = weights.shape[0] > 0
    loss = 0.0
    for r in range(m):
        i = start + r
        v = p[d]
        for j in range(d):
            v += X[i, j] * p[j]
        f, e, _ = _one_terms(v, Y[i, 0], loss_code)
        if weighted:
            f, e = f * weights[i], e * weights[i]
        loss += f
        for j in range(d):
            g[j] += e * X[i, j]
        g[d] += e
    return loss


@njit(**NUMBA_OPTIONS)
def _decision_values(X, P, start, m, D):
    """``D[r, 0] = [x, 1] . P`` for the rows ``x`` of ``start:start + m``, the row
    PREFETCH_AHEAD places ahead prefetched (a sweep of dot products alone outruns the
    hardware prefetcher: measured 3.3 ms against 1.7 ms with it for 100,000 x 100)."""
    d, n = X.shape[1], X.shape[0]
    p = P.reshape(P.size)
    for r in range(m):
        i = start + r
        if i + PREFETCH_AHEAD < n:
            prefetch_row(X, i + PREFETCH_AHEAD)
        v = p[d]
        for j in range(d):
            v += X[i, j] * p[j]
        D[r, 0] = v


@njit(**NUMBA_OPTIONS)
def _loss_terms(Y, weights, loss_code, start, m, D, Hw):
    """The weighted loss sum of rows ``start:start + m`` whose decision values are in
    ``D[:m, 0]``; overwrites them with the derivatives and writes ``Hw[r, 0] = sqrt(h)``
    (``h < 0``, a rounding of 0: 0)."""
    weighted = weights.shape[0] > 0
    loss = 0.0
    for r in range(m):
        i = start + r
        f, e, h = _one_terms(D[r, 0], Y[i, 0], loss_code)
        if weighted:
            w = weights[i]
            f, e, h = f * w, e * w, h * w
        loss += f
        D[r, 0] = e
        Hw[r, 0] = math.sqrt(max(h, 0.0))
    return loss


@njit(**NUMBA_OPTIONS)
def _gradient_and_scaled_rows(X, start, m, D, Hw, S, G):
    """``G += D [x, 1]`` and ``S[r, :d + 1] = sqrt(h) [x, 1]`` over rows ``start:start +
    m`` (``D[:m, 0]`` the derivatives, ``Hw[:m, 0]`` the roots)."""
    d = X.shape[1]
    g = G.reshape(G.size)
    for r in range(m):
        i = start + r
        e, root = D[r, 0], Hw[r, 0]
        for j in range(d):
            g[j] += e * X[i, j]
            S[r, j] = root * X[i, j]
        S[r, d] = root
        g[d] += e


@njit(**NUMBA_OPTIONS)
def _scaled_row(x, h, s):
    """``s[:d + 1] = sqrt(h) [x, 1]`` (``h < 0``, a rounding of 0: 0)."""
    root = math.sqrt(max(h, 0.0))
    d = x.shape[0]
    for j in range(d):
        s[j] = root * x[j]
    s[d] = root


@njit(**NUMBA_OPTIONS)
def _chunk(X, Y, weights, P, loss_code, want_h, lo, hi, work, G, T):
    """Loss sum of rows ``lo:hi``; adds their gradient and Hessian sums to ``G`` and ``T``
    (``want_h``: :data:`NO_HESSIAN`, :data:`GRAM64` or :data:`GRAM32`), block by block.
    ``work``: the thread's buffers ``(Xb, S, D, Hw, S32, C32, C64)`` of one row block (S:
    (rows, ld64), with a Hessian; S32: (rows, ld32) and C32 (ld32, ld32) in float32, with
    GRAM32 only; C64 (ld64, ld64), with GRAM64 on tiles only; ``ld`` the d + 1 columns
    rounded up to whole vectors, zeros past them)."""
    S, S32, C32 = work[1], work[4], work[5]
    rows = min(work[2].shape[0], hi - lo)
    loss = 0.0
    for start in range(lo, hi, rows):
        m = min(rows, hi - start)
        if P.shape[1] > 1:
            loss += _block(X, Y, weights, P, loss_code, want_h, start, m, work, G, T)
            continue
        if want_h == GRAM32:
            loss += _one_output(X, Y, weights, P, loss_code, start, m, S32, G, work[2], work[3])
            _add_block_gram(S32, m, C32, T[0])
        elif want_h:
            loss += _one_output(X, Y, weights, P, loss_code, start, m, S, G, work[2], work[3])
            _add_block_gram(S, m, work[6], T[0])
        else:
            loss += _one_output(X, Y, weights, P, loss_code, start, m, None, G, work[2], work[3])
    return loss


@njit(**NUMBA_OPTIONS)
def _block(X, Y, weights, P, loss_code, want_h, start, m, work, G, T):
    """Several outputs: the terms of rows ``start:start + m`` by block products (BLAS) on
    the rows of ``X`` (float64: in place), the intercept's row of ``X~ = [X, 1]`` summed
    apart: BLAS is fastest on ``d`` columns, and float64 rows need no copy."""
    d = X.shape[1]
    k = P.shape[1]
    Xb, S, D, Hw, S32, C32, _ = work
    xb = _rows64(X, start, m, Xb)
    Z = np.dot(xb, np.ascontiguousarray(P[:d]))
    for r in range(m):
        for c in range(k):
            Z[r, c] += P[d, c]
    loss = _block_terms(Z, Y, weights, start, loss_code, D, Hw, want_h)
    G[:d] += np.dot(xb.T, D[:m])
    for r in range(m):
        for c in range(k):
            G[d, c] += D[r, c]
    if want_h:
        s = S.reshape(S.size)[: m * d].reshape((m, d))  # the buffer's first m rows of d
        if want_h == GRAM32:
            _add_curvature32(xb, Hw, (s, S32, C32), k, T)
        else:
            _add_curvature(xb, Hw, s, k, T)
    return loss


@njit(**NUMBA_OPTIONS)
def _add_curvature(xb, Hw, s, k, T):
    """``T[p] += X~^T diag(Hw[:, p]) X~`` for every pair ``p`` (upper triangles), with
    ``X~ = [xb, 1]``. A pair with weights >= 0 (one output; softmax's ``c == c'`` blocks,
    ``p (1 - p)``) is the Gram matrix of the rows scaled by ``sqrt(h)``: dsyrk, one
    triangle. The others (softmax ``-p_c p_c'``, either sign) are full products. The
    intercept's column is ``sum_r h_r x_r`` and its corner ``sum_r h_r``."""
    m, d = xb.shape
    p = 0
    classes = k if T.shape[0] > 1 else 1  # one pair for MSE, whatever its outputs
    for c in range(classes):
        for c2 in range(c, classes):
            gram = c == c2
            for r in range(m):
                h = Hw[r, p]
                if gram:
                    h = math.sqrt(h) if h > 0.0 else 0.0
                for j in range(d):
                    s[r, j] = h * xb[r, j]
            if gram:
                _syrk(s, m, d, T[p], 1.0)
            else:
                T[p, :d, :d] += np.dot(xb.T, s)
            # the intercept: h x_j = sqrt(h) s_j for the Gram pairs, s_j otherwise
            w = np.empty(m)
            for r in range(m):
                h = Hw[r, p]
                w[r] = (math.sqrt(h) if h > 0.0 else 0.0) if gram else 1.0
                T[p, d, d] += w[r] * w[r] if gram else h
            T[p, :d, d] += np.dot(s.T, w)
            p += 1


@njit(**NUMBA_OPTIONS)
def _add_curvature32(xb, Hw, scratch, k, T):
    """:func:`_add_curvature` with the Gram pairs (``h >= 0``) in float32: the rows of
    ``X~ = [xb, 1]`` scaled by ``sqrt(h)`` are rounded to float32 into ``s32`` (m, d + 1)
    and their product, one triangle, intercept included, is added to the float64 sums
    (:func:`_add_block_gram`). Softmax's off-diagonal pairs are the float64 products of
    :func:`_add_curvature`."""
    s, s32, C32 = scratch
    m, d = xb.shape
    classes = k if T.shape[0] > 1 else 1  # one pair for MSE, whatever its outputs
    p = 0
    for c in range(classes):
        for c2 in range(c, classes):
            if c != c2:
                _add_pair(xb, Hw[:, p], s, T[p])
            else:
                for r in range(m):
                    _scaled_row(xb[r], Hw[r, p], s32[r])
                _add_block_gram(s32, m, C32, T[p])
            p += 1


@njit(**NUMBA_OPTIONS)
def _add_pair(xb, hp, s, Tp):
    """``Tp += X~^T diag(hp) X~`` (upper triangle) for a pair whose ``hp`` has either sign
    (softmax's ``-p_c p_c'``): a full float64 product, as in :func:`_add_curvature`."""
    m, d = xb.shape
    for r in range(m):
        for j in range(d):
            s[r, j] = hp[r] * xb[r, j]
        Tp[d, d] += hp[r]
    Tp[:d, :d] += np.dot(xb.T, s)
    Tp[:d, d] += np.dot(s.T, np.ones(m))


@njit(parallel=True, **NUMBA_OPTIONS)
def _chunks(X, Y, weights, P, loss_code, want_h, bounds, rows, F, G, T, n_slots):
    """The chunks in ``n_slots`` contiguous runs, one per thread, each with its own block
    buffers allocated once (allocating them per chunk costs up to a quarter of the pass
    where ``malloc`` returns freed memory to the system at once, as in Dask's workers).
    Each chunk's sums are its own, so the result does not depend on ``n_slots``."""
    n_chunks = bounds.shape[0] - 1
    d1, k = X.shape[1] + 1, P.shape[1]
    rows = min(rows, bounds[1] - bounds[0] + 1)
    per32, per64 = ROW_BYTES // 4, ROW_BYTES // 8  # whole vectors (hessian_layout)
    ld32, ld64 = -(-d1 // per32) * per32, -(-d1 // per64) * per64
    rows32, ld32 = (rows, ld32) if want_h == GRAM32 else (0, 0)
    s_rows = rows if want_h else 0
    c64 = ld64 if want_h == GRAM64 and ld64 <= TILE_MAX_COLUMNS else 0  # syrk: into T
    for s in prange(n_slots):
        work = (np.empty((rows, d1 - 1)), np.zeros((s_rows, ld64)), np.empty((rows, k)),
                np.empty((rows, T.shape[1])), np.zeros((rows32, ld32), dtype=np.float32),
                np.empty((ld32, ld32), dtype=np.float32), np.empty((c64, c64)))  # fmt: skip
        for c in range(s * n_chunks // n_slots, (s + 1) * n_chunks // n_slots):
            F[c] = _chunk(X, Y, weights, P, loss_code, want_h, bounds[c], bounds[c + 1],
                          work, G[c], T[c])  # fmt: skip


def loss_gradient_hessian(model, data, params, n_threads=1, hessian=True, gram_dtype="float64"):
    """Mean (weighted) loss, gradient and Hessian in one compiled pass, in float64.

    See :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`.
    """
    X, Y, weights = data
    n, d = X.shape
    k = model.n_outputs
    bounds = chunk_bounds(n)
    n_chunks = bounds.size - 1
    P = np.ascontiguousarray(params, dtype=np.float64).reshape(d + 1, k)
    F, G = np.zeros(n_chunks), np.zeros((n_chunks, d + 1, k))
    # without a Hessian the chunks still get (empty) buffers: one compiled signature
    shape = (n_pairs(model.loss_code, k), d + 1, d + 1) if hessian else (1, 0, 0)
    T = np.zeros((n_chunks, *shape))
    with numba_threads(n_threads), single_threaded_blas():
        _chunks(X, Y, weights, P, int(model.loss_code), _mode(hessian, gram_dtype), bounds,
                block_rows(d + 1), F, G, T, min(n_threads, n_chunks))  # fmt: skip
    return assemble(model, n, F, G, T if hessian else None)


def _mode(hessian, gram_dtype):
    """The kernel's ``want_h`` code for ``hessian`` and ``gram_dtype``."""
    if not hessian:
        return NO_HESSIAN
    return GRAM32 if gram_dtype == "float32" else GRAM64
