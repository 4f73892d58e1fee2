"""Property-based fuzzing of every public entry point (issue 17, the input side).

``fastgd.fit`` (and ``predict``/``predict_proba`` of its result), the scikit-learn
estimators, ``fastgd.save``/``fastgd.load`` and the command line get random shapes,
dtypes, values, memory layouts, sample weights, options at their bounds, sparse matrices
of odd structure, sequences and damaged model files. The property (``fuzz_inputs``):
each call returns a finite result or raises ``ValueError``/``TypeError`` naming the
argument, never anything else, and never changes the caller's arrays.

The suite runs a bounded, derandomized profile (reproducible in CI); the long one:

    FASTGD_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py --hypothesis-show-statistics

Most examples run on the NumPy backend; the compiled backends get one small fixed
configuration each (few kernel specializations, all compiled by the rest of the suite
too), since a cold Numba compile costs seconds per specialization.
"""

import contextlib
import inspect
import io
import json
import os
import tempfile
import warnings

import numpy as np
import pytest
from fuzz_inputs import (
    LAYOUTS,
    assert_unchanged,
    feature_shape,
    float_matrix,
    fuzz_settings,
    moderate,
    names_argument,
    pandas_features,
    pandas_targets,
    sample_weights,
    snapshot,
    targets,
    user_array,
)
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastgd
from fastgd import persistence
from fastgd.__main__ import main
from fastgd.backends import available_backends
from fastgd.training.report import DivergenceError

sparse = pytest.importorskip("scipy.sparse")

FIT_ARGUMENTS = tuple(inspect.signature(fastgd.fit).parameters)
COMPILED = [name for name in ("numba", "cython") if name in available_backends()]
MODELS = [
    "linear", "linear", "logistic", "softmax", "softmax",
    fastgd.MLP(hidden=(3,)),
    fastgd.MLP(hidden=(2, 2), activation="tanh", batch_norm=(True, False)),
    fastgd.MLP(hidden=(3,), task="regression", activation="sigmoid"),
    "mlp", None,
]  # fmt: skip


def _is_regression(model):
    return model == "linear" or (isinstance(model, fastgd.MLP) and model.task == "regression")


@st.composite
def fit_options(draw):
    """fit's options, each at an ordinary value, at a bound or past it (epochs stay small:
    a long fit is not a hang, just slow)."""
    choices = {
        "batch_size": [None, 1, 2, 3, 32, 2**40, 0, -1, 1.5, True],
        "epochs": [1, 2, 3, 0, -2, 2.0, None],
        "lr": [
            None,
            5e-324,
            1e-3,
            0.1,
            10.0,
            1e300,
            0.0,
            -0.1,
            np.nan,
            np.inf,
            "cosine",
            "plateau",
            "x",
        ],  # fmt: skip
        "optimizer": [
            "sgd",
            "sgd",
            "adam",
            "adagrad",
            "rmsprop",
            "adamw",
            "lbfgs",
            "newton",
            "x",
            None,
        ],  # fmt: skip
        "tol": [None, 0.0, 1e-3, 1e300, -1.0, np.nan],
        "n_iter_no_change": [1, 5, 0],
        "penalty": [None, "l2", "l1", "elasticnet", "l3"],
        "alpha": [0.0, 1e-4, 1.0, 1e300, -1.0, np.nan],
        "l1_ratio": [0.0, 0.5, 1.0, 1.5, np.nan],
        "clip_value": [None, 5e-324, 1.0, 1e300, 0.0, -1.0, np.nan, np.inf],
        "clip_norm": [None, 5e-324, 1.0, 1e300, 0.0, np.nan],
        "n_threads": [None, 1, 2, 0, -1, 10**6, 1.0],
        "shuffle": [True, False, "rows", "blocks", "block", None],
        "seed": [None, 0, 1, 2**64, -1, 1.5, "a"],
        "fit_intercept": [True, False],
        "early_stopping": [False, False, True],
        "validation_fraction": [0.1, 0.5, 0.99, 0.0, 1.0, np.nan],
        "on_divergence": ["warn", "warn", "raise", "x"],
        "classes": [None, None, [0, 1], [0, 1, 2], ["cat", "dog"], []],
        "lengths": [None] * 5 + [[1]],
    }
    names = draw(st.lists(st.sampled_from(sorted(choices)), max_size=6, unique=True))
    return {name: draw(st.sampled_from(choices[name])) for name in names}


