"""Data-parallel training on Dask, on a real ``distributed.LocalCluster`` (two worker
processes, one thread each), started once for the module.

Full-batch methods must equal the single-machine fit of the concatenated rows (1e-10
relative, float64) and be reproducible bit for bit; averaged local SGD must reach the
single-machine accuracy within a stated margin; a worker killed mid-fit must not change
the result; bad input must fail before training starts.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastgd  # noqa: E402
from fastgd.distributed import cluster as dask_cluster  # noqa: E402
from fastgd.distributed import fit as dask_fit  # noqa: E402
from fastgd.optim import Newton  # noqa: E402

RTOL = 1e-10  # full-batch Dask fit vs single-machine fit, float64
ROWS = (600, 500, 500, 400)  # uneven row chunks
N_ROWS = sum(ROWS)


@pytest.fixture(scope="module")
def client():
    """A two-process LocalCluster whose workers import this fastgd (and its Numba cache)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"PYTHONPATH": path},
    )  # fmt: skip
    with distributed.Client(cluster) as c:
        assert set(c.run(lambda: __import__("fastgd").__file__).values()) == {fastgd.__file__}
        yield c
    cluster.close()


def _data(kind, n=N_ROWS, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if kind == "linear":
        y = X @ rng.standard_normal(d) + 0.1 * rng.standard_normal(n)
    elif kind == "logistic":
        y = (X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0).astype(float)
    else:  # three classes
        y = np.argmax(X[:, :3] + 0.5 * rng.standard_normal((n, 3)), axis=1)
    return X, y


def _chunked(a):
    return da.from_array(a, chunks=(ROWS, *a.shape[1:]))


def _assert_close(a, b, rtol=RTOL):
    scale = max(np.max(np.abs(a)), 1e-300)
    assert np.max(np.abs(a - b)) <= rtol * scale, np.max(np.abs(a - b)) / scale


FULL_BATCH = {
    # L-BFGS with tol above its rounding floor: a search among steps whose objective
    # differences are below round-off picks its step by round-off (the last iterate then
    # differs by ~5e-10 here, on a single machine too under any reordering of the sums)
    "lbfgs-logistic": ("logistic", dict(optimizer="lbfgs", penalty="l2", alpha=1e-2, tol=1e-8)),
    "newton-softmax": ("softmax", dict(optimizer="newton", penalty="l2", alpha=1e-2, tol=1e-12)),
    "newton-linear-weighted": ("linear", dict(optimizer="newton", weighted=True)),
    "gd-adam-linear": ("linear", dict(batch_size=None, optimizer="adam", lr=0.05, epochs=30,
                                      penalty="elasticnet", alpha=1e-3, clip_norm=5.0)),
    "gd-sgd-logistic-weighted": ("logistic", dict(batch_size=None, lr=0.5, epochs=20, weighted=True)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FULL_BATCH))
def test_full_batch_equals_single_machine(client, case):
    kind, kw = FULL_BATCH[case]
    kw = dict(kw)
    X, y = _data(kind)
    if kw.pop("weighted", False):
        kw["sample_weight"] = np.random.default_rng(3).uniform(0.0, 2.0, len(y))
    local = fastgd.fit(X, y, kind, **kw)
    dask_kw = dict(kw)
    if "sample_weight" in kw:
        dask_kw["sample_weight"] = _chunked(kw["sample_weight"])
    remote = fastgd.fit(_chunked(X), _chunked(y), kind, **dask_kw)
    assert remote.n_epochs == local.n_epochs and remote.stop_reason == local.stop_reason
    _assert_close(remote.params, local.params)
    _assert_close(remote.loss_history, local.loss_history)
    again = fastgd.fit(_chunked(X), _chunked(y), kind, **dask_kw)
    np.testing.assert_array_equal(again.params, remote.params)  # reproducible bit for bit
    info = remote.distributed
    assert info["scheduler"] == "distributed" and info["n_chunks"] == len(ROWS)
    assert info["n_rounds"] >= remote.n_epochs and info["compute_time"] > 0
    assert info["round_time"] >= info["compute_time"]


def test_network_lbfgs_equals_single_machine(client):
    X, y = _data("softmax", seed=4)
    net = fastgd.MLP(hidden=(8,), activation="tanh")
    kw = dict(optimizer="lbfgs", epochs=15, seed=0)
    local = fastgd.fit(X, y, net, **kw)
    remote = fastgd.fit(_chunked(X), _chunked(y), net, **kw)
    _assert_close(remote.params, local.params, 1e-9)  # tanh network: a few more roundings


def test_local_sgd_with_one_batch_per_chunk_is_full_batch_gd(client):
    # each chunk makes one step from w with its whole chunk; the row-weighted average of
    # w - lr g_i is w - lr g: full-batch gradient descent on all rows
    X, y = _data("linear")
    kw = dict(lr=0.1, epochs=8, penalty="l2", alpha=1e-2)
    remote = fastgd.fit(_chunked(X), _chunked(y), batch_size=max(ROWS), shuffle=False, **kw)
    local = fastgd.fit(X, y, batch_size=None, **kw)
    _assert_close(remote.params, local.params)
    _assert_close(remote.loss_history, local.loss_history)


# averaged SGD vs single-machine SGD: test accuracy within this margin
ACCURACY_MARGIN = 0.03


@pytest.mark.parametrize(
    "model, kw",
    [
        ("softmax", dict(optimizer="sgd", lr=0.05, sync_every=None)),
        ("softmax", dict(optimizer="adam", lr=0.01, sync_every=4)),
        (fastgd.MLP(hidden=(16,), batch_norm=True), dict(optimizer="adam", lr=0.01, sync_every=8)),
    ],
    ids=["sgd-per-epoch", "adam-sync4", "mlp-batchnorm-adam-sync8"],
)
def test_averaged_sgd_reaches_single_machine_accuracy(client, model, kw):
    X, y = _data("softmax", n=sum(ROWS) + 1000, seed=1)
    train, test = slice(0, sum(ROWS)), slice(sum(ROWS), None)
    common = dict(batch_size=32, epochs=6, seed=0)
    local = fastgd.fit(X[train], y[train], model, **common, **{k: v for k, v in kw.items() if k != "sync_every"})  # fmt: skip
    remote = fastgd.fit(_chunked(X[train]), _chunked(y[train]), model, **common, **kw)
    local_acc = np.mean(local.predict(X[test]) == y[test])
    remote_acc = np.mean(remote.predict(X[test]) == y[test])
    assert local_acc > 0.7
    assert remote_acc >= local_acc - ACCURACY_MARGIN, (remote_acc, local_acc)
    assert remote.n_updates > 0 and np.all(np.isfinite(remote.loss_history))
    again = fastgd.fit(_chunked(X[train]), _chunked(y[train]), model, **common, **kw)
    np.testing.assert_array_equal(again.params, remote.params)


def test_killed_worker_does_not_change_the_result(client):
    X, y = _data("logistic", seed=2)
    kw = dict(optimizer="lbfgs", penalty="l2", alpha=1e-3, tol=1e-12)
    undisturbed = fastgd.fit(_chunked(X), _chunked(y), "logistic", **kw)
    before = client.run(os.getpid)
    victim = next(iter(before.values()))

    def kill(epoch, info):
        if epoch == 2:
            os.kill(victim, signal.SIGKILL)

    disturbed = fastgd.fit(_chunked(X), _chunked(y), "logistic", callback=kill, **kw)
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()  # the worker did die (and was restarted)
    np.testing.assert_array_equal(disturbed.params, undisturbed.params)
    assert disturbed.n_epochs == undisturbed.n_epochs


def test_dask_dataframe_input(client):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = _data("logistic", seed=5)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    labels = pd.Series(np.where(y > 0, "yes", "no"))
    kw = dict(optimizer="newton", penalty="l2", alpha=1e-2, tol=1e-12)
    local = fastgd.fit(frame, labels, "logistic", **kw)
    remote = fastgd.fit(dd.from_pandas(frame, npartitions=3), dd.from_pandas(labels, npartitions=3), "logistic", **kw)  # fmt: skip
    _assert_close(remote.params, local.params)
    assert list(remote.feature_names_in_) == list(frame.columns)
    assert list(remote.classes_) == ["no", "yes"]


def test_local_scheduler_without_a_client(client, monkeypatch):
    monkeypatch.setattr(dask_fit, "current_client", lambda: None)
    X, y = _data("softmax", seed=6)
    kw = dict(optimizer="lbfgs", penalty="l2", alpha=1e-2, tol=1e-7)
    with dask.config.set(scheduler="threads"):  # not the module's client
        remote = fastgd.fit(_chunked(X), _chunked(y), "softmax", **kw)
    assert remote.distributed["scheduler"] == "local"
    _assert_close(remote.params, fastgd.fit(X, y, "softmax", **kw).params)


def _bad_inputs():
    X, y = _data("logistic")
    with_nan = X.copy()
    with_nan[1234, 2] = np.nan
    unknown = _chunked(X)[_chunked(X)[:, 0] > -100]  # boolean indexing: chunk sizes unknown
    return {
        "unknown-chunks": (unknown, y, "unknown chunk sizes"),
        "column-chunks": (
            da.from_array(X, chunks=(500, 3)),
            _chunked(y),
            "chunked along its columns",
        ),  # fmt: skip
        "nan-in-chunk": (_chunked(with_nan), _chunked(y), r"X contains 1 NaN .*row chunk 2"),
        "y-length": (_chunked(X), y[:-1], "X and y have different lengths"),
    }


@pytest.mark.parametrize("case", ["unknown-chunks", "column-chunks", "nan-in-chunk", "y-length"])
def test_bad_input_fails_before_training(client, case):
    X, y, message = _bad_inputs()[case]
    calls = []
    with pytest.raises(ValueError, match=message):
        fastgd.fit(X, y, "logistic", optimizer="lbfgs", callback=lambda e, i: calls.append(e))
    assert calls == []


BAD_X_RUNS = {
    "lbfgs": dict(optimizer="lbfgs"),
    "newton-weighted": dict(optimizer="newton", weighted=True),
    "gd": dict(batch_size=None, epochs=3),
    "local-sgd": dict(batch_size=64, epochs=3),
    "mlp-local-sgd": dict(model=fastgd.MLP((8,)), batch_size=64, epochs=3),
}


@pytest.mark.parametrize("case", list(BAD_X_RUNS))
def test_the_first_bad_chunk_is_named(client, case):
    """NaN/inf in X, found after training as on one machine: with bad rows in chunks 3
    and 1, the error names chunk 1 (whichever chunk is checked first), and no callback
    ever sees a loss."""
    X, y = _data("logistic")
    X[ROWS[0] + ROWS[1] + ROWS[2] + 5, 0] = np.inf  # chunk 3
    X[ROWS[0] + 7, 1] = np.nan  # chunk 1
    kw = dict(BAD_X_RUNS[case])
    if kw.pop("weighted", False):
        kw["sample_weight"] = _chunked(np.ones(N_ROWS))
    model = kw.pop("model", "logistic")
    calls = []
    with pytest.raises(ValueError, match=r"X contains 1 NaN and 0 infinite.*row chunk 1,"):
        fastgd.fit(_chunked(X), _chunked(y), model, callback=lambda e, i: calls.append(e), **kw)
    assert calls == []


def test_sync_every_needs_dask_input():
    X, y = _data("linear")
    with pytest.raises(ValueError, match="sync_every"):
        fastgd.fit(X, y, sync_every=2)


def test_import_fastgd_does_not_import_dask():
    code = "import sys, fastgd; print('dask' in sys.modules or 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_checkpoint_and_resume_continue_exactly(client, tmp_path, capsys):
    X, y = _data("linear", seed=7)
    kw = dict(batch_size=None, optimizer="adam", lr=0.05)
    full = fastgd.fit(_chunked(X), _chunked(y), epochs=10, **kw)
    path = str(tmp_path / "ckpt-{epoch}.npz")
    first = fastgd.fit(_chunked(X), _chunked(y), epochs=4, callback=fastgd.Checkpoint(path, every=2), verbose=2, **kw)  # fmt: skip
    assert "Epoch: 2, Loss:" in capsys.readouterr().out  # verbose works as on one machine
    saved = fastgd.load(path.format(epoch=3))
    np.testing.assert_array_equal(saved.params, first.params)
    assert saved.n_updates == 4
    resumed = fastgd.fit(_chunked(X), _chunked(y), epochs=6, init=saved, **kw)
    np.testing.assert_array_equal(resumed.params, full.params)
    np.testing.assert_array_equal(resumed.loss_history, full.loss_history[4:])


def test_estimators_take_dask_input(client):
    pytest.importorskip("sklearn")
    X, y = _data("softmax", seed=8)
    kw = dict(optimizer="lbfgs", penalty="l2", alpha=1e-2, tol=1e-7)
    local = fastgd.LinearClassifier(**kw).fit(X, y)
    remote = fastgd.LinearClassifier(**kw).fit(_chunked(X), _chunked(y))
    _assert_close(remote.coef_, local.coef_)
    assert remote.n_features_in_ == X.shape[1] and list(remote.classes_) == [0, 1, 2]
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))


