"""Multi-layer perceptrons as arrays: layer sizes, codes and the flat parameter layout.

A network with layer sizes ``n_0 = d, n_1, ..., n_L = k`` has ``L`` dense layers. Layer
``l`` maps ``a_{l-1}`` (n_{l-1} values) to ``z_l = a_{l-1} @ W_l + b_l``; a hidden layer
then optionally batch-normalizes, ``u_l = gamma_l * (z_l - mean) / sqrt(var + eps) + beta_l``
with the batch's mean and (biased) variance, and applies the activation,
``a_l = act(u_l)``. The output layer's ``z_L`` goes to the loss of the task, as for the
linear models.

All trainable parameters are one flat vector, the weight matrices first, so that
``params[:n_weights]`` are exactly the entries penalized by L1/L2 (as for the linear
family)::

    W_1 (n_0, n_1) row-major, ..., W_L (n_{L-1}, n_L)      n_weights entries
    b_l (n_l) for each layer l without batch norm, in order
    gamma_l (n_l), beta_l (n_l) for each batch-normalized hidden layer l, in order

A batch-normalized layer has no bias: normalization subtracts the batch mean, so a bias
would have an exactly zero gradient (and collect only rounding noise); the shift
``beta_l`` takes its place.

Running averages of the batch statistics (for prediction) are not trained; they live in
a second flat vector ``running``: ``mean_l (n_l), var_l (n_l)`` per normalized layer.
They follow ``running = (1 - momentum) * running + momentum * batch_statistic``, with the
unbiased batch variance (as ``torch.nn.BatchNorm1d``).

The kernels receive ``sizes`` (int64, L + 1), ``batch_norm`` (int64, L; 1 for normalized
hidden layers, the output layer always 0), an activation code and ``net_hyper``
(float64: leaky slope, batch-norm momentum and eps). :func:`layout` computes the offsets
the same way on every backend.
"""

import numpy as np

IDENTITY = 0
RELU = 1
LEAKY_RELU = 2
SIGMOID = 3
TANH = 4
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID, "tanh": TANH}  # fmt: skip

# positions in net_hyper
LEAKY_SLOPE = 0
BN_MOMENTUM = 1
BN_EPS = 2
N_NET_HYPER = 3


def layout(sizes, batch_norm):
    """Offsets of every block of the flat vectors.

    Parameters
    ----------
    sizes : sequence of int, length L + 1
    batch_norm : sequence of int, length L

    Returns
    -------
    dict with
        ``weight`` (L,), ``bias`` (L,), ``gamma`` (L,), ``beta`` (L,), ``running`` (L,):
        int64 offsets (-1 where a layer has no such block: no bias with batch norm, no
        gamma/beta/running without); ``n_weights``, ``n_params``,
        ``n_running``: ints.
    """
    n_layers = len(sizes) - 1
    weight = np.zeros(n_layers, dtype=np.int64)
    bias = np.full(n_layers, -1, dtype=np.int64)
    gamma = np.full(n_layers, -1, dtype=np.int64)
    beta = np.full(n_layers, -1, dtype=np.int64)
    running = np.full(n_layers, -1, dtype=np.int64)
    offset = 0
    for layer in range(n_layers):
        weight[layer] = offset
        offset += sizes[layer] * sizes[layer + 1]
    n_weights = offset
    for layer in range(n_layers):
        if not batch_norm[layer]:  # batch norm's shift takes the place of the bias
            bias[layer] = offset
            offset += sizes[layer + 1]
    n_running = 0
    for layer in range(n_layers):
        if batch_norm[layer]:
            gamma[layer] = offset
            beta[layer] = offset + sizes[layer + 1]
            offset += 2 * sizes[layer + 1]
            running[layer] = n_running
            n_running += 2 * sizes[layer + 1]
    return dict(
        weight=weight, bias=bias, gamma=gamma, beta=beta, running=running,
        n_weights=n_weights, n_params=offset, n_running=n_running,
    )  # fmt: skip
