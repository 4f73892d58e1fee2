"""Software prefetch of the Numba kernels (fastgd.backends.numba.prefetch): the intrinsic
compiles to a prefetch instruction for float32 and float64 rows and changes no value.

Its effect on training results is covered by every shuffled test of the kernels against
the reference (and of one against two threads); its effect on speed is measured in
``benchmarks/compare_backends.py --shuffle``, not asserted here."""

import platform
import re

import numpy as np
import pytest

pytest.importorskip("numba")


def _row_sums():
    """Row sums in a given order, prefetching every row ahead of its use (a fresh, not
    cached, function: its machine code can be inspected)."""
    import numba

    from fastgd.backends.numba.prefetch import _prefetch_item, prefetch_ahead

    @numba.njit
    def row_sums(X, Y, weights, order, out):
        for r in range(order.shape[0]):
            prefetch_ahead(X, Y, weights, order, True, r)
            _prefetch_item(weights, order[r])
            i = order[r]
            total = 0.0
            for j in range(X.shape[1]):
                total += X[i, j]
            out[r] = total

    return row_sums


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prefetch_emits_an_instruction_and_changes_nothing(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 37)).astype(dtype)  # rows not aligned to cache lines
    X.setflags(write=False)  # read-only input works too
    Y = rng.standard_normal((50, 1)).astype(dtype)
    weights = rng.uniform(size=50).astype(dtype)
    order = rng.permutation(50)
    before = (X.copy(), Y.copy(), weights.copy(), order.copy())
    out = np.empty(50)
    kernel = _row_sums()
    kernel(X, Y, weights, order, out)
    np.testing.assert_allclose(out, X[order].astype(np.float64).sum(axis=1), rtol=1e-6)
    for array, saved in zip((X, Y, weights, order), before, strict=True):
        assert np.array_equal(array, saved)
    if platform.machine() in ("x86_64", "AMD64"):
        (asm,) = kernel.inspect_asm().values()
        assert "prefetcht0" in asm


def test_prefetch_rejects_an_index_of_the_wrong_rank():
    import numba
    from numba.core.errors import TypingError

    from fastgd.backends.numba.prefetch import _prefetch_item

    @numba.njit
    def wrong(X):
        _prefetch_item(X, 0)

    with pytest.raises(TypingError):
        wrong(np.zeros((2, 2)))


def test_prefetch_in_a_row_loop_takes_no_reference_count():
    """Called once per row, ``prefetch_ahead`` binds no array variable: the loop's machine
    code has no reference-count update (an atomic operation per array per row, which
    took about a third of a 1-thread mini-batch epoch when it was an inlined function);
    its requests go into L2, and for shuffled rows also into L1 nearer ahead."""
    import numba

    from fastgd.backends.numba.prefetch import prefetch_ahead

    @numba.njit
    def row_sums(X, Y, weights, order, shuffled, out):
        for r in range(out.shape[0]):
            prefetch_ahead(X, Y, weights, order, shuffled, r)
            i = order[r] if shuffled else r
            total = 0.0
            for j in range(X.shape[1]):
                total += X[i, j]
            out[r] = total

    rng = np.random.default_rng(1)
    X, Y, weights = rng.standard_normal((40, 13)), np.zeros((40, 1)), np.ones(40)
    order, out = rng.permutation(40), np.empty(40)
    for shuffled in (False, True):  # in order, then the order's rows
        row_sums(X, Y, weights, order, shuffled, out)
        rows = X[order] if shuffled else X
        np.testing.assert_allclose(out, rows.sum(axis=1), rtol=1e-12)
    (llvm,) = row_sums.inspect_llvm().values()
    # the compiled function itself (not its Python wrapper, which unboxes the arrays)
    kernel = re.search(r"define [^@]*@_ZN(?!7cpython)[^\s(]*8row_sums.*?\n}\n", llvm, re.S)
    if kernel is None:  # a module from another Numba version's mangling: nothing to check
        pytest.skip("kernel function not found in the LLVM module")
    assert "NRT_incref" not in kernel.group(0)
    if platform.machine() in ("x86_64", "AMD64"):
        # rows, shuffled or in order, are requested into L2 (prefetcht1: no L1 miss
        # buffer held per line, see fastgd._config.ROW_PREFETCH_LOCALITY); shuffled rows
        # are requested again into L1 (prefetcht0) SHUFFLED_L1_AHEAD places ahead
        from fastgd._config import SHUFFLED_L1_AHEAD

        (asm,) = row_sums.inspect_asm().values()
        assert re.search(r"\bprefetcht1\b", asm)
        assert bool(re.search(r"\bprefetcht0\b", asm)) == (SHUFFLED_L1_AHEAD > 0)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 disassembly")
def test_cython_kernels_keep_their_prefetch_instructions():
    """Every row loop of the Cython module requests rows ahead. A compiler that judges a
    prefetching helper free of side effects may delete its calls without a warning (GCC
    did: 4 prefetch instructions were left in the whole module, against 18 with the
    volatile asm of ``fastgd_prefetch``), so count them in the built module."""
    import shutil
    import subprocess

    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    kernels = pytest.importorskip("fastgd.backends.cython._kernels")
    listing = subprocess.run(
        ["objdump", "-d", kernels.__file__], capture_output=True, text=True, check=True
    ).stdout
    count = len(re.findall(r"\bprefetcht[01]\b", listing))
    assert count >= 12, f"only {count} prefetch instructions in {kernels.__file__}"
    # the linear kernels' rows are requested into L2 (fastgd_prefetch_l2): their row loops
    # and their gather of several-output blocks
    into_l2 = len(re.findall(r"\bprefetcht1\b", listing))
    assert into_l2 >= 8, f"only {into_l2} L2 prefetch instructions in {kernels.__file__}"
