"""Cython Newton pass of the linear family: a thin wrapper over ``_hessian``.

Contract and layout: :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`;
algorithm: ``_hessian.pyx`` (the one of :mod:`fastgd.backends.numba.hessian`, with a
symmetric rank-k update for the diagonal blocks).
"""

import numpy as np

from ...specs import losses
from ..blas import numpy_dsyrk_address, numpy_ssyrk_address, single_threaded_blas
from ..hessian_layout import (
    TILE_MAX_COLUMNS,
    assemble,
    block_rows,
    chunk_bounds,
    n_pairs,
    padded_columns,
)
from . import _hessian as _h

if _h.LOSS_CODES != (losses.MSE, losses.BINARY_CROSS_ENTROPY, losses.CATEGORICAL_CROSS_ENTROPY):
    raise ImportError("fastgd.backends.cython._hessian was built with other loss codes: rebuild")
if _h.TILE_COLUMNS != TILE_MAX_COLUMNS:
    raise ImportError("fastgd.backends.cython._hessian was built with another TILE_MAX_COLUMNS: rebuild")  # fmt: skip
_h.use_dsyrk64(numpy_dsyrk_address())
_h.use_ssyrk64(numpy_ssyrk_address())
NO_HESSIAN, GRAM64, GRAM32 = _h.HESSIAN_MODES


def loss_gradient_hessian(model, data, params, n_threads=1, hessian=True, gram_dtype="float64"):
    """Mean (weighted) loss, gradient and Hessian in one compiled pass, in float64.

    See :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`.
    """
    X = np.ascontiguousarray(data.X)
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(f"X must be float32 or float64; got {X.dtype}")
    Y = np.ascontiguousarray(data.Y, dtype=X.dtype)
    weights = np.ascontiguousarray(data.weights, dtype=X.dtype)
    n, d = X.shape
    k = model.n_outputs
    if Y.shape != (n, k if model.loss_code == losses.MSE else 1) or weights.size not in (0, n):
        raise ValueError(f"targets {Y.shape} or weights {weights.shape} do not fit X {X.shape}")
    P = np.ascontiguousarray(params, dtype=np.float64).reshape(d + 1, k)
    bounds = chunk_bounds(n)
    n_chunks, rows, n_threads = bounds.size - 1, block_rows(d + 1), max(1, int(n_threads))
    pairs = n_pairs(model.loss_code, k)
    F, G = np.zeros(n_chunks), np.zeros((n_chunks, d + 1, k))
    T = np.zeros((n_chunks, pairs, d + 1, d + 1) if hessian else (n_chunks, 1, 1, 1))
    mode = (GRAM32 if gram_dtype == "float32" else GRAM64) if hessian else NO_HESSIAN
    # the Gram products' rows are whole vectors wide (ld32 floats, ld64 doubles), zeros
    # past the d + 1 columns; a block of scaled rows and a triangle per thread
    ld32, ld64 = padded_columns(d + 1, 4), padded_columns(d + 1, 8)
    f32, f64 = mode == GRAM32, mode == GRAM64 and ld64 <= TILE_MAX_COLUMNS  # else dsyrk
    scratch = [np.empty((n_threads, rows * d)), np.zeros((n_threads, rows * ld64 if hessian else 1))]  # fmt: skip
    scratch += [np.empty((n_threads, rows * width)) for width in (k, k, pairs)]
    scratch += [ld32, np.zeros((n_threads, rows * ld32 if f32 else 1), dtype=np.float32),
                np.empty((n_threads, ld32 * ld32 if f32 else 1), dtype=np.float32),
                ld64, np.empty((n_threads, ld64 * ld64 if f64 else 1))]  # fmt: skip
    with single_threaded_blas():
        _h.loss_gradient_hessian(X, Y, weights, P, int(model.loss_code), mode,
                                 bounds, rows, F, G, T, *scratch, n_threads)  # fmt: skip
    return assemble(model, n, F, G, T if hessian else None)
