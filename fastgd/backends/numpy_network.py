"""NumPy reference for multi-layer perceptrons: forward and backward written out plainly.

The oracle for the compiled network kernels and the benchmark baseline. Layout, codes and
the batch-norm formulas are described in :mod:`fastgd.specs.network`; the update of the
flat parameter vector (penalties, clipping, schedule, optimizer) is the one of the linear
models, :func:`fastgd.backends.numpy_ref.apply_update`.
"""

import numpy as np

from ..specs import network as net
from ..specs import optimizers as opt
from ..specs import stopping
from .numpy_ref import _stable_sigmoid, apply_update, output_loss, penalty_value, tolerance_rule


def activate(U, code, slope):
    """The activation ``act(U)``."""
    if code == net.RELU:
        return np.maximum(U, 0.0)
    if code == net.LEAKY_RELU:
        return np.where(U > 0, U, (slope * U).astype(U.dtype))
    if code == net.SIGMOID:
        return _stable_sigmoid(U)
    if code == net.TANH:
        return np.tanh(U)
    return U


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


def _forward(X, params, running, sizes, batch_norm, activation, net_hyper, training):
    """Output ``Z`` and, per layer, what the backward pass needs."""
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


def network_predict(X, params, running, sizes, batch_norm, activation, net_hyper):
    """Output-layer values ``z_L`` of every row, batch norm with the running averages."""
    Z, _ = _forward(X, params, running, sizes, batch_norm, activation, net_hyper, False)
    return Z


def network_loss_and_gradient(X, Y, weights, params, sizes, batch_norm, activation, net_hyper, loss_code):  # fmt: skip
    """Mean loss of a network over the rows of ``X`` (one batch) and its gradient.

    Batch norm uses the statistics of these rows (training mode).

    Parameters
    ----------
    X, Y, weights
        As in :func:`fastgd.backends.numpy_ref.loss_and_gradient`.
    params : ndarray of shape (n_params,)
        The flat parameters (layout in :mod:`fastgd.specs.network`).
    sizes, batch_norm : ndarray of int64
        Layer sizes (L + 1) and batch-norm flags (L).
    activation : int
        Activation code of the hidden layers.
    net_hyper : ndarray of float64
        Leaky slope, batch-norm momentum, eps.
    loss_code : int
        Loss of the output layer.

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_params,)
    """
    loss, grad, _ = _loss_gradient_stats(
        X, Y, weights, params, sizes, batch_norm, activation, net_hyper, loss_code
    )
    return loss, grad


def _loss_gradient_stats(X, Y, weights, params, sizes, batch_norm, activation, net_hyper, loss_code):  # fmt: skip
    """Loss, gradient, and the cache of the forward pass (for the batch statistics)."""
    offsets = net.layout(sizes, batch_norm)
    slope = net_hyper[net.LEAKY_SLOPE]
    n_layers = len(sizes) - 1
    Z, cache = _forward(X, params, None, sizes, batch_norm, activation, net_hyper, True)
    loss, dZ = output_loss(Z, Y, weights, loss_code)
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
        grad[w : w + n_in * n_out] = (entry["A_in"].T @ dZ).ravel()
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


def network_train_epochs(
    X, Y, weights, params, running, orders, lr_epochs, n_epochs, sizes, batch_norm, activation,
    net_hyper, loss_code, batch_size, opt_code, hyper, opt_state, step_count, tol,
    n_iter_no_change, stop_state, history, grad_norms, n_threads,
):  # fmt: skip
    """Train a network for up to ``n_epochs`` epochs, updating ``params`` and ``running``.

    Arguments as :func:`fastgd.backends.numpy_ref.train_epochs`, plus the network
    description of :func:`network_loss_and_gradient`, ``running`` (the batch-norm running
    averages, updated in place after each batch's forward pass) and ``grad_norms``
    (>= n_epochs, L), float64, which receives per epoch and layer the root mean square
    over the epoch's batches of the norm of that layer's weight gradient (before penalty
    and clipping). Every parameter is trained; the penalized ones are the weights.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _network_train_epochs(
            X, Y, weights, params, running, orders, lr_epochs, n_epochs, sizes, batch_norm,
            activation, net_hyper, loss_code, batch_size, opt_code, hyper, opt_state,
            step_count, tol, n_iter_no_change, stop_state, history, grad_norms,
        )  # fmt: skip


def _network_train_epochs(
    X, Y, weights, params, running, orders, lr_epochs, n_epochs, sizes, batch_norm, activation,
    net_hyper, loss_code, batch_size, opt_code, hyper, opt_state, step_count, tol,
    n_iter_no_change, stop_state, history, grad_norms,
):  # fmt: skip
    n = X.shape[0]
    offsets = net.layout(sizes, batch_norm)
    n_weights = offsets["n_weights"]
    momentum = net_hyper[net.BN_MOMENTUM]
    shuffled = orders.shape[0] > 0
    for epoch in range(n_epochs):
        start = (params.copy(), running.copy(), opt_state.copy(), step_count[0])
        loss_sum, norms_squared, n_batches = 0.0, 0.0, 0
        for first in range(0, n, batch_size):
            last = min(first + batch_size, n)
            rows = orders[epoch % orders.shape[0], first:last] if shuffled else slice(first, last)
            Wb = weights[rows] if weights.size else weights
            loss, grad, cache = _loss_gradient_stats(
                X[rows], Y[rows], Wb, params, sizes, batch_norm, activation, net_hyper, loss_code
            )
            _update_running(running, cache, offsets, batch_norm, momentum, last - first)
            loss_sum += loss * (last - first)
            norms_squared = norms_squared + layer_gradient_norms(grad, sizes, batch_norm) ** 2
            n_batches += 1
            apply_update(
                params, grad, n_weights, params.size, opt_code, hyper, opt_state, step_count,
                lr_epochs[epoch],
            )  # fmt: skip
        grad_norms[epoch] = np.sqrt(norms_squared / n_batches)
        epoch_loss = loss_sum / n
        if hyper[opt.L1] > 0.0 or hyper[opt.L2] > 0.0:
            epoch_loss += penalty_value(params, n_weights, hyper)
        history[epoch] = epoch_loss
        if not (np.isfinite(epoch_loss) and np.all(np.isfinite(params))):
            params[:], running[:], opt_state[:], step_count[0] = start
            return epoch + 1, stopping.DIVERGED
        if tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
            return epoch + 1, stopping.CONVERGED
    return n_epochs, stopping.MAX_EPOCHS


def _update_running(running, cache, offsets, batch_norm, momentum, rows):
    """Move the running averages toward this batch's mean and unbiased variance."""
    for layer, entry in enumerate(cache[:-1]):
        if not batch_norm[layer]:
            continue
        r, n_out = offsets["running"][layer], entry["mean"].shape[0]
        unbiased = entry["var"] * (rows / (rows - 1)) if rows > 1 else entry["var"]
        running[r : r + n_out] = (1 - momentum) * running[r : r + n_out] + momentum * entry["mean"]
        running[r + n_out : r + 2 * n_out] = (1 - momentum) * running[r + n_out : r + 2 * n_out] + momentum * unbiased  # fmt: skip
