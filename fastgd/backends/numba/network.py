"""Numba kernels of multi-layer perceptrons: one compiled call runs a block of epochs.

Same contract and arithmetic as :mod:`fastgd.backends.numpy.network`, and the algorithm of
the Cython kernel (``backends/cython/_network_kernels.pxi``). A mini-batch of ``B`` rows
is split into ``n_chunks`` contiguous row chunks, a partition that depends on ``B`` only.
One batch is a sequence of *phases*, each run over all chunks (in parallel when the batch
is large enough), with the batch-wide sums a phase needs added between two phases, over
the chunks in chunk order, so results are bit-identical for any thread count:

- ``FORWARD`` from layer ``l``: (if layer ``l - 1`` is normalized: normalize its rows
  with the batch statistics, activate) then dense layers (matrix product, bias,
  activation) up to the first normalized hidden layer, whose column sums of ``z`` the
  chunk leaves in its row of ``S``; or, without one, through the output layer, its loss
  and dloss/dz (divided by ``B``), and on into the backward pass;
- ``VARIANCE`` of a normalized layer: the chunk's column sums of ``(z - mean)**2``;
- backward, per layer from the top: the weight gradient ``A_in^T @ dZ`` and the bias sums
  into the chunk's row of ``G``, then ``dA_in = dZ @ W^T`` times ``act'``; at a normalized
  layer the chunk's sums of ``dU * x_hat`` and ``dU`` go to its gamma and beta entries and
  the phase ends; the next phase, ``BN_BACKWARD``, turns ``dU`` into ``dZ`` with the
  batch sums and goes on down.

The first layer is the only code that reads the data, chosen by its kind when a kernel
compiles: dense rows (:class:`~fastgd.backends.contract.Data`) through BLAS like every
other layer; CSR rows (:class:`~fastgd.backends.contract.SparseData`) through the row
accessor of :mod:`.sparse_rows` (a sparse x dense product forward, O(nnz * h); the weight
gradient a scatter over the same entries, once per batch, serially in row order).

Matrix products of a chunk go to BLAS (``np.dot`` with an output array), which is pinned
to one thread (see :mod:`fastgd.backends.blas`). ``act'`` is computed from the
activation's output ``A`` (for ReLU and leaky ReLU with a slope >= 0, ``A > 0`` exactly
when ``U > 0``), so the pre-activation values are never stored.

Compile time (a first fit on a new machine) shapes the code: the kernel that runs chunks
in parallel is a separate specialization, chosen in Python before the call and compiled
only by fits whose batches reach ``PARALLEL_MIN_WORK``; integers passed to the functions
that are not inlined are int64, never literal, so each has one signature per dtype. The
parameter update after each batch is the one of the linear kernels
(:mod:`fastgd.backends.numba.update`).
"""

import contextlib
import math
from typing import NamedTuple

import numba
import numpy as np
from numba import prange
from numba.extending import overload

from ..._config import MAX_CHUNKS, NUMBA_OPTIONS, PARALLEL_MIN_WORK, PREFETCH_AHEAD
from ...specs import network as net
from ...specs import optimizers as opt
from ...specs import stopping
from ..blas import single_threaded_blas
from ..contract import EpochBlock, SparseData, UpdateConfig, is_sparse, n_rows
from .cache import njit
from .losses import _loss_block
from .prefetch import prefetch_row
from .sparse_rows import _csr_rows_scatter, _csr_rows_times
from .threads import numba_threads
from .update import (
    _all_finite,
    _apply_update,
    _interrupted,
    _largest,
    _n_chunks,
    _penalty_value,
    _runaway,
    _tolerance_rule,
)

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = net.IDENTITY, net.RELU, net.LEAKY_RELU, net.SIGMOID, net.TANH  # fmt: skip

# the phases of a batch (see the module docstring)
FORWARD = 0
VARIANCE = 1
BN_BACKWARD = 2
DONE = 3

# how a kernel runs the chunks of a phase
SERIAL = 0
PARALLEL = 1

_CACHE_LINE_BYTES = 64


class Layout(NamedTuple):
    """A network and the named offsets of one kernel call (built by :func:`make_layout`).

    Attributes
    ----------
    sizes, batch_norm : ndarray of int64
        Layer widths (L + 1) and batch-norm flags (L), as in
        :class:`~fastgd.backends.contract.NetworkModel`.
    activation, loss_code : int
        Codes of :mod:`fastgd.specs.network` and :mod:`fastgd.specs.losses`.
    slope, momentum, eps : float
        Leaky slope, batch-norm momentum and eps.
    weight, bias, gamma, beta, running : ndarray of int64, shape (L,)
        Offsets of each layer's blocks in the flat parameters and running averages
        (:func:`fastgd.specs.network.layout`; -1 where a layer has no such block).
    n_weights, n_params : int
        Entries of the weight matrices (the penalized ones, first) and of all parameters.
    z, a, stats : ndarray of int64, shape (L,)
        Offsets in the scratch buffer of each layer's rows of ``z`` (output layer and
        normalized hidden layers: ``z``, then ``x_hat`` or dloss/dz), of a hidden layer's
        activations, and of a normalized layer's ``mean, var, inv_std``; -1 where unused.
    gather, delta0, delta1, reduced : int
        Offsets of the gathered input rows of a shuffled batch (dense rows), of the two
        buffers of dloss/du that alternate between layers in the backward pass, and of a
        normalized layer's ``inv_std / B, gamma * sum(du), gamma * sum(du * x_hat)``.
    work_per_row : int
        Multiply-adds per row of the forward and backward pass (the parallel threshold).
    chunk_first, chunk_stride : int
        The chunks' gradient sums in ``Scratch.G``: chunk ``c`` sums parameter ``j`` at
        ``c * chunk_stride + j``, for ``j >= chunk_first``. Dense rows: 0 and a padded
        ``n_params``, one row per chunk. CSR rows: ``chunk_first`` is the end of ``W_1``,
        whose gradient is not summed per chunk but scattered once per batch into
        ``G[:chunk_first]`` (:func:`_first_layer_batch_gradient`), so the chunks' rows
        hold only the other parameters and overlap in the ``W_1`` part no chunk writes.
    """

    sizes: np.ndarray
    batch_norm: np.ndarray
    activation: int
    loss_code: int
    slope: float
    momentum: float
    eps: float
    weight: np.ndarray
    bias: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    running: np.ndarray
    n_weights: int
    n_params: int
    z: np.ndarray
    a: np.ndarray
    stats: np.ndarray
    gather: int
    delta0: int
    delta1: int
    reduced: int
    work_per_row: int
    chunk_first: int
    chunk_stride: int


