"""``fastgd.fit`` for Dask input: the same pipeline as a single-machine fit, with the data
passes and local epochs running in Dask tasks."""

import dataclasses
import functools
import time

from ..backends import get_backend
from ..network import MLP
from ..specs import optimizers as opt
from ..training.observers import make_observers
from ..training.options import resolve_options
from ..training.problem import check_model, initial_state
from ..training.report import finish, snapshot
from ..training.solvers import solve
from ..training.trainer import train
from .cluster import Cluster, current_client
from .data import check_finite_after, prepare_dask_problem
from .drivers import ChunkObjective, FullBatchDriver, LocalSGDDriver


def fit_dask(arguments):
    """Train on Dask input; ``arguments`` are :func:`fastgd.fit`'s arguments by name.

    Full-batch methods (``batch_size=None``, ``"lbfgs"``, ``"newton"``) give the fit of
    the concatenated data; mini-batch SGD is local SGD with averaging after every epoch or
    every ``sync_every`` batches (see :mod:`fastgd.distributed.drivers`). The result's
    ``distributed`` attribute holds the rounds' timings.
    """
    a = arguments
    model = a["model"]
    check_model(model)
    backend = get_backend(a["backend"])
    _check_unsupported(a)
    cluster = Cluster(current_client())
    started = time.perf_counter()
    problem = prepare_dask_problem(a["X"], a["y"], model, a, cluster)
    prepare_time = time.perf_counter() - started  # checks, labels, chunks persisted
    cluster.wall = cluster.compute = cluster.worker = 0.0
    cluster.n_rounds = 0
    options = resolve_options(a, problem.data.X.shape[0], backend)
    state = initial_state(problem, options.optimizer, a["seed"], a["init"])
    rates = options.schedule.start(options.optimizer.lr)
    observers = make_observers(
        problem, options, rates, functools.partial(snapshot, problem, options, backend.name)
    )
    run = _train(cluster, backend, problem, options, state, rates, observers, a["sync_every"])
    check_finite_after(cluster, problem.data, run.history[: run.done], run.stop_reason)
    result = finish(problem, options, run, backend, observers, model if isinstance(model, MLP) else None)  # fmt: skip
    result.distributed = {**cluster.report(len(problem.data.chunks)), "prepare_time": prepare_time}  # fmt: skip
    return result


def _check_unsupported(a):
    if a["early_stopping"]:
        raise ValueError(
            "early_stopping is not supported for Dask input; hold out validation rows "
            "yourself and pass a callback that evaluates them"
        )
    sync_every = a["sync_every"]
    if sync_every is not None and (
        isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1
    ):
        raise ValueError(f"sync_every must be None or a positive integer; got {sync_every!r}")


def _train(cluster, backend, problem, options, state, rates, observers, sync_every):  # noqa: PLR0913
    """Newton / L-BFGS, full-batch first-order training, or averaged local SGD."""
    spec, data = problem.spec, problem.data
    objective = ChunkObjective(cluster, backend.name, spec, data, float(options.hyper[opt.L2]))
    if options.optimizer.code in opt.SECOND_ORDER:
        return solve(backend, problem, options, state, observers, objective)
    in_driver = dataclasses.replace(options, shuffle=False)  # row orders are drawn per chunk
    if options.batch_size >= data.X.shape[0]:
        if spec.n_layers and any(spec.kernel_model().batch_norm):
            raise ValueError(
                "full-batch training of a batch_norm network needs the statistics of all rows "
                "at once; on Dask, train it with mini-batches (local SGD) or without batch_norm"
            )
        return train(FullBatchDriver(objective, backend.name), problem, in_driver, state, rates, observers)  # fmt: skip
    driver = LocalSGDDriver(cluster, backend.name, spec, data, options.shuffle, options.seed, sync_every)  # fmt: skip
    return train(driver, problem, in_driver, state, rates, observers)
