"""Newton and L-BFGS: the Hessian pass of every backend, and the optima of the solvers
against numpy.linalg.lstsq, scikit-learn and SciPy."""

import ctypes

import numpy as np
import pytest
from helpers import LOSS_CASES, LOSS_IDS, make_problem, numpy_ref
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import fastgd
from fastgd.backends import get_backend
from fastgd.backends.contract import Data, LinearModel
from fastgd.optim import LBFGS, Newton
from fastgd.specs import losses
from fastgd.specs.models import LinearModelSpec


def _weights(n, seed=1):
    w = np.random.default_rng(seed).uniform(0.2, 2.0, n)
    return w / w.mean()


def _full_hessian(model, H):
    """The Hessian over the flat vector (MSE returns the block shared by the outputs)."""
    return np.kron(H, np.eye(model.n_outputs)) if model.loss_code == losses.MSE else H


@pytest.mark.parametrize("loss_code, k", LOSS_CASES, ids=LOSS_IDS)
def test_hessian_matches_reference_and_finite_differences(backend, loss_code, k):
    X, Y, params = make_problem(loss_code, k, n=2000, d=6)
    model, data = LinearModel(loss_code, k, True), Data(X, Y, _weights(2000))
    loss, grad, H = get_backend(backend).loss_gradient_hessian(model, data, params, 2)
    ref_loss, ref_grad = numpy_ref.loss_and_gradient(model, data, params)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    # central differences of the reference gradient (float64, step 1e-6: error ~1e-9)
    eps, identity = 1e-6, np.eye(params.size)
    fd = np.array([
        numpy_ref.loss_and_gradient(model, data, params + eps * e)[1]
        - numpy_ref.loss_and_gradient(model, data, params - eps * e)[1]
        for e in identity
    ]) / (2 * eps)  # fmt: skip
    full = _full_hessian(model, H)
    assert np.array_equal(full, full.T)
    np.testing.assert_allclose(full, fd, atol=1e-7 * np.abs(fd).max())
    ref_H = numpy_ref.loss_gradient_hessian(model, data, params, 1)[2]
    np.testing.assert_allclose(H, ref_H, rtol=1e-11, atol=1e-14 * np.abs(ref_H).max())


@pytest.mark.parametrize("loss_code, k", LOSS_CASES, ids=LOSS_IDS)
def test_hessian_bit_identical_for_1_and_2_threads(compiled_backend, loss_code, k):
    X, Y, params = make_problem(loss_code, k, n=5000, d=9)  # 16 chunks, several blocks
    model, data = LinearModel(loss_code, k, False), Data(X, Y, _weights(5000))
    one = compiled_backend.loss_gradient_hessian(model, data, params, 1)
    two = compiled_backend.loss_gradient_hessian(model, data, params, 2)
    assert one[0] == two[0]
    assert np.array_equal(one[1], two[1]) and np.array_equal(one[2], two[2])
    assert not one[1][9 * k :].any()  # intercepts not trained: zero gradient


def _ilp64_dsyrk(address, S, C):
    """``C += S^T S`` (row-major upper triangle) by the ILP64 dsyrk at ``address``."""
    m, n = S.shape
    f = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 10)(address)
    sizes = np.array([n, m, C.shape[1]], dtype=np.int64)
    one, chars = np.ones(1), np.frombuffer(b"LN", dtype=np.uint8).copy()
    pointers = [a.ctypes.data for a in (chars[:1], chars[1:], sizes[:1], sizes[1:2], one, S,
                                        sizes[:1], one, C, sizes[2:])]  # fmt: skip
    f(*pointers)


def test_gram_product_by_numpys_blas_and_by_the_scipy_shim():
    """Both ways the Newton kernels reach dsyrk: NumPy's ILP64 OpenBLAS (where it has
    one) and the shim that calls SciPy's 32-bit one (used where NumPy's has none)."""
    from fastgd.backends.blas import numpy_dsyrk_address
    from fastgd.backends.numba.hessian import _lp64_shim

    S = np.random.default_rng(3).standard_normal((300, 7))
    addresses = [_lp64_shim().address, numpy_dsyrk_address()]
    for address in [a for a in addresses if a]:
        C = np.ones((8, 8))
        _ilp64_dsyrk(address, S, C)
        upper = np.triu_indices(7)
        np.testing.assert_allclose(C[:7, :7][upper], (S.T @ S + 1.0)[upper], rtol=1e-13)
        assert np.array_equal(np.tril(C[:7, :7], -1), np.ones((7, 7)) - np.triu(np.ones((7, 7))))  # fmt: skip
        assert np.array_equal(C[7], np.ones(8)) and np.array_equal(C[:, 7], np.ones(8))


