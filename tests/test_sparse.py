"""Sparse (CSR) input: validation, and fits equal to the fits on the dense matrix.

Every backend trains on ``csr_matrix(X)`` and must give the parameters of the fit on the
dense ``X`` (relative 1e-10 in float64, 1e-4 in float32), for data of about 1% density
with empty rows and empty columns, for every model of the linear family, optimizer
family, batch size 1 / 32 / full, penalty, clipping, sample weights, schedule and early
stopping. Few data shapes and batch sizes are used, so that few kernels compile.
"""

import numpy as np
import pytest

import fastgd
from fastgd import optim
from fastgd._validation import check_features
from fastgd.schedules import InverseScaling, StepDecay

sparse = pytest.importorskip("scipy.sparse")


def sparse_problem(n=240, d=100, density=0.01, seed=0, dtype=np.float64, index=np.int32):
    """CSR X of about ``density`` with empty rows (the first 20) and empty columns (the
    last 10), with int ``index`` indices; regression, binary and 3-class targets."""
    rng = np.random.default_rng(seed)
    X = sparse.random(n, d, density=density, random_state=seed, format="csr", dtype=np.float64)
    X.data = rng.standard_normal(X.nnz)  # N(0, 1) values: a well-scaled problem
    keep = (np.arange(n)[:, None] >= 20) & (np.arange(d)[None, :] < d - 10)
    X = sparse.csr_matrix(X.multiply(keep))
    X = sparse.csr_matrix(
        X + sparse.random(n, d, density=0.03, random_state=seed + 1).multiply(keep)
    )
    X = X.astype(dtype)
    X.indices, X.indptr = X.indices.astype(index), X.indptr.astype(index)
    w = rng.standard_normal(d)
    score = X @ w
    targets = {
        "linear": score + 0.1 * rng.standard_normal(n),
        "logistic": (score > 0).astype(int),
        # unbalanced classes: with equal class counts the intercepts' first full-batch
        # gradient is 0 up to rounding, which Adagrad/Adam normalize to +-lr (the dense
        # backends then differ from each other by 1e-7)
        "softmax": np.digitize(score, np.quantile(score, [0.25, 0.6])),
    }
    return X, targets


# optimizer families with the options that change their update; each case also runs a
# penalty, clipping, sample weights, a schedule or early stopping
CASES = {
    "sgd": dict(optimizer="sgd", lr=0.1),
    "sgd-l2": dict(optimizer="sgd", lr=0.1, penalty="l2", alpha=0.05),
    "momentum-elasticnet-clip-weights": dict(
        optimizer=optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
        penalty="elasticnet",
        alpha=0.01,
        l1_ratio=0.5,
        clip_value=0.5,
        clip_norm=1.0,
        sample_weight=True,
    ),
    "adagrad-invscaling": dict(optimizer="adagrad", lr=InverseScaling(power=0.5, lr=0.2)),
    "rmsprop-l1": dict(
        optimizer=optim.RMSprop(lr=0.01, centered=True, momentum=0.5), penalty="l1", alpha=0.001
    ),
    "adam-l2-early-stopping": dict(
        optimizer=optim.Adam(lr=0.01, amsgrad=True),
        penalty="l2",
        alpha=0.01,
        early_stopping=True,
        n_iter_no_change=2,
    ),
    "adamw-stepdecay": dict(
        optimizer=optim.AdamW(lr=0.02, weight_decay=0.1), lr=StepDecay(step_size=2, gamma=0.5)
    ),
}


def _fit(X, y, model, backend, case, batch_size, **extra):
    kwargs = dict(CASES[case])
    if kwargs.pop("sample_weight", False):
        kwargs["sample_weight"] = np.linspace(0.5, 2.0, X.shape[0])
    if isinstance(kwargs.get("lr"), InverseScaling | StepDecay):
        kwargs["lr"] = type(kwargs["lr"])(**vars(kwargs["lr"]))  # a fresh schedule per fit
    return fastgd.fit(
        X, y, model, backend=backend, batch_size=batch_size, epochs=4, seed=0, **kwargs, **extra
    )


