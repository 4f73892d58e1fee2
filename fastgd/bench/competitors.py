"""Other libraries timed against fastgd on the same model, data, optimizer and batches.

Each competitor is a function ``run(case, X, y, *, batch_size, epochs, lr, seed, threads,
shuffle, evaluate=True)`` returning an :class:`Outcome`, or raising :class:`Unavailable`
when its library is not installed, :class:`NotApplicable` when it does not do this model or
batch size (scikit-learn's SGD estimators do batch size 1 only). Its ``seconds`` cover
building the model and training (``fit``), not the evaluation afterwards (skipped with
``evaluate=False``, which returns the time only). An outcome says how it can be checked
against fastgd:

- ``"params"``: same start, same updates, same row order: final parameters must agree
  (the linear family against scikit-learn's SGD without shuffling, and against PyTorch;
  networks against PyTorch, and against scikit-learn's MLP without shuffling: both are
  started from fastgd's own initial weights, :func:`network_start`).
- ``"loss"``: a different start or row order (scikit-learn shuffling with its own
  generator, a network fastgd's initialization cannot be given to): final training losses
  must agree.
- ``"accuracy"``: a different model (scikit-learn's one-vs-rest for softmax): training
  accuracies must agree.
"""

import importlib
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..training.orders import check_shuffle, epoch_order
from .models import label_indices


class Unavailable(Exception):
    """The competitor cannot run here: its library is not installed (reported)."""


class NotApplicable(Unavailable):
    """The competitor does not do this model or batch size (skipped silently)."""


@dataclass
class Outcome:
    """What a competitor's run produced.

    Attributes
    ----------
    seconds : float
        Wall time of building the model and training it.
    check : {"params", "loss", "accuracy", "none"}
        How it is compared with fastgd (see the module docstring); ``"none"`` when the run
        was not evaluated.
    params : ndarray or None
        Final parameters in fastgd's flat layout (``check == "params"``).
    outputs : ndarray or None
        Predictions (regression) or class probabilities on the training data.
    predicted : ndarray or None
        Predicted labels on the training data (classifiers).
    note : str
        How it differs from fastgd, if it does.
    """

    seconds: float
    check: str
    params: np.ndarray | None = None
    outputs: np.ndarray | None = None
    predicted: np.ndarray | None = None
    note: str = ""


def row_orders(n, epochs, batch_size, shuffle, seed):
    """The row order of each epoch, as ``fastgd.fit`` draws it (``None``: natural order).

    ``fastgd.fit`` shuffles only when ``shuffle`` and the batch is smaller than the data,
    with one :func:`fastgd.training.orders.epoch_order` per epoch in turn from
    ``numpy.random.default_rng(seed)``, so a competitor fed these orders makes exactly
    fastgd's updates.

    Parameters
    ----------
    n, epochs, batch_size : int
    shuffle : bool or {"rows", "blocks"}
    seed : int or None

    Yields
    ------
    ndarray of shape (n,) or None
        The order of each epoch in turn.
    """
    mode = check_shuffle(shuffle) if batch_size < n else None
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield None if mode is None else epoch_order(rng, n, mode)


def flat_params(weights, biases):
    """fastgd's flat parameter vector from per-layer weights and biases.

    The layout of the linear family (``[W (d, k) row-major, b (k)]``) and of a network
    without batch normalization (every ``W_l (n_in, n_out)`` row-major, then every ``b_l``;
    :mod:`fastgd.specs.network`).

    Parameters
    ----------
    weights : list of ndarray of shape (n_in, n_out)
    biases : list of ndarray of shape (n_out,)

    Returns
    -------
    ndarray
    """
    blocks = [np.asarray(w).ravel() for w in weights] + [np.ravel(b) for b in biases]
    return np.concatenate(blocks)


