"""The forward pass of recurrent networks in NumPy: the NumPy reference's training pass and
prediction on every backend (whole-batch matrix products, one Python step per time step).

Equations and layout: :mod:`fastgd.specs.recurrent`. The forward pass returns, per layer
and step, what backpropagation through time needs (:mod:`fastgd.backends.numpy.recurrent`).
"""

import numpy as np

from ..specs import network as net
from ..specs import recurrent as rec


def sigmoid(a):
    """The logistic function without overflow: ``exp`` of a non-positive number only."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def head_activate(U, code):
    """Activation of a hidden head layer (a code of :mod:`fastgd.specs.network`)."""
    if code == net.RELU:
        return np.maximum(U, 0.0)
    if code == net.TANH:
        return np.tanh(U)
    if code == net.SIGMOID:
        return sigmoid(U)
    return U


def head_slope(A, code):
    """``act'`` of a hidden head layer from its output ``A``."""
    if code == net.RELU:
        return (A > 0).astype(A.dtype)
    if code == net.TANH:
        return 1.0 - A * A
    if code == net.SIGMOID:
        return A * (1.0 - A)
    return np.ones_like(A)


def layer_weights(model, params, layer):
    """``(W_ih (G h, n_in), W_hh (G h, h), b_ih, b_hh)`` of recurrent ``layer``: views."""
    off = rec.layout(model.cell, model.n_features, model.hidden, model.n_layers, model.head_sizes)
    h = model.hidden
    gh = rec.GATES[model.cell] * h
    n_in = model.n_features if layer == 0 else h
    w_ih, w_hh, b_ih, b_hh = (off[key][layer] for key in ("w_ih", "w_hh", "b_ih", "b_hh"))
    return (
        params[w_ih : w_ih + gh * n_in].reshape(gh, n_in),
        params[w_hh : w_hh + gh * h].reshape(gh, h),
        params[b_ih : b_ih + gh],
        params[b_hh : b_hh + gh],
    )


def head_weights(model, params, j):
    """``(W (n_out, n_in), b (n_out,))`` of head layer ``j``: views."""
    off = rec.layout(model.cell, model.n_features, model.hidden, model.n_layers, model.head_sizes)
    n_in, n_out = int(model.head_sizes[j]), int(model.head_sizes[j + 1])
    w, b = off["head_w"][j], off["head_b"][j]
    return params[w : w + n_out * n_in].reshape(n_out, n_in), params[b : b + n_out]


def valid_steps(lengths, n_steps):
    """(n, T) boolean: step ``t`` of row ``i`` is not padding."""
    return np.arange(n_steps)[None, :] < np.asarray(lengths)[:, None]


def _cell_step(cell, A, h, c, W_hh, b_hh):
    """One step of every row: the new ``h, c`` and what the backward pass needs.

    ``A`` holds the input projection ``W_ih x_t + b_ih`` of the step, (B, G h).
    """
    n = h.shape[1]
    hidden_part = h @ W_hh.T + b_hh
    if cell == rec.LSTM:
        a = A + hidden_part
        i, f = sigmoid(a[:, :n]), sigmoid(a[:, n : 2 * n])
        g, o = np.tanh(a[:, 2 * n : 3 * n]), sigmoid(a[:, 3 * n :])
        c_new = f * c + i * g
        tanh_c = np.tanh(c_new)
        return o * tanh_c, c_new, dict(i=i, f=f, g=g, o=o, c_prev=c, tanh_c=tanh_c, h_prev=h)
    if cell == rec.GRU:
        r = sigmoid(A[:, :n] + hidden_part[:, :n])
        z = sigmoid(A[:, n : 2 * n] + hidden_part[:, n : 2 * n])
        hn = hidden_part[:, 2 * n :]  # W_hn h + b_hn, which the reset gate multiplies
        cand = np.tanh(A[:, 2 * n :] + r * hn)
        return (1.0 - z) * cand + z * h, c, dict(r=r, z=z, n=cand, hn=hn, h_prev=h)
    h_new = np.tanh(A + hidden_part)
    return h_new, c, dict(h=h_new, h_prev=h)


def recurrent_layer(cell, inputs, weights, valid):
    """Run one recurrent layer over (B, T, n_in) ``inputs``; padded steps carry the state.

    Returns the hidden states (B, T, h) and the per-step caches.
    """
    W_ih, W_hh, b_ih, b_hh = weights
    B, T, _ = inputs.shape
    n = W_hh.shape[1]
    projected = inputs @ W_ih.T + b_ih  # every step's input projection in one product
    h = np.zeros((B, n), dtype=inputs.dtype)
    c = np.zeros_like(h)
    H = np.empty((B, T, n), dtype=inputs.dtype)
    steps = []
    for t in range(T):
        h_new, c_new, cache = _cell_step(cell, projected[:, t], h, c, W_hh, b_hh)
        keep = valid[:, t : t + 1]
        h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
        H[:, t] = h
        steps.append(cache)
    return H, steps


def head_forward(model, params, U):
    """Decision values (N, k) of head inputs ``U`` (N, h), and each layer's input."""
    n_head = len(model.head_sizes) - 1
    inputs = []
    for j in range(n_head):
        W, b = head_weights(model, params, j)
        inputs.append(U)
        U = U @ W.T + b
        if j < n_head - 1:
            U = head_activate(U, model.head_activation)
    return U, inputs


def forward(model, X, lengths, params):
    """Decision values and the caches of the whole network.

    Parameters
    ----------
    model : RecurrentModel
    X : ndarray of shape (B, T, f)
    lengths : ndarray of int, shape (B,)
    params : ndarray

    Returns
    -------
    Z : ndarray of shape (B, k) (``output="last"``) or (B * T, k) (``"sequence"``,
        row ``i * T + t``)
    cache : dict with ``inputs`` and ``steps`` per layer, ``valid``, ``head_inputs``
    """
    valid = valid_steps(lengths, X.shape[1])
    inputs, layers = X, []
    for layer in range(model.n_layers):
        H, steps = recurrent_layer(model.cell, inputs, layer_weights(model, params, layer), valid)
        layers.append(dict(inputs=inputs, steps=steps))
        inputs = H
    B, T, n = inputs.shape
    U = inputs.reshape(B * T, n) if model.sequence else inputs[:, -1]
    Z, head_inputs = head_forward(model, params, U)
    return Z, dict(layers=layers, valid=valid, head_inputs=head_inputs, top=inputs)


def predict(model, X, lengths, params):
    """Decision values: (n, k) for ``output="last"``, (n, T, k) for ``"sequence"``."""
    Z, _ = forward(model, X, lengths, params)
    return Z.reshape(X.shape[0], X.shape[1], -1) if model.sequence else Z