def assert_same_fit(a, b, rtol):
    scale = max(1.0, np.abs(b.params).max())
    np.testing.assert_allclose(a.params, b.params, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=rtol, atol=rtol)
    assert a.n_epochs == b.n_epochs and a.stop_reason == b.stop_reason


@pytest.mark.parametrize("model", ["linear", "logistic", "softmax"])
@pytest.mark.parametrize("batch_size", [1, 32, None])
@pytest.mark.parametrize("case", list(CASES))
def test_sparse_fit_equals_dense_fit(backend, model, batch_size, case):
    X, targets = sparse_problem()
    y = targets[model]
    sparse_fit = _fit(X, y, model, backend, case, batch_size)
    dense_fit = _fit(X.toarray(), y, model, backend, case, batch_size)
    assert_same_fit(sparse_fit, dense_fit, 1e-10)
    # and the dense reference, the oracle of every backend
    if backend != "numpy":
        assert_same_fit(sparse_fit, _fit(X.toarray(), y, model, "numpy", case, batch_size), 1e-10)


@pytest.mark.parametrize("model", ["logistic", "softmax"])
@pytest.mark.parametrize("case", ["sgd-l2", "adam-l2-early-stopping"])
@pytest.mark.parametrize("batch_size", [1, 32])
def test_sparse_float32_int64_indices(backend, model, case, batch_size):
    X, targets = sparse_problem(dtype=np.float32, index=np.int64)
    y = targets[model]
    sparse_fit = _fit(X, y, model, backend, case, batch_size)
    assert sparse_fit.params.dtype == np.float32
    dense_fit = _fit(X.toarray(), y, model, "numpy", case, batch_size)
    assert_same_fit(sparse_fit, dense_fit, 1e-4)


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_sparse_chunked_batches_equal_dense_and_thread_count(backend, model):
    """Batches of several chunks (merged in chunk order): equal to the dense fit, and
    bit-identical for 1 and 2 threads."""
    X, targets = sparse_problem(n=9000, d=300, density=0.01, seed=3)
    y = targets[model]
    # (not Adam here: on this data some gradient entries are near 0, where Adam's
    # m / sqrt(v) turns rounding differences of 1e-16 into 1e-7 after a few steps; the
    # dense backends differ from each other as much)
    optimizer = optim.SGD(lr=0.5, momentum=0.9)
    kwargs = dict(batch_size=None, epochs=3, optimizer=optimizer, penalty="l2", alpha=1e-3)
    one = fastgd.fit(X, y, model, backend=backend, n_threads=1, **kwargs)
    two = fastgd.fit(X, y, model, backend=backend, n_threads=2, **kwargs)
    np.testing.assert_array_equal(one.params, two.params)
    np.testing.assert_array_equal(one.loss_history, two.loss_history)
    assert_same_fit(one, fastgd.fit(X.toarray(), y, model, backend="numpy", **kwargs), 1e-10)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_sparse_thread_count_bit_identical(compiled_backend, batch_size):
    X, targets = sparse_problem()
    fits = [
        fastgd.fit(X, targets["softmax"], "softmax", backend=compiled_backend.name,
                   batch_size=batch_size, epochs=3, seed=0, penalty="l2", n_threads=t)
        for t in (1, 2)
    ]  # fmt: skip
    np.testing.assert_array_equal(fits[0].params, fits[1].params)


