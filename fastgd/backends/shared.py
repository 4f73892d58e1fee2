"""NumPy maths shared by every backend and the API: output losses and prediction.

Prediction is BLAS-bound (whole matrix products, no per-batch Python loop), so it runs in
NumPy on every backend; the loss of output values serves the validation loss of early
stopping. The NumPy reference backend builds its training pass on the same functions.
"""

import numpy as np

from .._config import HELD_OUT_MIN_ROWS, HELD_OUT_VALUES
from ..specs import losses
from ..specs import network as net
from . import recurrent_forward
from .contract import Data, LinearModel, NetworkModel, RecurrentModel, is_sparse, n_rows


def stable_sigmoid(z):
    # exp of a non-positive number never overflows
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def output_loss(Z, Y, weights, loss_code):
    """Mean (weighted) loss of decision values ``Z`` (n, k) and its gradient ``dZ``.

    ``dZ`` is the derivative of the mean loss, i.e. already divided by ``n``. Shared by
    the linear models and the networks (whose output layer gives ``Z``).
    """
    n = Z.shape[0]
    sample_loss, dZ = _sample_losses(Z, Y, loss_code)
    if weights.size:
        sample_loss = (weights * sample_loss.T).T
        dZ = weights[:, None] * dZ
    return float(np.sum(sample_loss) / n), dZ / n


def _sample_losses(Z, Y, loss_code):
    """Unweighted loss of each sample, (n,) or (n, k) (MSE: summed over the outputs by
    :func:`output_loss`), and dloss/dZ, not yet divided by ``n``."""
    n, k = Z.shape
    if loss_code == losses.MSE:
        R = Z - Y
        sample_loss = R * R / k  # summed over outputs by the caller: the mean over outputs
        dZ = (2.0 / k) * R
    elif loss_code == losses.BINARY_CROSS_ENTROPY:
        z, y = Z[:, 0], Y[:, 0]
        # log(1 + exp(z)) - y z, without overflow for large |z|
        sample_loss = np.logaddexp(0.0, z) - y * z
        dZ = (stable_sigmoid(z) - y)[:, None]
    elif loss_code == losses.CATEGORICAL_CROSS_ENTROPY:
        labels = Y[:, 0].astype(np.intp)
        rows = np.arange(n)
        m = Z.max(axis=1)
        E = np.exp(Z - m[:, None])
        s = E.sum(axis=1)
        sample_loss = m + np.log(s) - Z[rows, labels]
        dZ = E / s[:, None]
        dZ[rows, labels] -= 1.0
    else:
        raise ValueError(f"unknown loss code {loss_code}")
    return sample_loss, dZ


def activate(U, code, slope):
    """The activation ``act(U)``."""
    if code == net.RELU:
        return np.maximum(U, 0.0)
    if code == net.LEAKY_RELU:
        return np.where(U > 0, U, (slope * U).astype(U.dtype))
    if code == net.SIGMOID:
        return stable_sigmoid(U)
    if code == net.TANH:
        return np.tanh(U)
    return U


def forward(model, X, params, running, training):
    """Output ``Z`` of a network (:class:`~fastgd.backends.contract.NetworkModel`) and,
    per layer, what the backward pass needs. ``training``: batch norm with the statistics
    of these rows, else with the running averages."""
    sizes, batch_norm, activation, net_hyper = model.sizes, model.batch_norm, model.activation, model.net_hyper  # fmt: skip
    offsets = net.layout(sizes, batch_norm)
    slope, eps = net_hyper[net.LEAKY_SLOPE], net_hyper[net.BN_EPS]
    n_layers = len(sizes) - 1
    A = X
    cache = []
    for layer in range(n_layers):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        w, b = offsets["weight"][layer], offsets["bias"][layer]
        W = params[w : w + n_in * n_out].reshape(n_in, n_out)
        Z = A @ W if batch_norm[layer] else A @ W + params[b : b + n_out]
        entry = dict(A_in=A, W=W)
        if layer == n_layers - 1:
            cache.append(entry)
            return Z, cache
        if batch_norm[layer]:
            g, be = offsets["gamma"][layer], offsets["beta"][layer]
            gamma, beta = params[g : g + n_out], params[be : be + n_out]
            if training:  # statistics of this batch
                mean = Z.mean(axis=0)
                var = ((Z - mean) ** 2).mean(axis=0)
            else:  # running averages
                r = offsets["running"][layer]
                mean, var = running[r : r + n_out], running[r + n_out : r + 2 * n_out]
            inv_std = (1.0 / np.sqrt(var + eps)).astype(Z.dtype)
            X_hat = (Z - mean) * inv_std
            U = gamma * X_hat + beta
            entry.update(X_hat=X_hat, inv_std=inv_std, gamma=gamma, mean=mean, var=var)
        else:
            U = Z
        A = activate(U, activation, slope)
        entry.update(U=U, A=A)
        cache.append(entry)


def sequence_loss(model, Z, data, valid):
    """Mean loss of a recurrent model's decision values ``Z`` and its gradient ``dZ`` (same
    shape as ``Z``): over the sequences (``output="last"``, Z (B, k)), or over the valid
    (row, step) pairs of ``output="sequence"`` (Z (B * T, k), row ``i * T + t``; ``valid``
    (B, T) marks the steps that are not padding, and the other rows of dZ are 0)."""
    if not model.sequence:
        loss, dZ = output_loss(Z, data.Y, data.weights, model.loss_code)
        return loss, dZ.astype(Z.dtype, copy=False)
    keep, Z_valid, Y, weights = _valid_steps(Z, data, valid)
    loss, dZ_valid = output_loss(Z_valid, Y, weights, model.loss_code)
    dZ = np.zeros_like(Z)
    dZ[keep] = dZ_valid
    return loss, dZ


