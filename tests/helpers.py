"""Small data sets and a runner shared by the tests."""

import numpy as np

from fastgd import optim
from fastgd.backends import get_backend
from fastgd.backends.contract import Data, EpochBlock, LinearModel, State, UpdateConfig
from fastgd.specs import losses
from fastgd.specs import optimizers as opt_codes
from fastgd.specs.stopping import new_stop_state

# (loss code, number of outputs) for every linear model family
LOSS_CASES = [
    (losses.MSE, 1),
    (losses.MSE, 3),
    (losses.BINARY_CROSS_ENTROPY, 1),
    (losses.CATEGORICAL_CROSS_ENTROPY, 4),
]
LOSS_IDS = ["mse", "mse-3-targets", "binary-ce", "categorical-ce"]
NO_WEIGHTS = np.empty(0)  # the kernels' "all sample weights are 1" (float64)
numpy_ref = get_backend("numpy")  # the reference backend, the oracle


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
               fit_intercept=True, n_threads=1, seed=0, params=None, optimizer=None,
               weights=None, lr_epochs=None, l1=0.0, l2=0.0, power_t=0.0):  # fmt: skip
    """Call ``module.train_epochs`` (a backend) on fresh state; returns (params, history, n_done, status).

    ``lr_epochs`` defaults to the optimizer's lr in every epoch; ``l1``, ``l2`` and
    ``power_t`` go into the hyperparameter vector.
    """
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
    hyper = optimizer.hyperparameters()
    hyper[opt_codes.L1], hyper[opt_codes.L2], hyper[opt_codes.POWER_T] = l1, l2, power_t
    if lr_epochs is None:
        lr_epochs = np.full(epochs, optimizer.lr)
    weights = np.empty(0, dtype=X.dtype) if weights is None else weights.astype(X.dtype)
    n_done, status = module.train_epochs(
        LinearModel(loss_code, k, fit_intercept),
        Data(X, Y, weights),
        State(params, np.zeros(0, X.dtype), state, step_count, new_stop_state()),
        UpdateConfig(batch_size, optimizer.code, hyper, -np.inf, 5),
        EpochBlock(orders, lr_epochs, epochs, history, np.zeros((0, 0))),
        n_threads,
    )
    return params, history, n_done, status


def linear_loss(backend, X, Y, weights, params, loss_code, k, fit_intercept):
    """``backend.loss_and_gradient`` of a linear model, arguments spelled out."""
    return backend.loss_and_gradient(LinearModel(loss_code, k, fit_intercept), Data(X, Y, weights), params)  # fmt: skip


def kernel_loss(backend, X, Y, weights, params, model):
    """``backend.loss_and_gradient`` for a kernel model (e.g. ``spec.kernel_model()``)."""
    return backend.loss_and_gradient(model, Data(X, Y, weights), params)


def numeric_gradient(loss, params, h=1e-6):
    """Central finite differences of ``loss(params)``, one parameter at a time."""
    numeric = np.empty_like(params)
    for j in range(params.size):
        up, down = params.copy(), params.copy()
        up[j] += h
        down[j] -= h
        numeric[j] = (loss(up) - loss(down)) / (2 * h)
    return numeric
