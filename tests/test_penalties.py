"""L1/L2/elastic-net penalties and sample weights: by hand, known answers, every backend."""

import numpy as np
import pytest
from helpers import LOSS_CASES, LOSS_IDS, linear_loss, make_problem, numpy_ref, run_epochs

import fastgd
from fastgd import optim
from fastgd.backends import get_backend
from fastgd.specs import losses

PENALTIES = {"l2": dict(l2=0.05), "l1": dict(l1=0.02), "elasticnet": dict(l1=0.01, l2=0.03)}


def test_penalized_steps_by_hand():
    # x = 1, y = 0, no intercept: data gradient 2 w. One full-batch SGD step at lr 0.1:
    X, y = np.array([[1.0]]), np.array([0.0])
    init = fastgd.fit(X, y, fit_intercept=False, batch_size=None, epochs=1, lr=1e-9)

    def one_step(**kwargs):
        init.params[0] = 1.0
        result = fastgd.fit(X, y, fit_intercept=False, batch_size=None, epochs=1, lr=0.1,
                            init=init, backend="numpy", **kwargs)  # fmt: skip
        return result.params[0], result.loss_history[0]

    # L2 alpha 0.5: g = 2 + 0.5 = 2.5 -> w = 0.75; loss = 1 + 0.25 * 0.75**2
    assert one_step(penalty="l2", alpha=0.5) == pytest.approx((0.75, 1 + 0.25 * 0.75**2))
    # L1 alpha 0.5: w = 0.8 after the step, then shrunk by 0.1 * 0.5 -> 0.75; loss 1 + 0.5 * 0.75
    assert one_step(penalty="l1", alpha=0.5) == pytest.approx((0.75, 1 + 0.5 * 0.75))
    # elastic net alpha 1, ratio 0.25: g = 2 + 0.75 -> w = 0.725, shrunk by 0.025 -> 0.7
    w, loss = one_step(penalty="elasticnet", alpha=1.0, l1_ratio=0.25)
    assert (w, loss) == pytest.approx((0.7, 1 + 0.25 * 0.7 + 0.375 * 0.7**2))
    # L1 larger than the weight: exactly zero
    assert one_step(penalty="l1", alpha=20.0)[0] == 0.0


@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("loss_code,k", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("batch_size", [1, 32, 2000])
def test_backend_penalties_and_weights_match_reference(compiled_backend, penalty, loss_code, k, batch_size):  # fmt: skip
    X, Y, _ = make_problem(loss_code, k, n=2000, d=20)
    weights = np.random.default_rng(3).uniform(0.0, 2.0, size=2000)
    lr = 0.005 if batch_size == 1 else 0.05
    kwargs = dict(epochs=3, batch_size=batch_size, lr=lr, weights=weights, **PENALTIES[penalty])
    expected = run_epochs(numpy_ref, X, Y, loss_code, k, **kwargs)
    plain = run_epochs(numpy_ref, X, Y, loss_code, k, epochs=3, batch_size=batch_size, lr=lr)
    assert not np.allclose(expected[0], plain[0])
    one = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=1, **kwargs)
    two = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=2, **kwargs)
    np.testing.assert_allclose(one[0], expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one[1], expected[1], rtol=1e-10)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


@pytest.mark.parametrize("optimizer", [optim.SGD(lr=0.05, momentum=0.9), optim.Adam(lr=0.01), optim.Adagrad(lr=0.05)])  # fmt: skip
def test_backend_penalties_with_optimizers_and_clipping(compiled_backend, optimizer):
    X, Y, _ = make_problem(losses.BINARY_CROSS_ENTROPY, 1, n=3000, d=30)
    weights = np.random.default_rng(4).uniform(0.5, 1.5, size=3000)
    kwargs = dict(epochs=3, batch_size=256, optimizer=optimizer, weights=weights, l1=0.01, l2=0.01, power_t=0.2)  # fmt: skip
    expected = run_epochs(numpy_ref, X, Y, losses.BINARY_CROSS_ENTROPY, 1, **kwargs)
    result = run_epochs(compiled_backend, X, Y, losses.BINARY_CROSS_ENTROPY, 1, **kwargs)
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-10, atol=1e-12)


