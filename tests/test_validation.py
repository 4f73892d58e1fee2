"""Bad input gets a ValueError that names the argument and the problem."""

import re
import warnings

import numpy as np
import pytest

import fastgd

X = np.random.default_rng(0).standard_normal((20, 3))
y = np.arange(20) % 2


@pytest.mark.parametrize(
    "X_bad,message",
    [
        (np.where(np.eye(20, 3) > 0, np.nan, X), "X contains 3 NaN"),
        (np.where(np.eye(20, 3) > 0, np.inf, X), "X contains 0 NaN and 3 infinite"),
        (np.empty((0, 3)), "X is empty"),
        (np.empty((20, 0)), "X is empty"),
        (np.zeros((20, 3, 2)), "X must be a 2-D array.*got 3-D"),
        (np.array(1.0), "X must be a 2-D array.*got 0-D"),
        (np.full((20, 3), "a"), "X must be numeric"),
        (np.zeros((20, 3), dtype=complex), "X must be numeric"),
        ([[1, "a"]] * 20, "X must be numeric"),
    ],
)
def test_bad_X(X_bad, message):
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X_bad, y)


@pytest.mark.parametrize(
    "y_bad,model,message",
    [
        (np.arange(19), "linear", "different lengths: X has 20 samples, y has 19"),
        (np.where(np.arange(20) == 3, np.nan, 1.0), "linear", "y contains 1 NaN"),
        (np.where(np.arange(20) == 3, np.inf, 1.0), "logistic", "y contains 0 NaN and 1 infinite"),
        (np.ones(20), "logistic", "single class"),
        (np.zeros(20, dtype=int), "softmax", "single class"),
        (np.arange(20) % 3, "logistic", "binary but y has 3 classes; use model='softmax'"),
        (np.full(20, "a"), "linear", "y must be numeric"),
        (np.zeros((20, 2, 2)), "linear", "y must be 1-D"),
        (np.zeros((20, 2)), "softmax", "1-D class labels"),
        (np.array([None, 1] * 10, dtype=object), "logistic", "missing labels"),
    ],
)
def test_bad_y(y_bad, model, message):
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X, y_bad, model=model)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(model="ridge"),
            "model must be one of 'linear', 'logistic', 'softmax', a fastgd.MLP or a fastgd.RNN; got 'ridge'",
        ),
        (dict(backend="fortran"), "backend must be one of"),
        (dict(lr=0), "lr must be a positive finite number; got 0"),
        (dict(lr=-0.1), "lr must be a positive"),
        (dict(lr=np.nan), "lr must be a positive"),
        (dict(lr="fast"), "lr must be a positive number"),
        (dict(epochs=0), "epochs must be a positive integer; got 0"),
        (dict(epochs=2.5), "epochs must be a positive integer"),
        (dict(epochs=True), "epochs must be a positive integer"),
        (dict(batch_size=0), "batch_size must be a positive integer; got 0"),
        (dict(batch_size=-32), "batch_size must be a positive integer"),
        (dict(tol=-1.0), "tol must be None or a finite number >= 0"),
        (dict(n_iter_no_change=0), "n_iter_no_change must be a positive integer"),
        (dict(n_threads=0), "n_threads must be a positive integer"),
        (dict(n_threads=10_000), "n_threads=10000 exceeds"),
        (dict(seed=1.5), "seed must be None or a non-negative integer"),
        (dict(seed=-1), "seed must be None or a non-negative integer; got -1"),
        (dict(verbose=-1), "verbose must be a bool or a non-negative integer"),
        (dict(on_divergence="ignore"), "on_divergence must be one of"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X, y, **kwargs)


def test_unavailable_backend_says_why(monkeypatch):
    from fastgd import backends

    monkeypatch.setitem(backends._errors, "cython", "ImportError: extension not built")
    monkeypatch.delitem(backends._loaded, "cython", raising=False)
    with pytest.raises(ValueError, match="backend 'cython' is not available: ImportError"):
        fastgd.fit(X, y, backend="cython")


def test_predict_checks_its_input():
    result = fastgd.fit(X, y, epochs=1, backend="numpy")
    with pytest.raises(ValueError, match="X has 2 features, but the model was fit with 3"):
        result.predict(X[:, :2])
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        result.predict(np.where(np.eye(20, 3) * np.arange(20)[:, None] == 1, np.nan, X))


def test_large_finite_values_are_not_mistaken_for_infinite():
    # the NaN/inf check sums X first; a sum that overflows is checked again exactly
    from fastgd._validation import check_features

    X = np.full((4, 2), 1e308)
    assert check_features(X) is X
    X[2, 1] = np.inf
    with pytest.raises(ValueError, match="X contains 0 NaN and 1 infinite values"):
        check_features(X)


