"""The machine, thread pinning, and the measurements that need a new process.

Peak memory and start-up time are measured in child processes (``python -c``): Numba's
allocations are invisible to ``tracemalloc``, and a first fit is only first in a new
process. Children import the same fastgd as this process.
"""

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastgd
from fastgd.backends.blas import blas_threads

# environment variables that may slow NumPy's BLAS on some machines (see the README)
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# limits the BLAS thread pools to n threads (one helper for the kernels and the benchmarks)
pin_threads = blas_threads


def blas_info():
    """The BLAS libraries NumPy uses, e.g. ``"openblas 0.3.31 SkylakeX"``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    return "; ".join(f"{p['internal_api']} {p['version']} {p.get('architecture')}" for p in pools)


def max_threads():
    """Threads fastgd may use here (``NUMBA_NUM_THREADS``, else the CPUs of this process)."""
    try:
        import numba

        return int(numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb():
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def machine_info():
    """CPU, cores, memory, versions, BLAS kernel and thread settings, as a dict."""
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "fastgd": fastgd.__version__,
        "numpy": np.__version__,
        "numba": _version("numba"),
        "scikit-learn": _version("sklearn"),
        "torch": _version("torch"),
        "blas": blas_info(),
        "max_threads": max_threads(),
        "backends": fastgd.available_backends(),
    }
    with contextlib.suppress(ImportError):
        import numba

        info["numba_threading_layer"] = numba.config.THREADING_LAYER
    for name in BLAS_VARIABLES:
        if name in os.environ:
            info[name] = os.environ[name]
    return info


def _child_env(extra=None):
    env = dict(os.environ)
    root = str(Path(fastgd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _run_child(script, config, env=None, timeout=600):
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config)],
        capture_output=True, text=True, env=_child_env(env), timeout=timeout,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), elapsed


# Imports fastgd, makes the data, fits it once, prints timings as JSON. Interpreter start-up
# is outside these timings (the parent measures the whole process).
STARTUP_SCRIPT = """
import json, sys, time
config = json.loads(sys.argv[1])
started = time.perf_counter()
import fastgd
imported = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
X = rng.standard_normal((config["rows"], config["features"]))
y = X @ rng.standard_normal(config["features"]) + 1.0
made = time.perf_counter()
result = fastgd.fit(X, y, batch_size=32, epochs=2, lr=1e-3, seed=0, backend=config["backend"],
                    n_threads=config["threads"])
fitted = time.perf_counter()
print(json.dumps(dict(import_s=imported - started, first_fit_s=fitted - made,
                      compile_s=result.compile_time, train_s=result.train_time)))
"""


def startup_once(backend, cache="warm", threads=1, rows=1000, features=20):
    """Time ``import fastgd`` and a first fit in one new process.

    Parameters
    ----------
    backend : str
    cache : {"warm", "cold", "-"}
        ``"cold"`` points ``NUMBA_CACHE_DIR`` at an empty directory, so Numba compiles
        every kernel the fit needs; ``"warm"`` uses the usual cache (run once more if it had
        to compile); ``"-"`` for backends without a JIT.
    threads : int, default 1
    rows, features : int
        Size of the float64 linear-regression problem fitted (batch size 32, 2 epochs).

    Returns
    -------
    dict
        ``backend``, ``cache``, ``import_s`` (``import fastgd``), ``first_fit_s`` (the
        first ``fit`` call, loading or compiling kernels included), ``compile_s`` (the part
        spent compiling or loading kernels), ``train_s``, ``process_s`` (the whole child
        process, interpreter start-up included).
    """
    config = dict(rows=rows, features=features, threads=threads, backend=backend)
    with tempfile.TemporaryDirectory(prefix="fastgd-cold-cache-") as empty:
        env = {"NUMBA_CACHE_DIR": empty} if cache == "cold" else None
        out, elapsed = _run_child(STARTUP_SCRIPT, config, env)
        if cache == "warm" and out["compile_s"] > 1.0:  # it compiled: now it is warm
            out, elapsed = _run_child(STARTUP_SCRIPT, config, env)
    return dict(backend=backend, cache=cache, process_s=elapsed, **out)


def measure_startup(backends=None, cold=True, threads=1, rows=1000, features=20, log=print):
    """:func:`startup_once` for each backend (Numba warm, and cold unless ``cold=False``).

    Parameters
    ----------
    backends : list of str, optional
        Default: every available backend.
    cold : bool, default True
        Also measure Numba with an empty kernel cache (it compiles: 20-60 s).
    threads, rows, features : int
        As in :func:`startup_once`.
    log : callable
        Progress messages.

    Returns
    -------
    list of dict
        The records of :func:`startup_once` (a child that fails is logged and left out).
    """
    backends = list(backends or fastgd.available_backends())
    runs = [(b, "warm" if b == "numba" else "-") for b in backends]
    if cold and "numba" in backends:
        runs.append(("numba", "cold"))
    records = []
    for backend, cache in runs:
        if cache == "cold":
            log("  start-up: numba with an empty kernel cache (compiles every kernel) ...")
        try:
            records.append(startup_once(backend, cache, threads, rows, features))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"  start-up: {backend} FAILED: {str(exc).strip().splitlines()[-1]}")
    return records


# Makes the data, loads the kernels with a one-epoch fit, then for each batch size resets the
# peak-RSS mark and fits: peak RSS during the fit minus RSS before it is the fit's memory.
MEMORY_SCRIPT = """
import json, resource, sys
config = json.loads(sys.argv[1])