def outcome(call, names, allowed=()):
    """``call()``'s result, or None after an accepted error: ``allowed``, or a
    ValueError/TypeError whose message names one of ``names`` (any message if None)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return call()
    except allowed:
        return None
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert names is None or names_argument(message, names), (
            f"the {type(exc).__name__} does not name the argument: {message}"
        )
        note(f"refused: {message}")
        return None


def _divergence(kwargs):
    return DivergenceError if kwargs.get("on_divergence") == "raise" else ()


def check_fit_result(result):
    """Finite parameters and optimizer state; a finite loss history (the last entry of a
    diverged fit excepted: the epoch whose update was thrown away)."""
    assert np.all(np.isfinite(result.params))
    assert result.optimizer_state is None or np.all(np.isfinite(result.optimizer_state))
    history = result.loss_history[:-1] if result.stop_reason == "diverged" else result.loss_history
    assert np.all(np.isfinite(history)), result.loss_history


def check_predictions(result, X, n, lengths=None):
    """Predictions on rows the fit accepted: no error, the right length, labels among
    ``classes_``, finite values and probabilities for moderate data and parameters."""
    before = snapshot(X)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = result.predict(X, lengths=lengths)
        proba = None if result.classes_ is None else result.predict_proba(X, lengths=lengths)
    assert_unchanged(before, X)
    assert len(predicted) == n
    tame = moderate(X) and moderate(result.params, bound=1e30)
    if result.classes_ is None:
        assert not tame or np.all(np.isfinite(predicted))
        return
    known = set(result.classes_.tolist())
    assert all(label in known for label in np.ravel(predicted).tolist())
    assert proba.shape[-1] == len(result.classes_)
    if tame:
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=-1), 1.0)


def _rows(shape):
    return shape[0] if shape else 1


# --- fastgd.fit ------------------------------------------------------------------------


@fuzz_settings(60)
@given(data=st.data())
def test_fit_and_predict_numpy_backend(data):
    shape = data.draw(feature_shape(), label="shape")
    X = data.draw(user_array(shape), label="X")
    model = data.draw(st.sampled_from(MODELS), label="model")
    y = data.draw(targets(_rows(shape), _is_regression(model)), label="y")
    kwargs = data.draw(fit_options(), label="options")
    kwargs["sample_weight"] = data.draw(sample_weights(_rows(shape)), label="sample_weight")
    before = snapshot(X, y, kwargs["sample_weight"])
    result = outcome(
        lambda: fastgd.fit(X, y, model, backend="numpy", **kwargs), FIT_ARGUMENTS,
        _divergence(kwargs),
    )  # fmt: skip
    assert_unchanged(before, X, y, kwargs["sample_weight"])
    if result is not None:
        check_fit_result(result)
        check_predictions(result, X, _rows(shape))


@pytest.mark.skipif(not COMPILED, reason="no compiled backend")
@fuzz_settings(20)
@given(data=st.data())
def test_fit_compiled_backends_fixed_configuration(data):
    """Data of every kind through one small configuration per model family (linear and
    logistic, float64/float32, SGD, batches of 4 or full batch)."""
    backend = data.draw(st.sampled_from(COMPILED), label="backend")
    shape = data.draw(feature_shape(), label="shape")
    dtypes = ["float64", "float32", "int64", ">f8", "bool", "float16", "object"]
    X = data.draw(user_array(shape, dtypes=dtypes, layouts=LAYOUTS[:-2]), label="X")
    model = data.draw(st.sampled_from(["linear", "logistic"]), label="model")
    y = data.draw(targets(_rows(shape), model == "linear"), label="y")
    weights = data.draw(sample_weights(_rows(shape)), label="sample_weight")
    batch_size = data.draw(st.sampled_from([4, None]), label="batch_size")
    before = snapshot(X, y, weights)
    result = outcome(
        lambda: fastgd.fit(X, y, model, backend=backend, epochs=2, lr=0.1, seed=0,
                           batch_size=batch_size, sample_weight=weights),
        FIT_ARGUMENTS,
    )  # fmt: skip
    assert_unchanged(before, X, y, weights)
    if result is not None:
        check_fit_result(result)
        check_predictions(result, X, _rows(shape))


# --- sparse input ----------------------------------------------------------------------

ODD_STRUCTURES = [
    "plain", "unsorted", "duplicates", "explicit-zeros", "trailing", "int64", "coo", "csc",
    "lil", "int-values", "bool-values", "float32", "complex", "bad-index", "bad-indptr",
    "empty", "array",
]  # fmt: skip


def _csr_parts(dense):
    indptr, indices, values = [0], [], []
    for row in dense:
        (columns,) = np.nonzero(row)
        indices.extend(columns.tolist())
        values.extend(row[columns].tolist())
        indptr.append(len(indices))
    return np.array(values, dtype=np.float64), np.array(indices, dtype=np.int32), np.array(indptr, dtype=np.int32)  # fmt: skip


def _odd_csr(dense, odd):
    """A CSR matrix of ``dense``'s values with an odd (but, except for ``bad-*``, valid)
    structure, or another sparse format."""
    values, indices, indptr = _csr_parts(dense)
    if odd == "unsorted":  # each row's entries in reverse column order
        for a, b in zip(indptr[:-1], indptr[1:], strict=True):
            values[a:b], indices[a:b] = values[a:b][::-1].copy(), indices[a:b][::-1].copy()
    elif odd == "duplicates":  # every entry split in two halves at the same column
        values = np.repeat(values / 2, 2)
        indices, indptr = np.repeat(indices, 2), indptr * 2
    elif odd == "explicit-zeros":  # a stored 0.0 in every row with a free column
        dense_rows = [np.nonzero(r == 0)[0][:1] for r in dense]
        parts = [(np.append(values[a:b], [0.0] * len(z)), np.append(indices[a:b], z))
                 for a, b, z in zip(indptr[:-1], indptr[1:], dense_rows, strict=True)]  # fmt: skip
        values = np.concatenate([p[0] for p in parts])
        indices = np.concatenate([p[1] for p in parts]).astype(np.int32)
        indptr = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])]).astype(np.int32)
    X = sparse.csr_matrix((values, indices, indptr), shape=dense.shape)
    return _odd_arrays(X, odd)


def _odd_arrays(X, odd):
    """The variants made by changing the arrays of a CSR matrix or its format."""
    if odd == "trailing" and X.nnz:  # stored entries past indptr[-1]
        X.indptr[-1] -= 1
    elif odd == "int64":
        X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    elif odd in ("coo", "csc", "lil"):
        return X.asformat(odd)
    elif odd in ("int-values", "bool-values", "float32", "complex"):
        with np.errstate(all="ignore"):
            dtype = {"int-values": np.int64, "bool-values": bool, "float32": np.float32}
            X = X.astype(dtype.get(odd, np.complex128))
    elif odd == "bad-index" and X.nnz:
        X.indices[0] = X.shape[1] + 3
    elif odd == "bad-indptr" and X.shape[0] > 1:
        X.indptr[1] = X.indptr[-1] + 2
    elif odd == "empty":
        X = sparse.csr_matrix(X.shape)
    elif odd == "array":
        X = sparse.csr_array(X)
    return X


@st.composite
def sparse_input(draw):
    n, d = draw(st.sampled_from([1, 2, 5, 9])), draw(st.sampled_from([1, 2, 3, 7]))
    dense = draw(float_matrix((n, d)))
    with np.errstate(invalid="ignore"):  # inf * 0: NaN, as good a value as any
        dense *= draw(hnp.arrays(bool, (n, d)))
    odd = draw(st.sampled_from(ODD_STRUCTURES))
    note(f"structure: {odd}")
    with np.errstate(all="ignore"):
        return _odd_csr(dense, odd)


@fuzz_settings(40)
@given(data=st.data())
def test_fit_sparse_input(data):
    X = data.draw(sparse_input(), label="X")
    # the compiled backends get the float64 values with int32 indices whose kernels the
    # rest of the suite compiles too (test_sparse.py)
    usual = X.dtype != np.float32 and getattr(X, "indices", np.empty(0, np.int32)).dtype == np.int32  # fmt: skip
    backend = data.draw(st.sampled_from(["numpy"] * 3 + (COMPILED if usual else [])), label="backend")  # fmt: skip
    model = data.draw(st.sampled_from(["linear", "logistic", "softmax"]), label="model")
    y = data.draw(targets(X.shape[0], model == "linear"), label="y")
    weights = data.draw(sample_weights(X.shape[0]), label="sample_weight")
    batch_size = data.draw(st.sampled_from([1, 4, None]), label="batch_size")
    before = snapshot(X, y, weights)
    result = outcome(
        lambda: fastgd.fit(X, y, model, backend=backend, epochs=2, lr=0.1, seed=0,
                           batch_size=batch_size, sample_weight=weights),
        FIT_ARGUMENTS,
    )  # fmt: skip
    assert_unchanged(before, X, y, weights)
    if result is not None:
        check_fit_result(result)
        check_predictions(result, X, X.shape[0])


# --- recurrent networks ----------------------------------------------------------------


@st.composite
def sequence_case(draw):
    n, T, f = draw(st.sampled_from([1, 2, 5])), draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 2]))  # fmt: skip
    shape = draw(st.sampled_from([(n, T, f)] * 4 + [(n, T), (n,), (n, T, f, 1), (0, T, f)]))
    X = draw(user_array(shape, dtypes=["float64", "float32", "int64", "object"], layouts=LAYOUTS[:-2]))  # fmt: skip
    output = draw(st.sampled_from(["last", "sequence"]))
    task = draw(st.sampled_from(["classification", "regression"]))
    model = fastgd.RNN(draw(st.sampled_from(["lstm", "gru", "tanh"])), hidden=2, task=task, output=output)  # fmt: skip
    if output == "sequence":
        y_shape = draw(st.sampled_from([(n, T), (n, T), (n,), (n, T + 1)]))
        y = draw(user_array(y_shape, dtypes=["float64", "int64"], layouts=["C"], special=False))
        y = y if task == "regression" else (np.asarray(y) > 0).astype(int)
    else:
        y = draw(targets(n, task == "regression"))
    lengths = draw(st.one_of(
        st.none(), hnp.arrays(np.int64, n, elements=st.integers(0, T + 1)),
        hnp.arrays(np.float64, n, elements=st.sampled_from([1.0, 1.5, np.nan])),
        st.just(["a"] * n), st.just(np.ones(n + 1, dtype=int)),
    ))  # fmt: skip
    return X, y, model, lengths, shape


@fuzz_settings(25)
@given(case=sequence_case(), batch_size=st.sampled_from([2, None]))
def test_fit_recurrent_numpy_backend(case, batch_size):
    X, y, model, lengths, shape = case
    before = snapshot(X, y, lengths)
    result = outcome(
        lambda: fastgd.fit(X, y, model, backend="numpy", epochs=1, batch_size=batch_size,
                           lengths=lengths, seed=0, clip_norm=1.0),
        FIT_ARGUMENTS,
    )  # fmt: skip
    assert_unchanged(before, X, y, lengths)
    if result is not None:
        check_fit_result(result)
        check_predictions(result, X, shape[0], lengths=lengths)


# --- scikit-learn estimators ------------------------------------------------------------


def _estimator(name, options):
    small = dict(epochs=2, backend="numpy", random_state=0)
    if name.startswith("MLP"):
        small["hidden"] = (3,)
    est = getattr(fastgd, name)(**small)
    return est.set_params(**options)


ESTIMATOR_OPTIONS = ("batch_size", "lr", "optimizer", "penalty", "alpha", "clip_norm", "tol", "early_stopping")  # fmt: skip


@fuzz_settings(40)
@given(data=st.data())
def test_estimators(data):
    """fit / partial_fit, then predict and score: scikit-learn's own checks raise its
    messages (which name no argument), so only the exception types are checked."""
    pytest.importorskip("sklearn")
    name = data.draw(st.sampled_from(["LinearRegressor", "LinearClassifier", "MLPRegressor", "MLPClassifier"]))  # fmt: skip
    options = {k: v for k, v in data.draw(fit_options()).items() if k in ESTIMATOR_OPTIONS}
    est = _estimator(name, options)
    shape = data.draw(feature_shape(), label="shape")
    X = data.draw(user_array(shape), label="X")
    y = data.draw(targets(_rows(shape), "Regressor" in name), label="y")
    weights = data.draw(sample_weights(_rows(shape)), label="sample_weight")
    before = snapshot(X, y, weights)
    if "Classifier" in name and data.draw(st.booleans(), label="partial_fit"):
        classes = data.draw(st.sampled_from([None, [0, 1], [0, 1, 2], ["cat", "dog"]]))
        fitted = outcome(lambda: est.partial_fit(X, y, classes=classes, sample_weight=weights), None)  # fmt: skip
    else:
        fitted = outcome(lambda: est.fit(X, y, sample_weight=weights), None)
    assert_unchanged(before, X, y, weights)
    if fitted is None:
        return
    check_fit_result(est.result_)
    # data near the float range (1e300) may give infinite predictions, which
    # scikit-learn's score refuses with a ValueError; moderate data must score
    tame = moderate(X) and moderate(est.result_.params, bound=1e30)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = est.predict(X)
        score = est.score(X, y) if tame else outcome(lambda: est.score(X, y), None)
    assert len(predicted) == _rows(shape)
    assert score is None or isinstance(score, float)
    assert_unchanged(before, X, y, weights)


# --- pandas input ----------------------------------------------------------------------


def _pandas_weights(data, n):
    """Sample weights, sometimes as a series (with its own index)."""
    weights = data.draw(sample_weights(n), label="sample_weight")
    if weights is not None and data.draw(st.booleans(), label="weights as series"):
        import pandas as pd

        weights = pd.Series(weights, index=np.arange(len(weights))[::-1])
    return weights


@fuzz_settings(80)
@given(data=st.data())
def test_fit_pandas_input(data):
    """Data frames and series of every column kind (nullable with pd.NA, categorical,
    strings, datetimes), odd column names and indexes, through ``fit`` and ``predict``."""
    pytest.importorskip("pandas")
    n = data.draw(st.sampled_from([0, 1, 2, 3, 5, 8]), label="n")
    X = data.draw(pandas_features(n), label="X")
    model = data.draw(st.sampled_from(["linear", "logistic", "softmax", fastgd.MLP(hidden=(2,)), fastgd.MLP(hidden=(2,), task="regression")]), label="model")  # fmt: skip
    y = data.draw(pandas_targets(n, _is_regression(model)), label="y")
    weights = _pandas_weights(data, n)
    options = data.draw(st.sampled_from([{}, {"early_stopping": True}, {"batch_size": None}]))
    before = snapshot(X, y, weights)
    result = outcome(
        lambda: fastgd.fit(
            X, y, model, backend="numpy", epochs=2, seed=0, sample_weight=weights, **options
        ),  # fmt: skip
        FIT_ARGUMENTS,
    )
    assert_unchanged(before, X, y, weights)
    if result is not None:
        check_fit_result(result)
        check_predictions(result, X, len(X))
        assert_unchanged(before, X, y, weights)


@fuzz_settings(60)
@given(data=st.data())
def test_estimators_pandas_input(data):
    """The estimators on the same pandas input: scikit-learn's checks raise its own
    messages, so only the exception types are checked."""
    pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    name = data.draw(st.sampled_from(["LinearRegressor", "LinearClassifier", "MLPRegressor", "MLPClassifier"]))  # fmt: skip
    est = _estimator(name, {})
    n = data.draw(st.sampled_from([0, 1, 2, 3, 5, 8]), label="n")
    X = data.draw(pandas_features(n), label="X")
    y = data.draw(pandas_targets(n, "Regressor" in name), label="y")
    weights = _pandas_weights(data, n)
    before = snapshot(X, y, weights)
    fitted = outcome(lambda: est.fit(X, y, sample_weight=weights), None)
    assert_unchanged(before, X, y, weights)
    if fitted is None:
        return
    check_fit_result(est.result_)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        predicted = est.predict(X)
        outcome(lambda: est.score(X, y), None)
    assert len(predicted) == len(X)
    assert_unchanged(before, X, y, weights)


# --- save / load -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """(file bytes, the saved model, rows to predict) for a few kinds of model."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    labels = np.where(X[:, 0] > 0, "yes", "no")
    models = [
        fastgd.fit(X, X @ [1.0, 2.0, 3.0], backend="numpy", epochs=2, seed=0),
        fastgd.fit(
            X,
            labels,
            fastgd.MLP(hidden=(4,), batch_norm=True),
            backend="numpy",
            epochs=2,
            optimizer="adam",
            seed=0,
        ),  # fmt: skip
        fastgd.LinearClassifier(epochs=2, backend="numpy", random_state=0).fit(X, labels),
    ]
    files = []
    for i, model in enumerate(models):
        path = tmp_path_factory.mktemp("models") / f"model{i}.npz"
        fastgd.save(model, path)
        files.append((path.read_bytes(), model, X))
    return files


