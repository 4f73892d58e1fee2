"""NumPy reference for recurrent networks: backpropagation through time written out plainly.

The oracle for the compiled recurrent kernels. The forward pass (shared with prediction)
is :func:`fastgd.backends.recurrent_forward.forward`; equations and layout are in
:mod:`fastgd.specs.recurrent`. Walking the steps from the last to the first, ``dh`` (the
gradient arriving at ``h_t``) sums the head's gradient, the gradient from the layer above
and the recurrent term from step ``t + 1``:

- LSTM (``dc`` starts at 0): ``dc += dh * o * (1 - tanh(c_t)**2)``; the gate gradients
  ``da_i = dc * g * i (1 - i)``, ``da_f = dc * c_{t-1} * f (1 - f)``,
  ``da_g = dc * i * (1 - g**2)``, ``da_o = dh * tanh(c_t) * o (1 - o)``; ``dc_{t-1} = dc * f``.
- GRU, with ``hn = W_hn h_{t-1} + b_hn``: ``da_n = dh * (1 - z) * (1 - n**2)``,
  ``da_r = da_n * hn * r (1 - r)``, ``da_z = dh * (h_{t-1} - n) * z (1 - z)``; the input
  side gets ``[da_r, da_z, da_n]``, the hidden side ``[da_r, da_z, da_n * r]``, and
  ``h_{t-1}`` also the direct term ``dh * z``.
- tanh RNN: ``da = dh * (1 - h_t**2)``.

Then ``dh_{t-1} = dA_h @ W_hh`` (+ the direct term), ``dW_ih += dA_i^T x_t``,
``dW_hh += dA_h^T h_{t-1}``, the biases get the column sums, and the layer below
``dA_i @ W_ih``. At a padded step the gate gradients are 0 and ``dh``, ``dc`` pass
through unchanged.
"""

import numpy as np

from ...diagnostics import time_offsets
from ...specs import recurrent as rec
from ..recurrent_forward import forward, head_slope, head_weights, layer_weights
from ..shared import sequence_loss
from .update import train_loop


def loss_and_gradient(model, data, params):
    """Mean loss of a recurrent network over the sequences of ``data`` and its gradient.

    Parameters
    ----------
    model : RecurrentModel
    data : SequenceData
    params : ndarray of shape (n_params,)

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_params,)
    """
    loss, grad, _ = loss_gradient_through_time(model, data, params)
    return loss, grad


def train_epochs(model, data, state, update, block, n_threads):
    """Train for up to ``block.n_epochs`` epochs, updating ``state`` in place.

    See :meth:`fastgd.backends.contract.Backend.train_epochs`.
    """
    off = _layout(model)
    norms_squared = [0.0]

    def batch_step(rows, epoch):
        batch = type(data)(*(a[rows] if a.size else a for a in data))
        loss, grad = loss_and_gradient(model, batch, state.params)
        norms_squared[0] = norms_squared[0] + layer_gradient_norms(model, grad) ** 2
        return loss, grad

    def epoch_done(epoch, n_batches):
        block.grad_norms[epoch] = np.sqrt(norms_squared[0] / n_batches)
        norms_squared[0] = 0.0

    n_weights = off["n_weights"]
    return train_loop(
        data.X.shape[0], batch_step, state, update, block, n_weights, state.params.size, epoch_done
    )


def _layout(model):
    return rec.layout(model.cell, model.n_features, model.hidden, model.n_layers, model.head_sizes)


def layer_gradient_norms(model, grad):
    """Euclidean norm of each layer's weight gradient: ``[W_ih, W_hh]`` of every recurrent
    layer, then ``W`` of every head layer."""
    norms = []
    for layer in range(model.n_layers):
        W_ih, W_hh, _, _ = layer_weights(model, grad, layer)
        norms.append(np.sqrt(np.sum(W_ih.astype(np.float64) ** 2) + np.sum(W_hh.astype(np.float64) ** 2)))  # fmt: skip
    for j in range(len(model.head_sizes) - 1):
        W, _ = head_weights(model, grad, j)
        norms.append(np.linalg.norm(W.astype(np.float64)))
    return np.array(norms)


def trim(data):
    """The batch without the steps past its longest sequence (padding everywhere there)."""
    longest = int(np.max(data.lengths)) if data.lengths.size else data.X.shape[1]
    if longest == data.X.shape[1]:
        return data
    Y = data.Y[:, :longest] if data.Y.ndim == 3 else data.Y
    return data._replace(X=data.X[:, :longest], Y=Y)


