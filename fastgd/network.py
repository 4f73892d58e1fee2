"""Multi-layer perceptrons: ``fastgd.fit(X, y, model=fastgd.MLP(hidden=(128, 64)))``.

:class:`MLP` is what a user writes (validated on creation); :class:`NetworkSpec` is what
``fit`` builds from it once the data is known (input size, outputs, loss), with the
parameter initialization and named views of the flat vectors. The layout and the
formulas are in :mod:`fastgd.specs.network`.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from .backends.contract import NetworkModel
from .specs import losses
from .specs import network as net

INITS = ("he_normal", "he_uniform", "xavier_uniform", "xavier_normal")
_INIT_ALIASES = {"he": "he_normal", "kaiming": "he_normal", "xavier": "xavier_uniform", "glorot": "xavier_uniform"}  # fmt: skip
TASKS = ("classification", "regression")


def _positive_float(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (np.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


class MLP:
    """A multi-layer perceptron: dense hidden layers, then the output layer of the task.

    The output layer and loss follow ``task`` and the targets: regression has a linear
    output and the mean squared error (one or several targets); classification with two
    classes a single sigmoid output and binary cross-entropy, with more classes a softmax
    output and categorical cross-entropy.

    Parameters
    ----------
    hidden : sequence of int, default (100,)
        Widths of the hidden layers, each a positive integer.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh", "identity"}, default "relu"
        Activation of every hidden layer.
    batch_norm : bool or sequence of bool, default False
        Batch normalization after the dense part of every hidden layer (``True``) or of
        the layers whose entry is true: batch statistics in training, running averages
        for prediction, a learnable scale and shift per unit.
    init : str, optional
        ``"he_normal"``/``"he"``, ``"he_uniform"``, ``"xavier_uniform"``/``"xavier"``,
        ``"xavier_normal"``. Default: He for (leaky) ReLU, Xavier for the others. Weights
        of every layer (output included) are drawn with this scheme (seeded by ``fit``'s
        ``seed``); biases start at 0, batch-norm scales at 1 and shifts at 0.
    init_scale : float, default 1
        Multiplies the initial weights (values far from 1 are a poor initialization).
    task : {"classification", "regression"}, default "classification"
    leaky_slope : float, default 0.01
        Slope of ``leaky_relu`` for negative inputs.
    bn_momentum : float, default 0.1
        Weight of the batch statistic in the running averages, in (0, 1].
    bn_eps : float, default 1e-5
        Added to the variance in batch normalization.
    """

    def __init__(self, hidden=(100,), activation="relu", batch_norm=False, init=None,
                 init_scale=1.0, task="classification", leaky_slope=0.01, bn_momentum=0.1,
                 bn_eps=1e-5):  # fmt: skip
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise ValueError(f"hidden must be a sequence of positive integers; got {hidden!r}") from None  # fmt: skip
        if not hidden or any(
            isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in hidden
        ):
            raise ValueError(
                f"hidden must be a non-empty sequence of positive integers; got {hidden!r}"
            )
        self.hidden = tuple(int(h) for h in hidden)
        if activation not in net.ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(map(repr, net.ACTIVATIONS))}; "
                f"got {activation!r}"
            )
        self.activation = activation
        if isinstance(batch_norm, (bool, np.bool_)):
            batch_norm = (bool(batch_norm),) * len(self.hidden)
        else:
            try:
                batch_norm = tuple(bool(b) for b in batch_norm)
            except TypeError:
                raise ValueError(f"batch_norm must be a bool or a sequence of bools; got {batch_norm!r}") from None  # fmt: skip
            if len(batch_norm) != len(self.hidden):
                raise ValueError(
                    f"batch_norm has {len(batch_norm)} entries for {len(self.hidden)} hidden layers"
                )
        self.batch_norm = batch_norm
        if init is None:
            init = "he_normal" if activation in ("relu", "leaky_relu") else "xavier_uniform"
        init = _INIT_ALIASES.get(init, init)
        if init not in INITS:
            raise ValueError(
                f"init must be one of {', '.join(map(repr, INITS + tuple(_INIT_ALIASES)))}; "
                f"got {init!r}"
            )
        self.init = init
        self.init_scale = _positive_float(init_scale, "init_scale")
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}; got {task!r}")
        self.task = task
        if (
            isinstance(leaky_slope, bool)
            or not isinstance(leaky_slope, numbers.Real)
            or not (0.0 <= leaky_slope < 1.0)
        ):
            raise ValueError(f"leaky_slope must be a number in [0, 1); got {leaky_slope!r}")
        self.leaky_slope = float(leaky_slope)
        self.bn_momentum = _positive_float(bn_momentum, "bn_momentum")
        if self.bn_momentum > 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1]; got {bn_momentum!r}")
        self.bn_eps = _positive_float(bn_eps, "bn_eps")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"MLP({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def spec(self, n_features, n_outputs, n_classes=None):
        """The :class:`NetworkSpec` for data with ``n_features`` inputs.

        ``n_outputs`` is the number of regression targets; ``n_classes`` the number of
        classes of a classifier.
        """
        if self.task == "regression":
            loss_code, k = losses.MSE, n_outputs
        elif n_classes == 2:
            loss_code, k = losses.BINARY_CROSS_ENTROPY, 1
        else:
            loss_code, k = losses.CATEGORICAL_CROSS_ENTROPY, n_classes
        return NetworkSpec(
            sizes=(n_features, *self.hidden, k),
            batch_norm=(*self.batch_norm, False),
            activation=self.activation,
            loss_code=loss_code,
            init=self.init,
            init_scale=self.init_scale,
            net_hyper=(self.leaky_slope, self.bn_momentum, self.bn_eps),
        )


@dataclass(frozen=True)
class NetworkSpec:
    """A network fitted to data: layer sizes, normalization, activation, loss, init.

    Implements the model interface of :mod:`fastgd.specs.models`.
    """

    sizes: tuple
    batch_norm: tuple
    activation: str
    loss_code: int
    init: str
    init_scale: float
    net_hyper: tuple
    fit_intercept: bool = True  # biases are always trained

    name = "mlp"

    @property
    def task(self):
        """``"regression"``, ``"binary"`` or ``"multiclass"``."""
        return {losses.MSE: "regression", losses.BINARY_CROSS_ENTROPY: "binary"}.get(
            self.loss_code, "multiclass"
        )

    @property
    def n_features(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def layout(self):
        """Offsets of every block, see :func:`fastgd.specs.network.layout`."""
        return net.layout(self.sizes, self.batch_norm)

    @property
    def n_params(self):
        return self.layout["n_params"]

    @property
    def n_weights(self):
        """Entries of the weight matrices: the leading block, the one penalties apply to."""
        return self.layout["n_weights"]

    @property
    def n_trained(self):
        """Every parameter is trained (biases included)."""
        return self.n_params

    def kernel_model(self):
        """The :class:`~fastgd.backends.contract.NetworkModel` the kernels take."""
        return NetworkModel(
            np.array(self.sizes, dtype=np.int64),
            np.array(self.batch_norm, dtype=np.int64),
            net.ACTIVATIONS[self.activation],
            np.array(self.net_hyper, dtype=np.float64),
            self.loss_code,
        )

    def init_params(self, dtype, seed=None):
        """Initial flat parameters and running averages (``params``, ``running``)."""
        rng = np.random.default_rng(None if seed is None else [int(seed), 2])
        offsets = self.layout
        params = np.zeros(offsets["n_params"], dtype=dtype)
        running = np.zeros(offsets["n_running"], dtype=dtype)
        slope = self.net_hyper[net.LEAKY_SLOPE] if self.activation == "leaky_relu" else 0.0
        for layer in range(self.n_layers):
            fan_in, fan_out = self.sizes[layer], self.sizes[layer + 1]
            if self.init.startswith("he"):
                std = np.sqrt(
                    2.0 / ((1.0 + slope**2) * fan_in)
                )  # keeps the variance of (leaky) ReLU layers
            else:
                std = np.sqrt(2.0 / (fan_in + fan_out))  # Glorot: variance of forward and backward
            std *= self.init_scale
            if self.init.endswith("uniform"):
                W = rng.uniform(-np.sqrt(3.0) * std, np.sqrt(3.0) * std, size=fan_in * fan_out)
            else:
                W = rng.normal(0.0, std, size=fan_in * fan_out)
            w = offsets["weight"][layer]
            params[w : w + fan_in * fan_out] = W
            if self.batch_norm[layer]:
                g, r = offsets["gamma"][layer], offsets["running"][layer]
                params[g : g + fan_out] = 1.0
                running[r + fan_out : r + 2 * fan_out] = 1.0  # running variance starts at 1
        return params, running

    def named(self, params, running):
        """Views of every block by name: ``"dense1.weight"`` (n_in, n_out), ``"dense1.bias"``,
        ``"dense1.bn_scale"``, ``"dense1.bn_shift"``, ``"dense1.bn_running_mean"``,
        ``"dense1.bn_running_var"`` (a batch-normalized layer has no bias); layers are
        numbered from 1, the output layer last."""
        offsets = self.layout
        out = {}
        for layer in range(self.n_layers):
            n_in, n_out = self.sizes[layer], self.sizes[layer + 1]
            name = f"dense{layer + 1}"
            w, b = offsets["weight"][layer], offsets["bias"][layer]
            out[f"{name}.weight"] = params[w : w + n_in * n_out].reshape(n_in, n_out)
            if not self.batch_norm[layer]:
                out[f"{name}.bias"] = params[b : b + n_out]
            else:  # the shift takes the place of the bias
                g, be, r = (
                    offsets["gamma"][layer],
                    offsets["beta"][layer],
                    offsets["running"][layer],
                )
                out[f"{name}.bn_scale"] = params[g : g + n_out]
                out[f"{name}.bn_shift"] = params[be : be + n_out]
                out[f"{name}.bn_running_mean"] = running[r : r + n_out]
                out[f"{name}.bn_running_var"] = running[r + n_out : r + 2 * n_out]
        return out
