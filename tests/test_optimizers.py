"""Optimizers: hand-computed first steps, every backend against the reference, convergence."""

import copy
import math

import numpy as np
import pytest
from helpers import LOSS_CASES, LOSS_IDS, make_problem, numpy_ref, run_epochs

import fastgd
from fastgd import optim
from fastgd.backends.numpy import update as numpy_update
from fastgd.specs import losses, stopping
from fastgd.specs import optimizers as opt_codes

CONFIGS = {
    "sgd": optim.SGD(lr=0.05),
    "momentum": optim.SGD(lr=0.02, momentum=0.9),
    "momentum-dampening": optim.SGD(lr=0.02, momentum=0.9, dampening=0.1),
    "nesterov": optim.SGD(lr=0.02, momentum=0.9, nesterov=True),
    "adagrad": optim.Adagrad(lr=0.05),
    "adagrad-decay": optim.Adagrad(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
    "rmsprop": optim.RMSprop(lr=0.005),
    "rmsprop-centered-momentum": optim.RMSprop(lr=0.002, momentum=0.9, centered=True),
    "adam": optim.Adam(lr=0.01),
    "adam-amsgrad-l2": optim.Adam(lr=0.01, amsgrad=True, weight_decay=0.01),
    "adamw": optim.AdamW(lr=0.01),
    "adamw-amsgrad": optim.AdamW(lr=0.01, weight_decay=0.1, amsgrad=True),
}


def _steps(optimizer, p0, grads):
    """Parameters after each update of the reference optimizer on a 1-parameter problem."""
    params = np.array([p0])
    state = optimizer.new_state(1, np.float64)
    out = []
    for t, g in enumerate(grads, start=1):
        numpy_update.optimizer_step(params, np.array([g]), 1, optimizer.code, optimizer.hyperparameters(), state, t)  # fmt: skip
        out.append(params[0])
    return out


def test_sgd_first_steps_by_hand():
    assert _steps(optim.SGD(lr=0.1), 1.0, [0.5, -1.0]) == pytest.approx([0.95, 1.05])
    # momentum 0.9: b1 = g1 = 0.5; b2 = 0.9 * 0.5 - 1.0 = -0.55
    assert _steps(optim.SGD(lr=0.1, momentum=0.9), 1.0, [0.5, -1.0]) == pytest.approx([0.95, 1.005])
    # Nesterov: steps g1 + 0.9 b1 = 0.95 and g2 + 0.9 b2 = -1.495
    assert _steps(optim.SGD(lr=0.1, momentum=0.9, nesterov=True), 1.0, [0.5, -1.0]) == pytest.approx([0.905, 1.0545])  # fmt: skip
    # dampening 0.5: b2 = 0.9 * 0.5 + 0.5 * (-1.0) = -0.05
    assert _steps(optim.SGD(lr=0.1, momentum=0.9, dampening=0.5), 1.0, [0.5, -1.0]) == pytest.approx([0.95, 0.955])  # fmt: skip


def test_adagrad_first_steps_by_hand():
    # s1 = 0.25 -> step 0.1 * 0.5 / 0.5 = 0.1; s2 = 1.25 -> step 0.1 * -1 / sqrt(1.25)
    expected = [0.9, 0.9 + 0.1 / math.sqrt(1.25)]
    assert _steps(optim.Adagrad(lr=0.1, eps=0.0), 1.0, [0.5, -1.0]) == pytest.approx(expected)
    # lr_decay 1.0: the second step uses lr / 2
    expected = [0.9, 0.9 + 0.05 / math.sqrt(1.25)]
    assert _steps(optim.Adagrad(lr=0.1, lr_decay=1.0, eps=0.0), 1.0, [0.5, -1.0]) == pytest.approx(expected)  # fmt: skip


def test_rmsprop_first_steps_by_hand():
    # v1 = 0.01 * 0.25 = 0.0025 -> step 0.1 * 0.5 / 0.05 = 1.0
    # v2 = 0.99 * 0.0025 + 0.01 * 1 = 0.012475 -> step 0.1 * -1 / sqrt(0.012475)
    expected = [0.0, 0.1 / math.sqrt(0.012475)]
    assert _steps(optim.RMSprop(lr=0.1, eps=0.0), 1.0, [0.5, -1.0]) == pytest.approx(expected)
    # centered: a1 = 0.005, denominator sqrt(0.0025 - 0.000025)
    first = 1.0 - 0.1 * 0.5 / math.sqrt(0.0025 - 0.005**2)
    assert _steps(optim.RMSprop(lr=0.1, eps=0.0, centered=True), 1.0, [0.5])[0] == pytest.approx(first)  # fmt: skip
    # momentum 0.5: b1 = 0.5 / 0.05 = 10, b2 = 5 + (-1) / sqrt(0.012475)
    b2 = 0.5 * 10 - 1.0 / math.sqrt(0.012475)
    assert _steps(optim.RMSprop(lr=0.1, eps=0.0, momentum=0.5), 1.0, [0.5, -1.0]) == pytest.approx([0.0, -0.1 * b2])  # fmt: skip


def test_adam_first_steps_by_hand():
    # t=1: m = 0.05, v = 0.00025; m / (1 - 0.9) = 0.5, sqrt(v / (1 - 0.999)) = 0.5 -> step lr * 1
    p1 = 1.0 - 0.1 * 0.05 / 0.1 / (math.sqrt(0.00025) / math.sqrt(0.001) + 1e-8)
    # t=2: m = 0.045 - 0.1 = -0.055, v = 0.00024975 + 0.001 = 0.00124975
    p2 = p1 + 0.1 * 0.055 / 0.19 / (math.sqrt(0.00124975) / math.sqrt(1 - 0.999**2) + 1e-8)
    assert _steps(optim.Adam(lr=0.1), 1.0, [0.5, -1.0]) == pytest.approx([p1, p2], rel=1e-12)
    # AdamW decays first: p = 1 * (1 - 0.1 * 0.5), then the same Adam step
    assert _steps(optim.AdamW(lr=0.1, weight_decay=0.5), 1.0, [0.5])[0] == pytest.approx(0.95 - (1.0 - p1))  # fmt: skip
    # Adam's L2 weight decay adds wd * p to g: g = 0.5 + 0.5 * 1.0 = 1.0, still a step of lr
    assert _steps(optim.Adam(lr=0.1, weight_decay=0.5), 1.0, [0.5])[0] == pytest.approx(0.9, rel=1e-7)  # fmt: skip
    # AMSGrad keeps the larger v: with g = [1, 0.1], v2 uses max(v1, v2) = v1 * ... (v1 = 0.001)
    v1, v2 = 0.001, 0.999 * 0.001 + 0.001 * 0.01
    m2 = 0.9 * 0.1 + 0.1 * 0.1
    p1 = 1.0 - 0.1 * 0.1 / 0.1 / (math.sqrt(v1) / math.sqrt(0.001) + 1e-8)
    p2 = p1 - 0.1 * m2 / 0.19 / (math.sqrt(max(v1, v2)) / math.sqrt(1 - 0.999**2) + 1e-8)
    assert _steps(optim.Adam(lr=0.1, amsgrad=True), 1.0, [1.0, 0.1]) == pytest.approx([p1, p2], rel=1e-12)  # fmt: skip


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("loss_code,k", LOSS_CASES[1:], ids=LOSS_IDS[1:])
@pytest.mark.parametrize("batch_size,fit_intercept", [(1, True), (32, False), (2000, True)])
def test_backend_optimizers_match_reference(compiled_backend, name, loss_code, k, batch_size, fit_intercept):  # fmt: skip
    X, Y, _ = make_problem(loss_code, k, n=2000, d=20)
    optimizer = CONFIGS[name]
    if batch_size == 1 and getattr(optimizer, "momentum", 0.0) and loss_code == losses.MSE:
        # per-sample momentum at lr 0.02 diverges on three MSE targets (loss 1e13 to 1e22
        # after one epoch): compare training, not the arithmetic of an explosion
        optimizer = copy.copy(optimizer)
        optimizer.lr /= 10
    kwargs = dict(epochs=3, batch_size=batch_size, fit_intercept=fit_intercept, optimizer=optimizer, shuffle=batch_size < 2000)  # fmt: skip
    expected = run_epochs(numpy_ref, X, Y, loss_code, k, **kwargs)
    one = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=1, **kwargs)
    two = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=2, **kwargs)
    assert expected[3] == stopping.MAX_EPOCHS
    np.testing.assert_allclose(one[0], expected[0], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(one[1], expected[1], rtol=1e-10)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


@pytest.mark.parametrize("name", ["momentum", "rmsprop", "adam", "adamw"])
def test_backend_optimizers_match_reference_float32(compiled_backend, name):
    X, Y, _ = make_problem(losses.CATEGORICAL_CROSS_ENTROPY, 4, n=2000, d=20, dtype=np.float32)
    kwargs = dict(epochs=3, batch_size=64, optimizer=CONFIGS[name])
    expected = run_epochs(numpy_ref, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 4, **kwargs)
    result = run_epochs(compiled_backend, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 4, **kwargs)
    assert result[0].dtype == np.float32
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-4, atol=1e-4 * np.abs(expected[0]).max())  # fmt: skip


