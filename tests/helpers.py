"""Small data sets and a runner shared by the tests."""

import numpy as np

from fastgd import optim
from fastgd.specs import losses
from fastgd.specs.stopping import new_stop_state

# (loss code, number of outputs) for every linear model family
LOSS_CASES = [
    (losses.MSE, 1),
    (losses.MSE, 3),
    (losses.BINARY_CROSS_ENTROPY, 1),
    (losses.CATEGORICAL_CROSS_ENTROPY, 4),
]
LOSS_IDS = ["mse", "mse-3-targets", "binary-ce", "categorical-ce"]


def make_problem(loss_code, k, n=300, d=7, seed=0, dtype=np.float64):
    """Random X and encoded targets Y for a loss, and random parameters."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if loss_code == losses.MSE:
        Y = X @ rng.standard_normal((d, k)) + 0.1 * rng.standard_normal((n, k))
    elif loss_code == losses.BINARY_CROSS_ENTROPY:
        Y = (X[:, :1] + 0.5 * rng.standard_normal((n, 1)) > 0).astype(float)
    else:
        Y = rng.integers(0, k, size=(n, 1)).astype(float)
    params = 0.3 * rng.standard_normal(d * k + k)
    return X.astype(dtype), Y.astype(dtype), params.astype(dtype)


def run_epochs(module, X, Y, loss_code, k, *, epochs=5, batch_size=32, lr=0.05, shuffle=True,
               fit_intercept=True, n_threads=1, seed=0, params=None, optimizer=None):  # fmt: skip
    """Call ``module.train_epochs`` on fresh state; returns (params, history, n_done, status)."""
    n, d = X.shape
    if params is None:
        params = np.zeros(d * k + k, dtype=X.dtype)
    rng = np.random.default_rng(seed)
    if shuffle:
        orders = np.stack([rng.permutation(n) for _ in range(epochs)])
    else:
        orders = np.empty((0, 0), dtype=np.int64)
    history = np.full(epochs, np.nan)
    optimizer = optim.SGD(lr=lr) if optimizer is None else optimizer
    state = optimizer.new_state(params.size, X.dtype)
    step_count = np.zeros(1, dtype=np.int64)
    n_done, status = module.train_epochs(
        X, Y, params, orders, epochs, loss_code, k, fit_intercept, batch_size, optimizer.code,
        optimizer.hyperparameters(), state, step_count, -np.inf, 5, new_stop_state(), history,
        n_threads,
    )  # fmt: skip
    return params, history, n_done, status
