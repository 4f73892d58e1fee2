"""The recurrent part of the benchmark: training speed of LSTM and GRU networks.

fastgd's ``RNN`` (every available backend) against PyTorch CPU running the same model
(``nn.LSTM`` / ``nn.GRU`` with ``batch_first=True``, then ``nn.Linear`` on the last
state), the same optimizer (Adam, lr 1e-3), batch size and threads, on the same float32
sequences: 50 steps of 16 features, a regression target. Reported: training samples per
second (median of the timed runs; fastgd's ``train_time``, compilation excluded by a
warm-up fit; PyTorch's loop ``zero_grad, forward, loss, backward, step`` after a warm-up
epoch), the ratios, and the share of the machine's float32 matmul peak reached
(:func:`flops_per_sample`). Before a compiled backend's time is reported, its parameters
are checked against the NumPy reference's after the same fit.

Used by ``fastgd bench`` (its "Recurrent networks" table) and ``benchmarks/recurrent.py``.
"""

import statistics
import time
import warnings

import numpy as np

import fastgd

from ..backends.blas import blas_threads

STEPS, FEATURES, BATCH = 50, 16, 64
GATES = {"lstm": 4, "gru": 3}
# float32 parameters of a compiled backend after the check fit agree with the NumPy
# reference's to about 1e-5 (rounding of differently ordered float32 sums over a few Adam
# steps); a wrong gradient is off by far more
PARAMS_RTOL = 1e-3


def make_sequences(n, seed=0):
    """``n`` float32 sequences ``(n, STEPS, FEATURES)`` and a regression target: the mean
    of the first feature over the steps, plus noise.

    Parameters
    ----------
    n : int
    seed : int, default 0

    Returns
    -------
    X : ndarray of shape (n, 50, 16), float32
    y : ndarray of shape (n,), float32
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, STEPS, FEATURES)).astype(np.float32)
    y = (X[:, :, 0].mean(axis=1) + 0.1 * rng.standard_normal(n)).astype(np.float32)
    return X, y


def flops_per_sample(cell, hidden):
    """Floating-point operations of one training sample: per step, the gate products
    ``2 G h (f + h)`` forward, twice that backward (input and weight gradients)."""
    return 3 * STEPS * 2 * GATES[cell] * hidden * (FEATURES + hidden)


def _fit_options(backend, cell, hidden, threads):
    model = fastgd.RNN(cell, hidden=hidden, task="regression")
    return dict(model=model, backend=backend, optimizer="adam", lr=1e-3, batch_size=BATCH,
                seed=0, n_threads=threads)  # fmt: skip


def fastgd_fit(backend, cell, hidden, X, y, epochs, threads):
    """``(samples per second, FitResult)`` of a fastgd fit (a warm-up fit compiles first)."""
    options = _fit_options(backend, cell, hidden, threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastgd.GradientWarning)  # short fits: not the point
        fastgd.fit(X[: 2 * BATCH], y[: 2 * BATCH], epochs=1, **options)
        with blas_threads(threads):  # the NumPy reference's own BLAS: the same threads
            result = fastgd.fit(X, y, epochs=epochs, **options)
    return X.shape[0] * epochs / result.train_time, result


def torch_rate(cell, hidden, X, y, epochs, threads):
    """Samples per second of the same model and optimizer in PyTorch."""
    import torch

    torch.set_num_threads(threads)
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(FEATURES, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 1)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch():
        for start in range(0, X.shape[0], BATCH):
            optimizer.zero_grad()
            _, state = rnn(Xt[start : start + BATCH])
            h = state[0] if isinstance(state, tuple) else state
            loss = torch.mean((head(h[-1])[:, 0] - yt[start : start + BATCH]) ** 2)
            loss.backward()
            optimizer.step()

    epoch()  # warm-up
    started = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return X.shape[0] * epochs / (time.perf_counter() - started)


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _check(name, result, reference):
    """None, or why ``result``'s parameters disagree with the NumPy reference's."""
    if reference is None or name == "numpy":
        return None
    a, b = result.params.astype(np.float64), reference.params.astype(np.float64)
    err = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
    return None if err <= PARAMS_RTOL else f"parameters {err:.1e} from the numpy backend's"


def recurrent_case(cell, hidden, n, epochs, threads, backends, repeats, log=print):
    """Records of one cell and hidden size: one per contender (fastgd backends, torch).

    Parameters
    ----------
    cell : {"lstm", "gru"}
    hidden : int
    n : int
        Sequences per epoch.
    epochs : int
    threads : int
    backends : list of str
        fastgd backends; ``"numpy"`` (if listed) runs once and is the reference of the
        parameter check.
    repeats : int
        Timed runs of each compiled contender (median reported).
    log : callable, default print

    Returns
    -------
    list of dict
        ``cell, hidden, contender, samples_per_s, gflops, check`` per contender.
    """
    X, y = make_sequences(n)
    rates, checks, reference = {}, {}, None
    for name in sorted(backends, key=lambda b: b != "numpy"):  # the reference first
        runs = [fastgd_fit(name, cell, hidden, X, y, epochs, threads)
                for _ in range(1 if name == "numpy" else repeats)]  # fmt: skip
        reference = runs[0][1] if name == "numpy" else reference
        rates[name] = statistics.median(r for r, _ in runs)
        checks[name] = _check(name, runs[0][1], reference)
    if _has_torch():
        rates["torch"] = statistics.median(
            torch_rate(cell, hidden, X, y, epochs, threads) for _ in range(repeats)
        )
    flops = flops_per_sample(cell, hidden)
    records = []
    for name, rate in rates.items():
        records.append(dict(cell=cell, hidden=hidden, contender=name, samples_per_s=rate,
                            gflops=rate * flops / 1e9, check=checks.get(name), threads=threads,
                            sequences=n, epochs=epochs))  # fmt: skip
        log(f"  {cell} {hidden}: {name} {rate:,.0f} samples/s")
    return records


def recurrent_rows(records, peak=None):
    """The table of :func:`recurrent_case` records: a header and rows of strings.

    Parameters
    ----------
    records : list of dict
    peak : float, optional
        The float32 matmul peak (FLOP/s) at the records' threads: adds the share column.

    Returns
    -------
    header : list of str
    rows : list of list of str
    """
    header = ["cell", "hidden", "contender", "samples/s", "vs torch", "GFLOP/s"]
    header += ["share of matmul peak"] if peak else []
    header += ["check"]
    torch = {(r["cell"], r["hidden"]): r["samples_per_s"] for r in records
             if r["contender"] == "torch"}  # fmt: skip
    rows = []
    for r in records:
        base = torch.get((r["cell"], r["hidden"]))
        vs = f"{r['samples_per_s'] / base:.2f}x" if base and r["contender"] != "torch" else "-"
        row = [r["cell"], str(r["hidden"]), r["contender"], f"{r['samples_per_s']:,.0f}", vs,
               f"{r['gflops']:.1f}"]  # fmt: skip
        row += [f"{100 * r['gflops'] * 1e9 / peak:.0f}%"] if peak else []
        rows.append(row + [r["check"] or "ok"])
    return header, rows