def _valid_steps(Z, data, valid):
    """``output="sequence"``: the mask of the valid (row, step) pairs, and their decision
    values, targets and weights (rows ``i * T + t``, in that order)."""
    B, T = valid.shape
    keep = valid.reshape(-1)
    Y = data.Y.reshape(B * T, -1)
    weights = np.repeat(data.weights, T)[keep] if data.weights.size else data.weights
    return keep, Z[keep], Y[keep], weights


def data_loss(model, data, params, running):
    """Mean loss of a kernel model's predictions on ``data`` (the validation loss of early
    stopping): batch norm from the running averages, padded steps left out."""
    if isinstance(model, RecurrentModel):
        Z, cache = recurrent_forward.forward(model, data.X, data.lengths, params)
        return sequence_loss(model, Z, data, cache["valid"])[0]
    return output_loss(predict(model, data.X, params, running), data.Y, data.weights, model.loss_code)[0]  # fmt: skip


def held_out_loss(model, data, rows, params, running):
    """:func:`data_loss` of the rows ``rows`` (sorted) of ``data``, read where they are.

    The rows are gathered a block at a time (about ``HELD_OUT_VALUES`` values of X or
    of the widest layer per block, at least ``HELD_OUT_MIN_ROWS`` rows), never all at
    once; the loss of each sample is kept (O(rows), like the targets) and they are
    weighted and summed exactly as :func:`output_loss` sums them for the gathered rows.
    So the result is :func:`data_loss` of ``rows`` bit for bit: the matrix products of
    prediction give each row the same value in a block of any number of rows but one
    (BLAS's matrix-matrix product sums a row's terms in an order that does not depend on
    the other rows; a single row goes through its matrix-vector product, which rounds
    differently: hence the minimum).
    """
    n = rows.shape[0]
    per_block = max(HELD_OUT_MIN_ROWS, HELD_OUT_VALUES // _row_width(model, data))
    n_blocks = max(1, n // per_block)  # blocks of per_block to 2 * per_block rows
    bounds = [(b * n) // n_blocks for b in range(n_blocks + 1)]
    parts, weights = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        Z, Y, w = _outputs(model, _block(data, rows[lo:hi]), params, running)
        parts.append(_sample_losses(Z, Y, model.loss_code)[0])
        weights.append(w)
    sample_loss = parts[0] if n_blocks == 1 else np.concatenate(parts)
    weights = weights[0] if n_blocks == 1 else np.concatenate(weights)
    if weights.size:
        sample_loss = (weights * sample_loss.T).T
    return float(np.sum(sample_loss) / sample_loss.shape[0])


def _outputs(model, data, params, running):
    """Decision values, targets and weights of the outputs that enter the loss."""
    if not isinstance(model, RecurrentModel):
        return predict(model, data.X, params, running), data.Y, data.weights
    Z, cache = recurrent_forward.forward(model, data.X, data.lengths, params)
    if not model.sequence:
        return Z, data.Y, data.weights
    return _valid_steps(Z, data, cache["valid"])[1:]


def _row_width(model, data):
    """Values one row gathers or produces at most: its features (the stored entries of an
    average CSR row) or the widest layer of a network over its steps."""
    if is_sparse(data):
        width = -(-int(data.indptr[-1]) // max(1, n_rows(data)))
    else:
        width = int(np.prod(data.X.shape[1:]))
    if isinstance(model, NetworkModel):
        width = max(width, int(np.max(model.sizes)))
    elif isinstance(model, RecurrentModel):
        width = max(width, int(data.X.shape[1]) * 4 * int(model.hidden))
    return max(width, 1)


def _block(data, rows):
    """The rows ``rows`` of ``data`` gathered into a container of their own; CSR rows as
    a ``scipy.sparse`` matrix of just their entries (O(their non-zeros))."""
    if not is_sparse(data):
        return type(data)(*(a[rows] if a.size else a for a in data))
    from scipy import sparse

    starts, counts = data.indptr[rows], data.indptr[rows + 1] - data.indptr[rows]
    indptr = np.zeros(rows.shape[0] + 1, dtype=data.indptr.dtype)
    np.cumsum(counts, out=indptr[1:])
    # entry e of the block is entry starts[r] + (e - indptr[r]) of the whole matrix
    positions = np.repeat(starts - indptr[:-1], counts) + np.arange(indptr[-1])
    X = sparse.csr_matrix(
        (data.values[positions], data.indices[positions], indptr),
        shape=(rows.shape[0], int(data.n_features)),
    )
    weights = data.weights[rows] if data.weights.size else data.weights
    return Data(X, data.Y[rows], weights)


def predict(model, X, params, running, lengths=None):
    """Decision values (n, k) of a kernel model: ``X @ W + b``, or a network's output
    layer with batch norm from the running averages; recurrent models: (n, k) or, with
    ``output="sequence"``, (n, T, k), from sequences ``X`` (n, T, f) of ``lengths``."""
    if isinstance(model, RecurrentModel):
        if lengths is None:
            lengths = np.full(X.shape[0], X.shape[1], dtype=np.int64)
        return recurrent_forward.predict(model, X, lengths, params)
    if isinstance(model, LinearModel):
        d, k = X.shape[1], model.n_outputs
        return X @ params[: d * k].reshape(d, k) + params[d * k :]
    Z, _ = forward(model, X, params, running, training=False)
    return Z
