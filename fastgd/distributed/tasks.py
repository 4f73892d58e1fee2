"""What runs in a Dask worker: chunk preparation, a chunk's share of a full-batch pass,
and a round of local SGD over a chunk's rows.

Every function here is a plain function of arrays and small NamedTuples (pickled to the
workers by name), calling the same backend kernels as a single-machine fit. Kernels run
with one Numba thread: the workers are the parallelism. Numba's default ``workqueue``
threading layer aborts when two threads enter parallel kernels at once, so with that layer
the kernel calls of one worker process take turns (set ``NUMBA_THREADING_LAYER=omp`` or
``tbb`` to let several threads of one worker run kernels together).
"""

import contextlib
import functools
import os
import tempfile
import threading
from typing import NamedTuple

import numpy as np

from .. import _validation as v
from ..backends import get_backend
from ..backends.contract import Data, EpochBlock, State, UpdateConfig
from ..backends.numpy.update import penalty_value
from ..specs import stopping
from ..training.objective import data_terms
from ..training.orders import epoch_order

_KERNEL_LOCK = threading.Lock()


class RoundStart(NamedTuple):
    """What every chunk starts a local-SGD round from."""

    state: State
    n_weights: int  # the penalized entries params[:n_weights]
    n_layers: int  # networks: layers whose gradient norms are recorded (0 otherwise)


_SEEN = set()  # kernel variants this process has called (compiled or loaded) already


