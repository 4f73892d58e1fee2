"""One Newton Hessian pass (loss, gradient and ``X~^T diag(h) X~``) on one core, and the
Gram products (dsyrk) of each BLAS library the process has loaded.

The pass of one output (here logistic regression) reads each row once and computes each
row block's Gram product on fastgd's own register tiles while the rows hold at most
:data:`fastgd.backends.hessian_layout.TILE_MAX_COLUMNS` values, on BLAS's syrk beyond
(and for softmax's class blocks). NumPy's and SciPy's wheels bundle different OpenBLAS
builds; the kernels call the dsyrk of NumPy's where it has a 64-bit-integer one
(:func:`fastgd.backends.blas.numpy_dsyrk_address`), SciPy's otherwise. This script
measures both libraries' dsyrk on the row blocks the kernels use, NumPy's ssyrk on the
same blocks in float32 (the products of ``Newton(hessian_dtype="float32")``): BLAS's
time for the Gram products alone, the yardstick of the pass. Then the whole pass of each
compiled backend (Cython also with SciPy's dsyrk switched in place, which changes only
passes that call dsyrk: rows wider than the tiles; both also with float32 Gram
products), and the pass without a Hessian (loss and gradient: L-BFGS's evaluations,
Newton's last round), interleaved, one thread, medians.

Run (unset the OpenBLAS overrides of this machine class)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/hessian_pass.py \
        --rows 100000 --features 100 --repeat 15

``--block-rows 256,320,648`` times the float64 passes with those rows per block instead
of the passes above (the BLAS rows stay on the kernels' own blocks).
"""

import argparse
import ctypes
import time

import numpy as np
import scipy.linalg  # noqa: F401 - loads SciPy's BLAS, to be measured beside NumPy's

from fastgd.backends import get_backend
from fastgd.backends.blas import blas_threads, numpy_dsyrk_address, numpy_ssyrk_address
from fastgd.backends.contract import Data, LinearModel
from fastgd.backends.hessian_layout import block_rows
from fastgd.specs import losses


def _scipy_dsyrk():
    """SciPy's 32-bit-integer dsyrk as a ctypes function."""
    from scipy.linalg.cython_blas import __pyx_capi__

    capsule = __pyx_capi__["dsyrk"]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return get(capsule, name(capsule)), np.int32


def _gram(address, int_type, S, rows):
    """A closure adding ``S^T S`` block by block (``rows`` rows) with the dsyrk at
    ``address`` taking ``int_type`` sizes."""
    f = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 10)(address)
    m, d = S.shape
    C, one = np.zeros((d + 1, d + 1), dtype=S.dtype), np.ones(1, dtype=S.dtype)
    chars = np.frombuffer(b"LN", dtype=np.uint8).copy()
    calls = []
    for start in range(0, m, rows):
        block = S[start : start + rows]
        sizes = np.array([d, block.shape[0], d + 1], dtype=int_type)
        calls.append((block, sizes))

    def run():
        for block, sizes in calls:
            f(chars[:1].ctypes.data, chars[1:].ctypes.data, sizes[:1].ctypes.data,
              sizes[1:2].ctypes.data, one.ctypes.data, block.ctypes.data,
              sizes[:1].ctypes.data, one.ctypes.data, C.ctypes.data, sizes[2:].ctypes.data)  # fmt: skip

    return run


def _compiled(X, y):
    """``(model, data, params)`` of the logistic pass, and the compiled backends loaded
    here by name."""
    model = LinearModel(losses.BINARY_CROSS_ENTROPY, 1, True)
    data, params = Data(X, y, np.empty(0)), np.full(X.shape[1] + 1, 0.01)
    backends = {}
    for name in ("numba", "cython"):
        try:
            backends[name] = get_backend(name)
        except ImportError:
            continue
    return (model, data, params), backends


def _passes(X, y):
    """Closures running one Hessian pass per compiled backend (and Cython with SciPy's)."""
    (model, data, params), backends = _compiled(X, y)
    cases = {}
    for name, backend in backends.items():
        cases[f"{name} pass"] = lambda b=backend: b.loss_gradient_hessian(model, data, params, 1)
        cases[f"{name} pass, float32 Gram"] = lambda b=backend: b.loss_gradient_hessian(
            model, data, params, 1, True, "float32"
        )
        cases[f"{name} gradient only"] = lambda b=backend: b.loss_gradient_hessian(
            model, data, params, 1, False
        )
    if "cython pass" in cases:
        from fastgd.backends.cython import _hessian

        def with_scipy():
            _hessian.use_dsyrk64(0)
            try:
                cases["cython pass"]()
            finally:
                _hessian.use_dsyrk64(numpy_dsyrk_address())

        cases["cython pass, SciPy's dsyrk"] = with_scipy
    return cases


def _block_passes(X, y, block_rows_list):
    """The float64 pass of each compiled backend with each of ``block_rows_list`` rows
    per block (the kernels' choice is :func:`fastgd.backends.hessian_layout.block_rows`)."""
    import importlib

    (model, data, params), backends = _compiled(X, y)
    cases = {}
    for name, backend in backends.items():
        module = importlib.import_module(f"fastgd.backends.{name}.hessian")
        for rows in (int(r) for r in block_rows_list.split(",")):

            def run(b=backend, m=module, rows=rows):
                chosen, m.block_rows = m.block_rows, lambda n_columns: rows
                try:
                    b.loss_gradient_hessian(model, data, params, 1)
                finally:
                    m.block_rows = chosen

            cases[f"{name} pass, blocks of {rows} rows"] = run
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--block-rows",
        default="",
        help="comma-separated rows per block: time the float64 passes with each instead",
    )
    args = parser.parse_args()
    n, d = args.rows, args.features
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    y = (rng.random((n, 1)) < 0.5).astype(np.float64)
    S, rows = X * np.sqrt(rng.random(n))[:, None], block_rows(d + 1)
    cases = {}
    if numpy_dsyrk_address():
        cases["NumPy's dsyrk"] = _gram(numpy_dsyrk_address(), np.int64, S, rows)
    cases["SciPy's dsyrk"] = _gram(*_scipy_dsyrk(), S, rows)
    if numpy_ssyrk_address():
        cases["NumPy's ssyrk (float32)"] = _gram(numpy_ssyrk_address(), np.int64, S.astype(np.float32), rows)  # fmt: skip
    cases.update(_block_passes(X, y, args.block_rows) if args.block_rows else _passes(X, y))
    times = {name: [] for name in cases}
    with blas_threads(1):
        for run in cases.values():
            run()  # compile, load, warm
        for _ in range(args.repeat):
            for name, run in cases.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    flops = n * d * (d + 1)  # one triangle of the Gram product of d columns
    print(f"{n:,} x {d} float64, blocks of {rows} rows, 1 thread, median of {args.repeat}\n")
    print("| what | median (ms) | GFLOP/s of the Gram product |\n| --- | --- | --- |")
    for name, ts in times.items():
        t = float(np.median(ts))
        rate = "-" if "gradient only" in name else f"{flops / t / 1e9:.1f}"
        print(f"| {name} | {t * 1e3:.1f} | {rate} |")


if __name__ == "__main__":
    main()
