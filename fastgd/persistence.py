"""Save and load models without pickle: ``fastgd.save(model, path)``, ``fastgd.load(path)``.

A file is an ``.npz`` archive of plain arrays (parameters, optimizer state, histories,
classes) and one JSON document, ``metadata``: the format version, the fastgd version, the
model spec, the optimizer and its hyperparameters, the scalar fields of the
:class:`~fastgd.FitResult` and, for an estimator, its class and constructor parameters.
A SHA-256 checksum over the JSON and every array is stored beside them.

:func:`load` reads the archive with ``allow_pickle=False`` and rebuilds objects only from
a fixed list of fastgd classes, so a file cannot run code. A truncated, modified or
inconsistent file, or one from a newer format version, raises a ``ValueError``.
"""

import dataclasses
import hashlib
import inspect
import json
import numbers
import os
import zipfile
import zlib

import numpy as np

from . import optim, schedules
from ._validation import check_positive_int
from .network import NetworkSpec
from .recurrent import RecurrentSpec
from .result import FitResult
from .specs.models import LinearModelSpec

FORMAT = "fastgd-model"
FORMAT_VERSION = 1
ESTIMATORS = ("LinearRegressor", "LinearClassifier", "MLPRegressor", "MLPClassifier")
_SPECS = {"linear": LinearModelSpec, "network": NetworkSpec, "recurrent": RecurrentSpec}
_OPTIMIZERS = {cls.__name__: cls for cls in optim.OPTIMIZERS.values()}
_SCHEDULES = {
    name: cls
    for name, cls in vars(schedules).items()
    if isinstance(cls, type) and issubclass(cls, schedules.LRSchedule)
}
# FitResult fields stored in the JSON as objects of their own
_SPECIAL = ("model", "optimizer")


def _version():
    from . import __version__

    return __version__


def spec_to_dict(spec):
    """A JSON-ready description of a model spec (``FitResult.model``).

    Parameters
    ----------
    spec : LinearModelSpec or NetworkSpec

    Returns
    -------
    dict
        ``{"type": "linear" | "network", "fields": {...}}`` with tuples as lists.
    """
    kind = next((k for k, cls in _SPECS.items() if type(spec) is cls), None)
    if kind is None:
        raise ValueError(f"cannot save a model of type {type(spec).__name__}")
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return {"type": kind, "fields": _jsonable(fields, "model")}


def spec_from_dict(data):
    """The model spec described by :func:`spec_to_dict`'s output.

    Parameters
    ----------
    data : dict

    Returns
    -------
    LinearModelSpec or NetworkSpec
    """
    cls = _SPECS[data["type"]]
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data["fields"].items()}
    return cls(**fields)


def _jsonable(value, where):
    """``value`` with tuples as lists and NumPy scalars as Python ones; objects refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (optim.Optimizer, schedules.LRSchedule)):
        return _object_to_dict(value, where)
    raise ValueError(
        f"{where} holds a {type(value).__name__}, which cannot be saved without pickle"
    )


def _object_to_dict(obj, where):
    """An optimizer or schedule as ``{"class": name, "args": constructor arguments}``."""
    accepted = inspect.signature(type(obj).__init__).parameters
    args = {k: v for k, v in vars(obj).items() if k in accepted}
    data = {"class": type(obj).__name__, "args": _jsonable(args, where)}
    if _object_from_dict(data) != obj:
        raise ValueError(f"{where}={obj!r} cannot be rebuilt from its attributes, so not saved")
    return data


def _object_from_dict(data):
    registry = _OPTIMIZERS if data["class"] in _OPTIMIZERS else _SCHEDULES
    args = {k: _decode(v) for k, v in data["args"].items()}
    return registry[data["class"]](**args)


def _decode(value):
    """Inverse of :func:`_jsonable` for constructor arguments (objects rebuilt)."""
    if isinstance(value, dict) and set(value) == {"class", "args"}:
        return _object_from_dict(value)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def _array_for_file(name, arr):
    """An array the file can hold without pickle (strings in place of str objects)."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "O":
        return arr
    if all(isinstance(v, str) for v in arr.ravel()):
        return arr.astype(str)
    kinds = sorted({type(v).__name__ for v in arr.ravel()})
    raise ValueError(f"{name} holds Python objects ({', '.join(kinds)}) and cannot be saved without pickle")  # fmt: skip


