"""scikit-learn and PyTorch on the same model, data, optimizer, batches and threads.

Each test skips itself when the library is missing or does not do the model or batch size
(scikit-learn's SGD estimators: batch size 1). One untimed run first is checked against the
NumPy reference of fastgd (parameters where the updates are identical, else loss or
accuracy: see :mod:`fastgd.bench.competitors`), then the training alone is timed.
"""

import pytest
from conftest import rounds_for

from fastgd.bench import MODELS
from fastgd.bench.competitors import COMPETITORS, NotApplicable, Unavailable
from fastgd.bench.suite import batch_label, check_against
from fastgd.bench.system import max_threads, pin_threads

BATCH_SIZES = (1, 32, 256, None)
DTYPES = ("float64", "float32")
THREADS = (1, 2)
CASES = [(c, m) for m, case in MODELS.items() for c in case.competitors]


@pytest.mark.parametrize("threads", THREADS, ids=lambda n: f"{n}thr")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda b: f"batch{batch_label(b)}")
@pytest.mark.parametrize("competitor,model", CASES)
def test_competitor(benchmark, bench, competitor, model, batch_size, dtype, threads):
    if threads > max_threads():
        pytest.skip(f"only {max_threads()} threads here")
    case = MODELS[model]
    label, run = COMPETITORS[competitor]
    X, y = bench.data(case, dtype)
    options = bench.options(case, batch_size, threads)
    kwargs = dict(batch_size=batch_size, epochs=options["epochs"], lr=case.lr, seed=0,
                  threads=threads, shuffle=False)  # fmt: skip
    benchmark.group = f"{model} {dtype} batch {batch_label(batch_size)} {threads} thr"
    with pin_threads(threads):
        try:
            first = run(case, X, y, **kwargs)
        except NotApplicable as reason:
            pytest.skip(str(reason))
        except Unavailable as reason:
            pytest.skip(str(reason))
        reference = bench.reference(case, dtype, batch_size)
        check = check_against(case, first.check, reference, X, y, dtype, params=first.params,
                              outputs=first.outputs, predicted=first.predicted)  # fmt: skip
        assert check["ok"], f"{label} disagrees with fastgd: {check}"
        benchmark.pedantic(run, args=(case, X, y), kwargs=dict(kwargs, evaluate=False),
                           rounds=rounds_for(first.seconds), iterations=1)  # fmt: skip
    benchmark.extra_info.update(
        library=label, samples=X.shape[0] * options["epochs"], rows=X.shape[0],
        features=X.shape[1], epochs=options["epochs"], check=check, note=first.note,
    )  # fmt: skip
