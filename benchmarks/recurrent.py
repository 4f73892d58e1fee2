"""Training speed of recurrent networks: fastgd (numba, cython, numpy) against PyTorch CPU.

The issue's grid: LSTM and GRU, hidden 32 and 128, sequences of 50 steps of 16 features,
batch 64, float32, 2 threads, a regression target (MSE) from the last state through one
linear layer, Adam. The measurement is :mod:`fastgd.bench.recurrent` (also the
"Recurrent networks" table of ``fastgd bench``): training samples per second, median of
``--repeats`` runs, the compiled backends' parameters checked against the NumPy
reference's. Printed as one row per cell and hidden size, with the ratios::

    python benchmarks/recurrent.py [--quick]
"""

import argparse

from fastgd.backends import available_backends
from fastgd.bench.recurrent import BATCH, FEATURES, STEPS, recurrent_case

THREADS = 2
RATIOS = (("numba", "torch"), ("cython", "torch"), ("numba", "cython"), ("numba", "numpy"))


def _row(cell, hidden, records, contenders):
    rates = {r["contender"]: r["samples_per_s"] for r in records}
    for r in records:
        if r["check"]:
            print(f"CHECK FAILED: {cell} {hidden} {r['contender']}: {r['check']}")

    def ratio(a, b):
        return f"{rates[a] / rates[b]:.2f}x" if a in rates and b in rates else "-"

    cells = [f"{rates[c]:,.0f}" if c in rates else "-" for c in contenders]
    cells += [ratio(a, b) for a, b in RATIOS]
    return f"| {cell} | {hidden} | " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequences and repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--hidden", default="32,128")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args(argv)
    n, epochs = (BATCH * 8, 1) if args.quick else (BATCH * 32, 2)
    repeats = 1 if args.quick else args.repeats
    backends = [b for b in ("numba", "cython") if b in available_backends()] + ["numpy"]
    contenders = [*backends, "torch"]
    print(f"{n} sequences x {STEPS} steps x {FEATURES} features, batch {BATCH}, float32, "
          f"{args.threads} threads, Adam; samples/s, median of {repeats}")  # fmt: skip
    header = ["cell", "hidden", *contenders] + [f"{a} / {b}" for a, b in RATIOS]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for cell in args.cells.split(","):
        for hidden in (int(h) for h in args.hidden.split(",")):
            records = recurrent_case(cell, hidden, n, epochs, args.threads, backends, repeats,
                                     log=lambda text: None)  # fmt: skip
            print(_row(cell, hidden, records, contenders), flush=True)


if __name__ == "__main__":
    main()