def test_backend_penalties_and_weights_float32(compiled_backend):
    X, Y, _ = make_problem(losses.CATEGORICAL_CROSS_ENTROPY, 4, n=2000, d=20, dtype=np.float32)
    weights = np.random.default_rng(3).uniform(0.0, 2.0, size=2000)
    kwargs = dict(epochs=3, batch_size=64, weights=weights, l1=0.005, l2=0.01)
    expected = run_epochs(numpy_ref, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 4, **kwargs)
    result = run_epochs(compiled_backend, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 4, **kwargs)
    assert result[0].dtype == np.float32
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-4, atol=1e-4)


def _sparse_problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((500, 20))
    w = np.zeros(20)
    w[[1, 4, 9, 15]] = [2.0, -1.5, 1.0, -3.0]
    y = X @ w + 0.5 + 0.1 * rng.standard_normal(500)
    return X, y, w


def test_l1_finds_the_exact_support(backend):
    X, y, w = _sparse_problem()
    # Full batches find the support with a weak penalty; with mini-batches the threshold per
    # step must also exceed the gradient noise (alpha 0.1 at batch size 32 keeps some
    # irrelevant weights near 0.001 here).
    for batch_size, alpha in [(None, 0.05), (32, 0.2)]:
        result = fastgd.fit(X, y, penalty="l1", alpha=alpha, batch_size=batch_size, epochs=200,
                            lr=0.05, seed=0, backend=backend)  # fmt: skip
        assert np.array_equal(np.flatnonzero(result.coef_), np.flatnonzero(w)), batch_size
        assert np.all(result.coef_[w == 0] == 0.0)  # exact zeros, not just small values
    unpenalized = fastgd.fit(X, y, batch_size=32, epochs=50, lr=0.05, seed=0, backend=backend)
    assert np.count_nonzero(unpenalized.coef_) == 20


def test_elasticnet_full_batch_reaches_sklearn_elasticnet(backend):
    # sklearn minimizes |y - Xw|^2 / (2n) + a r |w|_1 + a (1 - r) / 2 |w|^2; fastgd's MSE is
    # |y - Xw|^2 / n, so alpha = 2a gives twice sklearn's objective and the same minimizer.
    # Full-batch proximal gradient descent (ISTA) converges to it.
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    X, y, _ = _sparse_problem(1)
    expected = sklearn_linear.ElasticNet(alpha=0.05, l1_ratio=0.7, tol=1e-12, max_iter=100000).fit(X, y)  # fmt: skip
    result = fastgd.fit(X, y, penalty="elasticnet", alpha=0.1, l1_ratio=0.7, batch_size=None,
                        epochs=3000, lr=0.2, backend=backend)  # fmt: skip
    np.testing.assert_allclose(result.coef_, expected.coef_, atol=1e-7)
    assert result.intercept_ == pytest.approx(expected.intercept_, abs=1e-7)
    assert np.array_equal(result.coef_ == 0, expected.coef_ == 0)


