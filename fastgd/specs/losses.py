"""Loss functions, identified by integer codes that every backend kernel understands.

Per-sample losses, with ``z`` the model output (decision values) for one sample:

- ``MSE``: mean squared error over the ``k`` outputs, ``(1/k) * sum_c (z_c - y_c)**2``.
  Its gradient with respect to ``z_c`` is ``2 (z_c - y_c) / k``.
- ``BINARY_CROSS_ENTROPY``: ``log(1 + exp(z)) - y z`` with ``y`` in {0, 1}, i.e. the
  negative log-likelihood of ``p = sigmoid(z)``. Gradient ``sigmoid(z) - y``.
- ``CATEGORICAL_CROSS_ENTROPY``: ``logsumexp(z) - z_y`` with ``y`` a class index, i.e.
  the negative log-likelihood of ``p = softmax(z)``. Gradient ``softmax(z) - onehot(y)``.

The training loss reported by ``fit`` is the mean of these over the samples.
"""

MSE = 0
BINARY_CROSS_ENTROPY = 1
CATEGORICAL_CROSS_ENTROPY = 2

NAMES = {
    MSE: "mean squared error",
    BINARY_CROSS_ENTROPY: "binary cross-entropy",
    CATEGORICAL_CROSS_ENTROPY: "categorical cross-entropy",
}
