"""What to train on: validated data, the model spec it implies, the validation split, and
the initial training state (fresh or warm-started)."""

import numbers
from dataclasses import dataclass

import numpy as np

from .. import _validation as v
from .._pandas import frames_to_arrays
from ..backends.contract import Data, SequenceData, SparseData, State, n_rows
from ..network import MLP
from ..recurrent import RNN
from ..specs import stopping
from ..specs.models import LINEAR_MODELS, LinearModelSpec
from ..specs.optimizers import NEWTON


@dataclass(frozen=True)
class Problem:
    """The model spec, the data and, with early stopping, the held-out rows.

    With early stopping nothing is copied: ``data`` holds every row of the caller's
    array, ``train_rows`` (sorted) are the rows the kernels visit and ``validation_rows``
    (sorted) the held-out ones, whose loss is computed where they are; the sample weights
    of ``data`` are rescaled to mean 1 over each of the two sets separately. Without it,
    ``train_rows`` and ``validation_rows`` are None and every row trains.
    """

    spec: object
    data: Data | SparseData
    classes: np.ndarray | None
    # early stopping: the container the held-out rows are read from (``data``), else None
    validation: Data | SparseData | None
    validation_rows: np.ndarray | None
    single_target: bool
    feature_names: np.ndarray | None = None
    # dense X whose finiteness is checked after training (check_finite_after), or None
    unchecked: np.ndarray | None = None
    train_rows: np.ndarray | None = None

    @property
    def n_train(self):
        """Rows the kernels train on."""
        return n_rows(self.data) if self.train_rows is None else self.train_rows.shape[0]

    def training_data(self):
        """The training rows as a container of their own: ``data``, or with early stopping
        a gathered copy of the training rows (the full-batch solvers' passes read whole
        containers; the epoch loop never calls this)."""
        if self.train_rows is None:
            return self.data
        return container(_gather(self.data, self.train_rows))


def check_model(model):
    """Reject what is neither a linear-family name, a :class:`fastgd.MLP` nor a
    :class:`fastgd.RNN`."""
    if not isinstance(model, (MLP, RNN)) and (
        not isinstance(model, str) or model not in LINEAR_MODELS
    ):
        raise ValueError(
            f"model must be one of {', '.join(map(repr, LINEAR_MODELS))}, a fastgd.MLP or a "
            f"fastgd.RNN; got {model!r}"
        )


def prepare_problem(X, y, model, arguments):
    """Validate the data and build the model spec (``arguments``: fit's keywords).

    Returns
    -------
    Problem
    """
    unchecked = None
    if isinstance(model, RNN):
        X, Y, classes, lengths, feature_names = _sequences(X, y, model, arguments)
    else:
        if arguments.get("lengths") is not None:
            raise ValueError("lengths is only for sequence models (model=fastgd.RNN(...))")
        X, Y, classes, feature_names = _rows(X, y, model, arguments)
    unchecked = X if isinstance(X, np.ndarray) and not arguments["early_stopping"] else None
    n, d = X.shape[0], X.shape[-1]
    weights = v.check_sample_weight(arguments["sample_weight"], n, X.dtype)
    seed = arguments["seed"]
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):  # NumPy's generators take non-negative seeds only
        raise ValueError(f"seed must be None or a non-negative integer; got {seed!r}")
    data = SequenceData(X, Y, weights, lengths) if isinstance(model, RNN) else Data(X, Y, weights)
    train_rows, rows = None, None
    if arguments["early_stopping"]:
        rows = _validation_split(n, arguments["validation_fraction"], seed)
        train_rows = _complement(rows, n)
        data = data._replace(weights=_split_weights(data.weights, train_rows, rows))
    elif data.weights.size:
        data = data._replace(weights=_mean_one(data.weights, "the training rows"))
    data = container(data)
    spec = _model_spec(model, d, Y, classes, arguments["fit_intercept"])
    # one target per sample (or per step of a sequence): predict returns no target axis
    single = spec.task != "regression" or np.ndim(y) == (
        2 if getattr(spec, "sequence", False) else 1
    )
    validation = None if rows is None else data
    return Problem(
        spec, data, classes, validation, rows, single, feature_names, unchecked, train_rows
    )


def container(data):
    """``data``, or for a CSR ``X`` the :class:`SparseData` over its arrays (no copy: the
    kernels read the caller's arrays)."""
    if not isinstance(data, Data) or isinstance(data.X, np.ndarray):
        return data
    X, Y, weights = data
    nnz = int(X.indptr[-1])
    # no copy of SciPy's own arrays; a strided array given to the CSR constructor is
    # copied once (Numba would compile every kernel again for a non-contiguous layout)
    values, indices, indptr = (
        v.contiguous(a, a.dtype) for a in (X.data[:nnz], X.indices[:nnz], X.indptr)
    )
    return SparseData(values, indices, indptr, X.shape[1], Y, weights)


def check_sparse_support(problem, optimizer_code):
    """Refuse, with a clear message, what sparse (CSR) rows cannot train on: Newton's
    method (the linear family and networks train on them on every backend)."""
    if not isinstance(problem.data, SparseData):
        return
    if optimizer_code == NEWTON:
        raise ValueError(
            "optimizer='newton' does not take sparse X (its Hessian pass reads dense rows); "
            "use optimizer='lbfgs' or a first-order optimizer"
        )