def test_l2_full_batch_reaches_ridge_solution(backend):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 5))
    y = X @ rng.standard_normal(5) + 1.0 + 0.3 * rng.standard_normal(300)
    alpha = 0.5
    # minimizer of |y - Xw - b|^2 / n + alpha / 2 |w|^2: centered normal equations
    Xc, yc = X - X.mean(0), y - y.mean()
    w = np.linalg.solve(Xc.T @ Xc / 300 * 2 + alpha * np.eye(5), Xc.T @ yc / 300 * 2)
    result = fastgd.fit(X, y, penalty="l2", alpha=alpha, batch_size=None, epochs=2000, lr=0.2,
                        backend=backend)  # fmt: skip
    np.testing.assert_allclose(result.coef_, w, atol=1e-9)
    assert result.intercept_ == pytest.approx(y.mean() - X.mean(0) @ w, abs=1e-9)


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
def test_weight_two_equals_a_duplicated_row(backend, model):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = X[:, 0] + 0.3 * rng.standard_normal(60)
    if model != "linear":
        y = np.digitize(y, [-0.5, 0.5] if model == "softmax" else [0.0])
    weights = np.ones(60)
    weights[[3, 17]] = 2.0
    weights[25] = 0.0  # weight 0 removes the row
    X_dup = np.vstack([np.delete(X, 25, axis=0), X[[3, 17]]])
    y_dup = np.concatenate([np.delete(y, 25), y[[3, 17]]])
    kwargs = dict(model=model, batch_size=None, epochs=30, lr=0.3, backend=backend)
    weighted = fastgd.fit(X, y, sample_weight=weights, **kwargs)
    duplicated = fastgd.fit(X_dup, y_dup, **kwargs)
    np.testing.assert_allclose(weighted.params, duplicated.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weighted.loss_history, duplicated.loss_history, rtol=1e-10)
    unweighted = fastgd.fit(X, y, **kwargs)
    assert not np.allclose(weighted.params, unweighted.params)


def test_sample_weight_scale_does_not_matter_and_input_is_kept(backend):
    X, y = make_problem(losses.MSE, 1, n=200, d=3)[:2]
    weights = np.random.default_rng(1).uniform(0.1, 2.0, size=200)
    original = weights.copy()
    a = fastgd.fit(X, y, sample_weight=weights, epochs=3, seed=0, backend=backend)
    b = fastgd.fit(X, y, sample_weight=10 * weights, epochs=3, seed=0, backend=backend)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10)
    assert np.array_equal(weights, original)


def test_weighted_early_stopping_and_float32():
    X, y = make_problem(losses.MSE, 1, n=300, d=3, dtype=np.float32)[:2]
    weights = np.random.default_rng(1).uniform(0.1, 2.0, size=300)
    result = fastgd.fit(X, y, sample_weight=weights, early_stopping=True, epochs=5, seed=0)
    assert result.params.dtype == np.float32 and len(result.validation_loss_history) == 5
    val = result.validation_rows
    module = get_backend(result.backend)
    w_val = (weights[val] / weights[val].mean()).astype(np.float32)
    loss, _ = linear_loss(
        module, X[val], y[val].reshape(-1, 1), w_val, result.params, losses.MSE, 1, True
    )
    assert loss == pytest.approx(result.validation_loss_history[result.best_epoch], rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(penalty="l3"), "penalty must be one of None, 'l2', 'l1', 'elasticnet'"),
        (dict(penalty="l2", alpha=-1.0), "alpha must be a finite number >= 0"),
        (dict(penalty="l2", alpha=np.inf), "alpha must be a finite number >= 0"),
        (dict(penalty="elasticnet", l1_ratio=1.5), r"l1_ratio must be a number in \[0, 1\]"),
        (
            dict(sample_weight=np.ones(19)),
            r"sample_weight must be 1-D with one weight per sample \(20\)",
        ),  # fmt: skip
        (dict(sample_weight=-np.ones(20)), "sample_weight must be >= 0; it has 20 negative"),
        (dict(sample_weight=np.full(20, np.nan)), "sample_weight contains 20 NaN"),
        (dict(sample_weight=np.zeros(20)), "sample_weight is zero for every sample"),
        (dict(sample_weight=["a"] * 20), "sample_weight must be numeric"),
        (
            dict(
                sample_weight=np.r_[np.zeros(19), 1.0],
                early_stopping=True,
                seed=0,
                validation_fraction=0.5,
            ),
            "sample_weight is zero on all of",
        ),  # fmt: skip
    ],
)
def test_invalid_penalty_and_weights(kwargs, message):
    X = np.linspace(-1, 1, 20)
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X, 2 * X, **kwargs)
