"""The benchmark grid: every implementation on the same data, checked, then timed.

For each model x dtype x batch size x thread count, every fastgd backend and every
competitor of the model (:data:`fastgd.bench.models.MODELS`) trains on the same data
with the same optimizer (plain SGD), learning rate, batch size and number of epochs.
Before a time is reported, its final parameters (or, where the algorithms differ, its
loss or accuracy) are checked against the NumPy reference of the same row. Each
implementation is warmed up with one epoch of the same fit first, so Numba's compilation (or
loading from the on-disk cache) is timed apart and never counted.
"""

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import fastgd

from .competitors import COMPETITORS, NotApplicable, Unavailable
from .models import MODELS, accuracy, fastgd_outputs, make_data, training_loss
from .numpy_loop import LABEL as BASELINE_LABEL
from .numpy_loop import run_numpy_loop
from .system import pin_threads

# parameter agreement with the reference: max |p - p_ref| / max |p_ref| (a model can set
# its own, ModelCase.params_rtol: see params_tolerance)
# the baseline of every speed-up: the tight NumPy loop (fastgd.bench.numpy_loop)
BASELINE = "numpy-loop"
RUNNERS = {**COMPETITORS, BASELINE: (BASELINE_LABEL, run_numpy_loop)}

PARAMS_RTOL = {"float64": 1e-8, "float32": 1e-3}
# competitors that start elsewhere or visit rows in another order
LOSS_RTOL = 0.1  # final training losses within 10% (relative)
ACCURACY_ATOL = 0.05  # training accuracies within 5 percentage points


def batch_label(batch_size):
    """``"full"`` for ``None``, else the number as a string.

    Parameters
    ----------
    batch_size : int or None

    Returns
    -------
    str
    """
    return "full" if batch_size is None else str(batch_size)


def parse_batch(text):
    """Inverse of :func:`batch_label`.

    Parameters
    ----------
    text : str

    Returns
    -------
    int or None
    """
    return None if text == "full" else int(text)


@dataclass
class BenchConfig:
    """Settings of a benchmark run (the ``fastgd bench`` options).

    Attributes
    ----------
    models : tuple of str
        Keys of :data:`fastgd.bench.models.MODELS`.
    backends : tuple of str
        fastgd backends; ``"numpy"`` is the baseline of the speed-ups and the reference of
        the checks (without it, the first backend is the reference).
    batch_sizes : tuple
        Batch sizes, ``None`` for full batch.
    dtypes : tuple of str
    threads : tuple of int
        Thread counts: fastgd's ``n_threads``, BLAS (threadpoolctl) and competitors alike.
    rows, features : int
        Size of the synthetic data. A model with ``max_rows`` (:class:`ModelCase`) trains
        on at most that many rows: the MLP on 2,000, so that its per-sample updates keep
        the standard suite near two minutes.
    epochs : int
        Epochs of mini-batch runs.
    full_epochs : int
        Epochs (= steps) of full-batch runs.
    repeats : int
        At most this many timed runs per implementation; the median is reported.
    max_time : float
        Stop repeating once the timed runs of one implementation took this long (s).
    shuffle : bool or {"rows", "blocks"}
        Shuffle the rows (or blocks of rows, as ``fit``'s ``shuffle``) each epoch. Off by default, so that every library makes the same
        updates in the same order and can be checked exactly (fastgd and PyTorch see the
        same shuffled batches either way).
    competitors : bool
        Also time the other libraries of each model (when installed).
    seed : int
    """

    models: tuple = tuple(MODELS)
    backends: tuple = field(default_factory=lambda: tuple(fastgd.available_backends()))
    batch_sizes: tuple = (1, 32, 256, None)
    dtypes: tuple = ("float64", "float32")
    threads: tuple = (1, 2)
    rows: int = 10_000
    features: int = 100
    epochs: int = 2
    full_epochs: int = 50
    repeats: int = 5
    max_time: float = 0.5
    shuffle: bool | str = False
    competitors: bool = True
    seed: int = 0


def time_runs(run, repeats, max_time, seconds=None):
    """Call ``run()`` up to ``repeats`` times (at least once, until ``max_time`` s are spent).

    Parameters
    ----------
    run : callable
    repeats : int
    max_time : float
    seconds : callable, optional
        ``seconds(returned)`` is the time of a call (default: its wall time).

    Returns
    -------
    times : list of float
        The time of each call.
    last : object
        What the last call returned.
    """
    times, last = [], None
    while len(times) < max(1, repeats):
        started = time.perf_counter()
        last = run()
        elapsed = time.perf_counter() - started
        times.append(elapsed if seconds is None else seconds(last))
        if sum(times) >= max_time:
            break
    return times, last


