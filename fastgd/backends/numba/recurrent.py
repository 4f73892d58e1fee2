"""Numba kernels of recurrent networks: one compiled call runs a block of epochs.

Same contract and arithmetic as :mod:`fastgd.backends.numpy.recurrent` (equations and
layout: :mod:`fastgd.specs.recurrent`). A mini-batch of ``B`` sequences is split into
``n_chunks`` contiguous row chunks, a partition that depends on ``B`` and the hidden size
only (:func:`chunk_rows`). Each chunk, one per iteration of a parallel loop, runs its
sequences through the whole pass with no barrier between steps:

1. gather its rows of ``X`` time-major, ``(T_c, r, f)``, where ``T_c`` is the chunk's
   longest sequence (the steps after it are padding for every row, so they are skipped:
   padding cannot change a bit of the result);
2. per recurrent layer: the input projections of every step in one matrix product, then
   per step one recurrent product ``h_{t-1} @ W_hh^T`` and one elementwise pass (gates,
   state update; padded steps of a row carry its state);
3. the dense head on the last state (or every step's), the loss and dloss/dz, divided by
   the batch's count of sequences (or of valid steps);
4. backpropagation through time per layer, from the top: per step one elementwise pass
   (the gate gradients overwrite the stored gates; 0 at padded steps) and one product
   ``dA_h @ W_hh``; then the weight gradients of all steps in one product each
   (``dA^T @ inputs``, ``dA_h^T @ h_{t-1}``), straight into the chunk's row of ``G``, the
   bias column sums, and ``dA @ W_ih``, the gradient of the layer below.

The chunks' gradient rows are then added in chunk order (results are bit-identical for any
thread count) and the update of every model kind applies (:mod:`.update`). Workspaces are
laid out ``[t][row][unit]`` so that every per-step block is a contiguous matrix; the matrix
products go to BLAS (``np.dot`` with an output array, BLAS pinned to one thread), except,
in float32, the two products of every step: register tiles over ``W_hh`` packed once per
layer and batch (:func:`_strip_product`, see :data:`fastgd.specs.recurrent.STRIP`). The elementwise gate loops index a gate
block as ``[t, j, k, u]`` (:func:`_gate_view`) so that they vectorize.
"""

import contextlib
import math
from typing import NamedTuple

import numba
import numpy as np
import scipy.linalg  # noqa: F401 - loads SciPy's BLAS (Numba's np.dot) before it is limited
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..._config import MAX_CHUNKS, NUMBA_OPTIONS
from ...specs import losses, stopping
from ...specs import optimizers as opt
from ...specs import recurrent as rec
from ..blas import single_threaded_blas
from ..contract import EpochBlock, UpdateConfig
from ..recurrent_layout import check_memory, chunk_rows, workspace
from .cache import njit
from .network import _activate_rows, _copy_state, _end_epoch, _halt, _times_slope_rows
from .threads import numba_threads
from .tiles import emit_tile, rows_in_tiles
from .update import _apply_update, _interrupted, _sum_chunks

LSTM, GRU, TANH = rec.LSTM, rec.GRU, rec.TANH
MSE, BCE = losses.MSE, losses.BINARY_CROSS_ENTROPY

SERIAL = 0
PARALLEL = 1

_CACHE_LINE_BYTES = 64


class Layout(NamedTuple):
    """Model codes and offsets of one kernel call (built by :func:`make_layout`).

    Parameter offsets (flat vector) ``w_ih, w_hh, b_ih, b_hh`` (L,), ``head_w, head_b``
    (H,); workspace offsets in a chunk's row of ``Scratch.buf``: ``xs`` (gathered inputs),
    per layer ``H`` (states, ``T + 1`` steps), ``gates`` (activated gates, then their
    gradients), ``dah`` (GRU: hidden-side gate gradients; others: same as ``gates``),
    ``C`` (LSTM cell states, ``T + 1`` steps), ``aux`` (LSTM ``tanh(c_t)``, GRU ``hn``),
    then ``d_in0, d_in1`` (gradients between layers), ``tmp`` (a recurrent product),
    ``dh, dc, tmp_h``, ``w_t`` (a layer's ``W_hh`` laid out for the per-step products,
    :func:`_prepare_product`) and per head layer ``head_a`` (its output), ``head_d0, head_d1``.
    """

    cell: int
    n_features: int
    hidden: int
    n_layers: int
    gates_per_unit: int
    head_sizes: np.ndarray
    head_activation: int
    sequence: int
    loss_code: int
    n_weights: int
    n_params: int
    min_rows: int
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    head_w: np.ndarray
    head_b: np.ndarray
    xs: int
    H: np.ndarray
    gates: np.ndarray
    dah: np.ndarray
    C: np.ndarray
    aux: np.ndarray
    d_in0: int
    d_in1: int
    tmp: int
    dh: int
    dc: int
    tmp_h: int
    w_t: int
    head_a: np.ndarray
    head_d0: int
    head_d1: int


class Scratch(NamedTuple):
    """Work arrays: ``buf`` (MAX_CHUNKS, chunk workspace), ``G`` (MAX_CHUNKS, >= n_params)
    the chunks' gradients (row 0: the batch's), ``chunk_loss`` (MAX_CHUNKS, 8),
    ``lens`` (MAX_CHUNKS, rows) the chunk's lengths, and the state saved at an epoch's
    start (restored on divergence)."""

    buf: np.ndarray
    G: np.ndarray
    chunk_loss: np.ndarray
    lens: np.ndarray
    saved_params: np.ndarray
    saved_running: np.ndarray
    saved_state: np.ndarray
    saved_step: np.ndarray


class Batch(NamedTuple):
    """Rows ``start:start + rows`` of ``order`` (natural order when not ``shuffled``) in
    ``n_chunks`` chunks; ``scale`` is 1 / (sequences, or valid steps, of the batch)."""

    order: np.ndarray
    shuffled: bool
    start: int
    rows: int
    n_chunks: int
    scale: float