def test_cython_hessian_with_scipys_dsyrk_equals_numpys():
    pytest.importorskip("fastgd.backends.cython._hessian")
    from fastgd.backends.blas import numpy_dsyrk_address
    from fastgd.backends.cython import _hessian

    X, Y, params = make_problem(losses.BINARY_CROSS_ENTROPY, 1, n=3000, d=8)
    model, data = LinearModel(losses.BINARY_CROSS_ENTROPY, 1, True), Data(X, Y, _weights(3000))
    backend = get_backend("cython")
    try:
        _hessian.use_dsyrk64(0)
        scipy_H = backend.loss_gradient_hessian(model, data, params, 2)[2]
    finally:
        _hessian.use_dsyrk64(numpy_dsyrk_address())
    numpy_H = backend.loss_gradient_hessian(model, data, params, 2)[2]
    np.testing.assert_allclose(numpy_H, scipy_H, rtol=1e-12, atol=1e-15)


def test_hessian_of_float32_data_is_summed_in_float64(backend):
    X, Y, params = make_problem(losses.CATEGORICAL_CROSS_ENTROPY, 3, n=3000)
    model = LinearModel(losses.CATEGORICAL_CROSS_ENTROPY, 3, True)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    loss, grad, H = get_backend(backend).loss_gradient_hessian(
        model, Data(X32, Y32, np.empty(0, np.float32)), params, 1
    )
    # the reference on the same (float32-rounded) values, in float64
    ref = numpy_ref.loss_gradient_hessian(
        model, Data(X32.astype(np.float64), Y, np.empty(0)), params, 1
    )
    assert grad.dtype == H.dtype == np.float64
    assert loss == pytest.approx(ref[0], rel=1e-12)
    np.testing.assert_allclose(H, ref[2], rtol=1e-10, atol=1e-14)


def test_least_squares_is_one_newton_step_to_lstsq(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 8))
    Y = X @ rng.standard_normal((8, 3)) + 2.0 + rng.standard_normal((400, 3))
    result = fastgd.fit(X, Y, optimizer="newton", backend=backend)
    solution = np.linalg.lstsq(np.hstack([X, np.ones((400, 1))]), Y, rcond=None)[0]
    np.testing.assert_allclose(result.coef_.T, solution[:8], rtol=1e-8)
    np.testing.assert_allclose(result.intercept_, solution[8], rtol=1e-8)
    assert result.n_epochs == 1 and result.stop_reason == "converged"
    assert result.gradient_norm < 1e-12


def _sklearn_logistic(X, y, C, sample_weight=None):
    return LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=500).fit(
        X, y, sample_weight=sample_weight
    )


def _breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _synthetic_binary(n=3000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d)
    y = (X @ rng.standard_normal(d) / 3 + rng.logistic(size=n) > 0.3).astype(int)
    return X, y


SOLVERS = [Newton(tol=1e-11), LBFGS(tol=1e-9, ftol=0.0)]


