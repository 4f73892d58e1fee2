"""The epoch loop: blocks of epochs in one compiled call each, observers in between.

The kernels run whole blocks of epochs (forward, gradient, update over every mini-batch);
Python runs between blocks only: it draws the row orders (NumPy's generator, so every
backend sees the same batches; with a core to spare, the next block's in a background
thread while the kernel runs: :class:`~fastgd.training.orders.BlockOrders`), evaluates
the learning-rate schedule per epoch, and tells the observers
(:mod:`fastgd.training.observers`).
"""

import time
from dataclasses import dataclass

import numpy as np

from ..backends.contract import EpochBlock, UpdateConfig
from ..specs import stopping
from .interrupt import Interruption
from .observers import block_size
from .orders import DRAW_AHEAD_MIN_ROWS, BlockOrders, spare_core

# Shuffled row orders are drawn in Python and handed to the kernel for a block of epochs
# at a time; this bounds the int64 entries held at once (32 MB), the block being drawn
# ahead included (fastgd.training.orders.BlockOrders).
ORDER_BUDGET = 4_000_000


@dataclass
class Run:
    """The state of a training run as observers see it after each kernel call."""

    state: object
    history: np.ndarray
    lr_history: np.ndarray
    grad_norms: np.ndarray
    done: int = 0
    ran: int = 0
    status: int = stopping.MAX_EPOCHS
    stop_reason: str | None = None
    validation_loss: float | None = None
    compile_time: float = 0.0
    train_time: float = 0.0


def train(backend, problem, options, state, rates, observers):
    """Run ``fit``'s training loop on ``backend``; returns the :class:`Run`.

    Parameters
    ----------
    backend : fastgd.backends.contract.Backend
    problem : fastgd.training.problem.Problem
    options : fastgd.training.options.Options
    state : fastgd.backends.contract.State
        Updated in place.
    rates : fastgd.schedules rate source
        The learning-rate schedule started for this run (``schedule.start(lr)``).
    observers : list of fastgd.training.observers.Observer
    """
    spec, data, epochs = problem.spec, problem.data, options.epochs
    shape = (epochs, spec.n_layers) if spec.n_layers else (0, 0)
    run = Run(state, np.empty(epochs), np.empty(epochs), np.zeros(shape))
    # early stopping's validation rule replaces the kernel's training-loss rule
    tol = -np.inf if options.early_stopping else options.tol
    update = UpdateConfig(
        options.batch_size, options.optimizer.code, options.hyper, tol, options.n_iter_no_change
    )
    # Ctrl-C stops at the end of the current mini-batch (fastgd.training.interrupt); the
    # compiled kernels then run in a worker thread, the main thread handles the signal
    interruption = Interruption(state.stop_state, getattr(backend, "releases_gil", False))
    call = _kernel_call(backend, spec.kernel_model(), data, state, update, options.n_threads)
    # a zero-epoch call compiles (or loads from the disk cache) the kernels for exactly these
    # argument types, so compilation is timed apart from training
    started = time.perf_counter()
    call(run, 0, np.empty((0, 0), dtype=np.int64), rates, interruption)
    run.compile_time = time.perf_counter() - started
    started = time.perf_counter()
    with interruption:
        _epoch_blocks(run, call, problem, options, rates, observers, interruption)
    run.train_time = time.perf_counter() - started
    for observer in observers:
        observer.finish(run)
    return run


def _kernel_call(backend, kernel_model, data, state, update, n_threads):
    """``call(run, n_epochs, orders, rates, interruption)``: one kernel call from epoch
    ``run.done``, made through ``interruption`` (:meth:`Interruption.call`)."""

    def call(run, n_epochs, orders, rates, interruption):
        first = run.done
        if n_epochs:
            run.lr_history[first : first + n_epochs] = rates.rates(first, n_epochs)
        block = EpochBlock(
            orders, run.lr_history[first:], n_epochs, run.history[first:], run.grad_norms[first:]
        )
        train_epochs = backend.train_epochs
        return interruption.call(train_epochs, kernel_model, data, state, update, block, n_threads)

    return call


def _epoch_blocks(run, call, problem, options, rates, observers, interruption):
    """Kernel calls until every epoch ran, the kernel stopped, an observer stopped, or a
    stop was requested (Ctrl-C)."""
    n, train_rows = problem.n_train, problem.train_rows
    shuffle = options.shuffle if options.batch_size < n else None  # "rows", "blocks", None
    ahead = bool(shuffle) and n >= DRAW_AHEAD_MIN_ROWS and spare_core(options.n_threads)
    # Drawing ahead, each call trains one epoch while the next epoch's order is drawn:
    # sharing memory with the kernel, a permutation of a large data set takes up to most
    # of an epoch (1,000,000 x 100 on one thread: two orders took 22-86 ms against a
    # 55 ms epoch, and the next call waited for them); a kernel call costs far less.
    default = (1 if ahead else max(1, ORDER_BUDGET // n)) if shuffle else options.epochs
    block = block_size(observers, options.epochs, default)
    orders = BlockOrders(np.random.default_rng(options.seed), n, shuffle, train_rows)
    try:
        while run.done < options.epochs and run.status == stopping.MAX_EPOCHS and not run.stop_reason:  # fmt: skip
            count = min(block, options.epochs - run.done)
            taken = orders.take(count)
            following = min(block, options.epochs - run.done - count)
            if ahead and following > 0:
                orders.draw_ahead(following)
            run.ran, run.status = call(run, count, taken, rates, interruption)
            _after_call(run, options, observers, interruption)
    finally:
        orders.close()
    if not run.stop_reason:
        run.stop_reason = stopping.REASONS[run.status]


def _after_call(run, options, observers, interruption):
    """Account a kernel call's epochs and tell the observers."""
    run.done += run.ran
    run.validation_loss = None
    if interruption.requested and run.status == stopping.MAX_EPOCHS:
        # the request came after the block's last batch (or between calls)
        run.status = stopping.INTERRUPTED if run.done < options.epochs else run.status
    if not run.ran:  # interrupted before an epoch ended: nothing new to observe
        return
    for observer in observers:
        # a later observer's reason wins: the user's callback, last, names the stop
        run.stop_reason = observer.after_block(run) or run.stop_reason
