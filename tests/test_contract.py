"""Every backend satisfies the contract of fastgd.backends.contract."""

import ast
import inspect
import pathlib

import numpy as np
import pytest

import fastgd
from fastgd import optim
from fastgd.backends import BACKENDS, get_backend
from fastgd.backends.contract import (
    Backend,
    Data,
    EpochBlock,
    LinearModel,
    NetworkModel,
    State,
    UpdateConfig,
)
from fastgd.specs import losses, stopping

BACKENDS_DIR = pathlib.Path(fastgd.__file__).parent / "backends"
KINDS = [LinearModel, NetworkModel]


def _problem(kind, dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(dtype)
    Y = (X[:, :1] > 0).astype(dtype)
    if kind is LinearModel:
        spec = fastgd.fit(X, Y[:, 0], model="logistic", epochs=1, backend="numpy").model
    else:
        spec = fastgd.MLP(hidden=(4,), batch_norm=True).spec(3, 1, 2)
    params, running = spec.init_params(dtype, 0)
    assert spec.kernel_model().loss_code == losses.BINARY_CROSS_ENTROPY
    return spec, Data(X, Y, np.empty(0, dtype)), params, running


def test_every_backend_is_a_backend_object(backend):
    impl = get_backend(backend)
    assert isinstance(impl, Backend)
    assert impl.name == backend and impl.max_threads() >= 1


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_every_backend_module_has_the_contract_signatures(backend, kind):
    module = get_backend(backend).kinds[kind]
    train = inspect.signature(module.train_epochs).parameters
    assert list(train) == ["model", "data", "state", "update", "block", "n_threads"]
    assert list(inspect.signature(module.loss_and_gradient).parameters) == ["model", "data", "params"]  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_train_epochs_updates_the_state_in_place_and_agrees_with_the_reference(backend, kind, dtype):  # fmt: skip
    results = []
    for name in ("numpy", backend):
        spec, data, params, running = _problem(kind, dtype)
        opt = optim.Adam(lr=0.01)
        state = State(params, running, opt.new_state(params.size, dtype),
                      np.zeros(1, np.int64), stopping.new_stop_state())  # fmt: skip
        history = np.full(3, np.nan)
        norms = np.zeros((3, spec.n_layers) if spec.n_layers else (0, 0))
        block = EpochBlock(np.empty((0, 0), np.int64), np.full(3, opt.lr), 3, history, norms)
        update = UpdateConfig(8, opt.code, opt.hyperparameters(), -np.inf, 5)
        n_done, status = get_backend(name).train_epochs(spec.kernel_model(), data, state, update, block, 1)  # fmt: skip
        assert (n_done, status) == (3, stopping.MAX_EPOCHS)
        assert state.step_count[0] == 3 * 5  # 40 rows in batches of 8
        assert np.all(np.isfinite(history)) and state.params is params
        results.append((params.copy(), history.copy()))
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=rtol)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_loss_and_gradient_returns_a_float_and_a_gradient_of_the_params_dtype(backend, kind):
    spec, data, params, _ = _problem(kind, np.float64)
    loss, grad = get_backend(backend).loss_and_gradient(spec.kernel_model(), data, params)
    assert isinstance(loss, float) and grad.shape == params.shape and grad.dtype == params.dtype


def test_an_unknown_kernel_model_is_rejected(backend):
    with pytest.raises(TypeError, match="no kernels for tuple"):
        get_backend(backend).loss_and_gradient((0, 1, True), None, None)


@pytest.mark.parametrize("name", BACKENDS)
def test_no_backend_imports_another_backend(name):
    others = set(BACKENDS) - {name}
    for path in (BACKENDS_DIR / name).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                assert node.module.split(".")[0] not in others, f"{path.name} imports {node.module}"  # fmt: skip
