"""Full-batch second-order solvers: Newton's method and L-BFGS, in Python over the flat
float64 parameter vector, with every pass over the data in the backend.

Each iteration calls the observers of :mod:`fastgd.training.observers` (printing,
progress, early stopping on the validation share, the callback) as the first-order
trainer does after an epoch, and records the objective (the penalised mean loss after the
iteration's step) in ``loss_history`` and the accepted step length in ``lr_history``.
The :class:`SolverRun` returned is a :class:`~fastgd.training.trainer.Run` with the
final gradient norm and the number of passes over the data.

Stop reasons: ``"converged"`` (gradient tolerance, Newton decrement or relative
decrease), ``"max_epochs"`` (``epochs`` iterations), ``"line_search_failed"``,
``"diverged"`` (a non-finite objective at the start), or an observer's.
"""

import os
import time
from dataclasses import dataclass

import numpy as np

from ..backends.hessian_layout import chunk_bounds, n_pairs
from ..schedules import Constant
from ..specs import optimizers as opt
from ..specs import stopping
from ..specs.network import layout
from .interrupt import Interruption
from .line_search import armijo, strong_wolfe
from .objective import NewtonSystem, Objective, PassInterrupted, centre_classes, is_dense_linear
from .trainer import Run


@dataclass
class SolverRun(Run):
    """A :class:`Run` with what only the solvers report."""

    gradient_norm: float = float("nan")
    evaluations: int = 0
    sizes: object = None  # networks: layer widths and parameter layout (per-layer norms)
    layout: dict | None = None


def check_solver_options(problem, options):
    """Reject what the full-batch solvers do not support, naming what does."""
    name = type(options.optimizer).__name__
    hyper = options.hyper
    if hyper[opt.L1] != 0.0:
        raise ValueError(
            f"{name} supports no L1 penalty (penalty='l1' or 'elasticnet'); use penalty='l2', "
            "or a first-order optimizer ('sgd', 'adagrad', 'rmsprop', 'adam', 'adamw'), "
            "whose proximal step handles L1"
        )
    if hyper[opt.CLIP_VALUE] or hyper[opt.CLIP_NORM]:
        raise ValueError(f"{name} takes full steps: clip_value and clip_norm do not apply")
    if not isinstance(options.schedule, Constant):
        raise ValueError(f"{name} chooses its steps by line search: lr must be a number")
    spec = problem.spec
    if options.optimizer.code == opt.NEWTON and spec.n_layers:
        raise ValueError("Newton's method is for the linear family; use 'lbfgs' for networks")
    if spec.n_layers and np.any(spec.kernel_model().batch_norm):
        raise ValueError(f"{name} trains on one full batch: use networks without batch_norm")
    if options.optimizer.code == opt.NEWTON:
        _check_hessian_memory(spec, problem.n_train)


def newton_memory(spec, n):
    """Bytes of Newton's float64 Hessian work: the per-chunk sums ``X~^T diag(h) X~`` (one
    per class pair for softmax) and the assembled matrix with its Cholesky factor."""
    d1, k = spec.n_features + 1, spec.n_outputs
    n_chunks = len(chunk_bounds(n)) - 1
    chunk_sums = n_chunks * n_pairs(spec.kernel_model().loss_code, k) * d1 * d1
    return 8 * (chunk_sums + 2 * (d1 * k) ** 2)


def physical_memory():
    """Bytes of RAM of this machine (None where the OS does not tell)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_hessian_memory(spec, n):
    """Refuse Newton when its Hessian work would not fit in half the machine's memory."""
    need, have = newton_memory(spec, n), physical_memory()
    if have is not None and need > have / 2:
        raise ValueError(
            f"optimizer='newton' would need about {need / 2**30:.1f} GiB for its Hessian "
            f"({spec.n_features} features x {spec.n_outputs} outputs: (d k)^2 entries, and "
            f"per-chunk sums), more than half of this machine's {have / 2**30:.1f} GiB; "
            "use optimizer='lbfgs', whose memory grows with history x parameters"
        )