def rss():
    try:
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, peak

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False

import numpy as np
from fastgd.bench.models import MODELS, data_nbytes, make_data
from fastgd.bench.system import pin_threads
case = MODELS[config["model"]]
start_rss = rss()[0]
X, y = make_data(case, config["rows"], config["features"], config["dtype"])
data_rss = rss()[0]
options = dict(epochs=config["epochs"], lr=case.lr, seed=0, backend=config["backend"],
               n_threads=config["threads"], shuffle=config["shuffle"])
out = dict(data_bytes=data_nbytes(X) + y.nbytes, data_rss=data_rss - start_rss, fits={})
with pin_threads(config["threads"]):
    for batch in config["batch_sizes"]:  # the kernels the full data selects (parallel or not)
        case.run_fastgd(X, y, batch_size=batch, **dict(options, epochs=1))
    before = rss()[0]
    out["kernels_rss"] = before - data_rss
    for batch in config["batch_sizes"]:
        before = rss()[0]
        exact = reset_peak()
        peak_before = rss()[1]
        case.run_fastgd(X, y, batch_size=batch, **options)
        peak = rss()[1]
        extra = peak - before if exact else max(0, peak - peak_before)
        out["fits"][str(batch)] = dict(extra=extra, exact=exact)
print(json.dumps(out))
"""


# glibc raises its mmap threshold after a large block is freed, after which the next
# blocks of that size come from the heap and reuse already-resident pages: a fixed
# threshold makes every large temporary of a fit show in the peak, whatever came before.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure_memory(model, rows_list, features, backends=None, batch_sizes=(32, None),
                   dtype="float64", threads=1, epochs=1, shuffle=False, log=print):  # fmt: skip
    """Peak memory of a fit against the size of the data, one new process per size.

    In each child: make the data, load the kernels with a one-epoch fit on it (the
    kernels the full data selects, parallel or not, are loaded or compiled outside the
    measure), then per batch size measure the peak resident memory during ``fit`` above
    the resident memory before it
    (Linux: the peak mark is reset before each fit, and glibc's mmap threshold is fixed so
    that large temporaries are not served from pages freed earlier; elsewhere the growth of
    the process peak, a lower bound).

    Parameters
    ----------
    model : str
        A key of :data:`fastgd.bench.models.MODELS`.
    rows_list : list of int
        Data sizes (rows) to measure.
    features : int
    backends : list of str, optional
        Default: every available backend.
    batch_sizes : tuple, default (32, None)
        ``None`` is full batch.
    dtype : str, default "float64"
    threads, epochs : int
    shuffle : bool, default False
    log : callable

    Returns
    -------
    list of dict
        One record per (backend, rows, batch size) (a child that fails is logged and left
        out): ``data_mb`` (X and y), ``kernels_mb``
        (resident memory added by importing and loading the backend's kernels, a constant),
        ``extra_mb`` (peak during the fit above before it), ``extra_vs_data``, ``exact``.
    """
    backends = list(backends or fastgd.available_backends())
    records = []
    for backend in backends:
        for rows in rows_list:
            config = dict(model=model, rows=rows, features=features, dtype=dtype,
                          backend=backend, threads=threads, epochs=epochs, shuffle=shuffle,
                          batch_sizes=list(batch_sizes))  # fmt: skip
            try:
                out, _ = _run_child(MEMORY_SCRIPT, config, env=FIXED_MMAP_THRESHOLD)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"  memory: {backend} {rows} rows FAILED: {str(exc).strip().splitlines()[-1]}")
                continue
            for batch in batch_sizes:
                fit = out["fits"][str(batch)]
                records.append(dict(
                    backend=backend, model=model, dtype=dtype, rows=rows, features=features,
                    batch_size="full" if batch is None else str(batch), threads=threads,
                    data_mb=out["data_bytes"] / 2**20, kernels_mb=out["kernels_rss"] / 2**20,
                    extra_mb=fit["extra"] / 2**20, extra_vs_data=fit["extra"] / out["data_bytes"],
                    exact=fit["exact"],
                ))  # fmt: skip
            log(f"  memory: {backend} {rows} rows done")
    return records
