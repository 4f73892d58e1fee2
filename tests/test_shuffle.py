"""``shuffle`` modes (fastgd.training.orders): the block order itself, and fits with
``shuffle="blocks"`` on every backend, model family and thread count.

The fits reuse the kernel specialisations other test files compile (float64 linear
models with plain SGD, the XOR network, a recurrent model of test_recurrent, softmax on
CSR rows): the orders are data, not a type, so no new kernel compiles.
"""

import numpy as np
import pytest

import fastgd
from fastgd import _config
from fastgd.training.orders import check_shuffle, epoch_order


def _runs(order):
    """The runs of consecutive increasing rows of ``order``, as (first, length) pairs."""
    starts = np.flatnonzero(np.diff(order, prepend=-2) != 1)
    lengths = np.diff(np.append(starts, order.size))
    return list(zip(order[starts].tolist(), lengths.tolist(), strict=True))


@pytest.mark.parametrize("n, block", [(100, 8), (103, 8), (5, 8), (8, 8), (1, 8), (1000, 32)])
def test_block_order_is_a_permutation_of_whole_blocks_in_order(n, block):
    rng = np.random.default_rng(0)
    order = epoch_order(rng, n, "blocks", block)
    assert order.dtype == np.int64 and order.shape == (n,)
    assert np.array_equal(np.sort(order), np.arange(n))
    # every block [b * block, min((b + 1) * block, n)) is one piece, visited in order (two
    # blocks next to each other in the order may join into one run: split runs by blocks)
    pieces = []
    for first, length in _runs(order):
        while length:
            take = min(length, block - first % block)
            pieces.append((first, take))
            first, length = first + take, length - take
    expected = [(b, min(block, n - b)) for b in range(0, n, block)]
    assert sorted(pieces) == expected


def test_block_order_is_reproducible_and_new_each_epoch():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    first = [epoch_order(a, 1000, "blocks") for _ in range(3)]
    again = [epoch_order(b, 1000, "blocks") for _ in range(3)]
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    # blocks of the configured length by default: runs start at multiples of it
    starts = [s for s, _ in _runs(first[0])]
    assert all(s % _config.SHUFFLE_BLOCK_ROWS == 0 for s in starts)
    # "rows" is the permutation fit has always drawn (same seed, same batches as before)
    assert np.array_equal(
        epoch_order(np.random.default_rng(3), 50, "rows"), np.random.default_rng(3).permutation(50)
    )


@pytest.mark.parametrize("value", ["block", "Rows", "none", None, 1, 0.5, ("blocks", 8)])
def test_bad_shuffle_values_are_rejected_naming_shuffle(value):
    with pytest.raises(ValueError, match="shuffle must be"):
        check_shuffle(value)
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="shuffle must be"):
        fastgd.fit(X, np.zeros(10), shuffle=value, backend="numpy", epochs=1)


def test_shuffle_values_accepted():
    assert check_shuffle(True) == check_shuffle("rows") == check_shuffle(np.bool_(True)) == "rows"
    assert check_shuffle("blocks") == "blocks"
    assert check_shuffle(False) is None and check_shuffle(np.bool_(False)) is None


def _regression(n=1000, d=4, seed=9):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)


def test_blocks_fit_equals_the_reference_and_the_numpy_loop(backend):
    from fastgd.bench.models import MODELS
    from fastgd.bench.numpy_loop import run_numpy_loop

    X, y = _regression(1003)  # 1003 rows: a short last block
    kwargs = dict(epochs=4, lr=0.01, seed=1, shuffle="blocks")
    result = fastgd.fit(X, y, backend=backend, **kwargs)
    reference = fastgd.fit(X, y, backend="numpy", **kwargs)
    np.testing.assert_allclose(result.params, reference.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=1e-10)
    # the same batches as the benchmark's NumPy loop, which draws its orders itself
    loop = run_numpy_loop(MODELS["linear"], X, y, batch_size=32, epochs=4, lr=0.01, seed=1,
                          threads=1, shuffle="blocks")  # fmt: skip
    np.testing.assert_allclose(result.params, loop.params, rtol=1e-10, atol=1e-12)
    rows = fastgd.fit(X, y, backend=backend, **{**kwargs, "shuffle": "rows"})
    assert not np.allclose(result.params, rows.params, rtol=1e-6, atol=0)
    again = fastgd.fit(X, y, backend=backend, **kwargs)
    assert np.array_equal(result.params, again.params)
    other = fastgd.fit(X, y, backend=backend, **{**kwargs, "seed": 2})
    assert not np.array_equal(result.params, other.params)


