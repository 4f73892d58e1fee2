"""``fastgd.fit``: a short pipeline from the user's arguments to a :class:`FitResult`.

options -> problem (data, model spec, validation split) -> initial state -> trainer
(epoch blocks, observers) -> result. Each step lives in :mod:`fastgd.training`.
"""

import functools

from ._validation import check_finite_after
from .backends import get_backend
from .distributed import is_dask_collection
from .network import MLP
from .recurrent import RNN
from .specs.optimizers import SECOND_ORDER
from .training import observers as obs
from .training.options import resolve_options
from .training.problem import check_model, check_sparse_support, initial_state, prepare_problem
from .training.report import (
    DivergenceError,
    DivergenceWarning,
    InterruptedWarning,
    finish,
    snapshot,
)
from .training.solvers import solve
from .training.trainer import train

__all__ = ["fit", "DivergenceError", "DivergenceWarning", "InterruptedWarning"]


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
    classes=None,
    sync_every=None,
    lengths=None,
):
    """Train a model by gradient descent, with the training loop in compiled code.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,), or scipy.sparse matrix
        Training samples; a 1-D array is one feature. float32 trains in float32, float64
        in float64, other numeric types are converted once to float64. The array is never
        modified, and not copied if it is already C-contiguous float32/float64.
        A ``scipy.sparse`` CSR matrix or array (``csr_matrix``, ``csr_array``) trains the
        linear family and networks on every backend without being densified or copied
        (float32/float64 values, int32 or int64 indices; unsorted or repeated column
        indices are read as the dense matrix they stand for); other sparse formats are
        converted once to CSR (a copy: O(nnz) time and memory). See
        :func:`fastgd._validation.check_sparse`.
        Cost with sparse rows: plain SGD at ``batch_size=1`` (with or without an L2
        penalty) costs O(non-zeros of the row) per update, through a scale factor on the
        weights; every other setting keeps the dense semantics (each parameter and
        optimizer-state entry, e.g. Adam's moments, is updated at every step, as on the
        dense matrix), so it touches the ``n_features * n_outputs`` parameters and their
        optimizer state once per mini-batch, plus O(non-zeros) for the batch's rows.
        A network's first layer on sparse rows is a sparse x dense product, O(non-zeros
        x width) forward, and its weight gradient a scatter over the same entries; its
        ``n_features x width`` weights and their optimizer state are updated once per
        mini-batch (dense semantics, as above). Newton's method does not take sparse X.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Regression targets, or class labels of any values for classifiers.
    model : {"linear", "logistic", "softmax"}, fastgd.MLP or fastgd.RNN
        ``"linear"``: least squares (mean squared error, one or several targets).
        ``"logistic"``: binary logistic regression (cross-entropy), two classes.
        ``"softmax"``: multinomial logistic regression (cross-entropy), two or more classes.
        ``fastgd.MLP(hidden=(128, 64), activation="relu", batch_norm=False, init="he")``:
        a multi-layer perceptron whose output layer and loss follow its ``task`` and the
        targets (see :class:`fastgd.MLP`); its weights are initialized with ``seed``. The
        per-layer gradient norms are recorded, and vanishing or exploding gradients are
        reported with a :class:`fastgd.GradientWarning`.
        ``fastgd.RNN(cell="lstm", hidden=64)``: a recurrent network (LSTM, GRU or tanh RNN)
        over ``X`` of shape (n_samples, n_steps, n_features), trained by backpropagation
        through time (see :class:`fastgd.RNN`).
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
        ``"newton"`` (linear family) and ``"lbfgs"`` (every model), or
        ``fastgd.optim.Newton(...)`` / ``fastgd.optim.LBFGS(history=10, ...)``, are
        full-batch second-order solvers: ``epochs`` is then the maximum number of
        iterations, ``batch_size``, ``shuffle`` and schedules do not apply, the penalty
        may only be L2, and ``result.gradient_norm`` is the final ``max|gradient|``
        (see :mod:`fastgd.training.solvers`).
    shuffle : bool or {"rows", "blocks"}, default True
        The row order of each epoch (ignored for full batches). ``True`` or ``"rows"``:
        a new random permutation of the rows. ``"blocks"``: a new random permutation of
        blocks of 32 consecutive rows (``fastgd._config.SHUFFLE_BLOCK_ROWS``; the last
        block is shorter when 32 does not divide the rows), the rows of each block visited
        in order; mini-batches are then cut from that order as usual. ``False``: rows in
        their stored order.
        ``"blocks"`` reads the rows of X in runs, so arrays larger than the caches train
        about 3x faster than with ``"rows"``, nearly as fast as in order (README,
        "Performance"). Its statistical effect depends on how the rows are stored:
        stored in random order (e.g. shuffled once beforehand), a block is a random
        sample of the rows, so batches are as random as with ``"rows"`` and training
        behaves the same (measured: same loss and accuracy within the seeds' spread).
        Stored sorted (by label, time or source), a batch of B rows holds about B / 32
        runs of neighbours, so its gradient varies more from batch to batch (measured
        7-9x the squared spread of row shuffling on data sorted by label) and results
        vary more between seeds, though each epoch still sees the runs in a new random
        order (unlike ``False``). On Dask input (local SGD) each chunk draws its order so.
    seed : int or None
        Seed of the shuffling; the same seed gives the same batches on every backend.
    tol : float or None, default None
        Stop when the epoch loss has not fallen below ``best_loss - tol`` for
        ``n_iter_no_change`` epochs in a row; ``None`` runs all ``epochs``. Newton and
        L-BFGS: the gradient tolerance (``None``: the optimizer object's ``tol``).
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
        ``callback(epoch, info)`` after every epoch, with ``info`` a dict holding ``loss``,
        a copy of ``params`` and ``result``, a :class:`FitResult` of the training so far
        (a checkpoint: ``fastgd.save`` it, resume with ``init=``; or pass
        ``callback=fastgd.Checkpoint(path)``); returning ``True`` stops training
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
    classes : array-like, optional
        Classifiers: every class label the model has outputs for, when y may not hold all
        of them (a chunk of data arriving in pieces); default: the labels found in y.
    sync_every : int, optional
        Dask input with mini-batches: average the workers' parameters after this many
        batches of every chunk (default: after every epoch). See "Dask input" below.
    lengths : array-like of int, shape (n_samples,), optional
        Recurrent models: the valid steps of each sequence, in ``[1, n_steps]``; the steps
        after them are padding, which never changes the result. Default: all steps.
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

    Notes
    -----
    **Ctrl-C.** A ``KeyboardInterrupt`` (SIGINT) while ``fit`` trains in the main thread
    stops training at the end of the current mini-batch (Newton, L-BFGS: iteration) and
    returns the result so far with ``stop_reason == "interrupted"`` and an
    :class:`InterruptedWarning`; its parameters and optimizer state are those after the
    last whole update, so ``fit(..., init=result)`` resumes from them. A second Ctrl-C
    raises ``KeyboardInterrupt``.

    **Dask input.** ``X`` may be a ``dask.array`` chunked by rows (one chunk along the
    columns) or a ``dask.dataframe``; ``y`` and ``sample_weight`` a Dask or NumPy array
    of the same length. Training runs on the current ``distributed.Client`` (else Dask's
    local scheduler) with the chunks kept in worker memory. Full-batch methods
    (``batch_size=None``, ``"lbfgs"``, ``"newton"``) give the single-machine fit of the
    concatenated rows: the chunks' losses and gradients (and Hessians) are summed in a
    fixed order, the update is made on the driver. Mini-batches train by local SGD: each
    chunk runs the compiled epoch loop from the current parameters, and the parameters,
    running averages and optimizer state are averaged, weighted by rows, after every epoch
    (or ``sync_every`` batches); reproducible for a fixed chunking and seed, but not the
    single-machine mini-batch path. ``result.distributed`` holds the compute and
    communication times. ``early_stopping`` is not supported there.

    Examples
    --------
    >>> import numpy as np, fastgd
    >>> X = np.linspace(-1, 1, 100)
    >>> y = 2 * X + 1 + 0.1 * np.random.default_rng(0).standard_normal(100)
    >>> result = fastgd.fit(X, y, batch_size=None, epochs=1000, lr=0.5)
    >>> round(float(result.coef_[0]), 1), round(result.intercept_, 1)
    (2.0, 1.0)
    """
    arguments = dict(locals())  # fit's arguments by name, read by the steps below
    if any(map(is_dask_collection, (X, y, sample_weight))):
        from .distributed.fit import fit_dask  # imports Dask: only for Dask input

        return fit_dask(arguments)
    if sync_every is not None:
        raise ValueError("sync_every applies to Dask input only (local SGD across chunks)")
    check_model(model)
    backend = get_backend(backend)
    problem = prepare_problem(X, y, model, arguments)
    options = resolve_options(arguments, problem.n_train, backend)
    check_sparse_support(problem, options.optimizer.code)
    if options.batch_size == 1 and any(getattr(problem.spec, "batch_norm", ())):
        raise ValueError(
            "batch normalization needs batches of at least 2 samples; got batch_size=1"
        )
    state = initial_state(problem, options.optimizer, seed, init)
    rates = options.schedule.start(options.optimizer.lr)
    observers = obs.make_observers(
        problem, options, rates, functools.partial(snapshot, problem, options, backend.name)
    )
    if options.optimizer.code in SECOND_ORDER:  # Newton, L-BFGS: full-batch solvers
        run = solve(backend, problem, options, state, observers)
    else:
        run = train(backend, problem, options, state, rates, observers)
    if problem.unchecked is not None:  # X's NaN/inf check, deferred to here (see its doc)
        check_finite_after(problem.unchecked, run.history[: run.done], run.stop_reason)
    return finish(
        problem, options, run, backend, observers, model if isinstance(model, (MLP, RNN)) else None
    )
