"""The baseline of the benchmark: the tightest plain-NumPy training loop a user would write.

Not fastgd's NumPy *reference backend* (general: any optimizer, penalty, schedule; about
twice as slow), but the loop one writes for plain SGD on one model: contiguous slices
``X[start:stop]`` when rows are in order, one gather ``X[order[start:stop]]`` per batch
when shuffled (``shuffle="blocks"``: a slice when the batch is one run of consecutive
rows, else the gather), and every product in BLAS (pinned to the run's threads by the suite). It
makes exactly fastgd's updates (same start, same batches, same mean-loss gradients), so
its parameters are checked against the reference like a backend's.
"""

import time

import numpy as np

from ..training.orders import check_shuffle
from .competitors import NotApplicable, Outcome, flat_params, network_start, row_orders
from .models import label_indices

LABEL = "numpy-loop"


def _targets(case, X, y):
    """Targets as the loss derivative uses them: values (n, 1), 0/1 (n, 1) or indices."""
    if case.task == "regression":
        return np.asarray(y, dtype=X.dtype).reshape(-1, 1)
    if case.task == "binary":
        return label_indices(y).astype(X.dtype).reshape(-1, 1)
    return label_indices(y)


def _output_delta(task, Z, yb):
    """dloss/dZ of the batch-mean loss (MSE over k outputs, binary or categorical CE)."""
    rows = Z.shape[0]
    if task == "regression":
        return (2.0 / (rows * Z.shape[1])) * (Z - yb)
    if task == "binary":
        return (1.0 / (1.0 + np.exp(-Z)) - yb) / rows
    Z = np.exp(Z - Z.max(axis=1, keepdims=True))
    Z /= Z.sum(axis=1, keepdims=True)
    Z[np.arange(rows), yb] -= 1.0
    return Z / rows


ACTIVATIONS = {
    "relu": (lambda a: np.maximum(a, 0), lambda h: h > 0),
    "tanh": (np.tanh, lambda h: 1 - h * h),
    "sigmoid": (lambda a: 1 / (1 + np.exp(-a)), lambda h: h * (1 - h)),
    "identity": (lambda a: a, lambda h: np.ones_like(h)),
}


def _step(case, weights, biases, xb, yb, lr):
    """One SGD step of a dense network (the linear family: one layer, no activation)."""
    act, slope = ACTIVATIONS[case.activation]
    hs = [xb]
    for W, b in zip(weights[:-1], biases[:-1], strict=True):
        hs.append(act(hs[-1] @ W + b))
    delta = _output_delta(case.task, hs[-1] @ weights[-1] + biases[-1], yb)
    for layer in range(len(weights) - 1, -1, -1):
        grad_w, grad_b = hs[layer].T @ delta, delta.sum(axis=0)
        if layer:  # the gradient of the layer's input, with the weights before the step
            delta = (delta @ weights[layer].T) * slope(hs[layer])
        weights[layer] -= lr * grad_w
        biases[layer] -= lr * grad_b
    return weights, biases


def _batches(X, Y, order, size, blocks):
    """The epoch's mini-batches ``(xb, yb)``: slices in order, gathers when shuffled;
    with ``blocks`` a batch that is one run of consecutive rows is a slice (a view)."""
    n = X.shape[0]
    if order is None:
        for start in range(0, n, size):
            yield X[start : start + size], Y[start : start + size]
        return
    if blocks:  # runs_before[r]: how many runs of consecutive rows start at or before r
        runs_before = np.cumsum(np.diff(order, prepend=-2) != 1)
    for start in range(0, n, size):
        stop = min(start + size, n)
        if blocks and runs_before[stop - 1] == runs_before[start]:
            first = order[start]
            yield X[first : first + stop - start], Y[first : first + stop - start]
        else:
            rows = order[start:stop]
            yield X[rows], Y[rows]


def run_numpy_loop(case, X, y, *, batch_size, epochs, lr, seed, threads, shuffle, evaluate=True):
    """Plain SGD in a tight NumPy loop, with fastgd's start and batches.

    Parameters are those of :data:`fastgd.bench.competitors.COMPETITORS` runners.

    Returns
    -------
    Outcome
        Checked by its parameters.
    """
    n, d = X.shape
    if case.linear:
        k = case.n_outputs()
        weights, biases = [np.zeros((d, k), dtype=X.dtype)], [np.zeros(k, dtype=X.dtype)]
    else:
        weights, biases = network_start(case, X, y, seed)
        if weights is None:
            raise NotApplicable("a custom model without a fastgd spec")
    Y = _targets(case, X, y)
    size = n if batch_size is None else min(batch_size, n)
    blocks = check_shuffle(shuffle) == "blocks"
    started = time.perf_counter()
    for order in row_orders(n, epochs, size, shuffle, seed):
        for xb, yb in _batches(X, Y, order, size, blocks):
            weights, biases = _step(case, weights, biases, xb, yb, lr)
    seconds = time.perf_counter() - started
    if not evaluate:
        return Outcome(seconds, "none")
    return Outcome(seconds, "params", params=flat_params(weights, biases))
