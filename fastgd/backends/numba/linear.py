"""Numba kernels of the linear family: the whole training loop in one compiled call.

Same contract and arithmetic as :mod:`fastgd.backends.numpy.linear`. The gradient of a
mini-batch is one fused pass over its rows (decision values, loss derivative,
accumulation) instead of NumPy's two passes over X. A batch is split into chunks that
depend on the batch size only (see :mod:`fastgd._config`); each chunk sums into its own
row of a buffer, and the rows are added in chunk order, so results are bit-identical for
any thread count.

Compile time: a first fit compiles only the kernel its *mode* needs, chosen in Python
before the call (:func:`_train_mode`): ``SINGLE`` (every batch is one chunk),
``SERIAL`` (chunks in a loop), ``PARALLEL`` (chunks of large batches in a ``prange``),
``TEAM`` (the batches of an epoch on a team of threads, :func:`_team_epoch`) or
``PER_SAMPLE`` (plain SGD one row at a time). The mode is a closure constant of a
kernel factory, so Numba prunes the other modes' branches before inlining them; the
parallel regions are compiled only by ``PARALLEL`` and ``TEAM`` kernels. Every mode
walks the same chunks in the same order, and the mode never depends on the thread
count, so results are bit-identical for any ``n_threads``.
"""

import math

import numpy as np
from numba import prange

from ..._config import (
    MAX_CHUNKS,
    NUMBA_OPTIONS,
    PARALLEL_MIN_WORK,
    ROW_PADDING,
    ROWS_PER_BLOCK,
    SEVERAL_BLOCK_ENTRIES,
    TEAM_WAIT_CYCLES,
)
from ...specs import optimizers as opt
from ...specs import stopping
from ..contract import EpochBlock, LinearModel, UpdateConfig, is_sparse, n_rows
from .cache import njit
from .losses import BINARY_CROSS_ENTROPY as BCE
from .losses import MSE, _loss_block, _single_output_loss
from .prefetch import prefetch_ahead
from .sparse_rows import _per_sample_sparse, _per_sample_sparse_several, _sparse_chunk
from .team import (
    HALTED,
    LONG_WAIT,
    READY,
    SIT_OUT_CYCLES,
    SIT_OUT_MAX_CYCLES,
    SYNC_SIZE,
    YIELDED,
    YIELDS_BEFORE_EVICTING,
    asked_to_sit_out,
    evict_updater,
    finish_chunk,
    join_team,
    publish_update,
    sit_out,
    take_ticket,
    tickets_left,
    wait_for_update,
)
from .threads import numba_threads
from .update import (
    _all_finite,
    _apply_update,
    _interrupt_flag,
    _interrupted,
    _largest,
    _n_chunks,
    _n_sparse_chunks,
    _penalty_value,
    _runaway,
    _sum_chunks,
    _tolerance_rule,
)

# kernel modes (closure constants of the kernel factories; see the module docstring)
SINGLE = 0
SERIAL = 1
PARALLEL = 2
PER_SAMPLE = 3
TEAM = 4
# output shapes (closure constants too)
ONE_FEATURE = 0  # one feature, one output
ONE_OUTPUT = 1
SEVERAL = 2


@njit(inline="always", **NUMBA_OPTIONS)
def _forward_block(data, params, order, shuffled, lo, hi, k, Z, chunk):
    """Decision values ``z = x @ W + b`` of rows ``lo:hi`` into ``Z[chunk, :hi - lo]``
    (the first read of each row: the row a few places ahead is prefetched)."""
    X = data.X
    d = X.shape[1]
    bias = d * k
    for r in range(lo, hi):
        prefetch_ahead(X, data.Y, data.weights, order, shuffled, r)
        i = order[r] if shuffled else r
        for c in range(k):
            Z[chunk, r - lo, c] = params[bias + c]
        for j in range(d):
            xj = X[i, j]
            for c in range(k):
                Z[chunk, r - lo, c] += xj * params[j * k + c]


@njit(inline="always", **NUMBA_OPTIONS)
def _one_feature_rows(X, Y, weights, params, order, lo, hi, loss_code, shuffled, weighted):
    """Loss and gradient sums ``(loss, d/dw, d/db)`` of rows ``lo:hi`` with one feature."""
    w, b = params[0], params[1]
    loss, grad_w, grad_b = 0.0, 0.0, 0.0
    for r in range(lo, hi):
        if shuffled:  # (in order the loop of least squares is vectorized: no prefetch)
            prefetch_ahead(X, Y, weights, order, shuffled, r)
        # an unsigned index: no test for a negative (wrap-around) index, which kept the
        # loop from vectorizing
        i = np.uint64(order[r] if shuffled else r)
        x = X[i, 0]
        row_loss, dz = _single_output_loss(x * w + b, Y[i, 0], loss_code)
        if weighted:
            row_loss *= weights[i]
            dz *= weights[i]
        loss += row_loss
        grad_w += dz * x
        grad_b += dz
    return loss, grad_w, grad_b


@njit(inline="always", **NUMBA_OPTIONS)
def _chunk_rows(start, stop, n_chunks, chunk):
    """Rows ``lo:hi`` of chunk ``chunk`` of the batch ``start:stop``."""
    size = stop - start
    return start + (chunk * size) // n_chunks, start + ((chunk + 1) * size) // n_chunks