class Scratch(NamedTuple):
    """Work arrays of one kernel call (built by :func:`make_scratch`).

    Attributes
    ----------
    buf : ndarray of shape (n_buf,)
        Per-row blocks at the offsets of :class:`Layout`, for the largest batch.
    G : ndarray of shape (chunk_first + MAX_CHUNKS * chunk_stride,)
        Each chunk's gradient sums (at the offsets of :class:`Layout`); ``G[:n_params]``
        receives the batch's mean gradient.
    grad : ndarray of shape (1, n_params)
        ``G[:n_params]`` as the one-row matrix the update reads.
    S : ndarray of shape (MAX_CHUNKS, >= widest layer)
        Each chunk's column sums for the batch-norm statistics.
    chunk_loss : ndarray of float64, shape (MAX_CHUNKS, 8)
        Each chunk's loss sum in column 0 (one cache line per chunk).
    saved_params, saved_running, saved_state, saved_step : ndarray
        The state at the start of the epoch, restored when the epoch diverges.
    """

    buf: np.ndarray
    G: np.ndarray
    grad: np.ndarray
    S: np.ndarray
    chunk_loss: np.ndarray
    saved_params: np.ndarray
    saved_running: np.ndarray
    saved_state: np.ndarray
    saved_step: np.ndarray


class Batch(NamedTuple):
    """One mini-batch: rows ``start:start + rows`` of the epoch's ``order`` (an empty
    ``order``, ``shuffled`` False: the natural order), in ``n_chunks`` chunks."""

    order: np.ndarray
    shuffled: bool
    start: int
    rows: int
    n_chunks: int


# ---------------------------------------------------------------------------------------
# rows of one chunk


@njit(inline="always", **NUMBA_OPTIONS)
def _rows(buf, offset, lo, hi, width):
    """Rows ``lo:hi`` of the (rows, width) block that starts at ``offset`` of ``buf``."""
    return buf[offset + lo * width : offset + hi * width].reshape((hi - lo, width))


@njit(inline="always", **NUMBA_OPTIONS)
def _weights(layout, params, layer):
    """The (n_in, n_out) weight matrix of ``layer``, a view of the flat parameters."""
    n_in, n_out = layout.sizes[layer], layout.sizes[layer + 1]
    w = layout.weight[layer]
    return params[w : w + n_in * n_out].reshape((n_in, n_out))


@njit(inline="always", **NUMBA_OPTIONS)
def _delta_rows(layout, buf, layer, lo, hi):
    """Rows of dloss/du of hidden ``layer``: two buffers alternate between layers."""
    offset = layout.delta0 if layer % 2 == 0 else layout.delta1
    return _rows(buf, offset, lo, hi, layout.sizes[layer + 1])


@njit(inline="always", **NUMBA_OPTIONS)
def _hidden_rows(layout, buf, layer, lo, hi):
    """Rows ``lo:hi`` of the activations of hidden ``layer`` (the input of the next)."""
    return _rows(buf, layout.a[layer], lo, hi, layout.sizes[layer + 1])


# ---------------------------------------------------------------------------------------
# the first layer: the one place that reads the data, chosen by its kind
#
# Dense rows (Data) go through BLAS products; CSR rows (SparseData) through the row
# accessor of .sparse_rows: the forward product sums ``value * W_1[column, :]`` over each
# row's entries, O(nnz * h), and the weight gradient ``X^T @ dz`` is a scatter over the
# same entries. Every layer above is the same code for both. The three functions below
# are stubs that Numba replaces, when it compiles a kernel for a data type, by the
# implementation of that kind (``overload``): the branch of the other kind is never typed.

# jit options of the implementations (they are compiled into, and cached with, the kernel)
_OVERLOAD_OPTIONS = {key: value for key, value in NUMBA_OPTIONS.items() if key != "cache"}


def _is_csr(data_type):
    """True for the Numba type of :class:`~fastgd.backends.contract.SparseData`."""
    return getattr(data_type, "instance_class", None) is SparseData


def _first_layer_forward(layout, data, params, buf, batch, z, lo, hi):
    """``z = X_rows @ W_1`` for rows ``lo:hi`` of the batch (compiled code only)."""
    raise NotImplementedError("compiled by Numba only")


def _first_layer_gradient(layout, data, buf, batch, dz, G, lo, hi):
    """The chunk's ``X_rows^T @ dz`` into its sums ``G`` of ``W_1`` (dense rows)."""
    raise NotImplementedError("compiled by Numba only")


def _first_layer_batch_gradient(layout, data, scratch, batch):
    """The batch's ``X^T @ dz`` into ``G[W_1]`` after the chunk sums (CSR rows)."""
    raise NotImplementedError("compiled by Numba only")


@overload(_first_layer_forward, jit_options=_OVERLOAD_OPTIONS)
def _first_layer_forward_of(layout, data, params, buf, batch, z, lo, hi):
    return _csr_forward if _is_csr(data) else _dense_forward


