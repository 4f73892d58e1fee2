"""Numba kernel of the Newton pass of the linear family: loss, gradient and Hessian in one
read of X.

Contract and layout: :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`.
``prange`` runs over the fixed row chunks of :func:`fastgd.backends.hessian_layout.chunk_bounds`;
each chunk walks its rows block by block: it copies the block to float64 as ``X~ = [X, 1]``
(also for float32 data), computes the decision values ``X~ @ P`` and, per row, the loss,
its derivative ``D`` and the curvature weights ``h``; then it adds ``X~^T D`` to its
gradient sum and ``X~^T diag(h_p) X~`` to its Hessian sums. The block products call BLAS
(``np.dot``), single-threaded: hand-written loops reach about a third of the BLAS rate on
these products. The chunk sums are added in chunk order afterwards, so the result does not
depend on the number of threads.
"""

import math

import numpy as np
import scipy.linalg  # noqa: F401 - loads SciPy's BLAS (Numba's np.dot) before it is limited
from llvmlite import binding as llvm
from numba import prange, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ..._config import NUMBA_OPTIONS
from ...specs import losses
from ..blas import single_threaded_blas
from ..hessian_layout import assemble, block_rows, chunk_bounds, n_pairs
from .cache import njit
from .threads import numba_threads

MSE = losses.MSE
BCE = losses.BINARY_CROSS_ENTROPY

# SciPy's dsyrk (C = S^T S + C, one triangle: half the flops of np.dot(S.T, S)), called by
# symbol name: the symbol is registered here, at import, before any kernel (compiled or
# loaded from the disk cache) is linked, so the cached machine code stays valid.
llvm.add_symbol("fastgd_dsyrk", get_cython_function_address("scipy.linalg.cython_blas", "dsyrk"))
_dsyrk = types.ExternalFunction("fastgd_dsyrk", types.void(*[types.voidptr] * 10))


@intrinsic
def _address(typingctx, array):
    """The data pointer of an array, for BLAS."""

    def codegen(context, builder, signature, args):
        data = context.make_array(array)(context, builder, args[0]).data
        return builder.bitcast(data, cgutils.voidptr_t)

    return types.voidptr(array), codegen


@njit(**NUMBA_OPTIONS)
def _add_gram(S, T):
    """``T += S^T S`` on the upper triangle of the row-major ``T`` (Fortran's lower), by
    dsyrk; ``S`` is a C-contiguous (m, n) block, read as the (n, m) Fortran matrix S^T."""
    chars = np.array([76, 78], dtype=np.uint8)  # "L", "N"
    sizes = np.array([S.shape[1], S.shape[0]], dtype=np.int32)  # n, m (the leading dims: n)
    one = np.ones(1)
    _dsyrk(_address(chars[:1]), _address(chars[1:]), _address(sizes[:1]), _address(sizes[1:]),
           _address(one), _address(S), _address(sizes[:1]), _address(one), _address(T),
           _address(sizes[:1]))  # fmt: skip


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
        v = z[0]
        # e = exp(-|z|) <= 1: log(1 + exp(z)) = max(z, 0) + log1p(e) and
        # p (1 - p) = e / (1 + e)^2 without overflow or cancellation
        e = math.exp(-abs(v))
        p = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        D[r, 0] = p - y[0]
        Hw[r, 0] = e / ((1.0 + e) * (1.0 + e))
        return max(v, 0.0) + math.log1p(e) - y[0] * v
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
def _block_terms(Z, Y, weights, start, loss_code, D, Hw, want_h):
    """Weighted loss sum of a block; fills its ``D`` and ``Hw`` rows (weights applied)."""
    loss = 0.0
    weighted = weights.shape[0] > 0
    for r in range(Z.shape[0]):
        row_loss = _row_terms(Z[r], Y[start + r], loss_code, D, Hw, r, want_h)
        if weighted:
            w = weights[start + r]
            row_loss *= w
            D[r] *= w
            Hw[r] *= w
        loss += row_loss
    return loss


@njit(**NUMBA_OPTIONS)
def _times(A, B):
    """``A @ B``; with one column in ``B``, a matrix-vector product: BLAS's gemm would
    first copy (pack) all of ``A`` for a single column, as much work as the product."""
    if B.shape[1] == 1:
        return np.dot(A, B.reshape(B.shape[0])).reshape((A.shape[0], 1))
    return np.dot(A, B)


@njit(**NUMBA_OPTIONS)
def _chunk(X, Y, weights, P, loss_code, want_h, lo, hi, rows, G, T):
    """Loss sum of rows ``lo:hi``; adds their gradient and Hessian sums to ``G`` and ``T``."""
    d = X.shape[1]
    k = P.shape[1]
    rows = min(rows, hi - lo)
    Xb = np.empty((rows, d + 1))
    S = np.empty((rows, d + 1))
    D = np.empty((rows, k))
    Hw = np.empty((rows, T.shape[0]))
    loss = 0.0
    for start in range(lo, hi, rows):
        m = min(rows, hi - start)
        xb = Xb[:m]
        for r in range(m):
            for j in range(d):
                xb[r, j] = X[start + r, j]
            xb[r, d] = 1.0
        loss += _block_terms(_times(xb, P), Y, weights, start, loss_code, D, Hw, want_h)
        G += _times(xb.T, D[:m])
        if want_h:
            _add_curvature(xb, Hw, S[:m], k, T)
    return loss


@njit(**NUMBA_OPTIONS)
def _add_curvature(xb, Hw, s, k, T):
    """``T[p] += xb^T diag(Hw[:, p]) xb`` for every pair ``p``. A pair with weights >= 0
    (one output; softmax's ``c == c'`` blocks, ``p (1 - p)``) is the Gram matrix of the rows
    scaled by ``sqrt(h)``: dsyrk, one triangle. The others (softmax ``-p_c p_c'``, either
    sign) are full products."""
    m, d1 = xb.shape
    p = 0
    classes = k if T.shape[0] > 1 else 1  # one pair for MSE, whatever its outputs
    for c in range(classes):
        for c2 in range(c, classes):
            if c == c2:
                for r in range(m):
                    h = math.sqrt(Hw[r, p]) if Hw[r, p] > 0.0 else 0.0
                    for j in range(d1):
                        s[r, j] = h * xb[r, j]
                _add_gram(s, T[p])
            else:
                for r in range(m):
                    for j in range(d1):
                        s[r, j] = Hw[r, p] * xb[r, j]
                T[p] += np.dot(xb.T, s)
            p += 1


@njit(parallel=True, **NUMBA_OPTIONS)
def _chunks(X, Y, weights, P, loss_code, want_h, bounds, rows, F, G, T):
    for c in prange(bounds.shape[0] - 1):
        F[c] = _chunk(X, Y, weights, P, loss_code, want_h, bounds[c], bounds[c + 1], rows,
                      G[c], T[c])  # fmt: skip


def loss_gradient_hessian(model, data, params, n_threads=1, hessian=True):
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
        _chunks(X, Y, weights, P, int(model.loss_code), bool(hessian), bounds,
                block_rows(d + 1), F, G, T)  # fmt: skip
    return assemble(model, n, F, G, T if hessian else None)
