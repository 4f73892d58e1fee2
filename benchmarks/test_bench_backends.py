"""fastgd's backends: backend x model x batch size x dtype x threads.

Every test fits once untimed (compiling or loading the kernels), checks that fit against
the NumPy reference, then times whole ``fastgd.fit`` calls. Benchmarks of one grid point
share a group, so pytest-benchmark's table compares the backends side by side.
"""

import pytest
from conftest import rounds_for

from fastgd.backends import BACKENDS, available_backends, unavailable_reason
from fastgd.bench import MODELS
from fastgd.bench.suite import batch_label, check_against
from fastgd.bench.system import max_threads, pin_threads

BATCH_SIZES = (1, 32, 256, None)
DTYPES = ("float64", "float32")
THREADS = (1, 2)


def _backend(name):
    reason = f"{name}: {unavailable_reason(name)}"
    return pytest.param(
        name, marks=pytest.mark.skipif(name not in available_backends(), reason=reason)
    )


def _threads(n):
    skip = pytest.mark.skipif(n > max_threads(), reason=f"only {max_threads()} threads here")
    return pytest.param(n, marks=skip, id=f"{n}thr")


@pytest.mark.parametrize("threads", [_threads(n) for n in THREADS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda b: f"batch{batch_label(b)}")
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("backend", [_backend(b) for b in BACKENDS])
def test_fit(benchmark, bench, backend, model, batch_size, dtype, threads):
    case = MODELS[model]
    X, y = bench.data(case, dtype)
    options = bench.options(case, batch_size, threads)
    benchmark.group = f"{model} {dtype} batch {batch_label(batch_size)} {threads} thr"
    with pin_threads(threads):
        first = case.run_fastgd(X, y, backend=backend, **options)  # compiles or loads kernels
        bench.note_compile(backend, dtype, first.compile_time)
        reference = bench.reference(case, dtype, batch_size)
        check = check_against(case, "params", reference, X, y, dtype, params=first.params)
        assert check["ok"], (
            f"{backend} differs from numpy by {check['value']:.3g} > {check['tol']:g}"
        )
        result = benchmark.pedantic(
            case.run_fastgd, args=(X, y), kwargs=dict(backend=backend, **options),
            rounds=rounds_for(first.train_time), iterations=1,
        )  # fmt: skip
    benchmark.extra_info.update(
        samples=X.shape[0] * options["epochs"], rows=X.shape[0], features=X.shape[1],
        epochs=options["epochs"], compile_s=first.compile_time, train_s=result.train_time,
        check=check,
    )  # fmt: skip