@overload(_first_layer_gradient, jit_options=_OVERLOAD_OPTIONS)
def _first_layer_gradient_of(layout, data, buf, batch, dz, G, lo, hi):
    return _csr_chunk_gradient if _is_csr(data) else _dense_chunk_gradient


@overload(_first_layer_batch_gradient, jit_options=_OVERLOAD_OPTIONS)
def _first_layer_batch_gradient_of(layout, data, scratch, batch):
    return _csr_batch_gradient if _is_csr(data) else _dense_batch_gradient


@njit(inline="always", **NUMBA_OPTIONS)
def _dense_input_rows(layout, data, buf, batch, lo, hi):
    """Rows ``lo:hi`` of the batch's X: X itself in the natural order, else the rows
    gathered into one block."""
    if batch.shuffled:
        return _rows(buf, layout.gather, lo, hi, layout.sizes[0])
    return data.X[batch.start + lo : batch.start + hi]


@njit(inline="always", **NUMBA_OPTIONS)
def _gather(layout, data, buf, batch, lo, hi):
    """Copy the X rows of a shuffled chunk, in the epoch's order, into one block.

    The rows are scattered over X: each is requested from memory (software prefetch)
    ``PREFETCH_AHEAD`` rows before it is copied, so that several loads are in flight
    (measured: the gather took about a tenth of the non-BLAS time of a batch without)."""
    d = layout.sizes[0]
    dst = _rows(buf, layout.gather, lo, hi, d)
    for r in range(lo, hi):
        if r + PREFETCH_AHEAD < hi:
            prefetch_row(data.X, batch.order[batch.start + r + PREFETCH_AHEAD])
        i = batch.order[batch.start + r]
        for j in range(d):
            dst[r - lo, j] = data.X[i, j]


def _dense_forward(layout, data, params, buf, batch, z, lo, hi):
    if batch.shuffled:
        _gather(layout, data, buf, batch, lo, hi)
    np.dot(_dense_input_rows(layout, data, buf, batch, lo, hi), _weights(layout, params, 0), z)


def _dense_chunk_gradient(layout, data, buf, batch, dz, G, lo, hi):
    n_in, n_out, w = layout.sizes[0], layout.sizes[1], layout.weight[0]
    a_in = _dense_input_rows(layout, data, buf, batch, lo, hi)
    np.dot(a_in.T, dz, G[w : w + n_in * n_out].reshape((n_in, n_out)))


def _dense_batch_gradient(layout, data, scratch, batch):
    pass  # summed per chunk with the other parameters


def _csr_forward(layout, data, params, buf, batch, z, lo, hi):
    W = _weights(layout, params, 0)
    _csr_rows_times(data, batch.order, batch.shuffled, batch.start + lo, W, z)


def _csr_chunk_gradient(layout, data, buf, batch, dz, G, lo, hi):
    pass  # scattered once per batch, after the chunks: _csr_batch_gradient


def _csr_batch_gradient(layout, data, scratch, batch):
    """``G[W_1] = X_batch^T @ dz_1``, zeroed then scattered row after row, serially:
    the order of every sum is fixed by the data alone, whatever the chunks and threads.
    (Per-chunk accumulators would need d x h entries each; the scatter costs
    O(nnz * h), as the forward product.) ``dz_1`` of every row of the batch is in the
    first layer's dloss/du rows, written by the chunks' backward passes."""
    n_in, n_out, w = layout.sizes[0], layout.sizes[1], layout.weight[0]
    G = scratch.G[w : w + n_in * n_out]
    for j in range(n_in * n_out):
        G[j] = 0.0
    hidden = layout.sizes.shape[0] > 2  # else layer 1 is the output layer: its dz rows
    offset = layout.delta0 if hidden else layout.z[0]
    dz = _rows(scratch.buf, offset, 0, batch.rows, n_out)
    _csr_rows_scatter(data, batch.order, batch.shuffled, batch.start, dz, G.reshape((n_in, n_out)))  # fmt: skip


@njit(inline="always", **NUMBA_OPTIONS)
def _column_sums(block, out, offset):
    """``out[offset + j] = sum of block[:, j]``, rows added in order.

    Through a view of ``out`` from index 0 (indices from a runtime offset keep Numba's
    wraparound of negative indices in the loop, which then stays scalar)."""
    rows, n = block.shape
    sums = out[offset : offset + n]
    for j in range(n):
        sums[j] = 0.0
    for r in range(rows):
        for j in range(n):
            sums[j] += block[r, j]


@njit(**NUMBA_OPTIONS)  # not inlined (compile time); one call per block of rows
def _activate_rows(a, code, slope):
    """``a = act(a)`` in place, as :func:`fastgd.backends.shared.activate`."""
    rows, n = a.shape
    if code == RELU:
        for r in range(rows):
            for j in range(n):
                a[r, j] = 0.0 if a[r, j] < 0 else a[r, j]  # a NaN stays NaN, as np.maximum
    elif code == LEAKY_RELU:
        for r in range(rows):
            for j in range(n):
                u = a[r, j]
                # slope * u in float64, rounded once, as NumPy's (slope * U).astype(U.dtype)
                a[r, j] = u if u > 0 else slope * u
    elif code == SIGMOID:
        for r in range(rows):
            for j in range(n):
                u = a[r, j]
                e = math.exp(-abs(u))  # never overflows
                a[r, j] = 1.0 / (1.0 + e) if u >= 0 else e / (1.0 + e)
    elif code == TANH:
        for r in range(rows):
            for j in range(n):
                a[r, j] = math.tanh(a[r, j])


