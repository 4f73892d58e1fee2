"""Training speed of recurrent networks: fastgd (numba, cython, numpy) against PyTorch CPU.

The issue's grid: LSTM and GRU, hidden 32 and 128, sequences of 50 steps of 16 features,
batch 64, float32, 2 threads, a regression target (MSE) from the last state through one
linear layer, Adam. Every contender runs the same model and optimizer over the same
sequences; fastgd's time is ``FitResult.train_time`` (compilation excluded: a warm-up fit
compiles first), PyTorch's the loop ``zero_grad, forward, loss, backward, step`` over the
batches after one warm-up epoch. Reported: training samples per second, median of
``--repeats`` runs, and the ratios. Run under the shared lock on a shared machine::

    flock /tmp/fastgd-bench.lock python benchmarks/recurrent.py [--quick]
"""

import argparse
import statistics
import time
import warnings

import numpy as np

import fastgd
from fastgd.backends import available_backends
from fastgd.backends.blas import blas_threads

STEPS, FEATURES, BATCH, THREADS = 50, 16, 64, 2


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, STEPS, FEATURES)).astype(np.float32)
    y = (X[:, :, 0].mean(axis=1) + 0.1 * rng.standard_normal(n)).astype(np.float32)
    return X, y


def fastgd_rate(backend, cell, hidden, X, y, epochs):
    """Samples per second of ``fastgd.fit`` (train_time; a warm-up fit compiled first)."""
    model = fastgd.RNN(cell, hidden=hidden, task="regression")
    kw = dict(model=model, backend=backend, optimizer="adam", lr=1e-3, batch_size=BATCH,
              seed=0, n_threads=THREADS)  # fmt: skip
    fastgd.fit(X[: 2 * BATCH], y[: 2 * BATCH], epochs=1, **kw)
    with blas_threads(THREADS):  # the NumPy reference's own BLAS: the same 2 threads
        result = fastgd.fit(X, y, epochs=epochs, **kw)
    return X.shape[0] * epochs / result.train_time


def torch_rate(cell, hidden, X, y, epochs):
    """Samples per second of the same model and optimizer in PyTorch (2 threads)."""
    import torch

    torch.set_num_threads(THREADS)
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    rnn = cls(FEATURES, hidden, batch_first=True)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequences and repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--hidden", default="32,128")
    args = parser.parse_args(argv)
    n, epochs = (BATCH * 8, 1) if args.quick else (BATCH * 32, 2)
    repeats = 1 if args.quick else args.repeats
    X, y = _data(n)
    warnings.simplefilter("ignore", fastgd.GradientWarning)  # short fits: not the point here
    contenders = [b for b in ("numba", "cython") if b in available_backends()] + ["numpy"]
    try:
        import torch  # noqa: F401

        contenders.append("torch")
    except ImportError:
        print("PyTorch is not installed: its column is left out")
    print(f"{n} sequences x {STEPS} steps x {FEATURES} features, batch {BATCH}, float32, "
          f"{THREADS} threads, Adam; samples/s, median of {repeats}")  # fmt: skip
    header = "| cell | hidden | " + " | ".join(contenders) + " | numba / torch | cython / torch | numba / cython | numba / numpy |"  # fmt: skip
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for cell in args.cells.split(","):
        for hidden in (int(h) for h in args.hidden.split(",")):
            rates = {}
            for name in contenders:
                runs = []
                for _ in range(repeats if name != "numpy" else 1):
                    if name == "torch":
                        runs.append(torch_rate(cell, hidden, X, y, epochs))
                    else:
                        runs.append(fastgd_rate(name, cell, hidden, X, y, epochs))
                rates[name] = statistics.median(runs)

            def ratio(a, b, rates=rates):
                return f"{rates[a] / rates[b]:.2f}x" if a in rates and b in rates else "-"

            cells = " | ".join(f"{rates[c]:,.0f}" for c in contenders)
            print(f"| {cell} | {hidden} | {cells} | {ratio('numba', 'torch')} | "
                  f"{ratio('cython', 'torch')} | {ratio('numba', 'cython')} | "
                  f"{ratio('numba', 'numpy')} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