def network_start(case, X, y, seed):
    """fastgd's initial weights and biases of ``case``'s network on this data.

    Exactly what ``fastgd.fit(X, y, model=case.model, seed=seed)`` starts from
    (:meth:`fastgd.network.NetworkSpec.init_params`), so that a competitor started there
    and fed the same batches makes the same updates.

    Parameters
    ----------
    case : ModelCase
        A network (``case.model`` a :class:`fastgd.MLP`).
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    seed : int

    Returns
    -------
    weights : list of ndarray of shape (n_in, n_out), ``X.dtype``
    biases : list of ndarray of shape (n_out,), ``X.dtype``
        Fresh arrays, one per layer, the output layer last. ``None, None`` when the model
        has no fastgd spec (a custom ``fit``): the competitor then uses its own start.

    Raises
    ------
    NotApplicable
        For a network with batch normalization (not built on the other side).
    """
    if not hasattr(case.model, "spec"):
        return None, None
    n_classes = None if case.task == "regression" else len(np.unique(y))
    spec = case.model.spec(X.shape[1], 1, n_classes)
    if any(spec.batch_norm):
        raise NotApplicable("batch normalization is not built on this side")
    named = spec.named(*spec.init_params(X.dtype, seed))
    layers = range(1, spec.n_layers + 1)
    weights = [named[f"dense{i}.weight"].copy() for i in layers]
    biases = [named[f"dense{i}.bias"].copy() for i in layers]
    return weights, biases


