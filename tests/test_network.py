"""Multi-layer perceptrons: gradients, every backend against the reference, learning, diagnostics."""

import warnings

import numpy as np
import pytest
from helpers import kernel_loss, numeric_gradient, numpy_ref

import fastgd
from fastgd import optim
from fastgd.backends.contract import Data, EpochBlock, State, UpdateConfig
from fastgd.specs import losses
from fastgd.specs import optimizers as opt_codes
from fastgd.specs.stopping import MAX_EPOCHS, new_stop_state

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "identity"]
TASKS = {  # (task, loss code, outputs, classes)
    "regression-2": ("regression", losses.MSE, 2, None),
    "binary": ("classification", losses.BINARY_CROSS_ENTROPY, 1, 2),
    "multiclass-4": ("classification", losses.CATEGORICAL_CROSS_ENTROPY, 4, 4),
}


def _problem(task, n=200, d=5, seed=0, dtype=np.float64):
    """Random X, encoded targets Y for a task."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    kind, loss_code, k, classes = TASKS[task]
    if loss_code == losses.MSE:
        Y = np.sin(X[:, :k]) + 0.1 * rng.standard_normal((n, k))
    else:
        Y = rng.integers(0, classes, size=(n, 1)).astype(float)
    return X.astype(dtype), Y.astype(dtype)


def _spec(task, d=5, hidden=(7, 6), **kwargs):
    kind, loss_code, k, classes = TASKS[task]
    spec = fastgd.MLP(hidden=hidden, task=kind, **kwargs).spec(d, k, classes)
    assert spec.loss_code == loss_code
    return spec


def _train(module, X, Y, spec, *, epochs=3, batch_size=32, optimizer=None, seed=0, n_threads=1,
           weights=None, l1=0.0, l2=0.0, clip_norm=0.0, shuffle=True):  # fmt: skip
    """Run ``module.train_epochs`` (a backend) from the spec's initialization."""
    params, running = spec.init_params(X.dtype, seed)
    optimizer = optimizer or optim.Adam(lr=0.01)
    hyper = optimizer.hyperparameters()
    hyper[opt_codes.L1], hyper[opt_codes.L2], hyper[opt_codes.CLIP_NORM] = l1, l2, clip_norm
    state = optimizer.new_state(params.size, X.dtype)
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    orders = np.stack([rng.permutation(n) for _ in range(epochs)]) if shuffle else np.empty((0, 0), np.int64)  # fmt: skip
    history = np.full(epochs, np.nan)
    norms = np.zeros((epochs, spec.n_layers))
    weights = np.empty(0, X.dtype) if weights is None else weights.astype(X.dtype)
    n_done, status = module.train_epochs(
        spec.kernel_model(),
        Data(X, Y, weights),
        State(params, running, state, np.zeros(1, np.int64), new_stop_state()),
        UpdateConfig(batch_size, optimizer.code, hyper, -np.inf, 5),
        EpochBlock(orders, np.full(epochs, optimizer.lr), epochs, history, norms),
        n_threads,
    )
    return params, running, history, norms, n_done, status


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch_norm", [False, True, (True, False)])
@pytest.mark.parametrize("task", list(TASKS))
def test_reference_gradient_matches_finite_differences(activation, batch_norm, task):
    X, Y = _problem(task, n=20, d=4)
    spec = _spec(task, d=4, hidden=(5, 3), activation=activation, batch_norm=batch_norm)
    params, _ = spec.init_params(np.float64, 0)
    params += 0.1 * np.random.default_rng(1).standard_normal(params.size)  # off the init
    weights = np.random.default_rng(2).uniform(0.0, 2.0, size=20)
    model = spec.kernel_model()

    def loss(p):
        return kernel_loss(numpy_ref, X, Y, weights, p, model)[0]

    _, grad = kernel_loss(numpy_ref, X, Y, weights, params, model)
    np.testing.assert_allclose(grad, numeric_gradient(loss, params), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("task", list(TASKS))
def test_backend_gradient_matches_reference(compiled_backend, batch_norm, task):
    X, Y = _problem(task, n=700, d=9)  # large enough for parallel chunks
    spec = _spec(task, d=9, hidden=(40, 30), batch_norm=batch_norm, activation="tanh")
    params, _ = spec.init_params(np.float64, 0)
    model = spec.kernel_model()
    expected = kernel_loss(numpy_ref, X, Y, np.empty(0), params, model)
    loss, grad = kernel_loss(compiled_backend, X, Y, np.empty(0), params, model)
    assert loss == pytest.approx(expected[0], rel=1e-12)
    np.testing.assert_allclose(grad, expected[1], rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("batch_size,shuffle", [(1, True), (32, True), (300, False)])
def test_backend_training_matches_reference(compiled_backend, activation, batch_norm, task, batch_size, shuffle):  # fmt: skip
    if batch_norm and batch_size == 1:
        pytest.skip("batch norm needs batches of 2 or more")
    X, Y = _problem(task, n=300, d=5)
    spec = _spec(task, activation=activation, batch_norm=batch_norm)
    weights = np.random.default_rng(4).uniform(0.5, 1.5, size=300)
    kwargs = dict(batch_size=batch_size, shuffle=shuffle, weights=weights, l2=1e-3)
    expected = _train(numpy_ref, X, Y, spec, **kwargs)
    result = _train(compiled_backend, X, Y, spec, n_threads=2, **kwargs)
    # atol: biases in front of batch norm have an exactly-zero gradient, so they only
    # collect rounding noise (~1e-10 after Adam's normalization), which differs by backend
    for got, want in zip(result[:4], expected[:4], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert result[4:] == expected[4:] == (3, MAX_EPOCHS)


@pytest.mark.parametrize("optimizer", [optim.SGD(lr=0.05, momentum=0.9), optim.RMSprop(lr=0.01)])
def test_backend_network_with_penalties_and_clipping(compiled_backend, optimizer):
    X, Y = _problem("multiclass-4", n=400, d=5)
    spec = _spec("multiclass-4", batch_norm=(True, False), activation="leaky_relu")
    kwargs = dict(optimizer=optimizer, batch_size=64, l1=0.02, l2=1e-3, clip_norm=0.5)
    expected = _train(numpy_ref, X, Y, spec, **kwargs)
    no_l1 = _train(numpy_ref, X, Y, spec, **{**kwargs, "l1": 0.0})
    assert not np.allclose(expected[0], no_l1[0])  # the L1 step does act
    result = _train(compiled_backend, X, Y, spec, **kwargs)
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("batch_size", [32, 2000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_bit_identical_for_one_and_two_threads(compiled_backend, batch_size, dtype):
    X, Y = _problem("multiclass-4", n=2000, d=20, dtype=dtype)
    spec = _spec("multiclass-4", d=20, hidden=(64, 32), batch_norm=(True, False))
    one = _train(compiled_backend, X, Y, spec, batch_size=batch_size, n_threads=1)
    two = _train(compiled_backend, X, Y, spec, batch_size=batch_size, n_threads=2)
    for a, b in zip(one[:4], two[:4], strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_parallel_optimizer_step(compiled_backend, dtype, monkeypatch):
    # 11,392 parameters: with the parallel threshold lowered 16-fold, Cython's optimizer
    # step (Adam) runs on blocks of them on the threads (parameters x 8 >= 16 x
    # PARALLEL_MIN_WORK); the same results as one thread, and (float64) as the NumPy
    # reference. (At the default threshold the step of so few parameters is serial.)
    from fastgd.backends.cython import network as cython_network

    monkeypatch.setattr(cython_network, "PARALLEL_MIN_WORK", 4096)
    X, Y = _problem("multiclass-4", n=1000, d=20, dtype=dtype)
    spec = _spec("multiclass-4", d=20, hidden=(128, 64), batch_norm=(True, False))
    one = _train(compiled_backend, X, Y, spec, epochs=2, batch_size=128, n_threads=1)
    two = _train(compiled_backend, X, Y, spec, epochs=2, batch_size=128, n_threads=2)
    for a, b in zip(one[:4], two[:4], strict=True):
        assert np.array_equal(a, b)
    if dtype == np.float64:
        expected = _train(numpy_ref, X, Y, spec, epochs=2, batch_size=128)
        for got, want in zip(two[:3], expected[:3], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_backend_network_float32(compiled_backend):
    X, Y = _problem("binary", n=500, d=8, dtype=np.float32)
    spec = _spec("binary", d=8, batch_norm=True)
    expected = _train(numpy_ref, X, Y, spec, batch_size=50)
    result = _train(compiled_backend, X, Y, spec, batch_size=50)
    assert result[0].dtype == np.float32 and result[1].dtype == np.float32
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(result[2], expected[2], rtol=1e-4)


def test_xor(backend):
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    result = fastgd.fit(X, y, model=fastgd.MLP(hidden=(8,), activation="tanh"), optimizer="adam",
                        lr=0.05, batch_size=None, epochs=500, seed=0, backend=backend)  # fmt: skip
    assert np.array_equal(result.predict(X), y)
    assert result.predict_proba(X).shape == (4, 2)


def test_digits_accuracy(backend):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    rng = np.random.default_rng(0)
    test = rng.permutation(len(y))[:450]
    train = np.setdiff1d(np.arange(len(y)), test)
    for batch_norm in (False, True):
        result = fastgd.fit(X[train], y[train], model=fastgd.MLP(hidden=(64,), batch_norm=batch_norm),
                            optimizer="adam", lr=1e-3, epochs=30, seed=0, backend=backend)  # fmt: skip
        accuracy = np.mean(result.predict(X[test]) == y[test])
        assert accuracy >= 0.95, (batch_norm, accuracy)


def test_sine_regression(backend):
    x = np.linspace(-3, 3, 200)
    result = fastgd.fit(x, np.sin(x), model=fastgd.MLP(hidden=(32, 32), activation="tanh", task="regression"),
                        optimizer="adam", lr=0.01, epochs=300, seed=0, backend=backend)  # fmt: skip
    rmse = np.sqrt(np.mean((result.predict(x) - np.sin(x)) ** 2))
    assert rmse < 0.03  # sin has amplitude 1


def test_named_parameters_and_batch_norm_prediction():
    X, Y = _problem("multiclass-4", n=300, d=5)
    y = Y[:, 0].astype(int)
    result = fastgd.fit(X, y, model=fastgd.MLP(hidden=(6,), batch_norm=True), epochs=5,
                        optimizer="adam", lr=0.01, seed=0, backend="numpy")  # fmt: skip
    named = result.named_params
    assert named["dense1.weight"].shape == (5, 6) and named["dense2.weight"].shape == (6, 4)
    assert named["dense1.bn_scale"].shape == (6,) and named["dense1.bn_running_var"].shape == (6,)
    assert not np.allclose(named["dense1.bn_running_mean"], 0.0)  # the running averages moved
    # prediction normalizes with the running averages, by hand:
    assert "dense1.bias" not in named  # batch norm's shift replaces the bias
    h = X @ named["dense1.weight"]
    h = (h - named["dense1.bn_running_mean"]) / np.sqrt(named["dense1.bn_running_var"] + 1e-5)
    h = np.maximum(named["dense1.bn_scale"] * h + named["dense1.bn_shift"], 0.0)
    np.testing.assert_allclose(result.decision_function(X), h @ named["dense2.weight"] + named["dense2.bias"])  # fmt: skip
    with pytest.raises(AttributeError, match="named_params"):
        _ = result.coef_


def test_initializations_have_the_stated_scale():
    for init, activation, std in [
        ("he_normal", "relu", np.sqrt(2 / 400)),
        ("he_uniform", "relu", np.sqrt(2 / 400)),
        ("xavier_uniform", "tanh", np.sqrt(2 / 700)),
        ("xavier_normal", "tanh", np.sqrt(2 / 700)),
    ]:
        spec = fastgd.MLP(hidden=(300,), init=init, activation=activation, task="regression").spec(400, 1)  # fmt: skip
        params, _ = spec.init_params(np.float64, seed=0)
        W = spec.named(params, np.empty(0))["dense1.weight"]
        assert W.std() == pytest.approx(std, rel=0.02), init
        again, _ = spec.init_params(np.float64, seed=0)
        assert np.array_equal(params, again)
    assert fastgd.MLP(activation="relu").init == "he_normal"
    assert fastgd.MLP(activation="sigmoid").init == "xavier_uniform"


def test_vanishing_gradients_are_reported(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10))
    y = (X[:, 0] > 0).astype(int)
    deep = fastgd.MLP(hidden=(16,) * 8, activation="sigmoid", init_scale=0.3)
    with pytest.warns(fastgd.GradientWarning, match="vanishing gradients.*dense1.*ReLU.*batch normalization"):  # fmt: skip
        result = fastgd.fit(X, y, model=deep, epochs=3, lr=0.1, seed=0, backend=backend)
    assert result.gradient_diagnosis == "vanishing"
    assert result.gradient_norms.shape == (3, 9)
    assert np.all(np.isfinite(result.params)) and result.stop_reason == "max_epochs"
    healthy = fastgd.MLP(hidden=(16, 16), activation="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastgd.GradientWarning)
        result = fastgd.fit(X, y, model=healthy, epochs=3, lr=0.1, seed=0, backend=backend)
    assert result.gradient_diagnosis is None


def test_exploding_gradients_are_reported(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10))
    y = X @ rng.standard_normal(10)
    model = fastgd.MLP(hidden=(32, 32), activation="relu", task="regression")
    with pytest.warns(fastgd.GradientWarning, match="exploding gradients.*dense.*clip_norm"):
        with pytest.warns(fastgd.DivergenceWarning):
            result = fastgd.fit(X, y, model=model, epochs=20, lr=5.0, seed=0, backend=backend)
    assert result.gradient_diagnosis == "exploding" and result.stop_reason == "diverged"
    assert np.all(np.isfinite(result.params))
    assert np.all(np.isfinite(result.predict(X)))


def test_network_early_stopping_and_warm_start():
    X, Y = _problem("binary", n=300, d=5)
    y = Y[:, 0].astype(int)
    model = fastgd.MLP(hidden=(8,), batch_norm=True)
    first = fastgd.fit(X, y, model=model, epochs=5, optimizer="adam", lr=0.01, seed=0,
                       early_stopping=True, backend="numpy")  # fmt: skip
    assert len(first.validation_loss_history) == 5
    more = fastgd.fit(X, y, model=model, epochs=3, optimizer="adam", lr=0.01, seed=0, init=first, backend="numpy")  # fmt: skip
    assert more.n_updates > first.n_updates
    with pytest.raises(ValueError, match="does not match"):
        fastgd.fit(X, y, model=fastgd.MLP(hidden=(9,)), init=first)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: fastgd.MLP(hidden=(10, 0)), "hidden must be a non-empty sequence of positive integers"),
        (lambda: fastgd.MLP(hidden=(10, 2.5)), "hidden must be a non-empty sequence of positive integers"),
        (lambda: fastgd.MLP(hidden=()), "hidden must be a non-empty sequence"),
        (lambda: fastgd.MLP(hidden="abc"), "hidden must be"),
        (lambda: fastgd.MLP(activation="softplus"), "activation must be one of"),
        (lambda: fastgd.MLP(init="lecun"), "init must be one of"),
        (lambda: fastgd.MLP(task="ranking"), "task must be one of"),
        (lambda: fastgd.MLP(hidden=(4, 4), batch_norm=(True,)), "batch_norm has 1 entries for 2 hidden layers"),
        (lambda: fastgd.MLP(init_scale=0), "init_scale must be a positive"),
        (lambda: fastgd.MLP(bn_momentum=1.5), "bn_momentum must be in"),
        (lambda: fastgd.MLP(leaky_slope=-0.1), "leaky_slope must be a number in"),
    ],
)  # fmt: skip
def test_invalid_network_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_targets_that_do_not_fit_the_task():
    X = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(ValueError, match="non-integer float values.*task='regression'"):
        fastgd.fit(X, X[:, 0], model=fastgd.MLP())
    with pytest.raises(ValueError, match="single class"):
        fastgd.fit(X, np.ones(50), model=fastgd.MLP())
    with pytest.raises(ValueError, match="must be numeric for a regression"):
        fastgd.fit(X, np.array(["a"] * 50), model=fastgd.MLP(task="regression"))
    with pytest.raises(ValueError, match="batch normalization needs batches of at least 2"):
        fastgd.fit(X, X[:, 0], model=fastgd.MLP(batch_norm=True, task="regression"), batch_size=1)
    with pytest.raises(ValueError, match="model must be one of"):
        fastgd.fit(X, X[:, 0], model="mlp")
