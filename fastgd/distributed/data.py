"""Dask input: structural checks on the driver, validation and conversion in the workers.

Before any training round, the driver checks what Dask knows without computing: row
chunks of known sizes, whole rows in every chunk (one chunk along the columns), a numeric
dtype, and aligns ``y`` and ``sample_weight`` to the row chunks of ``X``. Then one task
per chunk runs the single-machine validation of :mod:`fastgd._validation` on that chunk
(label encoding, weights) and keeps the converted chunk in worker memory; its error names
the argument and the chunk. As on one machine, NaN and inf in ``X`` are found after
training, when they have made the first loss non-finite (:func:`check_finite_after`).
Chunks are never scattered: they keep their lineage, so a chunk lost with a worker is
recomputed from the graph.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _validation as v
from .._pandas import feature_names, frame_dtype
from ..network import MLP
from ..training.problem import Problem, _check_network_labels, _model_spec
from .tasks import chunk_labels, chunk_stats, nonfinite_message, prepare_chunk


class Meta(NamedTuple):
    """Shape and dtype of the whole training matrix (what options and state read)."""

    shape: tuple
    dtype: np.dtype


@dataclass(frozen=True)
class ChunkedData:
    """Training rows as prepared chunks (futures on a cluster, or arrays in this process).

    ``rows`` and ``weight_sums`` are per chunk; ``scales[i] = rows[i] / S`` turns chunk
    ``i``'s mean loss into its share of the mean over all rows (``S``: the sum of all
    sample weights, or the number of rows), and ``weight_scale = n / S`` rescales raw
    weights to mean 1, as the single-machine fit does.
    """

    X: Meta
    chunks: list
    rows: np.ndarray
    weight_sums: np.ndarray
    weighted: bool
    names: tuple  # each chunk as error messages name it ("row chunk 2, rows 1100 to 1599")

    @property
    def scales(self):
        return self.rows / self.weight_sums.sum()

    @property
    def weight_scale(self):
        return float(self.rows.sum() / self.weight_sums.sum())


def prepare_dask_problem(X, y, model, arguments, cluster):
    """Check the Dask input, prepare and persist its chunks; returns a :class:`Problem`
    whose ``data`` is a :class:`ChunkedData`."""
    X, names = _features(X)
    n, d = X.shape
    y = _aligned(y, "y", X)
    weights = arguments["sample_weight"]
    weights = None if weights is None else _aligned(weights, "sample_weight", X, ndim=1)
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    kind = model
    if isinstance(model, MLP):
        kind = "linear" if model.task == "regression" else "softmax"
    labels = _classes(y, kind, arguments["classes"], isinstance(model, MLP))
    data, classes = _persist(X, y, weights, kind, dtype, labels, cluster)
    if data.weight_sums.sum() == 0.0:
        raise ValueError("sample_weight is zero for every sample; nothing would be learned")
    m = 1 if y.ndim == 1 or kind != "linear" else y.shape[1]
    spec = _model_spec(model, d, np.empty((0, m)), classes, arguments["fit_intercept"])
    single = spec.task != "regression" or y.ndim == 1
    return Problem(spec, data, classes, None, None, single, names)


def _features(X):
    """``X`` as a 2-D dask array with whole rows per chunk, and its column names."""
    names = None
    if hasattr(X, "to_dask_array"):  # a dask DataFrame or Series
        frame = X if hasattr(X, "columns") else X.to_frame()
        meta = frame._meta  # the empty pandas frame describing the columns
        names, dtype = feature_names(meta), frame_dtype(meta, "X")
        X = frame.to_dask_array(lengths=True).astype(dtype)
    elif not hasattr(X, "chunks"):
        raise TypeError(f"X must be a dask.array.Array or a dask DataFrame; got {type(X).__name__}")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D dask array of shape (n_samples, n_features); got {X.ndim}-D")  # fmt: skip
    _check_known_rows(X, "X")
    if len(X.chunks[1]) > 1:
        raise ValueError(
            f"X is chunked along its columns (X.chunks[1] = {X.chunks[1]}); every chunk must "
            "hold whole rows: use X.rechunk({1: -1})"
        )
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric (bool, integer or float); got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty: shape {X.shape}; at least one sample and one feature are needed")  # fmt: skip
    return X, names


def _check_known_rows(a, name):
    if any(np.isnan(size) for size in a.chunks[0]):
        raise ValueError(
            f"{name} has unknown chunk sizes (NaN in {name}.chunks[0], as after boolean "
            f"indexing or DataFrame.values); call {name}.compute_chunk_sizes() first, or pass "
            "the dask DataFrame itself"
        )


def _aligned(a, name, X, ndim=2):
    """``a`` (dask or NumPy) as a dask array with the row chunks of ``X``."""
    import dask.array as da

    if hasattr(a, "to_dask_array"):
        a = a.to_dask_array(lengths=True)
    elif not hasattr(a, "chunks"):
        arr = np.asarray(a)
        if arr.ndim >= 1 and arr.shape[0] != X.shape[0]:
            raise ValueError(f"X and {name} have different lengths: X has {X.shape[0]} samples, {name} has {arr.shape[0]}")  # fmt: skip
        a = da.from_array(arr, chunks=(X.chunks[0], *arr.shape[1:])) if arr.ndim else arr
    if a.ndim == 0 or a.ndim > ndim:
        raise ValueError(f"{name} must be {'1-D' if ndim == 1 else '1-D or 2-D'}; got shape {a.shape}")  # fmt: skip
    _check_known_rows(a, name)
    if a.shape[0] != X.shape[0]:
        raise ValueError(f"X and {name} have different lengths: X has {X.shape[0]} samples, {name} has {a.shape[0]}")  # fmt: skip
    if a.chunks[0] != X.chunks[0] or (a.ndim == 2 and len(a.chunks[1]) > 1):
        a = a.rechunk({0: X.chunks[0], **({1: -1} if a.ndim == 2 else {})})
    return a


def _classes(y, kind, classes, network):
    """Classifiers: the given classes (checked), or the task that finds the union of the
    chunks' labels (a ``dask.delayed``, computed with the chunks); None for regression."""
    if kind == "linear":
        return None
    if classes is None:
        import dask

        parts = np.asarray(y.to_delayed(), dtype=object).ravel()
        labels = [dask.delayed(chunk_labels)(part) for part in parts]
        return dask.delayed(label_set, pure=True)(kind, network, *labels)
    return label_set(kind, network, np.asarray(classes).ravel())