def _result_parts(result):
    """Arrays and JSON fields of a FitResult."""
    arrays, meta, object_arrays = {}, {}, []
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if field.name in _SPECIAL:
            continue
        if isinstance(value, np.ndarray):
            arrays[f"result.{field.name}"] = _array_for_file(field.name, value)
            if value.dtype.kind == "O":
                object_arrays.append(field.name)
        else:
            meta[field.name] = _jsonable(value, field.name)
    meta = {
        "fields": meta,
        "object_arrays": object_arrays,
        "model": spec_to_dict(result.model),
        "optimizer": None if result.optimizer is None else _object_to_dict(result.optimizer, "optimizer"),
    }  # fmt: skip
    return arrays, meta


def _checksum(metadata, arrays):
    digest = hashlib.sha256(metadata.encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def save(model, path):
    """Write a fitted model to ``path`` (an ``.npz`` archive; no pickle).

    Parameters
    ----------
    model : FitResult or a fitted fastgd estimator
        What :func:`fastgd.fit` returned, or a fitted ``LinearRegressor``,
        ``LinearClassifier``, ``MLPRegressor`` or ``MLPClassifier``.
    path : str or os.PathLike
        The file to write; it is written as named (no suffix is added).

    Raises
    ------
    ValueError
        If the model is not fitted, or holds something only pickle could store (a
        ``callback``, a ``random_state`` generator, labels that are Python objects).
    """
    if isinstance(model, FitResult):
        result, estimator = model, None
    elif type(model).__name__ in ESTIMATORS and type(model).__module__ == "fastgd.estimators":
        if not hasattr(model, "result_"):
            raise ValueError(f"this {type(model).__name__} is not fitted yet; call fit first")
        result, estimator = model.result_, model
    else:
        raise ValueError(f"model must be a FitResult or a fastgd estimator; got {type(model).__name__}")  # fmt: skip
    arrays, meta = _result_parts(result)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastgd_version": _version(),
            "kind": "FitResult", "result": meta}  # fmt: skip
    if estimator is not None:
        meta["kind"] = type(estimator).__name__
        meta["estimator"] = {
            "params": _jsonable(estimator.get_params(deep=False), "the estimator's parameters"),
            "n_iter_": int(estimator.n_iter_),
        }
        arrays["estimator.loss_curve_"] = np.asarray(estimator.loss_curve_, dtype=np.float64)
    text = json.dumps(meta, allow_nan=True)
    arrays["metadata"] = np.array(text)
    arrays["checksum"] = np.array(_checksum(text, {k: v for k, v in arrays.items() if k != "metadata"}))  # fmt: skip
    with open(_check_path(path), "wb") as file:
        np.savez(file, **arrays)


# What reading a damaged or foreign archive can raise: zipfile's errors (a bad CRC, an
# encrypted member: RuntimeError, an unknown compression method: NotImplementedError),
# zlib's for a corrupted compressed member, NumPy's for a garbled array header (one that
# claims an absurd shape: MemoryError, OverflowError)
_UNREADABLE = (
    OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError,
    NotImplementedError, MemoryError, OverflowError,
)  # fmt: skip