@pytest.mark.parametrize("solver", SOLVERS, ids=["newton", "lbfgs"])
@pytest.mark.parametrize("data", [_breast_cancer, _synthetic_binary], ids=["cancer", "synthetic"])
def test_l2_logistic_equals_sklearn(backend, solver, data):
    X, y = data()
    n, C = len(y), 0.5
    weights = _weights(n) if data is _synthetic_binary else None
    sk = _sklearn_logistic(X, y, C, weights)
    alpha = 1.0 / (C * (n if weights is None else weights.sum()))
    if data is _synthetic_binary and solver.code == LBFGS.code:
        # max|g| <= 1e-9 is below what a line search can resolve here: near |g| ~ 5e-9 a
        # step lowers the loss by ~|g|^2 / lambda_min ~ 1e-16, under one rounding unit of
        # the loss (0.6), so whether the last search finds a decrease depends on how the
        # CPU's vector width rounds the sums (it failed on an AVX-512 machine)
        solver = LBFGS(tol=1e-8, ftol=0.0)
    result = fastgd.fit(X, y, "logistic", optimizer=solver, penalty="l2", alpha=alpha,
                        backend=backend, epochs=1000, sample_weight=weights)  # fmt: skip
    assert result.stop_reason == "converged"
    np.testing.assert_allclose(
        result.coef_, sk.coef_, rtol=1e-6, atol=1e-6 * np.abs(sk.coef_).max()
    )
    np.testing.assert_allclose(result.intercept_, sk.intercept_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS, ids=["newton", "lbfgs"])
def test_l2_softmax_equals_sklearn_on_digits(backend, solver):
    if backend == "numpy" and solver.code == Newton.code:
        pytest.skip("the reference's (650 x 650) Hessian per pass: covered by the kernel tests")
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    n, C = len(y), 0.1
    sk = _sklearn_logistic(X, y, C)
    result = fastgd.fit(X, y, "softmax", optimizer=solver, penalty="l2", alpha=1 / (C * n),
                        backend=backend, epochs=2000)  # fmt: skip
    assert result.stop_reason == "converged"

    def centred(a):  # the model is invariant to a common shift of every class
        return a - a.mean(axis=0)

    scale = np.abs(sk.coef_).max()
    np.testing.assert_allclose(
        centred(result.coef_), centred(sk.coef_), rtol=1e-6, atol=1e-6 * scale
    )
    np.testing.assert_allclose(
        centred(result.intercept_), centred(sk.intercept_), atol=1e-6 * scale
    )


def test_lbfgs_reaches_scipy_lbfgsb_optimum():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    X, y = _synthetic_binary(2000, 10, seed=3)
    alpha = 1e-3
    result = fastgd.fit(X, y, "logistic", optimizer=LBFGS(tol=1e-10, ftol=0.0),
                        penalty="l2", alpha=alpha, backend="numpy", epochs=500)  # fmt: skip
    model, data = (
        LinearModel(losses.BINARY_CROSS_ENTROPY, 1, True),
        Data(X, y[:, None] * 1.0, np.empty(0)),
    )

    def objective(x):
        loss, grad = numpy_ref.loss_and_gradient(model, data, x)
        grad = grad.copy()
        grad[:10] += alpha * x[:10]
        return loss + 0.5 * alpha * x[:10] @ x[:10], grad

    ref = scipy_optimize.minimize(objective, np.zeros(11), jac=True, method="L-BFGS-B",
                                  options=dict(gtol=1e-10, ftol=0.0, maxcor=10))  # fmt: skip
    assert result.loss_history[-1] == pytest.approx(ref.fun, rel=1e-12)
    np.testing.assert_allclose(result.params, ref.x, rtol=1e-6)
    # the same method: iteration counts of the same order
    assert 0.5 * ref.nit <= result.n_epochs <= 2 * ref.nit


def test_mlp_lbfgs_on_digits_reaches_sklearn_accuracy():
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    sk = MLPClassifier((64,), solver="lbfgs", alpha=1e-4, max_iter=200, random_state=0)
    sk_accuracy = sk.fit(X_train, y_train).score(X_test, y_test)
    result = fastgd.fit(X_train, y_train, fastgd.MLP(hidden=(64,)), optimizer="lbfgs",
                        penalty="l2", alpha=1e-4 / len(y_train), epochs=200, seed=0)  # fmt: skip
    accuracy = np.mean(result.predict(X_test) == y_test)
    assert accuracy >= sk_accuracy - 0.01, (accuracy, sk_accuracy)


def test_float32_fit_agrees_with_float64():
    X, y = _synthetic_binary(2000, 8)
    fits = [
        fastgd.fit(X.astype(dtype), y, "logistic", optimizer=solver, penalty="l2", alpha=1e-3)
        for solver in ("newton", "lbfgs")
        for dtype in (np.float32, np.float64)
    ]
    for r32, r64 in (fits[:2], fits[2:]):
        assert r32.params.dtype == np.float32 and r64.params.dtype == np.float64
        np.testing.assert_allclose(r32.coef_, r64.coef_, rtol=1e-4, atol=1e-5)


