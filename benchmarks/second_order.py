"""Time to the optimum of L2 logistic regression at the issue's sizes: fastgd's Newton and
L-BFGS (each compiled backend) against scikit-learn's ``newton-cholesky`` and ``lbfgs``,
and fastgd's SGD and Adam given Newton's time.

The measurement is :mod:`fastgd.bench.solvers` (the same code as the "Second-order solvers"
table of ``fastgd bench``): float64 synthetic data, ``C = 1`` (fastgd
``alpha = 1 / (C n)``), the same threads on both sides (BLAS pinned with threadpoolctl),
medians of ``--repeat`` runs; a run "reaches" the optimum when its objective is within
1e-8 of the best one.

Run (unset the OpenBLAS overrides of this machine class for a fair NumPy/SciPy BLAS)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/second_order.py \
        --shapes 1000000x100 100000x1000 --threads 2 --repeat 3
"""

import argparse

from fastgd.bench.report import markdown_table
from fastgd.bench.solvers import solver_case, solver_rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1000000x100", "100000x1000"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="numba,cython")
    args = parser.parse_args()
    for shape in args.shapes:
        n, d = map(int, shape.split("x"))
        records = solver_case(n, d, args.threads, args.backends.split(","), args.repeat)
        print(f"\n{n:,} x {d}, float64, {args.threads} threads, median of {args.repeat}\n")
        print(markdown_table(*solver_rows(records)))


if __name__ == "__main__":
    main()