def _check_path(path):
    """A file name (``str``, ``bytes``, ``os.PathLike``); an integer would be taken by
    ``open`` as a file descriptor (and closed afterwards)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike); got {type(path).__name__}")  # fmt: skip
    return path


def _read(path):
    """The arrays of the archive and its parsed, verified metadata."""
    _check_path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _UNREADABLE as exc:
        raise ValueError(f"{path} is not a readable fastgd model file: {exc}") from None
    try:
        text, checksum = str(arrays.pop("metadata")), str(arrays.pop("checksum"))
        meta = json.loads(text)
        fmt, version = meta["format"], meta["format_version"]
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"{path} is not a fastgd model file (no valid metadata: {exc})") from None
    if fmt != FORMAT or not isinstance(version, int):
        raise ValueError(f"{path} is not a fastgd model file (format {fmt!r})")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format version {version} (fastgd "
            f"{meta.get('fastgd_version')}); this fastgd {_version()} reads versions up to "
            f"{FORMAT_VERSION}: upgrade fastgd to load it"
        )
    if _checksum(text, {k: v for k, v in arrays.items()}) != checksum:
        raise ValueError(f"{path} is corrupted or was modified: its checksum does not match")
    return arrays, meta


def _rebuild_result(arrays, meta):
    """The FitResult described by the file, with its consistency checked."""
    fields = dict(meta["fields"])
    for name, arr in arrays.items():
        if name.startswith("result."):
            field = name[len("result.") :]
            fields[field] = arr.astype(object) if field in meta["object_arrays"] else arr
    known = {f.name for f in dataclasses.fields(FitResult)}
    fields = {k: v for k, v in fields.items() if k in known}
    if isinstance(fields.get("gradient_through_time"), dict):  # JSON keys are strings
        fields["gradient_through_time"] = {int(k): v for k, v in fields["gradient_through_time"].items()}  # fmt: skip
    spec = spec_from_dict(meta["model"])
    opt = None if meta["optimizer"] is None else _object_from_dict(meta["optimizer"])
    result = FitResult(model=spec, optimizer=opt, **fields)
    _check_consistent(result)
    return result


def _check_consistent(result):
    params, spec = result.params, result.model
    if params.dtype not in (np.float32, np.float64) or params.shape != (spec.n_params,):
        raise ValueError(f"params of shape {params.shape} and dtype {params.dtype} do not fit {spec}")  # fmt: skip
    if result.optimizer is not None and result.optimizer_state is not None:
        expected = result.optimizer.new_state(spec.n_params, params.dtype)
        if result.optimizer_state.shape != expected.shape or result.optimizer_state.dtype != params.dtype:  # fmt: skip
            raise ValueError("the optimizer state does not fit the parameters")
    if spec.task != "regression":
        n_classes = 2 if spec.task == "binary" else spec.n_outputs
        if result.classes_ is None or result.classes_.shape != (n_classes,):
            raise ValueError(f"a {spec.task} model needs {n_classes} classes")
    if spec.name == "mlp" and (result.running is None or result.running.shape != (spec.layout["n_running"],)):  # fmt: skip
        raise ValueError("the batch-norm running averages do not fit the network")
    _check_predicts(result)


def _check_predicts(result):
    """Predict one row of zeros: a file whose checksum matches but whose model description
    is broken (a layer's settings missing, an unknown activation) fails here, not in the
    user's first ``predict``."""
    spec = result.model
    n = spec.n_features
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the model has {n!r} features")
    shape = (1, 1, n) if spec.name == "rnn" else (1, n)
    try:
        with np.errstate(all="ignore"):
            result.decision_function(np.zeros(shape, dtype=result.params.dtype))
    except Exception as exc:  # any failure of a model described by the file
        raise ValueError(f"its model cannot predict ({type(exc).__name__}: {exc})") from None


def _rebuild_estimator(kind, result, meta, arrays):
    from . import estimators

    params = {k: _decode(v) for k, v in meta["params"].items()}
    for name in ("hidden", "batch_norm"):  # tuples in the estimator, lists in JSON
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    est = getattr(estimators, kind)(**params)
    est._store(result, n_iter=meta["n_iter_"], append=False)
    est.loss_curve_ = arrays["estimator.loss_curve_"].tolist()
    est.n_features_in_ = result.model.n_features
    if result.feature_names_in_ is not None:
        est.feature_names_in_ = result.feature_names_in_
    return est


def load(path):
    """Read a model written by :func:`save`.

    The archive is read with ``allow_pickle=False``: nothing in the file is executed.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    FitResult or estimator
        What was saved, ready to predict, and to continue training (``init=`` of
        :func:`fastgd.fit`, or an estimator's ``warm_start`` / ``partial_fit``), its
        optimizer state included.

    Raises
    ------
    ValueError
        For a file that is not a fastgd model, is truncated, corrupted or modified, or was
        written by a newer format version.
    FileNotFoundError
        If there is no such file.
    """
    arrays, meta = _read(path)
    try:
        result = _rebuild_result(arrays, meta["result"])
        if meta["kind"] == "FitResult":
            return result
        if meta["kind"] not in ESTIMATORS:
            raise ValueError(f"unknown kind {meta['kind']!r}")
        return _rebuild_estimator(meta["kind"], result, meta["estimator"], arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path} holds an invalid fastgd model: {exc}") from None


class Checkpoint:
    """A ``callback`` for :func:`fastgd.fit` that saves the training so far every
    ``every`` epochs; resume with ``fit(..., init=fastgd.load(path))``.

    Parameters
    ----------
    path : str
        The file to write (replaced each time); ``{epoch}`` in it is replaced by the epoch,
        keeping one file per checkpoint.
    every : int, default 1
        Save after epochs ``every - 1``, ``2 * every - 1``, ...

    Notes
    -----
    A resumed fit starts from the saved parameters, optimizer state and update count; it
    runs the ``epochs`` it is given. Full-batch first-order fits then continue exactly as
    without the interruption; shuffled row orders, schedules and the L-BFGS memory start
    afresh.

    Examples
    --------
    >>> fastgd.fit(X, y, callback=fastgd.Checkpoint("ckpt.npz"))  # doctest: +SKIP
    >>> fastgd.fit(X, y, init=fastgd.load("ckpt.npz"), epochs=10)  # doctest: +SKIP
    """

    def __init__(self, path, every=1):
        self.path, self.every = str(path), check_positive_int(every, "every")

    def __call__(self, epoch, info):
        if (epoch + 1) % self.every == 0:
            save(info["result"], self.path.format(epoch=epoch))
        return False