@contextlib.contextmanager
def _first_call_lock(key):
    """The first call of a kernel variant in this process holds a machine-wide file lock.

    Numba caches every variant a kernel factory makes under one index file (same function
    name and line); two processes compiling different variants at once can both number
    their data file alike, and the index then points a variant at the other's machine
    code (seen here: a segfault in a later single-machine fit). Worker processes start
    cold together, so their first calls of each variant take turns.
    """
    if key in _SEEN:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (compile kernels once before starting workers)
        fcntl = None
    with open(os.path.join(tempfile.gettempdir(), "fastgd-numba-compile.lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _SEEN.add(key)


@contextlib.contextmanager
def _one_thread(backend_name, key=None):
    """Numba kernels with one thread, serialized per process under ``workqueue``; the
    first call of each variant (``key``) also across processes."""
    if backend_name != "numba":
        yield
        return
    import numba

    from ..backends.numba.threads import numba_threads

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        layer = "workqueue"
    guard = _KERNEL_LOCK if layer == "workqueue" else contextlib.nullcontext()
    with _first_call_lock(key), guard, numba_threads(1):
        yield


def _variant(kind, model, data, *extra):
    """What selects a compiled kernel variant: model, dtype, shape and options."""
    return (kind, repr(model), data.X.dtype.str, data.X.shape, *extra)


def chunk_labels(y):
    """The distinct labels of a chunk of ``y`` (classifiers; NaN is checked later)."""
    arr = np.asarray(y)
    return np.unique(arr.ravel() if arr.ndim == 2 and arr.shape[1] == 1 else arr)


def prepare_chunk(x, y, weights, kind, dtype, classes, where):
    """Validate and convert one row chunk into the kernels' :class:`Data`.

    ``kind`` is the target kind (``"linear"``, ``"logistic"``, ``"softmax"``), ``where``
    names the chunk in error messages. Weights are kept as given (not rescaled): the driver
    knows the global sum and scales each chunk's share instead. NaN and inf in ``X`` are
    left to the check after training (:func:`nonfinite_message`): they make the first
    loss non-finite, and a pass over every chunk before training would cost about a tenth
    of a Newton round.
    """
    try:
        X = v.check_features(x, finite=False)  # NaN/inf: after training, as on one machine
        if X.dtype != dtype:
            X = X.astype(dtype)
        Y, _ = v.check_targets(y, X.shape[0], kind, dtype, classes)
        W = np.empty(0, dtype=dtype)
        if weights is not None:
            W = np.ascontiguousarray(weights, dtype=dtype)
            v._check_finite(W, "sample_weight")
            if (W < 0).any():
                raise ValueError(f"sample_weight must be >= 0; it has {int((W < 0).sum())} negative values")  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{exc} (in {where})") from None
    return Data(X, Y, W)


def nonfinite_message(data, where):
    """The error of a chunk whose ``X`` holds NaN or inf (``where`` names the chunk), or
    None: the deferred check of :func:`fastgd._validation.check_finite_after`."""
    try:
        v._check_finite(data.X, "X")
    except ValueError as exc:
        return f"{exc} (in {where})"
    return None


def chunk_stats(data):
    """``(rows, sum of weights)`` of a prepared chunk (weights 1 when there are none)."""
    n = data.X.shape[0]
    return n, float(data.weights.sum(dtype=np.float64)) if data.weights.size else float(n)


def warm_up(data, backend_name, model, state, update):
    """Load (or compile) the training kernels of this chunk's shapes in the worker."""
    backend = get_backend(backend_name)
    block = EpochBlock(
        np.empty((0, 0), dtype=np.int64), np.zeros(1), 0, np.zeros(1), np.zeros((1, 0))
    )
    local = _copy_state(state)
    with _one_thread(
        backend_name,
        _variant("train", model, data, update.opt_code, update.hyper.tobytes(), update.batch_size),
    ):
        backend.train_epochs(model, data, local, update, block, 1)


def full_batch_share(data, scale, backend_name, model, x, hessian, gram_dtype="float64"):  # noqa: PLR0913
    """``scale * (loss, grad, H)`` of the chunk: its share of the full-batch objective
    (``H`` as its packed upper triangle, :func:`packed_triangle`).

    The kernels return means over the chunk's rows; ``scale = rows_i / S`` (``S`` the sum
    of all weights, or all rows) makes the shares add up to the mean over every row.
    ``gram_dtype``: the precision of the Hessian's Gram products (Newton's
    ``hessian_dtype``).
    """
    backend = get_backend(backend_name)
    with _one_thread(backend_name, _variant("pass", model, data, hessian)):
        loss, grad, H = data_terms(backend, model, data, x, 1, hessian, None, None, gram_dtype)
    grad = np.asarray(grad, dtype=np.float64) * scale
    return loss * scale, grad, None if H is None else packed_triangle(H) * scale


@functools.lru_cache(maxsize=4)
def _upper(p):
    """The row-major upper triangle of a (p, p) matrix, as a boolean mask."""
    return np.triu(np.ones((p, p), dtype=bool))


def packed_triangle(H):
    """The upper triangle of the symmetric ``H``, row by row: half the bytes a round's
    Hessian sends (sums of packed triangles are the packed triangle of the sum, entry for
    entry)."""
    return H[_upper(H.shape[0])]


def unpacked(packed, p):
    """The symmetric (p, p) matrix whose upper triangle is ``packed``."""
    H = np.empty((p, p))
    mask = _upper(p)
    H[mask] = packed
    H.T[mask] = packed
    return H


def _copy_state(state):
    params, running, opt_state, step_count, _ = state
    return State(params.copy(), running.copy(), opt_state.copy(), step_count.copy(),
                 stopping.new_stop_state())  # fmt: skip


def _segment(data, order, segment, weight_scale):
    """The rows of this round (positions ``segment`` of the epoch's ``order``) as Data,
    weights rescaled to the global mean 1, plus the row order the kernel visits."""
    X, Y, W = data
    W = W * W.dtype.type(weight_scale) if W.size else W
    n = X.shape[0]
    first, last = segment[0], min(segment[1], n)
    if first == 0 and last == n:  # the whole epoch: no copy, the kernel follows the order
        orders = order[None] if order is not None else np.empty((0, 0), dtype=np.int64)
        return Data(X, Y, W), orders
    rows = order[first:last] if order is not None else np.arange(first, last)
    sub = Data(X[rows], Y[rows], W[rows] if W.size else W)
    return sub, np.empty((0, 0), dtype=np.int64)


def local_sgd(data, seed, backend_name, model, start, update, lr, segment, weight_scale, shuffle):
    """One round of local SGD on a chunk: the batches at positions ``segment`` of this
    epoch's row order (drawn from ``seed`` as ``fit``'s ``shuffle`` mode ``"rows"`` or
    ``"blocks"`` draws it; ``seed`` None: natural order), from ``start``.

    Returns a dict with the chunk's parameters, running averages, optimizer state, the
    batches run, ``loss_sum`` (sum of the rows' weighted losses before their batch's
    update), ``weight`` (sum of the rows' weights) and the per-layer gradient norms; None
    when the chunk has no rows left in this round.
    """
    n = data.X.shape[0]
    if segment[0] >= n:
        return None
    order = None if seed is None else epoch_order(np.random.default_rng(seed), n, shuffle)
    sub, orders = _segment(data, order, segment, weight_scale)
    rows = sub.X.shape[0] if orders.shape[0] == 0 else orders.shape[1]
    block = EpochBlock(orders, np.array([lr]), 1, np.zeros(1), np.zeros((1, start.n_layers)))
    local = _copy_state(start.state)
    update = UpdateConfig(update.batch_size, update.opt_code, update.hyper, -np.inf, 1)
    backend = get_backend(backend_name)
    key = _variant("train", model, sub, update.opt_code, update.hyper.tobytes(), update.batch_size)
    with _one_thread(backend_name, key):
        backend.train_epochs(model, sub, local, update, block, 1)
    weight = float(sub.weights.sum(dtype=np.float64)) if sub.weights.size else float(rows)
    data_loss = block.history[0] - penalty_value(local.params, start.n_weights, update.hyper)
    return {
        "params": local.params, "running": local.running, "opt_state": local.opt_state,
        "batches": int(local.step_count[0] - start.state.step_count[0]),
        "loss_sum": float(data_loss) * rows, "weight": weight, "grad_norms": block.grad_norms[0],
    }  # fmt: skip