def solve(backend, problem, options, state, observers, objective=None):
    """Run ``fit`` with a second-order optimizer; returns the :class:`SolverRun`.

    Parameters
    ----------
    backend : fastgd.backends.contract.Backend
    problem : fastgd.training.problem.Problem
    options : fastgd.training.options.Options
        ``options.optimizer`` is a :class:`fastgd.optim.Newton` or
        :class:`fastgd.optim.LBFGS`; ``options.tol`` (when given) overrides its ``tol``.
    state : fastgd.backends.contract.State
        ``state.params`` is updated after every iteration.
    observers : list of fastgd.training.observers.Observer
    objective : Objective, optional
        What gives ``f``, ``g`` (and ``H``); default: the backend's passes over
        the training rows of ``problem`` (the Dask driver passes its own, over chunks on
        workers).
    """
    check_solver_options(problem, options)
    spec, epochs = problem.spec, options.epochs
    shape = (epochs, spec.n_layers) if spec.n_layers else (0, 0)
    run = SolverRun(state, np.empty(epochs), np.empty(epochs), np.zeros(shape))
    l2 = float(options.hyper[opt.L2])
    if objective is None:
        objective = _objective(backend, problem, l2, options.n_threads)
    solver = options.optimizer
    tol = options.tol if np.isfinite(options.tol) else solver.tol
    x = state.params.astype(np.float64)
    started = time.perf_counter()
    # Ctrl-C: the handler flags the request, checked after every iteration (_record) and
    # between the row blocks of a pass (the passes run in this thread, a block at a time)
    objective.stop_state = state.stop_state
    if solver.code == opt.NEWTON:
        objective.hessian_dtype = solver.hessian_dtype
    with Interruption(state.stop_state):
        x = _iterate(objective, x, run, solver, tol, observers, l2)
    state.params[:] = x
    run.train_time = time.perf_counter() - started
    run.evaluations = objective.evaluations
    for observer in observers:
        observer.finish(run)
    return run


def _objective(backend, problem, l2, n_threads):
    """The backend's passes over the training rows: with early stopping, dense rows of a
    linear model (or a network without batch norm) are gathered a block at a time; other
    data kinds as a copy of them."""
    spec, data, rows = problem.spec, problem.data, problem.train_rows
    if rows is not None and is_dense_linear(spec.kernel_model(), data):
        return Objective(backend, spec, data, l2, n_threads, rows)
    return Objective(backend, spec, problem.training_data(), l2, n_threads)


def _iterate(objective, x, run, solver, tol, observers, l2):
    """Newton or L-BFGS from ``x``; returns the final ``x``. A pass stopped by Ctrl-C
    ends the run with the last recorded iterate (``run.state.params``)."""
    try:
        if solver.code == opt.NEWTON:
            x = _newton(objective, x, run, solver, tol, observers)
        else:
            return _lbfgs(objective, x, run, solver, tol, observers)
    except PassInterrupted:
        run.status = stopping.INTERRUPTED
        run.stop_reason = stopping.REASONS[stopping.INTERRUPTED]
        x = run.state.params.astype(np.float64)
        if solver.code != opt.NEWTON:
            return x
    centre_classes(objective.spec, x, l2)
    return x


def _record(run, x, f, g, t, observers):
    """Book one iteration and tell the observers; returns a stop reason or None."""
    i = run.done
    run.state.params[:] = x
    run.history[i], run.lr_history[i] = f, t
    run.gradient_norm = float(np.max(np.abs(g))) if g.size else 0.0
    if run.grad_norms.size:
        _layer_norms(run, g)
    run.done, run.ran, run.validation_loss = i + 1, 1, None
    reason = None
    for observer in observers:
        reason = observer.after_block(run) or reason
    if run.state.stop_state[stopping.INTERRUPT]:  # Ctrl-C (fastgd.training.interrupt)
        run.status = stopping.INTERRUPTED
        return stopping.REASONS[stopping.INTERRUPTED]
    return reason


