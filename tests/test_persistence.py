"""fastgd.save / fastgd.load: round trips on every backend, continued training, bad files."""

import json
import zipfile
from fractions import Fraction

import numpy as np
import pytest

import fastgd
from fastgd import persistence

pd = pytest.importorskip("pandas")


def _data(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, labels


def _targets(kind, X, labels):
    if kind in ("linear", "mlp-regression"):
        return X @ np.arange(1.0, X.shape[1] + 1)
    if kind == "linear-2-targets":
        return np.column_stack([X[:, 0], X[:, 1] - X[:, 2]])
    if kind in ("logistic", "mlp-binary"):
        return np.where(labels > 0, "yes", "no")
    return labels  # softmax, mlp-multiclass


MODELS = {
    "linear": "linear",
    "linear-2-targets": "linear",
    "logistic": "logistic",
    "softmax": "softmax",
    "mlp-binary": fastgd.MLP(hidden=(5,), activation="tanh"),
    "mlp-multiclass": fastgd.MLP(hidden=(6, 4), batch_norm=(True, False)),
    "mlp-regression": fastgd.MLP(hidden=(5,), task="regression"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", list(MODELS))
def test_round_trip_is_exact_and_training_continues(tmp_path, backend, kind, dtype):
    X, labels = _data()
    X = X.astype(dtype)
    y = _targets(kind, X, labels)
    options = dict(model=MODELS[kind], backend=backend, optimizer="adam", lr=0.01, seed=1)
    result = fastgd.fit(X, y, epochs=3, **options)
    path = tmp_path / "model.fgd"
    fastgd.save(result, path)
    loaded = fastgd.load(path)

    assert isinstance(loaded, fastgd.FitResult)
    assert loaded.model == result.model and loaded.optimizer == result.optimizer
    assert loaded.params.dtype == dtype and loaded.n_updates == result.n_updates == 6
    np.testing.assert_array_equal(loaded.params, result.params)
    np.testing.assert_array_equal(loaded.optimizer_state, result.optimizer_state)
    np.testing.assert_array_equal(loaded.loss_history, result.loss_history)
    prediction = result.predict(X)
    np.testing.assert_array_equal(loaded.predict(X), prediction)
    assert loaded.predict(X).shape == prediction.shape
    if result.classes_ is not None:
        np.testing.assert_array_equal(loaded.classes_, result.classes_)
        np.testing.assert_array_equal(loaded.predict_proba(X), result.predict_proba(X))

    more = fastgd.fit(X, y, epochs=2, init=result, **options)
    more_from_file = fastgd.fit(X, y, epochs=2, init=loaded, **options)
    assert more_from_file.n_updates == 10
    np.testing.assert_array_equal(more_from_file.params, more.params)


ESTIMATORS = [
    fastgd.LinearRegressor(optimizer="adam", lr=0.01, epochs=3),
    fastgd.LinearClassifier(optimizer=fastgd.optim.SGD(lr=0.05, momentum=0.9), epochs=3),
    fastgd.MLPRegressor(hidden=(5,), lr=fastgd.schedules.StepDecay(step_size=2), epochs=3),
    fastgd.MLPClassifier(hidden=(6, 3), batch_norm=True, optimizer="rmsprop", epochs=3),
]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_estimator_round_trip_and_partial_fit_after_loading(tmp_path, est):
    from sklearn.base import clone

    X, labels = _data()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    y = labels if hasattr(est, "predict_proba") else X[:, 0] - X[:, 3]
    est = clone(est).set_params(backend="numpy", random_state=0).fit(frame, y)
    fastgd.save(est, tmp_path / "est.npz")
    loaded = fastgd.load(tmp_path / "est.npz")

    assert type(loaded) is type(est)
    assert repr(loaded.get_params()) == repr(est.get_params())
    assert list(loaded.feature_names_in_) == ["a", "b", "c", "d"]
    assert loaded.n_features_in_ == 4 and loaded.n_iter_ == 3
    assert loaded.loss_curve_ == est.loss_curve_
    np.testing.assert_array_equal(loaded.predict(frame), est.predict(frame))
    if hasattr(est, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(frame), est.predict_proba(frame))
        np.testing.assert_array_equal(loaded.classes_, est.classes_)
    extra = {"classes": np.unique(y)} if hasattr(est, "predict_proba") else {}
    est.partial_fit(frame, y, **extra)
    loaded.partial_fit(frame, y, **extra)
    assert loaded.result_.n_updates == est.result_.n_updates == 4 * 2
    np.testing.assert_array_equal(loaded.result_.params, est.result_.params)


def _saved(tmp_path):
    X, labels = _data()
    path = tmp_path / "model.npz"
    fastgd.save(fastgd.fit(X, labels, model="softmax", backend="numpy", epochs=2), path)
    return path, X


def _rewrite(path, change):
    """Re-write the archive after ``change(arrays)``, keeping or replacing the checksum."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def test_truncated_file_is_rejected(tmp_path):
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    for size in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match="not a readable fastgd model file"):
            fastgd.load(path)


def test_modified_parameters_are_rejected(tmp_path):
    path, _ = _saved(tmp_path)

    def tamper(arrays):
        arrays["result.params"] = arrays["result.params"] + 1.0

    _rewrite(path, tamper)
    with pytest.raises(ValueError, match="checksum does not match"):
        fastgd.load(path)


def test_modified_metadata_is_rejected(tmp_path):
    path, _ = _saved(tmp_path)

    def tamper(arrays):
        arrays["metadata"] = np.array(str(arrays["metadata"]).replace('"n_epochs": 2', '"n_epochs": 3'))  # fmt: skip

    _rewrite(path, tamper)
    with pytest.raises(ValueError, match="checksum does not match"):
        fastgd.load(path)


def _with_metadata(edit):
    def change(arrays):
        meta = json.loads(str(arrays["metadata"]))
        edit(meta)
        text = json.dumps(meta)
        arrays["metadata"] = np.array(text)
        others = {k: v for k, v in arrays.items() if k not in ("metadata", "checksum")}
        arrays["checksum"] = np.array(persistence._checksum(text, others))

    return change


def test_future_format_version_is_rejected(tmp_path):
    path, _ = _saved(tmp_path)
    _rewrite(path, _with_metadata(lambda meta: meta.update(format_version=99)))
    with pytest.raises(ValueError, match="format version 99.*reads versions up to 1"):
        fastgd.load(path)


def test_inconsistent_file_with_valid_checksum_is_rejected(tmp_path):
    path, _ = _saved(tmp_path)
    _rewrite(path, _with_metadata(lambda meta: meta["result"]["model"]["fields"].update(n_features=7)))  # fmt: skip
    with pytest.raises(ValueError, match="invalid fastgd model.*do not fit"):
        fastgd.load(path)


class _Exploit:
    triggered = False

    def __reduce__(self):
        return (_Exploit._trigger, ())

    @staticmethod
    def _trigger():
        _Exploit.triggered = True


def test_pickled_objects_are_never_loaded(tmp_path):
    path, _ = _saved(tmp_path)

    def plant(arrays):
        arrays["result.params"] = np.array([_Exploit()], dtype=object)

    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    plant(arrays)
    with open(path, "wb") as file:
        np.savez(file, **arrays)  # writes the object array with pickle
    with pytest.raises(ValueError, match="not a readable fastgd model file"):
        fastgd.load(path)
    assert not _Exploit.triggered


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(ValueError, match="not a fastgd model file"):
        fastgd.load(path)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable fastgd model file"):
        fastgd.load(tmp_path / "text.npz")
    np.save(tmp_path / "array.npy", np.arange(3.0))
    with pytest.raises(ValueError, match="single array, not an .npz archive"):
        fastgd.load(tmp_path / "array.npy")
    with pytest.raises(FileNotFoundError):
        fastgd.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(_saved(tmp_path)[0])


def test_what_cannot_be_saved(tmp_path):
    X, labels = _data()
    with pytest.raises(ValueError, match="not fitted"):
        fastgd.save(fastgd.LinearClassifier(), tmp_path / "m.npz")
    est = fastgd.LinearClassifier(backend="numpy", epochs=1, callback=lambda e, i: False)
    with pytest.raises(ValueError, match="callback.*cannot be saved"):
        fastgd.save(est.fit(X, labels), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="FitResult or a fastgd estimator"):
        fastgd.save({"params": 1}, tmp_path / "m.npz")
    fractions = np.array([Fraction(1, 3), Fraction(1, 2)], dtype=object)
    result = fastgd.fit(X, fractions[labels % 2], model="logistic", backend="numpy", epochs=1)
    with pytest.raises(ValueError, match="classes_ holds Python objects"):
        fastgd.save(result, tmp_path / "m.npz")


def test_checkpoint_callback_resumes_a_full_batch_fit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = X @ rng.standard_normal(4)
    kw = dict(batch_size=None, optimizer="adam", lr=0.05)
    full = fastgd.fit(X, y, epochs=8, **kw)
    path = tmp_path / "ckpt.npz"
    fastgd.fit(X, y, epochs=3, callback=fastgd.Checkpoint(path), **kw)
    resumed = fastgd.fit(X, y, epochs=5, init=fastgd.load(path), **kw)
    np.testing.assert_array_equal(resumed.params, full.params)
    with pytest.raises(ValueError, match="every"):
        fastgd.Checkpoint(path, every=0)
