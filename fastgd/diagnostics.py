"""Vanishing and exploding gradients: read the per-layer gradient norms of a network's fit.

The training loop records, per epoch and layer, the root mean square over the batches of
the norm of the layer's weight gradient. From those:

- **exploding**: training diverged (the loss or a parameter became NaN/inf), or some
  layer's gradient norm grew more than ``EXPLODING_GROWTH`` times over its first epoch;
- **vanishing**: in the last epoch a hidden layer's gradient norm is below
  ``VANISHING_RATIO`` times the output layer's, so the early layers barely learn.
"""

import numpy as np

from .specs.optimizers import CLIP_NORM, CLIP_VALUE

VANISHING_RATIO = 1e-4
EXPLODING_GROWTH = 1e4


class GradientWarning(RuntimeWarning):
    """A network's gradients vanished or exploded; the message names the layer and remedies."""


def diagnose_gradients(norms, diverged, mlp, lr, hyper):
    """Classify the gradient norms of a network's fit.

    Parameters
    ----------
    norms : ndarray of shape (n_epochs, n_layers)
        Per-epoch, per-layer weight-gradient norms (layer 0 is the first hidden layer).
    diverged : bool
        Whether training stopped because the loss or parameters became NaN/inf.
    mlp : fastgd.MLP
        The network's description, to suggest remedies that apply.
    lr : float
        The learning rate used.
    hyper : ndarray
        Hyperparameter vector (to see whether clipping was on).

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
            where = f"layer dense{layer + 1} (its gradient norm grew {growth[layer]:.3g}-fold)"
        else:
            last = norms[-1] if len(finite) == 0 else finite[-1]
            layer = int(np.nanargmax(np.where(np.isfinite(last), last, np.inf)))
            where = f"layer dense{layer + 1}"
        remedies = [f"a smaller learning rate (lr={lr:g} now)"]
        if hyper[CLIP_NORM] == 0.0 and hyper[CLIP_VALUE] == 0.0:
            remedies.append("gradient clipping (e.g. clip_norm=1.0)")
        if not all(mlp.batch_norm):
            remedies.append("batch normalization (MLP(batch_norm=True))")
        if mlp.init_scale > 1.0:
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
            remedies = []
            if mlp.activation in ("sigmoid", "tanh"):
                remedies.append("ReLU activations (activation='relu')")
            suited = "he" if mlp.activation in ("relu", "leaky_relu") else "xavier"
            if not mlp.init.startswith(suited) or mlp.init_scale != 1.0:
                remedies.append("He initialization for ReLU, Xavier for sigmoid/tanh, at init_scale=1")  # fmt: skip
            if not all(mlp.batch_norm):
                remedies.append("batch normalization (MLP(batch_norm=True))")
            remedies.append("fewer layers")
            return "vanishing", (
                f"vanishing gradients: in the last epoch the weight gradient of layer "
                f"dense{layer + 1} was {ratios[layer]:.2g} times that of the output layer, so "
                "the early layers hardly learn. Try " + ", ".join(remedies) + "."
            )
    return None, None
