"""The scikit-learn estimators: scikit-learn's own checks, pipelines, partial_fit, pandas."""

import warnings

import numpy as np
import pytest
from sklearn import linear_model, neural_network
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_classification
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastgd
from fastgd import LinearClassifier, LinearRegressor, MLPClassifier, MLPRegressor

pd = pytest.importorskip("pandas")

# The defaults, on the NumPy backend (the compiled ones are checked against it elsewhere).
# No check is expected to fail: scikit-learn declares only the sample-weight equivalence
# checks for SGDClassifier/SGDRegressor, and they pass here (the checks' data sets fit in
# one batch of the default batch_size=32, where a weight of 2 is exactly a repeated row).
ESTIMATORS = [
    LinearRegressor(backend="numpy"),
    LinearClassifier(backend="numpy"),
    MLPRegressor(backend="numpy"),
    MLPClassifier(backend="numpy"),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# Mini-batches of 4 with Adam: the checks' data sets now take several batches per epoch.
MINI_BATCH = [
    LinearRegressor(backend="numpy", batch_size=4, optimizer="adam", epochs=20),
    LinearClassifier(backend="numpy", batch_size=4, optimizer="adam", epochs=20),
    MLPRegressor(hidden=(16,), backend="numpy", batch_size=4, optimizer="adam", epochs=20),
    MLPClassifier(hidden=(16,), backend="numpy", batch_size=4, optimizer="adam", epochs=20),
]
# the one expected failure (on dense and on sparse data), which scikit-learn also declares
# for SGDClassifier/SGDRegressor
_WEIGHT_2_IS_NOT_TWICE = (
    "mini-batch SGD: a sample of weight 2 is not the same as the sample twice, since the "
    "repeated copy lands in another batch and the batches and updates change"
)
MINI_BATCH_XFAIL = {
    "check_sample_weight_equivalence_on_dense_data": _WEIGHT_2_IS_NOT_TWICE,
    "check_sample_weight_equivalence_on_sparse_data": _WEIGHT_2_IS_NOT_TWICE,
}


@parametrize_with_checks(MINI_BATCH, expected_failed_checks=lambda est: MINI_BATCH_XFAIL)
def test_sklearn_estimator_checks_mini_batch(estimator, check):
    check(estimator)


def _split(load):
    X, y = load(return_X_y=True)
    return train_test_split(X, y, random_state=0)


# (fastgd estimator, scikit-learn's with the same settings, data set, allowed shortfall)
PIPELINE_CASES = [
    (LinearClassifier(), linear_model.SGDClassifier(loss="log_loss", random_state=0),
     load_breast_cancer, 0.02),
    (LinearClassifier(), linear_model.SGDClassifier(loss="log_loss", random_state=0),
     load_digits, 0.02),
    (LinearRegressor(), linear_model.SGDRegressor(random_state=0), load_diabetes, 0.03),
    (MLPClassifier(hidden=(64,), optimizer="adam", lr=1e-3, epochs=50),
     neural_network.MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, batch_size=32, random_state=0),
     load_digits, 0.02),
    (MLPClassifier(hidden=(64,), optimizer="adam", lr=1e-3, epochs=50),
     neural_network.MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, batch_size=32, random_state=0),
     load_breast_cancer, 0.02),
    (MLPRegressor(hidden=(16,), optimizer="adam", lr=1e-2, epochs=100),
     neural_network.MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=1e-2, max_iter=100,
                                 batch_size=32, alpha=0.0, random_state=0),
     load_diabetes, 0.03),
]  # fmt: skip


@pytest.mark.parametrize(
    "ours, theirs, load, slack",
    PIPELINE_CASES,
    ids=[f"{type(c[0]).__name__}-{c[2].__name__}" for c in PIPELINE_CASES],
)
def test_pipeline_scores_like_sklearn(ours, theirs, load, slack):
    X_train, X_test, y_train, y_test = _split(load)
    ours = Pipeline([("scale", StandardScaler()), ("gd", clone(ours).set_params(backend="numpy", random_state=0))])  # fmt: skip
    theirs = Pipeline([("scale", StandardScaler()), ("sk", clone(theirs))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning at max_iter
        score = ours.fit(X_train, y_train).score(X_test, y_test)
        reference = theirs.fit(X_train, y_train).score(X_test, y_test)
    print(f"{load.__name__}: fastgd {score:.4f}, scikit-learn {reference:.4f}")
    assert score >= reference - slack
    assert score > (0.9 if load is not load_diabetes else 0.3)


def _blobs(n=200, classes=3, seed=0):
    return make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=classes,
                               random_state=seed)  # fmt: skip


def test_grid_search_in_two_processes_picks_a_learning_rate():
    X, y = _blobs()
    search = GridSearchCV(
        LinearClassifier(backend="numpy", epochs=20, random_state=0),
        {"lr": [1e-6, 0.1]},
        cv=3,
        n_jobs=2,
    ).fit(X, y)
    assert search.best_params_ == {"lr": 0.1}  # 1e-6 barely moves from zero weights
    assert search.best_estimator_.score(X, y) > 0.7


def test_cross_val_score_regressor():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.01 * rng.standard_normal(150)
    scores = cross_val_score(LinearRegressor(backend="numpy", random_state=0), X, y, cv=5)
    assert scores.shape == (5,)
    assert scores.min() > 0.99


def test_clone_copies_parameters_not_fit():
    est = MLPClassifier(hidden=(8, 4), optimizer="adam", backend="numpy", random_state=3)
    est.fit(*_blobs(60))
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "result_") and hasattr(est, "result_")


