"""Vanishing and exploding gradients: read the per-layer gradient norms of a network's fit.

The training loop records, per epoch and layer, the root mean square over the batches of
the norm of the layer's weight gradient. From those:

- **exploding**: training diverged (the loss or a parameter became NaN/inf), or some
  layer's gradient norm grew more than ``EXPLODING_GROWTH`` times over its first epoch;
- **vanishing**: in the last epoch a hidden layer's gradient norm is below
  ``VANISHING_RATIO`` times the output layer's, so the early layers barely learn.

Recurrent networks (``output="last"``) are also read *through time*: the norm of the
loss gradient with respect to the first layer's hidden state ``h_t``, at a few offsets
back from the last step (:func:`time_offsets`); when it falls below
``VANISHING_THROUGH_TIME`` times its value at the last step, the early steps barely
influence the learning, the vanishing-gradient problem gates were designed against.
"""

import numpy as np

from .specs.optimizers import CLIP_NORM, CLIP_VALUE

VANISHING_RATIO = 1e-4
EXPLODING_GROWTH = 1e4
VANISHING_THROUGH_TIME = 1e-3


class GradientWarning(RuntimeWarning):
    """A network's gradients vanished or exploded; the message names the layer and remedies."""


def time_offsets(n_steps):
    """Offsets back from the last step at which gradients through time are reported."""
    return [k for k in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500) if k < n_steps] + (
        [n_steps - 1] if n_steps - 1 not in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500) else []
    )


def diagnose_through_time(norms, rnn):
    """Vanishing gradients through time of a recurrent network.

    Parameters
    ----------
    norms : dict
        Offset back from the last step -> mean norm of dloss/dh of the first layer.
    rnn : fastgd.RNN

    Returns
    -------
    diagnosis : {None, "vanishing"}
    message : str or None
    """
    first, last_offset = norms.get(0, 0.0), max(norms)
    if last_offset == 0 or not first > 0:
        return None, None
    ratio = norms[last_offset] / first
    if not ratio < VANISHING_THROUGH_TIME:
        return None, None
    remedies = []
    if rnn.cell == "tanh":
        remedies.append("gated cells (RNN(cell='lstm') or cell='gru')")
        if rnn.init != "orthogonal":
            remedies.append("orthogonal recurrent weights (init='orthogonal')")
    remedies.append("shorter sequences")
    return "vanishing", (
        f"vanishing gradients through time: the gradient reaching the hidden state "
        f"{last_offset} steps before the end was {ratio:.2g} times that at the last step, so "
        "the early steps hardly influence learning. Try " + ", ".join(remedies) + "."
    )


def _layer_name(model, layer):
    names = getattr(model, "layer_names", None)
    return names[layer] if names is not None else f"dense{layer + 1}"


def diagnose_gradients(norms, diverged, mlp, lr, hyper, spec=None):
    """Classify the gradient norms of a network's fit.

    Parameters
    ----------
    norms : ndarray of shape (n_epochs, n_layers)
        Per-epoch, per-layer weight-gradient norms (layer 0 is the first hidden layer).
    diverged : bool
        Whether training stopped because the loss or parameters became NaN/inf.
    mlp : fastgd.MLP or fastgd.RNN
        The network's description, to suggest remedies that apply.
    lr : float
        The learning rate used.
    hyper : ndarray
        Hyperparameter vector (to see whether clipping was on).
    spec : optional
        The fitted model spec; its ``layer_names`` name the layers (default ``dense1``, ...).

    Returns
    -------
    diagnosis : {None, "vanishing", "exploding"}
    message : str or None
    """
    if len(norms) == 0:
        return None, None
    finite = norms[np.all(np.isfinite(norms), axis=1)]
    growth = finite.max(axis=0) / np.maximum(finite[0], np.finfo(float).tiny) if len(finite) else None  # fmt: skip
    if diverged or (growth is not None and growth.max() > EXPLODING_GROWTH):
        if growth is not None and len(finite) > 1:
            layer = int(np.argmax(growth))
            where = f"layer {_layer_name(spec, layer)} (its gradient norm grew {growth[layer]:.3g}-fold)"
        else:
            last = norms[-1] if len(finite) == 0 else finite[-1]
            layer = int(np.nanargmax(np.where(np.isfinite(last), last, np.inf)))
            where = f"layer {_layer_name(spec, layer)}"
        remedies = [f"a smaller learning rate (lr={lr:g} now)"]
        if hyper[CLIP_NORM] == 0.0 and hyper[CLIP_VALUE] == 0.0:
            remedies.append("gradient clipping (e.g. clip_norm=1.0)")
        if not all(getattr(mlp, "batch_norm", (True,))):
            remedies.append("batch normalization (MLP(batch_norm=True))")
        if getattr(mlp, "init_scale", 1.0) > 1.0:
            remedies.append("a standard initialization scale (init_scale=1)")
        what = "training diverged" if diverged else "gradient norms grew without bound"
        return "exploding", (
            f"exploding gradients: {what}, starting at {where}. Try " + ", ".join(remedies) + "."
        )
    last = norms[-1]
    output = last[-1]
    if len(last) > 1 and output > 0:
        ratios = last[:-1] / output
        layer = int(np.argmin(ratios))
        if ratios[layer] < VANISHING_RATIO:
            remedies = _vanishing_remedies(mlp)
            return "vanishing", (
                f"vanishing gradients: in the last epoch the weight gradient of layer "
                f"{_layer_name(spec, layer)} was {ratios[layer]:.2g} times that of the output layer, so "
                "the early layers hardly learn. Try " + ", ".join(remedies) + "."
            )
    return None, None


def _vanishing_remedies(model):
    """What may help a network (fastgd.MLP or fastgd.RNN) whose gradients vanish."""
    if not hasattr(model, "activation"):  # a recurrent network
        remedies = ["gated cells (RNN(cell='lstm') or cell='gru')"] if model.cell == "tanh" else []
        return remedies + ["fewer layers"]
    remedies = []
    if model.activation in ("sigmoid", "tanh"):
        remedies.append("ReLU activations (activation='relu')")
    suited = "he" if model.activation in ("relu", "leaky_relu") else "xavier"
    if not model.init.startswith(suited) or model.init_scale != 1.0:
        remedies.append("He initialization for ReLU, Xavier for sigmoid/tanh, at init_scale=1")
    if not all(model.batch_norm):
        remedies.append("batch normalization (MLP(batch_norm=True))")
    remedies.append("fewer layers")
    return remedies
