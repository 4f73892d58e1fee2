"""The only place that inspects user input: shapes, dtypes, finiteness, labels, numbers.

Arrays are converted once to C-contiguous float32/float64 (float32 stays float32, other
numeric types become float64). Arrays that already fit are passed through without a copy
(read-only ones included); the caller's arrays are never written to. SciPy sparse
matrices are checked by :func:`check_sparse` and stay sparse.
"""

import numbers
import operator
import sys

import numpy as np


def check_features(X, name="X", n_features=None, allow_1d=True, finite=True):
    """Validate a feature matrix and return it as a C-contiguous float array.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        A 1-D array is read as one feature.
    name : str
        Name used in error messages.
    n_features : int, optional
        If given, the required number of columns.
    allow_1d : bool
        Whether a 1-D array is accepted as a single feature.
    finite : bool, default True
        Check that no entry is NaN or infinite. ``fit`` passes False and leaves the check
        to training (:func:`check_finite_after`): a dense pass over X before the first
        epoch would cost most of an epoch's time.

    Returns
    -------
    ndarray of shape (n_samples, n_features), float32 or float64, C-contiguous

    Raises
    ------
    ValueError
        For non-numeric, empty, 0-D or >2-D input, NaN or inf, or a wrong number of
        columns.

    A ``scipy.sparse`` matrix or array is checked by :func:`check_sparse` and returned as
    CSR (never densified).
    """
    if is_scipy_sparse(X):
        return check_sparse(X, name, n_features)
    arr = as_array(X, name)
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be numeric (bool, integer or float); got an array of dtype {arr.dtype}"
        )
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features)"
            f"{' or a 1-D array of one feature' if allow_1d else ''}; got {arr.ndim}-D shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} is empty: shape {arr.shape}; at least one sample and one feature are needed"
        )
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    arr = contiguous(arr, dtype)
    if finite:
        _check_finite(arr, name)
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but the model was fit with {n_features}"
        )
    return arr


def as_array(value, name):
    """``np.asarray(value)``, with a ValueError naming the argument when NumPy cannot
    read it (ragged nested lists, objects whose ``__array__`` fails)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{name} could not be read as an array: {exc}") from None


def contiguous(arr, dtype):
    """``arr`` as a C-contiguous, aligned array of ``dtype``: the array itself when it is
    one already (read-only ones too), else a copy.

    The compiled kernels may assume that every element sits at a multiple of its size
    (Numba types every array as aligned); an unaligned view (at an odd byte offset of a
    buffer) is rare input, and copying it once keeps them on safe ground.
    """
    return np.require(arr, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED", "ENSUREARRAY"])


def is_scipy_sparse(X):
    """True for a ``scipy.sparse`` matrix or array (without importing SciPy: if
    ``scipy.sparse`` was never imported, ``X`` cannot be one)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def check_sparse(X, name="X", n_features=None):
    """Validate a ``scipy.sparse`` matrix or array; returns it in CSR format.

    - A CSR matrix or array (``csr_matrix``, ``csr_array``) of float32 or float64 is
      returned as it is: no copy, its dtype kept, int32 and int64 indices alike.
    - Other formats (CSC, COO, BSR, LIL, DOK, DIA) are converted once with ``.tocsr()``,
      a copy costing O(nnz) time and memory (COO duplicates are summed by SciPy then);
      integer or bool values are converted once to float64 (a copy of the values).
    - Unsorted column indices and repeated columns within a row are accepted as they
      are: the kernels add repeated entries, as SciPy's products do, so a matrix trains
      as the dense matrix it stands for. Nothing is sorted or summed in place: the
      caller's matrix is never modified, and it is never densified.
    - The structure is checked once, vectorized, in O(n + nnz): ``indptr`` starts at 0,
      never decreases and ends within the stored entries, and every column index lies in
      ``[0, n_features)`` (the compiled kernels then index without checks); NaN or inf
      among the stored values is rejected.

    Parameters
    ----------
    X : scipy.sparse matrix or array of shape (n_samples, n_features)
    name : str
        Name used in error messages.
    n_features : int, optional
        If given, the required number of columns.

    Returns
    -------
    scipy.sparse.csr_matrix or csr_array
    """
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D sparse matrix; got {X.ndim}-D shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be numeric (bool, integer or float); got a sparse matrix of dtype "
            f"{X.dtype}"
        )
    if X.format != "csr":
        X = X.tocsr()
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    if n == 0 or d == 0:
        raise ValueError(
            f"{name} is empty: shape {X.shape}; at least one sample and one feature are needed"
        )
    _check_csr_structure(X, name)
    nnz = int(X.indptr[-1])
    _check_finite(X.data[:nnz], name)
    if n_features is not None and d != n_features:
        raise ValueError(f"{name} has {d} features, but the model was fit with {n_features}")
    return X