@njit(**NUMBA_OPTIONS)  # not inlined (compile time); one call per block of rows
def _times_slope_rows(g, a, code, slope):
    """``g *= act'(u)``, from the activation's output ``a = act(u)``."""
    rows, n = g.shape
    if code == RELU:
        for r in range(rows):
            for j in range(n):
                g[r, j] = g[r, j] * (1.0 if a[r, j] > 0 else 0.0)  # 0 * NaN stays NaN
    elif code == LEAKY_RELU:
        for r in range(rows):
            for j in range(n):
                g[r, j] = g[r, j] * (1.0 if a[r, j] > 0 else slope)
    elif code == SIGMOID:
        for r in range(rows):
            for j in range(n):
                g[r, j] = g[r, j] * (a[r, j] * (1.0 - a[r, j]))
    elif code == TANH:
        for r in range(rows):
            for j in range(n):
                g[r, j] = g[r, j] * (1.0 - a[r, j] * a[r, j])


@njit(inline="always", **NUMBA_OPTIONS)
def _normalize_rows(layout, params, buf, layer, lo, hi):
    """``x_hat = (z - mean) * inv_std`` (stored over z), ``a = act(gamma * x_hat + beta)``."""
    n = layout.sizes[layer + 1]
    z = _rows(buf, layout.z[layer], lo, hi, n)
    a = _rows(buf, layout.a[layer], lo, hi, n)
    mean, inv_std = layout.stats[layer], layout.stats[layer] + 2 * n
    g, be = layout.gamma[layer], layout.beta[layer]
    for r in range(hi - lo):
        for j in range(n):
            x_hat = (z[r, j] - buf[mean + j]) * buf[inv_std + j]
            z[r, j] = x_hat
            a[r, j] = params[g + j] * x_hat + params[be + j]
    _activate_rows(a, layout.activation, layout.slope)


@njit(**NUMBA_OPTIONS)  # not inlined (compile time); one call per chunk
def _output_loss(layout, data, scratch, batch, z, lo, hi, chunk):
    """Loss of the chunk's rows (into its slot of ``chunk_loss``); ``z`` becomes the
    derivative of the batch's mean loss, dloss/dz / B."""
    k = z.shape[1]
    scratch.chunk_loss[chunk, 0] = _loss_block(
        data.Y, data.weights, batch.order, batch.shuffled, batch.start + lo, batch.start + hi,
        layout.loss_code, k, z.reshape((1, hi - lo, k)), 0,
    )  # fmt: skip
    for r in range(hi - lo):
        for c in range(k):
            z[r, c] = z[r, c] / batch.rows


@njit(inline="always", **NUMBA_OPTIONS)
def _forward_rows(layout, data, params, scratch, batch, layer, lo, hi, chunk):
    """The forward phase from ``layer`` on rows ``lo:hi``.

    Returns -1 when it ends at a normalized hidden layer (its column sums of ``z`` are in
    the chunk's row of ``S``), else the output layer, whose ``z`` holds dloss/dz.
    """
    n_layers = layout.sizes.shape[0] - 1
    buf = scratch.buf
    if layer > 0 and layout.batch_norm[layer - 1]:
        _normalize_rows(layout, params, buf, layer - 1, lo, hi)
    for current in range(layer, n_layers):
        hidden = current < n_layers - 1
        normalized = layout.batch_norm[current] != 0
        # a plain hidden layer is activated in place: its z rows are its activations
        offset = layout.a[current] if hidden and not normalized else layout.z[current]
        z = _rows(buf, offset, lo, hi, layout.sizes[current + 1])
        if current == 0:  # reads the data: dense or CSR rows
            _first_layer_forward(layout, data, params, buf, batch, z, lo, hi)
        else:
            a_in = _hidden_rows(layout, buf, current - 1, lo, hi)
            np.dot(a_in, _weights(layout, params, current), z)
        if normalized:  # no bias: the chunk's column sums of z, for the batch mean
            _column_sums(z, scratch.S[chunk], 0)
            return -1
        b = layout.bias[current]
        bias = params[b : b + z.shape[1]]  # a view from 0: see _column_sums
        if hidden and layout.activation == RELU:  # bias and activation in one pass
            for r in range(hi - lo):
                for j in range(z.shape[1]):
                    u = z[r, j] + bias[j]
                    z[r, j] = 0.0 if u < 0 else u  # as _activate_rows
            continue
        for r in range(hi - lo):
            for j in range(z.shape[1]):
                z[r, j] += bias[j]
        if not hidden:
            _output_loss(layout, data, scratch, batch, z, lo, hi, chunk)
            return current
        _activate_rows(z, layout.activation, layout.slope)
    return n_layers - 1


@njit(inline="always", **NUMBA_OPTIONS)
def _bn_backward_rows(layout, params, buf, batch, layer, lo, hi):
    """dloss/dz of normalized ``layer`` from its du (in place), with the batch sums.

    As the NumPy reference, with ``dx_hat = du * gamma``:
    ``dz = inv_std / B * (B dx_hat - sum(dx_hat) - x_hat sum(dx_hat x_hat))``; the
    ``reduced`` block holds ``inv_std / B, gamma sum(du), gamma sum(du x_hat)``.
    """
    n = layout.sizes[layer + 1]
    dz = _delta_rows(layout, buf, layer, lo, hi)
    x_hat = _rows(buf, layout.z[layer], lo, hi, n)
    c1, g = layout.reduced, layout.gamma[layer]
    c2, c3 = c1 + n, c1 + 2 * n
    rows = float(batch.rows)
    for r in range(hi - lo):
        for j in range(n):
            dz[r, j] = buf[c1 + j] * (
                rows * (dz[r, j] * params[g + j]) - buf[c2 + j] - x_hat[r, j] * buf[c3 + j]
            )
    return dz