@pytest.mark.parametrize(
    "optimizer",
    [
        optim.SGD(lr=0.1),
        optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
        optim.Adagrad(lr=0.5),
        optim.RMSprop(lr=1e-3),  # steps stay ~lr near the optimum: a small lr
        optim.Adam(lr=0.05),
        optim.AdamW(lr=0.05, weight_decay=0.0),
    ],
    ids=repr,
)
def test_every_optimizer_reaches_the_least_squares_solution(backend, optimizer):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    y = X @ rng.standard_normal(5) + 2.0 + 0.1 * rng.standard_normal(400)
    A = np.column_stack([X, np.ones(400)])
    exact = np.linalg.solve(A.T @ A, A.T @ y)
    result = fastgd.fit(X, y, optimizer=optimizer, batch_size=None, epochs=3000, backend=backend)
    np.testing.assert_allclose(np.append(result.coef_, result.intercept_), exact, atol=2e-3)
    assert result.n_updates == 3000 and result.optimizer == optimizer


def test_optimizer_by_name_with_lr_and_result_fields():
    X = np.linspace(-1, 1, 50)
    result = fastgd.fit(
        X, 2 * X, optimizer="adam", lr=0.05, epochs=3, batch_size=10, backend="numpy"
    )
    assert result.optimizer == optim.Adam(lr=0.05)
    assert result.n_updates == 15
    assert result.optimizer_state.shape == (3, 2) and np.any(result.optimizer_state != 0)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: optim.Adam(betas=(0.9, 1.0)), r"betas\[1\] must be < 1.0"),
        (lambda: optim.Adam(betas=(-0.1, 0.9)), r"betas\[0\] must be >= 0.0"),
        (lambda: optim.Adam(betas=0.9), "betas must be a pair"),
        (lambda: optim.Adam(lr=-1e-3), "lr must be > 0.0"),
        (lambda: optim.SGD(momentum=-0.5), "momentum must be >= 0.0"),
        (lambda: optim.SGD(nesterov=True), "nesterov=True requires momentum > 0"),
        (lambda: optim.RMSprop(alpha=1.0), "alpha must be < 1.0"),
        (lambda: optim.Adagrad(eps=float("nan")), "eps must be a finite number"),
        (lambda: optim.AdamW(weight_decay=-0.1), "weight_decay must be >= 0.0"),
    ],
)
def test_invalid_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_optimizer_and_double_lr():
    X = np.linspace(-1, 1, 20)
    with pytest.raises(ValueError, match="optimizer must be one of 'sgd', 'adagrad'"):
        fastgd.fit(X, X, optimizer="adadelta")
    with pytest.raises(ValueError, match="not both"):
        fastgd.fit(X, X, optimizer=optim.Adam(), lr=0.1)


