"""Numba: the synchronisation of a team of threads that share the batches of an epoch.

A mini-batch of a few hundred rows takes microseconds, as long as opening and closing a
parallel region, so forking per batch gains nothing. A team instead opens one parallel
region per epoch; its members take the chunks of the batches one ticket (a run of
consecutive chunks) at a time from a shared counter, and the member that finishes the
last ticket of a batch applies its update and publishes it. A member waits only for the
update of the batch before its ticket's, so no member ever waits for one that has not
started: a team whose members run one after the other (one thread, or a threading layer
that runs the iterations of a ``prange`` in turn) does every ticket itself and never
blocks.

The counters are ``int64`` entries of a small array, read and written with the atomic
operations of LLVM emitted by the intrinsics below (Numba has none of its own):
``_fetch_add`` (sequentially consistent), ``_load_acquire`` and ``_store_release``. A
member that publishes an update stores the parameters first and the count last (release);
a member that sees the count (acquire) sees the parameters. A member that has waited a
while yields its core (``sched_yield``), so that on a busy machine the member it waits
for gets to run. A member that waited long, or had to yield in several waits in a row,
asks the member that published the awaited update to sit out a while (:func:`sit_out`):
on a machine with more runnable threads than cores, that member shares its core, and
every batch would wait for it again. The cycle counter (:func:`_cycles`) times the waits
and the sit-outs.
"""

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..._config import NUMBA_OPTIONS
from .cache import njit

# Entries of the team's counter array, each on its own cache line (64 bytes).
TICKETS = 0  # the next ticket to hand out
FINISHED = 8  # chunks finished so far in the epoch
UPDATED = 16  # batches whose update is published
HALTED = 17  # 1: Ctrl-C seen; the members leave (written before UPDATED)
UPDATER = 18  # the member that published the last update (written before UPDATED)
ACTIVE = 24  # members taking tickets (not sitting out)
JOINED = 25  # members that joined (their numbers: 0, 1, ...)
EVICTED = 32  # 1 + the number of a member asked to sit out (0: none)
SYNC_SIZE = 40
# What a wait for an update was (-1: the team halted): the update was there at once (the
# member often published it itself), the member spun, it had to yield its core, or it spun
# for longer than its limit (fastgd._config.TEAM_WAIT_CYCLES). A member that waited long,
# or had to yield in YIELDS_BEFORE_EVICTING waits in a row (waits that found the update at
# once aside: two members sharing one core, each spinning while the other would compute),
# asks the member it waited for to sit out a while.
READY = 0
SPUN = 1
YIELDED = 2
LONG_WAIT = 3
YIELDS_BEFORE_EVICTING = 3
SPINS_BEFORE_YIELD = 2048
# A member asked to sit out yields its core for this many cycles (0.23 ms at 2.25 GHz),
# then takes tickets again; each time it is asked again in the epoch, twice as long, up to
# SIT_OUT_MAX_CYCLES (15 ms). It yields rather than sleeps: on a busy machine the other
# process gets the core, and on an idle one the sitter sees the end of the epoch at once
# (a sleep lasts at least the kernel's timer slack, about 50 us, which the end of every
# short epoch would wait for). A single hiccup (the hypervisor pausing a virtual core)
# costs a member a fifth of a millisecond; a core shared with another process for good
# soon leaves the epoch to the other members.
SIT_OUT_CYCLES = 1 << 19
SIT_OUT_MAX_CYCLES = 1 << 25
# A wait counts only the stretches between two reads of the cycle counter shorter than
# this (about 30 us): a longer one is a time slice during which the waiting member itself
# did not run.
WAIT_GAP_CYCLES = 1 << 16
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def load_word(builder, pointer, ordering):
    """Emit an atomic load of the 8-byte integer at ``pointer`` with ``ordering``."""
    try:
        return builder.load_atomic(pointer, ordering, 8, typ=ir.IntType(64))
    except TypeError:  # an llvmlite of typed pointers only: the pointee's type
        return builder.load_atomic(pointer, ordering, 8)


def _is_counter(array, index):
    return (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.dtype == types.int64
        and isinstance(index, types.Integer)
    )


def _entry(context, builder, signature, args):
    """The pointer to ``array[index]`` (no bounds check: the callers use the constants)."""
    array_type, index_type = signature.args[:2]
    ary = context.make_array(array_type)(context, builder, args[0])
    index = context.cast(builder, args[1], index_type, types.intp)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index])


def _is_update(array, index, value):
    return _is_counter(array, index) and isinstance(value, types.Integer)


def _entry_and_word(context, builder, signature, args):
    """The pointer to ``array[index]`` and ``value`` as an ``int64``."""
    word = context.cast(builder, args[2], signature.args[2], types.int64)
    return _entry(context, builder, signature, args), word


@intrinsic
def _fetch_add(typingctx, array, index, value):
    """``array[index] += value`` atomically; returns the value before."""
    if not _is_update(array, index, value):
        return None

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", *_entry_and_word(context, builder, signature, args), "seq_cst")  # fmt: skip

    return types.int64(array, index, value), codegen


@intrinsic
def _load_acquire(typingctx, array, index):
    """``array[index]``, read with acquire ordering."""
    if not _is_counter(array, index):
        return None

    def codegen(context, builder, signature, args):
        return load_word(builder, _entry(context, builder, signature, args), "acquire")

    return types.int64(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    """``array[index] = value``, written with release ordering."""
    if not _is_update(array, index, value):
        return None

    def codegen(context, builder, signature, args):
        pointer, word = _entry_and_word(context, builder, signature, args)
        builder.store_atomic(word, pointer, "release", 8)
        return context.get_dummy_value()

    return types.none(array, index, value), codegen


@intrinsic
def _yield_core(typingctx):
    """``sched_yield()`` of the C library (a symbol of the process: the disk cache keeps
    the call like any other)."""

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [])
        function = cgutils.get_or_insert_function(builder.module, function_type, "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _cycles(typingctx):
    """The processor's cycle counter (``llvm.readcyclecounter``: the time-stamp counter on
    x86; 0 where a processor has none, so that no wait counts as long there)."""

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(64), [])
        function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.readcyclecounter")  # fmt: skip
        return builder.call(function, [])

    return types.int64(), codegen