def test_unsorted_and_repeated_indices_read_as_the_dense_matrix(backend):
    """Columns out of order and repeated within a row: trained as the summed dense row."""
    rng = np.random.default_rng(5)
    n, d, per_row = 120, 30, 6
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int32)
    indices = rng.integers(0, d, n * per_row).astype(np.int32)  # unsorted, with repeats
    values = rng.standard_normal(n * per_row)
    X = sparse.csr_matrix((values, indices, indptr), shape=(n, d))
    assert not X.has_canonical_format
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    y = (X @ rng.standard_normal(d) > 0).astype(int)
    for batch_size in (1, 32):
        a = fastgd.fit(X, y, "logistic", backend=backend, batch_size=batch_size, epochs=3,
                       seed=0, lr=0.1, penalty="l2", alpha=0.01)  # fmt: skip
        b = fastgd.fit(X.toarray(), y, "logistic", backend="numpy", batch_size=batch_size,
                       epochs=3, seed=0, lr=0.1, penalty="l2", alpha=0.01)  # fmt: skip
        assert_same_fit(a, b, 1e-10)
    net = dict(model=fastgd.MLP(hidden=(8, 6), activation="tanh"), epochs=3, seed=0, n_threads=1)
    a = fastgd.fit(X, y, backend=backend, batch_size=32, **net)
    b = fastgd.fit(X.toarray(), y, backend="numpy", batch_size=32, **net)
    assert_same_fit(a, b, 1e-10)
    # never modified (nor sorted, nor summed in place)
    for array, saved in zip((X.data, X.indices, X.indptr), before, strict=True):
        np.testing.assert_array_equal(array, saved)
    assert not X.has_canonical_format


def test_sparse_predictions_equal_dense(backend):
    X, targets = sparse_problem()
    for model in ("linear", "logistic", "softmax"):
        result = fastgd.fit(X, targets[model], model, backend=backend, epochs=2, seed=0)
        np.testing.assert_allclose(result.decision_function(X), result.decision_function(X.toarray()), rtol=1e-12, atol=1e-12)  # fmt: skip
        if model == "linear":
            np.testing.assert_allclose(result.predict(sparse.csr_array(X)), result.predict(X.toarray()), rtol=1e-12, atol=1e-12)  # fmt: skip
        else:
            np.testing.assert_array_equal(result.predict(sparse.csr_array(X)), result.predict(X.toarray()))  # fmt: skip
            np.testing.assert_allclose(result.predict_proba(X.tocsc()), result.predict_proba(X.toarray()), rtol=1e-12)  # fmt: skip


def test_lbfgs_on_sparse_equals_dense(backend):
    X, targets = sparse_problem()
    kwargs = dict(optimizer="lbfgs", penalty="l2", alpha=1e-2, epochs=50, backend=backend)
    a = fastgd.fit(X, targets["logistic"], "logistic", **kwargs)
    b = fastgd.fit(X.toarray(), targets["logistic"], "logistic", **kwargs)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-7, atol=1e-9)


def test_csr_taken_without_copy_and_other_formats_converted():
    X, _ = sparse_problem(index=np.int64)
    assert check_features(X) is X  # float64 CSR with int64 indices: as it is
    array = sparse.csr_array(X.astype(np.float32))
    checked = check_features(array)
    assert checked is array and checked.dtype == np.float32
    for fmt in ("csc", "coo", "lil"):
        converted = check_features(X.asformat(fmt))
        assert converted.format == "csr"
        np.testing.assert_array_equal(converted.toarray(), X.toarray())
    ints = check_features(sparse.csr_matrix(np.eye(3, dtype=np.int64)))
    assert ints.dtype == np.float64 and ints.format == "csr"


def test_fit_reads_the_callers_arrays():
    """The kernels get views of the caller's CSR arrays: nothing is copied."""
    from fastgd.backends.contract import Data
    from fastgd.training.problem import container

    X, _ = sparse_problem(index=np.int64)
    data = container(Data(X, np.zeros((X.shape[0], 1)), np.empty(0)))
    for mine, theirs in ((data.values, X.data), (data.indices, X.indices), (data.indptr, X.indptr)):
        assert np.shares_memory(mine, theirs)


def _swap_row_ends(indptr):
    """Make ``indptr`` decrease once: swap two different consecutive row ends."""
    i = int(np.flatnonzero(np.diff(indptr[1:]) > 0)[0]) + 1
    indptr[i], indptr[i + 1] = indptr[i + 1], indptr[i]


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda X: X.__setattr__("data", np.where(np.arange(X.nnz) == 3, np.nan, X.data)), "NaN"),
        (
            lambda X: X.__setattr__("data", np.where(np.arange(X.nnz) == 3, np.inf, X.data)),
            "infinite",
        ),
        (lambda X: X.indices.__setitem__(0, X.shape[1] + 5), "column indices"),
        (lambda X: X.indices.__setitem__(0, -1), "column indices"),
        (lambda X: _swap_row_ends(X.indptr), "nondecreasing"),
    ],
    ids=["nan", "inf", "index-too-large", "negative-index", "decreasing-indptr"],
)
def test_invalid_sparse_input_is_rejected(bad, message):
    X, targets = sparse_problem()
    X = X.copy()
    bad(X)
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X, targets["linear"], epochs=1)


