"""Peak memory of validation and training beyond the data, measured in a fresh process.

Run by ``tests/test_memory.py`` (``python tests/memory_probe.py SIZE_GB [CASE ...]``);
prints one JSON line per case: ``data_bytes`` (the input arrays), ``traced_peak`` (the
largest amount allocated at once during the call, by ``tracemalloc``: NumPy reports its
arrays to it, and Numba's runtime allocates through CPython's raw allocator, so kernel
workspaces are counted too) and ``rss_peak`` (the growth of the peak resident set size,
from ``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``; None
where that is not possible).
"""

import json
import sys
import tracemalloc
import warnings

import numpy as np

import fastgd

N_FEATURES = 100


def _rss_reset():
    """Reset the peak resident set size to the current one; True if Linux allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def _rss_peak_bytes():
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _rss_now_bytes():
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def measure(call):
    """``(traced peak, RSS peak growth or None, outcome)`` of ``call()``."""
    rss = _rss_reset()
    before = _rss_now_bytes() if rss else None
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = call()
    except ValueError as exc:
        outcome = f"ValueError: {str(exc)[:80]}"
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown = _rss_peak_bytes() - before if rss else None
    return peak, grown, outcome


def _features(n, dtype, seed=0):
    """A C-contiguous (n, 100) array of random values, filled a block at a time (no
    temporary of its size)."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, N_FEATURES), dtype=dtype)
    for start in range(0, n, 65536):
        X[start : start + 65536] = rng.standard_normal((min(65536, n - start), N_FEATURES))
    return X


def _targets(X):
    return X[:, 0] + 0.5 * X[:, 1]


FIT = dict(backend="numba", epochs=1, batch_size=32, lr=1e-3, seed=0)


def case_fit_linear_float64(n):
    X = _features(n, np.float64)
    y = _targets(X)
    return [X, y], lambda: fastgd.fit(X, y, **FIT).stop_reason


def case_fit_logistic_float32_weights(n):
    X = _features(n, np.float32)
    labels = (X[:, 0] > 0).astype(np.int64)
    weights = np.linspace(0.5, 2.0, n)
    return [X, labels, weights], lambda: fastgd.fit(X, labels, "logistic", sample_weight=weights, **FIT).stop_reason  # fmt: skip


def case_fit_mlp_float32(n):
    X = _features(n, np.float32)
    labels = (X[:, 0] > 0).astype(np.int64)
    options = dict(FIT, backend="numpy", batch_size=4096)
    return [X, labels], lambda: fastgd.fit(X, labels, fastgd.MLP(hidden=(16,)), **options).stop_reason  # fmt: skip


def case_estimator_linear_float64(n):
    X = _features(n, np.float64)
    y = _targets(X)
    est = fastgd.LinearRegressor(backend="numba", epochs=1, batch_size=32, lr=1e-3, random_state=0)  # fmt: skip
    return [X, y], lambda: est.fit(X, y).n_iter_


def case_fit_linear_float64_early_stopping(n):
    """Early stopping trains on the training rows where they are and reads the held-out
    rows a block at a time (it copied both sets apart: one copy of X)."""
    X = _features(n, np.float64)
    y = _targets(X)
    return [X, y], lambda: fastgd.fit(X, y, early_stopping=True, **FIT).stop_reason


def case_fit_newton_float64_early_stopping(n):
    """Newton's passes read the training rows a block at a time (they gathered a copy)."""
    X = _features(n, np.float64)
    labels = (X[:, 0] > 0).astype(np.int64)
    options = dict(model="logistic", optimizer="newton", epochs=2, early_stopping=True)
    return [X, labels], lambda: fastgd.fit(X, labels, **options).stop_reason


def case_fit_mlp_float32_early_stopping(n):
    X = _features(n, np.float32)
    labels = (X[:, 0] > 0).astype(np.int64)
    options = dict(FIT, backend="numpy", batch_size=4096, early_stopping=True)
    return [X, labels], lambda: fastgd.fit(X, labels, fastgd.MLP(hidden=(16,)), **options).stop_reason  # fmt: skip


def case_nan_error_float32(n):
    X = _features(n, np.float32)
    X[n // 2, 3] = np.nan  # the message counts them
    y = _targets(X)
    return [X, y], lambda: fastgd.fit(X, y, **FIT)


def case_pandas_mixed_frame(n):
    """A data frame of float32 and float64 columns: the row-major float64 array the
    kernels read is the one copy allowed (the frame stores its columns apart)."""
    import pandas as pd

    X = _features(n, np.float64)
    frame = pd.DataFrame({f"x{j}": X[:, j].astype(np.float32 if j % 2 else np.float64) for j in range(N_FEATURES)})  # fmt: skip
    y = _targets(X)
    del X
    return [frame, y], lambda: fastgd.fit(frame, y, **FIT).stop_reason


CASES = {name[len("case_") :]: f for name, f in list(globals().items()) if name.startswith("case_")}  # fmt: skip


def _data_bytes(arrays):
    """Bytes of the input arrays (a data frame's columns included)."""
    return sum(
        int(a.memory_usage(index=False).sum()) if hasattr(a, "memory_usage") else a.nbytes
        for a in arrays
    )


def _warm_up():
    """Compile (or load from the disk cache) the kernels of the cases on small data."""
    for name, make in CASES.items():
        if name != "nan_error_float32":
            _, call = make(512)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call()


def main(argv):
    size_gb, names = float(argv[0]), argv[1:] or list(CASES)
    _warm_up()
    for name in names:
        bytes_per_row = N_FEATURES * (4 if "float32" in name else 8)
        n = int(size_gb * 2**30 / bytes_per_row)
        arrays, call = CASES[name](n)
        traced, rss, outcome = measure(call)
        print(json.dumps(dict(case=name, rows=n, data_bytes=_data_bytes(arrays), x_bytes=n * bytes_per_row,
                              traced_peak=traced, rss_peak=rss, outcome=str(outcome))), flush=True)  # fmt: skip
        del arrays, call


if __name__ == "__main__":
    main(sys.argv[1:])
