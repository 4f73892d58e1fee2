"""Benchmarks of fastgd: its backends against the NumPy baseline and other libraries.

``fastgd bench`` (or ``python -m fastgd bench``) runs the standard suite; the
pytest-benchmark suites in the repository's ``benchmarks/`` reuse the same pieces:

- :mod:`fastgd.bench.models`: the table of model families (:data:`MODELS`) and the data;
- :mod:`fastgd.bench.competitors`: scikit-learn and PyTorch, on the same batches;
- :mod:`fastgd.bench.suite`: the grid, with every result checked before it is timed;
- :mod:`fastgd.bench.system`: machine, thread pinning, memory and start-up measurements;
- :mod:`fastgd.bench.report`: tables, JSON and the chart.
"""

from .cli import main
from .models import MODELS, ModelCase, make_data
from .suite import BenchConfig, check_against, run_grid, scaling

__all__ = ["MODELS", "ModelCase", "make_data", "BenchConfig", "run_grid", "check_against",
           "scaling", "main"]  # fmt: skip
