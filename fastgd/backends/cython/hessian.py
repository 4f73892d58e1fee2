"""Cython Newton pass of the linear family: a thin wrapper over ``_hessian``.

Contract and layout: :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`;
algorithm: ``_hessian.pyx`` (the one of :mod:`fastgd.backends.numba.hessian`, with a
symmetric rank-k update for the diagonal blocks).
"""

import numpy as np

from ...specs import losses
from ..blas import numpy_dsyrk_address, single_threaded_blas
from ..hessian_layout import assemble, block_rows, chunk_bounds, n_pairs
from . import _hessian as _h

if _h.LOSS_CODES != (losses.MSE, losses.BINARY_CROSS_ENTROPY, losses.CATEGORICAL_CROSS_ENTROPY):
    raise ImportError("fastgd.backends.cython._hessian was built with other loss codes: rebuild")
_h.use_dsyrk64(numpy_dsyrk_address())
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
    scratch = [
        np.empty((n_threads, rows * width))
        for width in (d + 1, d + 1 if hessian else 1, k, k, pairs)
    ]
    mode = (GRAM32 if gram_dtype == "float32" else GRAM64) if hessian else NO_HESSIAN
    # float32 Gram products: a block of scaled rows (ld wide, zeros past d + 1) and a
    # triangle per thread
    wide, ld = mode == GRAM32, -(-(d + 1) // 8) * 8
    scratch += [ld, np.zeros((n_threads, rows * ld if wide else 1), dtype=np.float32),
                np.empty((n_threads, ld * ld if wide else 1), dtype=np.float32)]  # fmt: skip
    with single_threaded_blas():
        _h.loss_gradient_hessian(X, Y, weights, P, int(model.loss_code), mode,
                                 bounds, rows, F, G, T, *scratch, n_threads)  # fmt: skip
    return assemble(model, n, F, G, T if hessian else None)
