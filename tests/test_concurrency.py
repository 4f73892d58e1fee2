"""Fits from several Python threads at once give the serial fits' results, on every
backend and every Numba threading layer (``workqueue`` included: fastgd serializes its
kernel calls there instead of letting Numba abort the process)."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastgd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cases(rng):
    X = rng.standard_normal((4096, 24))
    y = X @ rng.standard_normal(24) + 0.1 * rng.standard_normal(4096)
    small = X[:200, :5]
    labels = (small[:, 0] > 0).astype(int)
    return [
        # a full batch large enough for the parallel kernels (chunks in a parallel region)
        (X, y, dict(batch_size=None, epochs=3, lr=0.05, n_threads=2)),
        (X, y, dict(batch_size=1024, epochs=2, optimizer="adam", n_threads=2)),
        (small, labels, dict(model="logistic", batch_size=1, epochs=3, lr=0.05)),
        (small, y[:200], dict(model=fastgd.MLP(hidden=(8,), task="regression"), epochs=3)),
    ]


def test_concurrent_fits_equal_serial_fits(backend):
    cases = _cases(np.random.default_rng(0))

    def run(case):
        X, y, options = case
        return fastgd.fit(X, y, backend=backend, seed=1, **options)

    serial = [run(case) for case in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, cases * 3))
    for result, expected in zip(concurrent, serial * 3, strict=True):
        np.testing.assert_array_equal(result.params, expected.params)
        np.testing.assert_array_equal(result.loss_history, expected.loss_history)


# The child: serial fits (the first parallel call chooses the threading layer), then the
# same fits from 4 threads at once, twice each; prints the layer and whether all agree.
CHILD = r"""
import json
from concurrent.futures import ThreadPoolExecutor
import numba, numpy as np, fastgd
from fastgd.backends.blas import _PINNED
rng = np.random.default_rng(0)
X = rng.standard_normal((4096, 24))
y = X @ rng.standard_normal(24)
cases = [dict(batch_size=None, epochs=3, lr=0.05), dict(batch_size=1024, epochs=2, optimizer="adam")]
run = lambda c: fastgd.fit(X, y, backend="numba", n_threads=2, seed=1, **c).params
serial = [run(c) for c in cases]
with ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(run, cases * 4))
same = all(np.array_equal(r, s) for r, s in zip(results, serial * 4))
print(json.dumps(dict(layer=numba.threading_layer(), same=same, blas_pins=_PINNED["count"])))
"""


@pytest.mark.parametrize("layer", ["workqueue", "omp", "tbb"])
def test_concurrent_fits_on_each_numba_threading_layer(layer):
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    run = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    if run.returncode != 0 and "No threading layer could be loaded" in run.stderr:
        pytest.skip(f"the {layer} threading layer is not installed")
    assert run.returncode == 0, run.stderr[-3000:]  # workqueue unguarded: SIGABRT
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == dict(layer=layer, same=True, blas_pins=0)


def test_kernels_pin_blas_when_another_thread_holds_a_threadpoolctl_limit(compiled_backend):
    """threadpoolctl gives OpenBLAS limits to the thread that holds a ``threadpool_limits``
    context and ignores other threads' limits: a fit in another thread must still run its
    kernels with single-threaded BLAS (else it oversubscribes the cores and its result
    depends on the thread count)."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from fastgd.backends.blas import single_threaded_blas

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 12)).astype(np.float32)
    y = rng.integers(0, 3, 600)
    model = fastgd.MLP(hidden=(96, 96), init="xavier_uniform")
    options = dict(model=model, optimizer="adam", batch_size=300, epochs=2, seed=0,
                   backend=compiled_backend.name, n_threads=2)  # fmt: skip
    expected = fastgd.fit(X, y, **options)
    seen = []

    def probe():
        with single_threaded_blas():
            libs = ThreadpoolController().lib_controllers
            seen.extend(lib.get_num_threads() for lib in libs if lib.user_api == "blas")

    with threadpool_limits(2, user_api="blas"), ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(probe).result()
        result = pool.submit(lambda: fastgd.fit(X, y, **options)).result()
    assert seen and all(n == 1 for n in seen)
    np.testing.assert_array_equal(result.params, expected.params)