def _entries(node):
    """``(container, key)`` of every entry of nested dicts and lists."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()  # fmt: skip
    found = []
    for key, value in items:
        found.append((node, key))
        found.extend(_entries(value))
    return found


def _rewrite_metadata(raw, data):
    """The archive with one entry of its JSON metadata replaced (or removed), and a
    checksum that matches: a consistent-looking file with garbage inside."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("metadata")))
    arrays.pop("checksum")
    node, key = data.draw(st.sampled_from(_entries(meta)), label="entry")
    junk = st.sampled_from([None, -1, 0, 1, 2, 10**9, 0.5, np.nan, "x", "linear", [], [1, -1], {}, True])  # fmt: skip
    if data.draw(st.booleans(), label="delete"):
        del node[key]
    else:
        node[key] = data.draw(junk, label="value")
    text = json.dumps(meta)
    arrays["metadata"] = np.array(text)
    arrays["checksum"] = np.array(persistence._checksum(text, {k: v for k, v in arrays.items() if k != "metadata"}))  # fmt: skip
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _damage(raw, how, data):
    """The bytes of a damaged or foreign file."""
    if how == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    if how == "flip":
        position = data.draw(st.integers(0, len(raw) - 1), label="position")
        return raw[:position] + bytes([raw[position] ^ data.draw(st.integers(1, 255))]) + raw[position + 1 :]  # fmt: skip
    if how == "insert":
        position = data.draw(st.integers(0, len(raw)), label="position")
        return raw[:position] + data.draw(st.binary(min_size=1, max_size=8)) + raw[position:]
    if how == "garbage":
        return data.draw(st.binary(max_size=200), label="bytes")
    if how == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.arange(3.0))
        return buffer.getvalue()
    if how == "npz-without-metadata":
        buffer = io.BytesIO()
        np.savez(buffer, params=np.arange(3.0))
        return buffer.getvalue()
    if how == "text":
        return b"a,b\n1,2\n"
    return _rewrite_metadata(raw, data)


