"""``fastgd bench --quick`` on tiny data: the table and JSON appear, and every backend and
competitor agrees with the NumPy reference (the MLP included). No timing is asserted."""

import json

import numpy as np
import pytest

import fastgd
from fastgd.__main__ import main
from fastgd.bench import MODELS, make_data, report, roofline
from fastgd.bench.competitors import COMPETITORS, row_orders
from fastgd.bench.suite import check_against
from fastgd.bench.system import measure_memory, measure_startup


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["bench", "--quick", "--rows", "300", "--features", "4", "--full-epochs", "5",
            "--repeats", "1", "--no-memory", "--no-startup", "--no-plot", "--json", str(path)]  # fmt: skip
    return argv, path


def test_quick_suite_table_json_and_checks(quick_run, capsys):
    argv, path = quick_run
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Throughput in samples/s" in printed
    payload = json.loads(path.read_text())
    assert payload["ok"]
    grid = payload["grid"]
    backends = fastgd.available_backends()
    points = {(r["model"], r["dtype"], r["batch_size"], r["threads"]) for r in grid}
    assert len(points) == len(MODELS) * 2 * 4 * len(payload["settings"]["threads"])
    for point in points:
        impls = {
            r["impl"]
            for r in grid
            if (r["model"], r["dtype"], r["batch_size"], r["threads"]) == point
        }
        assert set(backends) <= impls
    assert {r["model"] for r in grid} == set(MODELS)
    for record in grid:
        assert record["rows"] == MODELS[record["model"]].n_rows(300)
        if record["impl"] == "numpy":
            assert record["check"] is None  # the reference
        else:
            assert record["check"]["ok"], record
            assert record["median_s"] is not None and record["samples_per_s"] > 0
    if "numpy" in backends:
        assert all(r["speedup_vs_numpy"] for r in grid)
    header, rows = report.grid_rows(grid)
    assert len(rows) == len(points) and header[:4] == ["model", "dtype", "batch", "threads"]
    # the baseline: the tight NumPy loop runs at every grid point, makes the reference's
    # updates, and every speed-up is relative to it
    for point in points:
        base = [r for r in grid if (r["model"], r["dtype"], r["batch_size"], r["threads"]) == point
                and r["impl"] == "numpy-loop"]  # fmt: skip
        assert len(base) == 1 and base[0]["check"]["ok"] and base[0]["speedup_vs_numpy"] == 1.0
    # the roofline: limits measured at every thread count, a share for every fastgd row
    limits = payload["roofline"]
    assert set(limits["stream_gbs"]) == {str(t) for t in payload["settings"]["threads"]}
    assert all(v > 0 for v in limits["stream_gbs"].values())
    assert all(r["limit_share"] > 0 for r in grid if r["kind"] == "fastgd")
    # tiny data sets: read rate measured at the smallest working set, every thread count
    assert list(limits["working_set_gbs"]) == [str(roofline.WORKING_SET_MIN)]
    assert set(limits["working_set_gbs"][str(roofline.WORKING_SET_MIN)]) == set(
        limits["stream_gbs"]
    )
    assert "Share of the machine's limit" in printed
    # the second-order table: every fastgd Newton / L-BFGS run reaches the optimum
    assert "Second-order solvers" in printed
    exact = [r for r in payload["solvers"] if r["family"] in ("newton", "lbfgs")]
    fastgd_runs = [r for r in exact if r["solver"].startswith("fastgd")]
    assert {r["family"] for r in fastgd_runs} == {"newton", "lbfgs"}
    assert all(r["reached"] and r["median_s"] > 0 for r in fastgd_runs), fastgd_runs
    # the recurrent table: LSTM and GRU on every backend, parameters checked against numpy
    assert "Recurrent networks" in printed
    recurrent = payload["recurrent"]
    assert {(r["cell"], r["contender"]) for r in recurrent} >= {
        (cell, b) for cell in ("lstm", "gru") for b in backends
    }
    assert all(r["check"] is None and r["samples_per_s"] > 0 for r in recurrent), recurrent