# The chunk functions below share one signature: they sum the per-sample gradients of
# chunk ``chunk`` of the batch ``start:stop`` into ``G[chunk, :n_params]`` and its summed
# loss into ``G[chunk, n_params]``. Arrays are indexed, never sliced, in per-row code: a
# slice is a new array whose reference count Numba updates atomically (~50 ns per row).
# For the same reason a row loop calls no inlined function with array arguments (each
# becomes a new variable, counted per row): it indexes the arrays itself and calls
# intrinsics (prefetch_ahead, _interrupt_flag) or functions of scalars.


@njit(inline="always", **NUMBA_OPTIONS)
def _one_feature_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z):  # fmt: skip
    """Chunk gradient with one feature and one output: ``(w, b)`` summed in registers.

    The general loop carries the gradient from row to row through memory, and its two
    one-trip inner loops cost more than the arithmetic.
    """
    X, Y, weights = data.X, data.Y, data.weights
    lo, hi = _chunk_rows(start, stop, n_chunks, chunk)
    weighted = weights.shape[0] > 0
    # Called with constant arguments, the loop of a full batch of least squares has no
    # per-row branch left and is vectorized: 0.5 instead of 5 ns per row (measured).
    # Cross-entropy rows cost ~50 ns in exp and log1p; they take the general call.
    if loss_code == MSE and not shuffled and not weighted:
        sums = _one_feature_rows(X, Y, weights, params, order, lo, hi, MSE, False, False)
    else:
        sums = _one_feature_rows(X, Y, weights, params, order, lo, hi, loss_code, shuffled, weighted)  # fmt: skip
    G[chunk, 0], G[chunk, 1] = sums[1], sums[2]
    G[chunk, 2] = sums[0]


@njit(inline="always", **NUMBA_OPTIONS)
def _one_output_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z):  # fmt: skip
    """Chunk gradient of a one-output model, in one pass over the rows.

    Per row the decision value, its loss and dloss/dz, and the gradient terms added while
    the row is still in L1 cache; no decision value goes through the Z buffer. The row
    loop is compiled once per loss, with the loss code a constant: a loop that tests a
    run-time code in every row keeps the other loss's path live and spills registers
    (full batch of 1,000,000 x 100 least squares, 1 thread: 0.195 / 0.197 s before,
    0.179 / 0.172 s after, README "Numba's row loop per loss").
    """
    X, Y, weights = data.X, data.Y, data.weights
    lo, hi = _chunk_rows(start, stop, n_chunks, chunk)
    d = X.shape[1]
    for j in range(d + 1):
        G[chunk, j] = 0.0
    # the chunks of a split batch go two rows at a time (:func:`_two_rows_at_a_time`);
    # n_chunks is the constant 1 in a SINGLE kernel, whose loop then has one row loop only
    if loss_code == MSE and n_chunks > 1:
        loss = _two_rows_at_a_time(X, Y, weights, params, order, shuffled, lo, hi, MSE, G, chunk)  # fmt: skip
    elif loss_code == MSE:
        loss = _one_output_rows(X, Y, weights, params, order, shuffled, lo, hi, MSE, G, chunk)
    elif n_chunks > 1:
        loss = _two_rows_at_a_time(X, Y, weights, params, order, shuffled, lo, hi, BCE, G, chunk)  # fmt: skip
    else:
        loss = _one_output_rows(X, Y, weights, params, order, shuffled, lo, hi, BCE, G, chunk)
    G[chunk, d + 1] = loss


@njit(inline="always", **NUMBA_OPTIONS)
def _one_output_rows(X, Y, weights, params, order, shuffled, lo, hi, loss_code, G, chunk):
    """The row loop of :func:`_one_output_chunk`: adds rows ``lo:hi``'s gradient terms to
    ``G[chunk]``; returns their summed loss.

    Software-pipelined: one loop over the features adds row r's gradient terms and
    computes row r + 1's decision value. Row by row, a row's gradient loop waited for its
    own dot product, reduction and loss, and the core idled on that chain between the
    rows' reads (full batch of 1,000,000 x 100, 1 thread: 76% of the streaming limit,
    against 88% pipelined in a scratch kernel). Each sum keeps its order; the last row
    of the range computes its own decision value again, unused.

    The chunks of a split batch go two rows at a time instead
    (:func:`_two_rows_at_a_time`). Zen 4 VM, 1,000,000 x 100, 1 thread, alternating
    processes: batch 256 / full 0.107 / 0.101-0.108 s -> 0.097-0.098 / 0.087-0.089 s; at
    batch 32 (a single chunk of 32 rows) two rows at a time took 0.101-0.103 s against
    0.094-0.095 s one at a time.
    """
    d = X.shape[1]
    weighted = weights.shape[0] > 0
    loss = 0.0
    if lo >= hi:
        return loss
    i = order[lo] if shuffled else lo
    v = params[d]
    for j in range(d):
        v += X[i, j] * params[j]
    for r in range(lo, hi):
        prefetch_ahead(X, Y, weights, order, shuffled, r)
        i = order[r] if shuffled else r
        after = min(r + 1, hi - 1)
        following = order[after] if shuffled else after
        dz, row_loss = _weighted_loss(v, Y, weights, i, loss_code, weighted)
        loss += row_loss
        v = params[d]
        for j in range(d):
            v += X[following, j] * params[j]
            G[chunk, j] += dz * X[i, j]
        G[chunk, d] += dz
    return loss


