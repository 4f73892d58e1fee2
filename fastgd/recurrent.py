"""Recurrent networks: ``fastgd.fit(X, y, model=fastgd.RNN(cell="lstm", hidden=64))``.

:class:`RNN` is what a user writes (validated on creation); :class:`RecurrentSpec` is
what ``fit`` builds from it once the data is known (features per step, outputs, loss),
with the parameter initialization and named views of the flat vector. The equations and
the layout are in :mod:`fastgd.specs.recurrent`.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from .backends.contract import RecurrentModel
from .specs import losses
from .specs import network as net
from .specs import recurrent as rec

OUTPUTS = ("last", "sequence")
INITS = ("torch", "orthogonal")
HEAD_ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


class RNN:
    """A recurrent network: LSTM, GRU or tanh layers, then a dense head for the task.

    Trained by backpropagation through time, one compiled call per block of epochs on every
    backend. ``X`` has shape (n_samples, n_steps, n_features) (a 2-D ``X`` is one feature
    per step); ``fit(..., lengths=...)`` gives sequences of different lengths (padding
    never changes the result). The gate equations, the parameter layout and the default
    initialization are those of ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``
    (``batch_first=True``) followed by ``torch.nn.Linear`` layers; see
    :mod:`fastgd.specs.recurrent`.

    Parameters
    ----------
    cell : {"lstm", "gru", "tanh"}, default "lstm"
    hidden : int, default 64
        Units of every recurrent layer.
    layers : int, default 1
        Stacked recurrent layers; layer ``l`` reads the hidden states of layer ``l - 1``.
    head : sequence of int, default ()
        Widths of dense hidden layers between the recurrent part and the output layer.
    head_activation : {"relu", "tanh", "sigmoid", "identity"}, default "relu"
        Activation of the hidden head layers.
    task : {"classification", "regression"}, default "classification"
        As :class:`fastgd.MLP`: the output layer and loss follow the task and the targets.
    output : {"last", "sequence"}, default "last"
        ``"last"``: one target per sequence, from the last (valid) hidden state;
        ``"sequence"``: a target at every step, ``y`` of shape (n_samples, n_steps) or
        (n_samples, n_steps, n_targets); the loss is the mean over the valid steps.
    init : {"torch", "orthogonal"}, default "torch"
        ``"torch"``: every recurrent parameter from U(-1/sqrt(hidden), 1/sqrt(hidden)) and
        head layers as ``torch.nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases
        too). ``"orthogonal"``: the same, but every recurrent gate block of ``W_hh`` a
        random orthogonal matrix (a common remedy for vanishing gradients of tanh RNNs).
        Drawn with ``fit``'s ``seed``.
    """

    def __init__(self, cell="lstm", hidden=64, layers=1, head=(), head_activation="relu",
                 task="classification", output="last", init="torch"):  # fmt: skip
        self.cell = _choice(cell, "cell", tuple(rec.CELLS))
        self.hidden = _positive_int(hidden, "hidden")
        self.layers = _positive_int(layers, "layers")
        if isinstance(head, numbers.Integral) and not isinstance(head, bool):
            head = (head,)
        try:
            head = tuple(head)
        except TypeError:
            raise ValueError(f"head must be a sequence of positive integers; got {head!r}") from None  # fmt: skip
        self.head = tuple(_positive_int(width, "every head width") for width in head)
        self.head_activation = _choice(head_activation, "head_activation", HEAD_ACTIVATIONS)
        self.task = _choice(task, "task", ("classification", "regression"))
        self.output = _choice(output, "output", OUTPUTS)
        self.init = _choice(init, "init", INITS)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"RNN({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def spec(self, n_features, n_outputs, n_classes=None):
        """The :class:`RecurrentSpec` for sequences of ``n_features`` features per step."""
        if self.task == "regression":
            loss_code, k = losses.MSE, n_outputs
        elif n_classes == 2:
            loss_code, k = losses.BINARY_CROSS_ENTROPY, 1
        else:
            loss_code, k = losses.CATEGORICAL_CROSS_ENTROPY, n_classes
        return RecurrentSpec(
            cell=self.cell, n_features=int(n_features), hidden=self.hidden, layers=self.layers,
            head_sizes=(self.hidden, *self.head, int(k)), head_activation=self.head_activation,
            sequence=self.output == "sequence", loss_code=loss_code, init=self.init,
        )  # fmt: skip


@dataclass(frozen=True)
class RecurrentSpec:
    """A recurrent network fitted to data; implements the model interface of
    :mod:`fastgd.specs.models`."""

    cell: str
    n_features: int
    hidden: int
    layers: int
    head_sizes: tuple
    head_activation: str
    sequence: bool
    loss_code: int
    init: str
    fit_intercept: bool = True  # biases are always trained

    name = "rnn"

    @property
    def task(self):
        """``"regression"``, ``"binary"`` or ``"multiclass"``."""
        return {losses.MSE: "regression", losses.BINARY_CROSS_ENTROPY: "binary"}.get(
            self.loss_code, "multiclass"
        )

    @property
    def n_outputs(self):
        return self.head_sizes[-1]

    @property
    def n_layers(self):
        """Layers with gradient norms: the recurrent layers, then the head's."""
        return self.layers + len(self.head_sizes) - 1

    @property
    def layer_names(self):
        """Names of the layers of :attr:`n_layers`, as in :meth:`named`."""
        return [f"{self.cell}{i + 1}" for i in range(self.layers)] + [
            f"dense{j + 1}" for j in range(len(self.head_sizes) - 1)
        ]

    @property
    def layout(self):
        """Offsets of every block, see :func:`fastgd.specs.recurrent.layout`."""
        return rec.layout(
            rec.CELLS[self.cell], self.n_features, self.hidden, self.layers, self.head_sizes
        )

    @property
    def n_params(self):
        return self.layout["n_params"]

    @property
    def n_weights(self):
        """Entries of the weight matrices: the leading block, the one penalties apply to."""
        return self.layout["n_weights"]

    @property
    def n_trained(self):
        return self.n_params

    def kernel_model(self):
        """The :class:`~fastgd.backends.contract.RecurrentModel` the kernels take."""
        return RecurrentModel(
            rec.CELLS[self.cell], self.n_features, self.hidden, self.layers,
            np.array(self.head_sizes, dtype=np.int64), net.ACTIVATIONS[self.head_activation],
            int(self.sequence), self.loss_code,
        )  # fmt: skip

    def init_params(self, dtype, seed=None):
        """Initial flat parameters (PyTorch's default scheme) and no running averages."""
        rng = np.random.default_rng(None if seed is None else [int(seed), 2])
        params = np.zeros(self.n_params, dtype=np.float64)
        bound = 1.0 / np.sqrt(self.hidden)
        views = self.named(params)
        for name, view in views.items():
            if name.startswith("dense"):
                fan_in = self.head_sizes[int(name[5:].split(".")[0]) - 1]
                view[...] = rng.uniform(-1.0, 1.0, view.shape) / np.sqrt(fan_in)
            else:
                view[...] = rng.uniform(-bound, bound, view.shape)
        if self.init == "orthogonal":
            h = self.hidden
            for layer in range(self.layers):
                W = views[f"{self.cell}{layer + 1}.weight_hh"]
                for gate in range(W.shape[0] // h):
                    Q, R = np.linalg.qr(rng.standard_normal((h, h)))
                    W[gate * h : (gate + 1) * h] = Q * np.sign(np.diag(R))
        return params.astype(dtype), np.zeros(0, dtype=dtype)

    def named(self, params, running=None):
        """Views by name: ``"lstm1.weight_ih"`` (G h, n_in), ``"lstm1.weight_hh"`` (G h, h),
        ``"lstm1.bias_ih"``, ``"lstm1.bias_hh"`` (G h) per recurrent layer (``gru1``,
        ``tanh1``, ...), then ``"dense1.weight"`` (n_out, n_in), ``"dense1.bias"`` per head
        layer, the output layer last: the shapes of ``torch.nn``'s ``weight_ih_l0``, ...
        and ``nn.Linear.weight``."""
        off = self.layout
        gh = rec.GATES[rec.CELLS[self.cell]] * self.hidden
        out = {}
        for layer in range(self.layers):
            n_in = self.n_features if layer == 0 else self.hidden
            name = f"{self.cell}{layer + 1}"
            w_ih, w_hh = off["w_ih"][layer], off["w_hh"][layer]
            b_ih, b_hh = off["b_ih"][layer], off["b_hh"][layer]
            out[f"{name}.weight_ih"] = params[w_ih : w_ih + gh * n_in].reshape(gh, n_in)
            out[f"{name}.weight_hh"] = params[w_hh : w_hh + gh * self.hidden].reshape(gh, self.hidden)  # fmt: skip
            out[f"{name}.bias_ih"] = params[b_ih : b_ih + gh]
            out[f"{name}.bias_hh"] = params[b_hh : b_hh + gh]
        for j in range(len(self.head_sizes) - 1):
            n_in, n_out = self.head_sizes[j], self.head_sizes[j + 1]
            w, b = off["head_w"][j], off["head_b"][j]
            out[f"dense{j + 1}.weight"] = params[w : w + n_out * n_in].reshape(n_out, n_in)
            out[f"dense{j + 1}.bias"] = params[b : b + n_out]
        return out
