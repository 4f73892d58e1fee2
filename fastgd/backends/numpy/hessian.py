"""NumPy reference of the Newton pass of the linear family: loss, gradient and Hessian.

Plain and readable (whole-matrix products on ``X~ = [X, 1]`` in float64); the oracle the
compiled backends are tested against. Contract and layout:
:meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`.
"""

import numpy as np

from ...specs import losses
from ..hessian_layout import assemble, block_rows, pairs
from ..shared import output_loss, stable_sigmoid


def _curvature(Z, loss_code, k):
    """Per-row curvature weights (n, n_pairs), before sample weights."""
    if loss_code == losses.MSE:
        return np.full((Z.shape[0], 1), 2.0 / k)  # d2/dz_c^2 of (1/k) sum (z - y)^2
    if loss_code == losses.BINARY_CROSS_ENTROPY:
        p = stable_sigmoid(Z[:, 0])
        return (p * (1.0 - p))[:, None]
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    # d2/dz_c dz_c' of logsumexp(z): p_c (delta_cc' - p_c')
    return np.column_stack([P[:, c] * ((c == c2) - P[:, c2]) for c, c2 in pairs(k)])


def _gram32(Xt, h, rows):
    """``X~^T diag(h) X~`` (``h >= 0``) as the compiled backends' float32 option computes
    it: per block of ``rows`` rows, ``S^T S`` in float32 with ``S = sqrt(h) X~`` rounded to
    float32; the blocks' products added in float64."""
    T = np.zeros((Xt.shape[1], Xt.shape[1]))
    for a in range(0, Xt.shape[0], rows):
        S = (np.sqrt(h[a : a + rows, None]) * Xt[a : a + rows]).astype(np.float32)
        T += (S.T @ S).astype(np.float64)
    return T


def _hessian_sums(Xt, h, model, gram_dtype):
    """The per-pair sums ``T[p] = X~^T diag(h_p) X~``, shape (1, n_pairs, d + 1, d + 1).
    With ``gram_dtype="float32"``, the pairs with ``h >= 0`` (one output; softmax's
    diagonal class blocks) are float32 Gram products (:func:`_gram32`)."""
    k, rows = model.n_outputs, block_rows(Xt.shape[1])
    diagonal = [c == c2 for c, c2 in pairs(k)] if h.shape[1] > 1 else [True]
    return np.stack([
        _gram32(Xt, np.maximum(h[:, p], 0.0), rows) if gram_dtype == "float32" and diagonal[p]
        else Xt.T @ (h[:, [p]] * Xt)
        for p in range(h.shape[1])
    ])[None]  # fmt: skip


def loss_gradient_hessian(model, data, params, n_threads=1, hessian=True, gram_dtype="float64"):
    """Mean (weighted) loss, its gradient and Hessian, in float64.

    See :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`; ``n_threads`` is
    unused.
    """
    X, Y, weights = data
    n, d = X.shape
    k = model.n_outputs
    Xt = np.hstack([X.astype(np.float64), np.ones((n, 1))])
    w = weights.astype(np.float64) if weights.size else np.ones(n)
    Z = Xt @ np.asarray(params, dtype=np.float64).reshape(d + 1, k)
    loss, dZ = output_loss(Z, Y.astype(np.float64), w, model.loss_code)
    F, G = np.array([loss * n]), (Xt.T @ (dZ * n))[None]
    T = None
    if hessian:
        h = _curvature(Z, model.loss_code, k) * w[:, None]
        T = _hessian_sums(Xt, h, model, gram_dtype)
    return assemble(model, n, F, G, T)