@njit(inline="always", **NUMBA_OPTIONS)
def _two_rows_at_a_time(X, Y, weights, params, order, shuffled, lo, hi, loss_code, G, chunk):
    """:func:`_one_output_rows` two rows at a time (the chunks of a split batch): adds
    rows ``lo:hi``'s gradient terms to ``G[chunk]``; returns their summed loss.

    Two rows at a time, software-pipelined: one loop over the features adds rows r and
    r + 1's gradient terms and computes rows r + 2 and r + 3's decision values. Row by
    row, a row's gradient loop waited for its own dot product, reduction and loss, and
    the core idled on that chain between the rows' reads (full batch of 1,000,000 x 100,
    1 thread: 76% of the streaming limit, against 88% pipelined in a scratch kernel).
    Two rows per pass load each weight and each entry of G once for both, and store G
    once: on the Zen 4 VM the loop is bound by those loads and stores, not by memory
    (rows in L2 cache ran as fast as rows from memory). With an odd count, the last row
    of the range computes its decision value twice.
    """
    d = X.shape[1]
    weighted = weights.shape[0] > 0
    loss = 0.0
    if lo >= hi:
        return loss
    ia = order[lo] if shuffled else lo
    ib = order[min(lo + 1, hi - 1)] if shuffled else min(lo + 1, hi - 1)
    va, vb = params[d], params[d]
    for j in range(d):
        va += X[ia, j] * params[j]
        vb += X[ib, j] * params[j]
    for r in range(lo, hi, 2):
        prefetch_ahead(X, Y, weights, order, shuffled, r)
        prefetch_ahead(X, Y, weights, order, shuffled, r + 1)
        i1 = order[r] if shuffled else r
        dz1, row_loss = _weighted_loss(va, Y, weights, i1, loss_code, weighted)
        loss += row_loss
        dz2 = 0.0  # an odd count: the last row alone (a second term of 0 into G)
        i2 = i1
        if r + 1 < hi:
            i2 = order[r + 1] if shuffled else r + 1
            dz2, row_loss = _weighted_loss(vb, Y, weights, i2, loss_code, weighted)
            loss += row_loss
        G[chunk, d] += dz1 + dz2
        if r + 2 >= hi:  # the last rows: no decision values to compute
            for j in range(d):
                G[chunk, j] += dz1 * X[i1, j] + dz2 * X[i2, j]
            break
        fa, fb = r + 2, min(r + 3, hi - 1)
        if shuffled:
            fa, fb = order[fa], order[fb]
        va, vb = params[d], params[d]
        for j in range(d):
            va += X[fa, j] * params[j]
            vb += X[fb, j] * params[j]
            G[chunk, j] += dz1 * X[i1, j] + dz2 * X[i2, j]
    return loss


@njit(inline="always", **NUMBA_OPTIONS)
def _weighted_loss(v, Y, weights, i, loss_code, weighted):
    """``(dloss/dz, loss)`` of row ``i`` with decision value ``v``, both times the row's
    sample weight when ``weighted``.

    Both are always multiplied, by 1 when unweighted (exact, so the same values): with
    the multiplications inside the test of ``weighted``, the two-row loop took 10-13%
    longer, rows in L2 (README "Numba's weights without a branch")."""
    row_loss, dz = _single_output_loss(v, Y[i, 0], loss_code)
    scale = weights[i] if weighted else 1.0
    return dz * scale, row_loss * scale


@njit(inline="always", **NUMBA_OPTIONS)
def _block_of_rows(data, order, shuffled, lo, hi, Xg, chunk):
    """Rows ``lo:hi`` of the batch as a C-contiguous block: a view of X in order, else
    gathered into the chunk's buffer ``Xg[chunk]`` (the rows ahead prefetched)."""
    X = data.X
    if not shuffled:
        return X[lo:hi]
    xb = Xg[chunk, : hi - lo]
    for r in range(lo, hi):
        prefetch_ahead(X, data.Y, data.weights, order, shuffled, r)
        i = order[r]
        for j in range(X.shape[1]):
            xb[r - lo, j] = X[i, j]
    return xb


@njit(inline="always", **NUMBA_OPTIONS)
def _several_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, work):  # fmt: skip
    """Chunk gradient of a ``k``-output model, in blocks of ``Z.shape[1]`` rows.

    Per block two BLAS products, ``Z = X_b W + b`` and ``T = X_b^T D`` (D: the loss
    derivatives written over Z), with the block of X in cache for the second: per row,
    the ``d x k`` multiply-adds run at the matrix-product rate, where a row-by-row loop
    carried the ``d x k`` gradient through memory. ``T`` is added to the chunk's sums
    after each block, in block order (the blocks depend on the batch, not the threads).
    ``work``: the buffers ``(Z, Xg)`` of :func:`_buffers`.
    """
    X, Y, weights = data.X, data.Y, data.weights
    Z, Xg = work
    lo, hi = _chunk_rows(start, stop, n_chunks, chunk)
    d = X.shape[1]
    bias = d * k
    for j in range(bias + k):
        G[chunk, j] = 0.0
    W = params[:bias].reshape((d, k))
    T = np.empty((d, k), dtype=params.dtype)
    loss = 0.0
    block = Z.shape[1]
    for block_lo in range(lo, hi, block):
        block_hi = min(block_lo + block, hi)
        m = block_hi - block_lo
        xb = _block_of_rows(data, order, shuffled, block_lo, block_hi, Xg, chunk)
        zb = Z[chunk, :m]
        np.dot(xb, W, zb)
        for r in range(m):
            for c in range(k):
                zb[r, c] += params[bias + c]
        loss += _loss_block(Y, weights, order, shuffled, block_lo, block_hi, loss_code, k, Z, chunk)
        np.dot(xb.T, zb, T)
        for j in range(d):
            for c in range(k):
                G[chunk, j * k + c] += T[j, c]
        for r in range(m):
            for c in range(k):
                G[chunk, bias + c] += zb[r, c]
    G[chunk, bias + k] = loss


