"""``fastgd.fit``: validate once, build the model spec, pick a backend, run, wrap the result."""

import os
import time
import warnings

import numpy as np

from . import _validation as v
from ._pandas import frames_to_arrays
from .backends import get_backend
from .backends.numpy_ref import output_loss
from .diagnostics import GradientWarning, diagnose_gradients
from .network import MLP
from .optim import make_optimizer
from .result import FitResult
from .schedules import make_schedule
from .specs import stopping
from .specs.models import LINEAR_MODELS, LinearModelSpec
from .specs.optimizers import CLIP_NORM, CLIP_VALUE, L1, L2, POWER_T

# early stopping is decided in Python, between kernel calls
EARLY_STOPPED = -1
REASONS = {**stopping.REASONS, EARLY_STOPPED: "early_stopping"}

# Shuffled row orders are drawn in Python (NumPy's generator, so every backend sees the
# same batches) and handed to the kernel for a block of epochs at a time; this bounds the
# int64 entries held at once (32 MB).
ORDER_BUDGET = 4_000_000


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss or the parameters became NaN or infinite."""


class DivergenceError(FloatingPointError):
    """Raised instead of :class:`DivergenceWarning` when ``on_divergence="raise"``."""


def _max_threads():
    try:
        import numba

        return numba.config.NUMBA_NUM_THREADS
    except ImportError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fit(
    X,
    y,
    model="linear",
    *,
    fit_intercept=True,
    batch_size=32,
    epochs=100,
    lr=None,
    optimizer="sgd",
    shuffle=True,
    seed=None,
    tol=None,
    n_iter_no_change=5,
    backend="auto",
    n_threads=None,
    verbose=False,
    on_divergence="warn",
    clip_value=None,
    clip_norm=None,
    callback=None,
    init=None,
    early_stopping=False,
    validation_fraction=0.1,
    progress=False,
    sample_weight=None,
    penalty=None,
    alpha=1e-4,
    l1_ratio=0.15,
):
    """Train a model by gradient descent, with the training loop in compiled code.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        Training samples; a 1-D array is one feature. float32 trains in float32, float64
        in float64, other numeric types are converted once to float64. The array is never
        modified, and not copied if it is already C-contiguous float32/float64.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Regression targets, or class labels of any values for classifiers.
    model : {"linear", "logistic", "softmax"} or fastgd.MLP
        ``"linear"``: least squares (mean squared error, one or several targets).
        ``"logistic"``: binary logistic regression (cross-entropy), two classes.
        ``"softmax"``: multinomial logistic regression (cross-entropy), two or more classes.
        ``fastgd.MLP(hidden=(128, 64), activation="relu", batch_norm=False, init="he")``:
        a multi-layer perceptron whose output layer and loss follow its ``task`` and the
        targets (see :class:`fastgd.MLP`); its weights are initialized with ``seed``. The
        per-layer gradient norms are recorded, and vanishing or exploding gradients are
        reported with a :class:`fastgd.GradientWarning`.
    fit_intercept : bool, default True
        Whether to learn an intercept per output (networks always train their biases).
    batch_size : int or None, default 32
        Samples per update: ``None`` is full-batch gradient descent, ``1`` per-sample SGD,
        anything between mini-batch SGD (values above n_samples mean full batch).
    epochs : int, default 100
        Maximum number of passes over the data.
    lr : float, str or fastgd.schedules.LRSchedule, optional
        Learning rate (default: the optimizer's own, 0.01 for SGD), or a schedule: an
        object of :mod:`fastgd.schedules` (``StepDecay``, ``ExponentialDecay``,
        ``CosineAnnealing``, ``InverseScaling``, ``Warmup``, ``ReduceOnPlateau``) or one
        of the names ``"constant"``, ``"invscaling"``, ``"cosine"`` (over all ``epochs``),
        ``"plateau"`` with default settings. Rates per epoch are evaluated in Python and
        handed to the compiled loop; ``result.lr_history`` records them.
    optimizer : str or fastgd.optim.Optimizer, default "sgd"
        ``"sgd"`` (plain: ``params -= lr * mean gradient of the batch``), ``"adagrad"``,
        ``"rmsprop"``, ``"adam"``, ``"adamw"`` with the defaults of ``torch.optim``, or an
        object such as ``fastgd.optim.Adam(lr=1e-3, betas=(0.9, 0.999))`` for other
        hyperparameters. The update runs inside the compiled loop on every backend.
    shuffle : bool, default True
        Visit the rows in a new random order each epoch (ignored for full batches).
    seed : int or None
        Seed of the shuffling; the same seed gives the same batches on every backend.
    tol : float or None, default None
        Stop when the epoch loss has not fallen below ``best_loss - tol`` for
        ``n_iter_no_change`` epochs in a row; ``None`` runs all ``epochs``.
    n_iter_no_change : int, default 5
        See ``tol``.
    backend : {"auto", "numba", "cython", "numpy"}
        Which implementation runs the loop; ``"auto"`` is ``FASTGD_BACKEND`` if set, else
        Numba, else Cython, else NumPy.
    n_threads : int or None
        Threads for the compiled kernels (default: all, as Numba sees them). Results do not
        depend on it.
    verbose : bool or int, default False
        Print ``Epoch: e, Loss: ...`` every epoch (``True``) or every ``verbose`` epochs.
    on_divergence : {"warn", "raise"}
        What to do when the loss becomes NaN/inf: warn and return the last finite
        parameters (``result.stop_reason == "diverged"``), or raise ``DivergenceError``.
    clip_value : float, optional
        Clamp every entry of the mean gradient to ``[-clip_value, clip_value]`` before the
        update (``torch.nn.utils.clip_grad_value_``).
    clip_norm : float, optional
        Then scale the gradient by ``clip_norm / (norm + 1e-6)`` when that is below 1,
        ``norm`` being its Euclidean norm (``torch.nn.utils.clip_grad_norm_``).
    callback : callable, optional
        ``callback(epoch, info)`` after every epoch, with ``info`` a dict holding ``loss``
        and a copy of ``params``; returning ``True`` stops training
        (``stop_reason == "callback"``). Epochs then run one kernel call each.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the rows (chosen with ``seed``), compute the
        validation loss after every epoch, stop when it has not fallen below
        ``best - tol`` (``tol`` None counts as 0) for ``n_iter_no_change`` epochs, and
        return the parameters of the best validation epoch. The training-loss rule is
        then off. Epochs run one kernel call each.
    validation_fraction : float, default 0.1
        Share of rows held out for early stopping, in (0, 1).
    progress : bool, default False
        Show a progress bar over the epochs with the current loss (needs the optional
        dependency tqdm: ``pip install "fastgd[progress]"``). Epochs then run one kernel
        call each.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weight of each sample in the loss and its gradient. Weights are
        rescaled to mean 1, so ``lr`` keeps its meaning; a weight of 2 counts a sample as
        two copies of it (exactly so for full batches).
    penalty : {None, "l2", "l1", "elasticnet"}, default None
        Adds ``alpha * (l1_ratio * sum|w| + (1 - l1_ratio) / 2 * sum w**2)`` on the weights
        (not the intercepts) to the objective; ``"l2"`` and ``"l1"`` fix ``l1_ratio`` to 0
        and 1. The L2 part enters the gradient; the L1 part is a proximal step after each
        update (soft-thresholding by ``lr_t * alpha * l1_ratio``), so irrelevant weights
        become exactly 0. The loss history includes the penalty.
    alpha : float, default 1e-4
        Strength of the penalty, ``>= 0``.
    l1_ratio : float, default 0.15
        Share of L1 in ``"elasticnet"``, in [0, 1].
    init : FitResult, optional
        Warm start: continue from its parameters, and from its optimizer state and update
        count when the optimizer is of the same kind. It must come from the same model
        (family, features, outputs, intercept, classes).

    Returns
    -------
    FitResult
        Parameters (``coef_``, ``intercept_``), loss history, epochs run, stop reason,
        backend, timings, and ``predict``/``predict_proba``.

    Raises
    ------
    ValueError
        For invalid data or arguments, with a message naming the problem.

    Examples
    --------
    >>> import numpy as np, fastgd
    >>> X = np.linspace(-1, 1, 100)
    >>> y = 2 * X + 1 + 0.1 * np.random.default_rng(0).standard_normal(100)
    >>> result = fastgd.fit(X, y, batch_size=None, epochs=1000, lr=0.5)
    >>> round(float(result.coef_[0]), 1), round(result.intercept_, 1)
    (2.0, 1.0)
    """
    X, y, feature_names = frames_to_arrays(X, y)  # pandas: arrays and column names
    is_network = isinstance(model, MLP)
    if not is_network and (not isinstance(model, str) or model not in LINEAR_MODELS):
        raise ValueError(
            f"model must be one of {', '.join(map(repr, LINEAR_MODELS))} or a fastgd.MLP; "
            f"got {model!r}"
        )
    backend_module = get_backend(backend)
    X = v.check_features(X)
    n, d = X.shape
    if is_network:
        target_kind = "linear" if model.task == "regression" else "softmax"
        Y, classes = v.check_targets(y, n, target_kind, X.dtype)
        _check_network_labels(y, classes)
    else:
        Y, classes = v.check_targets(y, n, model, X.dtype)
    weights = v.check_sample_weight(sample_weight, n, X.dtype)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"seed must be None or an integer; got {seed!r}")
    validation_rows = None
    if early_stopping:
        validation_rows = _validation_split(n, validation_fraction, seed)
        train_rows = np.setdiff1d(np.arange(n), validation_rows)
        X_val, Y_val = X[validation_rows], Y[validation_rows]
        X, Y = X[train_rows], Y[train_rows]
        n = len(train_rows)
        if weights.size:
            weights_val = _mean_one(weights[validation_rows], "the held-out validation rows")
            weights = weights[train_rows]
        else:
            weights_val = weights
    if weights.size:
        weights = _mean_one(weights, "the training rows")
    epochs = v.check_positive_int(epochs, "epochs")
    schedule, lr = make_schedule(lr, epochs)
    opt = make_optimizer(optimizer, lr)
    l1, l2 = v.check_penalty(penalty, alpha, l1_ratio)
    batch_size = v.check_positive_int(batch_size, "batch_size", allow_none=True)
    batch_size = n if batch_size is None else min(batch_size, n)
    tol = v.check_tol(tol)
    validation_tol = max(tol, 0.0)
    if early_stopping:
        tol = -np.inf  # the kernel's training-loss rule is replaced by the validation rule
    n_iter_no_change = v.check_positive_int(n_iter_no_change, "n_iter_no_change")
    v.check_choice(on_divergence, "on_divergence", ("warn", "raise"))
    max_threads = _max_threads()
    n_threads = v.check_positive_int(n_threads, "n_threads", allow_none=True) or max_threads
    if n_threads > max_threads:
        raise ValueError(
            f"n_threads={n_threads} exceeds the {max_threads} threads available "
            "(NUMBA_NUM_THREADS / CPUs of this process)"
        )
    if not isinstance(verbose, (bool, int, np.integer)) or verbose < 0:
        raise ValueError(f"verbose must be a bool or a non-negative integer; got {verbose!r}")
    print_every = int(verbose)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable; got {callback!r}")

    if is_network:
        spec = model.spec(d, Y.shape[1], None if classes is None else len(classes))
        params, running = spec.init_params(X.dtype, seed)
        if batch_size == 1 and any(spec.batch_norm):
            raise ValueError(
                "batch normalization needs batches of at least 2 samples; got batch_size=1"
            )
    else:
        n_outputs = Y.shape[1] if model == "linear" else (1 if model == "logistic" else len(classes))  # fmt: skip
        spec = LinearModelSpec(model, d, n_outputs, bool(fit_intercept))
        params, running = spec.init_params(X.dtype), None
    n_outputs = spec.n_outputs
    hyper = opt.hyperparameters()
    for name, value, position in [("clip_value", clip_value, CLIP_VALUE), ("clip_norm", clip_norm, CLIP_NORM)]:  # fmt: skip
        if value is not None:
            hyper[position] = v.check_positive_float(value, name)
    hyper[L1], hyper[L2], hyper[POWER_T] = l1, l2, schedule.power_t
    rates = schedule.start(opt.lr)
    opt_state = opt.new_state(spec.n_params, X.dtype)
    step_count = np.zeros(1, dtype=np.int64)
    if init is not None:
        _warm_start(init, spec, classes, opt, params, running, opt_state, step_count)
    shuffled = shuffle and batch_size < n
    rng = np.random.default_rng(seed)
    no_orders = np.empty((0, 0), dtype=np.int64)
    history = np.empty(epochs, dtype=np.float64)
    stop_state = stopping.new_stop_state()

    lr_history = np.empty(epochs, dtype=np.float64)

    grad_norms = np.zeros((epochs, spec.n_layers) if is_network else (0, 0))

    def run(n_epochs, orders, history_view, lr_view, first_epoch=0):
        if is_network:
            return backend_module.network_train_epochs(
                X, Y, weights, params, running, orders, lr_view, n_epochs,
                *spec.kernel_arguments(), spec.loss_code, batch_size, opt.code, hyper, opt_state,
                step_count, tol, n_iter_no_change, stop_state, history_view,
                grad_norms[first_epoch:], n_threads,
            )  # fmt: skip
        return backend_module.train_epochs(
            X, Y, weights, params, orders, lr_view, n_epochs, spec.loss_code, n_outputs,
            spec.fit_intercept, batch_size, opt.code, hyper, opt_state, step_count, tol,
            n_iter_no_change, stop_state, history_view, n_threads,
        )  # fmt: skip

    def validation_loss():
        if is_network:
            Z = backend_module.network_predict(X_val, params, running, *spec.kernel_arguments())
            return output_loss(Z, Y_val, weights_val, spec.loss_code)[0]
        loss, _ = backend_module.loss_and_gradient(
            X_val, Y_val, weights_val, params, spec.loss_code, n_outputs, spec.fit_intercept
        )
        return loss

    # A zero-epoch call compiles (or loads from the on-disk cache) the kernels for exactly
    # these argument types, so compilation is timed apart from training.
    started = time.perf_counter()
    run(0, no_orders, history, lr_history)
    compile_time = time.perf_counter() - started

    # Epochs run in blocks: as many as the order budget allows (all of them when nothing
    # is shuffled), cut to the printing interval when verbose.
    block = max(1, ORDER_BUDGET // n) if shuffled else epochs
    if print_every:
        block = min(block, print_every)
    bar = _progress_bar(epochs) if progress else None
    if callback is not None or early_stopping or bar is not None or rates.adaptive:
        block = 1
    validation_history, best = [], None
    done, status, stopped_by_callback = 0, stopping.MAX_EPOCHS, False
    started = time.perf_counter()
    while done < epochs and status == stopping.MAX_EPOCHS and not stopped_by_callback:
        count = min(block, epochs - done)
        orders = np.stack([rng.permutation(n) for _ in range(count)]) if shuffled else no_orders
        lr_history[done : done + count] = rates.rates(done, count)
        ran, status = run(count, orders, history[done:], lr_history[done:], done)
        if print_every:
            for epoch in range(done, done + ran):
                if epoch % print_every == 0:
                    print(f"Epoch: {epoch}, Loss: {history[epoch]:.6g}")
        done += ran
        if bar is not None:
            bar.update(ran)
            bar.set_postfix(loss=f"{history[done - 1]:.4g}")
        if early_stopping and status != stopping.DIVERGED:
            loss = validation_loss()
            validation_history.append(loss)
            if best is None or loss < best["loss"] - validation_tol:
                best = dict(loss=loss, epoch=done - 1, params=params.copy(),
                            running=None if running is None else running.copy(),
                            state=opt_state.copy(), step=int(step_count[0]), no_change=0)  # fmt: skip
            else:
                best["no_change"] += 1
                if best["no_change"] >= n_iter_no_change:
                    status = EARLY_STOPPED
        if rates.adaptive and status != stopping.DIVERGED:
            rates.observe(validation_history[-1] if early_stopping else history[done - 1])
        if callback is not None and status != stopping.DIVERGED:
            info = {"loss": float(history[done - 1]), "params": params.copy()}
            stopped_by_callback = bool(callback(done - 1, info))
    train_time = time.perf_counter() - started
    if bar is not None:
        bar.close()
    if best is not None:  # early stopping returns the best validation epoch's parameters
        params[:], opt_state[:], step_count[0] = best["params"], best["state"], best["step"]
        if running is not None:
            running[:] = best["running"]
    if print_every and (done - 1) % print_every != 0:
        print(f"Epoch: {done - 1}, Loss: {history[done - 1]:.6g}")

    diagnosis, diagnosis_message = None, None
    if is_network:
        diagnosis, diagnosis_message = diagnose_gradients(
            grad_norms[:done], status == stopping.DIVERGED, model, opt.lr, hyper
        )
        if diagnosis is not None:
            warnings.warn(diagnosis_message, GradientWarning, stacklevel=2)

    if status == stopping.DIVERGED:
        message = (
            f"training diverged at epoch {done - 1}: the loss became {history[done - 1]} "
            f"(or a parameter became NaN/inf) with lr={opt.lr:g}. The last finite parameters, "
            f"{f'from the end of epoch {done - 2}' if done > 1 else 'the initial ones'}, were kept. "
            "Try a smaller learning rate, or standardize the features."
        )
        if on_divergence == "raise":
            raise DivergenceError(message)
        warnings.warn(message, DivergenceWarning, stacklevel=2)

    return FitResult(
        model=spec,
        params=params,
        classes_=classes,
        loss_history=history[:done].copy(),
        lr_history=lr_history[:done].copy(),
        n_epochs=done,
        stop_reason="callback" if stopped_by_callback else REASONS[status],
        backend=backend_module.NAME,
        n_threads=n_threads,
        compile_time=compile_time,
        train_time=train_time,
        optimizer=opt,
        optimizer_state=opt_state,
        n_updates=int(step_count[0]),
        validation_loss_history=np.array(validation_history) if early_stopping else None,
        best_epoch=best["epoch"] if best is not None else None,
        validation_rows=validation_rows,
        running=running,
        gradient_norms=grad_norms[:done].copy() if is_network else None,
        gradient_diagnosis=diagnosis,
        gradient_message=diagnosis_message,
        _single_target=spec.task != "regression" or np.ndim(y) == 1,
        feature_names_in_=feature_names,
    )


def _mean_one(weights, rows):
    """Sample weights rescaled to mean 1 (the kernels average ``weight * loss`` over rows)."""
    mean = weights.mean(dtype=np.float64)
    if mean == 0.0:
        raise ValueError(f"sample_weight is zero on all of {rows}")
    return (weights / mean).astype(weights.dtype)


def _check_network_labels(y, classes):
    """A classifier network on float targets that are not whole numbers is a likely mistake."""
    labels = np.asarray(classes)
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError(
            "y holds non-integer float values, but MLP(task='classification') needs class "
            "labels; for a regression network use fastgd.MLP(..., task='regression')"
        )


def _warm_start(init, spec, classes, opt, params, running, opt_state, step_count):
    """Copy parameters (and optimizer state of the same kind) from an earlier FitResult."""
    if not isinstance(init, FitResult):
        raise ValueError(f"init must be a FitResult from fastgd.fit; got {type(init).__name__}")
    if init.model != spec:
        raise ValueError(f"init was fit for {init.model}, which does not match {spec}")
    if (init.classes_ is None) != (classes is None) or (
        classes is not None and not np.array_equal(init.classes_, classes)
    ):
        raise ValueError(f"init was fit on classes {init.classes_}, but y has {classes}")
    params[:] = init.params
    if running is not None:
        running[:] = init.running
    if type(init.optimizer) is type(opt) and init.optimizer_state is not None:
        opt_state[:] = init.optimizer_state
        step_count[0] = init.n_updates


def _validation_split(n, validation_fraction, seed):
    """Sorted indices of the rows held out for early stopping."""
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, (int, float, np.floating))
        or not 0.0 < validation_fraction < 1.0
    ):
        raise ValueError(f"validation_fraction must be in (0, 1); got {validation_fraction!r}")
    n_validation = int(np.ceil(validation_fraction * n))
    if n_validation >= n:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {n} samples leaves none to train on"
        )
    rng = np.random.default_rng(None if seed is None else [int(seed), 1])
    return np.sort(rng.permutation(n)[:n_validation])


def _progress_bar(epochs):
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ValueError(
            'progress=True needs tqdm, an optional dependency: pip install "fastgd[progress]"'
        ) from exc
    return tqdm(total=epochs, unit="epoch")