def loss_gradient_through_time(model, data, params):
    """Loss, gradient and, per recurrent layer, the (B, T) norms of ``dloss/dh_t``."""
    data = trim(data)
    Z, cache = forward(model, data.X, data.lengths, params)
    loss, dZ = sequence_loss(model, Z, data, cache["valid"])
    grad = np.zeros_like(params)
    dU = _head_backward(model, params, grad, dZ, cache["head_inputs"])
    B, T, n = cache["top"].shape
    if model.sequence:
        dH = dU.reshape(B, T, n)
    else:
        dH = np.zeros((B, T, n), dtype=params.dtype)
        dH[:, -1] = dU  # the carried state: padded steps pass it back unchanged
    norms = [None] * model.n_layers
    for layer in range(model.n_layers - 1, -1, -1):
        entry = cache["layers"][layer]
        dH, norms[layer] = _layer_backward(model, params, grad, layer, entry, dH, cache["valid"])
    return loss, grad, norms


def gradients_through_time(model, data, params, layer=0):
    """Mean norm over the sequences of dloss/dh_t of recurrent ``layer`` at the offsets
    back from the last step of :func:`fastgd.diagnostics.time_offsets`.

    Returns
    -------
    dict : offset -> mean norm (float)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        _, _, norms = loss_gradient_through_time(model, data, params)
    T = norms[layer].shape[1]
    return {k: float(norms[layer][:, T - 1 - k].mean()) for k in time_offsets(T)}


def _head_backward(model, params, grad, dZ, inputs):
    """Gradients of the head layers into ``grad``; returns dloss/d(head input)."""
    n_head = len(model.head_sizes) - 1
    for j in range(n_head - 1, -1, -1):
        W, _ = head_weights(model, params, j)
        dW, db = head_weights(model, grad, j)
        dW[...] = dZ.T @ inputs[j]
        db[...] = dZ.sum(axis=0)
        dZ = dZ @ W
        if j > 0:
            dZ = dZ * head_slope(inputs[j], model.head_activation)
    return dZ


def _gate_gradients(cell, step, dh, dc):
    """``dA_i``, ``dA_h`` (B, G h), the direct term into ``h_{t-1}`` and ``dc_{t-1}``."""
    if cell == rec.LSTM:
        i, f, g, o, tanh_c = step["i"], step["f"], step["g"], step["o"], step["tanh_c"]
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dA = np.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * step["c_prev"] * f * (1.0 - f),
                dc * i * (1.0 - g * g),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=1,
        )
        return dA, dA, 0.0, dc * f
    if cell == rec.GRU:
        r, z, n, hn = step["r"], step["z"], step["n"], step["hn"]
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        da_r = da_n * hn * r * (1.0 - r)
        da_z = dh * (step["h_prev"] - n) * z * (1.0 - z)
        dA_i = np.concatenate([da_r, da_z, da_n], axis=1)
        dA_h = np.concatenate([da_r, da_z, da_n * r], axis=1)
        return dA_i, dA_h, dh * z, dc
    h = step["h"]
    dA = dh * (1.0 - h * h)
    return dA, dA, 0.0, dc


def _layer_backward(model, params, grad, layer, entry, dH, valid):
    """BPTT through one recurrent layer; returns dloss/d(its inputs) and the (B, T) norms
    of dloss/dh_t."""
    W_ih, W_hh, _, _ = layer_weights(model, params, layer)
    dW_ih, dW_hh, db_ih, db_hh = layer_weights(model, grad, layer)
    inputs, steps = entry["inputs"], entry["steps"]
    B, T, _ = inputs.shape
    dh = np.zeros((B, W_hh.shape[1]), dtype=params.dtype)
    dc = np.zeros_like(dh)
    d_inputs = np.zeros_like(inputs)
    norms = np.zeros((B, T))
    for t in range(T - 1, -1, -1):
        dh = dh + dH[:, t]
        norms[:, t] = np.linalg.norm(dh.astype(np.float64), axis=1)
        keep = valid[:, t : t + 1]
        dA_i, dA_h, direct, dc_prev = _gate_gradients(model.cell, steps[t], dh, dc)
        dA_i, dA_h = np.where(keep, dA_i, 0.0), np.where(keep, dA_h, 0.0)
        dW_ih += dA_i.T @ inputs[:, t]
        dW_hh += dA_h.T @ steps[t]["h_prev"]
        db_ih += dA_i.sum(axis=0)
        db_hh += dA_h.sum(axis=0)
        d_inputs[:, t] = dA_i @ W_ih
        dh = np.where(keep, dA_h @ W_hh + direct, dh)
        dc = np.where(keep, dc_prev, dc)
    return d_inputs, norms
