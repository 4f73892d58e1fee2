"""The NumPy reference's update of the flat parameters, shared by every model kind.

Clipping, penalties, the optimizer step (formulas of :mod:`fastgd.specs.optimizers`, those
of ``torch.optim``), the order in which one update applies them, and the tolerance rule.
"""

import numpy as np

from ...specs import optimizers as opt
from ...specs import stopping
from ...specs.stopping import runaway, tolerance_rule


def clip_gradient(grad, n_trained, hyper):
    """Clip ``grad[:n_trained]`` in place by value, then by global norm (0 disables each)."""
    g = grad[:n_trained]
    if hyper[opt.CLIP_VALUE] > 0.0:
        np.clip(g, -hyper[opt.CLIP_VALUE], hyper[opt.CLIP_VALUE], out=g)
    if hyper[opt.CLIP_NORM] > 0.0:
        factor = hyper[opt.CLIP_NORM] / (np.sqrt(np.sum(g.astype(np.float64) ** 2)) + 1e-6)
        if factor < 1.0:
            g *= factor


def penalty_value(params, n_weights, hyper):
    """``l1 * sum|w| + l2 / 2 * sum w**2`` over the weights ``params[:n_weights]``."""
    w = params[:n_weights].astype(np.float64)
    return hyper[opt.L1] * np.sum(np.abs(w)) + 0.5 * hyper[opt.L2] * np.sum(w * w)


def soft_threshold(params, n_weights, threshold):
    """The L1 proximal step in place: shrink the weights toward 0 by ``threshold``, to 0."""
    w = params[:n_weights]
    w[:] = np.sign(w) * np.maximum(np.abs(w) - threshold, 0.0)


def optimizer_step(params, grad, n_trained, opt_code, hyper, state, t, lr=None):
    """Apply update number ``t`` (1-based) of an optimizer to ``params[:n_trained]``.

    The formulas are written out in :mod:`fastgd.specs.optimizers` (those of torch.optim).
    ``lr`` is the learning rate of this update (default ``hyper[LR]``). ``state`` rows are
    updated in place; entries past ``n_trained`` (untrained intercepts) are left alone.
    """
    p = params[:n_trained]
    g = grad[:n_trained]
    lr = hyper[opt.LR] if lr is None else lr
    if opt_code == opt.SGD:
        mu = hyper[opt.MOMENTUM]
        if mu != 0.0:
            buf = state[0, :n_trained]
            if t == 1:
                buf[:] = g
            else:
                buf *= mu
                buf += (1.0 - hyper[opt.DAMPENING]) * g
            g = g + mu * buf if hyper[opt.NESTEROV] else buf
        p -= lr * g
    elif opt_code == opt.ADAGRAD:
        total = state[0, :n_trained]
        total += g * g
        p -= lr / (1.0 + (t - 1) * hyper[opt.LR_DECAY]) * g / (np.sqrt(total) + hyper[opt.EPS])
    elif opt_code == opt.RMSPROP:
        alpha, eps, mu = hyper[opt.ALPHA], hyper[opt.EPS], hyper[opt.MOMENTUM]
        square_avg, grad_avg, buf = state[0, :n_trained], state[1, :n_trained], state[2, :n_trained]
        square_avg *= alpha
        square_avg += (1.0 - alpha) * g * g
        if hyper[opt.CENTERED]:
            grad_avg *= alpha
            grad_avg += (1.0 - alpha) * g
            denom = np.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            denom = np.sqrt(square_avg) + eps
        if mu > 0.0:
            buf *= mu
            buf += g / denom
            p -= lr * buf
        else:
            p -= lr * g / denom
    else:  # ADAM, ADAMW
        b1, b2, eps, wd = (
            hyper[opt.BETA1],
            hyper[opt.BETA2],
            hyper[opt.EPS],
            hyper[opt.WEIGHT_DECAY],
        )
        if opt_code == opt.ADAMW:
            p *= 1.0 - lr * wd
        elif wd != 0.0:
            g = g + wd * p
        m, v, v_max = state[0, :n_trained], state[1, :n_trained], state[2, :n_trained]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        if hyper[opt.AMSGRAD]:
            np.maximum(v_max, v, out=v_max)
            v = v_max
        correction2 = np.sqrt(1.0 - b2**t)
        p -= lr / (1.0 - b1**t) * m / (np.sqrt(v) / correction2 + eps)


