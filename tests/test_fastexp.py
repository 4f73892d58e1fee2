"""The vectorizable exponential of softmax regression's kernels (Numba's
``fastgd.backends.numba.fastexp`` and Cython's ``fastgd_exp_nonpositive``) against
NumPy's ``exp``: accuracy over its whole range, underflow, NaN and infinities."""

import numba
import numpy as np
import pytest

from fastgd.backends.numba.fastexp import UNDERFLOW, exp_nonpositive


@numba.njit
def _numba_values(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_nonpositive(x[i])


def _cython_values(x, out):
    kernels = pytest.importorskip("fastgd.backends.cython._kernels")
    kernels._exp_nonpositive_values(x, out)


IMPLEMENTATIONS = {"numba": _numba_values, "cython": _cython_values}


def _arguments():
    rng = np.random.default_rng(0)
    return np.concatenate([
        -rng.random(200_000) * -UNDERFLOW,  # the whole range
        -rng.random(200_000) * 30.0,  # the logits' usual spread
        -rng.random(50_000) * 1e-6,  # near 0, where exp(x) = 1 + x
        [0.0, -0.0, UNDERFLOW, -0.5 * np.log(2.0), -np.log(2.0), -1e-300],
    ])  # fmt: skip


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_within_two_units_in_the_last_place(name):
    x = _arguments()
    out = np.empty_like(x)
    IMPLEMENTATIONS[name](x, out)
    expected = np.exp(x)
    ulps = np.abs(out - expected) / np.spacing(expected)
    assert ulps.max() <= 2.0, (name, x[np.argmax(ulps)], ulps.max())
    assert out[-6] == 1.0 and out[-5] == 1.0  # exp(0) and exp(-0) exactly


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_underflow_nan_and_infinity(name):
    x = np.array([UNDERFLOW - 0.01, -745.2, -1e10, -np.inf, np.nan])
    out = np.full_like(x, 7.0)
    IMPLEMENTATIONS[name](x, out)
    assert np.array_equal(out[:4], np.zeros(4))  # below the smallest normal double
    assert np.isnan(out[4])  # a NaN decision value must still reach divergence detection


def test_numba_takes_float32():
    x = _arguments()[:1000].astype(np.float32)
    out = np.empty(x.shape)
    _numba_values(x, out)
    np.testing.assert_allclose(out, np.exp(x.astype(np.float64)), rtol=3e-16, atol=0)
