"""Recurrent networks (fastgd.RNN): gradients, backends, PyTorch parity, learning, fit.

The compiled kernels are specialized per dtype and per serial/parallel mode; to keep the
cold compile of this file small, the backend comparisons run in float64 with batches of
two or more chunks (the parallel kernels) and, for n_threads=1, the serial ones.
"""

import warnings

import numpy as np
import pytest

import fastgd
from fastgd.backends.contract import SequenceData
from fastgd.backends.numpy import recurrent as ref
from fastgd.backends.shared import predict
from fastgd.diagnostics import GradientWarning

CELLS = ("lstm", "gru", "tanh")
TASKS = (("regression", 2), ("binary", 2), ("multiclass", 3))


def _model(cell, output, task, k, f, layers=2, head=(3,), hidden=4):
    rnn = fastgd.RNN(cell, hidden=hidden, layers=layers, head=head, output=output,
                     task="regression" if task == "regression" else "classification")  # fmt: skip
    if task == "regression":
        return rnn.spec(f, k)
    return rnn.spec(f, None, k)


def _data(spec, B, T, lengths, rng, weights=True):
    f, k, seq = spec.n_features, spec.n_outputs, spec.sequence
    X = rng.standard_normal((B, T, f))
    if spec.task == "regression":
        Y = rng.standard_normal((B, T, k) if seq else (B, k))
    else:
        n_classes = 2 if spec.task == "binary" else k
        Y = rng.integers(0, n_classes, (B, T, 1) if seq else (B, 1)).astype(float)
    L = rng.integers(1, T + 1, B) if lengths else np.full(B, T)
    w = rng.uniform(0.5, 1.5, B) if weights else np.empty(0)
    return SequenceData(X, Y, w, L)


CASES = [
    (cell, output, task, k, lengths)
    for cell in CELLS
    for output in ("last", "sequence")
    for task, k in TASKS
    for lengths in (False, True)
]