def test_observers_and_stop_reasons():
    X, y = _synthetic_binary(1000, 5)
    seen = []
    result = fastgd.fit(X, y, "logistic", optimizer="newton",
                        callback=lambda epoch, info: seen.append((epoch, info["loss"])) or epoch == 1)  # fmt: skip
    assert result.stop_reason == "callback" and result.n_epochs == 2
    assert seen == [(0, result.loss_history[0]), (1, result.loss_history[1])]
    assert result.loss_history[1] < result.loss_history[0]
    result = fastgd.fit(X, y, "logistic", optimizer="lbfgs", epochs=2, tol=0.0)
    assert result.stop_reason == "max_epochs" and len(result.loss_history) == 2
    result = fastgd.fit(X, y, "logistic", optimizer="lbfgs", early_stopping=True, seed=0, epochs=50)
    assert len(result.validation_loss_history) == result.n_epochs
    assert result.best_epoch == int(np.argmin(result.validation_loss_history))


def test_unsupported_settings_are_rejected():
    X, y = _synthetic_binary(200, 3)
    with pytest.raises(ValueError, match="'sgd'.*'adam'"):
        fastgd.fit(X, y, "logistic", optimizer="newton", penalty="l1")
    with pytest.raises(ValueError, match="'lbfgs' for networks"):
        fastgd.fit(X, y, fastgd.MLP(hidden=(4,)), optimizer="newton")
    with pytest.raises(ValueError, match="history"):
        LBFGS(history=0)


