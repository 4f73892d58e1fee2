"""What the three ``loss_gradient_hessian`` implementations share: the fixed row chunks,
the row blocks inside a chunk, and the assembly of per-chunk sums into the result.

Each backend computes, per chunk of rows, in float64 (also for float32 data):

- ``F[c]``: the sum of the (weighted) per-row losses;
- ``G[c]``: ``X~^T D``, shape (d + 1, k), with ``X~ = [X, 1]`` and ``D`` the (weighted)
  derivative of each row's loss w.r.t. its decision values;
- ``T[c, p]``: ``X~^T diag(h_p) X~``, shape (d + 1, d + 1), for each curvature weight
  ``h_p`` of the loss (:func:`n_pairs`): at least its upper triangle (row-major) is filled.

:func:`assemble` adds the chunks in chunk order (so the result does not depend on the
number of threads), divides by ``n`` and lays the Hessian out in the order of the flat
parameter vector. The NumPy reference uses one chunk; its sums are therefore not bit-equal
to the compiled backends', only equal to rounding.
"""

import numpy as np

from .._config import MAX_CHUNKS, MIN_ROWS_PER_CHUNK
from ..specs import losses

# A row block of X~ copied to float64 holds about this many entries (512 KB): the blocked
# Gram product (dsyrk) over a block that stays in the per-core cache between the block's
# reads runs fastest. Measured on a 2-core AVX2 VM (one Hessian pass, 2 threads): at
# d = 100, 0.35 s with 512-row blocks against 0.52 s with 4096; at d = 1000, 0.53 s with
# 256 rows against 0.58 s with 1024. At least 256 rows (BLAS needs a long inner
# dimension), at most 4096.
BLOCK_ENTRIES = 1 << 16

# The Gram products S^T S of one block (the rows scaled by sqrt(h)) run on the compiled
# backends' own register tiles while the block's rows have at most this many values
# (d + 1 rounded up to whole vectors): the tiles read S straight from the per-core cache,
# which holds the whole block up to there (about 512 KB in float64, as blocks hold
# BLOCK_ENTRIES values). Wider rows go to BLAS (dsyrk / ssyrk), which packs them into
# cache-sized panels. Measured one Hessian pass of 100,000 x 100 (one thread): tiles 46 ms
# float64 and 31 ms float32 against 53 and 39 ms with BLAS; 20,000 x 1000: tiles 1.21 s
# and 0.55 s against 0.70 and 0.40 s.
TILE_MAX_COLUMNS = 256

# The scaled rows of a block are padded with zeros to whole vectors of this many bytes
# (16 float32, 8 float64): the tiles' strips are one or two vectors of columns wide, of
# 32 bytes (AVX2) or 64 (AVX-512), so the padding suits either.
ROW_BYTES = 64


def padded_columns(n_columns, itemsize):
    """``n_columns`` rounded up to whole :data:`ROW_BYTES` of ``itemsize``-byte values."""
    per_vector = ROW_BYTES // itemsize
    return -(-n_columns // per_vector) * per_vector


def chunk_bounds(n):
    """Row bounds of the fixed chunks: ``bounds[c]:bounds[c + 1]`` (depends on n only)."""
    n_chunks = min(MAX_CHUNKS, max(1, n // MIN_ROWS_PER_CHUNK))
    return (np.arange(n_chunks + 1, dtype=np.int64) * n) // n_chunks


def block_rows(n_columns):
    """Rows per block of ``X~`` with ``n_columns = d + 1`` columns."""
    return int(min(4096, max(256, BLOCK_ENTRIES // n_columns)))


def n_pairs(loss_code, k):
    """Curvature weights per row: 1 for MSE and binary CE, ``k (k + 1) / 2`` for softmax
    (the pairs ``c <= c'`` of class blocks, in :func:`pair_index` order)."""
    return k * (k + 1) // 2 if loss_code == losses.CATEGORICAL_CROSS_ENTROPY else 1


def pairs(k):
    """The class pairs ``(c, c')``, ``c <= c'``, in the order of the ``T`` blocks."""
    return [(c, c2) for c in range(k) for c2 in range(c, k)]


def sum_chunks(F, G, T):
    """Chunk sums added in chunk order (the deterministic reduction)."""
    loss, grad, hess = float(F[0]), G[0].copy(), None if T is None else T[0].copy()
    for c in range(1, F.shape[0]):
        loss += F[c]
        grad += G[c]
        if T is not None:
            hess += T[c]
    return loss, grad, hess


def _symmetric(upper):
    """The symmetric matrix whose upper triangle is that of ``upper``."""
    return np.triu(upper) + np.triu(upper, 1).T


def assemble(model, n, F, G, T):
    """``(loss, grad, H)`` of :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`
    from the per-chunk sums (``T`` None: no Hessian)."""
    loss, grad, hess = sum_chunks(F, G, T)
    d1, k = grad.shape
    grad = grad.ravel() / n
    if not model.fit_intercept:
        grad[(d1 - 1) * k :] = 0.0
    if hess is None:
        return loss / n, grad, None
    if hess.shape[0] == 1:
        return loss / n, grad, _symmetric(hess[0]) / n
    H = np.empty((d1, k, d1, k))
    for p, (c, c2) in enumerate(pairs(k)):
        block = _symmetric(hess[p]) / n
        H[:, c, :, c2] = block
        H[:, c2, :, c] = block
    return loss / n, grad, H.reshape(d1 * k, d1 * k)