def label_set(kind, network, *labels):
    """The sorted distinct labels of all parts, with the single-machine checks on the
    label set (one class, logistic with three, NaN)."""
    classes = np.unique(np.concatenate([np.ravel(part) for part in labels]))
    classes = v.check_targets(classes, len(classes), kind, np.float64)[1]
    if network:
        _check_network_labels(classes)
    return classes


def dask_labels(y):
    """The sorted distinct labels of a Dask array, data frame or series (one round)."""
    import dask

    parts = np.asarray(y.to_delayed(), dtype=object).ravel()
    labels = dask.compute(*[dask.delayed(chunk_labels)(part) for part in parts])
    return np.unique(np.concatenate(labels))


def _persist(X, y, weights, kind, dtype, classes, cluster):
    """Prepared chunks in memory, their rows and weight sums, and the classes: one graph
    (labels, then validation and conversion of each chunk, then its weight sum when there
    are weights) sent at once, whose first error (any chunk's validation, in chunk order)
    is raised before training starts.
    ``classes`` may be a ``dask.delayed`` (the label set found in the chunks)."""
    import dask

    bounds = np.cumsum([0, *X.chunks[0]])
    xs, ys = X.to_delayed().ravel(), y.to_delayed().ravel()
    ws = [None] * len(xs) if weights is None else weights.to_delayed().ravel()
    prepare = dask.delayed(prepare_chunk, pure=True)
    kept = [i for i in range(len(xs)) if bounds[i + 1] > bounds[i]]
    names = tuple(f"row chunk {i}, rows {bounds[i]} to {bounds[i + 1] - 1}" for i in kept)
    prepared = [prepare(xs[i], ys[i], ws[i], kind, dtype, classes, name) for i, name in zip(kept, names, strict=True)]  # fmt: skip
    stats = [] if weights is None else [dask.delayed(chunk_stats, pure=True)(c) for c in prepared]
    chunks, small = cluster.persist(prepared, [*stats, classes])
    classes = small[-1]
    if weights is None:  # rows known from the chunking, each of weight 1: no statistics tasks
        rows = np.diff(bounds)[kept].astype(np.float64)
        stats = np.column_stack([rows, rows])
    else:
        stats = np.array(small[:-1], dtype=np.float64)
    meta = Meta((int(X.shape[0]), int(X.shape[1])), np.dtype(dtype))
    return ChunkedData(meta, chunks, stats[:, 0], stats[:, 1], weights is not None, names), classes  # fmt: skip


def check_finite_after(cluster, data, history, stop_reason):
    """The NaN/inf check of ``X``, deferred to after training as on one machine
    (:func:`fastgd._validation.check_finite_after`): when the run's first loss is not
    finite (or it diverged or was interrupted), one round checks every chunk and raises
    the error of the first bad one in chunk order."""
    if not v.finite_check_due(history, stop_reason):
        return
    messages = cluster.map(nonfinite_message, data.chunks, (), [(name,) for name in data.names])
    bad = [message for message in messages if message is not None]
    if bad:
        raise ValueError(bad[0])