@intrinsic
def _spin_pause(typingctx):
    """The x86 ``pause`` hint in a spin loop (it leaves the core's resources to the other
    thread of the core and avoids a pipeline flush when the awaited value changes); no
    instruction on other processors."""

    def codegen(context, builder, signature, args):
        if X86:
            function_type = ir.FunctionType(ir.VoidType(), [])
            function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.x86.sse2.pause")  # fmt: skip
            builder.call(function, [])
        return context.get_dummy_value()

    return types.none(), codegen


@njit(inline="always", **NUMBA_OPTIONS)
def take_ticket(sync):
    """The next ticket of the epoch (0, 1, 2, ...)."""
    return _fetch_add(sync, TICKETS, 1)


@njit(inline="always", **NUMBA_OPTIONS)
def tickets_left(sync, total):
    """Whether tickets below ``total`` are still to be handed out: one read, so that a
    slot of the team's loop that starts after the epoch's tickets are gone returns
    without writing to the counters the members share."""
    return _load_acquire(sync, TICKETS) < total


@njit(inline="always", **NUMBA_OPTIONS)
def finish_chunk(sync):
    """Count a finished chunk; returns the chunks finished so far, this one included."""
    return _fetch_add(sync, FINISHED, 1) + 1


@njit(inline="always", **NUMBA_OPTIONS)
def wait_for_update(sync, batch, limit):
    """Wait until the updates of batches ``0 .. batch - 1`` are published; returns -1
    when the team halts instead, else :data:`LONG_WAIT` when this member spun for more
    than ``limit`` cycles (``limit`` > 0, ``fastgd._config.TEAM_WAIT_CYCLES``: the member
    it waited for was descheduled, see :func:`evict_updater`), :data:`YIELDED` when it
    had to yield its core (the member it waited for may share that core), :data:`SPUN`
    after a short wait, :data:`READY` without one. Only stretches between two reads of the
    cycle counter shorter than :data:`WAIT_GAP_CYCLES` count.

    The halt is published with the update of the batch before it (the flag first), so a
    member waiting for that update sees it too; a member with a later batch's ticket (a
    slot of the team's loop starts a new member, which takes a new ticket) sees the flag
    while it waits, as the update it waits for will never come.
    """
    if _load_acquire(sync, UPDATED) >= batch:  # the common case: no clock read
        return READY if _load_acquire(sync, HALTED) == 0 else -1
    last, spun, spins, yielded = _cycles(), 0, 0, False
    while _load_acquire(sync, UPDATED) < batch:
        if _load_acquire(sync, HALTED) != 0:
            return -1
        _spin_pause()
        spins += 1
        if spins == SPINS_BEFORE_YIELD:
            _yield_core()
            spins, yielded = 0, True
        now = _cycles()
        if now - last < WAIT_GAP_CYCLES:
            spun += now - last
        last = now
    if _load_acquire(sync, HALTED) != 0:
        return -1
    if 0 < limit < spun:
        return LONG_WAIT
    return YIELDED if yielded else SPUN


@njit(inline="always", **NUMBA_OPTIONS)
def join_team(sync):
    """Count a new member in; returns its number (0, 1, ...)."""
    _fetch_add(sync, ACTIVE, 1)
    return _fetch_add(sync, JOINED, 1)


@njit(inline="always", **NUMBA_OPTIONS)
def evict_updater(sync):
    """After a long wait: ask the member that published the awaited update, the one that
    was late, to sit out a while (it does so between two tickets: :func:`sit_out`). On a
    machine with more runnable threads than cores, that member shares its core with
    another thread, and every batch would wait for it again."""
    _store_release(sync, EVICTED, 1 + _load_acquire(sync, UPDATER))


@njit(inline="always", **NUMBA_OPTIONS)
def asked_to_sit_out(sync, me):
    """Whether member ``me``, holding no ticket, must sit out: it was asked to and is not
    the last active member (who takes the tickets meanwhile). A member sits out only
    between tickets, so every ticket taken is finished and no one waits for a sitter."""
    if _load_acquire(sync, EVICTED) != me + 1:
        return False
    _store_release(sync, EVICTED, 0)
    if _fetch_add(sync, ACTIVE, -1) > 1:
        return True
    _fetch_add(sync, ACTIVE, 1)
    return False


@njit(inline="always", **NUMBA_OPTIONS)
def sit_out(sync, total, cycles):
    """Yield the core for about ``cycles`` cycles, then take tickets again (True); False,
    and the member's part of the epoch is over, once all ``total`` tickets are taken or
    the team halts. (Without a cycle counter, where :func:`_cycles` reads 0, a sitter
    stays out until the end of the epoch.)"""
    started = _cycles()
    while True:
        if _load_acquire(sync, TICKETS) >= total or _load_acquire(sync, HALTED) != 0:
            return False
        if _cycles() - started >= cycles:
            break
        _yield_core()
    _fetch_add(sync, ACTIVE, 1)
    return True


@njit(inline="always", **NUMBA_OPTIONS)
def publish_update(sync, batch, halt, me):
    """Member ``me`` publishes the update of ``batch`` (and ``halt``: the members leave)."""
    if halt:
        sync[HALTED] = 1
    sync[UPDATER] = me
    _store_release(sync, UPDATED, batch + 1)