def apply_update(params, grad, n_weights, n_trained, opt_code, hyper, opt_state, step_count, lr_epoch):  # fmt: skip
    """One update from the mean gradient ``grad`` (modified in place).

    The order of operations of :mod:`fastgd.specs.optimizers`: L2 term, clipping, the
    scheduled rate of update ``t``, optimizer step, L1 proximal step. Increments
    ``step_count[0]``; ``params[:n_weights]`` are the penalized weights.
    """
    step_count[0] += 1
    t = step_count[0]
    l1, l2, power_t = hyper[opt.L1], hyper[opt.L2], hyper[opt.POWER_T]
    if l2 > 0.0:
        grad[:n_weights] += l2 * params[:n_weights]
    clip_gradient(grad, n_trained, hyper)
    lr = lr_epoch / t**power_t if power_t != 0.0 else lr_epoch
    optimizer_step(params, grad, n_trained, opt_code, hyper, opt_state, t, lr)
    if l1 > 0.0:
        soft_threshold(params, n_weights, lr * l1)


def snapshot(state):
    """Copies of everything an epoch changes, to restore if it diverges."""
    return state.params.copy(), state.running.copy(), state.opt_state.copy(), state.step_count[0]


def restore(state, saved):
    """Put back the values of :func:`snapshot`."""
    state.params[:], state.running[:], state.opt_state[:], state.step_count[0] = saved


def train_loop(n, batch_step, state, update, block, n_weights, n_trained, epoch_done=None):
    """The epoch loop of every model kind; ``batch_step(rows, epoch)`` gives a batch's
    mean loss and gradient, ``epoch_done(epoch, n_batches)`` runs after each epoch.

    Returns ``(n_done, status)`` as :meth:`fastgd.backends.contract.Backend.train_epochs`.
    """
    # overflow to inf/NaN is detected below and reported as divergence, not as warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train_loop(n, batch_step, state, update, block, n_weights, n_trained, epoch_done)


def interrupted(state, saved):
    """True once a stop was requested (``stop_state[INTERRUPT]``); then the state after
    the last whole update is kept, or ``saved`` (the epoch's start) if it is not finite."""
    if not state.stop_state[stopping.INTERRUPT]:
        return False
    if not np.all(np.isfinite(state.params)):
        restore(state, saved)
    return True


def _train_loop(n, batch_step, state, update, block, n_weights, n_trained, epoch_done):
    params, hyper, orders = state.params, update.hyper, block.orders
    if orders.shape[0]:  # the rows of the orders (early stopping: the training rows only)
        n = orders.shape[1]
    for epoch in range(block.n_epochs):
        saved = snapshot(state)
        loss_sum, n_batches = 0.0, 0
        for first in range(0, n, update.batch_size):
            if interrupted(state, saved):  # polled before every mini-batch
                return epoch, stopping.INTERRUPTED
            last = min(first + update.batch_size, n)
            rows = orders[epoch % orders.shape[0], first:last] if orders.shape[0] else slice(first, last)  # fmt: skip
            loss, grad = batch_step(rows, epoch)
            loss_sum += loss * (last - first)
            n_batches += 1
            apply_update(
                params, grad, n_weights, n_trained, update.opt_code, hyper, state.opt_state,
                state.step_count, block.lr_epochs[epoch],
            )  # fmt: skip
        if epoch_done is not None:
            epoch_done(epoch, n_batches)
        epoch_loss = loss_sum / n
        if hyper[opt.L1] > 0.0 or hyper[opt.L2] > 0.0:
            epoch_loss += penalty_value(params, n_weights, hyper)
        block.history[epoch] = epoch_loss
        largest = float(np.finfo(params.dtype).max)
        finite = np.isfinite(epoch_loss) and np.all(np.isfinite(params))
        if not finite or runaway(epoch_loss, state.stop_state, largest):
            restore(state, saved)
            return epoch + 1, stopping.DIVERGED
        if tolerance_rule(epoch_loss, update.tol, update.n_iter_no_change, state.stop_state):
            return epoch + 1, stopping.CONVERGED
    return block.n_epochs, stopping.MAX_EPOCHS
