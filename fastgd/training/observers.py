"""What runs in Python between two kernel calls: printing, a progress bar, early stopping,
a plateau schedule and the user's callback.

Each observer says how many epochs one kernel call may run for it (``block_limit``:
``None`` for any number, 1 when it must see every epoch), is told after every call
(:meth:`Observer.after_block`, which may stop training with a reason), and is told once
at the end (:meth:`Observer.finish`). A new solver or a new per-epoch rule is one more
observer, not one more branch of the loop.
"""

import numpy as np

from ..backends.shared import held_out_loss
from ..specs import stopping


class Observer:
    """Base observer: any block size, no reaction."""

    block_limit = None

    def after_block(self, run):
        """Called after each kernel call; return a stop reason (str) to stop training."""
        return None

    def finish(self, run):
        """Called once when training has stopped."""


class Printer(Observer):
    """``Epoch: e, Loss: ...`` every ``every`` epochs, and for the last epoch."""

    def __init__(self, every):
        self.block_limit = every
        self.every = every

    def after_block(self, run):
        for epoch in range(run.done - run.ran, run.done):
            if epoch % self.every == 0:
                print(f"Epoch: {epoch}, Loss: {run.history[epoch]:.6g}")

    def finish(self, run):
        if run.done and (run.done - 1) % self.every != 0:
            print(f"Epoch: {run.done - 1}, Loss: {run.history[run.done - 1]:.6g}")


class ProgressBar(Observer):
    """A tqdm bar over the epochs with the current loss (optional dependency)."""

    block_limit = 1

    def __init__(self, epochs):
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:
            raise ValueError(
                'progress=True needs tqdm, an optional dependency: pip install "fastgd[progress]"'
            ) from exc
        self.bar = tqdm(total=epochs, unit="epoch")

    def after_block(self, run):
        self.bar.update(run.ran)
        self.bar.set_postfix(loss=f"{run.history[run.done - 1]:.4g}")

    def finish(self, run):
        self.bar.close()


class EarlyStopping(Observer):
    """Stop when the loss on the held-out rows has not fallen below ``best - tol`` for
    ``patience`` epochs; at the end, put back the best epoch's state.

    The validation loss is that of prediction (batch norm from the running averages),
    computed with the NumPy maths every backend shares, on the held-out ``rows`` of
    ``validation`` read where they are (a block of rows at a time, no copy of them all).
    """

    block_limit = 1

    def __init__(self, spec, validation, rows, tol, patience):
        self.kernel_model = spec.kernel_model()
        self.validation, self.rows = validation, rows
        self.tol, self.patience = tol, patience
        self.history, self.best = [], None

    def after_block(self, run):
        if run.status == stopping.DIVERGED:
            return None
        state, dtype = run.state, self.validation.Y.dtype
        params, running = (a.astype(dtype, copy=False) for a in (state.params, state.running))
        loss = held_out_loss(self.kernel_model, self.validation, self.rows, params, running)
        self.history.append(loss)
        run.validation_loss = loss
        if self.best is None or loss < self.best["loss"] - self.tol:
            saved = (state.params.copy(), state.running.copy(), state.opt_state.copy())
            self.best = dict(loss=loss, epoch=run.done - 1, saved=saved,
                             step=int(state.step_count[0]), no_change=0)  # fmt: skip
            return None
        self.best["no_change"] += 1
        return "early_stopping" if self.best["no_change"] >= self.patience else None

    def finish(self, run):
        if self.best is not None:  # the best validation epoch's parameters are returned
            state = run.state
            state.params[:], state.running[:], state.opt_state[:] = self.best["saved"]
            state.step_count[0] = self.best["step"]

    @property
    def best_epoch(self):
        """The epoch whose parameters are returned, or None."""
        return None if self.best is None else self.best["epoch"]


class PlateauSchedule(Observer):
    """Feeds the epoch's loss (the validation loss with early stopping) to an adaptive
    learning-rate schedule such as ``ReduceOnPlateau``."""

    block_limit = 1

    def __init__(self, rates):
        self.rates = rates

    def after_block(self, run):
        if run.status != stopping.DIVERGED:
            watched = run.validation_loss
            self.rates.observe(run.history[run.done - 1] if watched is None else watched)


class Callback(Observer):
    """``callback(epoch, info)`` after every epoch; returning True stops training.

    ``info["result"]``, when a ``snapshot(run)`` function is given, is a
    :class:`~fastgd.FitResult` of the training so far (parameters, optimizer state,
    update count, histories): a checkpoint that ``fastgd.save`` writes and ``fit(...,
    init=...)`` resumes from (see :class:`fastgd.persistence.Checkpoint`).
    """

    block_limit = 1

    def __init__(self, callback, snapshot=None):
        self.callback, self.snapshot = callback, snapshot

    def after_block(self, run):
        if run.status == stopping.DIVERGED:
            return None
        epoch = run.done - 1
        info = {"loss": float(run.history[epoch]), "params": run.state.params.copy()}
        if self.snapshot is not None:
            info["result"] = self.snapshot(run)
        return "callback" if self.callback(epoch, info) else None


def block_size(observers, epochs, default):
    """Epochs per kernel call: the smallest any observer allows, at most ``default``."""
    limits = [o.block_limit for o in observers if o.block_limit is not None]
    return int(np.min([default, *limits])) if epochs else 0


def make_observers(problem, options, rates, snapshot=None):
    """The observers of a fit, in the order they are told after each kernel call
    (``snapshot(run)``: the FitResult so far, handed to the callback as a checkpoint)."""
    observers = []
    if options.print_every:
        observers.append(Printer(options.print_every))
    if options.progress:
        observers.append(ProgressBar(options.epochs))
    if options.early_stopping:
        tol = max(options.tol, 0.0)
        observers.append(
            EarlyStopping(
                problem.spec,
                problem.validation,
                problem.validation_rows,
                tol,
                options.n_iter_no_change,
            )  # fmt: skip
        )
    if rates.adaptive:
        observers.append(PlateauSchedule(rates))
    if options.callback is not None:
        observers.append(Callback(options.callback, snapshot))
    return observers