def test_blocks_are_bit_identical_for_any_thread_count(backend):
    # batches of 2048 rows x 40 features: several chunks, run in parallel on 2 threads
    X, y = _regression(20000, 40, seed=4)
    kwargs = dict(batch_size=2048, epochs=2, lr=0.01, seed=0, shuffle="blocks", backend=backend)
    one = fastgd.fit(X, y, n_threads=1, **kwargs)
    two = fastgd.fit(X, y, n_threads=2, **kwargs)
    assert np.array_equal(one.params, two.params)


def test_blocks_with_early_stopping_equal_the_reference(backend):
    X, y = _regression(600)
    kwargs = dict(epochs=3, lr=0.01, seed=2, shuffle="blocks", early_stopping=True)
    result = fastgd.fit(X, y, backend=backend, **kwargs)
    reference = fastgd.fit(X, y, backend="numpy", **kwargs)
    np.testing.assert_allclose(result.params, reference.params, rtol=1e-10, atol=1e-12)


def test_blocks_train_networks_recurrent_models_and_csr_rows(backend):
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(3)
    cases = []
    X = rng.standard_normal((200, 2))  # the network of test_network's XOR test
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    net = fastgd.MLP(hidden=(8,), activation="tanh")
    cases.append((X, y, dict(model=net, optimizer="adam", lr=0.05)))
    S = rng.standard_normal((150, 9, 2))  # the recurrent model of test_recurrent
    rnn = fastgd.RNN("lstm", hidden=6, layers=2, head=(4,), output="last", task="regression")
    cases.append((S, S[:, :, 1].sum(axis=1), dict(model=rnn, optimizer="adam", lr=1e-2,
                                                  batch_size=40, clip_norm=1.0)))  # fmt: skip
    C = sparse.random(240, 100, density=0.05, random_state=0, format="csr")
    cases.append((C, rng.integers(0, 3, 240), dict(model="softmax", penalty="l2")))
    for X, y, options in cases:
        kwargs = dict(epochs=3, seed=0, shuffle="blocks", **options)
        result = fastgd.fit(X, y, backend=backend, **kwargs)
        reference = fastgd.fit(X, y, backend="numpy", **kwargs)
        np.testing.assert_allclose(result.params, reference.params, rtol=1e-9, atol=1e-11)
        rows = fastgd.fit(X, y, backend="numpy", **{**kwargs, "shuffle": True})
        assert not np.array_equal(reference.params, rows.params)


def test_estimators_take_blocks_through_clone_set_params_and_save(tmp_path):
    from sklearn.base import clone

    X, y = _regression(300)
    est = fastgd.LinearRegressor(shuffle="blocks", epochs=3, random_state=0, backend="numpy")
    assert clone(est).get_params()["shuffle"] == "blocks"
    est.fit(X, y)
    direct = fastgd.fit(X, y, epochs=3, seed=0, shuffle="blocks", backend="numpy")
    assert np.array_equal(est.coef_, direct.coef_)
    fastgd.save(est, tmp_path / "model.npz")
    loaded = fastgd.load(tmp_path / "model.npz")
    assert loaded.get_params()["shuffle"] == "blocks"
    assert np.array_equal(loaded.predict(X), est.predict(X))
    est.set_params(shuffle="bad")
    with pytest.raises(ValueError, match="shuffle must be"):
        est.fit(X, y)
    fresh = clone(est).set_params(shuffle="blocks").partial_fit(X, y)  # one epoch of blocks
    one = fastgd.fit(X, y, epochs=1, seed=0, shuffle="blocks", backend="numpy")
    assert np.array_equal(fresh.coef_, one.coef_)


