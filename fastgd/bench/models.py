"""The model families of the benchmark suite: ONE table, :data:`MODELS`.

Every part of the suite (``fastgd bench``, the pytest-benchmark suites in ``benchmarks/``,
the smoke test) iterates over this table, so a new model family is one more entry here:
how fastgd fits it, its task (which decides the data and the loss used in checks), its
learning rate, and the libraries it is compared with (names of
:data:`fastgd.bench.competitors.COMPETITORS`).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import fastgd

TASKS = ("regression", "binary", "multiclass")


@dataclass(frozen=True)
class ModelCase:
    """One model family of the benchmark suite.

    Parameters
    ----------
    name : str
        Its name in tables, JSON and the ``--models`` option.
    task : {"regression", "binary", "multiclass"}
        Decides the synthetic data (:func:`make_data`) and the loss of the checks
        (:func:`training_loss`).
    lr : float
        Learning rate of plain SGD, the same on every side.
    n_classes : int, default 0
        Number of classes of a multiclass task.
    model : str or object, optional
        What ``fastgd.fit`` gets as ``model=`` (default: ``name``), e.g.
        ``fastgd.MLP(hidden=(64,))``; its ``hidden`` and ``activation`` attributes, if
        any, tell the competitors what network to build.
    fit : callable, optional
        Instead of ``model``: ``fit(X, y, **options)`` returning a
        :class:`fastgd.FitResult`-like object (``params``, ``train_time``,
        ``compile_time``, ``predict``, and ``predict_proba`` for classifiers); ``options``
        are ``batch_size``, ``epochs``, ``lr``, ``seed``, ``backend``, ``n_threads``,
        ``shuffle``.
    competitors : tuple of str, default ()
        Other libraries to time against, keys of
        :data:`fastgd.bench.competitors.COMPETITORS` (each skips itself when its library
        is not installed or the batch size does not apply).
    max_rows : int, optional
        Train on at most this many rows, whatever the suite's ``rows`` (a model whose
        updates cost much more per sample keeps the suite's run time in bounds; the
        records give the rows actually used).
    params_rtol : dict, optional
        Tolerances of the parameter check by dtype name, in place of
        :data:`fastgd.bench.suite.PARAMS_RTOL` for this model (give the measured
        disagreement they cover in a comment).
    nnz_per_row : int, default 0
        Sparse data: a ``scipy.sparse`` CSR matrix with this many stored entries per row
        (random columns); 0 for dense data.
    features : int, optional
        Train on this many features, whatever the suite's ``features`` (a sparse family
        needs many more columns than non-zeros per row).
    """

    name: str
    task: str
    lr: float
    n_classes: int = 0
    model: object = field(default=None, compare=False)
    fit: Callable | None = field(default=None, compare=False)
    competitors: tuple = ()
    max_rows: int | None = None
    params_rtol: dict = field(default_factory=dict, compare=False)
    nnz_per_row: int = 0
    features: int | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {self.task!r}")
        if self.task == "multiclass" and self.n_classes < 2:
            raise ValueError("a multiclass task needs n_classes >= 2")

    @property
    def hidden(self):
        """Hidden layer widths (``model.hidden``); empty for the linear family."""
        return tuple(getattr(self.model, "hidden", ()) or ())

    @property
    def activation(self):
        """Activation of the hidden layers (``model.activation``, default ``"relu"``)."""
        return getattr(self.model, "activation", "relu")

    @property
    def linear(self):
        """True for the linear family: flat parameters ``[W (d, k) row-major, b (k)]``."""
        return not self.hidden

    def n_rows(self, rows):
        """Rows this model trains on when the suite's data has ``rows`` (``max_rows`` caps)."""
        return rows if self.max_rows is None else min(rows, self.max_rows)

    def n_outputs(self):
        """Decision values per sample: 1, or the number of classes of a multiclass task."""
        return self.n_classes if self.task == "multiclass" else 1

    def run_fastgd(self, X, y, **options):
        """Fit with fastgd: ``self.fit`` if given, else ``fastgd.fit(X, y, model=...)``."""
        if self.fit is not None:
            return self.fit(X, y, **options)
        return fastgd.fit(X, y, model=self.name if self.model is None else self.model, **options)


