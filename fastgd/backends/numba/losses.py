"""Numba: per-row losses and their derivatives (codes of :mod:`fastgd.specs.losses`)."""

import math

from ..._config import NUMBA_OPTIONS
from ...specs import losses
from .cache import njit
from .fastexp import exp_nonpositive

MSE = losses.MSE
BINARY_CROSS_ENTROPY = losses.BINARY_CROSS_ENTROPY
CATEGORICAL_CROSS_ENTROPY = losses.CATEGORICAL_CROSS_ENTROPY


@njit(inline="always", **NUMBA_OPTIONS)
def _single_output_loss(v, y, loss_code):
    """Loss of one decision value ``v`` against ``y``, and dloss/dv: MSE or binary CE.

    Binary cross-entropy ``log(1 + exp(v)) - y v`` and its derivative ``sigmoid(v) - y``
    go through ``exp(-|v|)``, which never overflows.
    """
    if loss_code == MSE:
        e = v - y
        return e * e, 2.0 * e
    e = math.exp(-abs(v))
    if v >= 0:
        return v + math.log1p(e) - y * v, 1.0 / (1.0 + e) - y
    return math.log1p(e) - y * v, e / (1.0 + e) - y


@njit(inline="always", **NUMBA_OPTIONS)
def _loss_block(Y, weights, order, shuffled, lo, hi, loss_code, k, Z, chunk):
    """Summed (weighted) loss of rows ``lo:hi``; overwrites their decision values with dloss/dz.

    The branch on the loss is taken once per block, so each loop below stays simple. With
    sample weights, row i's loss and dloss/dz are multiplied by ``weights[i]``.
    """
    weighted = weights.shape[0] > 0
    loss = 0.0
    if loss_code == MSE:
        for r in range(lo, hi):
            i = order[r] if shuffled else r
            w = weights[i] if weighted else 1.0
            for c in range(k):
                e = Z[chunk, r - lo, c] - Y[i, c]
                loss += w * (e * e)
                Z[chunk, r - lo, c] = (2.0 / k) * (w * e) if weighted else (2.0 / k) * e
        return loss / k
    if loss_code == BINARY_CROSS_ENTROPY:
        for r in range(lo, hi):
            i = order[r] if shuffled else r
            row_loss, dz = _single_output_loss(Z[chunk, r - lo, 0], Y[i, 0], loss_code)
            if weighted:
                row_loss *= weights[i]
                dz *= weights[i]
            loss += row_loss
            Z[chunk, r - lo, 0] = dz
        return loss
    # categorical cross-entropy: logsumexp(z) - z[label], exponentials shifted by max(z)
    # (so their arguments are <= 0: exp_nonpositive, which the loop over classes vectorizes)
    for r in range(lo, hi):
        i = order[r] if shuffled else r
        label = int(Y[i, 0])
        z_label = Z[chunk, r - lo, label]
        m = Z[chunk, r - lo, 0]
        for c in range(1, k):
            m = max(m, Z[chunk, r - lo, c])
        s = 0.0
        for c in range(k):
            Z[chunk, r - lo, c] = exp_nonpositive(Z[chunk, r - lo, c] - m)
            s += Z[chunk, r - lo, c]
        w = weights[i] if weighted else 1.0
        for c in range(k):
            Z[chunk, r - lo, c] = Z[chunk, r - lo, c] / s
        Z[chunk, r - lo, label] -= 1.0
        if weighted:
            for c in range(k):
                Z[chunk, r - lo, c] *= w
        loss += w * (m + math.log(s) - z_label)
    return loss