def params_difference(params, reference):
    """``max |params - reference| / max |reference|`` (absolute if the reference is 0).

    Parameters
    ----------
    params, reference : array-like
        Flat parameter vectors (``inf`` if their shapes differ).

    Returns
    -------
    float
    """
    params = np.asarray(params, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if params.shape != reference.shape:
        return np.inf
    scale = np.abs(reference).max(initial=0.0)
    return float(np.abs(params - reference).max(initial=0.0) / (scale if scale > 0 else 1.0))


def params_tolerance(case, dtype):
    """Tolerance of the parameter check: the model's own, else :data:`PARAMS_RTOL`.

    Parameters
    ----------
    case : ModelCase
    dtype : str

    Returns
    -------
    float
    """
    return case.params_rtol.get(dtype, PARAMS_RTOL[dtype])


def check_against(case, kind, reference, X, y, dtype, *, params=None, outputs=None, predicted=None):  # fmt: skip
    """Compare a run with the reference fastgd result of the same grid row.

    Parameters
    ----------
    case : ModelCase
    kind : {"params", "loss", "accuracy"}
    reference : FitResult
    X, y : ndarray
        The training data.
    dtype : str
    params, outputs, predicted : ndarray, optional
        What the run produced (see :class:`fastgd.bench.competitors.Outcome`).

    Returns
    -------
    dict
        ``kind``, ``value`` (the difference), ``tol``, ``ok``.
    """
    if kind == "params":
        value, tol = params_difference(params, reference.params), params_tolerance(case, dtype)
    elif kind == "loss":
        ref = training_loss(case, y, fastgd_outputs(case, reference, X))
        value, tol = abs(training_loss(case, y, outputs) - ref) / max(abs(ref), 1e-12), LOSS_RTOL
    elif kind == "accuracy":
        ref = accuracy(y, reference.predict(X))
        value, tol = abs(accuracy(y, predicted) - ref), ACCURACY_ATOL
    else:
        raise ValueError(f"unknown check {kind!r}")
    return dict(kind=kind, value=value, tol=tol, ok=bool(value <= tol))


class _Data:
    """Synthetic data per (model, dtype), made once; float32 is float64 rounded.

    A model with ``max_rows`` gets that many rows (:meth:`ModelCase.n_rows`).
    """

    def __init__(self, rows, features, seed):
        self.rows, self.features, self.seed, self._cache = rows, features, seed, {}

    def get(self, case, dtype):
        key = (case.name, dtype)
        if key not in self._cache:
            rows = case.n_rows(self.rows)
            self._cache[key] = make_data(case, rows, self.features, dtype, self.seed)
        return self._cache[key]


def _record(case, dtype, batch_size, threads, impl, kind, times, X, epochs, check, **extra):
    ok = check is None or check["ok"]
    median = statistics.median(times) if ok else None
    samples = X.shape[0] * epochs
    return dict(
        model=case.name, dtype=dtype, batch_size=batch_label(batch_size), threads=threads,
        impl=impl, kind=kind, rows=X.shape[0], features=X.shape[1], epochs=epochs,
        times=times if ok else None, median_s=median,
        samples_per_s=samples / median if median else None, speedup_vs_numpy=None,
        check=check, **extra,
    )  # fmt: skip


def run_grid(config, log=print):
    """Run the grid of :class:`BenchConfig` and return one record per timed run.

    Parameters
    ----------
    config : BenchConfig
    log : callable
        Progress messages (one line per grid row).

    Returns
    -------
    records : list of dict
        ``model, dtype, batch_size, threads, impl`` (a backend name or a competitor's
        label), ``kind`` (``"fastgd"`` or ``"competitor"``), ``rows, features, epochs``,
        ``times`` and ``median_s`` (wall time of the whole fit call), ``samples_per_s``
        (rows x epochs / median), ``speedup_vs_numpy``, ``check`` (against the
        reference; ``None`` for the reference itself), and ``compile_s`` (fastgd: the
        first fit's compile or cache-load time in this process) or ``note``
        (competitors). A run whose check failed has no times.
    skipped : list of dict
        Competitors that could not run, with the reason.
    """
    data = _Data(config.rows, config.features, config.seed)
    records, skipped, warmed = [], [], set()
    for threads in config.threads:
        with pin_threads(threads):
            for model in config.models:
                case = MODELS[model]
                for dtype in config.dtypes:
                    X, y = data.get(case, dtype)
                    for batch_size in config.batch_sizes:
                        rows = _grid_row(config, case, dtype, batch_size, threads, X, y,
                                         warmed, skipped)  # fmt: skip
                        records += rows
                        log(_progress_line(rows))
    return records, skipped


def _grid_row(config, case, dtype, batch_size, threads, X, y, warmed, skipped):
    epochs = config.full_epochs if batch_size is None else config.epochs
    options = dict(batch_size=batch_size, epochs=epochs, lr=case.lr, seed=config.seed,
                   n_threads=threads, shuffle=config.shuffle)  # fmt: skip
    results, row = {}, []
    for backend in config.backends:
        # Compile (or load from the disk cache) outside the timing. Numba compiles one kernel
        # per output shape and mode (one chunk, serial, parallel, per sample), which the batch
        # size, the rows and the threads decide: warm up every row on the full data.
        warm = case.run_fastgd(X, y, **dict(options, epochs=1, backend=backend))
        compile_s = warm.compile_time
        times, result = time_runs(
            lambda b=backend: case.run_fastgd(X, y, backend=b, **options),
            config.repeats, config.max_time,
        )  # fmt: skip
        results[backend] = (times, result, compile_s)
    reference_name = "numpy" if "numpy" in results else next(iter(results))
    reference = results[reference_name][1]
    for backend, (times, result, compile_s) in results.items():
        check = None
        if backend != reference_name:
            check = check_against(case, "params", reference, X, y, dtype, params=result.params)
        row.append(_record(case, dtype, batch_size, threads, backend, "fastgd", times, X,
                           epochs, check, compile_s=compile_s,
                           train_s=result.train_time))  # fmt: skip
    # the tight NumPy loop always runs: it is the baseline of the speed-ups
    names = (BASELINE, *case.competitors) if config.competitors else (BASELINE,)
    options = dict(batch_size=batch_size, epochs=epochs, lr=case.lr, seed=config.seed,
                   threads=threads, shuffle=config.shuffle)  # fmt: skip
    for name in names:
        record = _competitor_record(config, case, dtype, name, options, (X, y), reference,
                                    warmed, skipped)  # fmt: skip
        if record is not None:
            row.append(record)
    base = next((r for r in row if r["impl"] == BASELINE_LABEL and r["median_s"]), None)
    base = base or next((r for r in row if r["impl"] == "numpy" and r["median_s"]), None)
    for record in row:
        if base and record["median_s"]:
            record["speedup_vs_numpy"] = base["median_s"] / record["median_s"]
    return row


def _competitor_record(config, case, dtype, name, options, data, reference, warmed, skipped):
    """Time one competitor (or the NumPy-loop baseline) and check it; None if it cannot run."""
    X, y = data
    label, run = RUNNERS[name]
    try:
        key = (name, case.name, dtype, options["threads"])
        if key not in warmed:
            run(case, X[:256], y[:256], **dict(options, epochs=1))
            warmed.add(key)
        # its own training time (fit, or model + loop), without the evaluation after
        times, outcome = time_runs(lambda: run(case, X, y, **options), config.repeats,
                                   config.max_time, seconds=lambda o: o.seconds)  # fmt: skip
    except NotApplicable:
        return None
    except Unavailable as reason:
        entry = dict(competitor=name, model=case.name, reason=str(reason))
        if entry not in skipped:
            skipped.append(entry)
        return None
    check = check_against(case, outcome.check, reference, X, y, dtype, params=outcome.params,
                          outputs=outcome.outputs, predicted=outcome.predicted)  # fmt: skip
    return _record(case, dtype, options["batch_size"], options["threads"], label, "competitor",
                   times, X, options["epochs"], check, note=outcome.note)  # fmt: skip


def _progress_line(row):
    head = row[0]
    parts = []
    for r in row:
        if r["median_s"] is None:
            parts.append(f"{r['impl']} CHECK FAILED")
        else:
            parts.append(f"{r['impl']} {r['median_s'] * 1e3:.1f} ms")
    return (f"  {head['model']:<9}{head['dtype']:<8} batch {head['batch_size']:>4}, "
            f"{head['threads']} thr: " + ", ".join(parts))  # fmt: skip


def scaling(records):
    """Speed-up from the fewest to the most threads of each (model, dtype, batch, impl).

    Parameters
    ----------
    records : list of dict
        Grid records of :func:`run_grid`.

    Returns
    -------
    list of dict
        ``model, dtype, batch_size, impl, threads_from, threads_to, time_from, time_to,
        speedup``.
    """
    groups = {}
    for r in records:
        if r["median_s"]:
            key = (r["model"], r["dtype"], r["batch_size"], r["impl"])
            groups.setdefault(key, {})[r["threads"]] = r["median_s"]
    out = []
    for (model, dtype, batch, impl), times in groups.items():
        if len(times) < 2:
            continue
        low, high = min(times), max(times)
        out.append(dict(model=model, dtype=dtype, batch_size=batch, impl=impl, threads_from=low,
                        threads_to=high, time_from=times[low], time_to=times[high],
                        speedup=times[low] / times[high]))  # fmt: skip
    return out
