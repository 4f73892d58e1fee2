"""NumPy reference backend: plain and readable, the oracle in tests, the benchmark baseline.

Every backend module exposes the same two functions with the same arguments:
``loss_and_gradient`` (one batch) and ``train_epochs`` (the training loop). Arguments are
arrays, numbers and integer codes only. See :mod:`fastgd.backends` for the contract.
"""

import numpy as np

from ..specs import losses, stopping
from ..specs import optimizers as opt

NAME = "numpy"


def _stable_sigmoid(z):
    # exp of a non-positive number never overflows
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def loss_and_gradient(X, Y, weights, params, loss_code, n_outputs, fit_intercept):
    """Mean loss over the rows of ``X`` and its gradient with respect to ``params``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Samples.
    Y : ndarray of shape (n, m)
        Targets: ``m = k`` regression targets for MSE, otherwise one column holding the
        label (0/1 for binary cross-entropy, the class index for categorical).
    weights : ndarray of shape (n,) or (0,)
        Sample weights, same dtype as X: the loss is ``mean(weights * per-sample loss)``.
        An empty array means all weights are 1.
    params : ndarray of shape (d * k + k,)
        Flat parameters ``[W (d, k) row-major, b (k)]``.
    loss_code : int
        One of :mod:`fastgd.specs.losses`.
    n_outputs : int
        ``k``, the number of decision values per sample.
    fit_intercept : bool
        If false the intercept gradient is zero.

    Returns
    -------
    loss : float
        The mean (weighted) per-sample loss; penalties are not included.
    grad : ndarray of shape (d * k + k,)
        Its gradient, same dtype as ``params``.
    """
    n, d = X.shape
    k = n_outputs
    W = params[: d * k].reshape(d, k)
    b = params[d * k :]
    loss, dZ = output_loss(X @ W + b, Y, weights, loss_code)
    dZ = dZ.astype(params.dtype, copy=False)
    grad = np.empty_like(params)
    grad[: d * k] = (X.T @ dZ).ravel()
    grad[d * k :] = dZ.sum(axis=0) if fit_intercept else 0.0
    return loss, grad


def output_loss(Z, Y, weights, loss_code):
    """Mean (weighted) loss of decision values ``Z`` (n, k) and its gradient ``dZ``.

    ``dZ`` is the derivative of the mean loss, i.e. already divided by ``n``. Shared by
    the linear models and the networks (whose output layer gives ``Z``).
    """
    n, k = Z.shape
    if loss_code == losses.MSE:
        R = Z - Y
        sample_loss = R * R / k  # summed over outputs below: the mean over outputs
        dZ = (2.0 / k) * R
    elif loss_code == losses.BINARY_CROSS_ENTROPY:
        z, y = Z[:, 0], Y[:, 0]
        # log(1 + exp(z)) - y z, without overflow for large |z|
        sample_loss = np.logaddexp(0.0, z) - y * z
        dZ = (_stable_sigmoid(z) - y)[:, None]
    elif loss_code == losses.CATEGORICAL_CROSS_ENTROPY:
        labels = Y[:, 0].astype(np.intp)
        rows = np.arange(n)
        m = Z.max(axis=1)
        E = np.exp(Z - m[:, None])
        s = E.sum(axis=1)
        sample_loss = m + np.log(s) - Z[rows, labels]
        dZ = E / s[:, None]
        dZ[rows, labels] -= 1.0
    else:
        raise ValueError(f"unknown loss code {loss_code}")
    if weights.size:
        sample_loss = (weights * sample_loss.T).T
        dZ = weights[:, None] * dZ
    return float(np.sum(sample_loss) / n), dZ / n