def _layer_norms(run, g):
    """Networks: the norm of each layer's weight gradient (read by the diagnosis)."""
    offsets = run.layout["weight"]
    sizes = run.sizes
    for layer in range(len(sizes) - 1):
        w = g[offsets[layer] : offsets[layer] + sizes[layer] * sizes[layer + 1]]
        run.grad_norms[run.done, layer] = np.sqrt(w @ w)


def _start(objective, x, run, evaluate):
    """The first evaluation; marks a non-finite start as diverged (None then)."""
    if objective.spec.n_layers:
        sizes = objective.model.sizes
        run.sizes, run.layout = sizes, layout(sizes, objective.model.batch_norm)
    values = evaluate(x)
    if not np.isfinite(values[0]) or not np.all(np.isfinite(values[1])):
        run.status, run.stop_reason = stopping.DIVERGED, "diverged"
        return None
    run.gradient_norm = float(np.max(np.abs(values[1]))) if values[1].size else 0.0
    return values


def _newton(objective, x, run, solver, tol, observers):
    """Newton iterations with an Armijo backtracking line search; returns ``x``."""
    system = NewtonSystem(objective.spec, objective.l2)
    values = _start(objective, x, run, objective.value_grad_hess)
    if values is None:
        return x
    f, g, H = values
    step, decrement, H, inexact = _direction(objective, system, x, g, H, objective.inexact)
    trend = _Trend()
    for _ in range(run.history.size):
        if np.max(np.abs(g)) <= tol and 0.5 * decrement <= tol:
            run.stop_reason = "converged"
            return x
        fresh = trend.needs_hessian(g, decrement, tol)
        found = armijo(objective, x, f, g, step, solver.lr, hessian=fresh)
        if found is None and inexact:  # the float32 Gram products' step: retry with float64's
            step, decrement, H, inexact = _direction(objective, system, x, g, None, False)
            found = armijo(objective, x, f, g, step, solver.lr, hessian=fresh)
        if found is None:
            run.stop_reason = "line_search_failed"
            return x
        t, x, f, g, H_new = found
        if H_new is None and (fresh or t != solver.lr):  # backtracked: H at the new point
            H_new = objective.value_grad_hess(x)[2]
        trend.full_step = H_new is not None and t == solver.lr
        if H_new is not None:
            H, inexact = H_new, objective.inexact
        reason = _record(run, x, f, g, t, observers)
        step, decrement, H, inexact = _direction(objective, system, x, g, H, inexact)
        if reason:
            run.stop_reason = reason
            return x
    converged = np.max(np.abs(g)) <= tol and 0.5 * decrement <= tol
    run.stop_reason = "converged" if converged else "max_epochs"
    return x


# Newton(hessian_dtype="float32"): the float32 Gram products' errors are about 1e-7 to
# 1e-6 of sqrt(H_ii H_jj) (rounding of blocks of hundreds of rows, and over the d entries
# of a row of H), so a step from them errs by about that times the condition number of the
# diagonally scaled H. Below 1e4 that is at most ~1e-2: the steps stay Newton-fast.
MAX_FLOAT32_CONDITION = 1e4


def _direction(objective, system, x, g, H, inexact):
    """``(step, decrement, H, inexact)``: the Newton step from ``H`` (None: the float64
    Hessian at ``x``). An ``inexact`` ``H`` (float32 Gram products) that is not positive
    definite, too ill-conditioned for float32 (:data:`MAX_FLOAT32_CONDITION`) or whose
    step is no descent direction is replaced by the float64 Hessian at ``x`` (one more
    pass over the data), and the rest of the fit computes float64 Hessians."""
    if H is not None and inexact:
        found = system.step(H, g, MAX_FLOAT32_CONDITION)
        if found is not None and (float(g @ found[0]) < 0 or not np.any(found[0])):
            return (*found, H, True)
        H = None
    if H is None:
        objective.hessian_dtype = "float64"  # float32 does not serve this problem
        H = objective.exact_hessian(x)
    return (*system.step(H, g), H, False)