# --- the finiteness check of X, deferred to after training -------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize(
    "model, optimizer, batch_size",
    [
        ("linear", "sgd", 1),
        ("logistic", "adam", 32),
        ("softmax", "sgd", None),
        ("logistic", "lbfgs", None),
        (fastgd.MLP(hidden=(3,)), "adam", 16),
    ],
    ids=["linear-b1", "logistic-b32", "softmax-full", "logistic-lbfgs", "mlp-b16"],
)
def test_nan_in_X_still_raises_after_the_deferred_check(backend, model, optimizer, batch_size, bad):
    # fit checks X's finiteness after training (a NaN makes the first epoch's loss NaN):
    # the same ValueError as before, whatever the backend, model or solver, no warning
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    X[-1, 2] = bad  # the last row: visited last in the epoch
    z = X[:, 0] - X[:, 1]
    y = z if model == "linear" else (z > 0).astype(int) + (z > 1) * (model == "softmax")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="X contains 1 NaN and 0 infinite|X contains 0 NaN and 1 infinite"):  # fmt: skip
            fastgd.fit(X, y, model=model, backend=backend, optimizer=optimizer,
                       batch_size=batch_size, epochs=3)  # fmt: skip


def test_clean_dense_X_is_not_read_before_training(monkeypatch):
    # no pass over X for NaN before the first epoch: the exact check runs only when the
    # run did not end a finite first epoch (see _validation.check_finite_after)
    from fastgd import _validation

    checked = []
    original = _validation._check_finite
    monkeypatch.setattr(_validation, "_check_finite", lambda a, name: checked.append(a.shape) or original(a, name))  # fmt: skip
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5))
    fastgd.fit(X, X[:, 0], backend="numpy", epochs=2)
    assert (300, 5) not in checked
    fastgd.fit(X, X[:, 0], backend="numpy", epochs=2, early_stopping=True)
    assert (300, 5) in checked  # held-out rows never enter the training loss: checked first


_LABEL_CASES = {
    "int, 10 classes": np.random.default_rng(0).integers(0, 10, 2000),
    "int32, negative": np.random.default_rng(1).integers(-5, 3, 2000).astype(np.int32),
    "uint8": np.random.default_rng(2).integers(0, 3, 2000).astype(np.uint8),
    "int, wide span": np.random.default_rng(3).integers(0, 1 << 20, 2000),
    "int64 extremes": np.array([-(2**63), 0, 5, 2**63 - 1]),
    "uint64 huge": np.array([2**62 + 5, 7, 7], dtype=np.uint64),
    "float, binary": (np.random.default_rng(4).random(2000) < 0.5).astype(float),
    "float32, 5 classes": np.random.default_rng(5).integers(0, 5, 2000).astype(np.float32),
    "float, 20 classes": np.random.default_rng(6).integers(0, 20, 2000) / 4.0,
    "bool": np.random.default_rng(7).random(2000) < 0.3,
    "str": np.array(["b", "a", "c", "b"]),
}


@pytest.mark.parametrize("case", list(_LABEL_CASES))
def test_label_encoding_equals_unique_and_searchsorted(case):
    """The counting / table / comparison encodings give np.unique's classes (same dtype)
    and np.searchsorted's codes, also against given classes with one more label."""
    from fastgd import _validation as v

    labels = _LABEL_CASES[case]
    classes, codes = v._encode_labels(labels)
    expected = np.unique(labels)
    assert classes.dtype == expected.dtype and np.array_equal(classes, expected)
    np.testing.assert_array_equal(codes, np.searchsorted(expected, labels))
    more = np.concatenate([expected[:1], expected]) if case == "bool" else np.append(expected, "d" if case == "str" else expected[:1] - 1 if case == "uint64 huge" else expected[-1] + 1)  # fmt: skip
    given, codes = v._encode_with(labels, more[::-1])
    np.testing.assert_array_equal(codes, np.searchsorted(np.unique(more), labels))


@pytest.mark.parametrize(
    ("labels", "classes", "unknown"),
    [([0, 1, 5, 5], [0, 1], "[5]"), ([0.0, 1.0, 0.5], [0.0, 1.0], "[0.5]"),
     ([0, 1, 2], [0.0, 1.0], "[2]"), ([-3, 0, 1], [0, 1], "[-3]"), ([0.0, 7.0], [0, 1, 2], "[7.0]")],
)  # fmt: skip
def test_labels_outside_the_given_classes_are_named(labels, classes, unknown):
    with pytest.raises(ValueError, match=re.escape(f"y has labels {unknown} that are not in classes")):  # fmt: skip
        fastgd.fit(np.ones((len(labels), 1)), np.array(labels), "softmax", classes=classes, epochs=1)  # fmt: skip