ILL_CONDITIONED = {
    "sgd": optim.SGD(lr=9e-4),
    "momentum": optim.SGD(lr=9e-4, momentum=0.9),
    "nesterov": optim.SGD(lr=4e-4, momentum=0.9, nesterov=True),
    "adagrad": optim.Adagrad(lr=1.0),
    "rmsprop": optim.RMSprop(lr=1e-3),
    "adam": optim.Adam(lr=0.05),
    "adamw": optim.AdamW(lr=0.05, weight_decay=0.0),
}


def test_ill_conditioned_least_squares(backend):
    # feature scales 1, 10, 31.6: the Hessian's condition number is ~1e3
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)) * np.array([1.0, 10.0, 31.6])
    X -= X.mean(axis=0)
    y = X @ np.array([1.0, -0.5, 0.2]) + 3.0 + 0.1 * rng.standard_normal(200)
    A = np.column_stack([X, np.ones(200)])
    assert 5e2 < np.linalg.cond(A.T @ A) < 2e3
    exact = np.linalg.solve(A.T @ A, A.T @ y)

    def reached(epoch, info):  # stop once every parameter is within 1e-3 of the solution
        return np.abs(info["params"] - exact).max() < 1e-3

    epochs_needed = {}
    for name, optimizer in ILL_CONDITIONED.items():
        result = fastgd.fit(X, y, optimizer=optimizer, batch_size=None, epochs=20000, callback=reached, backend=backend)  # fmt: skip
        assert result.stop_reason == "callback", (name, result)
        epochs_needed[name] = result.n_epochs
    assert epochs_needed["momentum"] < epochs_needed["sgd"] / 5
    assert epochs_needed["adam"] < epochs_needed["sgd"] / 5