@njit(inline="always", **NUMBA_OPTIONS)
def _backward_rows(layout, data, params, scratch, batch, layer, dz, lo, hi, chunk):
    """Backward from ``layer``, whose dloss/dz rows ``lo:hi`` are ``dz``, into the chunk's
    row of G: down to layer 0, or to a normalized hidden layer (then the chunk's sums of
    ``du * x_hat`` and ``du`` go to its gamma and beta entries, and the phase ends)."""
    buf, G = scratch.buf, _chunk_sums(layout, scratch.G, chunk)
    current = layer
    while True:
        n_in, n_out = layout.sizes[current], layout.sizes[current + 1]
        if current == 0:  # reads the data: dense or CSR rows
            _first_layer_gradient(layout, data, buf, batch, dz, G, lo, hi)
        else:
            w = layout.weight[current]
            a_in = _hidden_rows(layout, buf, current - 1, lo, hi)
            np.dot(a_in.T, dz, G[w : w + n_in * n_out].reshape((n_in, n_out)))
        if not layout.batch_norm[current]:
            _column_sums(dz, G, layout.bias[current])
        if current == 0:
            return
        da = _delta_rows(layout, buf, current - 1, lo, hi)
        np.dot(dz, _weights(layout, params, current).T, da)
        a_in = _hidden_rows(layout, buf, current - 1, lo, hi)
        _times_slope_rows(da, a_in, layout.activation, layout.slope)
        current -= 1
        dz = da
        if layout.batch_norm[current]:
            x_hat = _rows(buf, layout.z[current], lo, hi, n_in)
            g, be = layout.gamma[current], layout.beta[current]
            for j in range(n_in):
                G[g + j] = 0.0
                G[be + j] = 0.0
            for r in range(hi - lo):
                for j in range(n_in):
                    G[g + j] += da[r, j] * x_hat[r, j]
                    G[be + j] += da[r, j]
            return


@njit(**NUMBA_OPTIONS)  # not inlined: one compiled body for the serial and parallel loops
def _chunk_phase(layout, data, params, scratch, batch, phase, layer, chunk):
    """One phase of the batch (``FORWARD``, ``VARIANCE`` or ``BN_BACKWARD`` from
    ``layer``) on one chunk; each chunk writes only its own rows and sums."""
    lo = (chunk * batch.rows) // batch.n_chunks
    hi = ((chunk + 1) * batch.rows) // batch.n_chunks
    buf = scratch.buf
    if phase == VARIANCE:  # the chunk's column sums of (z - mean)**2
        n = layout.sizes[layer + 1]
        z, S, mean = _rows(buf, layout.z[layer], lo, hi, n), scratch.S[chunk], layout.stats[layer]
        for j in range(n):
            S[j] = 0.0
        for r in range(hi - lo):
            for j in range(n):
                e = z[r, j] - buf[mean + j]
                S[j] += e * e
        return
    if phase == FORWARD:
        top = _forward_rows(layout, data, params, scratch, batch, layer, lo, hi, chunk)
        if top < 0:
            return
        dz = _rows(buf, layout.z[top], lo, hi, layout.sizes[top + 1])
    else:
        dz = _bn_backward_rows(layout, params, buf, batch, layer, lo, hi)
        top = layer
    _backward_rows(layout, data, params, scratch, batch, top, dz, lo, hi, chunk)


@njit(parallel=True, **NUMBA_OPTIONS)
def _phase_parallel(layout, data, params, scratch, batch, phase, layer):
    """One phase over all chunks, one chunk per iteration of a parallel loop."""
    for chunk in prange(batch.n_chunks):
        # an int64 index, as in the serial loop: one signature of _chunk_phase
        _chunk_phase(layout, data, params, scratch, batch, phase, layer, np.int64(chunk))


@njit(inline="always", **NUMBA_OPTIONS)
def _phase_serial(layout, data, params, scratch, batch, phase, layer):
    """One phase over all chunks, in chunk order."""
    for chunk in range(batch.n_chunks):
        _chunk_phase(layout, data, params, scratch, batch, phase, layer, chunk)


# ---------------------------------------------------------------------------------------
# between phases: batch-wide sums, in chunk order


@njit(inline="always", **NUMBA_OPTIONS)
def _chunk_sum(A, n_chunks, j):
    """``A[0, j] + A[1, j] + ...`` over the chunks, in chunk order, in A's precision."""
    total = A[0, j]
    for c in range(1, n_chunks):
        total += A[c, j]
    return total


@njit(inline="always", **NUMBA_OPTIONS)
def _chunk_sums(layout, G, chunk):
    """The chunk's gradient sums, indexed by parameter (entries from
    ``layout.chunk_first`` on are the chunk's own; see :class:`Layout`)."""
    start = chunk * layout.chunk_stride
    return G[start : start + layout.n_params]


@njit(inline="always", **NUMBA_OPTIONS)
def _gradient_chunk_sum(layout, G, n_chunks, j):
    """The chunks' sums of parameter ``j`` added in chunk order."""
    total = G[j]
    for c in range(1, n_chunks):
        total += G[c * layout.chunk_stride + j]
    return total


@njit(inline="always", **NUMBA_OPTIONS)
def _sum_gradient_chunks(layout, G, n_chunks):
    """Add the chunks' sums into ``G[:n_params]``, in chunk order (the deterministic
    reduction). Through two views: ``G[j] += G[start + j]`` on one array stays scalar
    (LLVM cannot rule out the overlap); on views it vectorizes (measured 6x faster)."""
    first, n = layout.chunk_first, layout.n_params
    total = G[first:n]
    for c in range(1, n_chunks):
        start = c * layout.chunk_stride
        row = G[start + first : start + n]
        for j in range(n - first):
            total[j] += row[j]


