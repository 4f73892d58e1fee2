"""The end of a run: gradient diagnosis, divergence report, and the :class:`FitResult`."""

import warnings

import numpy as np

from ..backends.blas import single_threaded_blas
from ..backends.numpy.recurrent import gradients_through_time
from ..diagnostics import GradientWarning, diagnose_gradients, diagnose_through_time
from ..result import FitResult
from ..specs import stopping
from .observers import EarlyStopping


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss or the parameters became NaN or infinite, or
    the loss ran away (:func:`fastgd.specs.stopping.runaway`)."""


class DivergenceError(FloatingPointError):
    """Raised instead of :class:`DivergenceWarning` when ``on_divergence="raise"``."""


class InterruptedWarning(UserWarning):
    """Training was stopped by Ctrl-C (SIGINT); the result so far was returned
    (:mod:`fastgd.training.interrupt`)."""


def finish(problem, options, run, backend, observers, mlp=None):
    """Warn about gradients and divergence, and build the :class:`FitResult`.

    Parameters
    ----------
    problem, options
        The run's :class:`~fastgd.training.problem.Problem` and
        :class:`~fastgd.training.options.Options`.
    run : fastgd.training.trainer.Run
        The finished run.
    backend : fastgd.backends.contract.Backend
        The backend that ran it.
    observers : list
        The run's observers (early stopping's history and best epoch are reported).
    mlp : fastgd.MLP, optional
        The network the user asked for (the diagnosis names its settings).
    """
    diverged = run.status == stopping.DIVERGED
    diagnosis, message, through_time = None, None, None
    if problem.spec.n_layers:
        diagnosis, message = diagnose_gradients(
            run.grad_norms[: run.done], diverged, mlp, options.optimizer.lr, options.hyper,
            problem.spec,
        )  # fmt: skip
        if problem.spec.name == "rnn" and not diverged:
            through_time = _through_time(problem, run.state.params)
            if diagnosis is None and not problem.spec.sequence:
                diagnosis, message = diagnose_through_time(through_time, mlp)
        if diagnosis is not None:
            warnings.warn(message, GradientWarning, stacklevel=3)
    if diverged:
        _report_divergence(run, options)
    if run.status == stopping.INTERRUPTED:
        _report_interruption(run)
    early = next((o for o in observers if isinstance(o, EarlyStopping)), None)
    result = _result(problem, options, run, backend.name, early, (diagnosis, message))
    result.gradient_through_time = through_time
    return result


# rows of the training data on which the gradients through time are measured
THROUGH_TIME_ROWS = 256


def _through_time(problem, params):
    """Mean norms of dloss/dh_t of the first recurrent layer at the offsets of
    :func:`fastgd.diagnostics.time_offsets`, on the first training rows (NumPy reference)."""
    data, first = problem.data, slice(THROUGH_TIME_ROWS)
    if problem.train_rows is not None:  # early stopping: the first rows that trained
        first = problem.train_rows[:THROUGH_TIME_ROWS]
    rows = type(data)(*(a[first] if a.size else a for a in data))
    # BLAS on one thread: a multi-threaded OpenBLAS leaves its worker threads spinning
    # for a while after its last product, and they took a core from the kernels of the
    # next fit (LSTM benchmark, 2 threads: 1.2x faster training of the next fit)
    with single_threaded_blas():
        return gradients_through_time(problem.spec.kernel_model(), rows, params)


def snapshot(problem, options, backend_name, run):
    """A :class:`FitResult` of ``run`` so far, with copies of its arrays (a checkpoint)."""
    result = _result(problem, options, run, backend_name, None, (None, None))
    result.params = result.params.copy()
    result.optimizer_state = result.optimizer_state.copy()
    if result.running is not None:
        result.running = result.running.copy()
    return result


def _report_divergence(run, options):
    done = run.done
    loss = run.history[done - 1]
    how = (
        f"grew to {loss:.3g}, over {stopping.RUNAWAY_FACTOR:g} times the first epoch's"
        if np.isfinite(loss) and loss > 0
        else f"became {loss}"
    )
    message = (
        f"training diverged at epoch {done - 1}: the loss {how} (or a parameter became NaN/inf) "
        f"with lr={options.optimizer.lr:g}. The last good parameters, "
        f"{f'from the end of epoch {done - 2}' if done > 1 else 'the initial ones'}, were "
        "kept. Try a smaller learning rate, standardize the features, or limit the steps "
        "with clip_norm."
    )
    if options.on_divergence == "raise":
        raise DivergenceError(message)
    warnings.warn(message, DivergenceWarning, stacklevel=4)


def _report_interruption(run):
    updates = int(run.state.step_count[0])
    message = (
        f"training was interrupted (Ctrl-C) after {run.done} whole epoch(s) and {updates} "
        "update(s): the result holds the parameters and optimizer state after the last whole "
        "update; fit(..., init=result) resumes from them"
    )
    warnings.warn(message, InterruptedWarning, stacklevel=4)


def _result(problem, options, run, backend_name, early, diagnosis):
    state, done, network = run.state, run.done, problem.spec.n_layers > 0
    return FitResult(
        model=problem.spec,
        params=state.params,
        classes_=problem.classes,
        loss_history=run.history[:done].copy(),
        lr_history=run.lr_history[:done].copy(),
        n_epochs=done,
        stop_reason=run.stop_reason,
        backend=backend_name,
        n_threads=options.n_threads,
        compile_time=run.compile_time,
        train_time=run.train_time,
        optimizer=options.optimizer,
        optimizer_state=state.opt_state,
        n_updates=int(state.step_count[0]),
        validation_loss_history=None if early is None else np.array(early.history),
        best_epoch=None if early is None else early.best_epoch,
        validation_rows=problem.validation_rows,
        running=state.running if network else None,
        gradient_norms=run.grad_norms[:done].copy() if network else None,
        gradient_diagnosis=diagnosis[0],
        gradient_message=diagnosis[1],
        feature_names_in_=problem.feature_names,
        gradient_norm=getattr(run, "gradient_norm", None),  # the full-batch solvers' SolverRun
        _single_target=problem.single_target,
    )
