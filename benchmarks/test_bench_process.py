"""What needs a new process: import and first fit (kernel cache warm and cold), and the
peak memory of a fit against the size of the data. Each is one timed round of a child
process; the measurements are in ``extra_info``.
"""

import pytest

from fastgd.backends import available_backends
from fastgd.bench.system import measure_memory, startup_once

STARTUP = [("numba", "warm"), ("numba", "cold"), ("cython", "-"), ("numpy", "-")]
MEMORY_ROWS = (20_000, 200_000)


@pytest.mark.parametrize("backend,cache", STARTUP)
def test_import_and_first_fit(benchmark, backend, cache):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available")
    benchmark.group = "import fastgd and a first fit, new process"
    record = benchmark.pedantic(startup_once, args=(backend, cache), rounds=1, iterations=1)
    benchmark.extra_info.update(record)


@pytest.mark.parametrize("rows", MEMORY_ROWS)
@pytest.mark.parametrize("backend", ["numba", "cython", "numpy"])
def test_peak_memory(benchmark, bench, backend, rows):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available")
    benchmark.group = "peak memory of a fit (time: the whole child process)"
    records = benchmark.pedantic(
        measure_memory, args=("linear", [rows], bench.features), rounds=1, iterations=1,
        kwargs=dict(backends=[backend], log=lambda _: None),
    )  # fmt: skip
    benchmark.extra_info["memory"] = records