@pytest.mark.parametrize("cell, output, task, k, lengths", CASES)
def test_reference_gradient_matches_finite_differences(cell, output, task, k, lengths):
    rng = np.random.default_rng(0)
    spec = _model(cell, output, task, k, f=2, hidden=3)
    data = _data(spec, B=4, T=5, lengths=lengths, rng=rng)
    params, _ = spec.init_params(np.float64, 1)
    params *= 2.0  # larger weights: gates away from their linear regime
    model = spec.kernel_model()
    _, grad = ref.loss_and_gradient(model, data, params)
    eps, numeric = 1e-6, np.empty_like(params)
    for j in range(params.size):
        step = np.zeros_like(params)
        step[j] = eps
        numeric[j] = (
            ref.loss_and_gradient(model, data, params + step)[0]
            - ref.loss_and_gradient(model, data, params - step)[0]
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cell, output, task, k, lengths", CASES)
def test_compiled_gradient_matches_reference(compiled_backend, cell, output, task, k, lengths):
    rng = np.random.default_rng(1)
    spec = _model(cell, output, task, k, f=3, hidden=5)
    data = _data(spec, B=37, T=6, lengths=lengths, rng=rng)  # 2 chunks of 18 and 19 rows
    params, _ = spec.init_params(np.float64, 2)
    model = spec.kernel_model()
    loss, grad = ref.loss_and_gradient(model, data, params)
    loss_c, grad_c = compiled_backend.loss_and_gradient(model, data, params)
    assert loss_c == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(grad_c, grad, rtol=1e-11, atol=1e-14)


def test_rational_tanh_of_float32_kernels_is_accurate():
    from fastgd.specs.recurrent import tanh_rational

    x = np.linspace(-20, 20, 400_001)
    assert np.max(np.abs(tanh_rational(x) - np.tanh(x))) < 4e-7
    x32 = x.astype(np.float32)
    assert np.max(np.abs(tanh_rational(x32) - np.tanh(x))) < 4e-7


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden, B", [(8, 40), (5, 37)])
def test_float32_kernels_match_the_reference(compiled_backend, cell, hidden, B):
    """float32 kernels use a rational tanh (error < 4e-7) and their own per-step products
    (blocks of 4 rows and 16 columns; hidden 5 and chunks of 18 and 19 rows leave partial
    blocks of both): close to the float64 reference."""
    rng = np.random.default_rng(9)
    spec = _model(cell, "last", "multiclass", 3, f=3, hidden=hidden)
    data = _data(spec, B=B, T=6, lengths=True, rng=rng)
    params, _ = spec.init_params(np.float64, 3)
    model = spec.kernel_model()
    loss, grad = ref.loss_and_gradient(model, data, params)
    data32 = SequenceData(*(a.astype(np.float32) if a.dtype == np.float64 else a for a in data))
    loss32, grad32 = compiled_backend.loss_and_gradient(model, data32, params.astype(np.float32))
    assert grad32.dtype == np.float32
    assert loss32 == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(grad32, grad, rtol=1e-3, atol=1e-5 * np.abs(grad).max())


@pytest.mark.parametrize("M, K, N", [(4, 8, 16), (7, 9, 35), (18, 20, 5), (1, 3, 2), (13, 6, 48)])
def test_numba_step_product_of_float32_matches_numpy(M, K, N):
    """The float32 per-step products of the Numba kernels (no BLAS): W_hh packed in strips
    of 16 columns, both ways (forward: B = W_hh^T, backward: B = W_hh), then register
    tiles of 6, 4, 2 and 1 rows, on full and partial strips, against the float64 product;
    entries past C are never written."""
    pytest.importorskip("numba")
    from fastgd.backends.numba.recurrent import _pack, _packed_product

    rng = np.random.default_rng(M * 100 + N)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    expected = A.astype(np.float64) @ B.astype(np.float64)
    for forward, W in ((True, np.ascontiguousarray(B.T)), (False, B)):
        w = np.full(6 * 16 + -(-N // 16) * 16 * K, np.nan, dtype=np.float32)
        _pack(W, forward, w)
        C = np.full((M + 1, N), np.nan, dtype=np.float32)
        _packed_product(A, w, C[:M])
        np.testing.assert_allclose(
            C[:M], expected, rtol=0, atol=1e-5 * np.sqrt(K) * np.abs(A).max() * np.abs(B).max()
        )
        assert np.isnan(C[M]).all()


def _train(backend, cell, output, n_threads, X, y, lengths, **kw):
    task = "regression" if np.asarray(y).dtype.kind == "f" else "classification"
    model = fastgd.RNN(cell, hidden=6, layers=2, head=(4,), output=output, task=task)
    return fastgd.fit(X, y, model=model, backend=backend, optimizer="adam", lr=1e-2, epochs=3,
                      batch_size=40, seed=0, lengths=lengths, n_threads=n_threads, **kw)  # fmt: skip


@pytest.mark.parametrize("cell, output", [("lstm", "last"), ("gru", "sequence"), ("tanh", "last")])
def test_training_matches_reference_and_any_thread_count(backend, cell, output):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 9, 2))
    lengths = rng.integers(2, 10, 150)
    y = (X[:, :, 0] > 0).astype(int) if output == "sequence" else X[:, :, 1].sum(axis=1)
    expected = _train("numpy", cell, output, 1, X, y, lengths, clip_norm=1.0)
    one = _train(backend, cell, output, 1, X, y, lengths, clip_norm=1.0)
    two = _train(backend, cell, output, 2, X, y, lengths, clip_norm=1.0)
    np.testing.assert_array_equal(one.params, two.params)  # bit-identical for any n_threads
    np.testing.assert_array_equal(one.gradient_norms, two.gradient_norms)
    np.testing.assert_allclose(one.params, expected.params, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(one.loss_history, expected.loss_history, rtol=1e-10)
    np.testing.assert_allclose(one.gradient_norms, expected.gradient_norms, rtol=1e-8)
    assert one.gradient_norms.shape == (3, 4)  # per epoch: two recurrent, two dense layers
    assert one.model.layer_names == [f"{cell}1", f"{cell}2", "dense1", "dense2"]


def test_padding_never_changes_the_result(backend):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((96, 8, 3))
    lengths = rng.integers(1, 9, 96)
    y = rng.standard_normal(96)
    padded = X.copy()
    for i, n in enumerate(lengths):
        padded[i, n:] = rng.standard_normal((8 - n, 3)) * 1e3  # any values past the end
    a = _train(backend, "lstm", "last", 2, X, y, lengths)
    b = _train(backend, "lstm", "last", 2, padded, y, lengths)
    np.testing.assert_array_equal(a.params, b.params)
    # and a sequence with its padding cut off predicts the same as with it
    short = a.predict(X[:1, : lengths[0]])
    np.testing.assert_allclose(a.predict(padded[:1], lengths=lengths[:1]), short, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# PyTorch parity (float64, 1e-10): forward and 20 Adam steps


def _torch_model(torch, spec, params):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "tanh": torch.nn.RNN}[spec.cell]
    rnn = cls(spec.n_features, spec.hidden, num_layers=spec.layers, batch_first=True).double()
    head = torch.nn.Linear(spec.hidden, spec.n_outputs).double()
    named = spec.named(params)
    with torch.no_grad():
        for layer in range(spec.layers):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                name = f"{spec.cell}{layer + 1}.{kind}"
                getattr(rnn, f"{kind}_l{layer}").copy_(torch.from_numpy(named[name].copy()))
        head.weight.copy_(torch.from_numpy(named["dense1.weight"].copy()))
        head.bias.copy_(torch.from_numpy(named["dense1.bias"].copy()))
    return rnn, head


def _torch_output(torch, rnn, head, X, lengths, sequence):
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        X, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
    )
    out, state = rnn(packed)
    if sequence:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=X.shape[1])  # fmt: skip
        return head(out)
    h_n = state[0] if isinstance(state, tuple) else state
    return head(h_n[-1])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("output", ["last", "sequence"])
