"""Model descriptions: which loss, how many outputs, and the flat parameter layout.

All trainable parameters of a model live in one contiguous float vector ``params``.
For the linear family (``linear``, ``logistic``, ``softmax``) with ``d`` features and
``k`` outputs the layout is::

    params[: d * k]          W, the weights, row-major with shape (d, k)
    params[d * k : d * k + k] b, the intercepts (kept at zero if fit_intercept=False)

so that the decision values of a sample ``x`` are ``z = x @ W + b``. Optimizer state
is arrays of the same length, updated elementwise.

**The model interface.** Every trainable model kind (:class:`LinearModelSpec` here,
:class:`fastgd.network.NetworkSpec`, :class:`fastgd.recurrent.RecurrentSpec`) provides the
same members, so that the trainer, :class:`fastgd.FitResult`, warm starts, early stopping
and the diagnostics are written once:

- ``name``, ``task`` (``"regression"``, ``"binary"``, ``"multiclass"``), ``n_features``,
  ``n_outputs``, ``n_layers`` (weight matrices with gradient norms; 0 for linear models);
- ``n_params``, ``n_weights`` (the penalized leading entries), ``n_trained``;
- ``init_params(dtype, seed)`` -> ``(params, running)``;
- ``kernel_model()``: the container of :mod:`fastgd.backends.contract` the kernels take;
- ``named(params, running)``: views of the parameter blocks by name.
"""

from dataclasses import dataclass

import numpy as np

from ..backends.contract import LinearModel
from . import losses

LINEAR_MODELS = {
    "linear": losses.MSE,
    "logistic": losses.BINARY_CROSS_ENTROPY,
    "softmax": losses.CATEGORICAL_CROSS_ENTROPY,
}
CLASSIFIERS = ("logistic", "softmax")


@dataclass(frozen=True)
class LinearModelSpec:
    """A linear model ``z = x @ W + b`` followed by the loss of its task.

    Parameters
    ----------
    name : {"linear", "logistic", "softmax"}
        The model family.
    n_features : int
        Number of input features ``d``.
    n_outputs : int
        Number of decision values ``k`` per sample: the number of regression targets,
        1 for logistic regression, the number of classes for softmax regression.
    fit_intercept : bool
        Whether the intercepts ``b`` are trained.
    """

    name: str
    n_features: int
    n_outputs: int
    fit_intercept: bool = True

    @property
    def loss_code(self):
        """Integer code of the loss (see :mod:`fastgd.specs.losses`)."""
        return LINEAR_MODELS[self.name]

    @property
    def task(self):
        """``"regression"``, ``"binary"`` or ``"multiclass"``."""
        return {"linear": "regression", "logistic": "binary"}.get(self.name, "multiclass")

    @property
    def n_params(self):
        """Length of the flat parameter vector."""
        return self.n_features * self.n_outputs + self.n_outputs

    n_layers = 0  # no per-layer gradient norms

    @property
    def n_weights(self):
        """Entries of ``W``: the leading block, the one penalties apply to."""
        return self.n_features * self.n_outputs

    @property
    def n_trained(self):
        """Entries the optimizer updates: all, or ``W`` only without intercepts."""
        return self.n_params if self.fit_intercept else self.n_weights

    def init_params(self, dtype, seed=None):
        """Initial parameters: zeros (the problems are convex, so zeros is a fine start),
        and no running averages; ``seed`` is not needed."""
        return np.zeros(self.n_params, dtype=dtype), np.zeros(0, dtype=dtype)

    def kernel_model(self):
        """The :class:`~fastgd.backends.contract.LinearModel` the kernels take."""
        return LinearModel(self.loss_code, self.n_outputs, self.fit_intercept)

    def unpack(self, params):
        """Views ``(W, b)`` of the flat vector, ``W`` with shape (d, k), ``b`` with (k,)."""
        d, k = self.n_features, self.n_outputs
        return params[: d * k].reshape(d, k), params[d * k : d * k + k]

    def named(self, params, running=None):
        """Views by name: ``"weight"`` (n_features, n_outputs) and ``"bias"`` (n_outputs,)."""
        W, b = self.unpack(params)
        return {"weight": W, "bias": b}