# THE table of model families: a new family is one more entry, nothing else in the suite
# needs to change.
#
# The MLP (100 -> 64 ReLU -> 10 softmax at the standard size):
# - lr 0.01, not 0.05: at 0.05 per-sample SGD on 100 features is unstable (training loss
#   2.34 after 2 epochs, above the 2.30 of a constant guess) and rounding differences grow
#   chaotically (float32 parameters of the backends 0.1 to 0.3 apart); at 0.01 it learns
#   (loss 0.74, 77% accuracy) and stays reproducible.
# - max_rows 2000: an update at batch size 1 costs 0.3 to 0.8 ms in NumPy, PyTorch and
#   scikit-learn on a shared 2-core 2.5 GHz Xeon VM (Python overhead per step, a few times
#   less on a laptop); there the MLP part of the standard suite took 78 s at 2,000 rows
#   (most of it batch size 1), and 10,000 rows would take five times as long.
# - float32 params_rtol 1e-2: a ReLU's derivative jumps at 0, so when a sample's
#   pre-activation is within float32 rounding of 0 (1.7e-7 measured) one implementation
#   passes that sample's gradient through the unit and another does not, and the unit's
#   weights then differ by one whole update. Measured (max |p - p_ref| / max |p_ref|,
#   batch size 1, 2 epochs, 24 data seeds at 2000 x 20 and 2000 x 100): 4e-7 to 8e-7
#   without such a flip, 1.0e-3 with one (2000 x 20, seed 0: the --quick default); batch
#   sizes 32, 256 and full: below 2e-7. 1e-2 allows a few flips, far below the O(1) of a
#   wrong update. float64 keeps the default 1e-8 (measured at most 2e-15).
MODELS = {
    "linear": ModelCase("linear", "regression", lr=1e-3, competitors=("sklearn-sgd", "torch")),
    "logistic": ModelCase("logistic", "binary", lr=1e-2, competitors=("sklearn-sgd", "torch")),
    "softmax": ModelCase(
        "softmax", "multiclass", lr=1e-2, n_classes=10, competitors=("sklearn-sgd", "torch")
    ),
    # Sparse CSR data (bag-of-words-like): 50 non-zeros per row among 100,000 features,
    # trained by the same logistic regression; compared with the NumPy reference
    # (SciPy's sparse products). scikit-learn's SGDClassifier is left out here: on sparse
    # input it decays its intercept updates by 0.01, so its parameters are not fastgd's
    # (benchmarks/sparse_sgd.py compares it without an intercept, at full size). max_rows:
    # the reference's per-sample steps cost ~0.1 ms each (a SciPy row selection and a
    # dense update of 100,000 weights).
    "sparse-logistic": ModelCase(
        "sparse-logistic",
        "binary",
        lr=1e-2,
        model="logistic",
        nnz_per_row=50,
        features=100_000,
        max_rows=10_000,
    ),
    "mlp": ModelCase(
        "mlp",
        "multiclass",
        lr=1e-2,
        n_classes=10,
        model=fastgd.MLP(hidden=(64,)),
        competitors=("sklearn-mlp", "torch"),
        max_rows=2000,
        params_rtol={"float32": 1e-2},
    ),
}

CHUNK_ROWS = 8192