def test_equal_to_pytorch_after_20_adam_steps(backend, cell, output):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n, T, f = 40, 7, 3
    X = rng.standard_normal((n, T, f))
    lengths = rng.integers(1, T + 1, n) if output == "last" else np.full(n, T)
    y = rng.standard_normal((n, T)) if output == "sequence" else rng.standard_normal(n)
    model = fastgd.RNN(cell, hidden=5, layers=2, output=output, task="regression")
    spec = model.spec(f, 1)
    params, _ = spec.init_params(np.float64, 7)  # what fit(seed=7) starts from
    rnn, head = _torch_model(torch, spec, params)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    with torch.no_grad():
        out = _torch_output(torch, rnn, head, Xt, lengths, output == "sequence")
    Z = predict(spec.kernel_model(), X, params, None, lengths)
    np.testing.assert_allclose(Z[..., 0], out.numpy()[..., 0], atol=1e-12)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        out = _torch_output(torch, rnn, head, Xt, lengths, output == "sequence")
        torch.mean((out[..., 0] - yt) ** 2).backward()
        optimizer.step()
    result = fastgd.fit(X, y, model=model, backend=backend, optimizer="adam", lr=1e-2,
                        epochs=20, batch_size=None, seed=7, lengths=lengths)  # fmt: skip
    for name, value in result.named_params.items():
        layer, kind = name.split(".")
        if layer.startswith("dense"):
            expected = getattr(head, kind)
        else:
            expected = getattr(rnn, f"{kind}_l{int(layer[len(cell) :]) - 1}")
        np.testing.assert_allclose(value, expected.detach().numpy(), atol=1e-10, err_msg=name)


# ---------------------------------------------------------------------------------------
# learning


def _adding_problem(n, T, rng):
    """Two features per step: a value in [0, 1] and a marker; the target is the sum of the
    two marked values (one in each half of the sequence)."""
    X = np.zeros((n, T, 2))
    X[:, :, 0] = rng.uniform(0.0, 1.0, (n, T))
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    X[np.arange(n), first, 1] = 1.0
    X[np.arange(n), second, 1] = 1.0
    y = X[np.arange(n), first, 0] + X[np.arange(n), second, 0]
    return X, y