def test_fitted_attributes_linear_classifier():
    X, y = _blobs(classes=3)
    labels = np.array(["a", "b", "c"])[y]
    est = LinearClassifier(backend="numpy", random_state=0, epochs=5).fit(X, labels)
    assert list(est.classes_) == ["a", "b", "c"]
    assert est.coef_.shape == (3, 6) and est.intercept_.shape == (3,)
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 5
    assert est.n_features_in_ == 6
    np.testing.assert_array_equal(est.coef_, est.result_.coef_)
    np.testing.assert_allclose(est.predict_proba(X).sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), est.predict_proba(X))
    binary = LinearClassifier(backend="numpy", random_state=0).fit(X, y == 1)
    assert binary.result_.model.name == "logistic"
    assert binary.decision_function(X).shape == (200,)
    np.testing.assert_array_equal(binary.predict(X), binary.decision_function(X) > 0)


def test_mlp_attributes():
    X, y = _blobs(classes=2)
    est = MLPClassifier(hidden=(5, 3), batch_norm=(True, False), backend="numpy",
                        random_state=0, epochs=3).fit(X, y)  # fmt: skip
    assert [w.shape for w in est.coefs_] == [(6, 5), (5, 3), (3, 1)]
    assert [b.shape for b in est.intercepts_] == [(5,), (3,), (1,)]
    np.testing.assert_array_equal(est.intercepts_[0], est.result_.named_params["dense1.bn_shift"])
    reg = MLPRegressor(hidden=(4,), backend="numpy", random_state=0, epochs=3)
    assert reg.fit(X, np.column_stack([X[:, 0], X[:, 1]])).predict(X).shape == (200, 2)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_estimators_reject_1d_X(est):
    with pytest.raises(ValueError, match="2D array"):
        clone(est).fit(np.arange(10.0), np.arange(10) % 2)


def _partial_case(est):
    X, y = (load_breast_cancer if isinstance(est, (LinearClassifier, MLPClassifier)) else load_diabetes)(return_X_y=True)  # fmt: skip
    X = StandardScaler().fit_transform(X)[:320]
    return X, (y[:320] if y.dtype.kind == "i" else (y[:320] - y.mean()) / y.std())


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_partial_fit_in_10_chunks_equals_one_epoch(est, backend):
    X, y = _partial_case(est)
    params = dict(optimizer="adam", lr=1e-2, batch_size=16, shuffle=False, random_state=5,
                  backend=backend)  # fmt: skip
    if isinstance(est, (MLPRegressor, MLPClassifier)):
        params["hidden"] = (8,)
    whole = clone(est).set_params(epochs=1, **params).fit(X, y)
    chunked = clone(est).set_params(**params)
    classes = {"classes": np.unique(y)} if hasattr(est, "predict_proba") else {}
    for i, rows in enumerate(np.split(np.arange(len(y)), 10)):  # 32 rows: 2 batches each
        chunked.partial_fit(X[rows], y[rows], **(classes if i == 0 else {}))
        assert chunked.result_.n_updates == 2 * (i + 1)  # Adam's step count carries over
    assert chunked.n_iter_ == 10 and len(chunked.loss_curve_) == 10
    assert whole.result_.n_updates == 20
    np.testing.assert_array_equal(chunked.result_.params, whole.result_.params)
    np.testing.assert_array_equal(chunked.result_.optimizer_state, whole.result_.optimizer_state)


def test_partial_fit_classes_rules():
    X, y = _blobs(classes=3)
    est = LinearClassifier(backend="numpy")
    with pytest.raises(ValueError, match="classes must be given"):
        est.partial_fit(X, y)
    with pytest.raises(ValueError, match=r"labels \[2\] not in classes"):
        est.partial_fit(X, y, classes=[0, 1])
    est.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="X has 5 features"):
        est.partial_fit(X[:, :5], y)