@njit(inline="always", **NUMBA_OPTIONS)
def _batch_statistics(layout, running, scratch, batch, layer, phase):
    """The batch mean (after ``FORWARD``) or variance and ``1 / std`` (after
    ``VARIANCE``) of normalized ``layer``; the variance moves the running averages (if
    ``running`` is not empty), as ``fastgd.backends.numpy.network._update_running``."""
    n, buf, S = layout.sizes[layer + 1], scratch.buf, scratch.S
    mean, var, inv_std = layout.stats[layer], layout.stats[layer] + n, layout.stats[layer] + 2 * n
    if phase == FORWARD:
        for j in range(n):
            buf[mean + j] = _chunk_sum(S, batch.n_chunks, j) / batch.rows
        return
    rows, momentum, r = batch.rows, layout.momentum, layout.running[layer]
    unbias = rows / (rows - 1.0) if rows > 1 else 1.0
    for j in range(n):
        buf[var + j] = _chunk_sum(S, batch.n_chunks, j) / rows  # biased
        # in float64, rounded once, as NumPy's (1.0 / np.sqrt(var + eps)).astype(dtype)
        buf[inv_std + j] = 1.0 / math.sqrt(float(buf[var + j]) + layout.eps)
        if running.shape[0] > 0:
            running[r + j] = (1.0 - momentum) * running[r + j] + momentum * buf[mean + j]
            running[r + n + j] = (1.0 - momentum) * running[r + n + j] + momentum * (buf[var + j] * unbias)  # fmt: skip


@njit(inline="always", **NUMBA_OPTIONS)
def _next_bn_backward(layout, params, scratch, batch, layer):
    """The highest normalized hidden layer below ``layer`` and the reduced sums of its
    ``BN_BACKWARD`` phase (from the chunks' gamma and beta gradient entries); ``DONE``
    when there is none."""
    below = layer - 1
    while below >= 0 and not layout.batch_norm[below]:
        below -= 1
    if below < 0:
        return np.int64(DONE), below
    n, buf, G = layout.sizes[below + 1], scratch.buf, scratch.G
    g, be, c, inv_std = (
        layout.gamma[below],
        layout.beta[below],
        layout.reduced,
        layout.stats[below] + 2 * n,
    )
    for j in range(n):
        du = _gradient_chunk_sum(layout, G, batch.n_chunks, be + j)  # sum(du)
        du_x_hat = _gradient_chunk_sum(layout, G, batch.n_chunks, g + j)  # sum(du * x_hat)
        buf[c + j] = buf[inv_std + j] / batch.rows
        buf[c + n + j] = params[g + j] * du
        buf[c + 2 * n + j] = params[g + j] * du_x_hat
    return np.int64(BN_BACKWARD), below


@njit(**NUMBA_OPTIONS)  # not inlined (compile time); one call per phase
def _after_phase(layout, params, running, scratch, batch, phase, layer):
    """The batch-wide sums after a phase; returns the next phase and its layer."""
    n_layers = layout.sizes.shape[0] - 1
    end = layer  # where a forward phase ended: the first normalized hidden layer from there
    if phase == FORWARD:
        while end < n_layers - 1 and not layout.batch_norm[end]:
            end += 1
    if phase == BN_BACKWARD or end == n_layers - 1:  # a backward pass reached ``end``
        return _next_bn_backward(layout, params, scratch, batch, end)
    _batch_statistics(layout, running, scratch, batch, end, phase)
    if phase == FORWARD:
        return np.int64(VARIANCE), end
    return np.int64(FORWARD), end + 1


@njit(inline="always", **NUMBA_OPTIONS)
def _batch_gradient(layout, data, params, running, scratch, batch, mode):
    """Forward and backward pass of one batch, phase by phase.

    Returns the batch's (weighted) loss sum; row 0 of ``scratch.G`` receives the gradient
    of its mean loss. The running averages move unless ``running`` is empty. ``mode`` is a compile-time constant of the calling kernel: only a
    ``PARALLEL`` kernel references the parallel loop (so only it compiles one), and runs it
    for the batches that reach ``PARALLEL_MIN_WORK``.
    """
    parallel = batch.n_chunks > 1 and batch.rows * layout.work_per_row >= PARALLEL_MIN_WORK
    phase, layer = np.int64(FORWARD), np.int64(0)
    while phase != DONE:
        if mode == SERIAL:
            _phase_serial(layout, data, params, scratch, batch, phase, layer)
        elif parallel:
            _phase_parallel(layout, data, params, scratch, batch, phase, layer)
        else:
            _phase_serial(layout, data, params, scratch, batch, phase, layer)
        phase, layer = _after_phase(layout, params, running, scratch, batch, phase, layer)
    _sum_gradient_chunks(layout, scratch.G, batch.n_chunks)
    _first_layer_batch_gradient(layout, data, scratch, batch)
    loss = 0.0
    for c in range(batch.n_chunks):
        loss += scratch.chunk_loss[c, 0]
    return loss


# ---------------------------------------------------------------------------------------
# the epoch loop


@njit(inline="always", **NUMBA_OPTIONS)
def _copy_state(params, running, opt_state, step_count, to_params, to_running, to_state, to_step):  # fmt: skip
    """Copy the training state into the ``to_`` arrays (element loops: no slice views)."""
    for j in range(params.shape[0]):
        to_params[j] = params[j]
    for j in range(running.shape[0]):
        to_running[j] = running[j]
    for a in range(opt_state.shape[0]):
        for j in range(opt_state.shape[1]):
            to_state[a, j] = opt_state[a, j]
    to_step[0] = step_count[0]


