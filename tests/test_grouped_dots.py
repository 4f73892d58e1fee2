"""The dot products of Cython's linear kernels (``FASTGD_DOT_GROUPS`` in ``_kernels.pyx``):
every feature goes into one of 32 fixed partial sums, added as a fixed tree, whatever
the compiler keeps the sums in: named vectors (GCC's and Clang's vector extensions, the
installed build) or arrays (the fallback for other compilers, MSVC, built here from the
generated C with ``FASTGD_SCALAR_SUMS``).

The expected values are computed exactly with :class:`fractions.Fraction`. Whether a
multiply-add is rounded once (fused) or twice is the compiler's choice, per loop: GCC
tuned for AMD Zen fuses the 512-bit main loop but not the 256-bit loop over the groups
of 4 of ``x . w`` (it avoids chains of fused adds there), so each of the three stages
(full groups of 32, groups of 4, the last d % 4) may be either."""

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sysconfig
from fractions import Fraction

import numpy as np
import pytest

vector_kernels = pytest.importorskip("fastgd.backends.cython._kernels")


def _build_scalar_sums(tmp_dir):
    """The extension compiled from its generated C with ``FASTGD_SCALAR_SUMS`` defined:
    the array sums that compilers without GCC's vector extensions (MSVC) get, loaded as
    a second module. None when the C source or a compiler is not at hand."""
    folder, name = os.path.split(vector_kernels.__file__)
    source = os.path.join(folder, name.split(".")[0] + ".c")  # _kernels.c beside the .so
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not os.path.exists(source) or shutil.which(compiler) is None:
        return None
    target = os.path.join(tmp_dir, "_kernels" + sysconfig.get_config_var("EXT_SUFFIX"))
    includes = [sysconfig.get_paths()["include"], np.get_include()]
    command = [compiler, "-O1", "-fPIC", "-shared", "-march=native", "-DFASTGD_SCALAR_SUMS"]
    command += [f"-I{p}" for p in includes] + [source, "-o", target]
    subprocess.run(command, check=True, capture_output=True)
    loader = importlib.machinery.ExtensionFileLoader("_kernels", target)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("_kernels", loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["vector sums", "scalar sums"])
def kernels(request, tmp_path_factory):
    """The installed kernels (GCC's vector extensions), then the fallback build."""
    if request.param == "vector sums":
        return vector_kernels
    module = _build_scalar_sums(str(tmp_path_factory.mktemp("scalar_sums")))
    if module is None:
        pytest.skip("no generated _kernels.c or no C compiler to build the fallback")
    return module


def _fma(a, b, c):
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def _mul_add(a, b, c):
    return float(Fraction(float(Fraction(a) * Fraction(b))) + Fraction(c))


def _grouped(x, w, main, fours, last):
    """``x . w`` in the kernels' grouping: 32 sums over the full groups of 32 features
    (multiply-adds ``main``), then groups of 4 into sums 0-3 (``fours``), the last d % 4
    into sums 0-2 (``last``), then a tree of additions."""
    d, s = len(x), [0.0] * 32
    d32 = d - d % 32
    d4 = d - d % 4
    for j in range(d):
        k = j % 32 if j < d32 else (j - d32) % 4
        multiply_add = main if j < d32 else fours if j < d4 else last
        s[k] = multiply_add(x[j], w[j], s[k])
    for half in (16, 8, 4):
        s = [s[k] + s[k + half] for k in range(half)]
    return (s[0] + s[2]) + (s[1] + s[3])


def _some_grouping(value, x, w):
    """Whether ``value`` is ``x . w`` in the kernels' grouping, for some choice of fused
    or unfused multiply-adds in each of its three stages."""
    choices = (_fma, _mul_add)
    return any(value == _grouped(x, w, a, b, c) for a in choices for b in choices for c in choices)


def _either(value, a, b, c):
    return value in (_fma(a, b, c), _mul_add(a, b, c))


@pytest.mark.parametrize("d", [1, 3, 4, 7, 30, 31, 32, 33, 63, 64, 100, 101, 131])
def test_the_three_fused_loops_sum_in_the_same_fixed_groups(kernels, d):
    rng = np.random.default_rng(d)
    xn, x, w, G = (rng.standard_normal(d) for _ in range(4))
    g, lr = 0.7, 0.01
    w_before, G_before = w.copy(), G.copy()
    plain, added, stepped = kernels._grouped_dot_values(xn, x, w, g, lr, G)
    assert _some_grouping(plain, x, w_before)
    assert _some_grouping(added, xn, w_before)
    assert all(_either(G[j], g, x[j], G_before[j]) for j in range(d))
    # the step: w' = w - lr (g x) in double, each weight updated before it is read
    steps = [float(Fraction(g) * Fraction(x[j])) for j in range(d)]
    assert all(_either(w[j], -lr, steps[j], w_before[j]) for j in range(d))
    assert _some_grouping(stepped, xn, list(w))


def test_a_different_grouping_is_told_apart(kernels):
    """The check above can fail: with a cancellation, a sequential sum is not in the
    kernels' grouping (1e16 and -1e16 share sum 0, the 1 is in sum 1)."""
    x, w = np.zeros(64), np.ones(64)
    x[0], x[1], x[32] = 1e16, 1.0, -1e16
    sequential = 0.0
    for a, b in zip(x, w, strict=True):
        sequential = _fma(a, b, sequential)
    assert sequential == 0.0
    assert not _some_grouping(sequential, x, w)
    assert _some_grouping(kernels._grouped_dot_values(x, x, w, 0.0, 0.0, np.zeros(64))[0], x, w)


@pytest.mark.parametrize("d", [1, 3, 7, 31, 32, 33, 100, 131])
def test_two_rows_in_one_pass_equal_two_passes(kernels, d):
    """``fastgd_dot2_add2`` (two rows per pass over the weights and G, the mini-batch row
    loop of one-output models) gives each row the decision value of the one-row pass,
    and G the two rows' terms in the same order: bit for bit."""
    rng = np.random.default_rng(d)
    xa, xb, w, x1, x2, G = (rng.standard_normal(d) for _ in range(6))
    G_two, G_one = G.copy(), G.copy()
    va, vb = kernels._two_row_values(xa, xb, w, x1, x2, 0.7, -0.3, G_two)
    _, a, _ = kernels._grouped_dot_values(xa, x1, w.copy(), 0.7, 0.0, G_one)
    _, b, _ = kernels._grouped_dot_values(xb, x2, w.copy(), -0.3, 0.0, G_one)
    assert (va, vb) == (a, b)
    assert np.array_equal(G_two, G_one)
    assert not np.array_equal(G_two, G)
