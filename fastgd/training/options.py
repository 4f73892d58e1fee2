"""The training options of ``fit``, validated once into a frozen dataclass."""

import numbers
from dataclasses import dataclass

import numpy as np

from .. import _validation as v
from ..optim import make_optimizer
from ..schedules import make_schedule
from ..specs.optimizers import CLIP_NORM, CLIP_VALUE, L1, L2, POWER_T
from .orders import check_shuffle


@dataclass(frozen=True)
class Options:
    """What ``fit`` was asked to do, checked: one object instead of 27 arguments.

    ``hyper`` is the kernels' float64 vector of optimizer hyperparameters, clipping
    thresholds, penalty strengths and the inverse-scaling power (positions named in
    :mod:`fastgd.specs.optimizers`); ``tol`` is ``-inf`` when the rule is off.
    """

    epochs: int
    batch_size: int
    schedule: object
    optimizer: object
    hyper: np.ndarray
    shuffle: str | None  # "rows", "blocks" or None (fastgd.training.orders)
    seed: int | None
    tol: float
    n_iter_no_change: int
    n_threads: int
    print_every: int
    on_divergence: str
    callback: object
    early_stopping: bool
    progress: bool


def resolve_options(arguments, n_rows, backend):
    """Check the training options of ``fit`` (a dict of its keyword arguments).

    Parameters
    ----------
    arguments : dict
        ``fit``'s keyword arguments by name.
    n_rows : int
        Training rows (a larger ``batch_size`` means full batch).
    backend : fastgd.backends.contract.Backend
        Bounds ``n_threads``.

    Returns
    -------
    Options
    """
    a = arguments
    epochs = v.check_positive_int(a["epochs"], "epochs")
    schedule, lr = make_schedule(a["lr"], epochs)
    optimizer = make_optimizer(a["optimizer"], lr)
    l1, l2 = v.check_penalty(a["penalty"], a["alpha"], a["l1_ratio"])
    batch_size = v.check_positive_int(a["batch_size"], "batch_size", allow_none=True)
    tol = v.check_tol(a["tol"])
    n_iter_no_change = v.check_positive_int(a["n_iter_no_change"], "n_iter_no_change")
    v.check_choice(a["on_divergence"], "on_divergence", ("warn", "raise"))
    n_threads = _check_threads(a["n_threads"], backend)
    verbose, callback = a["verbose"], a["callback"]
    if not isinstance(verbose, (bool, numbers.Integral)) or verbose < 0:
        raise ValueError(f"verbose must be a bool or a non-negative integer; got {verbose!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable; got {callback!r}")
    hyper = optimizer.hyperparameters()
    for name, position in (("clip_value", CLIP_VALUE), ("clip_norm", CLIP_NORM)):
        if a[name] is not None:
            hyper[position] = v.check_positive_float(a[name], name)
    hyper[L1], hyper[L2], hyper[POWER_T] = l1, l2, schedule.power_t
    return Options(
        epochs=epochs, batch_size=n_rows if batch_size is None else min(batch_size, n_rows),
        schedule=schedule, optimizer=optimizer, hyper=hyper, shuffle=check_shuffle(a["shuffle"]),
        seed=a["seed"], tol=tol, n_iter_no_change=n_iter_no_change, n_threads=n_threads,
        print_every=int(verbose), on_divergence=a["on_divergence"], callback=callback,
        early_stopping=bool(a["early_stopping"]), progress=bool(a["progress"]),
    )  # fmt: skip


def _check_threads(n_threads, backend):
    max_threads = backend.max_threads()
    n_threads = v.check_positive_int(n_threads, "n_threads", allow_none=True) or max_threads
    if n_threads > max_threads:
        raise ValueError(
            f"n_threads={n_threads} exceeds the {max_threads} threads the {backend.name} "
            "backend can use here (NUMBA_NUM_THREADS, OpenMP's limit or the CPUs of this process)"
        )
    return n_threads