@njit(inline="always", **NUMBA_OPTIONS)
def _add_squared_norms(layout, G, norms):
    """``norms[i] += |gradient of W_i|**2`` from the batch's mean gradient (G[0]).

    Over a view from index 0: ``G[0, j]`` for ``j`` from a runtime offset keeps Numba's
    wraparound of negative indices, which makes LLVM gather the entries one by one
    (measured 4x slower)."""
    for i in range(norms.shape[0]):
        w = layout.weight[i]
        g = G[0, w : w + layout.sizes[i] * layout.sizes[i + 1]]
        total = 0.0
        for j in range(g.shape[0]):
            total += float(g[j]) ** 2
        norms[i] += total


@njit(**NUMBA_OPTIONS)  # not inlined (compile time); one call per epoch
def _end_epoch(layout, state, update, block, scratch, epoch, epoch_loss, n_batches):
    """Gradient norms, loss history, divergence (restore the saved state) and the
    tolerance rule; returns a code of :mod:`fastgd.specs.stopping`, or -1 to go on."""
    params = state.params
    norms = block.grad_norms[epoch]
    for i in range(norms.shape[0]):
        norms[i] = math.sqrt(norms[i] / n_batches)
    l1, l2 = update.hyper[opt.L1], update.hyper[opt.L2]
    if l1 > 0.0 or l2 > 0.0:
        epoch_loss += _penalty_value(params, layout.n_weights, l1, l2)
    block.history[epoch] = epoch_loss
    finite = math.isfinite(epoch_loss) and _all_finite(params)
    if not finite or _runaway(epoch_loss, state.stop_state, _largest(params)):
        s = scratch
        _copy_state(s.saved_params, s.saved_running, s.saved_state, s.saved_step, params,
                    state.running, state.opt_state, state.step_count)  # fmt: skip
        return stopping.DIVERGED
    if _tolerance_rule(epoch_loss, update.tol, update.n_iter_no_change, state.stop_state):
        return stopping.CONVERGED
    return -1


@njit(inline="always", **NUMBA_OPTIONS)
def _halt(state, scratch):
    """An interrupted epoch (network or recurrent scratch): keep the state after its last
    whole update, or put back the epoch's start (``scratch.saved_*``) if a parameter is
    not finite."""
    if not _all_finite(state.params):
        s = scratch
        _copy_state(s.saved_params, s.saved_running, s.saved_state, s.saved_step,
                    state.params, state.running, state.opt_state, state.step_count)  # fmt: skip
    return stopping.INTERRUPTED


def _make_train_epochs(mode):
    """The epoch kernel of ``mode`` (``SERIAL`` or ``PARALLEL``, a closure constant: the
    branches of the other mode are removed before compilation)."""

    @njit(**NUMBA_OPTIONS)
    def train_epochs_kernel(layout, data, state, update, block, scratch):
        n = data.Y.shape[0]  # dense or CSR rows
        params, s = state.params, scratch
        natural = np.empty(0, dtype=np.int64)
        shuffled = block.orders.shape[0] > 0
        if shuffled:  # the orders' rows (early stopping: the training rows only)
            n = block.orders.shape[1]
        hyper = update.hyper
        # the mean, L2 term and clipping need a pass over G before the update
        finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or hyper[opt.L2] > 0.0  # fmt: skip
        for epoch in range(block.n_epochs):
            _copy_state(params, state.running, state.opt_state, state.step_count,
                        s.saved_params, s.saved_running, s.saved_state, s.saved_step)  # fmt: skip
            order = block.orders[epoch % block.orders.shape[0]] if shuffled else natural
            norms = block.grad_norms[epoch]
            for i in range(norms.shape[0]):
                norms[i] = 0.0
            loss_sum = 0.0
            n_batches = 0
            for start in range(0, n, update.batch_size):
                if _interrupted(state.stop_state):  # Ctrl-C: polled before each batch
                    return epoch, _halt(state, s)
                rows = min(start + update.batch_size, n) - start
                batch = Batch(order, shuffled, np.int64(start), np.int64(rows), _n_chunks(rows))
                loss_sum += _batch_gradient(
                    layout, data, params, state.running, scratch, batch, mode
                )
                _add_squared_norms(layout, s.grad, norms)
                n_batches += 1
                # grad holds the mean gradient already (dz was divided by the batch size)
                _apply_update(
                    params, s.grad, 1.0, layout.n_weights, layout.n_params, update.opt_code, hyper,
                    state.opt_state, state.step_count, block.lr_epochs[epoch], finishing,
                )  # fmt: skip
            end = _end_epoch(layout, state, update, block, s, epoch, loss_sum / n, n_batches)
            if end >= 0:
                return epoch + 1, end
        return block.n_epochs, stopping.MAX_EPOCHS

    return train_epochs_kernel


def _make_loss_and_gradient(mode):
    """The full-batch gradient kernel of ``mode`` (see :func:`_make_train_epochs`)."""

    @njit(**NUMBA_OPTIONS)
    def loss_and_gradient_kernel(layout, data, params, scratch):
        n = data.Y.shape[0]  # dense or CSR rows
        natural = np.empty(0, dtype=np.int64)
        running = np.empty(0, dtype=params.dtype)
        # computed, not literal, field values: the Batch type of the training kernels
        batch = Batch(natural, n < 0, np.int64(0), np.int64(n), _n_chunks(n))
        loss = _batch_gradient(layout, data, params, running, scratch, batch, mode)
        grad = np.empty_like(params)
        for j in range(layout.n_params):
            grad[j] = scratch.G[j]
        return loss / n, grad

    return loss_and_gradient_kernel


_TRAIN_EPOCHS = (_make_train_epochs(SERIAL), _make_train_epochs(PARALLEL))
_LOSS_AND_GRADIENT = (_make_loss_and_gradient(SERIAL), _make_loss_and_gradient(PARALLEL))


# ---------------------------------------------------------------------------------------
# Python side: layout, scratch, the choice of kernel