class _Trend:
    """When to skip the Hessian at Newton's next point: it is the last one.

    After full steps, Newton converges quadratically: ``D = step.H.step / 2`` (about
    ``f - f*``) follows ``D_next ~ D^2 (D / D_prev^2)``, and ``max|g|`` shrinks as
    ``sqrt(D)``. When both predictions are below ``tol / 2``, the next point is expected
    to stop the fit and its Hessian would never be used: that point gets its loss and
    gradient only, and its decrement is measured with the current Hessian, a step old
    (the gradient test stays exact). Should it not converge after all, that step is a
    chord step, still a descent direction, and the point after it gets a Hessian again.
    """

    def __init__(self):
        self.previous, self.full_step, self.stale = None, False, False

    def needs_hessian(self, g, decrement, tol):
        """True unless the point after a full step from here is predicted converged."""
        D, D_prev = 0.5 * decrement, self.previous
        self.previous = None if self.stale else D
        predicted = False
        if self.full_step and not self.stale and D_prev and 0 <= D < D_prev:
            D_next = D * D * (D / (D_prev * D_prev))
            g_next = np.max(np.abs(g)) * np.sqrt(D_next / D) if D > 0 else 0.0
            predicted = max(D_next, g_next) <= 0.5 * tol
        self.stale = predicted
        return not predicted


def _two_loop(g, pairs):
    """``-H_k g`` by the two-loop recursion over the (s, y, 1 / y.s) pairs, oldest first,
    with ``H_0 = (s.y / y.y) I`` from the newest pair."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * (s @ q)
        q -= a * y
        alphas.append(a)
    s, y, _ = pairs[-1]
    q *= (s @ y) / (y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        q += (a - rho * (y @ q)) * s
    return -q


def _lbfgs_step(objective, x, f, g, pairs, solver):
    """One line search along the L-BFGS direction (steepest descent without pairs)."""
    if pairs:
        direction, t0 = _two_loop(g, pairs), solver.lr
    else:  # first step: length lr / ||g|| along -g (SciPy); lr * min(1, 1/|g|_1) (torch)
        direction = -g
        norm = np.sum(np.abs(g)) if solver.line_search is None else np.sqrt(g @ g)
        t0 = solver.lr * (min(1.0, 1.0 / norm) if solver.line_search is None else 1.0 / norm)
    if solver.line_search is None:
        f1, g1 = objective.value_grad(x + t0 * direction)
        return t0, direction, f1, g1
    found = strong_wolfe(objective, x, f, g, direction, t0)
    return None if found is None else (found[0], direction, *found[1:])


def _lbfgs(objective, x, run, solver, tol, observers):
    """L-BFGS iterations; returns ``x``."""
    values = _start(objective, x, run, objective.value_grad)
    if values is None:
        return x
    f, g = values
    pairs, eps = [], np.finfo(float).eps
    for _ in range(run.history.size):
        if np.max(np.abs(g)) <= tol:
            run.stop_reason = "converged"
            return x
        found = _lbfgs_step(objective, x, f, g, pairs, solver)
        if found is None and pairs:  # drop the memory once and retry along -g
            pairs.clear()
            found = _lbfgs_step(objective, x, f, g, pairs, solver)
        if found is None or not np.isfinite(found[2]):
            run.stop_reason = "line_search_failed"
            return x
        t, direction, f1, g1 = found
        s, y = t * direction, g1 - g
        ys = float(y @ s)
        threshold = 1e-10 if solver.line_search is None else eps * float(-(g @ s))
        if ys > threshold:
            pairs.append((s, y, 1.0 / ys))
            del pairs[: -solver.history]
        x, f_old, f, g = x + s, f, f1, g1
        reason = _record(run, x, f, g, t, observers)
        if reason:
            run.stop_reason = reason
            return x
        if (f_old - f) / max(abs(f_old), abs(f), 1.0) <= solver.ftol:
            run.stop_reason = "converged"
            return x
    run.stop_reason = "converged" if np.max(np.abs(g)) <= tol else "max_epochs"
    return x
