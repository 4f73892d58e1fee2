"""pytest-benchmark suites of fastgd, skipped by the normal test run.

Run them with::

    pytest benchmarks --benchmark-only                      # JSON: benchmarks/results/pytest-benchmark.json
    pytest benchmarks --benchmark-only --bench-rows 2000    # smaller data
    pytest benchmarks --benchmark-only -k "numba and linear"

(``--benchmark-only`` overrides the ``--benchmark-skip`` of pyproject.toml.) The data, the
model table and the checks are those of ``fastgd bench`` (:mod:`fastgd.bench`). Every
test fits once untimed first: that compiles (or loads) the kernels, so compile time stays
out of the timed rounds (it is in each benchmark's ``extra_info["compile_s"]`` and in a
summary at the end), and its result is checked against the NumPy reference before any
round is timed.
"""

from pathlib import Path

import pytest

from fastgd.bench import suite
from fastgd.bench.cli import STANDARD
from fastgd.bench.system import machine_info

RESULTS = Path(__file__).parent / "results" / "pytest-benchmark.json"
COMPILE_TIMES = {}


def pytest_addoption(parser):
    group = parser.getgroup("fastgd benchmarks")
    rows, features = STANDARD["rows"], STANDARD["features"]
    group.addoption("--bench-rows", type=int, default=rows, help=f"rows of the data ({rows})")
    group.addoption("--bench-features", type=int, default=features, help=f"features ({features})")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # results saved as JSON by default when the benchmarks run
    if config.getoption("benchmark_only", False) and not config.getoption("benchmark_json", None):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = open(RESULTS, "wb")  # noqa: SIM115 (pytest-benchmark closes it)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["fastgd"] = dict(
        machine=machine_info(),
        compile_s={f"{b} {d}": s for (b, d), s in COMPILE_TIMES.items()},
        rows=config.getoption("--bench-rows"),
        features=config.getoption("--bench-features"),
    )


def pytest_terminal_summary(terminalreporter):
    if COMPILE_TIMES:
        terminalreporter.section("fastgd: compile or kernel-cache load (not in the timed rounds)")
        for (backend, dtype), seconds in sorted(COMPILE_TIMES.items()):
            terminalreporter.write_line(f"{backend:>8} {dtype}: {seconds:.3f} s")


class Bench:
    """Shared state of a benchmark session: the data, and the NumPy reference results."""

    def __init__(self, rows, features):
        self.rows, self.features = rows, features
        self._data = suite._Data(rows, features, seed=0)
        self._references = {}

    def data(self, case, dtype):
        """``(X, y)`` of the model's task (made once per session)."""
        return self._data.get(case, dtype)

    def options(self, case, batch_size, threads):
        """The fit options of ``fastgd bench``: plain SGD, rows in order, the model's rate."""
        epochs = STANDARD["full_epochs"] if batch_size is None else STANDARD["epochs"]
        return dict(batch_size=batch_size, epochs=epochs, lr=case.lr, seed=0, n_threads=threads,
                    shuffle=False)  # fmt: skip

    def reference(self, case, dtype, batch_size):
        """The NumPy backend's result for this grid point (results do not depend on threads)."""
        key = (case.name, dtype, batch_size)
        if key not in self._references:
            X, y = self.data(case, dtype)
            options = self.options(case, batch_size, 1)
            self._references[key] = case.run_fastgd(X, y, backend="numpy", **options)
        return self._references[key]

    @staticmethod
    def note_compile(backend, dtype, seconds):
        """Keep the largest compile/load time seen per backend and dtype."""
        key = (backend, dtype)
        COMPILE_TIMES[key] = max(COMPILE_TIMES.get(key, 0.0), seconds)


@pytest.fixture(scope="session")
def bench(request):
    """The session's :class:`Bench`."""
    return Bench(
        request.config.getoption("--bench-rows"), request.config.getoption("--bench-features")
    )


def rounds_for(seconds, budget=1.0, most=5):
    """Timed rounds so that a test takes about ``budget`` seconds (1 to ``most``)."""
    return max(1, min(most, int(budget / max(seconds, 1e-9))))