@njit(inline="always", **NUMBA_OPTIONS)
def _chunk_gradient(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, G, work, shape):  # fmt: skip
    """Any chunk function, chosen by ``shape`` (the kernel's closure constant, passed down
    so that each parallel loop is compiled for its one shape): the body of the parallel
    loop.

    Inlined, as before the redesign. A separately compiled body would compile faster, but
    its rounding then depended on whether it was compiled in the process or loaded from
    the disk cache (measured: the loss history of a 3-output model differed in the last
    bits), so results would not be reproducible. ``work``: ``(Z, Xg)`` of :func:`_buffers`.
    """
    Z = work[0]
    k = params.shape[0] // (data.X.shape[1] + 1) if shape == SEVERAL else 1  # (d + 1) k params
    if shape == SEVERAL:
        _several_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, work)  # fmt: skip
    elif shape == ONE_FEATURE:
        _one_feature_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z)  # fmt: skip
    else:
        _one_output_chunk(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, k, G, Z)  # fmt: skip


@njit(parallel=True, **NUMBA_OPTIONS)
def _batch_parallel(data, params, order, shuffled, start, stop, n_chunks, loss_code, G, work, shape):  # fmt: skip
    for chunk in prange(n_chunks):
        _chunk_gradient(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, G, work, shape)  # fmt: skip