def train_epochs(
    X,
    Y,
    weights,
    params,
    orders,
    lr_epochs,
    n_epochs,
    loss_code,
    n_outputs,
    fit_intercept,
    batch_size,
    opt_code,
    hyper,
    opt_state,
    step_count,
    tol,
    n_iter_no_change,
    stop_state,
    history,
    n_threads,
):
    """Run up to ``n_epochs`` epochs of mini-batch gradient descent, updating in place.

    Parameters
    ----------
    X, Y, weights : ndarray
        Samples (n, d), targets (n, m) and sample weights (n,) or (0,), as in
        :func:`loss_and_gradient`.
    params : ndarray of shape (n_params,)
        Flat parameters, updated in place.
    orders : ndarray of shape (n_blocks, n) or (0, 0), int64
        Row order of each epoch: epoch ``e`` visits ``orders[e % n_blocks]``. An empty
        array means the natural order ``0..n-1`` in every epoch.
    lr_epochs : ndarray of shape (>= n_epochs,), float64
        Learning rate of each epoch of this call (the schedule, evaluated in Python);
        update ``t`` uses ``lr_epochs[epoch] / t**hyper[POWER_T]``.
    n_epochs : int
        Maximum number of epochs in this call.
    loss_code, n_outputs, fit_intercept
        As in :func:`loss_and_gradient`.
    batch_size : int
        Rows per mini-batch (the last batch of an epoch may be smaller).
    opt_code : int
        The optimizer, a code of :mod:`fastgd.specs.optimizers`; it updates ``params``
        from the mean gradient after each batch (see :func:`optimizer_step`).
    hyper : ndarray of shape (N_HYPER,), float64
        Its hyperparameters, clipping thresholds and penalty strengths, at the positions
        named in :mod:`fastgd.specs.optimizers` (``hyper[LR]`` is not read here).
    opt_state : ndarray of shape (n_rows, n_params)
        Its state (momentum buffers, moments), same dtype as params, updated in place.
    step_count : ndarray of shape (1,), int64
        Updates made so far (Adam's bias correction), updated in place.
    tol, n_iter_no_change : float, int
        The tolerance stopping rule (see :mod:`fastgd.specs.stopping`).
    stop_state : ndarray of shape (2,), float64
        ``[best_loss, n_no_change]``, updated in place so the rule spans calls.
    history : ndarray of shape (>= n_epochs,), float64
        Receives the loss of each epoch: the mean over all samples of the (weighted) loss
        each saw in its mini-batch, before that batch's update, plus the penalty of the
        parameters at the end of the epoch.
    n_threads : int
        Unused here (NumPy's BLAS threads are its own).

    Returns
    -------
    n_done : int
        Epochs run, including a diverged one.
    status : int
        A code of :mod:`fastgd.specs.stopping`.
    """
    # overflow to inf/NaN is detected below and reported as divergence, not as warnings
    with np.errstate(over="ignore", invalid="ignore"):
        return _train_epochs(
            X, Y, weights, params, orders, lr_epochs, n_epochs, loss_code, n_outputs, fit_intercept, batch_size,
            opt_code, hyper, opt_state, step_count, tol, n_iter_no_change, stop_state, history,
        )  # fmt: skip


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


def _train_epochs(
    X, Y, weights, params, orders, lr_epochs, n_epochs, loss_code, n_outputs, fit_intercept, batch_size, opt_code,
    hyper, opt_state, step_count, tol, n_iter_no_change, stop_state, history,
):  # fmt: skip
    n, d = X.shape
    n_weights = d * n_outputs
    n_trained = params.size if fit_intercept else n_weights
    shuffled = orders.shape[0] > 0
    l1, l2 = hyper[opt.L1], hyper[opt.L2]
    for epoch in range(n_epochs):
        start_params, start_state, start_step = params.copy(), opt_state.copy(), step_count[0]
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            rows = orders[epoch % orders.shape[0], start:stop] if shuffled else slice(start, stop)
            Wb = weights[rows] if weights.size else weights
            loss, grad = loss_and_gradient(
                X[rows], Y[rows], Wb, params, loss_code, n_outputs, fit_intercept
            )
            loss_sum += loss * (stop - start)
            apply_update(
                params, grad, n_weights, n_trained, opt_code, hyper, opt_state, step_count,
                lr_epochs[epoch],
            )  # fmt: skip
        epoch_loss = loss_sum / n
        if l1 > 0.0 or l2 > 0.0:
            epoch_loss += penalty_value(params, n_weights, hyper)
        history[epoch] = epoch_loss
        if not (np.isfinite(epoch_loss) and np.all(np.isfinite(params))):
            params[:], opt_state[:], step_count[0] = start_params, start_state, start_step
            return epoch + 1, stopping.DIVERGED
        if tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
            return epoch + 1, stopping.CONVERGED
    return n_epochs, stopping.MAX_EPOCHS


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


def tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
    """Update ``stop_state = [best, n_no_change]``; True when training has converged."""
    if epoch_loss > stop_state[0] - tol:
        stop_state[1] += 1
    else:
        stop_state[1] = 0
    stop_state[0] = min(stop_state[0], epoch_loss)
    return stop_state[1] >= n_iter_no_change


# the network kernels build on the pieces above (output_loss, apply_update, ...)
from .numpy_network import (  # noqa: E402
    network_loss_and_gradient,
    network_predict,
    network_train_epochs,
)

__all__ = [
    "NAME",
    "loss_and_gradient",
    "train_epochs",
    "network_loss_and_gradient",
    "network_predict",
    "network_train_epochs",
]
