"""Register tiles of matrix products (float32 or float64), emitted as LLVM IR (Numba has
no vector types, and a tile written as Numba scalars stays scalar: 6 GFLOP/s).

A tile is ``rows`` x ``L halves`` entries of ``C = A B`` (``halves`` 1 or 2; ``L`` the
lanes of a vector register: 8 floats or 4 doubles in 32 bytes (AVX2), twice as many in
64 (AVX-512, the Gram products' width where the CPU has it: :data:`GRAM_VECTOR_BYTES`). Each entry lives in one lane
of a vector register and sums over ``k`` in order by fused multiply-adds; at each ``k``
the row of B is ``halves`` vector loads and each row of A gives one value, broadcast.
Where A and B sit in memory is given by strides, so one emitter serves the recurrent
layers' packed products (:mod:`.recurrent`) and the Newton pass's Gram products ``S^T S``
read straight from the row-major ``S`` (:func:`gram_strip`).
"""

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

# Tile heights, largest first. Two vectors of B per k: 6 rows, 12 accumulators and 2 row
# vectors filling 14 of AVX2's 16 vector registers. One vector: 12 rows, so that 12
# independent sums still hide the latency of the fused multiply-add (6 would leave the
# unit idle half the time).
WIDE_TILES = (6, 4, 2, 1)
NARROW_TILES = (12, 8, 4, 2, 1)
VECTOR_BYTES = 32  # AVX2


def _gram_vector_bytes():
    """64 where Numba compiles for this machine's CPU and it has AVX-512 (32 vector
    registers of 64 bytes), else 32."""
    if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES is not None:
        return VECTOR_BYTES
    return 64 if llvm.get_host_cpu_features().get("avx512f", False) else VECTOR_BYTES


# The Gram products' vectors, and their tile heights: with AVX-512's 32 registers, two
# vectors of B per k take tiles of 12 rows (24 accumulators, the same 2 vectors of B).
GRAM_VECTOR_BYTES = _gram_vector_bytes()
GRAM_WIDE_TILES = (12, 8, 4, 2, 1) if GRAM_VECTOR_BYTES == 64 else WIDE_TILES

_INTP = ir.IntType(64)


def lanes(dtype, vector_bytes=VECTOR_BYTES):
    """Values of ``dtype`` (a NumPy or Numba float type) in one vector register."""
    return vector_bytes // (4 if str(dtype) == "float32" else 8)


def emit_tile(builder, rows, halves, ks, a, b, c, vector_bytes=VECTOR_BYTES):
    """Emit one tile: ``C[i, q] = sum over k0 <= k < k1 of A[i, k] B[k, q]`` for ``i <
    rows``, ``q < L halves``, in the element type of the pointers (float or double).

    ``ks = (k0, k1)``; ``a = (pointer, offset, row_step, k_step)``: ``A[i, k]`` is at
    ``offset + i row_step + k k_step``; ``b = (pointer, offset, k_step)``: ``B[k, q]`` at
    ``offset + k k_step + q``; ``c = (pointer, offset, ldc)``: ``C[i, q]`` at ``offset +
    i ldc + q``, stored (not added); vectors of ``vector_bytes``."""
    element = a[0].type.pointee
    bits = 32 if isinstance(element, ir.FloatType) else 64
    L = vector_bytes * 8 // bits
    vector = ir.VectorType(element, L)
    name = f"llvm.fma.v{L}f{bits}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), name)  # fmt: skip
    entry = builder.block
    header = builder.append_basic_block("tile.header")
    body = builder.append_basic_block("tile.body")
    done = builder.append_basic_block("tile.done")
    builder.branch(header)
    builder.position_at_end(header)
    k = builder.phi(_INTP)
    k.add_incoming(ks[0], entry)
    acc = [builder.phi(vector) for _ in range(halves * rows)]
    for phi in acc:
        phi.add_incoming(ir.Constant(vector, [0.0] * L), entry)
    builder.cbranch(builder.icmp_signed("<", k, ks[1]), body, done)
    builder.position_at_end(body)
    new = _tile_step(builder, (rows, halves, vector), k, a, b, acc, fma)
    end = builder.block
    k.add_incoming(builder.add(k, _INTP(1)), end)
    for phi, value in zip(acc, new, strict=True):
        phi.add_incoming(value, end)
    builder.branch(header)
    builder.position_at_end(done)
    for i in range(rows):
        for h in range(halves):
            index = builder.add(builder.add(c[1], builder.mul(_INTP(i), c[2])), _INTP(L * h))
            builder.store(acc[halves * i + h], builder.bitcast(builder.gep(c[0], [index]), vector.as_pointer()), align=4)  # fmt: skip