def test_sparse_shape_and_dtype_errors():
    X, targets = sparse_problem()
    result = fastgd.fit(X, targets["linear"], epochs=1)
    with pytest.raises(ValueError, match="features"):
        result.predict(X[:, :50])
    with pytest.raises(ValueError, match="empty"):
        fastgd.fit(sparse.csr_matrix((0, 5)), [], epochs=1)
    with pytest.raises(ValueError, match="numeric"):
        check_features(sparse.csr_matrix(np.eye(3) * 1j))
    with pytest.raises(ValueError, match="newton"):
        fastgd.fit(X, targets["logistic"], "logistic", optimizer="newton")


# Networks: the first layer reads the CSR rows (a sparse x dense product forward, a
# scatter for its weight gradient); every layer above is the dense code. One data shape,
# dtype and index type for most cases (each compiles one Numba network kernel), n_threads=1
# (the serial kernel) except in the thread test.
NETWORK_CASES = ["sgd", "momentum-elasticnet-clip-weights", "adam-l2-early-stopping"]


def _network(batch_norm):
    """Two hidden layers; with batch norm on the first (its backward phase then ends in
    the sparse layer), a regression network, else a 3-class one."""
    if batch_norm:
        return fastgd.MLP(hidden=(8, 6), batch_norm=(True, False), task="regression"), "linear"
    return fastgd.MLP(hidden=(8, 6), activation="tanh"), "softmax"


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("batch_size", [1, 32, None])
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_sparse_network_equals_dense(backend, case, batch_size, batch_norm):
    if batch_norm and batch_size == 1:
        pytest.skip("batch norm needs batches of 2 or more")
    X, targets = sparse_problem()
    model, kind = _network(batch_norm)
    y = targets[kind]
    sparse_fit = _fit(X, y, model, backend, case, batch_size, n_threads=1)
    dense_fit = _fit(X.toarray(), y, model, backend, case, batch_size, n_threads=1)
    assert_same_fit(sparse_fit, dense_fit, 1e-10)
    np.testing.assert_allclose(sparse_fit.gradient_norms, dense_fit.gradient_norms, rtol=1e-10)
    if backend != "numpy":  # and the dense reference, the oracle of every backend
        reference = _fit(X.toarray(), y, model, "numpy", case, batch_size, n_threads=1)
        assert_same_fit(sparse_fit, reference, 1e-10)
    # prediction on sparse rows (NumPy, every backend)
    np.testing.assert_allclose(sparse_fit.predict(X), dense_fit.predict(X.toarray()), rtol=1e-9, atol=1e-12)  # fmt: skip


def test_sparse_network_float32_int64_indices(backend):
    X, targets = sparse_problem(dtype=np.float32, index=np.int64)
    model, kind = _network(False)
    sparse_fit = _fit(X, targets[kind], model, backend, "adam-l2-early-stopping", 32, n_threads=1)  # fmt: skip
    assert sparse_fit.params.dtype == np.float32
    dense_fit = _fit(X.toarray(), targets[kind], model, "numpy", "adam-l2-early-stopping", 32)
    assert_same_fit(sparse_fit, dense_fit, 1e-4)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_sparse_network_parallel_chunks_and_thread_count(compiled_backend, batch_norm):
    """Full batches of 16 chunks, run in parallel with 2 threads: bit-identical to 1
    thread (the first layer's gradient is scattered serially in row order), and equal to
    the dense reference."""
    X, targets = sparse_problem(n=3000, d=300, density=0.01, seed=3)
    model = fastgd.MLP(hidden=(32,), batch_norm=batch_norm)
    kwargs = dict(batch_size=None, epochs=3, optimizer=optim.SGD(lr=0.05, momentum=0.9), seed=0)
    y = targets["softmax"]
    one = fastgd.fit(X, y, model, backend=compiled_backend.name, n_threads=1, **kwargs)
    two = fastgd.fit(X, y, model, backend=compiled_backend.name, n_threads=2, **kwargs)
    np.testing.assert_array_equal(one.params, two.params)
    np.testing.assert_array_equal(one.loss_history, two.loss_history)
    reference = fastgd.fit(X.toarray(), y, model, backend="numpy", **kwargs)
    assert_same_fit(one, reference, 1e-10)


