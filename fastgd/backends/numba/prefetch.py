"""Numba: software prefetch of the rows an epoch reads next.

A shuffled epoch reads the rows of X in the order of a permutation, so each row sits at a
random place in memory and the hardware prefetchers, which follow sequential streams, do
not fetch it ahead: every row then costs a full memory latency (measured here: about
360 ns per 800-byte row, against about 100 ns in order). The order is known in advance,
so the kernels ask for the row a few places ahead while they compute the current one
(:func:`prefetch_ahead`, into L2 only: ``fastgd._config.ROW_PREFETCH_LOCALITY``), as the
Cython kernels do with ``fastgd_prefetch_l2``.

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

from ..._config import (
    CACHE_LINE_BYTES,
    PREFETCH_AHEAD,
    PREFETCH_IN_ORDER,
    ROW_PREFETCH_LOCALITY,
    SHUFFLED_L1_AHEAD,
)


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
        _call_prefetch(builder, pointer)
        return context.get_dummy_value()

    return types.none(array, index), codegen


def _call_prefetch(builder, pointer, locality=3):
    """Emit ``llvm.prefetch`` (read, data cache) for ``pointer``: with ``locality`` 3 into
    every cache level (x86 ``prefetcht0``), with 2 into L2 and below (``prefetcht1``)."""
    byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
    i32 = ir.IntType(32)
    function_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, i32, i32, i32])
    # "p0" (opaque pointers) or "p0i8" (typed pointers, older llvmlite)
    name = "llvm.prefetch." + byte_pointer.type.intrinsic_name
    prefetch = cgutils.get_or_insert_function(builder.module, function_type, name)
    builder.call(prefetch, [byte_pointer, i32(0), i32(locality), i32(1)])


def _prefetch_row_lines(context, builder, array_type, ary, row, locality=3):
    """Emit the prefetch of row ``row`` (an ``intp``) of the 2-D array ``ary``: one
    request per cache line, from the line holding its first element to the line holding
    its last, counted from the first line's start (a row that starts mid-line gets its
    last line too, and no line is requested twice); ``locality`` as in
    :func:`_call_prefetch`."""
    intp = context.get_value_type(types.intp)
    d = cgutils.unpack_tuple(builder, ary.shape, count=2)[1]
    with builder.if_then(builder.icmp_signed(">", d, intp(0)), likely=True):
        first = cgutils.get_item_pointer(context, builder, array_type, ary, [row, intp(0)])
        last = cgutils.get_item_pointer(context, builder, array_type, ary, [row, builder.sub(d, intp(1))])  # fmt: skip
        start = builder.and_(builder.ptrtoint(first, intp), intp(-CACHE_LINE_BYTES))
        span = builder.sub(builder.ptrtoint(last, intp), start)
        # a shift of the byte span (a signed one: no line for a negative span)
        lines = builder.add(builder.sdiv(span, intp(CACHE_LINE_BYTES)), intp(1))
        with cgutils.for_range(builder, lines, intp=intp) as loop:
            address = builder.add(start, builder.mul(loop.index, intp(CACHE_LINE_BYTES)))
            _call_prefetch(builder, builder.inttoptr(address, ir.IntType(8).as_pointer()), locality)  # fmt: skip


def _row_intrinsic(locality):
    """An intrinsic ``(X, i)`` that prefetches every cache line of row ``i`` of the 2-D
    array ``X`` with ``locality`` (:func:`_call_prefetch`)."""

    def typer(typingctx, X, i):
        if not isinstance(X, types.Array) or X.ndim != 2 or not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            array_type, index_type = signature.args
            ary = context.make_array(array_type)(context, builder, args[0])
            row = context.cast(builder, args[1], index_type, types.intp)
            _prefetch_row_lines(context, builder, array_type, ary, row, locality)
            return context.get_dummy_value()

        return types.none(X, i), codegen

    typer.__name__ = typer.__qualname__ = f"prefetch_row_locality_{locality}"  # one per intrinsic
    return typer


prefetch_row_into_l2 = intrinsic(_row_intrinsic(2))
prefetch_row_into_l2.__doc__ = """Prefetch row ``i`` of the 2-D array ``X`` into L2, not L1
(``prefetcht1``: the locality of the linear kernels' requests, ``ROW_PREFETCH_LOCALITY``)."""


prefetch_row = intrinsic(_row_intrinsic(3))
prefetch_row.__doc__ = """Prefetch row ``i`` of the 2-D array ``X`` (every cache line of it)
into every cache level.

An intrinsic, not a jitted loop: the line count is a shift of the row's byte length
(no division by the item size per row), and a row loop that calls it binds no new
array variable (an inlined function's array arguments are new variables, whose
reference counts Numba updates with atomic operations, row after row)."""


def _ahead_codegen(context, builder, signature, args):
    """Code of :func:`prefetch_ahead` (its docstring says what it does)."""
    order_type, r_type = signature.args[3], signature.args[5]
    X, Y, weights, order = (context.make_array(t)(context, builder, a) for t, a in zip(signature.args[:4], args[:4], strict=True))  # fmt: skip
    intp = context.get_value_type(types.intp)
    ahead = builder.add(context.cast(builder, args[5], r_type, types.intp), intp(PREFETCH_AHEAD))
    row = cgutils.alloca_once_value(builder, intp(-1))
    shuffled = context.cast(builder, args[4], signature.args[4], types.boolean)
    with builder.if_else(shuffled) as (then, otherwise):
        with then:
            n_order = cgutils.unpack_tuple(builder, order.shape, count=1)[0]
            with builder.if_then(builder.icmp_signed("<", ahead, n_order)):
                item = cgutils.get_item_pointer(context, builder, order_type, order, [ahead])
                value = context.cast(builder, builder.load(item), order_type.dtype, types.intp)
                builder.store(value, row)
            if SHUFFLED_L1_AHEAD > 0:
                _near_into_l1(context, builder, signature.args[0], X, order_type, order, args[5], r_type)  # fmt: skip
        with otherwise:
            if PREFETCH_IN_ORDER:
                n = cgutils.unpack_tuple(builder, X.shape, count=2)[0]
                with builder.if_then(builder.icmp_signed("<", ahead, n)):
                    builder.store(ahead, row)
    i = builder.load(row)
    with builder.if_then(builder.icmp_signed(">=", i, intp(0))):
        # into L2 only (see ROW_PREFETCH_LOCALITY)
        _prefetch_one(context, builder, signature.args[:3], (X, Y, weights), i, ROW_PREFETCH_LOCALITY)  # fmt: skip
    return context.get_dummy_value()


def _near_into_l1(context, builder, x_type, X, order_type, order, r, r_type):
    """Emit the request into L1 of the row of ``X`` at place ``r + SHUFFLED_L1_AHEAD`` of a
    shuffled order (nothing past its end)."""
    intp = context.get_value_type(types.intp)
    near = builder.add(context.cast(builder, r, r_type, types.intp), intp(SHUFFLED_L1_AHEAD))
    n_order = cgutils.unpack_tuple(builder, order.shape, count=1)[0]
    with builder.if_then(builder.icmp_signed("<", near, n_order)):
        item = cgutils.get_item_pointer(context, builder, order_type, order, [near])
        i = context.cast(builder, builder.load(item), order_type.dtype, types.intp)
        _prefetch_row_lines(context, builder, x_type, X, i, 3)


def _prefetch_one(context, builder, array_types, arrays, i, locality):
    """Emit the prefetch of row ``i`` of ``X``, its first target in ``Y`` and its sample
    weight (if ``weights`` is not empty): ``arrays = (X, Y, weights)``."""
    x_type, y_type, w_type = array_types
    X, Y, weights = arrays
    intp = context.get_value_type(types.intp)
    _prefetch_row_lines(context, builder, x_type, X, i, locality)
    _call_prefetch(builder, cgutils.get_item_pointer(context, builder, y_type, Y, [i, intp(0)]), locality)  # fmt: skip
    n_weights = cgutils.unpack_tuple(builder, weights.shape, count=1)[0]
    with builder.if_then(builder.icmp_signed(">", n_weights, intp(0))):
        item = cgutils.get_item_pointer(context, builder, w_type, weights, [i])
        _call_prefetch(builder, item, locality)


@intrinsic
def prefetch_ahead(typingctx, X, Y, weights, order, shuffled, r):
    """Prefetch the row ``PREFETCH_AHEAD`` places after place ``r`` of the epoch's order:
    its row of ``X``, its first target and its sample weight (if weighted).

    Shuffled, the row is ``order[r + PREFETCH_AHEAD]``, and the row
    ``SHUFFLED_L1_AHEAD`` places after r is requested again, into L1; in order it is that
    place itself, prefetched only if :data:`fastgd._config.PREFETCH_IN_ORDER`. Nothing
    past the last row; nothing at all if ``PREFETCH_AHEAD`` is 0.

    An intrinsic (its code is emitted by :func:`_ahead_codegen`), not a jitted function:
    called once per row, an inlined function would bind its four array arguments to new
    variables, and Numba updates their reference counts with atomic operations (measured:
    they and those of the row's other inlined helpers took about a third of a 1-thread
    mini-batch epoch in order, as an atomic operation also orders the loads around it).
    """
    arrays = (X, Y, weights, order)
    if not all(isinstance(a, types.Array) for a in arrays) or (X.ndim, Y.ndim, weights.ndim, order.ndim) != (2, 2, 1, 1):  # fmt: skip
        return None
    if not isinstance(r, types.Integer) or not isinstance(shuffled, (types.Boolean, types.Integer)):
        return None
    if PREFETCH_AHEAD == 0:  # prefetching turned off (a compile-time constant)
        return types.none(X, Y, weights, order, shuffled, r), lambda context, builder, sig, args: context.get_dummy_value()  # fmt: skip
    return types.none(X, Y, weights, order, shuffled, r), _ahead_codegen