def test_sums_on_the_workers_equal_sums_on_the_driver(client, monkeypatch):
    # large Hessians are summed on the workers by the same pairwise tree: same bits
    X, y = _data("softmax", seed=9)
    kw = dict(optimizer="newton", penalty="l2", alpha=1e-2, tol=1e-12)
    on_driver = fastgd.fit(_chunked(X), _chunked(y), "softmax", **kw)
    monkeypatch.setattr(dask_cluster, "WORKER_REDUCTION_BYTES", 0)
    on_workers = fastgd.fit(_chunked(X), _chunked(y), "softmax", **kw)
    np.testing.assert_array_equal(on_workers.params, on_driver.params)
    assert on_workers.distributed["n_rounds"] == on_driver.distributed["n_rounds"]


def test_newton_float32_hessian_reaches_the_workers(client):
    """Newton(hessian_dtype="float32") on Dask: the workers' Hessians are float32 Gram
    products (the first step differs from float64's by their rounding) and the fit ends
    at the float64 fit's optimum."""
    X, y = _data("logistic", seed=5)
    kw = dict(penalty="l2", alpha=1e-2)
    fits = {
        (dtype, epochs): fastgd.fit(_chunked(X), _chunked(y), "logistic", epochs=epochs,
                                    optimizer=Newton(tol=1e-10, hessian_dtype=dtype), **kw)
        for dtype in ("float64", "float32") for epochs in (1, 50)
    }  # fmt: skip
    first = np.max(np.abs(fits["float32", 1].params - fits["float64", 1].params))
    assert 1e-13 < first / np.max(np.abs(fits["float64", 1].params)) < 1e-5
    assert fits["float32", 50].stop_reason == "converged"
    _assert_close(fits["float32", 50].params, fits["float64", 50].params, 1e-8)


