"""Numba: software prefetch of the rows an epoch reads next.

A shuffled epoch reads the rows of X in the order of a permutation, so each row sits at a
random place in memory and the hardware prefetchers, which follow sequential streams, do
not fetch it ahead: every row then costs a full memory latency (measured here: about
360 ns per 800-byte row, against about 100 ns in order). The order is known in advance,
so the kernels ask for the row a few places ahead while they compute the current one
(:func:`prefetch_ahead`), as the Cython kernels do with ``__builtin_prefetch``.

A prefetch is a hint: it never changes a value, never faults, and the kernels that use it
compute exactly what they computed before. :func:`_prefetch_item` emits LLVM's
``llvm.prefetch`` intrinsic (read, keep in all cache levels, data cache) for the address
of one array element; it is compiled into the calling kernel, so the on-disk cache keeps
it like any other instruction.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..._config import CACHE_LINE_BYTES, NUMBA_OPTIONS, PREFETCH_AHEAD, PREFETCH_IN_ORDER
from .cache import njit


def _index_values(builder, index_type, index):
    """The LLVM values of an integer index or a tuple of integer indices, as ``intp``."""
    if isinstance(index_type, types.BaseTuple):
        items = cgutils.unpack_tuple(builder, index, count=len(index_type))
        return items, list(index_type)
    return [index], [index_type]


@intrinsic
def _prefetch_item(typingctx, array, index):
    """Prefetch the cache line holding ``array[index]`` (``index``: an integer, or a
    tuple of ``array.ndim`` integers). No bounds check: the callers pass indices inside
    the array (an address outside it would be harmless, as a prefetch never faults)."""
    if not isinstance(array, types.Array):
        return None
    ndim = len(index) if isinstance(index, types.BaseTuple) else 1
    if ndim != array.ndim:
        return None

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        ary = context.make_array(array_type)(context, builder, args[0])
        values, value_types = _index_values(builder, index_type, args[1])
        indices = [context.cast(builder, v, t, types.intp) for v, t in zip(values, value_types, strict=True)]  # fmt: skip
        pointer = cgutils.get_item_pointer(context, builder, array_type, ary, indices)
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, i32, i32, i32])
        # "p0" (opaque pointers) or "p0i8" (typed pointers, older llvmlite)
        name = "llvm.prefetch." + byte_pointer.type.intrinsic_name
        prefetch = cgutils.get_or_insert_function(builder.module, function_type, name)
        # read (0), keep in all cache levels (locality 3), data cache (1)
        builder.call(prefetch, [byte_pointer, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(array, index), codegen


@njit(inline="always", **NUMBA_OPTIONS)
def prefetch_row(X, i):
    """Prefetch row ``i`` of the 2-D array ``X``: one request per cache line, and one for
    its last element (a row that does not start on a line boundary ends in one more)."""
    d = X.shape[1]
    step = max(1, CACHE_LINE_BYTES // X.itemsize)
    for j in range(0, d, step):
        _prefetch_item(X, (i, j))
    if d > 1 and (d - 1) % step != 0:
        _prefetch_item(X, (i, d - 1))


@njit(inline="always", **NUMBA_OPTIONS)
def prefetch_ahead(X, Y, weights, order, shuffled, r):
    """Prefetch the row ``PREFETCH_AHEAD`` places after place ``r`` of the epoch's order:
    its row of ``X``, its first target and its sample weight (if weighted).

    Shuffled, the row is ``order[r + PREFETCH_AHEAD]``; in order it is that place itself,
    prefetched only if :data:`fastgd._config.PREFETCH_IN_ORDER`. Nothing past the last
    row; nothing at all if ``PREFETCH_AHEAD`` is 0.
    """
    if PREFETCH_AHEAD == 0:  # prefetching turned off (a compile-time constant)
        return
    ahead = r + PREFETCH_AHEAD
    if shuffled:
        if ahead >= order.shape[0]:
            return
        i = order[ahead]
    else:
        if not PREFETCH_IN_ORDER or ahead >= X.shape[0]:
            return
        i = ahead
    prefetch_row(X, i)
    _prefetch_item(Y, (i, 0))
    if weights.shape[0] > 0:
        _prefetch_item(weights, i)