def _check_csr_structure(X, name):
    """Reject a CSR matrix whose arrays the kernels could not index safely."""
    indptr, indices = X.indptr, X.indices
    if indptr.dtype not in (np.int32, np.int64) or indices.dtype != indptr.dtype:
        raise ValueError(
            f"{name}'s CSR index arrays must both be int32 or both int64; got indptr "
            f"{indptr.dtype} and indices {indices.dtype}"
        )
    if indptr.ndim != 1 or indptr.shape[0] != X.shape[0] + 1 or indptr[0] != 0:
        raise ValueError(
            f"{name} is not a valid CSR matrix: indptr must start at 0 with n + 1 entries"
        )
    nnz = int(indptr[-1])
    if nnz > min(indices.shape[0], X.data.shape[0]) or np.any(indptr[1:] < indptr[:-1]):
        raise ValueError(
            f"{name} is not a valid CSR matrix: indptr must be nondecreasing and end within "
            f"the {min(indices.shape[0], X.data.shape[0])} stored entries"
        )
    if nnz and (indices[:nnz].min() < 0 or indices[:nnz].max() >= X.shape[1]):
        raise ValueError(
            f"{name} is not a valid CSR matrix: column indices must lie in [0, {X.shape[1]})"
        )


def check_sequences(X, name="X", n_features=None, n_steps=None):
    """Validate sequences and return them as a C-contiguous float array (n, T, f).

    A 2-D array (n, T) is one feature per step. ``n_features`` and ``n_steps``, if given,
    are required (a prediction must have the features of the fit; the steps may differ
    unless ``n_steps`` is given).
    """
    arr = as_array(X, name)
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be numeric (bool, integer or float); got an array of dtype {arr.dtype}"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be a 3-D array of shape (n_samples, n_steps, n_features) or a 2-D "
            f"array (n_samples, n_steps) of one feature per step; got {arr.ndim}-D shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    arr = contiguous(arr, dtype)
    _check_finite(arr, name)
    if n_features is not None and arr.shape[2] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[2]} features per step, but the model was fit with {n_features}"
        )
    if n_steps is not None and arr.shape[1] != n_steps:
        raise ValueError(f"{name} has {arr.shape[1]} steps; expected {n_steps}")
    return arr