def _rows(X, y, model, arguments):
    """Samples of the linear models and MLPs: (n, d) features and encoded targets."""
    X, y, feature_names = frames_to_arrays(X, y)  # pandas: arrays and column names
    # early stopping holds rows out of training: their NaN would not show in its loss
    X = v.check_features(X, finite=arguments["early_stopping"])
    kind = model
    if isinstance(model, MLP):
        kind = "linear" if model.task == "regression" else "softmax"
    Y, classes = v.check_targets(y, X.shape[0], kind, X.dtype, arguments["classes"])
    if isinstance(model, MLP) and classes is not None:
        _check_network_labels(classes)
    return X, Y, classes, feature_names


def _sequences(X, y, model, arguments):
    """Sequences of an RNN: (n, T, f) X, encoded targets (per step for output='sequence')
    and the lengths."""
    X = v.check_sequences(X)
    n, T, _ = X.shape
    kind = "linear" if model.task == "regression" else "softmax"
    if model.output == "sequence":
        Y, classes = v.check_sequence_targets(y, n, T, kind, X.dtype, arguments["classes"])
    else:
        Y, classes = v.check_targets(y, n, kind, X.dtype, arguments["classes"])
    if classes is not None:
        _check_network_labels(classes)
    return X, Y, classes, v.check_lengths(arguments.get("lengths"), n, T), None


def _model_spec(model, d, Y, classes, fit_intercept):
    if isinstance(model, (MLP, RNN)):
        return model.spec(d, Y.shape[-1], None if classes is None else len(classes))
    if model == "linear":
        n_outputs = Y.shape[1]
    else:
        n_outputs = 1 if model == "logistic" else len(classes)
    return LinearModelSpec(model, d, n_outputs, bool(fit_intercept))


def initial_state(problem, optimizer, seed, init):
    """Fresh parameters and optimizer state, or those of ``init`` (a warm start).

    Returns
    -------
    State
    """
    # the rows' dtype: Y's for rows in this process (dense or CSR), X's meta for chunks
    data = problem.data
    spec, dtype = problem.spec, data.Y.dtype if hasattr(data, "Y") else data.X.dtype
    params, running = spec.init_params(dtype, seed)
    state = State(
        params, running, optimizer.new_state(spec.n_params, dtype), np.zeros(1, dtype=np.int64),
        stopping.new_stop_state(),
    )  # fmt: skip
    if init is not None:
        _warm_start(init, problem, optimizer, state)
    return state


def _warm_start(init, problem, optimizer, state):
    """Copy parameters (and optimizer state of the same kind) from an earlier FitResult."""
    from ..result import FitResult

    spec, classes = problem.spec, problem.classes
    if not isinstance(init, FitResult):
        raise ValueError(f"init must be a FitResult from fastgd.fit; got {type(init).__name__}")
    if init.model != spec:
        raise ValueError(f"init was fit for {init.model}, which does not match {spec}")
    if (init.classes_ is None) != (classes is None) or (
        classes is not None and not np.array_equal(init.classes_, classes)
    ):
        raise ValueError(f"init was fit on classes {init.classes_}, but y has {classes}")
    state.params[:] = init.params
    if init.running is not None:
        state.running[:] = init.running
    if type(init.optimizer) is type(optimizer) and init.optimizer_state is not None:
        state.opt_state[:] = init.optimizer_state
        state.step_count[0] = init.n_updates


def _mean_one(weights, rows):
    """Sample weights rescaled to mean 1 (the kernels average ``weight * loss`` over rows)."""
    mean = weights.mean(dtype=np.float64)
    if mean == 0.0:
        raise ValueError(f"sample_weight is zero on all of {rows}")
    return (weights / mean).astype(weights.dtype)


def _check_network_labels(classes):
    """A classifier network on float targets that are not whole numbers is a likely mistake."""
    labels = np.asarray(classes)
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError(
            "y holds non-integer float values, but MLP(task='classification') needs class "
            "labels; for a regression network use fastgd.MLP(..., task='regression')"
        )


def _validation_split(n, validation_fraction, seed):
    """Sorted indices of the rows held out for early stopping."""
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, (int, float, np.floating))
        or not 0.0 < validation_fraction < 1.0
    ):
        raise ValueError(f"validation_fraction must be in (0, 1); got {validation_fraction!r}")
    n_validation = int(np.ceil(validation_fraction * n))
    if n_validation >= n:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {n} samples leaves none to train on"
        )
    rng = np.random.default_rng(None if seed is None else [int(seed), 1])
    return np.sort(rng.permutation(n)[:n_validation])


def _complement(rows, n):
    """The sorted int64 indices of ``0..n-1`` not in ``rows`` (an n-entry mask, O(n))."""
    kept = np.ones(n, dtype=bool)
    kept[rows] = False
    return np.flatnonzero(kept).astype(np.int64, copy=False)


def _split_weights(weights, train_rows, validation_rows):
    """Sample weights rescaled to mean 1 over the training rows and, apart, over the
    held-out rows (O(n), in place of two gathered copies of the data)."""
    if not weights.size:
        return weights
    rescaled = np.empty_like(weights)
    rescaled[validation_rows] = _mean_one(weights[validation_rows], "the held-out validation rows")  # fmt: skip
    rescaled[train_rows] = _mean_one(weights[train_rows], "the training rows")
    return rescaled


def _gather(data, rows):
    """The container of ``rows`` of ``data`` (copies; a CSR matrix's rows as CSR)."""
    if isinstance(data, SparseData):
        data = Data(data.X, data.Y, data.weights)
    return type(data)(*(_take(a, rows) for a in data))


def _take(array, rows):
    """``array[rows]``; an empty array (no sample weights) stays as it is."""
    return array if isinstance(array, np.ndarray) and array.size == 0 else array[rows]