@pytest.fixture(scope="module")
def adding():
    rng = np.random.default_rng(0)
    return _adding_problem(3000, 50, rng), _adding_problem(500, 50, rng)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_cells_solve_the_adding_problem(adding, cell):
    (X, y), (X_test, y_test) = adding
    model = fastgd.RNN(cell, hidden=32, task="regression")
    # the LSTM sits on the plateau of predicting the mean for about 9 epochs here, then
    # solves it within two; stop once the training loss is well below the goal
    result = fastgd.fit(X, y, model=model, optimizer="adam", lr=1e-2, epochs=25, batch_size=32,
                        seed=1, clip_norm=1.0, callback=lambda e, info: info["loss"] < 0.003)  # fmt: skip
    mse = np.mean((result.predict(X_test) - y_test) ** 2)
    assert mse < 0.01, (mse, result.loss_history)
    assert result.gradient_diagnosis is None


def test_tanh_rnn_fails_the_adding_problem_and_is_reported_vanishing(adding):
    (X, y), (X_test, y_test) = adding
    model = fastgd.RNN("tanh", hidden=32, task="regression")
    with pytest.warns(GradientWarning, match="vanishing gradients through time"):
        result = fastgd.fit(X, y, model=model, optimizer="adam", lr=1e-2, epochs=6,
                            batch_size=32, seed=1, clip_norm=1.0)  # fmt: skip
    mse = np.mean((result.predict(X_test) - y_test) ** 2)
    assert mse > 0.1  # the variance of the target is 1/6: predicting the mean
    assert result.gradient_diagnosis == "vanishing"
    through_time = result.gradient_through_time
    assert through_time[49] < 1e-3 * through_time[0]