def _prediction(model, X):
    result = getattr(model, "result_", model)
    return result.predict(X)


@fuzz_settings(60)
@given(data=st.data())
def test_load_damaged_or_foreign_files(model_files, data):
    raw, original, X = data.draw(st.sampled_from(model_files), label="model")
    how = data.draw(st.sampled_from(["truncate", "flip", "flip", "insert", "garbage", "npy", "npz-without-metadata", "text", "metadata", "metadata"]), label="damage")  # fmt: skip
    content = _damage(raw, how, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        with open(path, "wb") as file:
            file.write(content)
        loaded = outcome(lambda: fastgd.load(path), (path,))
    if loaded is None:
        return
    if how != "metadata":  # the checksum vouches for every array: the same model
        np.testing.assert_array_equal(_prediction(loaded, X), _prediction(original, X))
        return
    # a file whose checksum matches but whose content is garbage loads only if usable
    predicted = outcome(lambda: _prediction(loaded, X), None)
    assert predicted is None or len(predicted) == len(X)


@fuzz_settings(20)
@given(path=st.sampled_from([None, 3, 2.5, b"/nonexistent/model.npz", ["a"]]))
def test_load_and_save_paths(model_files, path):
    """Only file names are paths (an integer would be taken as a file descriptor)."""
    outcome(lambda: fastgd.load(path), ("path", str(path)), allowed=FileNotFoundError)
    outcome(lambda: fastgd.save(model_files[0][1], path), ("path", str(path)), allowed=FileNotFoundError)  # fmt: skip


# --- the command line ------------------------------------------------------------------


def run_cli(argv):
    """``fastgd ...`` in this process: the exit status, its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                status = main(argv)
            except SystemExit as exc:  # argparse: bad arguments
                status = exc.code
    return status, out.getvalue(), err.getvalue()


CELLS = st.sampled_from(["1", "-2.5", "0", "nan", "inf", "1e300", "", "x", "1,5", '"3"', "\x00", "é", "2" * 50])  # fmt: skip


@st.composite
def data_file(draw, directory):
    """A data file of the kind its name says, or of another kind, or damaged."""
    kind = draw(st.sampled_from(["csv", "csv", "npy", "npz", "npz-as-npy", "npy-as-npz", "binary-csv", "empty", "missing"]))  # fmt: skip
    n, d = draw(st.integers(0, 6)), draw(st.integers(1, 3))
    values = draw(float_matrix((n, d + 1)))
    values[:, -1] = draw(st.sampled_from([0.0, 1.0])) + (np.arange(n) % 2)
    suffix = {"csv": ".csv", "binary-csv": ".csv", "empty": ".csv", "missing": ".csv"}.get(kind, ".npy" if kind in ("npy", "npz-as-npy") else ".npz")  # fmt: skip
    path = os.path.join(directory, "data" + suffix)
    if kind == "csv":
        header = draw(st.sampled_from([["a", "b", "c", "t"][:d] + ["t"], ["a", "a", "t"], ["t"]]))
        rows = [[draw(CELLS) if draw(st.integers(0, 9)) == 0 else repr(float(v)) for v in row][: len(header)] for row in values]  # fmt: skip
        with open(path, "w", encoding="utf-8", newline="") as file:
            file.write("\n".join(",".join(r) for r in [header] + rows) + "\n")
    elif kind in ("npy", "npy-as-npz"):
        with open(path, "wb") as file:
            np.save(file, values)
    elif kind in ("npz", "npz-as-npy"):
        with open(path, "wb") as file:
            np.savez(file, X=values[:, :-1], t=values[:, -1])
    elif kind == "binary-csv":
        with open(path, "wb") as file:
            file.write(draw(st.binary(max_size=64)) + b"\xff\xfe\x00")
    elif kind == "empty":
        open(path, "w").close()
    return path


@fuzz_settings(40)
@given(data=st.data())
def test_command_line(data):
    """``fastgd train`` then ``fastgd predict``: exit status 0, or 2 with a message."""
    with tempfile.TemporaryDirectory() as tmp:
        path = data.draw(data_file(tmp), label="data")
        out = os.path.join(tmp, "model.npz")
        target = data.draw(st.sampled_from(["t", "t", "1", "-1", "99", "x"]), label="target")
        model = data.draw(st.sampled_from(["linear", "logistic", "softmax", "mlp", "tree"]), label="model")  # fmt: skip
        extra = data.draw(st.lists(st.sampled_from([
            ["--epochs", "0"], ["--epochs", "2"], ["--batch-size", "full"], ["--batch-size", "0"],
            ["--batch-size", "x"], ["--lr", "nan"], ["--lr", "-1"], ["--lr", "1e300"],
            ["--hidden", "0"], ["--hidden", "3,2"], ["--optimizer", "adam"], ["--seed", "-1"],
            ["--task", "regression"], ["--unknown"],
        ]), max_size=3), label="options")  # fmt: skip
        argv = ["train", path, "--target", target, "--model", model, "--epochs", "1",
                "--backend", "numpy", "--no-progress", "--out", out] + sum(extra, [])  # fmt: skip
        status, _, err = run_cli(argv)
        assert status in (0, 2), (status, err)
        assert status == 0 or err.strip(), "exit status 2 without a message"
        if status == 0:
            proba = data.draw(st.sampled_from([[], ["--proba"]]), label="proba")
            status, _, err = run_cli(["predict", out, path] + proba)
            assert status in (0, 2), (status, err)
            assert status == 0 or err.strip()
