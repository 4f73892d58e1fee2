"""scikit-learn estimators over :func:`fastgd.fit`.

``LinearRegressor``, ``LinearClassifier``, ``MLPRegressor`` and ``MLPClassifier`` take the
training options of :func:`fastgd.fit` as constructor parameters (``random_state`` in
place of ``seed``) and follow scikit-learn's conventions, so they go into ``Pipeline``,
``GridSearchCV``, ``cross_val_score`` and ``clone``. Each fit calls :func:`fastgd.fit`
once; its :class:`~fastgd.FitResult` is kept as ``result_``.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> import fastgd
>>> model = make_pipeline(StandardScaler(), fastgd.LinearClassifier(epochs=20))  # doctest: +SKIP
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _pandas
from .api import fit as _fit
from .distributed import is_dask_collection
from .network import MLP

__all__ = ["LinearRegressor", "LinearClassifier", "MLPRegressor", "MLPClassifier"]

# constructor parameters handed to fastgd.fit under the same name
_FIT_OPTIONS = (
    "batch_size", "epochs", "lr", "optimizer", "shuffle", "tol", "n_iter_no_change",
    "backend", "n_threads", "verbose", "on_divergence", "clip_value", "clip_norm",
    "callback", "early_stopping", "validation_fraction", "progress", "penalty", "alpha",
    "l1_ratio",
)  # fmt: skip


_NO_Y = "no_validation"  # scikit-learn's marker for "validate X only"


def _seed(random_state):
    """fit's ``seed`` from scikit-learn's ``random_state`` (an int is used as it is)."""
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(
                f"random_state must be None, a non-negative integer or a RandomState; got "
                f"{random_state}"
            )
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _log_proba(Z, binary):
    """Log-probabilities from decision values without taking the log of 0."""
    if binary:
        z = Z[:, 0]
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])
    Z = Z - Z.max(axis=1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))


class _FastGDEstimator(BaseEstimator):
    """Shared machinery: validation, the call to :func:`fastgd.fit`, fitted attributes."""

    _is_classifier = False
    # scipy.sparse input: CSR matrices and arrays are passed to fastgd.fit as they are
    # (other formats converted to CSR once by scikit-learn's validation) and train in
    # compiled code, never densified (networks: a sparse first layer)
    _accept_sparse = True

    def _model(self, n_classes):
        raise NotImplementedError

    def _fit_kwargs(self):
        kwargs = {name: getattr(self, name) for name in _FIT_OPTIONS}
        kwargs["seed"] = _seed(self.random_state)
        return kwargs

    def _validate(self, X, y=_NO_Y, reset=True):
        """Arrays from X (and y) as scikit-learn checks them; pandas columns must be numeric."""
        if _pandas._is_frame(X):
            _pandas.frame_dtype(X, "X")  # a ValueError names non-numeric columns
        sparse = ["csr"] if self._accept_sparse else False
        if y is _NO_Y:
            return validate_data(
                self, X, reset=reset, dtype=[np.float64, np.float32], accept_sparse=sparse
            )
        X, y = validate_data(
            self, X, y, reset=reset, dtype=[np.float64, np.float32], accept_sparse=sparse,
            multi_output=not self._is_classifier, y_numeric=not self._is_classifier,
        )  # fmt: skip
        if self._is_classifier:
            check_classification_targets(y)
        return X, y

    def _run(self, X, y, sample_weight, init, **overrides):
        labels = overrides.get("classes")
        n_classes = len(np.unique(y if labels is None else labels)) if self._is_classifier else None
        if n_classes is not None and n_classes < 2:
            raise ValueError(
                f"y has 1 class ({np.unique(y)[0]!r}); a classifier needs at least two classes"
            )
        kwargs = {**self._fit_kwargs(), **overrides}
        result = _fit(
            X, y, self._model(n_classes), init=init, sample_weight=sample_weight, **kwargs
        )
        result.feature_names_in_ = getattr(self, "feature_names_in_", None)
        return result

    def fit(self, X, y, sample_weight=None):
        """Train on ``X``, ``y`` with :func:`fastgd.fit`.

        With ``warm_start=True`` and an earlier fit, training continues from its
        parameters and optimizer state.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)
            Or a ``dask.array`` / ``dask.dataframe`` chunked by rows: trained on the Dask
            cluster as :func:`fastgd.fit` does (predict then takes in-memory rows, e.g.
            ``X.map_blocks(est.predict, drop_axis=1)``).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets (regressors) or class labels of any values (classifiers).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each sample.

        Returns
        -------
        self
        """
        warm = self.warm_start and self.__sklearn_is_fitted__()
        init = self.result_ if warm else None
        if any(map(is_dask_collection, (X, y, sample_weight))):
            return self._fit_dask(X, y, sample_weight, init, warm)
        X, y = self._validate(X, y, reset=not warm)
        result = self._run(X, y, sample_weight, init)
        self._store(result, n_iter=result.n_epochs, append=warm)
        return self

    def _fit_dask(self, X, y, sample_weight, init, warm):
        """Dask input: :func:`fastgd.fit` validates it chunk by chunk in the workers (it is
        never gathered here); the classes come from one round over ``y``."""
        overrides = {}
        if self._is_classifier:
            from .distributed.data import dask_labels

            overrides["classes"] = dask_labels(y)
        n_classes = len(overrides["classes"]) if self._is_classifier else None
        kwargs = {**self._fit_kwargs(), **overrides}
        result = _fit(X, y, self._model(n_classes), init=init, sample_weight=sample_weight, **kwargs)  # fmt: skip
        self.n_features_in_ = result.model.n_features
        if result.feature_names_in_ is not None:
            self.feature_names_in_ = result.feature_names_in_
        self._store(result, n_iter=result.n_epochs, append=warm)
        return self

    def _partial_fit(self, X, y, sample_weight, classes):
        first = not self.__sklearn_is_fitted__()
        X, y = self._validate(X, y, reset=first)
        overrides = dict(epochs=1, early_stopping=False, tol=None)
        if self._is_classifier:
            overrides["classes"] = self._check_partial_classes(y, classes, first)
        init = None if first else self.result_
        result = self._run(X, y, sample_weight, init, **overrides)
        self._store(result, n_iter=(0 if first else self.n_iter_) + 1, append=not first)
        return self

    def _store(self, result, n_iter, append):
        """Set the fitted attributes from a FitResult."""
        self.result_ = result
        self.n_iter_ = int(n_iter)
        earlier = list(self.loss_curve_) if append else []
        self.loss_curve_ = earlier + [float(loss) for loss in result.loss_history]
        if result.classes_ is not None:
            self.classes_ = result.classes_
        self._store_params(result)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "result_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = self._accept_sparse
        if not self._is_classifier:
            tags.target_tags.multi_output = True
        return tags

    def _decision(self, X):
        check_is_fitted(self)
        return self.result_.decision_function(self._validate(X, reset=False))


class _Regressor(RegressorMixin, _FastGDEstimator):
    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self)
        return self.result_.predict(self._validate(X, reset=False))

    def partial_fit(self, X, y, sample_weight=None):
        """One pass over the rows given, continuing from the previous call.

        Parameters and optimizer state carry over from call to call; the first call
        initializes them (the network's weights from ``random_state``). Rows are visited
        in order unless ``shuffle``. The learning rate of the first epoch of a schedule
        is used in every call.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, sample_weight, None)