def check_lengths(lengths, n_samples, n_steps):
    """Validate sequence lengths: int64 (n,), every value in [1, n_steps]; None: all full."""
    if lengths is None:
        return np.full(n_samples, n_steps, dtype=np.int64)
    arr = as_array(lengths, "lengths")
    if arr.dtype.kind not in "iu" and not (
        arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    ):
        raise ValueError(f"lengths must be whole numbers; got dtype {arr.dtype}")
    if arr.shape != (n_samples,):
        raise ValueError(f"lengths must have shape ({n_samples},); got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > n_steps):
        raise ValueError(
            f"lengths must be in [1, {n_steps}] (the steps of X); got values from "
            f"{arr.min()} to {arr.max()}"
        )
    return contiguous(arr, np.int64)


def check_sequence_targets(y, n_samples, n_steps, kind, dtype, classes=None):
    """Targets of ``output="sequence"``: (n, T) or (n, T, m) -> ``Y`` (n, T, m), classes.

    ``kind`` as for :func:`check_targets`; every step needs a valid target (padded steps
    are not read, but are validated: pad with any valid value).
    """
    arr = as_array(y, "y")
    if (
        arr.ndim not in (2, 3)
        or arr.shape[:2] != (n_samples, n_steps)
        or (arr.ndim == 3 and kind != "linear" and arr.shape[2] != 1)
    ):
        raise ValueError(
            f"y of output='sequence' must have shape ({n_samples}, {n_steps})"
            f"{' or (n_samples, n_steps, n_targets)' if kind == 'linear' else ''}; got {arr.shape}"
        )
    flat = arr.reshape(n_samples * n_steps, -1) if kind == "linear" else arr.reshape(-1)
    Y, classes = check_targets(flat, n_samples * n_steps, kind, dtype, classes)
    return Y.reshape(n_samples, n_steps, -1), classes


# rows per block of the exact finiteness check and the NaN/inf count: about 64 K entries
# (512 KB of float64), so neither allocates an array-sized boolean mask
_BLOCK_ENTRIES = 1 << 16


def _row_blocks(arr):
    """Views of ``arr`` (any shape) as consecutive blocks of at most ~64 K entries."""
    if arr.size == 0:
        return
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    step = max(1, _BLOCK_ENTRIES // max(1, flat.shape[1]))
    for i in range(0, flat.shape[0], step):
        yield flat[i : i + step]


def _all_finite(arr):
    """True if no entry is NaN or infinite, without an array-sized temporary.

    A sum is NaN or infinite when any entry is (and propagates NaN), so one reducing pass
    answers for the common, clean case; only a non-finite sum (possibly an overflow of
    large finite values) is checked again exactly, a block of rows at a time.
    """
    if arr.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(arr, dtype=np.float64)):
            return True
    return all(np.isfinite(block).all() for block in _row_blocks(arr))


def _count_nonfinite(arr):
    """``(NaN count, infinite count)``, counted a block of rows at a time."""
    n_nan = n_inf = 0
    for block in _row_blocks(arr):
        n_nan += int(np.count_nonzero(np.isnan(block)))
        n_inf += int(np.count_nonzero(np.isinf(block)))
    return n_nan, n_inf


def check_finite_after(X, history, stop_reason, name="X"):
    """The finiteness check of ``X`` deferred to after training.

    A NaN or an infinity in ``X`` makes the loss of the first epoch (or the first
    full-batch evaluation) non-finite, since every row's loss enters it: training then
    stops as diverged. So only a run that did not complete a finite epoch (diverged,
    interrupted, or none) pays for the exact check here, which raises the same
    ``ValueError`` as the check before training would have.

    Parameters
    ----------
    X : ndarray
        The training rows as validated with ``finite=False``.
    history : ndarray
        The loss of each completed epoch (iteration, for the full-batch solvers); empty
        when none completed.
    stop_reason : str
    name : str, default "X"
    """
    if finite_check_due(history, stop_reason):
        _check_finite(X, name)


def finite_check_due(history, stop_reason):
    """Whether a run leaves the deferred NaN/inf check of X to do (see
    :func:`check_finite_after`): it diverged, was interrupted or has no finite first loss.
    """
    return stop_reason in ("diverged", "interrupted") or not (history.size and np.isfinite(history[0]))  # fmt: skip


def _check_finite(arr, name):
    if not _all_finite(arr):
        n_nan, n_inf = _count_nonfinite(arr)
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite values; remove or impute them"
        )


def check_targets(y, n_samples, model_name, dtype, classes=None):
    """Validate targets and encode them for the kernels.

    Parameters
    ----------
    y : array-like
        Regression targets of shape (n,) or (n, t) for ``"linear"``; labels of shape (n,)
        (any values, numeric or not) for ``"logistic"`` and ``"softmax"``.
    n_samples : int
        Number of rows of X.
    model_name : str
        The model family.
    dtype : numpy dtype
        Float dtype of X; encoded targets use it too.
    classes : array-like, optional
        Classifiers: every label the model has outputs for (y may hold only some of them,
        as a chunk of ``partial_fit`` does); default: the labels found in y.

    Returns
    -------
    Y : ndarray of shape (n, m), C-contiguous, ``dtype``
        Regression targets (m = t) or class indices (m = 1).
    classes : ndarray or None
        The sorted distinct labels for classifiers (index ``i`` encodes ``classes[i]``).
    """
    arr = as_array(y, "y")
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(
            f"y must be 1-D (or 2-D for several regression targets); got shape {arr.shape}"
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"X and y have different lengths: X has {n_samples} samples, y has {arr.shape[0]}"
        )
    if model_name == "linear":
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"y must be numeric for a regression model; got dtype {arr.dtype}")
        if arr.ndim == 2 and arr.shape[1] == 0:
            raise ValueError("y has no target columns")
        Y = contiguous(arr.reshape(n_samples, -1), dtype)
        _check_finite(Y, "y")
        return Y, None
    if arr.ndim == 2:
        if arr.shape[1] != 1:
            raise ValueError(
                f"y for {model_name!r} must be 1-D class labels; got shape {arr.shape}"
            )
        arr = arr.ravel()
    if arr.dtype.kind == "f":
        _check_finite(arr, "y")
    elif arr.dtype.kind == "O" and any(v is None or (isinstance(v, float) and v != v) for v in arr):
        raise ValueError("y contains missing labels (None or NaN)")
    if classes is None:
        classes, codes = _encode_labels(arr, dtype)
    else:
        classes, codes = _encode_with(arr, classes, dtype)
    if len(classes) < 2:
        raise ValueError(
            f"y has a single class ({classes[0]!r}); a classifier needs at least two classes"
        )
    if model_name == "logistic" and len(classes) > 2:
        raise ValueError(
            f"model='logistic' is binary but y has {len(classes)} classes; use model='softmax'"
        )
    return np.ascontiguousarray(codes.reshape(n_samples, 1), dtype=dtype), classes