def _import(module, library, install):
    """Import ``module``, or raise :class:`Unavailable` naming how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{library} is not installed ({install})") from exc


def _sklearn(module):
    return _import(f"sklearn.{module}", "scikit-learn", 'pip install "fastgd[bench]"')


def _timed_fit(model, X, y):
    """Seconds of ``model.fit(X, y)`` (convergence warnings silenced: epochs are fixed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - started


def _outputs(case, model, X):
    """Predictions (regression) or class probabilities of a fitted scikit-learn model."""
    return model.predict(X) if case.task == "regression" else model.predict_proba(X)


def _outcome(seconds, params, outputs, own_order=False):
    """Parameters checked when the start and row order are fastgd's, else the loss."""
    if own_order:
        return Outcome(seconds, "loss", outputs=outputs, note="its own row order")
    if params is None:
        return Outcome(seconds, "loss", outputs=outputs, note="its own initialization")
    return Outcome(seconds, "params", params=params, outputs=outputs)


def run_sklearn_sgd(case, X, y, *, batch_size, epochs, lr, seed, threads, shuffle, evaluate=True):
    """scikit-learn's ``SGDRegressor`` / ``SGDClassifier``: per-sample SGD, constant rate.

    Same updates as fastgd's plain SGD at batch size 1 (no penalty, constant rate, zero
    start, ``tol=None`` so all epochs run): its squared loss is ``(p - y)**2 / 2``, so
    ``eta0 = 2 lr`` for regression. Without shuffling both visit the rows in order and the
    parameters are checked; with shuffling scikit-learn draws its own order and the loss is
    checked. For more than two classes it trains one binary classifier per class
    (one-vs-rest, over ``threads`` jobs), a different model from softmax regression:
    accuracies are checked.

    Parameters
    ----------
    case : ModelCase
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    batch_size : int or None
        ``None`` is full batch.
    epochs : int
    lr : float
    seed : int
    threads : int
    shuffle : bool or {"rows", "blocks"}
        Any shuffling: scikit-learn draws its own per-row order.
    evaluate : bool, default True
        Also compute what the check needs (parameters, predictions).

    Returns
    -------
    Outcome
    """
    if not case.linear:
        raise NotApplicable("scikit-learn's SGD estimators are linear models")
    if batch_size != 1:
        raise NotApplicable("scikit-learn's SGD estimators do batch size 1 only")
    linear_model = _sklearn("linear_model")
    common = dict(penalty=None, learning_rate="constant", max_iter=epochs, tol=None,
                  shuffle=bool(shuffle), random_state=seed)  # fmt: skip
    if case.task == "regression":
        model = linear_model.SGDRegressor(loss="squared_error", eta0=2 * lr, **common)
    else:
        model = linear_model.SGDClassifier(loss="log_loss", eta0=lr, n_jobs=threads, **common)
    seconds = _timed_fit(model, X, y)
    if not evaluate:
        return Outcome(seconds, "none")
    if case.task == "multiclass":
        return Outcome(seconds, "accuracy", predicted=model.predict(X),
                       note="one-vs-rest: a different model")  # fmt: skip
    params = flat_params([np.atleast_2d(model.coef_).T], [model.intercept_])
    return _outcome(seconds, params, _outputs(case, model, X), own_order=bool(shuffle))


# fastgd's activation names in scikit-learn's MLP estimators
SKLEARN_ACTIVATIONS = {"identity": "identity", "relu": "relu", "tanh": "tanh", "sigmoid": "logistic"}  # fmt: skip


def run_sklearn_mlp(case, X, y, *, batch_size, epochs, lr, seed, threads, shuffle, evaluate=True):
    """scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` with plain SGD.

    Same layers, activation, loss, batch size, learning rate and epochs (no momentum, no
    penalty, no early stopping), and started from fastgd's initial weights
    (:func:`network_start`, put in place of scikit-learn's own initialization). Without
    shuffling it visits the rows in fastgd's order too, so the parameters are checked;
    with shuffling it draws its own order and the final training loss is checked. Its
    threads are BLAS threads (pinned by the suite).

    Parameters
    ----------
    case : ModelCase
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    batch_size : int or None
        ``None`` is full batch.
    epochs : int
    lr : float
    seed : int
    threads : int
    shuffle : bool or {"rows", "blocks"}
        Any shuffling: scikit-learn draws its own per-row order.
    evaluate : bool, default True
        Also compute what the check needs (parameters, predictions).

    Returns
    -------
    Outcome
    """
    if case.linear:
        raise NotApplicable("scikit-learn's MLP estimators are for models with hidden layers")
    if case.activation not in SKLEARN_ACTIVATIONS:
        raise NotApplicable(f"scikit-learn's MLP estimators have no {case.activation!r}")
    neural_network = _sklearn("neural_network")
    n = X.shape[0]
    regression = case.task == "regression"
    estimator = neural_network.MLPRegressor if regression else neural_network.MLPClassifier
    weights, biases = network_start(case, X, y, seed)
    if weights is not None:
        estimator = _started_at(estimator, weights, biases)
    model = estimator(
        hidden_layer_sizes=case.hidden, activation=SKLEARN_ACTIVATIONS[case.activation],
        solver="sgd", alpha=0.0, batch_size=n if batch_size is None else min(batch_size, n),
        learning_rate="constant",
        # its squared loss is (p - y)**2 / 2: twice the rate makes fastgd's MSE updates
        learning_rate_init=2 * lr if regression else lr, momentum=0.0, nesterovs_momentum=False,
        max_iter=epochs, shuffle=bool(shuffle), random_state=seed, tol=0.0,
        n_iter_no_change=epochs + 1, early_stopping=False,
    )  # fmt: skip
    seconds = _timed_fit(model, X, y)
    if not evaluate:
        return Outcome(seconds, "none")
    params = None if weights is None else flat_params(model.coefs_, model.intercepts_)
    return _outcome(seconds, params, _outputs(case, model, X), own_order=bool(shuffle))


def _started_at(estimator, weights, biases):
    """A subclass of a scikit-learn MLP estimator that starts from the given weights.

    scikit-learn has no public way to give initial weights; its ``_initialize(y,
    layer_units, dtype)`` (called once at the start of ``fit``) sets up the attributes and
    draws the weights, which are then replaced here by copies of ours.
    """

    class Started(estimator):
        def _initialize(self, y, layer_units, dtype):
            super()._initialize(y, layer_units, dtype)
            self.coefs_ = [w.astype(dtype, copy=True) for w in weights]
            self.intercepts_ = [b.astype(dtype, copy=True) for b in biases]

    Started.__name__ = Started.__qualname__ = estimator.__name__
    return Started


def _torch_module(torch, case, d, k, dtype, initial):
    """Linear layers (and activations) of ``case``, started from ``initial`` if given.

    ``initial`` is ``(weights, biases)`` in fastgd's orientation (``W (n_in, n_out)``), or
    ``(None, None)`` for PyTorch's own initialization.
    """
    activations = {"identity": torch.nn.Identity, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
                   "sigmoid": torch.nn.Sigmoid,
                   "leaky_relu": lambda: torch.nn.LeakyReLU(case.model.leaky_slope)}  # fmt: skip
    layers, linear, width = [], [], d
    for hidden in case.hidden:
        linear.append(torch.nn.Linear(width, hidden, dtype=dtype))
        layers += [linear[-1], activations[case.activation]()]
        width = hidden
    linear.append(torch.nn.Linear(width, k, dtype=dtype))
    layers.append(linear[-1])
    weights, biases = initial
    if weights is not None:
        with torch.no_grad():
            for layer, W, b in zip(linear, weights, biases, strict=True):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                layer.bias.copy_(torch.from_numpy(b))
    module = torch.nn.Sequential(*layers)
    return module, linear


def run_torch(case, X, y, *, batch_size, epochs, lr, seed, threads, shuffle, evaluate=True):
    """PyTorch on the CPU: ``torch.optim.SGD`` over the same batches as fastgd.

    The mini-batches are those fastgd draws (:func:`row_orders`), the losses are
    ``MSELoss``, ``BCEWithLogitsLoss`` and ``CrossEntropyLoss`` (batch means, as fastgd),
    ``torch.set_num_threads(threads)``. Linear models start from zero like fastgd's, and a
    network from fastgd's initial weights (:func:`network_start`), so the updates are
    fastgd's and the parameters are checked (a network whose model has no fastgd spec
    starts from PyTorch's own initialization, and its loss is checked).

    Parameters
    ----------
    case : ModelCase
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    batch_size : int or None
        ``None`` is full batch.
    epochs : int
    lr : float
    seed : int
    threads : int
    shuffle : bool or {"rows", "blocks"}
        fastgd's row orders (:func:`row_orders`), blocks included.
    evaluate : bool, default True
        Also compute what the check needs (parameters, predictions).

    Returns
    -------
    Outcome
    """
    torch = _import("torch", "PyTorch", "pip install torch")
    n, d = X.shape
    # outputs as fastgd builds them: one for regression and two classes, else one per class
    k = len(np.unique(y)) if case.task == "multiclass" else 1
    if case.linear:  # fastgd's linear models start from zero
        initial = [np.zeros((d, k), dtype=X.dtype)], [np.zeros(k, dtype=X.dtype)]
    else:
        initial = network_start(case, X, y, seed)
        if initial[0] is not None:  # fastgd's output layer (one unit for two classes)
            k = initial[0][-1].shape[1]
    size = n if batch_size is None else min(batch_size, n)
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[X.dtype]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        Xt = torch.from_numpy(X)
        if case.task == "regression":
            Yt = torch.from_numpy(np.ascontiguousarray(y, dtype=X.dtype).reshape(n, 1))
            loss_fn = torch.nn.MSELoss()
        elif case.task == "binary":
            Yt = torch.from_numpy(label_indices(y).astype(X.dtype).reshape(n, 1))
            loss_fn = torch.nn.BCEWithLogitsLoss()
        else:
            Yt = torch.from_numpy(label_indices(y).astype(np.int64))
            loss_fn = torch.nn.CrossEntropyLoss()
        started = time.perf_counter()
        module, linear = _torch_module(torch, case, d, k, dtype, initial)
        optimizer = torch.optim.SGD(module.parameters(), lr=lr)
        for order in row_orders(n, epochs, size, shuffle, seed):
            rows = None if order is None else torch.from_numpy(order)
            for start in range(0, n, size):
                if rows is None:
                    xb, yb = Xt[start : start + size], Yt[start : start + size]
                else:
                    batch = rows[start : start + size]
                    xb, yb = Xt.index_select(0, batch), Yt.index_select(0, batch)
                optimizer.zero_grad(set_to_none=True)
                loss_fn(module(xb), yb).backward()
                optimizer.step()
        seconds = time.perf_counter() - started
        if not evaluate:
            return Outcome(seconds, "none")
        with torch.no_grad():
            Z = module(Xt).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(previous_threads)
    if case.task == "regression":
        outputs = Z[:, 0]
    elif case.task == "binary":
        p = 0.5 * (1.0 + np.tanh(0.5 * Z[:, 0]))
        outputs = np.column_stack([1.0 - p, p])
    else:
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        outputs = E / E.sum(axis=1, keepdims=True)
    params = None
    if initial[0] is not None:
        params = flat_params([layer.weight.detach().numpy().T for layer in linear],
                             [layer.bias.detach().numpy() for layer in linear])  # fmt: skip
    return _outcome(seconds, params, outputs)


# name -> (label in tables, runner)
COMPETITORS = {
    "sklearn-sgd": ("scikit-learn", run_sklearn_sgd),
    "sklearn-mlp": ("scikit-learn", run_sklearn_mlp),
    "torch": ("pytorch", run_torch),
}