def test_quick_suite_checks_the_mlp_exactly(quick_run):
    # the MLP rows: every backend and every installed competitor (started from fastgd's
    # initial weights, same batches) is checked by its parameters, not by the loss
    _, path = quick_run
    grid = [r for r in json.loads(path.read_text())["grid"] if r["model"] == "mlp"]
    assert grid
    for record in grid:
        if record["impl"] != "numpy":
            assert record["check"]["kind"] == "params", record
            assert record["check"]["ok"], record


def _agreement(competitor, model, batch_size, dtype, shuffle=False):
    """A competitor's check against fastgd's NumPy reference at a tiny size."""
    case = MODELS[model]
    X, y = make_data(case, 60, 3, dtype, seed=2)
    epochs = 3 if batch_size is None else 2
    reference = case.run_fastgd(X, y, backend="numpy", batch_size=batch_size, epochs=epochs,
                                lr=case.lr, seed=5, n_threads=1, shuffle=shuffle)  # fmt: skip
    _, run = COMPETITORS[competitor]
    outcome = run(case, X, y, batch_size=batch_size, epochs=epochs, lr=case.lr, seed=5,
                  threads=1, shuffle=shuffle)  # fmt: skip
    return check_against(case, outcome.check, reference, X, y, dtype, params=outcome.params,
                         outputs=outcome.outputs, predicted=outcome.predicted)  # fmt: skip


@pytest.mark.parametrize("shuffle", [False, True], ids=["in_order", "shuffled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 32, None])
@pytest.mark.parametrize("model", ["linear", "logistic", "softmax", "mlp"])
def test_torch_agrees_with_fastgd(model, batch_size, dtype, shuffle):
    # PyTorch is fed fastgd's start and batches: the parameters agree, shuffled or not
    pytest.importorskip("torch")
    check = _agreement("torch", model, batch_size, dtype, shuffle)
    assert check["kind"] == "params" and check["ok"], check
    assert check["value"] < (1e-12 if dtype == "float64" else 1e-5), check


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 32, None])
def test_sklearn_mlp_agrees_with_fastgd(batch_size, dtype):
    pytest.importorskip("sklearn")
    check = _agreement("sklearn-mlp", "mlp", batch_size, dtype)
    assert check["kind"] == "params" and check["ok"], check
    assert check["value"] < (1e-12 if dtype == "float64" else 1e-5), check


def test_sklearn_mlp_shuffling_is_checked_by_the_loss():
    # scikit-learn shuffles with its own generator: only the final loss can be compared
    pytest.importorskip("sklearn")
    check = _agreement("sklearn-mlp", "mlp", 8, "float64", shuffle=True)
    assert check["kind"] == "loss" and check["ok"], check


def test_competitor_batches_are_fastgds():
    # PyTorch is fed row_orders(): check they are the batches fastgd trains on, with a
    # plain NumPy mini-batch SGD loop for least squares
    case = MODELS["linear"]
    X, y = make_data(case, 103, 3, seed=1)
    result = fastgd.fit(
        X, y, batch_size=10, epochs=3, lr=0.05, seed=7, shuffle=True, backend="numpy"
    )
    w, b = np.zeros(3), 0.0
    for order in row_orders(len(X), 3, 10, True, 7):
        for start in range(0, len(X), 10):
            rows = order[start : start + 10]
            r = X[rows] @ w + b - y[rows]
            w, b = w - 0.05 * 2 * X[rows].T @ r / len(rows), b - 0.05 * 2 * r.mean()
    np.testing.assert_allclose(result.params, np.r_[w, b], rtol=1e-10)


def test_memory_and_startup_children():
    memory = measure_memory("linear", [400], 3, backends=["numpy"], log=lambda _: None)
    assert {m["batch_size"] for m in memory} == {"32", "full"}
    assert all(m["data_mb"] > 0 and m["extra_mb"] >= 0 for m in memory)
    (startup,) = measure_startup(["numpy"], cold=False, rows=50, features=2, log=print)
    assert startup["import_s"] > 0 and startup["first_fit_s"] > 0