@njit(inline="always", **NUMBA_OPTIONS)
def _ticket_span(n_chunks, members):
    """``(chunks per ticket, tickets)`` of a batch of ``n_chunks`` chunks on a team of
    ``members``: as many tickets as members (at most one per chunk)."""
    if n_chunks == 0:
        return 1, 0
    span = -(-n_chunks // min(members, n_chunks))
    return span, -(-n_chunks // span)


@njit(**NUMBA_OPTIONS)
def _team_member(data, params, order, shuffled, n, batch_size, loss_code, G, work, step, team, shape):  # fmt: skip
    """One member of a team running the batches of an epoch (see :mod:`.team`).

    A batch's chunks are dealt in as many tickets as the team has members (consecutive
    chunks each; the last, shorter batch has its own chunk count): a ticket per chunk
    cost two contended atomic operations per chunk, measured 3-5% of an epoch at batch
    256 on 2 threads. The member that finishes a batch's last ticket sums the chunks in
    chunk order and applies the update, as the serial loop does, so the result never
    depends on which member ran what. ``step``: the update's arguments
    ``(n_weights, n_trained, opt_code, hyper, opt_state, step_count, lr, finishing,
    stop_state)``; ``team``: ``(sync, totals, members)``, the counters of :mod:`.team`,
    ``totals[0]``, the sum of the batches' losses, in batch order, and the team's size.
    """
    n_weights, n_trained, opt_code, hyper, opt_state, step_count, lr, finishing, stop_state = step  # fmt: skip
    sync, totals, members, wait_limit = team
    p = params.shape[0]
    full = n // batch_size
    per_full = _n_chunks(batch_size)
    rest = n - full * batch_size
    per_last = _n_chunks(rest) if rest > 0 else 0
    span_full, tickets_full = _ticket_span(per_full, members)
    span_last, tickets_last = _ticket_span(per_last, members)
    total = full * tickets_full + tickets_last
    if not tickets_left(sync, total):  # a slot that starts late: one read, no write
        return
    me, yields, pause = join_team(sync), 0, SIT_OUT_CYCLES
    while True:
        if asked_to_sit_out(sync, me):
            if not sit_out(sync, total, pause):
                return
            pause = min(2 * pause, SIT_OUT_MAX_CYCLES)
        ticket = take_ticket(sync)
        if ticket >= total:
            return
        # the last, shorter batch can have more tickets than a full one (3 chunks on 3
        # members: 3 tickets; 4 chunks: 2 of 2), so it is told apart by the ticket
        batch = min(ticket // tickets_full, full)
        n_chunks, span, tickets = per_full, span_full, tickets_full
        if batch == full:
            n_chunks, span, tickets = per_last, span_last, tickets_last
        first = (ticket - batch * tickets_full) * span
        waited = wait_for_update(sync, batch, wait_limit)
        if waited < 0:
            return
        if waited != READY:
            yields = yields + 1 if waited == YIELDED else 0
        if waited == LONG_WAIT or yields == YIELDS_BEFORE_EVICTING:
            evict_updater(sync)  # the member that was late goes; the rest go on without it
            yields = 0
        start = batch * batch_size
        stop = min(start + batch_size, n)
        for chunk in range(first, min(first + span, n_chunks)):
            _chunk_gradient(data, params, order, shuffled, start, stop, n_chunks, chunk, loss_code, G, work, shape)  # fmt: skip
        if finish_chunk(sync) == batch * tickets_full + tickets:  # the batch's last ticket
            _sum_chunks(G, n_chunks, p + 1)
            totals[0] += G[0, p]
            _apply_update(params, G, 1.0 / (stop - start), n_weights, n_trained, opt_code, hyper, opt_state, step_count, lr, finishing)  # fmt: skip
            publish_update(sync, batch, stop < n and _interrupted(stop_state), me)


@njit(parallel=True, **NUMBA_OPTIONS)
def _team_epoch(data, params, order, shuffled, n, batch_size, loss_code, G, work, step, team, shape):  # fmt: skip
    """The mini-batches of one epoch on a team of ``numba.get_num_threads()`` members
    (one parallel region, no fork/join per batch); returns the summed loss and whether
    the epoch was interrupted. Any team size gives the same result. ``team``: zeroed
    ``(sync, totals)`` made by the caller (arrays made in this function and written only
    by the calls in its loop were read back as zeros, by Numba's parallel passes), and
    the team's size."""
    for _ in prange(team[2]):  # one slot per thread of the call (Numba's static
        # schedule gives each thread one); a slot that starts late finds the tickets
        # taken and returns at once
        _team_member(data, params, order, shuffled, n, batch_size, loss_code, G, work, step, team, shape)  # fmt: skip
    return team[1][0], team[0][HALTED] != 0


@njit(inline="always", **NUMBA_OPTIONS)
def _epoch_on_team(model, data, state, update, order, n, G, work, lr, finishing, sizes, shape):  # fmt: skip
    """One epoch of mini-batches on the team (:func:`_team_epoch`), unless Ctrl-C was
    requested before it; returns the summed loss and whether the epoch was interrupted.
    ``sizes``: ``(n_weights, n_trained, (members, wait_limit))``, ``members`` the threads
    of the call and ``wait_limit`` the team's ``TEAM_WAIT_CYCLES``; ``order`` is empty for
    rows in order."""
    if _interrupted(state.stop_state):
        return 0.0, True
    step = (sizes[0], sizes[1], update.opt_code, update.hyper, state.opt_state, state.step_count, lr, finishing, state.stop_state)  # fmt: skip
    team = (np.zeros(SYNC_SIZE, dtype=np.int64), np.zeros(1), sizes[2][0], sizes[2][1])
    return _team_epoch(data, state.params, order, order.shape[0] > 0, n, update.batch_size, model.loss_code, G, work, step, team, shape)  # fmt: skip


@njit(inline="always", **NUMBA_OPTIONS)
def _per_sample_one_output(data, params, order, shuffled, loss_code, n_trained, lr, stop_state):  # fmt: skip
    """One epoch of per-sample SGD of a one-output model; returns the summed loss and the
    rows done (fewer than n when interrupted: ``stop_state`` is polled before each row).

    The same arithmetic as a mini-batch of one row (the gradient is ``dz * x``, divided by
    1), without the chunk buffer: each step updates the parameters directly.
    """
    X, Y, weights = data.X, data.Y, data.weights
    n, d = X.shape
    if shuffled:  # the order's rows (early stopping: the training rows only)
        n = order.shape[0]
    weighted = weights.shape[0] > 0
    loss_sum = 0.0
    done = n
    if n == 0:
        return loss_sum, done
    i, g, v = order[0] if shuffled else 0, 0.0, params[d]
    # Pipelined: one loop over the features makes row r's update of the weights and, from
    # the updated weights, row r + 1's decision value (the intercept updated first). Each
    # weight is updated before it is read, so the values are the row-by-row loop's. Pass
    # r = -1 makes a step of 0 and row 0's decision value: every decision value of every
    # epoch comes from this one loop, so an interrupted epoch resumes to the bit.
    for r in range(-1, n):
        if r >= 0:
            if _interrupt_flag(stop_state):  # (the intrinsic: no array bound per row)
                done = r
                break
            prefetch_ahead(X, Y, weights, order, shuffled, r)
            i = order[r] if shuffled else r
            g, row_loss = _weighted_loss(v, Y, weights, i, loss_code, weighted)
            loss_sum += row_loss
        after = min(r + 1, n - 1)
        following = order[after] if shuffled else after
        if n_trained > d:
            params[d] -= lr * g
        v = params[d]
        for j in range(d):
            params[j] -= lr * (g * X[i, j])
            v += X[following, j] * params[j]
    return loss_sum, done


@njit(inline="always", **NUMBA_OPTIONS)
def _per_sample_several(data, params, order, shuffled, loss_code, k, n_trained, lr, Z, stop_state):  # fmt: skip
    """As :func:`_per_sample_one_output`, for ``k`` outputs (dloss/dz through ``Z[0, 0]``)."""
    X, Y, weights = data.X, data.Y, data.weights
    n, d = X.shape
    if shuffled:  # the order's rows (early stopping: the training rows only)
        n = order.shape[0]
    bias = d * k
    loss_sum = 0.0
    done = n
    for r in range(n):
        if _interrupted(stop_state):
            done = r
            break
        i = order[r] if shuffled else r
        _forward_block(data, params, order, shuffled, r, r + 1, k, Z, 0)
        loss_sum += _loss_block(Y, weights, order, shuffled, r, r + 1, loss_code, k, Z, 0)
        for j in range(d):
            xj = X[i, j]
            for c in range(k):
                params[j * k + c] -= lr * (xj * Z[0, 0, c])
        for c in range(n_trained - bias):
            params[bias + c] -= lr * Z[0, 0, c]
    return loss_sum, done


@njit(inline="always", **NUMBA_OPTIONS)
def _copy_state(params, opt_state, params_to, opt_state_to):
    """Copy params and optimizer state, element by element.

    Element loops, not slice assignment: a slice assignment builds array views (~40 ns
    per epoch, measured) and pulls in Numba's shape-mismatch error path, seconds of
    compile time.
    """
    for j in range(params.shape[0]):
        params_to[j] = params[j]
    for a in range(opt_state.shape[0]):
        for j in range(opt_state.shape[1]):
            opt_state_to[a, j] = opt_state[a, j]


@njit(inline="always", **NUMBA_OPTIONS)
def _end_epoch(state, update, block, epoch, epoch_loss, n_weights, saved):
    """Close epoch ``epoch``: history, divergence (restoring ``saved``), tolerance rule.

    ``epoch_loss`` is the mean data loss; ``saved = (params, opt_state, step_count)`` at
    the start of the epoch. Returns a :mod:`fastgd.specs.stopping` code, or -1 to go on.
    """
    params = state.params
    l1, l2 = update.hyper[opt.L1], update.hyper[opt.L2]
    if l1 > 0.0 or l2 > 0.0:
        epoch_loss += _penalty_value(params, n_weights, l1, l2)
    block.history[epoch] = epoch_loss
    finite = math.isfinite(epoch_loss) and _all_finite(params)
    if not finite or _runaway(epoch_loss, state.stop_state, _largest(params)):
        _copy_state(saved[0], saved[1], params, state.opt_state)
        state.step_count[0] = saved[2]
        return stopping.DIVERGED
    if _tolerance_rule(epoch_loss, update.tol, update.n_iter_no_change, state.stop_state):
        return stopping.CONVERGED
    return -1


@njit(inline="always", **NUMBA_OPTIONS)
def _halt(state, saved):
    """An interrupted epoch: keep the state after its last whole update, or put back
    ``saved`` (its start, as :func:`_end_epoch`) if a parameter is not finite."""
    if not _all_finite(state.params):
        _copy_state(saved[0], saved[1], state.params, state.opt_state)
        state.step_count[0] = saved[2]
    return stopping.INTERRUPTED


@njit(inline="always", **NUMBA_OPTIONS)
def _several_block_rows(d):
    """Rows per block of a multi-output model: about SEVERAL_BLOCK_ENTRIES entries of X."""
    return max(ROWS_PER_BLOCK, min(512, SEVERAL_BLOCK_ENTRIES // d))


@njit(inline="always", **NUMBA_OPTIONS)
def _buffers(blas_blocks, shuffled, d, k, dtype):
    """``Z``: each chunk's decision values of one block of rows; ``Xg``: each chunk's
    gathered rows of a block (shuffled rows of a multi-output model, read by BLAS)."""
    rows = _several_block_rows(d) if blas_blocks else ROWS_PER_BLOCK
    Z = np.empty((MAX_CHUNKS, rows, k), dtype=dtype)
    Xg = np.empty((MAX_CHUNKS if blas_blocks and shuffled else 0, rows, d), dtype=dtype)
    return Z, Xg


def _make_train_kernel(shape, mode, sparse=False):
    """The compiled epoch loop of one output shape, one mode and one data kind.

    ``shape``, ``mode`` and ``sparse`` are closure constants (ints and a bool, so the
    on-disk cache key stays the same from process to process): Numba prunes the branches
    of the other shapes, modes and data kind before inlining their code. Each kernel
    compiles on its first call. The batch gradient is written in each kernel, not in a
    shared closure: a kernel that captures another dispatcher is never found in the cache.

    ``sparse``: the rows are :class:`~fastgd.backends.contract.SparseData`, read by the
    row accessor of :mod:`.sparse_rows` (its chunk function and its per-sample epoch);
    everything else (chunks, their order and sums, the update, the end of an epoch) is
    this loop. Sparse chunks run serially (``SINGLE`` or ``SERIAL``): the design note's
    measurements found every parallel split of a sparse mini-batch slower, as the
    randomly touched cache lines of the weights and the accumulators move between cores.
    ``team``, the kernel's last argument, is ``(members, wait_limit)``: the number of
    threads of the call (the size of a ``TEAM`` mode's team) and the cycles after which a
    waiting member asks the member it waits for to sit out (:data:`TEAM_WAIT_CYCLES`).
    """

    @njit(**NUMBA_OPTIONS)
    def train(model, data, state, update, block, team):
        if sparse:
            n, d = data.indptr.shape[0] - 1, data.n_features
        else:
            n, d = data.X.shape
        params, opt_state, step_count = state.params, state.opt_state, state.step_count
        p, k, loss_code = params.shape[0], model.n_outputs, model.loss_code
        n_trained = p if model.fit_intercept else d * k
        shuffled = block.orders.shape[0] > 0
        if shuffled:  # the orders' rows (early stopping: the training rows only)
            n = block.orders.shape[1]
        # sparse: a chunk accumulator is d * k wide; allocate only the chunks this call uses
        buffers = (1 if mode == SINGLE or mode == PER_SAMPLE else _n_sparse_chunks(min(update.batch_size, n))) if sparse else MAX_CHUNKS  # fmt: skip
        G = np.empty((buffers, p + 1 + ROW_PADDING), dtype=params.dtype)
        Z, Xg = _buffers(shape == SEVERAL and not sparse and mode != PER_SAMPLE, shuffled, d, k, params.dtype)  # fmt: skip
        saved = (np.empty_like(params), np.empty_like(opt_state))
        natural = np.empty(0, dtype=np.int64)
        # mean, L2 term and clipping need a pass over G before the update
        hyper = update.hyper
        finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or hyper[opt.L2] > 0.0
        for epoch in range(block.n_epochs):
            _copy_state(params, opt_state, saved[0], saved[1])
            start_step = step_count[0]
            order = block.orders[epoch % block.orders.shape[0]] if shuffled else natural
            lr = block.lr_epochs[epoch]
            loss_sum = 0.0
            halted = False  # interrupted (Ctrl-C): stop_state is polled before each batch
            if mode == PER_SAMPLE:
                # sparse: plain SGD, L2 through the weight scale, O(nnz) per update
                if sparse and shape == SEVERAL:
                    loss_sum, done = _per_sample_sparse_several(data, params, order, shuffled, loss_code, k, n_trained, lr, hyper[opt.L2], Z, state.stop_state)  # fmt: skip
                elif sparse:
                    loss_sum, done = _per_sample_sparse(data, params, order, shuffled, loss_code, n_trained, lr, hyper[opt.L2], state.stop_state)  # fmt: skip
                elif shape == SEVERAL:
                    loss_sum, done = _per_sample_several(data, params, order, shuffled, loss_code, k, n_trained, lr, Z, state.stop_state)  # fmt: skip
                else:
                    loss_sum, done = _per_sample_one_output(data, params, order, shuffled, loss_code, n_trained, lr, state.stop_state)  # fmt: skip
                step_count[0] += done
                halted = done < n
            elif mode == TEAM:
                loss_sum, halted = _epoch_on_team(model, data, state, update, order, n, G, (Z, Xg), lr, finishing, (d * k, n_trained, team), shape)  # fmt: skip
            else:
                for start in range(0, n, update.batch_size):
                    halted = _interrupted(state.stop_state)
                    if halted:
                        break
                    stop = min(start + update.batch_size, n)
                    n_chunks = 1 if mode == SINGLE else (_n_sparse_chunks(stop - start) if sparse else _n_chunks(stop - start))  # fmt: skip
                    if not sparse and mode == PARALLEL and n_chunks > 1 and (stop - start) * d * k >= PARALLEL_MIN_WORK:  # fmt: skip
                        _batch_parallel(data, params, order, shuffled, start, stop, n_chunks, loss_code, G, (Z, Xg), shape)  # fmt: skip
                    else:
                        for c in range(n_chunks):
                            if sparse:
                                _sparse_chunk(data, params, order, shuffled, start, stop, n_chunks, c, loss_code, k, G, Z)  # fmt: skip
                            elif shape == ONE_FEATURE:
                                _one_feature_chunk(data, params, order, shuffled, start, stop, n_chunks, c, loss_code, k, G, Z)  # fmt: skip
                            elif shape == ONE_OUTPUT:
                                _one_output_chunk(data, params, order, shuffled, start, stop, n_chunks, c, loss_code, k, G, Z)  # fmt: skip
                            else:
                                _several_chunk(data, params, order, shuffled, start, stop, n_chunks, c, loss_code, k, G, (Z, Xg))  # fmt: skip
                    _sum_chunks(G, n_chunks, p + 1)
                    loss_sum += G[0, p]
                    _apply_update(
                        params, G, 1.0 / (stop - start), d * k, n_trained, update.opt_code, hyper,
                        opt_state, step_count, lr, finishing,
                    )  # fmt: skip
            if halted:
                return epoch, _halt(state, (saved[0], saved[1], start_step))
            status = _end_epoch(state, update, block, epoch, loss_sum / n, d * k, (saved[0], saved[1], start_step))  # fmt: skip
            if status >= 0:
                return epoch + 1, status
        return block.n_epochs, stopping.MAX_EPOCHS

    return train


def _make_gradient_kernel(shape, mode, sparse=False):
    """Mean loss and gradient over all rows, for one output shape and mode (``SINGLE``,
    ``SERIAL``, ``PARALLEL``) and data kind; closure constants as in
    :func:`_make_train_kernel` (sparse chunks serial)."""

    @njit(**NUMBA_OPTIONS)
    def gradient(model, data, params):
        if sparse:
            n, d = data.indptr.shape[0] - 1, data.n_features
            buffers = 1 if mode == SINGLE else _n_sparse_chunks(n)
        else:
            n, d = data.X.shape
            buffers = MAX_CHUNKS
        p, k, loss_code = params.shape[0], model.n_outputs, model.loss_code
        G = np.empty((buffers, p + 1 + ROW_PADDING), dtype=params.dtype)
        Z, Xg = _buffers(shape == SEVERAL and not sparse, False, d, k, params.dtype)
        order = np.empty(0, dtype=np.int64)
        # the chunks are inlined with a constant False (as before the redesign: the same
        # floating-point results); the parallel call takes a run-time False, no literal type
        shuffled = order.shape[0] > 0
        if sparse:
            n_chunks = 1 if mode == SINGLE else _n_sparse_chunks(n)
        else:
            n_chunks = 1 if mode == SINGLE else _n_chunks(n)
        if not sparse and mode == PARALLEL and n_chunks > 1 and n * d * k >= PARALLEL_MIN_WORK:
            _batch_parallel(
                data, params, order, shuffled, 0, n, n_chunks, loss_code, G, (Z, Xg), shape
            )
        else:
            for c in range(n_chunks):
                if sparse:
                    _sparse_chunk(data, params, order, False, 0, n, n_chunks, c, loss_code, k, G, Z)  # fmt: skip
                elif shape == ONE_FEATURE:
                    _one_feature_chunk(data, params, order, False, 0, n, n_chunks, c, loss_code, k, G, Z)  # fmt: skip
                elif shape == ONE_OUTPUT:
                    _one_output_chunk(data, params, order, False, 0, n, n_chunks, c, loss_code, k, G, Z)  # fmt: skip
                else:
                    _several_chunk(data, params, order, False, 0, n, n_chunks, c, loss_code, k, G, (Z, Xg))  # fmt: skip
        _sum_chunks(G, n_chunks, p + 1)
        grad = np.zeros(p, dtype=params.dtype)
        for j in range(p if model.fit_intercept else d * k):
            grad[j] = G[0, j] / n
        return G[0, p] / n, grad

    return gradient


_KERNELS = {}


def _kernels(shape, mode, sparse=False):
    """``(train, gradient)`` of a shape, mode and data kind, made on first use (compiled
    on first call)."""
    key = (shape, mode, sparse)
    if key not in _KERNELS:
        _KERNELS[key] = (
            _make_train_kernel(shape, mode, sparse),
            _make_gradient_kernel(shape, mode, sparse),
        )
    return _KERNELS[key]


def _shape(model, data):
    """``ONE_FEATURE``, ``ONE_OUTPUT`` or ``SEVERAL`` (sparse rows: never ``ONE_FEATURE``)."""
    if model.n_outputs > 1:
        return SEVERAL
    return ONE_FEATURE if not is_sparse(data) and data.X.shape[1] == 1 else ONE_OUTPUT


def _batch_mode(rows, work_per_row):
    """Mode for batches of at most ``rows`` rows: ``SINGLE``, ``SERIAL`` or ``PARALLEL``.

    ``PARALLEL`` also with one thread: a large batch then takes the same compiled chunk
    function whatever the thread count (an inlined copy of it can round differently, as
    LLVM vectorizes the copies differently), so results do not depend on ``n_threads``.
    """
    if _n_chunks.py_func(rows) == 1:
        return SINGLE
    if rows * work_per_row >= PARALLEL_MIN_WORK:
        return PARALLEL
    return SERIAL


def _train_mode(model, data, update):
    """The kernel mode a call needs (Python knows the batch sizes before the call)."""
    hyper = update.hyper
    finishing = hyper[opt.CLIP_VALUE] > 0.0 or hyper[opt.CLIP_NORM] > 0.0 or hyper[opt.L2] > 0.0
    plain_sgd = (
        update.opt_code == opt.SGD
        and hyper[opt.MOMENTUM] == 0.0
        and not finishing
        and hyper[opt.L1] == 0.0
        and hyper[opt.POWER_T] == 0.0
    )
    if update.batch_size == 1 and plain_sgd:
        return PER_SAMPLE
    if is_sparse(data):
        return _sparse_train_mode(update, data)
    n, d = data.X.shape
    if update.batch_size < n and _n_chunks.py_func(update.batch_size) > 1:
        # mini-batches of several chunks: one parallel region per epoch (a fork and a
        # join per batch cost more than a batch of a few hundred rows takes)
        return TEAM
    return _batch_mode(min(update.batch_size, n), d * model.n_outputs)


def _sparse_train_mode(update, data):
    """Sparse rows: ``PER_SAMPLE`` also with L2 (the weight scale of
    :func:`.sparse_rows._per_sample_sparse`), else ``SINGLE`` or ``SERIAL``."""
    hyper = update.hyper
    plain_sgd_l2 = (
        update.batch_size == 1
        and update.opt_code == opt.SGD
        and hyper[opt.MOMENTUM] == 0.0
        and hyper[opt.CLIP_VALUE] == 0.0
        and hyper[opt.CLIP_NORM] == 0.0
        and hyper[opt.L1] == 0.0
        and hyper[opt.POWER_T] == 0.0
    )
    if plain_sgd_l2:
        return PER_SAMPLE
    rows = min(update.batch_size, n_rows(data))
    return SINGLE if _n_sparse_chunks.py_func(rows) == 1 else SERIAL


def _typed_model(model):
    """The model with Python scalars of fixed types (one signature per dtype)."""
    return LinearModel(int(model.loss_code), int(model.n_outputs), bool(model.fit_intercept))


def _typed(model, update, block):
    """The containers with Python scalars of fixed types (one signature per dtype)."""
    model = _typed_model(model)
    update = UpdateConfig(
        int(update.batch_size), int(update.opt_code), update.hyper, float(update.tol),
        int(update.n_iter_no_change),
    )  # fmt: skip
    block = EpochBlock(block.orders, block.lr_epochs, int(block.n_epochs), block.history, block.grad_norms)  # fmt: skip
    return model, update, block


def loss_and_gradient(model, data, params):
    """Mean loss and gradient over all rows; see :func:`fastgd.backends.numpy.linear.loss_and_gradient`."""
    sparse = is_sparse(data)
    if sparse:
        mode = SINGLE if _n_sparse_chunks.py_func(n_rows(data)) == 1 else SERIAL
    else:
        n, d = data.X.shape
        mode = _batch_mode(n, d * int(model.n_outputs))
    _, kernel = _kernels(_shape(model, data), mode, sparse)
    return kernel(_typed_model(model), data, params)


def train_epochs(model, data, state, update, block, n_threads):
    """Compiled training loop; see :meth:`fastgd.backends.contract.Backend.train_epochs`.

    Sparse rows: every optimizer keeps its dense semantics (each state entry decays at
    every update, as on the dense matrix), so a mini-batch update touches all ``d * k``
    parameters and optimizer state once per batch (the chunk accumulator is zeroed and
    read once per batch too); only plain SGD at ``batch_size=1`` (with or without L2)
    costs O(nnz of the row) per update.
    """
    mode = _train_mode(model, data, update)
    kernel, _ = _kernels(_shape(model, data), mode, is_sparse(data))
    model, update, block = _typed(model, update, block)
    with numba_threads(n_threads):
        return kernel(model, data, state, update, block, (int(n_threads), int(TEAM_WAIT_CYCLES)))


def compiled_signatures():
    """Number of compiled specializations of the linear kernels (to detect recompiles)."""
    return sum(len(kernel.signatures) for kernel in dispatchers())


def dispatchers():
    """The linear kernels' dispatchers made so far in this process (for cache checks)."""
    made = [kernel for pair in _KERNELS.values() for kernel in pair]
    return [*made, _batch_parallel, _team_epoch, _team_member]