def make_data(case, n, d, dtype=np.float64, seed=0):
    """Synthetic data for ``case``: standard normal features and a target of its task.

    Generated chunk by chunk into the final array, so making the data never holds more
    than the data plus one chunk (the memory measurement relies on it). The float32 data
    is the float64 data rounded.

    Parameters
    ----------
    case : ModelCase
    n, d : int
        Rows and features.
    dtype : numpy dtype, default float64
    seed : int, default 0

    Returns
    -------
    X : ndarray of shape (n, d), C-contiguous, ``dtype``
    y : ndarray of shape (n,)
        ``dtype`` targets (regression), or integer class labels ``0 .. k-1``.
    """
    d = case.features or d
    if case.nnz_per_row:
        return _sparse_data(case, n, d, dtype, seed)
    rng = np.random.default_rng(seed)
    k = case.n_outputs()
    W = rng.standard_normal((d, k)) / np.sqrt(d)
    if case.task == "multiclass":
        W *= 3.0  # classes separated enough that accuracy means something
    X = np.empty((n, d), dtype=dtype)
    y = np.empty(n, dtype=dtype if case.task == "regression" else np.int64)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        block = rng.standard_normal((stop - start, d))
        X[start:stop] = block
        Z = block @ W
        if case.task == "regression":
            y[start:stop] = Z[:, 0] + 0.5 + 0.1 * rng.standard_normal(stop - start)
        elif case.task == "binary":
            y[start:stop] = Z[:, 0] + 0.3 * rng.standard_normal(stop - start) > 0
        else:
            y[start:stop] = np.argmax(Z + rng.gumbel(size=Z.shape), axis=1)
    return X, y


def _sparse_data(case, n, d, dtype, seed):
    """CSR ``(n, d)`` with ``case.nnz_per_row`` N(0, 1) entries per row in random
    columns (int32 indices), and a binary target from a random linear model."""
    from scipy import sparse

    if case.task != "binary":
        raise ValueError("the sparse benchmark data is binary classification")
    rng = np.random.default_rng(seed)
    per_row = min(case.nnz_per_row, d)
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int64).astype(np.int32)
    indices = rng.integers(0, d, n * per_row, dtype=np.int32)
    values = rng.standard_normal(n * per_row)
    X = sparse.csr_matrix((values, indices, indptr), shape=(n, d))
    w = rng.standard_normal(d) / np.sqrt(per_row)
    y = ((X @ w) + 0.3 * rng.standard_normal(n) > 0).astype(np.int64)
    return X.astype(dtype), y  # float32: the float64 data rounded


def data_nbytes(X):
    """Bytes of a dense array or of a sparse matrix's arrays."""
    if hasattr(X, "nbytes"):
        return X.nbytes
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


def label_indices(y):
    """Class labels as indices ``0 .. k-1`` into the sorted unique labels.

    Parameters
    ----------
    y : array-like of shape (n,)

    Returns
    -------
    ndarray of shape (n,), int
    """
    return np.unique(y, return_inverse=True)[1].ravel()


def training_loss(case, y, outputs):
    """Mean training loss of a model's outputs, the same formula for every library.

    Parameters
    ----------
    case : ModelCase
    y : ndarray of shape (n,)
        Targets or labels.
    outputs : ndarray
        Predictions (regression) or class probabilities of shape (n, n_classes)
        (columns in sorted label order).

    Returns
    -------
    float
        Mean squared error, or the mean negative log-likelihood of the true class.
    """
    if case.task == "regression":
        return float(np.mean((np.asarray(outputs, dtype=np.float64).ravel() - y) ** 2))
    P = np.asarray(outputs, dtype=np.float64)
    p_true = P[np.arange(len(y)), label_indices(y)]
    return float(-np.mean(np.log(np.clip(p_true, 1e-300, None))))


def accuracy(y, predicted):
    """Share of the labels predicted right.

    Parameters
    ----------
    y, predicted : array-like of shape (n,)

    Returns
    -------
    float
    """
    return float(np.mean(np.asarray(predicted) == y))


def fastgd_outputs(case, result, X):
    """Predictions (regression) or class probabilities of a fastgd result on ``X``.

    Parameters
    ----------
    case : ModelCase
    result : FitResult
    X : ndarray of shape (n, d)

    Returns
    -------
    ndarray of shape (n,) or (n, n_classes)
    """
    return result.predict(X) if case.task == "regression" else result.predict_proba(X)
