"""NumPy reference for multi-layer perceptrons: forward and backward written out plainly.

The oracle for the compiled network kernels. Layout, codes and the batch-norm formulas are
in :mod:`fastgd.specs.network`; the forward pass is :func:`fastgd.backends.shared.forward`
(prediction uses it on every backend); the update of the flat parameters and the epoch
loop are those of the linear models (:mod:`fastgd.backends.numpy.update`).
"""

import numpy as np

from ...specs import network as net
from ..contract import Data
from ..shared import forward, output_loss
from .update import train_loop


def loss_and_gradient(model, data, params):
    """Mean loss of a network over the rows of ``data`` (one batch) and its gradient.

    Batch norm uses the statistics of these rows (training mode).

    Parameters
    ----------
    model : NetworkModel
        Layer sizes, batch-norm flags, activation, its hyperparameters and the loss.
    data : Data
        Rows, targets and sample weights.
    params : ndarray of shape (n_params,)
        The flat parameters (layout in :mod:`fastgd.specs.network`).

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_params,)
    """
    loss, grad, _ = _loss_gradient_stats(model, data, params)
    return loss, grad


def train_epochs(model, data, state, update, block, n_threads):
    """Train a network for up to ``block.n_epochs`` epochs, updating ``state`` in place.

    See :meth:`fastgd.backends.contract.Backend.train_epochs`. The running averages move
    after each batch's forward pass; every parameter is trained, the weights penalized.
    """
    sizes, batch_norm = model.sizes, model.batch_norm
    offsets = net.layout(sizes, batch_norm)
    momentum = model.net_hyper[net.BN_MOMENTUM]
    norms_squared = [0.0]  # summed over the batches of the epoch

    X, Y, weights = data.X, data.Y, data.weights  # a CSR matrix for SparseData

    def batch_step(rows, epoch):
        batch = Data(X[rows], Y[rows], weights[rows] if weights.size else weights)
        loss, grad, cache = _loss_gradient_stats(model, batch, state.params)
        _update_running(state.running, cache, offsets, batch_norm, momentum, batch.X.shape[0])
        norms_squared[0] = norms_squared[0] + layer_gradient_norms(grad, sizes, batch_norm) ** 2
        return loss, grad

    def epoch_done(epoch, n_batches):
        block.grad_norms[epoch] = np.sqrt(norms_squared[0] / n_batches)
        norms_squared[0] = 0.0

    n_weights = offsets["n_weights"]
    return train_loop(
        X.shape[0], batch_step, state, update, block, n_weights, state.params.size, epoch_done
    )


def activation_slope(U, A, code, slope):
    """``act'(U)``, using the output ``A = act(U)`` where that is cheaper."""
    if code == net.RELU:
        return (U > 0).astype(U.dtype)
    if code == net.LEAKY_RELU:
        return np.where(U > 0, 1.0, slope).astype(U.dtype)
    if code == net.SIGMOID:
        return A * (1.0 - A)
    if code == net.TANH:
        return 1.0 - A * A
    return np.ones_like(U)


def _loss_gradient_stats(model, data, params):
    """Loss, gradient, and the cache of the forward pass (for the batch statistics)."""
    sizes, batch_norm, activation = model.sizes, model.batch_norm, model.activation
    offsets = net.layout(sizes, batch_norm)
    slope = model.net_hyper[net.LEAKY_SLOPE]
    n_layers = len(sizes) - 1
    Z, cache = forward(model, data.X, params, None, training=True)
    loss, dZ = output_loss(Z, data.Y, data.weights, model.loss_code)
    dZ = dZ.astype(params.dtype, copy=False)
    grad = np.zeros_like(params)
    for layer in range(n_layers - 1, -1, -1):
        entry = cache[layer]
        if layer < n_layers - 1:
            # dZ currently holds dloss/da of this layer's output
            dU = dZ * activation_slope(entry["U"], entry["A"], activation, slope)
            if batch_norm[layer]:
                X_hat, inv_std, gamma = entry["X_hat"], entry["inv_std"], entry["gamma"]
                g, be = offsets["gamma"][layer], offsets["beta"][layer]
                n_out = sizes[layer + 1]
                grad[g : g + n_out] = (dU * X_hat).sum(axis=0)
                grad[be : be + n_out] = dU.sum(axis=0)
                # through the normalization: the batch mean and variance depend on every row
                dX_hat = dU * gamma
                rows = X_hat.shape[0]
                dZ = (inv_std / rows) * (
                    rows * dX_hat - dX_hat.sum(axis=0) - X_hat * (dX_hat * X_hat).sum(axis=0)
                )
            else:
                dZ = dU
        n_in, n_out = sizes[layer], sizes[layer + 1]
        w, b = offsets["weight"][layer], offsets["bias"][layer]
        # a sparse first layer: SciPy's sparse.T @ dense product, a dense array
        grad[w : w + n_in * n_out] = np.asarray(entry["A_in"].T @ dZ).ravel()
        if not batch_norm[layer]:
            grad[b : b + n_out] = dZ.sum(axis=0)
        if layer > 0:
            dZ = dZ @ entry["W"].T
    return loss, grad, cache


def layer_gradient_norms(grad, sizes, batch_norm):
    """Euclidean norm of the gradient of each layer's weight matrix."""
    offsets = net.layout(sizes, batch_norm)
    return np.array([
        np.linalg.norm(grad[w : w + sizes[i] * sizes[i + 1]].astype(np.float64))
        for i, w in enumerate(offsets["weight"])
    ])  # fmt: skip


def _update_running(running, cache, offsets, batch_norm, momentum, rows):
    """Move the running averages toward this batch's mean and unbiased variance."""
    for layer, entry in enumerate(cache[:-1]):
        if not batch_norm[layer]:
            continue
        r, n_out = offsets["running"][layer], entry["mean"].shape[0]
        unbiased = entry["var"] * (rows / (rows - 1)) if rows > 1 else entry["var"]
        running[r : r + n_out] = (1 - momentum) * running[r : r + n_out] + momentum * entry["mean"]
        running[r + n_out : r + 2 * n_out] = (1 - momentum) * running[r + n_out : r + 2 * n_out] + momentum * unbiased  # fmt: skip