class _Classifier(ClassifierMixin, _FastGDEstimator):
    _is_classifier = True

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.result_.predict(self._validate(X, reset=False))

    def decision_function(self, X):
        """Decision values: shape (n_samples,) for two classes (positive: ``classes_[1]``),
        else (n_samples, n_classes).

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray
        """
        Z = self._decision(X)
        return Z[:, 0] if len(self.classes_) == 2 else Z

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        return self.result_.predict_proba(self._validate(X, reset=False))

    def predict_log_proba(self, X):
        """Logarithms of the class probabilities, computed from the decision values.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        return _log_proba(self._decision(X), len(self.classes_) == 2)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass over the rows given, continuing from the previous call.

        Parameters and optimizer state carry over from call to call. A call's ``y`` may
        hold only some of the classes; the model has an output for each of ``classes``.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            All class labels; required on the first call.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, sample_weight, classes)

    def _check_partial_classes(self, y, classes, first):
        if first and classes is None:
            raise ValueError("classes must be given on the first call to partial_fit")
        known = np.unique(classes) if first else self.classes_
        if classes is not None and not first and not np.array_equal(np.unique(classes), known):
            raise ValueError(f"classes={classes!r} differs from the first call's {known!r}")
        present = np.unique(y)
        unknown = np.setdiff1d(present, known)
        if unknown.size:
            raise ValueError(f"y has labels {unknown.tolist()} not in classes {known.tolist()}")
        return known


class _Linear:
    """Constructor of the linear estimators (a mixin, for the parameter list)."""

    def __init__(self, *, fit_intercept=True, batch_size=32, epochs=100, lr=None,
                 optimizer="sgd", shuffle=True, random_state=None, tol=None,
                 n_iter_no_change=5, backend="auto", n_threads=None, verbose=False,
                 on_divergence="warn", clip_value=None, clip_norm=None, callback=None,
                 early_stopping=False, validation_fraction=0.1, progress=False, penalty=None,
                 alpha=1e-4, l1_ratio=0.15, warm_start=False):  # fmt: skip
        self.fit_intercept = fit_intercept
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose
        self.on_divergence = on_divergence
        self.clip_value = clip_value
        self.clip_norm = clip_norm
        self.callback = callback
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.progress = progress
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.warm_start = warm_start

    def _fit_kwargs(self):
        return {**super()._fit_kwargs(), "fit_intercept": self.fit_intercept}

    def _store_params(self, result):
        self.coef_ = result.coef_
        self.intercept_ = result.intercept_


class _Network:
    """Constructor of the network estimators (a mixin, for the parameter list)."""

    _task = None

    def __init__(self, hidden=(100,), *, activation="relu", batch_norm=False, init=None,
                 init_scale=1.0, batch_size=32, epochs=100, lr=None, optimizer="sgd",
                 shuffle=True, random_state=None, tol=None, n_iter_no_change=5,
                 backend="auto", n_threads=None, verbose=False, on_divergence="warn",
                 clip_value=None, clip_norm=None, callback=None, early_stopping=False,
                 validation_fraction=0.1, progress=False, penalty=None, alpha=1e-4,
                 l1_ratio=0.15, warm_start=False):  # fmt: skip
        self.hidden = hidden
        self.activation = activation
        self.batch_norm = batch_norm
        self.init = init
        self.init_scale = init_scale
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose
        self.on_divergence = on_divergence
        self.clip_value = clip_value
        self.clip_norm = clip_norm
        self.callback = callback
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.progress = progress
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.warm_start = warm_start

    def _model(self, n_classes):
        return MLP(hidden=self.hidden, activation=self.activation, batch_norm=self.batch_norm,
                   init=self.init, init_scale=self.init_scale, task=self._task)  # fmt: skip

    def _store_params(self, result):
        named = result.named_params
        layers = range(1, result.model.n_layers + 1)
        self.coefs_ = [named[f"dense{i}.weight"] for i in layers]
        self.intercepts_ = [named.get(f"dense{i}.bias", named.get(f"dense{i}.bn_shift")) for i in layers]  # fmt: skip
        self.n_outputs_ = result.model.n_outputs


class LinearRegressor(_Linear, _Regressor):
    """Least squares (one or several targets) trained by :func:`fastgd.fit`.

    Parameters are the training options of :func:`fastgd.fit` (``random_state`` is its
    ``seed``); ``warm_start=True`` continues from the previous fit.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Set when X was a data frame with string column names.
    n_iter_ : int
        Epochs run by the last ``fit`` (``partial_fit``: calls so far).
    loss_curve_ : list of float
        Training loss per epoch (accumulated over warm starts and ``partial_fit``).
    result_ : FitResult
        What :func:`fastgd.fit` returned.
    """

    def _model(self, n_classes):
        return "linear"


class LinearClassifier(_Linear, _Classifier):
    """Logistic regression (two classes) or softmax regression (more), by :func:`fastgd.fit`.

    Labels may be any values. Parameters are the training options of :func:`fastgd.fit`
    (``random_state`` is its ``seed``); ``warm_start=True`` continues from the previous fit.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_, feature_names_in_, n_iter_, loss_curve_, result_
        As in :class:`LinearRegressor`.
    """

    def _model(self, n_classes):
        return "logistic" if n_classes == 2 else "softmax"


class MLPRegressor(_Network, _Regressor):
    """A multi-layer perceptron for regression (mean squared error), by :func:`fastgd.fit`.

    ``hidden``, ``activation``, ``batch_norm``, ``init`` and ``init_scale`` are those of
    :class:`fastgd.MLP`; the others are the training options of :func:`fastgd.fit`
    (``random_state`` seeds the initial weights and the shuffling).

    Attributes
    ----------
    coefs_ : list of ndarray
        Weight matrix of every layer, shape (n_in, n_out), the output layer last.
    intercepts_ : list of ndarray
        Bias of every layer (the batch-norm shift for a normalized layer).
    n_outputs_ : int
    n_features_in_, feature_names_in_, n_iter_, loss_curve_, result_
        As in :class:`LinearRegressor`.
    """

    _task = "regression"


class MLPClassifier(_Network, _Classifier):
    """A multi-layer perceptron classifier (sigmoid or softmax output), by :func:`fastgd.fit`.

    Parameters and attributes as :class:`MLPRegressor`, plus ``classes_``.
    """

    _task = "classification"