def _tile_step(builder, shape, k, a, b, acc, fma):
    """The multiply-adds of one ``k``: the new accumulators (``shape = (rows, halves,
    vector type)``)."""
    rows, halves, vector = shape
    L = vector.count
    row_k = builder.add(b[1], builder.mul(k, b[2]))
    vb = [builder.load(builder.bitcast(builder.gep(b[0], [builder.add(row_k, _INTP(L * h))]), vector.as_pointer()), align=4)  # fmt: skip
          for h in range(halves)]  # fmt: skip
    a_k = builder.add(a[1], builder.mul(k, a[3]))
    lanes0 = ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L)
    new = []
    for i in range(rows):
        value = builder.load(builder.gep(a[0], [builder.add(a_k, builder.mul(_INTP(i), a[2]))]))
        va = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.IntType(32)(0))
        va = builder.shuffle_vector(va, ir.Constant(vector, ir.Undefined), lanes0)
        new += [builder.call(fma, [va, vb[h], acc[halves * i + h]]) for h in range(halves)]
    return new


def _gram_codegen(context, builder, signature, args):
    """Code of :func:`gram_strip`: tiles of GRAM_WIDE_TILES rows (two vectors of columns)
    or of NARROW_TILES (one), vectors of GRAM_VECTOR_BYTES."""
    S = context.make_array(signature.args[0])(context, builder, args[0])
    C = context.make_array(signature.args[3])(context, builder, args[3])
    m, j0, width = (context.cast(builder, args[j], signature.args[j], types.intp) for j in (1, 2, 4))  # fmt: skip
    ld = cgutils.unpack_tuple(builder, S.shape, count=2)[1]
    ldc = cgutils.unpack_tuple(builder, C.shape, count=2)[1]

    def tile(count, at, halves, column):
        a, b = (S.data, at, _INTP(1), ld), (S.data, column, ld)
        c = (C.data, builder.add(builder.mul(at, ldc), column), ldc)
        emit_tile(builder, count, halves, (_INTP(0), m), a, b, c, GRAM_VECTOR_BYTES)

    L = lanes(signature.args[0].dtype, GRAM_VECTOR_BYTES)
    second = builder.add(j0, _INTP(L))  # the second vector's first column
    with builder.if_then(builder.icmp_signed("==", width, _INTP(2 * L))):
        # rows above the second vector's diagonal block: both vectors; the rows of that
        # block (j0 + L .. j0 + 2L - 1) only the second, their first vector lying below
        # the diagonal
        rows_in_tiles(builder, second, lambda count, at: tile(count, at, 2, j0), GRAM_WIDE_TILES)
        rows_in_tiles(builder, _INTP(L), lambda count, at: tile(count, builder.add(at, second), 1, second), NARROW_TILES)  # fmt: skip
    with builder.if_then(builder.icmp_signed("==", width, _INTP(L))):
        rows = builder.add(j0, width)  # the tiles reach the diagonal: rows 0 .. j0 + width - 1
        rows_in_tiles(builder, rows, lambda count, at: tile(count, at, 1, j0), NARROW_TILES)
    return context.get_dummy_value()


def rows_in_tiles(builder, rows, tile, sizes=WIDE_TILES):
    """Calls ``tile(count, first_row)`` over rows 0 .. rows - 1: ``sizes[0]`` rows at a
    time, then each smaller size at most once (``sizes`` halve down to 1)."""
    full = builder.sdiv(rows, _INTP(sizes[0]))
    with cgutils.for_range(builder, full, intp=_INTP) as loop:
        tile(sizes[0], builder.mul(loop.index, _INTP(sizes[0])))
    at = cgutils.alloca_once_value(builder, builder.mul(full, _INTP(sizes[0])))
    for count in sizes[1:]:
        with builder.if_then(builder.icmp_signed(">=", builder.sub(rows, builder.load(at)), _INTP(count))):  # fmt: skip
            tile(count, builder.load(at))
            builder.store(builder.add(builder.load(at), _INTP(count)), at)


@intrinsic
def gram_strip(typingctx, S, m, j0, C, width):
    """``C[i, j0 + q] = sum over r < m of S[r, i] S[r, j0 + q]`` for ``q < width`` and
    ``i < j0 + width``: one strip of columns of ``S^T S`` down to its diagonal block.
    ``width``: two or one vectors of GRAM_VECTOR_BYTES (with 32 bytes: 16 or 8 float32, 8
    or 4 float64; twice as many with 64). ``S`` and
    ``C`` 2-D C-contiguous, of one float type; no bounds checks: the caller keeps ``j0 +
    width`` within both."""
    arrays = (S, C)
    if not all(isinstance(x, types.Array) and x.dtype in (types.float32, types.float64) and x.layout == "C" and x.ndim == 2 for x in arrays):  # fmt: skip
        return None
    if S.dtype != C.dtype or not all(isinstance(v, types.Integer) for v in (m, j0, width)):
        return None
    return types.none(S, m, j0, C, width), _gram_codegen
