"""Cython kernels of the linear family: a thin dtype dispatcher over ``_kernels``.

Same contract as :mod:`fastgd.backends.numpy.linear`, same algorithm as the Numba backend
(chunked mini-batches, chunk sums added in order, so results are bit-identical for any
``n_threads``). The kernels are compiled for float32 and float64.
"""

import numpy as np

from ..._config import (
    MAX_CHUNKS,
    MIN_ROWS_PER_CHUNK,
    PARALLEL_MIN_WORK,
    ROWS_PER_BLOCK,
    SEVERAL_BLOCK_ENTRIES,
    SPARSE_ROWS_PER_CHUNK,
    TEAM_BATCHES,
    TEAM_WAIT_CYCLES,
)
from ..contract import is_sparse
from . import _kernels as _k
from ._checks import _NO_INDEX, _STATUS_CODES, _check, _check_call, _check_sparse

_CACHE_LINE_BYTES = 64


def _block_rows(n_outputs, n_features, sparse):
    """Rows per block of a chunk: multi-output dense rows use two BLAS products per block
    (as in Numba: about SEVERAL_BLOCK_ENTRIES entries of X, 64 to 512 rows)."""
    if n_outputs > 1 and not sparse:
        return max(ROWS_PER_BLOCK, min(512, SEVERAL_BLOCK_ENTRIES // n_features))
    return ROWS_PER_BLOCK


def _scratch(params, n_outputs, n_chunks=MAX_CHUNKS, block_rows=ROWS_PER_BLOCK, gather=0):
    """Per-chunk rows of gradient sums G (n_params, then the loss) and of z values Z
    (``block_rows * n_outputs``, then ``gather`` entries for a block of gathered rows).

    Each row is followed by at least one unused cache line, so that chunks run by different
    threads never write to the same line (false sharing slows the small z rows a lot).
    """
    line = _CACHE_LINE_BYTES // params.itemsize

    def padded(size):
        return -(-(size + line) // line) * line

    buf = np.empty((n_chunks, padded(params.shape[0] + 1)), dtype=params.dtype)
    zbuf = np.empty((n_chunks, padded(block_rows * n_outputs + gather)), dtype=params.dtype)
    return buf, zbuf


def _rows(data, params, loss_code, batch_rows):
    """The kernels' row arguments and chunking of dense or CSR rows.

    Returns ``(X, Y, weights, indices, indptr, n_features)`` and ``(max_chunks,
    min_rows_per_chunk)``. CSR rows: ``X`` is the (nnz, 1) column of stored values (a
    view); the chunk accumulators are ``d * k`` wide, so only the chunks a batch of
    ``batch_rows`` rows uses are allocated (``max_chunks``), split as the Numba backend
    splits them (:data:`fastgd._config.SPARSE_ROWS_PER_CHUNK`).
    """
    if not is_sparse(data):
        X, Y, weights = _check(data, params, loss_code)
        return (X, Y, weights, _NO_INDEX, _NO_INDEX, X.shape[1]), (MAX_CHUNKS, MIN_ROWS_PER_CHUNK)
    rows = _check_sparse(data, params, loss_code)
    chunks = min(MAX_CHUNKS, max(1, batch_rows // SPARSE_ROWS_PER_CHUNK))
    return rows, (chunks, SPARSE_ROWS_PER_CHUNK)


def loss_and_gradient(model, data, params):
    """Mean (weighted) loss and gradient over all rows.

    See :func:`fastgd.backends.numpy.linear.loss_and_gradient`. Uses OpenMP's default
    number of threads (the result does not depend on it).
    """
    rows, (chunks, rows_per_chunk) = _rows(data, params, model.loss_code, data.Y.shape[0])
    grad = np.zeros_like(params)
    block = _block_rows(model.n_outputs, rows[5], is_sparse(data))
    buf, zbuf = _scratch(params, model.n_outputs, chunks, block)
    loss = _k.loss_and_gradient(
        *rows, params, int(model.loss_code), int(model.n_outputs),
        bool(model.fit_intercept), grad, buf, zbuf, chunks, rows_per_chunk,
        PARALLEL_MIN_WORK, block, _k.max_threads(),
    )  # fmt: skip
    return float(loss), grad


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop; see :meth:`fastgd.backends.contract.Backend.train_epochs`.

    The loop runs with the GIL released; ``n_threads`` is the OpenMP team size of the
    parallel chunk loop (ignored when the extension was built without OpenMP).

    Sparse rows (:class:`~fastgd.backends.contract.SparseData`): chunks run serially;
    plain SGD at ``batch_size=1`` (L2 included) costs O(nnz of the row) per update
    (``_sparse_rows.pxi``); every other update keeps the dense semantics and touches the
    ``d * k`` parameters and optimizer state (e.g. Adam's moments) once per batch.
    """
    n = data.Y.shape[0]
    rows, (chunks, rows_per_chunk) = _rows(
        data, state.params, model.loss_code, min(int(update.batch_size), n)
    )
    hyper, lr_epochs, orders = _check_call(n, state, update, block)
    params, opt_state = state.params, state.opt_state
    block_rows = _block_rows(model.n_outputs, rows[5], is_sparse(data))
    # shuffled multi-output rows are gathered into a block for BLAS
    several = model.n_outputs > 1 and not is_sparse(data)
    gather = block_rows * rows[5] if several and orders.shape[0] else 0
    buf, zbuf = _scratch(params, model.n_outputs, chunks, block_rows, gather)
    n_done, status = _k.train_epochs(
        *rows, params, orders, lr_epochs, int(block.n_epochs), int(model.loss_code),
        int(model.n_outputs), bool(model.fit_intercept), int(update.batch_size),
        int(update.opt_code), hyper, opt_state, state.step_count, float(update.tol),
        float(update.n_iter_no_change), state.stop_state, block.history, buf, zbuf,
        np.empty_like(params), np.empty_like(opt_state), chunks, rows_per_chunk,
        PARALLEL_MIN_WORK, block_rows, max(1, int(n_threads)), TEAM_BATCHES,
        TEAM_WAIT_CYCLES,
    )  # fmt: skip
    return n_done, _STATUS_CODES[status]