def test_clip_gradient_by_hand():
    hyper = optim.SGD().hyperparameters()
    hyper[opt_codes.CLIP_NORM] = 1.0
    grad = np.array([3.0, -4.0, 100.0])  # the last entry is an untrained intercept
    numpy_update.clip_gradient(grad, 2, hyper)
    np.testing.assert_allclose(grad, [3.0 / (5 + 1e-6), -4.0 / (5 + 1e-6), 100.0])
    hyper[opt_codes.CLIP_VALUE] = 2.0  # value first: [2, -2], norm sqrt(8) > 1
    grad = np.array([3.0, -4.0])
    numpy_update.clip_gradient(grad, 2, hyper)
    np.testing.assert_allclose(grad, np.array([2.0, -2.0]) / (np.sqrt(8) + 1e-6))
    grad = np.array([0.3, -0.4])  # norm 0.5 < 1 and below the value bound: unchanged
    numpy_update.clip_gradient(grad, 2, hyper)
    np.testing.assert_array_equal(grad, [0.3, -0.4])


CLIPPED = {
    "value": dict(clip_value=0.01),
    "norm": dict(clip_norm=0.05),
    "both": dict(clip_value=0.02, clip_norm=0.05),
}


@pytest.mark.parametrize("clip", list(CLIPPED))
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("batch_size", [1, 32, 2000])
def test_backend_clipping_matches_reference(compiled_backend, clip, name, batch_size):
    X, Y, _ = make_problem(losses.BINARY_CROSS_ENTROPY, 1, n=2000, d=20)
    optimizer = CONFIGS[name]
    hyper = optimizer.hyperparameters()
    for key, value in CLIPPED[clip].items():
        hyper[getattr(opt_codes, key.upper())] = value

    class Clipped(type(optimizer)):
        def hyperparameters(self):
            return hyper

    clipped = Clipped.__new__(Clipped)
    clipped.__dict__.update(vars(optimizer))
    kwargs = dict(epochs=3, batch_size=batch_size, optimizer=clipped, shuffle=batch_size < 2000)
    expected = run_epochs(numpy_ref, X, Y, losses.BINARY_CROSS_ENTROPY, 1, **kwargs)
    unclipped = run_epochs(numpy_ref, X, Y, losses.BINARY_CROSS_ENTROPY, 1, **{**kwargs, "optimizer": optimizer})  # fmt: skip
    assert not np.allclose(expected[0], unclipped[0])  # the thresholds do bite
    one = run_epochs(compiled_backend, X, Y, losses.BINARY_CROSS_ENTROPY, 1, n_threads=1, **kwargs)
    two = run_epochs(compiled_backend, X, Y, losses.BINARY_CROSS_ENTROPY, 1, n_threads=2, **kwargs)
    np.testing.assert_allclose(one[0], expected[0], rtol=1e-9, atol=1e-12)
    assert np.array_equal(one[0], two[0])


def test_clip_norm_bounds_the_step(backend):
    rng = np.random.default_rng(1)
    X = 10 * rng.standard_normal((100, 3))
    y = X @ np.ones(3)
    result = fastgd.fit(X, y, batch_size=None, epochs=1, lr=0.1, clip_norm=0.5, backend=backend)
    assert np.linalg.norm(result.params) <= 0.1 * 0.5 + 1e-12
    assert np.linalg.norm(result.params) > 0.1 * 0.5 * 0.99  # the raw gradient is far larger
    result = fastgd.fit(X, y, batch_size=None, epochs=1, lr=0.1, clip_value=0.2, backend=backend)
    np.testing.assert_allclose(np.abs(result.params[:3]), 0.1 * 0.2)


@pytest.mark.parametrize(
    "kwargs", [dict(clip_value=0), dict(clip_norm=-1.0), dict(clip_norm=np.inf)]
)
def test_invalid_clipping_thresholds(kwargs):
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a positive"):
        fastgd.fit(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20), **kwargs)