def _encode_labels(labels, dtype=np.intp):
    """Sorted distinct labels and each label's index among them (as ``dtype``).

    ``np.unique(..., return_inverse=True)`` holds about four index arrays of n entries at
    once; the distinct labels and an encoding against them (:func:`_label_codes`) hold
    two.
    """
    try:
        classes = _distinct_labels(labels)
        return classes, _label_codes(labels, classes, dtype, check=False)[0]
    except TypeError as exc:
        raise ValueError(
            f"the labels in y cannot be sorted ({exc}); use labels of one type"
        ) from exc


def _encode_with(labels, classes, dtype=np.intp):
    """Indices of ``labels`` (as ``dtype``) among the given ``classes`` (sorted and made
    distinct here)."""
    classes = as_array(classes, "classes").ravel()
    if classes.size == 0:
        raise ValueError("classes is empty; give every class label the model should predict")
    classes, _ = _encode_labels(classes)
    try:
        codes, found = _label_codes(labels, classes, dtype)
    except TypeError:  # labels and classes of types that do not compare (str and int)
        codes, found = None, np.zeros(len(labels), dtype=bool)
    if not np.all(found):
        unknown = _unique_text(labels[~found])
        raise ValueError(f"y has labels {unknown} that are not in classes {classes.tolist()}")
    return classes, codes


# Integer labels spanning fewer values than this are counted and looked up in a table
# (np.bincount, one pass) instead of sorted (np.unique) and searched (np.searchsorted):
# measured on 1,000,000 labels of 10 classes, 3.4 against 24 ms and about 4 against 18
# ms. Numeric labels of at most SMALL_CLASS_COUNT classes are encoded by comparisons
# with each class: 1.7 against 8.5 ms for 1,000,000 binary float labels.
TABLE_SPAN = 1 << 16
SMALL_CLASS_COUNT = 8


def _integer_span(labels):
    """``(min, max)`` of integer labels whose span suits a table, else None."""
    if labels.dtype.kind not in "iu" or labels.size == 0:
        return None
    low, high = int(labels.min()), int(labels.max())
    inside = -(1 << 62) <= low and high < 1 << 62  # offsets computed in int64
    return (low, high) if inside and high - low < TABLE_SPAN else None


def _distinct_labels(labels):
    """The sorted distinct labels (``np.unique``), in the labels' dtype."""
    span = _integer_span(labels)
    if span is None:
        return np.unique(labels)
    counts = np.bincount(labels.astype(np.int64) - span[0], minlength=1)
    return (np.flatnonzero(counts) + span[0]).astype(labels.dtype)


def _label_codes(labels, classes, dtype, check=True):
    """Each label's index among the sorted distinct ``classes`` (as ``dtype``: the
    kernels' encoded targets need no conversion) and, with ``check``, whether it is one
    of them (else None); the indices of ``np.searchsorted(classes, labels)`` where
    found."""
    span = _integer_span(labels)
    if span is not None and classes.dtype.kind in "iu":
        low, high = min(span[0], int(classes[0])), max(span[1], int(classes[-1]))
        if high - low < TABLE_SPAN:
            table = np.full(high - low + 1, -1, dtype=dtype)
            table[classes.astype(np.int64) - low] = np.arange(len(classes))
            codes = table[labels.astype(np.int64) - low]
            return codes, codes >= 0 if check else None
    if labels.dtype.kind in "iuf" and classes.dtype.kind in "iuf" and len(classes) <= SMALL_CLASS_COUNT:  # fmt: skip
        codes = np.zeros(labels.shape, dtype=dtype)
        for c in classes[1:]:
            codes += labels >= c  # the classes below the label (and the label's own)
        found = np.isin(labels, classes) if check else None
        return codes, found
    codes = np.searchsorted(classes, labels)
    found = (codes < len(classes)) & (classes[np.minimum(codes, len(classes) - 1)] == labels)
    return codes.astype(dtype, copy=False), found if check else None