def make_layout(model, rows, shuffled, data):
    """The :class:`Layout` of ``model`` for batches of up to ``rows`` rows of ``data``
    (dense or CSR rows), and the size of the scratch buffer it needs."""
    sizes = np.ascontiguousarray(model.sizes, dtype=np.int64)
    batch_norm = np.ascontiguousarray(model.batch_norm, dtype=np.int64)
    n_layers = sizes.shape[0] - 1
    slope, momentum, eps = (float(model.net_hyper[i]) for i in (net.LEAKY_SLOPE, net.BN_MOMENTUM, net.BN_EPS))  # fmt: skip
    if model.activation == net.LEAKY_RELU and not slope >= 0.0:
        # act'(u) is taken from act(u) > 0, which needs a slope >= 0
        raise ValueError(f"the leaky slope must be >= 0; got {slope}")
    params = net.layout(sizes, batch_norm)
    line = _CACHE_LINE_BYTES // 4  # blocks start on cache lines (float32 and float64)
    z, a, stats = (np.full(n_layers, -1, dtype=np.int64) for _ in range(3))
    total = 0

    def take(count):
        nonlocal total
        offset = total
        total += -(-count // line) * line
        return offset

    for layer in range(n_layers):
        n_out, hidden = int(sizes[layer + 1]), layer < n_layers - 1
        if not hidden or batch_norm[layer]:
            z[layer] = take(rows * n_out)
        if hidden:
            a[layer] = take(rows * n_out)
            if batch_norm[layer]:
                stats[layer] = take(3 * n_out)
    widest = int(max(sizes[1:-1], default=1))
    csr = is_sparse(data)  # no gathered rows; W_1's gradient outside the chunk sums
    products = sizes[:-1] * sizes[1:]  # forward and weight gradient; input gradient above 0
    first = int(products[0])
    if csr:  # the first layer's products cost the stored entries per row times h
        products[0] = -(-int(data.indptr[-1]) // max(n_rows(data), 1)) * sizes[1]
    chunked = int(params["n_params"]) - (first if csr else 0)
    layout = Layout(
        sizes, batch_norm, int(model.activation), int(model.loss_code), slope, momentum, eps,
        params["weight"], params["bias"], params["gamma"], params["beta"], params["running"],
        int(params["n_weights"]), int(params["n_params"]), z, a, stats,
        take(rows * int(sizes[0]) if shuffled and not csr else 0), take(rows * widest),
        take(rows * widest), take(3 * widest), int(3 * products.sum() - products[0]),
        first if csr else 0, -(-(chunked + line) // line) * line,
    )  # fmt: skip
    return layout, max(total, 1)


def make_scratch(layout, n_buf, params, running, opt_state):
    """The :class:`Scratch` of a kernel call, in the dtype of ``params``."""
    dtype = params.dtype
    line = _CACHE_LINE_BYTES // dtype.itemsize

    def padded(size):  # rows of whole cache lines, one more against false sharing
        return -(-(size + line) // line) * line

    widest = int(max(layout.sizes[1:-1], default=1))
    G = np.empty(layout.chunk_first + MAX_CHUNKS * layout.chunk_stride, dtype=dtype)
    return Scratch(
        np.empty(n_buf, dtype=dtype),
        G,
        G[: layout.n_params].reshape(1, layout.n_params),
        np.empty((MAX_CHUNKS, padded(widest)), dtype=dtype),
        np.empty((MAX_CHUNKS, _CACHE_LINE_BYTES // 8)),
        np.empty_like(params),
        np.empty_like(running),
        np.empty_like(opt_state),
        np.empty(1, dtype=np.int64),
    )


def _mode(layout, rows, n_threads):
    """``PARALLEL`` when a batch of ``rows`` rows (the largest of the call) runs its
    chunks in parallel under the rule of :func:`_batch_gradient`, else ``SERIAL``: the
    parallel kernel is compiled only for fits that use it."""
    parallel = _n_chunks.py_func(rows) > 1 and rows * layout.work_per_row >= PARALLEL_MIN_WORK
    return PARALLEL if parallel and n_threads > 1 else SERIAL


def loss_and_gradient(model, data, params):
    """Compiled; see :func:`fastgd.backends.numpy.network.loss_and_gradient`.

    Uses the threads Numba has (the result does not depend on their number).
    """
    n = n_rows(data)
    layout, n_buf = make_layout(model, n, False, data)
    scratch = make_scratch(layout, n_buf, params, params[:0], params[:0].reshape(0, 0))
    mode = _mode(layout, n, numba.config.NUMBA_NUM_THREADS)
    with single_threaded_blas():
        return _LOSS_AND_GRADIENT[mode](layout, data, params, scratch)


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled; see :meth:`fastgd.backends.contract.Backend.train_epochs`.

    The serial kernel runs unless a batch is large enough for parallel chunks and
    ``n_threads > 1``; the results are the same either way.
    """
    rows = min(int(update.batch_size), n_rows(data))
    layout, n_buf = make_layout(model, rows, block.orders.shape[0] > 0, data)
    scratch = make_scratch(layout, n_buf, state.params, state.running, state.opt_state)
    # plain Python numbers: one compiled signature whatever integer types the caller used
    update = UpdateConfig(int(update.batch_size), int(update.opt_code), update.hyper,
                          float(update.tol), int(update.n_iter_no_change))  # fmt: skip
    block = EpochBlock(block.orders, block.lr_epochs, int(block.n_epochs), block.history,
                       block.grad_norms)  # fmt: skip
    mode = _mode(layout, rows, n_threads)
    threads = numba_threads(n_threads) if mode == PARALLEL else contextlib.nullcontext()
    with threads, single_threaded_blas():
        n_done, status = _TRAIN_EPOCHS[mode](layout, data, state, update, block, scratch)
    return int(n_done), int(status)
