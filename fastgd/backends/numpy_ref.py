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


def loss_and_gradient(X, Y, params, loss_code, n_outputs, fit_intercept):
    """Mean loss over the rows of ``X`` and its gradient with respect to ``params``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Samples.
    Y : ndarray of shape (n, m)
        Targets: ``m = k`` regression targets for MSE, otherwise one column holding the
        label (0/1 for binary cross-entropy, the class index for categorical).
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
        The mean per-sample loss.
    grad : ndarray of shape (d * k + k,)
        Its gradient, same dtype as ``params``.
    """
    n, d = X.shape
    k = n_outputs
    W = params[: d * k].reshape(d, k)
    b = params[d * k :]
    Z = X @ W + b
    if loss_code == losses.MSE:
        R = Z - Y
        loss = np.mean(R * R)
        dZ = (2.0 / k) * R
    elif loss_code == losses.BINARY_CROSS_ENTROPY:
        z, y = Z[:, 0], Y[:, 0]
        # log(1 + exp(z)) - y z, without overflow for large |z|
        loss = np.mean(np.logaddexp(0.0, z) - y * z)
        dZ = (_stable_sigmoid(z) - y)[:, None]
    elif loss_code == losses.CATEGORICAL_CROSS_ENTROPY:
        labels = Y[:, 0].astype(np.intp)
        rows = np.arange(n)
        m = Z.max(axis=1)
        E = np.exp(Z - m[:, None])
        s = E.sum(axis=1)
        loss = np.mean(m + np.log(s) - Z[rows, labels])
        dZ = E / s[:, None]
        dZ[rows, labels] -= 1.0
    else:
        raise ValueError(f"unknown loss code {loss_code}")
    dZ = dZ.astype(params.dtype, copy=False) / n
    grad = np.empty_like(params)
    grad[: d * k] = (X.T @ dZ).ravel()
    grad[d * k :] = dZ.sum(axis=0) if fit_intercept else 0.0
    return float(loss), grad


def train_epochs(
    X,
    Y,
    params,
    orders,
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
    X, Y : ndarray
        Samples (n, d) and targets (n, m), as in :func:`loss_and_gradient`.
    params : ndarray of shape (n_params,)
        Flat parameters, updated in place.
    orders : ndarray of shape (n_blocks, n) or (0, 0), int64
        Row order of each epoch: epoch ``e`` visits ``orders[e % n_blocks]``. An empty
        array means the natural order ``0..n-1`` in every epoch.
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
        Its hyperparameters, at the positions named in :mod:`fastgd.specs.optimizers`.
    opt_state : ndarray of shape (n_rows, n_params)
        Its state (momentum buffers, moments), same dtype as params, updated in place.
    step_count : ndarray of shape (1,), int64
        Updates made so far (Adam's bias correction), updated in place.
    tol, n_iter_no_change : float, int
        The tolerance stopping rule (see :mod:`fastgd.specs.stopping`).
    stop_state : ndarray of shape (2,), float64
        ``[best_loss, n_no_change]``, updated in place so the rule spans calls.
    history : ndarray of shape (>= n_epochs,), float64
        Receives the loss of each epoch: the mean over all samples of the loss each saw
        in its mini-batch, before that batch's update.
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
            X, Y, params, orders, n_epochs, loss_code, n_outputs, fit_intercept, batch_size,
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


def optimizer_step(params, grad, n_trained, opt_code, hyper, state, t):
    """Apply update number ``t`` (1-based) of an optimizer to ``params[:n_trained]``.

    The formulas are written out in :mod:`fastgd.specs.optimizers` (those of torch.optim).
    ``state`` rows are updated in place; entries past ``n_trained`` (untrained intercepts)
    are left alone.
    """
    p = params[:n_trained]
    g = grad[:n_trained]
    lr = hyper[opt.LR]
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
    X, Y, params, orders, n_epochs, loss_code, n_outputs, fit_intercept, batch_size, opt_code,
    hyper, opt_state, step_count, tol, n_iter_no_change, stop_state, history,
):  # fmt: skip
    n, d = X.shape
    n_trained = params.size if fit_intercept else d * n_outputs
    shuffled = orders.shape[0] > 0
    for epoch in range(n_epochs):
        start_params, start_state, start_step = params.copy(), opt_state.copy(), step_count[0]
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if shuffled:
                rows = orders[epoch % orders.shape[0], start:stop]
                Xb, Yb = X[rows], Y[rows]
            else:
                Xb, Yb = X[start:stop], Y[start:stop]
            loss, grad = loss_and_gradient(Xb, Yb, params, loss_code, n_outputs, fit_intercept)
            loss_sum += loss * (stop - start)
            step_count[0] += 1
            clip_gradient(grad, n_trained, hyper)
            optimizer_step(params, grad, n_trained, opt_code, hyper, opt_state, step_count[0])
        epoch_loss = loss_sum / n
        history[epoch] = epoch_loss
        if not (np.isfinite(epoch_loss) and np.all(np.isfinite(params))):
            params[:], opt_state[:], step_count[0] = start_params, start_state, start_step
            return epoch + 1, stopping.DIVERGED
        if epoch_loss > stop_state[0] - tol:
            stop_state[1] += 1
        else:
            stop_state[1] = 0
        stop_state[0] = min(stop_state[0], epoch_loss)
        if stop_state[1] >= n_iter_no_change:
            return epoch + 1, stopping.CONVERGED
    return n_epochs, stopping.MAX_EPOCHS