def test_sparse_network_lbfgs_equals_dense(backend):
    """L-BFGS drives the backend's full-batch loss and gradient of the network."""
    X, targets = sparse_problem()
    model, kind = _network(False)
    kwargs = dict(optimizer="lbfgs", penalty="l2", alpha=1e-2, epochs=20, backend=backend)
    a = fastgd.fit(X, targets[kind], model, seed=0, **kwargs)
    b = fastgd.fit(X.toarray(), targets[kind], model, seed=0, **kwargs)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-7, atol=1e-9)


def test_linear_estimators_take_sparse_input():
    pytest.importorskip("sklearn")
    X, targets = sparse_problem()
    clf = fastgd.LinearClassifier(epochs=3, random_state=0).fit(X, targets["softmax"])
    dense = fastgd.LinearClassifier(epochs=3, random_state=0).fit(X.toarray(), targets["softmax"])
    np.testing.assert_allclose(clf.coef_, dense.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), dense.predict(X.toarray()))
    reg = fastgd.LinearRegressor(epochs=3, batch_size=1, random_state=0).fit(X.tocsc(), targets["linear"])  # fmt: skip
    assert reg.predict(X).shape == (X.shape[0],)


_MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from scipy import sparse
import fastgd

backend, batch_size = sys.argv[1], None if sys.argv[2] == "full" else int(sys.argv[2])
n, d, per_row = 200_000, 1_000_000, 20
rng = np.random.default_rng(0)
indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int32)
X = sparse.csr_matrix(
    (rng.standard_normal(n * per_row), rng.integers(0, d, n * per_row, dtype=np.int32), indptr),
    shape=(n, d),
)
y = rng.integers(0, 2, n)
kwargs = dict(backend=backend, batch_size=batch_size, epochs=1, shuffle=False, lr=0.01,
              penalty="l2", alpha=1e-4)
fastgd.fit(X[:1000], y[:1000], "logistic", **kwargs)  # compiles (or loads) the kernel
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = fastgd.fit(X, y, "logistic", **kwargs)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert result.params.shape == (d + 1,) and np.isfinite(result.loss_history).all()
print((after - before) * 1024)  # ru_maxrss is in kB on Linux
"""


@pytest.mark.parametrize("backend_name, batch_size", [("numba", "1"), ("cython", "1"), ("numpy", "full")])  # fmt: skip
def test_large_sparse_fit_is_never_densified(backend_name, batch_size):
    """200,000 x 1,000,000 with 20 non-zeros per row (a dense copy: 1.6 TB): one epoch's
    peak memory beyond the data stays within a few copies of the 8 MB weight vector."""
    import os
    import subprocess
    import sys

    from fastgd.backends import available_backends

    if backend_name not in available_backends():
        pytest.skip(f"{backend_name} is not available")
    if not sys.platform.startswith("linux"):
        pytest.skip("ru_maxrss is in kB on Linux only")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, backend_name, batch_size],
        capture_output=True, text=True, check=True, cwd=root,
    )  # fmt: skip
    peak_growth = int(out.stdout.split()[-1])
    # weights, their snapshot, the chunk accumulator: a few 8 MB vectors (the data itself,
    # 48 MB, was built before); a dense copy would be 1.6e12 bytes
    assert peak_growth < 200e6, f"peak memory grew by {peak_growth / 1e6:.0f} MB"