# ---------------------------------------------------------------------------------------
# views and elementwise helpers


@njit(**NUMBA_OPTIONS)
def _mat(buf, offset, rows, width):
    """The (rows, width) C-contiguous block of ``buf`` at ``offset``."""
    return buf[offset : offset + rows * width].reshape((rows, width))


@njit(**NUMBA_OPTIONS)
def _cube(buf, offset, steps, rows, width):
    """The (steps, rows, width) C-contiguous block of ``buf`` at ``offset``."""
    return buf[offset : offset + steps * rows * width].reshape((steps, rows, width))


@njit(**NUMBA_OPTIONS)
def _param_mat(params, offset, rows, cols):
    return params[offset : offset + rows * cols].reshape((rows, cols))


# the coefficients of :data:`fastgd.specs.recurrent.TANH_P` as float32 constants: float32
# kernels evaluate the rational tanh in float32 (a float64 constant would promote every
# operation to float64, with half as many lanes per vector instruction)
_F32 = np.float32
P0, P1, P2, P3, P4, P5, P6 = (_F32(p) for p in rec.TANH_P)
Q0, Q1, Q2, Q3 = (_F32(q) for q in rec.TANH_Q)
# ONE replaces the literal 1.0 in the gate loops: 1.0 is a float64, which made float32
# kernels compute them in float64 (in float64 kernels ONE is exactly 1.0)
CLAMP, ONE, HALF = _F32(rec.TANH_CLAMP), _F32(1.0), _F32(0.5)


@njit(**NUMBA_OPTIONS)
def _tanh_rational(x):
    """tanh of a float32 ``x`` as the rational function of
    :data:`fastgd.specs.recurrent.TANH_P`, in float32: only multiply-adds, a division and
    clamps, so that the loops calling it vectorize."""
    x = min(max(x, -CLAMP), CLAMP)
    x2 = x * x
    p = ((((((P6 * x2 + P5) * x2 + P4) * x2 + P3) * x2 + P2) * x2 + P1) * x2 + P0) * x
    q = ((Q3 * x2 + Q2) * x2 + Q1) * x2 + Q0
    return min(max(p / q, -ONE), ONE)


def _th(x, like):
    """tanh of ``x``: the rational function in float32 kernels, libm's in float64 ones.

    ``like`` is an array of the kernel's dtype. The choice is made when the kernel is
    typed (:func:`_overload_th`), so the loops calling it hold no branch: with a runtime
    flag, LLVM evaluated both sides (libm's tanh included) and selected.
    """
    raise NotImplementedError("compiled only")


def _sigmoid(a, like):
    """The logistic function of ``a``, chosen by the dtype of ``like`` as :func:`_th`."""
    raise NotImplementedError("compiled only")


def _is_single(like):
    return getattr(like, "dtype", like) == types.float32


# the implementations are compiled into their callers, which are cached (fastgd's cache
# directory, .cache): no cache of their own
_INLINE_OPTIONS = {key: value for key, value in NUMBA_OPTIONS.items() if key != "cache"}


@overload(_th, jit_options=_INLINE_OPTIONS)
def _overload_th(x, like):
    if _is_single(like):
        return lambda x, like: _tanh_rational(x)
    return lambda x, like: math.tanh(x)


@overload(_sigmoid, jit_options=_INLINE_OPTIONS)
def _overload_sigmoid(a, like):
    if _is_single(like):
        return lambda a, like: HALF + HALF * _tanh_rational(HALF * a)
    # 1 / (1 + exp(-a)): exp overflows to inf for a << 0, giving exactly 0, never NaN
    return lambda a, like: 1.0 / (1.0 + math.exp(-a))


def _zero(like):
    """0 of the dtype of ``like`` (a float32 accumulator stays float32)."""
    raise NotImplementedError("compiled only")


@overload(_zero, jit_options=_INLINE_OPTIONS)
def _overload_zero(like):
    if _is_single(like):
        return lambda like: np.float32(0.0)
    return lambda like: 0.0


@njit(**NUMBA_OPTIONS)
def _column_sums(block, out, offset):
    """``out[offset + j] = sum of block[:, j]``, rows added in order."""
    rows, n = block.shape
    sums = out[offset : offset + n]  # a view: its index j is never negative (see _gate_view)
    for j in range(n):
        sums[j] = 0.0
    for r in range(rows):
        for j in range(n):
            sums[j] += block[r, j]


@njit(**NUMBA_OPTIONS)
def _gate_view(buf, offset, steps, rows, gates, n):
    """The gate blocks at ``offset`` as (steps, rows, gates, n): gate ``k`` of unit ``u``
    is ``[t, j, k, u]``. Inner loops index it with ``u`` alone, never with ``k * n + u``:
    Numba wraps negative indices, and it cannot tell that such a sum is non-negative, so
    the select it adds for the wrap kept those loops from vectorizing (3-4x slower)."""
    return buf[offset : offset + steps * rows * gates * n].reshape((steps, rows, gates, n))


@njit(**NUMBA_OPTIONS)
def _bias_view(params, offset, gates, n):
    """A bias vector as (gates, n), see :func:`_gate_view`."""
    return params[offset : offset + gates * n].reshape((gates, n))


# ---------------------------------------------------------------------------------------
# the per-step recurrent products


STRIP, TILE_ROWS = rec.STRIP, rec.TILE_ROWS
# the w block of the workspace starts with one tile of C (a partial last strip goes
# through it), then holds W_hh for the products of a layer (see _prepare_product)
_TAIL = TILE_ROWS * STRIP