def test_newton_refuses_a_hessian_too_big_for_memory(monkeypatch):
    from fastgd.training import solvers

    X, y = _synthetic_binary(200, 3)
    need = solvers.newton_memory(LinearModelSpec("logistic", 3, 1, True), 200)
    assert need == 8 * (3 * 4 * 4 + 2 * 4 * 4)  # 3 chunks of 200 rows, d + 1 = 4, k = 1
    monkeypatch.setattr(solvers, "physical_memory", lambda: 2 * need - 1)
    with pytest.raises(ValueError, match="optimizer='newton' would need .*use optimizer='lbfgs'"):
        fastgd.fit(X, y, "logistic", optimizer="newton")
    monkeypatch.setattr(solvers, "physical_memory", lambda: 2 * need)
    assert fastgd.fit(X, y, "logistic", optimizer="newton").stop_reason == "converged"


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_passes_in_row_blocks_equal_one_pass(backend, solver, monkeypatch):
    """Long passes run in row blocks (for Ctrl-C): the same fit to rounding, weighted."""
    import fastgd.training.objective as objective

    rng = np.random.default_rng(11)
    X = rng.standard_normal((5000, 12))
    y = (X @ rng.standard_normal(12) + rng.standard_normal(5000) > 0).astype(int)
    w = rng.uniform(0.2, 3.0, 5000)
    options = dict(optimizer=solver, penalty="l2", alpha=1e-3, backend=backend, sample_weight=w)
    whole = fastgd.fit(X, y, "logistic", **options)
    # blocks of 1100 rows: a row costs (d + 1)^2 = 169 with a Hessian, d + 1 = 13 without
    monkeypatch.setattr(objective, "PASS_BLOCK_WORK", 1100 * (169 if solver == "newton" else 13))
    blocks = fastgd.fit(X, y, "logistic", **options)
    np.testing.assert_allclose(blocks.params, whole.params, rtol=1e-9, atol=1e-12)
    assert blocks.n_epochs == whole.n_epochs


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_early_stopping_passes_gather_blocks_of_training_rows(backend, solver, monkeypatch):
    """With early stopping the passes read the training rows a block at a time (no copy
    of them all): the fit equals the one on a gathered copy, to rounding."""
    import fastgd.training.objective as objective
    import fastgd.training.solvers as solvers

    monkeypatch.setattr(objective, "HELD_OUT_VALUES", 9 * 5000)  # blocks of 5000 rows
    rng = np.random.default_rng(12)
    X = rng.standard_normal((30000, 8))
    y = (X @ rng.standard_normal(8) + rng.standard_normal(30000) > 0).astype(int)
    options = dict(optimizer=solver, early_stopping=True, backend=backend, seed=3, epochs=6)
    blocks = fastgd.fit(X, y, "logistic", **options)
    monkeypatch.setattr(solvers, "is_dense_linear", lambda model, data: False)  # the copy
    copied = fastgd.fit(X, y, "logistic", **options)
    np.testing.assert_allclose(blocks.params, copied.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(blocks.loss_history, copied.loss_history, rtol=1e-12)
    assert blocks.n_epochs == copied.n_epochs


def test_mlp_lbfgs_early_stopping_passes_gather_blocks_of_training_rows(backend, monkeypatch):
    """The same for a network without batch norm (its loss is a sum over rows)."""
    import fastgd.training.objective as objective
    import fastgd.training.solvers as solvers

    monkeypatch.setattr(objective, "HELD_OUT_VALUES", 9 * 5000)  # blocks of 5000 rows
    rng = np.random.default_rng(13)
    X = rng.standard_normal((20000, 8))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    options = dict(optimizer="lbfgs", early_stopping=True, backend=backend, seed=3, epochs=5)
    model = fastgd.MLP(hidden=(6,))
    blocks = fastgd.fit(X, y, model, **options)
    monkeypatch.setattr(solvers, "is_dense_linear", lambda model, data: False)  # the copy
    copied = fastgd.fit(X, y, model, **options)
    np.testing.assert_allclose(blocks.params, copied.params, rtol=1e-8, atol=1e-10)
    assert blocks.n_epochs == copied.n_epochs


def _count_hessians(monkeypatch):
    """Record the ``hessian`` flag of every Newton pass."""
    from fastgd.training.objective import Objective

    flags, original = [], Objective.value_grad_hess

    def counted(self, x, hessian=True):
        flags.append(hessian)
        return original(self, x, hessian)

    monkeypatch.setattr(Objective, "value_grad_hess", counted)
    return flags


@pytest.mark.parametrize("tol", [1e-4, 1e-8, 1e-12])
def test_newton_skips_the_hessian_of_its_last_point(monkeypatch, tol):
    """Quadratic convergence predicts the last point: its pass computes no Hessian, and
    the fit ends where the fit with every Hessian ends."""
    from fastgd.training import solvers

    X, y = _synthetic_binary(4000, 10)
    options = dict(optimizer="newton", tol=tol, backend="numpy", epochs=30)
    flags = _count_hessians(monkeypatch)
    lazy = fastgd.fit(X, y, "logistic", **options)
    assert lazy.stop_reason == "converged"
    assert flags == [True] * lazy.n_epochs + [False]  # start + every point but the last
    monkeypatch.setattr(solvers._Trend, "needs_hessian", lambda self, g, d, tol: True)
    flags.clear()
    eager = fastgd.fit(X, y, "logistic", **options)
    assert flags == [True] * (eager.n_epochs + 1) and eager.n_epochs == lazy.n_epochs
    np.testing.assert_array_equal(lazy.params, eager.params)
    assert abs(lazy.gradient_norm) <= tol


def test_newton_with_stale_hessians_still_converges(monkeypatch):
    """Were every prediction wrong, the steps with an old Hessian (chord steps) are
    still descent steps: the fit reaches the optimum of the fit with fresh Hessians."""
    from fastgd.training import solvers

    X, y = _synthetic_binary(4000, 10)
    options = dict(optimizer="newton", tol=1e-9, backend="numpy", epochs=300)
    fresh = fastgd.fit(X, y, "logistic", **options)
    monkeypatch.setattr(solvers._Trend, "needs_hessian", lambda self, g, d, tol: False)
    flags = _count_hessians(monkeypatch)
    stale = fastgd.fit(X, y, "logistic", **options)
    assert stale.stop_reason == "converged" and flags.count(False) > flags.count(True)
    assert stale.n_epochs > fresh.n_epochs
    np.testing.assert_allclose(stale.params, fresh.params, rtol=1e-7, atol=1e-8)


# Newton(hessian_dtype="float32"): the Gram products of H in float32, per row block (at
# most 4096 rows here), added in float64. Each product of float32-rounded rows has a
# relative error of about sqrt(m) eps32 (m the block's rows; m eps32 = 2.4e-4 at worst);
# entries are compared relative to sqrt(H_ii H_jj), the size of their terms: 2e-5.
GRAM32_RTOL = 2e-5


def _gram_scale(H):
    diag = np.abs(np.diag(H))
    return np.sqrt(np.outer(diag, diag))


@pytest.mark.parametrize("loss_code, k", LOSS_CASES, ids=LOSS_IDS)
def test_float32_gram_hessian_against_reference_and_float64(backend, loss_code, k):
    X, Y, params = make_problem(loss_code, k, n=5000, d=9)  # 16 chunks
    model, data = LinearModel(loss_code, k, True), Data(X, Y, _weights(5000))
    compute = get_backend(backend).loss_gradient_hessian
    exact = compute(model, data, params, 2)
    loss, grad, H = compute(model, data, params, 2, True, "float32")
    assert loss == exact[0] and np.array_equal(grad, exact[1])  # f and g stay float64
    scale = _gram_scale(exact[2])
    error = np.abs(H - exact[2]) / scale
    assert error.max() <= GRAM32_RTOL
    assert error.max() > 1e-12  # float32 products, not float64's
    ref = numpy_ref.loss_gradient_hessian(model, data, params, 1, True, "float32")[2]
    assert np.max(np.abs(H - ref) / scale) <= GRAM32_RTOL
    full = _full_hessian(model, H)
    assert np.array_equal(full, full.T)
    if backend != "numpy":  # one chunk's blocks, whichever thread: bit-identical
        assert np.array_equal(compute(model, data, params, 1, True, "float32")[2], H)


@pytest.mark.parametrize(
    "d", [3, 15, 23, 100, 255, 256], ids=["d3", "d15", "d23", "d100", "tiles-widest", "blas-syrk"]
)
@pytest.mark.parametrize("gram", ["float64", "float32"])
def test_gram_products_on_either_side_of_the_tile_width(compiled_backend, gram, d):
    """Rows of up to TILE_MAX_COLUMNS values (d + 1 rounded up to whole vectors) take the
    register tiles, wider ones BLAS's syrk: both give the reference Hessian, with the
    float32 Gram's error bound, one logistic output (the one-read path), weights and
    blocks of several hundred rows. Small d: rows of one strip of one or two vectors, or
    two strips, whichever the vector width (32 or 64 bytes)."""
    from fastgd.backends.hessian_layout import TILE_MAX_COLUMNS, padded_columns

    ld32, ld64 = padded_columns(d + 1, 4), padded_columns(d + 1, 8)
    assert (max(ld32, ld64) <= TILE_MAX_COLUMNS) == (d < 256)  # the cases stay on their side
    X, Y, params = make_problem(losses.BINARY_CROSS_ENTROPY, 1, n=1500, d=d)
    model = LinearModel(losses.BINARY_CROSS_ENTROPY, 1, True)
    data = Data(X, Y, _weights(1500))
    loss, grad, H = compiled_backend.loss_gradient_hessian(model, data, params, 2, True, gram)
    ref_loss, ref_grad, ref_H = numpy_ref.loss_gradient_hessian(model, data, params, 1)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    error = np.abs(H - ref_H) / _gram_scale(ref_H)
    assert error.max() <= (GRAM32_RTOL if gram == "float32" else 1e-12)
    assert np.array_equal(H, H.T)


def test_float32_gram_hessian_of_float32_data(backend):
    X, Y, params = make_problem(losses.BINARY_CROSS_ENTROPY, 1, n=3000)
    model = LinearModel(losses.BINARY_CROSS_ENTROPY, 1, True)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    data = Data(X32, Y32, np.empty(0, np.float32))
    H = get_backend(backend).loss_gradient_hessian(model, data, params, 2, True, "float32")[2]
    exact = numpy_ref.loss_gradient_hessian(
        model, Data(X32.astype(np.float64), Y, np.empty(0)), params, 1
    )[2]
    assert H.dtype == np.float64
    assert np.max(np.abs(H - exact) / _gram_scale(exact)) <= GRAM32_RTOL


def _three_classes(n=2000, d=8, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d)
    return X, np.argmax(X[:, :3] + rng.standard_normal((n, 3)), axis=1)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_newton_with_float32_hessian_reaches_the_float64_fit(backend, kind, monkeypatch):
    """The same optimum, to the same gradient tolerance, in as many iterations here (a
    well-conditioned problem); the point predicted last still gets no Hessian."""
    X, y = _synthetic_binary(2000, 8) if kind == "logistic" else _three_classes()
    options = dict(penalty="l2", alpha=1e-3, backend=backend, epochs=50)
    exact = fastgd.fit(X, y, kind, optimizer=Newton(tol=1e-10), **options)
    flags = _count_hessians(monkeypatch)
    inexact = fastgd.fit(X, y, kind, optimizer=Newton(tol=1e-10, hessian_dtype="float32"), **options)  # fmt: skip
    assert inexact.stop_reason == "converged" and inexact.gradient_norm <= 1e-10
    assert inexact.n_epochs == exact.n_epochs
    assert flags == [True] * inexact.n_epochs + [False]  # no float64 fallback either
    np.testing.assert_allclose(inexact.params, exact.params, rtol=1e-8, atol=1e-9)
    assert inexact.loss_history[-1] == pytest.approx(exact.loss_history[-1], rel=1e-13)


def test_newton_falls_back_to_a_float64_hessian(backend, monkeypatch):
    """A nearly collinear design (two columns 1e-5 apart): the float32 Gram products
    cannot resolve the smallest curvature (scaled condition number ~1e10), so the first
    iteration computes the float64 Hessian and the fit continues in float64: the float64
    fit, bit for bit, with one pass more."""
    from fastgd.training.objective import Objective

    rng = np.random.default_rng(0)
    base = rng.standard_normal((2000, 3))
    X = np.column_stack([base, base[:, 0] + 1e-5 * rng.standard_normal(2000)])
    y = (base @ np.array([1.0, -1.0, 0.5]) + rng.logistic(size=2000) > 0).astype(int)
    options = dict(backend=backend, epochs=100)
    exact = fastgd.fit(X, y, "logistic", optimizer=Newton(tol=1e-10), **options)
    fallbacks, original = [], Objective.exact_hessian
    monkeypatch.setattr(Objective, "exact_hessian", lambda self, x: fallbacks.append(1) or original(self, x))  # fmt: skip
    inexact = fastgd.fit(X, y, "logistic", optimizer=Newton(tol=1e-10, hessian_dtype="float32"), **options)  # fmt: skip
    assert len(fallbacks) == 1 and inexact.stop_reason == "converged"
    np.testing.assert_array_equal(inexact.params, exact.params)


def test_float32_newton_step_checks():
    """What makes the solver fall back: no Cholesky factor, a scaled condition number at
    or above the bound, a non-positive diagonal; the checked step otherwise solves H."""
    from fastgd.training.objective import checked_solve

    b = np.array([1.0, 2.0])
    assert checked_solve(np.array([[1.0, 2.0], [2.0, 1.0]]), b, 1e4) is None  # indefinite
    assert checked_solve(np.array([[0.0, 0.0], [0.0, 1.0]]), b, 1e4) is None
    near = np.array([[1.0, 1 - 1e-5], [1 - 1e-5, 1.0]])  # scaled condition number 2e5
    assert checked_solve(near, b, 1e4) is None
    A = np.diag([1e6, 1e-6]) @ np.array([[2.0, 1.0], [1.0, 2.0]]) @ np.diag([1e6, 1e-6])
    np.testing.assert_allclose(checked_solve(A, b, 1e4), np.linalg.solve(A, b), rtol=1e-12)
    np.testing.assert_allclose(checked_solve(near, b, 1e6), np.linalg.solve(near, b), rtol=1e-9)


def test_hessian_dtype_must_be_float64_or_float32():
    assert Newton(hessian_dtype=np.float32).hessian_dtype == "float32"
    assert Newton().hessian_dtype == "float64"
    for bad in ("float16", "half", None, 32):
        with pytest.raises(ValueError, match="hessian_dtype must be 'float64' or 'float32'"):
            Newton(hessian_dtype=bad)