def test_shuffled_blocks_grid_checks_every_implementation(tmp_path):
    """``--shuffle blocks``: fastgd's backends, the NumPy loop and PyTorch train on fit's
    block orders and agree with the reference; scikit-learn draws its own."""
    path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--rows", "300", "--features", "4", "--repeats", "1",
            "--models", "linear", "--batch-sizes", "32", "--threads", "1", "--shuffle", "blocks",
            "--no-memory", "--no-startup", "--no-plot", "--no-roofline", "--no-solvers",
            "--no-recurrent", "--json", str(path)]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(path.read_text())
    assert payload["ok"] and payload["settings"]["shuffle"] == "blocks"
    checked = {r["impl"] for r in payload["grid"] if r["check"] and r["check"]["ok"]}
    assert {"numpy-loop", *fastgd.available_backends()} - {"numpy"} <= checked


def test_chart(tmp_path):
    pytest.importorskip("matplotlib")
    records = [
        dict(model=m, dtype="float64", batch_size=b, threads=2, impl=i, speedup_vs_numpy=s)
        for m in ("linear", "softmax") for b in ("1", "32", "full")
        for i, s in (("numpy", 1.0), ("numba", 3.0), ("cython", 2.0))
    ]  # fmt: skip
    path = report.plot(records, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_share_of_a_cached_data_set_is_of_its_own_read_rate():
    """A data set that fits in a cache is bounded by the read rate measured at its size
    (the smallest measured size not below it); larger ones by the streaming rate, and a
    working-set rate never lowers the limit below the streaming one."""
    limits = {"stream_gbs": {"1": 10.0}, "matmul_gflops": {},
              "working_set_gbs": {"1048576": {"1": 80.0}, "8000000": {"1": 40.0},
                                  "16000000": {"1": 5.0}}}  # fmt: skip
    assert roofline.read_limit(limits, 1, 1000) == 80.0
    assert roofline.read_limit(limits, 1, 2_000_000) == 40.0
    assert roofline.read_limit(limits, 1, 9_000_000) == 10.0  # noisy 5 GB/s: not below
    assert roofline.read_limit(limits, 1, 10**9) == 10.0
    assert roofline.read_limit(limits, 1) == 10.0
    record = {"samples_per_s": 1e6, "features": 10, "dtype": "float64", "threads": 1}
    assert roofline.share(record, limits) == pytest.approx(80e6 / 10e9)  # rows unknown
    assert roofline.share({**record, "rows": 20_000}, limits) == pytest.approx(80e6 / 40e9)


def test_stream_reader_measures_again_at_each_call():
    # one array, read anew at each call: a benchmark pairs a reading with each timing
    reader = roofline.stream_reader(1, 4 * 2**20)
    readings = [reader() for _ in range(3)]
    assert all(np.isfinite(r) and r > 1e8 for r in readings)  # > 0.1 GB/s from a cache
    assert roofline.stream_read(1, 4 * 2**20) > 1e8


def test_shuffled_read_script_reports_every_measurement(capsys):
    import importlib.util
    from pathlib import Path

    from fastgd.backends import available_backends

    path = Path(__file__).parent.parent / "benchmarks" / "shuffled_read.py"
    spec = importlib.util.spec_from_file_location("shuffled_read", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    backends = [b for b in available_backends() if b != "numpy"]
    assert script.main(["--rows", "20000", "--features", "10", "--rounds", "1",
                        "--backends", ",".join(backends)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()[1:]
    names = [line[:32].strip() for line in lines]
    assert names[:2] == ["streaming limit (GB/s)", "read in order"]
    assert {f"fastgd {b}, batch {n}" for b in backends for n in (32, 256)} <= set(names)
    assert {f"shuffled read, ahead {k}" for k in script.AHEAD} <= set(names)
    assert {f"shuffled into L2, ahead {k}" for k in script.AHEAD[1:]} <= set(names)
    assert {f"minimal SGD{near}, batch {n}" for near in ("", " + L1") for n in (32, 256)} <= set(names)  # fmt: skip
    shares = [float(line.split()[-1].rstrip("%")) for line in lines]
    assert all(0 < share < 1e4 for share in shares)