def test_dask_local_sgd_draws_block_orders_per_chunk(monkeypatch):
    """Local SGD on Dask input: each chunk's epoch order is a permutation of its own
    blocks when ``shuffle="blocks"`` (drawn in the task, here on the local scheduler)."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    from fastgd.distributed import fit as dask_fit
    from fastgd.distributed import tasks

    monkeypatch.setattr(dask_fit, "current_client", lambda: None)
    drawn, original = [], tasks.epoch_order
    monkeypatch.setattr(tasks, "epoch_order", lambda *a: drawn.append((a[1:], original(*a))) or drawn[-1][1])  # fmt: skip
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 3)), rng.standard_normal(200)
    with dask.config.set(scheduler="sync"):
        r = fastgd.fit(da.from_array(X, chunks=(100, 3)), da.from_array(y, chunks=100),
                       epochs=2, batch_size=10, shuffle="blocks", seed=1, backend="numpy")  # fmt: skip
    assert np.all(np.isfinite(r.params))
    assert [args for args, _ in drawn] == [(100, "blocks")] * 4  # 2 chunks x 2 epochs
    for _, order in drawn:
        assert np.array_equal(np.sort(order), np.arange(100))
        assert all(first % _config.SHUFFLE_BLOCK_ROWS == 0 for first, _ in _runs(order))
    assert not np.array_equal(drawn[0][1], drawn[1][1])  # each chunk its own order


def _force_draw_ahead(monkeypatch):
    import fastgd.training.trainer as trainer

    monkeypatch.setattr(trainer, "DRAW_AHEAD_MIN_ROWS", 1)
    monkeypatch.setattr(trainer, "spare_core", lambda n_threads: True)


@pytest.mark.parametrize("shuffle", ["rows", "blocks"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_orders_drawn_ahead_give_the_same_fit(backend, monkeypatch, shuffle, early_stopping):
    # the next block of orders drawn in a background thread while the kernel trains: the
    # same permutations in the same sequence, so the same parameters and losses
    rng = np.random.default_rng(21)
    X = rng.standard_normal((1500, 5))
    y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(1500)
    kwargs = dict(batch_size=32, epochs=7, seed=3, shuffle=shuffle, backend=backend,
                  early_stopping=early_stopping, tol=None)  # fmt: skip
    whole = fastgd.fit(X, y, **kwargs)
    _force_draw_ahead(monkeypatch)
    ahead = fastgd.fit(X, y, **kwargs)
    assert np.array_equal(whole.params, ahead.params)
    assert np.array_equal(whole.loss_history, ahead.loss_history)


def test_drawing_ahead_trains_one_epoch_per_call(monkeypatch):
    # each kernel call trains one epoch while the next epoch's order is drawn (a block of
    # several orders drawn during one epoch kept the next call waiting)
    import fastgd.training.orders as orders

    rng = np.random.default_rng(24)
    X = rng.standard_normal((1500, 5))
    y = X @ rng.standard_normal(5)
    _force_draw_ahead(monkeypatch)
    taken, ahead = [], []
    take, draw_ahead = orders.BlockOrders.take, orders.BlockOrders.draw_ahead
    monkeypatch.setattr(orders.BlockOrders, "take", lambda self, count: taken.append(count) or take(self, count))  # fmt: skip
    monkeypatch.setattr(orders.BlockOrders, "draw_ahead", lambda self, count: ahead.append(count) or draw_ahead(self, count))  # fmt: skip
    result = fastgd.fit(X, y, batch_size=32, epochs=4, seed=3, tol=None)
    assert result.n_epochs == 4
    assert taken == [1, 1, 1, 1] and ahead == [1, 1, 1]


def test_a_fit_stopped_before_its_drawn_orders_leaves_no_thread(monkeypatch):
    import threading

    rng = np.random.default_rng(22)
    X = rng.standard_normal((1500, 5))
    y = X @ rng.standard_normal(5)
    _force_draw_ahead(monkeypatch)
    before = threading.active_count()
    result = fastgd.fit(X, y, batch_size=32, epochs=50, seed=3, tol=None,
                        callback=lambda epoch, info: epoch >= 2)  # fmt: skip
    assert result.n_epochs == 3 and result.stop_reason == "callback"
    assert threading.active_count() == before


def test_an_error_drawing_ahead_is_raised_by_the_fit(monkeypatch):
    import fastgd.training.orders as orders

    rng = np.random.default_rng(23)
    X = rng.standard_normal((1500, 5))
    y = X @ rng.standard_normal(5)
    _force_draw_ahead(monkeypatch)
    calls = []

    def failing(rng, n, mode, block_rows=None):
        calls.append(n)
        if len(calls) > 1:  # the first order is drawn in the fit's thread, the rest ahead
            raise MemoryError("no room for the next orders")
        return epoch_order(rng, n, mode, block_rows)

    monkeypatch.setattr(orders, "epoch_order", failing)
    with pytest.raises(MemoryError, match="no room"):
        fastgd.fit(X, y, batch_size=32, epochs=5, seed=3, tol=None)
