"""Numba: the update of the flat parameters shared by every model kind.

Chunk reductions (in chunk order: the deterministic sum), the finished mean gradient
(L2 term, clipping), the optimizer step (formulas of :mod:`fastgd.specs.optimizers`), the
L1 proximal step, the penalty value and the tolerance rule; the same operations in the
same order as :mod:`fastgd.backends.numpy.update`.
"""

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..._config import MAX_CHUNKS, MIN_ROWS_PER_CHUNK, NUMBA_OPTIONS, SPARSE_ROWS_PER_CHUNK
from ...specs import optimizers as opt
from ...specs import stopping
from .cache import njit
from .team import load_word


@njit(inline="always", **NUMBA_OPTIONS)
def _n_chunks(batch_rows):
    return min(MAX_CHUNKS, max(1, batch_rows // MIN_ROWS_PER_CHUNK))


@njit(inline="always", **NUMBA_OPTIONS)
def _n_sparse_chunks(batch_rows):
    return min(MAX_CHUNKS, max(1, batch_rows // SPARSE_ROWS_PER_CHUNK))


@njit(inline="always", **NUMBA_OPTIONS)
def _sum_chunks(G, n_chunks, width):
    """Add the chunk rows of G into row 0, in chunk order (the deterministic reduction)."""
    for c in range(1, n_chunks):
        for j in range(width):
            G[0, j] += G[c, j]


@njit(inline="always", **NUMBA_OPTIONS)
def _all_finite(a):
    for v in a:
        if not math.isfinite(v):
            return False
    return True


@njit(inline="always", **NUMBA_OPTIONS)
def _finish_gradient(G, inv_rows, params, n_weights, n_trained, hyper):
    """Turn ``G[0]`` into the mean gradient, plus the L2 term, clipped by value then norm.

    Same operations as the L2 step and :func:`fastgd.backends.numpy_ref.clip_gradient`.
    """
    clip_value, clip_norm, l2 = hyper[opt.CLIP_VALUE], hyper[opt.CLIP_NORM], hyper[opt.L2]
    for j in range(n_trained):
        g = G[0, j] * inv_rows
        if l2 > 0.0 and j < n_weights:
            g += l2 * params[j]
        if clip_value > 0.0:
            g = min(max(g, -clip_value), clip_value)
        G[0, j] = g
    if clip_norm > 0.0:
        total = 0.0
        for j in range(n_trained):
            total += float(G[0, j]) ** 2
        factor = clip_norm / (math.sqrt(total) + 1e-6)
        if factor < 1.0:
            for j in range(n_trained):
                G[0, j] *= factor


@njit(inline="always", **NUMBA_OPTIONS)
def _optimizer_step(params, G, inv_rows, lo, hi, opt_code, hyper, state, t, lr):
    """Update ``t`` (1-based) of the optimizer, with gradient ``G[0, j] * inv_rows``, on
    the parameters ``lo:hi``.

    Elementwise over the flat parameters (so any split into ranges gives the same
    results), in the order of operations of
    :func:`fastgd.backends.numpy_ref.optimizer_step` (formulas: :mod:`fastgd.specs.optimizers`),
    with ``lr`` the scheduled learning rate of this update.

    The loops run over views of ``lo:hi`` from index 0: an index that LLVM cannot prove
    non-negative (``range(lo, hi)``) keeps Numba's wraparound of negative indices in the
    loop, which then stays scalar (measured 4-5x slower for Adam).
    """
    p, g_row, n = params[lo:hi], G[0, lo:hi], hi - lo
    if opt_code == opt.SGD:
        mu = hyper[opt.MOMENTUM]
        if mu == 0.0:
            for j in range(n):
                p[j] -= lr * (g_row[j] * inv_rows)
            return
        damp = 1.0 - hyper[opt.DAMPENING]
        nesterov = hyper[opt.NESTEROV] != 0.0
        s0 = state[0, lo:hi]
        for j in range(n):
            g = g_row[j] * inv_rows
            b = g if t == 1 else mu * s0[j] + damp * g
            s0[j] = b
            p[j] -= lr * (g + mu * b if nesterov else b)
    elif opt_code == opt.ADAGRAD:
        clr = lr / (1.0 + (t - 1) * hyper[opt.LR_DECAY])
        eps = hyper[opt.EPS]
        s0 = state[0, lo:hi]
        for j in range(n):
            g = g_row[j] * inv_rows
            total = s0[j] + g * g
            s0[j] = total
            p[j] -= clr * g / (math.sqrt(total) + eps)
    elif opt_code == opt.RMSPROP:
        alpha, eps, mu = hyper[opt.ALPHA], hyper[opt.EPS], hyper[opt.MOMENTUM]
        centered = hyper[opt.CENTERED] != 0.0
        # the rows a variant does not use are views that are never read
        s0, s1, s2 = state[0, lo:hi], state[1, lo:hi], state[2, lo:hi]
        for j in range(n):
            g = g_row[j] * inv_rows
            v = alpha * s0[j] + (1.0 - alpha) * g * g
            s0[j] = v
            if centered:
                a = alpha * s1[j] + (1.0 - alpha) * g
                s1[j] = a
                denom = math.sqrt(v - a * a) + eps
            else:
                denom = math.sqrt(v) + eps
            if mu > 0.0:
                b = mu * s2[j] + g / denom
                s2[j] = b
                p[j] -= lr * b
            else:
                p[j] -= lr * g / denom
    else:  # ADAM, ADAMW
        s0, s1, s2 = state[0, lo:hi], state[1, lo:hi], state[2, lo:hi]
        _adam_step(p, g_row, inv_rows, n, opt_code, hyper, s0, s1, s2, t, lr)


@njit(inline="always", **NUMBA_OPTIONS)
def _adam_step(p, g_row, inv_rows, n, opt_code, hyper, s0, s1, s2, t, lr):
    """Adam and AdamW (:func:`_optimizer_step`) on the views ``p``, ``g_row`` and the
    state rows ``s0, s1, s2`` of ``n`` entries."""
    b1, b2, eps, wd = (
        hyper[opt.BETA1],
        hyper[opt.BETA2],
        hyper[opt.EPS],
        hyper[opt.WEIGHT_DECAY],
    )
    decoupled = opt_code == opt.ADAMW
    amsgrad = hyper[opt.AMSGRAD] != 0.0
    step = lr / (1.0 - b1**t)
    correction2 = math.sqrt(1.0 - b2**t)
    if not decoupled and wd == 0.0 and not amsgrad:
        # plain Adam: the same operations, in a loop without branches, which LLVM
        # vectorizes (square roots and divisions 4 at a time: measured 3x faster on
        # 6.4 million parameters; the branchy loop below stays scalar)
        for j in range(n):
            g = g_row[j] * inv_rows
            m = b1 * s0[j] + (1.0 - b1) * g
            v = b2 * s1[j] + (1.0 - b2) * g * g
            s0[j] = m
            s1[j] = v
            p[j] -= step * m / (math.sqrt(v) / correction2 + eps)
        return
    for j in range(n):
        g = g_row[j] * inv_rows
        if decoupled:
            p[j] *= 1.0 - lr * wd
        elif wd != 0.0:
            g = g + wd * p[j]
        m = b1 * s0[j] + (1.0 - b1) * g
        v = b2 * s1[j] + (1.0 - b2) * g * g
        s0[j] = m
        s1[j] = v
        if amsgrad:
            v = max(s2[j], v)
            s2[j] = v
        p[j] -= step * m / (math.sqrt(v) / correction2 + eps)


@njit(inline="always", **NUMBA_OPTIONS)
def _soft_threshold(params, n_weights, threshold):
    """L1 proximal step: shrink each weight toward 0 by ``threshold``, stopping at 0."""
    for j in range(n_weights):
        w = params[j]
        if w > threshold:
            params[j] = w - threshold
        elif w < -threshold:
            params[j] = w + threshold
        else:
            params[j] = 0.0


@njit(inline="always", **NUMBA_OPTIONS)
def _penalty_value(params, n_weights, l1, l2):
    """``l1 * sum|w| + l2 / 2 * sum w**2`` over the weights, accumulated in float64."""
    absolute, square = 0.0, 0.0
    for j in range(n_weights):
        w = float(params[j])
        absolute += abs(w)
        square += w * w
    return l1 * absolute + 0.5 * l2 * square


@njit(inline="always", **NUMBA_OPTIONS)
def _apply_update(params, G, inv_rows, n_weights, n_trained, opt_code, hyper, state, step_count, lr_epoch, finishing):  # fmt: skip
    """One update from the summed gradient ``G[0] * inv_rows``, shared by every model.

    The order of :mod:`fastgd.specs.optimizers` (as ``numpy_ref.apply_update``): L2 term
    and clipping (when ``finishing``), the scheduled rate of update ``t``, the optimizer
    step, the L1 proximal step on ``params[:n_weights]``. Increments ``step_count[0]``.
    """
    t, lr, inv_rows = _start_update(params, G, inv_rows, n_weights, n_trained, hyper, step_count, lr_epoch, finishing)  # fmt: skip
    _optimizer_step(params, G, inv_rows, 0, n_trained, opt_code, hyper, state, t, lr)
    if hyper[opt.L1] > 0.0:
        _soft_threshold(params, n_weights, lr * hyper[opt.L1])


@njit(inline="always", **NUMBA_OPTIONS)
def _start_update(params, G, inv_rows, n_weights, n_trained, hyper, step_count, lr_epoch, finishing):  # fmt: skip
    """The steps of :func:`_apply_update` before the optimizer's: increments
    ``step_count[0]`` to ``t``, finishes ``G[0]`` (when ``finishing``); returns ``t``, the
    scheduled rate of update ``t`` and the factor of ``G[0]`` in the optimizer step."""
    step_count[0] += 1
    t = step_count[0]
    if finishing:
        _finish_gradient(G, inv_rows, params, n_weights, n_trained, hyper)
        inv_rows = 1.0  # G[0] now holds the finished mean gradient
    power_t = hyper[opt.POWER_T]
    lr = lr_epoch / t**power_t if power_t != 0.0 else lr_epoch
    return t, lr, inv_rows


# the rule of :mod:`fastgd.specs.stopping`, compiled as it is (one rule for every backend)
_tolerance_rule = njit(inline="always", **NUMBA_OPTIONS)(stopping.tolerance_rule)
_runaway = njit(inline="always", **NUMBA_OPTIONS)(stopping.runaway)


@njit(inline="always", **NUMBA_OPTIONS)
def _largest(params):
    """The largest finite number of the parameters' dtype (float32 or float64)."""
    return 3.4028234663852886e38 if params.itemsize == 4 else 1.7976931348623157e308


@intrinsic
def _interrupt_flag(typingctx, stop_state):
    """``stop_state[INTERRUPT] != 0`` for a float64 array, read with an atomic (monotonic)
    load.

    The flag is written by another thread while the kernel runs (Ctrl-C,
    :mod:`fastgd.training.interrupt`). A plain load could be hoisted out of a loop that
    LLVM sees never storing to it, and the change would then never be seen; an atomic
    load is emitted at every poll (on x86 it is an ordinary ``mov``). The 8 bytes are
    compared as an integer: the flag is 0.0 or 1.0.
    """
    if not (isinstance(stop_state, types.Array) and stop_state.dtype == types.float64):
        return None

    def codegen(context, builder, signature, args):
        (array_type,) = signature.args
        ary = context.make_array(array_type)(context, builder, args[0])
        position = context.get_constant(types.intp, stopping.INTERRUPT)
        pointer = cgutils.get_item_pointer(context, builder, array_type, ary, [position])
        word = ir.IntType(64)
        bits = load_word(builder, builder.bitcast(pointer, word.as_pointer()), "monotonic")
        return builder.icmp_unsigned("!=", bits, ir.Constant(word, 0))

    return types.boolean(stop_state), codegen


@njit(inline="always", **NUMBA_OPTIONS)
def _interrupted(stop_state):
    """True once a stop was requested (``stop_state[INTERRUPT]``, set from another thread)."""
    return _interrupt_flag(stop_state)
