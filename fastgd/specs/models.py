"""Model descriptions: which loss, how many outputs, and the flat parameter layout.

All trainable parameters of a model live in one contiguous float vector ``params``.
For the linear family (``linear``, ``logistic``, ``softmax``) with ``d`` features and
``k`` outputs the layout is::

    params[: d * k]          W, the weights, row-major with shape (d, k)
    params[d * k : d * k + k] b, the intercepts (kept at zero if fit_intercept=False)

so that the decision values of a sample ``x`` are ``z = x @ W + b``. Optimizer state
(issue: optimizers) is arrays of the same length, updated elementwise.
"""

from dataclasses import dataclass

import numpy as np

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

    def init_params(self, dtype):
        """Initial parameters: zeros (the problems are convex, so zeros is a fine start)."""
        return np.zeros(self.n_params, dtype=dtype)

    def unpack(self, params):
        """Views ``(W, b)`` of the flat vector, ``W`` with shape (d, k), ``b`` with (k,)."""
        d, k = self.n_features, self.n_outputs
        return params[: d * k].reshape(d, k), params[d * k : d * k + k]