def test_tree_sum_pairs_by_position():
    parts = [np.float64(v) for v in (1e16, 1.0, -1e16, 1.0, 3.0)]
    # ((p0 + p1) + (p2 + p3)) + p4, whatever the values
    expected = ((parts[0] + parts[1]) + (parts[2] + parts[3])) + parts[4]
    assert dask_cluster.tree_sum(parts) == expected
    total = dask_cluster.tree_sum([(1.0, None, np.ones(2))] * 3)
    assert total[0] == 3.0 and total[1] is None and np.array_equal(total[2], [3.0, 3.0])


def _chunk_rows(chunk, offset):
    return chunk.shape[0] + offset


def test_rounds_regroup_chunks_that_moved(client):
    """Chunks are grouped by the worker holding them once, and again after a round
    whose task ran elsewhere; a stale grouping changes no result."""
    workers = sorted(client.scheduler_info()["workers"])
    chunks = [client.scatter(np.zeros((rows, 2)), workers=[workers[i % 2]], hash=False) for i, rows in enumerate(ROWS)]  # fmt: skip
    cluster = dask_cluster.Cluster(client)
    expected = [rows + 1 for rows in ROWS]
    assert cluster.map(_chunk_rows, chunks, (1,)) == expected
    held = dict(cluster._groups(chunks))
    assert held == {workers[0]: [0, 2], workers[1]: [1, 3]}
    keys = tuple(chunk.key for chunk in chunks)
    cluster._grouped = (keys, [("tcp://elsewhere:1", [0, 1, 2, 3])])  # as if they moved
    assert cluster.map(_chunk_rows, chunks, (1,)) == expected
    assert cluster._grouped is None  # the task ran elsewhere: asked again next round
    # that task copied chunks 1 and 3 to one worker: the copies do not unbalance the groups
    assert dict(cluster._groups(chunks)) == held


def test_packed_hessian_triangle_round_trips():
    from fastgd.distributed import tasks

    A = np.random.default_rng(0).standard_normal((6, 6))
    H = A + A.T
    packed = tasks.packed_triangle(H)
    assert packed.shape == (21,)
    np.testing.assert_array_equal(tasks.unpacked(packed, 6), H)
    np.testing.assert_array_equal(tasks.unpacked(packed + packed, 6), H + H)  # sums commute