def _unique_text(labels):
    """The distinct labels as a list (as text if they cannot be sorted)."""
    try:
        return np.unique(labels).tolist()
    except TypeError:
        return sorted({repr(v) for v in labels.tolist()})


def check_positive_int(value, name, allow_none=False):
    """Return ``value`` as an int if it is an integer >= 1 (bools are refused)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    return value


def check_positive_float(value, name):
    """Return ``value`` as a float if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number; got {value}")
    return value


def check_number(value, name, low=None, high=None, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a finite number within the given bounds.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``; the error names the
    argument and the bound it broke.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}; got {value}")
    return value


def check_tol(tol):
    """Return the tolerance as a float; ``None`` disables the rule (``-inf``)."""
    if tol is None:
        return -np.inf
    if (
        isinstance(tol, bool)
        or not isinstance(tol, numbers.Real)
        or not np.isfinite(tol)
        or tol < 0
    ):
        raise ValueError(f"tol must be None or a finite number >= 0; got {tol!r}")
    return float(tol)


def check_choice(value, name, choices):
    """Raise a ValueError naming the options unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_sample_weight(sample_weight, n_samples, dtype):
    """Validate per-sample weights; returns them as a C-contiguous ``dtype`` array (a copy).

    Weights must be finite and non-negative with a positive sum; the caller rescales them.
    ``None`` returns an empty array, the kernels' "all weights are 1".
    """
    if sample_weight is None:
        return np.empty(0, dtype=dtype)
    arr = as_array(sample_weight, "sample_weight")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must be numeric; got an array of dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must be 1-D with one weight per sample ({n_samples}); "
            f"got shape {arr.shape}"
        )
    _check_finite(arr, "sample_weight")
    if (arr < 0).any():
        raise ValueError(
            f"sample_weight must be >= 0; it has {int((arr < 0).sum())} negative values"
        )
    if not arr.any():
        raise ValueError("sample_weight is zero for every sample; nothing would be learned")
    # Only the ratios of the weights matter (they are rescaled to mean 1 afterwards), so
    # they are first scaled by a power of two (exact: the ratios, the mean and the result
    # keep every bit) that brings the largest into [0.5, 1): then no finite weight
    # overflows float32, and the mean of the weights cannot overflow either.
    weights = np.asarray(arr, dtype=np.float64)
    _, exponent = np.frexp(weights.max())
    return np.ascontiguousarray(np.ldexp(weights, -int(exponent)), dtype=dtype)


PENALTIES = (None, "l2", "l1", "elasticnet")


def check_penalty(penalty, alpha, l1_ratio):
    """Strengths ``(l1, l2)`` of the penalty ``alpha * (l1_ratio |w|_1 + (1 - l1_ratio) / 2 |w|^2)``.

    ``"l2"`` is ``l1_ratio = 0``, ``"l1"`` is ``l1_ratio = 1``; ``None`` is no penalty.
    """
    if penalty not in PENALTIES:
        raise ValueError(
            f"penalty must be one of {', '.join(map(repr, PENALTIES))}; got {penalty!r}"
        )
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not (np.isfinite(alpha) and alpha >= 0)
    ):
        raise ValueError(f"alpha must be a finite number >= 0; got {alpha!r}")
    if (
        isinstance(l1_ratio, bool)
        or not isinstance(l1_ratio, numbers.Real)
        or not (0.0 <= l1_ratio <= 1.0)
    ):
        raise ValueError(f"l1_ratio must be a number in [0, 1]; got {l1_ratio!r}")
    ratio = {None: 0.0, "l2": 0.0, "l1": 1.0, "elasticnet": float(l1_ratio)}[penalty]
    alpha = 0.0 if penalty is None else float(alpha)
    return alpha * ratio, alpha * (1.0 - ratio)
