"""One ``backend`` fixture: every test that takes it runs once per available backend.

Set ``FASTGD_REQUIRE_BACKENDS=numba,cython`` (as CI does) to fail, not skip, when a
backend that should be there could not be loaded (e.g. the Cython extension did not build).
"""

import os

import pytest

from fastgd.backends import BACKENDS, available_backends, get_backend, unavailable_reason

COMPILED = [name for name in BACKENDS if name != "numpy"]


def pytest_sessionstart(session):
    required = [b for b in os.environ.get("FASTGD_REQUIRE_BACKENDS", "").split(",") if b]
    missing = {b: unavailable_reason(b) for b in required if b not in available_backends()}
    if missing:
        raise pytest.UsageError(f"required fastgd backends are not available: {missing}")


def _backend_params(names):
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name not in available_backends(), reason=f"{name}: {unavailable_reason(name)}"
            ),
        )
        for name in names
    ]


@pytest.fixture(params=_backend_params(BACKENDS))
def backend(request):
    """Name of a backend (numba, cython, numpy)."""
    return request.param


@pytest.fixture(params=_backend_params(COMPILED))
def compiled_backend(request):
    """The module of a compiled backend (numba, cython), to compare with the reference."""
    return get_backend(request.param)


# tests whose other processes (Dask workers, children of the Ctrl-C and threading-layer
# tests) compile kernels into the shared on-disk cache: run last (see below)
LAST = (
    "test_dask.py::",
    "test_interrupt.py::test_sigint_stops_a_long_fit",
    "test_concurrency.py::test_concurrent_fits_on_each_numba_threading_layer",
)


def pytest_collection_modifyitems(config, items):
    """Run the tests of :data:`LAST` last (a stable sort keeps every other order).

    Their other processes compile kernel variants into the shared on-disk Numba cache. A
    kernel loaded from that cache can round differently from the same kernel compiled in
    this process (see ``_chunk_gradient`` in ``backends/numba/linear.py``), so a test that
    compares two variants bit for bit (one or two threads) could find one compiled here
    and the other loaded from a worker's compile; measured: test_network's bit-identity
    test failed in a cold-cache run with the Dask tests before it.
    """
    items.sort(key=lambda item: any(name in item.nodeid for name in LAST))