def _strip_codegen(context, builder, signature, args):
    """Code of :func:`_strip_product`: tiles of TILE_ROWS rows, then of 4, 2, 1."""
    A_type, _, _, P_type, _, C_type, _, _ = signature.args
    A = context.make_array(A_type)(context, builder, args[0])
    P = context.make_array(P_type)(context, builder, args[3])
    C = context.make_array(C_type)(context, builder, args[5])
    a_row, rows, p_off, c_off, ldc = (context.cast(builder, args[j], signature.args[j], types.intp) for j in (1, 2, 4, 6, 7))  # fmt: skip
    K = cgutils.unpack_tuple(builder, A.shape, count=2)[1]
    intp = ir.IntType(64)

    def tile(count, at):
        a = (A.data, builder.mul(builder.add(a_row, at), K), K, intp(1))
        c = (C.data, builder.add(c_off, builder.mul(at, ldc)), ldc)
        emit_tile(builder, count, 2, (intp(0), K), a, (P.data, p_off, intp(STRIP)), c)

    rows_in_tiles(builder, rows, tile)
    return context.get_dummy_value()


@intrinsic
def _strip_product(typingctx, A, a_row, rows, P, p_off, C, c_off, ldc):
    """``C[c_off + i ldc + q] = sum over k of A[a_row + i, k] P[p_off + k STRIP + q]``
    for ``i < rows``, ``q < STRIP``: rows of A times one packed strip (float32; ``A``
    2-D C-contiguous, ``P`` and ``C`` C-contiguous, no bounds checks: the callers stay
    inside them). An intrinsic, so that the register tile is what runs: written as Numba
    scalars, LLVM left such a tile scalar (6 GFLOP/s)."""
    arrays = (A, P, C)
    if not all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C" for a in arrays) or A.ndim != 2:  # fmt: skip
        return None
    if not all(isinstance(v, types.Integer) for v in (a_row, rows, p_off, c_off, ldc)):
        return None
    return types.none(A, a_row, rows, P, p_off, C, c_off, ldc), _strip_codegen


@njit(**NUMBA_OPTIONS)
def _packed_product(A, w, C):
    """``C = A @ B`` (float32, C-contiguous ``A`` (M, K), ``C`` (M, N)), ``B`` packed in
    ``w`` by :func:`_pack`: strip after strip; a partial last strip goes TILE_ROWS rows at
    a time through the tile at the start of ``w``."""
    M, K = A.shape
    N = C.shape[1]
    full = N // STRIP
    for s in range(full):
        _strip_product(A, 0, M, w, _TAIL + s * K * STRIP, C, s * STRIP, N)
    if full * STRIP < N:
        for i0 in range(0, M, TILE_ROWS):
            rows = min(TILE_ROWS, M - i0)
            _strip_product(A, i0, rows, w, _TAIL + full * K * STRIP, w, 0, STRIP)
            for i in range(rows):
                for q in range(N - full * STRIP):
                    C[i0 + i, full * STRIP + q] = w[i * STRIP + q]