def test_partial_fit_chunks_may_miss_classes():
    X, y = _blobs(classes=3)
    est = LinearClassifier(backend="numpy", random_state=0)
    est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # class 2 not seen yet
    assert list(est.classes_) == [0, 1, 2] and est.coef_.shape == (3, X.shape[1])
    est.partial_fit(X[y == 2], y[y == 2])
    assert est.n_iter_ == 2 and set(est.predict(X)) <= {0, 1, 2}


def test_fit_takes_the_classes_the_model_has_outputs_for():
    X, y = _blobs(classes=3)
    result = fastgd.fit(X[y < 2], y[y < 2], model="softmax", classes=[2, 0, 1], epochs=2)
    assert list(result.classes_) == [0, 1, 2] and result.model.n_outputs == 3
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in classes \[0, 1\]"):
        fastgd.fit(X, y, model="softmax", classes=[0, 1], epochs=1)


def test_warm_start_continues_like_a_longer_fit():
    X, y = _partial_case(LinearRegressor())
    params = dict(optimizer="adam", lr=1e-2, shuffle=False, backend="numpy")
    longer = LinearRegressor(epochs=6, **params).fit(X, y)
    warm = LinearRegressor(epochs=3, warm_start=True, **params).fit(X, y).fit(X, y)
    cold = LinearRegressor(epochs=3, **params).fit(X, y).fit(X, y)
    np.testing.assert_allclose(warm.coef_, longer.coef_, rtol=1e-12)
    assert warm.result_.n_updates == longer.result_.n_updates
    assert len(warm.loss_curve_) == 6 and len(cold.loss_curve_) == 3
    assert not np.allclose(cold.coef_, longer.coef_)


def test_dataframe_input_keeps_dtype_and_names():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((80, 3)).astype(np.float32), columns=["a", "b", "c"])
    y = pd.Series(X["a"] * 2.0 - X["c"], name="target")
    est = LinearRegressor(backend="numpy", random_state=0).fit(X, y)
    assert est.result_.dtype == np.float32
    assert list(est.feature_names_in_) == ["a", "b", "c"]
    assert list(est.result_.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="feature names"):
        est.predict(X[["c", "b", "a"]])
    result = fastgd.fit(X, y, backend="numpy", epochs=3)
    assert result.dtype == np.float32 and list(result.feature_names_in_) == ["a", "b", "c"]
    assert fastgd.fit(X.astype(np.float64), y, backend="numpy", epochs=1).dtype == np.float64


def test_dataframe_non_numeric_columns_are_named():
    X = pd.DataFrame(
        {
            "x": np.arange(6.0),
            "city": ["a", "b", "c", "a", "b", "c"],
            "size": pd.Categorical(["s", "m", "l", "s", "m", "l"]),
        }
    )
    y = np.arange(6.0)
    with pytest.raises(ValueError, match=r"non-numeric or categorical columns \['city', 'size'\]"):
        fastgd.fit(X, y, backend="numpy")
    with pytest.raises(ValueError, match=r"\['city', 'size'\]"):
        LinearRegressor(backend="numpy").fit(X, y)


def test_fit_network_with_several_regression_targets_predicts_each():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    Y = np.column_stack([X[:, 0], -X[:, 1]])
    net = fastgd.MLP(hidden=(4,), task="regression")
    result = fastgd.fit(X, Y, model=net, backend="numpy", epochs=2)
    assert result.predict(X).shape == (50, 2)
    np.testing.assert_array_equal(result.predict(X), result.decision_function(X))
    assert fastgd.fit(X, Y[:, 0], model=net, backend="numpy", epochs=2).predict(X).shape == (50,)


def test_fit_takes_a_series_as_one_feature():
    x = pd.Series(np.linspace(-1, 1, 40), name="x")
    result = fastgd.fit(x, 2 * x + 1, backend="numpy", batch_size=None, epochs=500, lr=0.5)
    assert list(result.feature_names_in_) == ["x"]
    np.testing.assert_allclose([result.coef_[0], result.intercept_], [2.0, 1.0], atol=1e-3)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_network_estimators_take_sparse_X_as_the_dense_one(cls, backend):
    # a CSR X trains the network (a sparse first layer) to the parameters of the dense X
    from scipy import sparse

    if backend not in fastgd.available_backends():
        pytest.skip(f"{backend} not available")
    rng = np.random.default_rng(0)
    X = sparse.random(120, 30, density=0.1, format="csr", random_state=0, dtype=np.float64)
    score = X @ rng.standard_normal(30)
    y = (score > 0).astype(int) if cls is MLPClassifier else score
    options = dict(hidden=(8,), backend=backend, batch_size=16, epochs=5, random_state=0)
    on_sparse = cls(**options).fit(X, y)
    on_dense = cls(**options).fit(X.toarray(), y)
    np.testing.assert_allclose(on_sparse.result_.params, on_dense.result_.params, rtol=1e-10, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(on_sparse.predict(X), on_dense.predict(X.toarray()), rtol=1e-10)