def test_gradient_through_time_runs_blas_on_one_thread(monkeypatch):
    """The diagnosis after a fit runs NumPy's BLAS on one thread: a multi-threaded
    OpenBLAS leaves its workers spinning after its last product, which took a core from
    the kernels of the next fit."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from fastgd.training import report

    seen, original = [], report.gradients_through_time

    def spy(*args):
        infos = ThreadpoolController().select(user_api="blas").info()
        seen.append(max((info["num_threads"] for info in infos), default=1))
        return original(*args)

    monkeypatch.setattr(report, "gradients_through_time", spy)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 5, 2)), rng.standard_normal(16)
    with threadpool_limits(2, user_api="blas"):  # as the benchmarks pin it
        result = fastgd.fit(X, y, model=fastgd.RNN("gru", hidden=3, task="regression"),
                            backend="numpy", epochs=1, seed=0)  # fmt: skip
    assert seen == [1]
    assert result.gradient_through_time[0] > 0.0


def test_digits_read_row_by_row(backend):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = digits.images / 16.0  # 8 steps of 8 pixels
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, test_size=0.25, stratify=digits.target, random_state=0
    )
    result = fastgd.fit(X_train, y_train, model=fastgd.RNN("lstm", hidden=32),
                        optimizer="adam", lr=1e-2, epochs=15, batch_size=32, seed=0,
                        backend=backend)  # fmt: skip
    assert np.mean(result.predict(X_test) == y_test) >= 0.95
    proba = result.predict_proba(X_test[:5])
    assert proba.shape == (5, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# fit-level behaviour


def test_named_params_have_pytorch_shapes():
    X, y = np.zeros((10, 4, 3)), np.arange(10) % 3
    model = fastgd.RNN("gru", hidden=5, layers=2, head=(7,))
    result = fastgd.fit(X, y, model=model, epochs=1, seed=0, backend="numpy")
    shapes = {name: value.shape for name, value in result.named_params.items()}
    assert shapes == {
        "gru1.weight_ih": (15, 3), "gru1.weight_hh": (15, 5), "gru1.bias_ih": (15,),
        "gru1.bias_hh": (15,), "gru2.weight_ih": (15, 5), "gru2.weight_hh": (15, 5),
        "gru2.bias_ih": (15,), "gru2.bias_hh": (15,), "dense1.weight": (7, 5),
        "dense1.bias": (7,), "dense2.weight": (3, 7), "dense2.bias": (3,),
    }  # fmt: skip
    bound = 1 / np.sqrt(5)
    start, _ = result.model.init_params(np.float64, 0)  # what fit started from
    assert all(np.abs(v).max() <= bound for k, v in result.model.named(start).items() if "gru" in k)


def test_two_dimensional_X_is_one_feature_per_step_and_early_stopping_works():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((120, 6))
    y = (X.sum(axis=1) > 0).astype(int)
    result = fastgd.fit(X, y, model=fastgd.RNN("gru", hidden=8), optimizer="adam", lr=1e-2,
                        epochs=8, seed=0, early_stopping=True, backend="numpy",
                        lengths=np.full(120, 6))  # fmt: skip
    assert result.model.n_features == 1
    assert len(result.validation_loss_history) == result.n_epochs
    assert result.predict(X).shape == (120,)
    again = fastgd.fit(X, y, model=fastgd.RNN("gru", hidden=8), epochs=1, init=result,
                       backend="numpy")  # fmt: skip
    assert again.n_epochs == 1


def test_sequence_output_predicts_every_step():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((50, 5, 2))
    y = rng.standard_normal((50, 5, 3))
    model = fastgd.RNN("tanh", hidden=4, output="sequence", task="regression")
    result = fastgd.fit(X, y, model=model, epochs=2, backend="numpy")
    assert result.predict(X).shape == (50, 5, 3)
    single = fastgd.fit(X, y[..., 0], model=model, epochs=2, backend="numpy")
    assert single.predict(X).shape == (50, 5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(X=np.zeros((5, 2, 3, 1))), "3-D array"),
        (dict(lengths=np.array([1, 2, 3, 4, 9])), "lengths must be in"),
        (dict(lengths=np.array([1, 2])), "lengths must have shape"),
        (dict(lengths=np.array([1.5, 2, 3, 4, 4])), "whole numbers"),
        (dict(y=np.zeros((5, 3))), "must be 1-D class labels"),
    ],
)
def test_bad_input_is_rejected(kwargs, message):
    args = dict(X=np.zeros((5, 4, 3)), y=np.arange(5) % 2, lengths=None) | kwargs
    with pytest.raises(ValueError, match=message):
        fastgd.fit(args["X"], args["y"], model=fastgd.RNN(), lengths=args["lengths"],
                   backend="numpy")  # fmt: skip


def test_rnn_arguments_are_checked():
    for bad in (dict(cell="relu"), dict(hidden=0), dict(layers=1.5), dict(output="all"),
                dict(head=(0,)), dict(init="he")):  # fmt: skip
        with pytest.raises(ValueError):
            fastgd.RNN(**bad)
    with pytest.raises(ValueError, match="lengths is only for sequence models"):
        fastgd.fit(np.zeros((4, 2)), np.zeros(4), lengths=np.ones(4), backend="numpy")


def test_user_arrays_are_not_modified():
    rng = np.random.default_rng(8)
    X, y, lengths = rng.standard_normal((30, 4, 2)), rng.standard_normal(30), np.full(30, 3)
    copies = X.copy(), y.copy(), lengths.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastgd.fit(X, y, model=fastgd.RNN("lstm", hidden=3, task="regression"), epochs=1,
                   lengths=lengths, backend="numpy")  # fmt: skip
    for a, b in zip((X, y, lengths), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_save_and_load(tmp_path):
    rng = np.random.default_rng(10)
    X, y = rng.standard_normal((40, 5, 2)), rng.integers(0, 3, 40)
    lengths = rng.integers(1, 6, 40)
    result = fastgd.fit(X, y, model=fastgd.RNN("gru", hidden=4, head=(3,)), epochs=2,
                        lengths=lengths, backend="numpy")  # fmt: skip
    fastgd.save(result, tmp_path / "rnn.npz")
    loaded = fastgd.load(tmp_path / "rnn.npz")
    assert loaded.model == result.model
    assert loaded.gradient_through_time == result.gradient_through_time
    np.testing.assert_array_equal(
        loaded.predict_proba(X, lengths), result.predict_proba(X, lengths)
    )