@njit(**NUMBA_OPTIONS)
def _pack(W, forward, w):
    """``B = W.T`` (``forward``) or ``W`` (``W = W_hh``, (G h, h)) into ``w`` after its
    tile, in strips of STRIP columns: ``[s, k, q]`` holds ``B[k, s STRIP + q]`` (0 past
    the last column)."""
    K, N = (W.shape[1], W.shape[0]) if forward else W.shape
    S = -(-N // STRIP)
    P = w[_TAIL : _TAIL + S * K * STRIP].reshape((S, K, STRIP))
    for s in range(S):
        for k in range(K):
            for q in range(STRIP):
                c = s * STRIP + q
                if c >= N:
                    P[s, k, q] = 0.0
                elif forward:
                    P[s, k, q] = W[c, k]
                else:
                    P[s, k, q] = W[k, c]


@njit(**NUMBA_OPTIONS)
def _transpose(W, W_t):
    """``W_t = W.T``, row-major."""
    for q in range(W.shape[0]):
        for u in range(W.shape[1]):
            W_t[u, q] = W[q, u]


def _prepare_product(W, forward, w):
    """Lay out ``W = W_hh`` in ``w`` for a layer's per-step products; see the overload."""
    raise NotImplementedError("compiled only")


@overload(_prepare_product, jit_options=_INLINE_OPTIONS)
def _overload_prepare_product(W, forward, w):
    if _is_single(w):
        return lambda W, forward, w: _pack(W, forward, w)

    def transpose(W, forward, w):  # float64: W_hh^T row-major, for BLAS either way
        _transpose(W, w[_TAIL : _TAIL + W.size].reshape((W.shape[1], W.shape[0])))

    return transpose


def _step_product(A, w, C, forward):
    """A step's ``C = A @ B``: ``B = W_hh^T`` (``forward``: ``h_{t-1} W_hh^T``) or
    ``W_hh`` (``dA_h W_hh``), laid out in ``w`` by :func:`_prepare_product`."""
    raise NotImplementedError("compiled only")


@overload(_step_product, jit_options=_INLINE_OPTIONS)
def _overload_step_product(A, w, C, forward):
    if _is_single(w):
        return lambda A, w, C, forward: _packed_product(A, w, C)

    def blas(A, w, C, forward):  # float64: BLAS on W_hh^T
        K, N = A.shape[1], C.shape[1]
        if forward:
            np.dot(A, w[_TAIL : _TAIL + K * N].reshape((K, N)), C)
        else:
            np.dot(A, w[_TAIL : _TAIL + K * N].reshape((N, K)).T, C)

    return blas


@njit(**NUMBA_OPTIONS)
def _row(batch, j):
    """Index in X of the chunk-relative batch row ``j`` (chunk offset included)."""
    return batch.order[batch.start + j] if batch.shuffled else batch.start + j


# ---------------------------------------------------------------------------------------
# forward


@njit(**NUMBA_OPTIONS)
def _gather(lay, data, buf, lens, batch, lo, r):
    """Lengths of the chunk's rows and its inputs time-major; returns ``T_c``."""
    longest = 1
    for j in range(r):
        lens[j] = data.lengths[_row(batch, lo + j)]
        longest = max(longest, lens[j])
    f = lay.n_features
    xs = _cube(buf, lay.xs, longest, r, f)
    for j in range(r):
        i = _row(batch, lo + j)
        for t in range(longest):
            for u in range(f):
                xs[t, j, u] = data.X[i, t, u]
    return longest


@njit(**NUMBA_OPTIONS)
def _lstm_step(lay, params, buf, layer, t, r, lens, longest):
    """Gates and state of step ``t`` of every row, from the projections and ``tmp``."""
    n = lay.hidden
    gates = _gate_view(buf, lay.gates[layer], longest, r, 4, n)[t]
    H = _cube(buf, lay.H[layer], longest + 1, r, n)
    C = _cube(buf, lay.C[layer], longest + 1, r, n)
    tanh_c = _cube(buf, lay.aux[layer], longest, r, n)[t]
    tmp = _gate_view(buf, lay.tmp, 1, r, 4, n)[0]
    bi, bh = _bias_view(params, lay.b_ih[layer], 4, n), _bias_view(params, lay.b_hh[layer], 4, n)
    for j in range(r):
        if t >= lens[j]:  # padding: carry the state
            for u in range(n):
                H[t + 1, j, u] = H[t, j, u]
                C[t + 1, j, u] = C[t, j, u]
            continue
        # simple loops of few arrays each, so that every one vectorizes (one fused loop
        # over all of them did not: too many possible overlaps for LLVM to check)
        for k in range(4):
            for u in range(n):
                gates[j, k, u] = gates[j, k, u] + tmp[j, k, u] + (bi[k, u] + bh[k, u])
        for k in (0, 1, 3):
            for u in range(n):
                gates[j, k, u] = _sigmoid(gates[j, k, u], buf)
        for u in range(n):
            gates[j, 2, u] = _th(gates[j, 2, u], buf)
        for u in range(n):
            C[t + 1, j, u] = gates[j, 1, u] * C[t, j, u] + gates[j, 0, u] * gates[j, 2, u]
        for u in range(n):
            tanh_c[j, u] = _th(C[t + 1, j, u], buf)
        for u in range(n):
            H[t + 1, j, u] = gates[j, 3, u] * tanh_c[j, u]


@njit(**NUMBA_OPTIONS)
def _gru_step(lay, params, buf, layer, t, r, lens, longest):
    """GRU gates (r, z, n stored), ``hn`` and the state of step ``t``."""
    n = lay.hidden
    gates = _gate_view(buf, lay.gates[layer], longest, r, 3, n)[t]
    H = _cube(buf, lay.H[layer], longest + 1, r, n)
    hn_t = _cube(buf, lay.aux[layer], longest, r, n)[t]
    tmp = _gate_view(buf, lay.tmp, 1, r, 3, n)[0]
    bi, bh = _bias_view(params, lay.b_ih[layer], 3, n), _bias_view(params, lay.b_hh[layer], 3, n)
    for j in range(r):
        if t >= lens[j]:
            for u in range(n):
                H[t + 1, j, u] = H[t, j, u]
            continue
        for k in range(2):
            for u in range(n):
                gates[j, k, u] = _sigmoid(gates[j, k, u] + bi[k, u] + tmp[j, k, u] + bh[k, u], buf)  # fmt: skip
        for u in range(n):
            hn_t[j, u] = tmp[j, 2, u] + bh[2, u]
        for u in range(n):
            gates[j, 2, u] = _th(gates[j, 2, u] + bi[2, u] + gates[j, 0, u] * hn_t[j, u], buf)
        for u in range(n):
            zg = gates[j, 1, u]
            H[t + 1, j, u] = (ONE - zg) * gates[j, 2, u] + zg * H[t, j, u]


@njit(**NUMBA_OPTIONS)
def _tanh_step(lay, params, buf, layer, t, r, lens, longest):
    n = lay.hidden
    gates = _cube(buf, lay.gates[layer], longest, r, n)[t]
    H = _cube(buf, lay.H[layer], longest + 1, r, n)
    tmp = _mat(buf, lay.tmp, r, n)
    bi, bh = params[lay.b_ih[layer] : lay.b_ih[layer] + n], params[lay.b_hh[layer] : lay.b_hh[layer] + n]  # fmt: skip
    for j in range(r):
        if t >= lens[j]:
            for u in range(n):
                H[t + 1, j, u] = H[t, j, u]
            continue
        for u in range(n):
            H[t + 1, j, u] = _th(gates[j, u] + bi[u] + tmp[j, u] + bh[u], buf)


@njit(**NUMBA_OPTIONS)
def _layer_input(lay, buf, layer, r, longest):
    """The (T_c * r, n_in) inputs of ``layer``: gathered X, or the states below."""
    if layer == 0:
        return _mat(buf, lay.xs, longest * r, lay.n_features)
    return _mat(buf, lay.H[layer - 1] + r * lay.hidden, longest * r, lay.hidden)


@njit(**NUMBA_OPTIONS)
def _layer_forward(lay, params, buf, layer, r, lens, longest):
    """All steps of one recurrent layer on the chunk's rows."""
    n, gh = lay.hidden, lay.gates_per_unit * lay.hidden
    n_in = lay.n_features if layer == 0 else n
    inputs = _layer_input(lay, buf, layer, r, longest)
    W_ih = _param_mat(params, lay.w_ih[layer], gh, n_in)
    W_hh = _param_mat(params, lay.w_hh[layer], gh, n)
    np.dot(inputs, W_ih.T, _mat(buf, lay.gates[layer], longest * r, gh))
    H = _cube(buf, lay.H[layer], longest + 1, r, n)
    C = _cube(buf, lay.C[layer], longest + 1, r, n)
    for j in range(r):
        for u in range(n):
            H[0, j, u] = 0.0
            if lay.cell == LSTM:
                C[0, j, u] = 0.0
    tmp = _mat(buf, lay.tmp, r, gh)
    w = buf[lay.w_t :]  # W_hh for the per-step products (from the w block on)
    _prepare_product(W_hh, True, w)
    for t in range(longest):
        _step_product(H[t], w, tmp, True)
        if lay.cell == LSTM:
            _lstm_step(lay, params, buf, layer, t, r, lens, longest)
        elif lay.cell == GRU:
            _gru_step(lay, params, buf, layer, t, r, lens, longest)
        else:
            _tanh_step(lay, params, buf, layer, t, r, lens, longest)


# ---------------------------------------------------------------------------------------
# head and loss


@njit(**NUMBA_OPTIONS)
def _row_loss(z, Y, i, t, w, loss_code, scale):
    """Weighted loss of one output row ``z`` (k,) against ``Y[i, t]``; ``z`` becomes
    ``w * dloss/dz * scale`` (the derivative of the batch's mean loss)."""
    k = z.shape[0]
    if loss_code == MSE:
        total = 0.0
        for c in range(k):
            e = z[c] - Y[i, t, c]
            total += e * e
            z[c] = (2.0 / k) * e * w * scale
        return w * total / k
    if loss_code == BCE:
        v, y = z[0], Y[i, t, 0]
        e = math.exp(-abs(v))  # never overflows
        if v >= 0:
            loss, dz = v + math.log1p(e) - y * v, 1.0 / (1.0 + e) - y
        else:
            loss, dz = math.log1p(e) - y * v, e / (1.0 + e) - y
        z[0] = dz * w * scale
        return w * loss
    label = int(Y[i, t, 0])
    z_label, m = z[label], z[0]
    for c in range(1, k):
        m = max(m, z[c])
    s = 0.0
    for c in range(k):
        z[c] = math.exp(z[c] - m)
        s += z[c]
    for c in range(k):
        z[c] = z[c] / s * w * scale
    z[label] -= w * scale
    return w * (m + math.log(s) - z_label)


@njit(**NUMBA_OPTIONS)
def _head_input(lay, buf, r, longest):
    """The head's input rows: the top layer's last states (r, h), or every step's."""
    top = lay.H[lay.n_layers - 1]
    if lay.sequence:
        return _mat(buf, top + r * lay.hidden, longest * r, lay.hidden)
    return _mat(buf, top + longest * r * lay.hidden, r, lay.hidden)


@njit(**NUMBA_OPTIONS)
def _head_loss(lay, data, params, buf, lens, batch, lo, r, longest):
    """Head forward, loss of the chunk's rows; the output block becomes dloss/dz."""
    n_head = lay.head_sizes.shape[0] - 1
    U = _head_input(lay, buf, r, longest)
    N = U.shape[0]
    for j in range(n_head):
        n_in, n_out = lay.head_sizes[j], lay.head_sizes[j + 1]
        Z = _mat(buf, lay.head_a[j], N, n_out)
        np.dot(U, _param_mat(params, lay.head_w[j], n_out, n_in).T, Z)
        b = lay.head_b[j]
        for q in range(N):
            for c in range(n_out):
                Z[q, c] += params[b + c]
        if j < n_head - 1:
            _activate_rows(Z, lay.head_activation, 0.0)
        U = Z
    weighted = data.weights.shape[0] > 0
    loss = 0.0
    for q in range(N):
        t, jr = (q // r, q % r) if lay.sequence else (0, q)
        if lay.sequence and t >= lens[jr]:  # a padded step: no loss, no gradient
            for c in range(U.shape[1]):
                U[q, c] = 0.0
            continue
        i = _row(batch, lo + jr)
        w = data.weights[i] if weighted else 1.0
        loss += _row_loss(U[q], data.Y, i, t, w, lay.loss_code, batch.scale)
    return loss


@njit(**NUMBA_OPTIONS)
def _head_backward(lay, params, G, buf, r, longest):
    """Head gradients into the chunk's ``G`` row; returns dloss/d(head input) (N, h)."""
    n_head = lay.head_sizes.shape[0] - 1
    N = longest * r if lay.sequence else r
    dz = _mat(buf, lay.head_a[n_head - 1], N, lay.head_sizes[n_head])
    for j in range(n_head - 1, -1, -1):
        n_in, n_out = lay.head_sizes[j], lay.head_sizes[j + 1]
        U = _head_input(lay, buf, r, longest) if j == 0 else _mat(buf, lay.head_a[j - 1], N, n_in)
        np.dot(dz.T, U, _param_mat(G, lay.head_w[j], n_out, n_in))
        _column_sums(dz, G, lay.head_b[j])
        du = _mat(buf, lay.head_d0 if j % 2 == 0 else lay.head_d1, N, n_in)
        np.dot(dz, _param_mat(params, lay.head_w[j], n_out, n_in), du)
        if j > 0:
            _times_slope_rows(du, U, lay.head_activation, 0.0)
        dz = du
    return dz


# ---------------------------------------------------------------------------------------
# backpropagation through time


@njit(**NUMBA_OPTIONS)
def _lstm_grad_step(lay, buf, layer, t, r, lens, longest, dh, dc):
    """Gate gradients of step ``t`` (over the stored gates); ``dh`` keeps only the part
    that does not go through ``W_hh`` (0, or all of it at a padded step)."""
    n = lay.hidden
    gates = _gate_view(buf, lay.gates[layer], longest, r, 4, n)[t]
    C = _cube(buf, lay.C[layer], longest + 1, r, n)
    tanh_c = _cube(buf, lay.aux[layer], longest, r, n)[t]
    for j in range(r):
        if t >= lens[j]:
            for k in range(4):
                for u in range(n):
                    gates[j, k, u] = 0.0
            continue
        # three loops of few arrays each, so that each vectorizes (see _lstm_step);
        # dc holds dloss/dc_t between the first and the last
        for u in range(n):
            o, tc = gates[j, 3, u], tanh_c[j, u]
            dc[j, u] = dc[j, u] + dh[j, u] * o * (ONE - tc * tc)
        for u in range(n):
            o, tc = gates[j, 3, u], tanh_c[j, u]
            gates[j, 3, u] = dh[j, u] * tc * o * (ONE - o)
            dh[j, u] = 0.0
        for u in range(n):
            i, f, g, d = gates[j, 0, u], gates[j, 1, u], gates[j, 2, u], dc[j, u]
            gates[j, 0, u] = d * g * i * (ONE - i)
            gates[j, 1, u] = d * C[t, j, u] * f * (ONE - f)
            gates[j, 2, u] = d * i * (ONE - g * g)
            dc[j, u] = d * f


@njit(**NUMBA_OPTIONS)
def _gru_grad_step(lay, buf, layer, t, r, lens, longest, dh):
    """GRU gate gradients: input side over the gates, hidden side in ``dah``; ``dh``
    keeps the direct term ``dh * z``."""
    n = lay.hidden
    gates = _gate_view(buf, lay.gates[layer], longest, r, 3, n)[t]
    dah = _gate_view(buf, lay.dah[layer], longest, r, 3, n)[t]
    H = _cube(buf, lay.H[layer], longest + 1, r, n)
    hn_t = _cube(buf, lay.aux[layer], longest, r, n)[t]
    for j in range(r):
        if t >= lens[j]:
            for k in range(3):
                for u in range(n):
                    gates[j, k, u] = 0.0
                    dah[j, k, u] = 0.0
            continue
        for u in range(n):
            rg, zg, cand = gates[j, 0, u], gates[j, 1, u], gates[j, 2, u]
            d = dh[j, u]
            da_n = d * (ONE - zg) * (ONE - cand * cand)
            da_r = da_n * hn_t[j, u] * rg * (ONE - rg)
            da_z = d * (H[t, j, u] - cand) * zg * (ONE - zg)
            gates[j, 0, u], gates[j, 1, u], gates[j, 2, u] = da_r, da_z, da_n
            dah[j, 0, u], dah[j, 1, u], dah[j, 2, u] = da_r, da_z, da_n * rg
            dh[j, u] = d * zg


@njit(**NUMBA_OPTIONS)
def _tanh_grad_step(lay, buf, layer, t, r, lens, longest, dh):
    n = lay.hidden
    gates = _cube(buf, lay.gates[layer], longest, r, n)[t]
    H = _cube(buf, lay.H[layer], longest + 1, r, n)
    for j in range(r):
        if t >= lens[j]:
            for u in range(n):
                gates[j, u] = 0.0
            continue
        for u in range(n):
            h = H[t + 1, j, u]
            gates[j, u] = dh[j, u] * (ONE - h * h)
            dh[j, u] = 0.0


@njit(**NUMBA_OPTIONS)
def _layer_backward(lay, params, G, buf, layer, r, lens, longest, d_top):
    """BPTT through ``layer``; ``d_top`` is dloss/dh from above: (r, h) for the last state
    of the top layer with ``output="last"``, else (T_c * r, h), one row per step."""
    n, gh = lay.hidden, lay.gates_per_unit * lay.hidden
    n_in = lay.n_features if layer == 0 else n
    dh, dc, tmp_h = _mat(buf, lay.dh, r, n), _mat(buf, lay.dc, r, n), _mat(buf, lay.tmp_h, r, n)
    per_step = lay.sequence or layer < lay.n_layers - 1
    for j in range(r):
        for u in range(n):
            dh[j, u] = 0.0 if per_step else d_top[j, u]
            dc[j, u] = 0.0
    W_hh = _param_mat(params, lay.w_hh[layer], gh, n)
    w = buf[lay.w_t :]  # laid out again: the layers and directions share the w block
    _prepare_product(W_hh, False, w)
    dAh = _cube(buf, lay.dah[layer], longest, r, gh)
    for t in range(longest - 1, -1, -1):
        if per_step:
            for j in range(r):
                for u in range(n):
                    dh[j, u] += d_top[t * r + j, u]
        if lay.cell == LSTM:
            _lstm_grad_step(lay, buf, layer, t, r, lens, longest, dh, dc)
        elif lay.cell == GRU:
            _gru_grad_step(lay, buf, layer, t, r, lens, longest, dh)
        else:
            _tanh_grad_step(lay, buf, layer, t, r, lens, longest, dh)
        _step_product(dAh[t], w, tmp_h, False)  # dA_h W_hh
        for j in range(r):
            for u in range(n):
                dh[j, u] += tmp_h[j, u]
    _weight_gradients(lay, params, G, buf, layer, r, longest, n_in)


@njit(**NUMBA_OPTIONS)
def _weight_gradients(lay, params, G, buf, layer, r, longest, n_in):
    """All steps' weight gradients in one product each, the bias sums, and (above layer
    0) the gradient of the layer below, ``dA @ W_ih``."""
    n, gh = lay.hidden, lay.gates_per_unit * lay.hidden
    dA = _mat(buf, lay.gates[layer], longest * r, gh)
    dAh = _mat(buf, lay.dah[layer], longest * r, gh)
    inputs = _layer_input(lay, buf, layer, r, longest)
    np.dot(dA.T, inputs, _param_mat(G, lay.w_ih[layer], gh, n_in))
    h_prev = _mat(buf, lay.H[layer], longest * r, n)  # h_{t-1}: states 0 .. T_c - 1
    np.dot(dAh.T, h_prev, _param_mat(G, lay.w_hh[layer], gh, n))
    _column_sums(dA, G, lay.b_ih[layer])
    if lay.cell == GRU:
        _column_sums(dAh, G, lay.b_hh[layer])
    else:  # LSTM, tanh: dA_h is dA, the two bias gradients are equal
        for q in range(gh):
            G[lay.b_hh[layer] + q] = G[lay.b_ih[layer] + q]
    if layer > 0:
        d_below = _mat(buf, lay.d_in0 if layer % 2 == 0 else lay.d_in1, longest * r, n)
        np.dot(dA, _param_mat(params, lay.w_ih[layer], gh, n_in), d_below)


# ---------------------------------------------------------------------------------------
# one chunk, one batch


@njit(**NUMBA_OPTIONS)  # not inlined: one compiled body for the serial and parallel loops
def _chunk_pass(lay, data, params, scratch, batch, chunk):
    """Forward, loss and BPTT of one chunk's sequences into its rows of the scratch."""
    lo = (chunk * batch.rows) // batch.n_chunks
    r = ((chunk + 1) * batch.rows) // batch.n_chunks - lo
    buf, G, lens = scratch.buf[chunk], scratch.G[chunk], scratch.lens[chunk]
    longest = _gather(lay, data, buf, lens, batch, lo, r)
    for layer in range(lay.n_layers):
        _layer_forward(lay, params, buf, layer, r, lens, longest)
    scratch.chunk_loss[chunk, 0] = _head_loss(lay, data, params, buf, lens, batch, lo, r, longest)
    d_top = _head_backward(lay, params, G, buf, r, longest)
    for layer in range(lay.n_layers - 1, -1, -1):
        _layer_backward(lay, params, G, buf, layer, r, lens, longest, d_top)
        if layer > 0:
            d_top = _mat(buf, lay.d_in0 if layer % 2 == 0 else lay.d_in1, longest * r, lay.hidden)


@njit(parallel=True, **NUMBA_OPTIONS)
def _chunks_parallel(lay, data, params, scratch, batch):
    for chunk in prange(batch.n_chunks):
        _chunk_pass(lay, data, params, scratch, batch, np.int64(chunk))


@njit(**NUMBA_OPTIONS)
def _n_chunks(lay, rows):
    return min(MAX_CHUNKS, max(1, rows // lay.min_rows))


@njit(**NUMBA_OPTIONS)
def _make_batch(lay, data, order, shuffled, start, rows):
    """The :class:`Batch`; its scale is 1 / (the batch's sequences, or its valid steps
    for ``output="sequence"``)."""
    total = rows
    if lay.sequence:
        total = 0
        for j in range(rows):
            total += data.lengths[order[start + j] if shuffled else start + j]
    return Batch(order, shuffled, np.int64(start), np.int64(rows), _n_chunks(lay, rows), 1.0 / total)  # fmt: skip


@njit(inline="always", **NUMBA_OPTIONS)  # inlined: ``mode`` is then a compile-time constant
def _batch_gradient(lay, data, params, scratch, batch, mode):
    """The batch's loss sum (per sequence, or per valid step scaled to the sequences);
    ``G[0]`` receives the gradient of its mean loss."""
    if mode == PARALLEL and batch.n_chunks > 1:
        _chunks_parallel(lay, data, params, scratch, batch)
    else:
        for chunk in range(batch.n_chunks):
            _chunk_pass(lay, data, params, scratch, batch, chunk)
    _sum_chunks(scratch.G, batch.n_chunks, lay.n_params)
    loss = 0.0
    for c in range(batch.n_chunks):
        loss += scratch.chunk_loss[c, 0]
    # the mean loss of the batch times its rows, as the epoch loss adds it up
    return loss * batch.scale * batch.rows


@njit(**NUMBA_OPTIONS)
def _add_squared_norms(lay, G, norms):
    """``norms[i] += |weight gradient of layer i|**2``: recurrent layers ([W_ih, W_hh],
    adjacent in the flat vector), then head layers."""
    gh = lay.gates_per_unit * lay.hidden
    for i in range(norms.shape[0]):
        if i < lay.n_layers:
            first, last = lay.w_ih[i], lay.w_hh[i] + gh * lay.hidden
        else:
            j = i - lay.n_layers
            first = lay.head_w[j]
            last = first + lay.head_sizes[j] * lay.head_sizes[j + 1]
        total = 0.0
        for q in range(first, last):
            total += float(G[0, q]) ** 2
        norms[i] += total


def _make_train_epochs(mode):
    """The epoch kernel of ``mode`` (a closure constant)."""

    @njit(**NUMBA_OPTIONS)
    def train_epochs_kernel(lay, data, state, update, block, scratch):
        n = data.X.shape[0]
        params, s, hyper = state.params, scratch, update.hyper
        natural = np.empty(0, dtype=np.int64)
        shuffled = block.orders.shape[0] > 0
        if shuffled:  # the orders' rows (early stopping: the training rows only)
            n = block.orders.shape[1]
        finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or hyper[opt.L2] > 0.0  # fmt: skip
        for epoch in range(block.n_epochs):
            _copy_state(params, state.running, state.opt_state, state.step_count,
                        s.saved_params, s.saved_running, s.saved_state, s.saved_step)  # fmt: skip
            order = block.orders[epoch % block.orders.shape[0]] if shuffled else natural
            norms = block.grad_norms[epoch]
            for i in range(norms.shape[0]):
                norms[i] = 0.0
            loss_sum, n_batches = 0.0, 0
            for start in range(0, n, update.batch_size):
                if _interrupted(state.stop_state):  # Ctrl-C: polled before each batch
                    return epoch, _halt(state, s)
                rows = min(start + update.batch_size, n) - start
                batch = _make_batch(lay, data, order, shuffled, start, rows)
                loss_sum += _batch_gradient(lay, data, params, s, batch, mode)
                _add_squared_norms(lay, s.G, norms)
                n_batches += 1
                _apply_update(
                    params, s.G, 1.0, lay.n_weights, lay.n_params, update.opt_code, hyper,
                    state.opt_state, state.step_count, block.lr_epochs[epoch], finishing,
                )  # fmt: skip
            end = _end_epoch(lay, state, update, block, s, epoch, loss_sum / n, n_batches)
            if end >= 0:
                return epoch + 1, end
        return block.n_epochs, stopping.MAX_EPOCHS

    return train_epochs_kernel


def _make_loss_and_gradient(mode):
    @njit(**NUMBA_OPTIONS)
    def loss_and_gradient_kernel(lay, data, params, scratch):
        n = data.X.shape[0]
        natural = np.empty(0, dtype=np.int64)
        batch = _make_batch(lay, data, natural, n < 0, 0, n)
        loss = _batch_gradient(lay, data, params, scratch, batch, mode)
        grad = np.empty_like(params)
        for j in range(lay.n_params):
            grad[j] = scratch.G[0, j]
        return loss / n, grad

    return loss_and_gradient_kernel


_TRAIN_EPOCHS = (_make_train_epochs(SERIAL), _make_train_epochs(PARALLEL))
_LOSS_AND_GRADIENT = (_make_loss_and_gradient(SERIAL), _make_loss_and_gradient(PARALLEL))


# ---------------------------------------------------------------------------------------
# Python side


def make_layout(model, rows, n_steps, itemsize):
    """The :class:`Layout` for batches of up to ``rows`` sequences of ``n_steps`` steps,
    the workspace entries of one chunk and its most rows (see
    :func:`fastgd.backends.recurrent_layout.workspace`)."""
    cell, n = int(model.cell), int(model.hidden)
    head = np.ascontiguousarray(model.head_sizes, dtype=np.int64)
    off = rec.layout(cell, model.n_features, n, model.n_layers, head)
    ws = workspace(model, rows, n_steps, itemsize)

    def ints(key):
        return np.array(ws[key], dtype=np.int64)

    lay = Layout(
        cell, int(model.n_features), n, int(model.n_layers), rec.GATES[cell], head,
        int(model.head_activation), int(model.sequence), int(model.loss_code),
        int(off["n_weights"]), int(off["n_params"]), chunk_rows(n),
        off["w_ih"], off["w_hh"], off["b_ih"], off["b_hh"], off["head_w"], off["head_b"],
        ws["xs"], ints("H"), ints("gates"), ints("dah"), ints("C"), ints("aux"), ws["d_in0"],
        ws["d_in1"], ws["tmp"], ws["dh"], ws["dc"], ws["tmp_h"], ws["w_t"], ints("head_a"),
        ws["head_d0"], ws["head_d1"],
    )  # fmt: skip
    return lay, ws["size"], ws["R"]


def make_scratch(lay, chunk_size, R, params, running, opt_state):
    """The :class:`Scratch` of a call; a clear error when it would not fit in memory."""
    dtype = params.dtype
    line = _CACHE_LINE_BYTES // dtype.itemsize
    padded = -(-(lay.n_params + line) // line) * line
    check_memory(chunk_size, padded, dtype.itemsize)
    return Scratch(
        np.empty((MAX_CHUNKS, chunk_size), dtype=dtype),
        np.empty((MAX_CHUNKS, padded), dtype=dtype),
        np.empty((MAX_CHUNKS, _CACHE_LINE_BYTES // 8)),
        np.empty((MAX_CHUNKS, R), dtype=np.int64),
        np.empty_like(params),
        np.empty_like(running),
        np.empty_like(opt_state),
        np.empty(1, dtype=np.int64),
    )


def _kernel_data(data):
    """The data with ``Y`` always 3-D, (n, 1, m) for ``output="last"``: one signature."""
    Y = data.Y if data.Y.ndim == 3 else data.Y.reshape(data.Y.shape[0], 1, data.Y.shape[1])
    return data._replace(Y=Y)


def loss_and_gradient(model, data, params):
    """Compiled; see :func:`fastgd.backends.numpy.recurrent.loss_and_gradient`."""
    n, T = data.X.shape[0], data.X.shape[1]
    lay, size, R = make_layout(model, n, T, params.dtype.itemsize)
    scratch = make_scratch(lay, size, R, params, params[:0], params[:0].reshape(0, 0))
    mode = PARALLEL if numba.config.NUMBA_NUM_THREADS > 1 and _n_chunks.py_func(lay, n) > 1 else SERIAL  # fmt: skip
    with single_threaded_blas():
        return _LOSS_AND_GRADIENT[mode](lay, _kernel_data(data), params, scratch)


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled; see :meth:`fastgd.backends.contract.Backend.train_epochs`."""
    rows = min(int(update.batch_size), data.X.shape[0])
    lay, size, R = make_layout(model, rows, data.X.shape[1], state.params.dtype.itemsize)
    scratch = make_scratch(lay, size, R, state.params, state.running, state.opt_state)
    update = UpdateConfig(int(update.batch_size), int(update.opt_code), update.hyper,
                          float(update.tol), int(update.n_iter_no_change))  # fmt: skip
    block = EpochBlock(block.orders, block.lr_epochs, int(block.n_epochs), block.history,
                       block.grad_norms)  # fmt: skip
    parallel = n_threads > 1 and _n_chunks.py_func(lay, rows) > 1
    mode = PARALLEL if parallel else SERIAL
    threads = numba_threads(n_threads) if parallel else contextlib.nullcontext()
    with threads, single_threaded_blas():
        n_done, status = _TRAIN_EPOCHS[mode](lay, _kernel_data(data), state, update, block, scratch)  # fmt: skip
    return int(n_done), int(status)
