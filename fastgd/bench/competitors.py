"""Other libraries timed against fastgd on the same model, data, optimizer and batches.

Each competitor is a function ``run(case, X, y, *, batch_size, epochs, lr, seed, threads,
shuffle, evaluate=True)`` returning an :class:`Outcome`, or raising :class:`Unavailable` when its library
is not installed, :class:`NotApplicable` when it does not do this model or batch size
(scikit-learn's SGD estimators do batch size 1 only). Its ``seconds`` cover building the model and training (``fit``), not the
evaluation afterwards (skipped with ``evaluate=False``, which returns the time only). An
outcome says how it can be checked against fastgd:

- ``"params"``: same start, same updates, same row order: final parameters must agree
  (the linear family against scikit-learn's SGD without shuffling, and against PyTorch).
- ``"loss"``: a different start or row order: final training losses must agree.
- ``"accuracy"``: a different model (scikit-learn's one-vs-rest for softmax): training
  accuracies must agree.
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np

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
    with one ``numpy.random.default_rng(seed).permutation(n)`` per epoch in turn, so a
    competitor fed these orders makes exactly fastgd's updates.

    Parameters
    ----------
    n, epochs, batch_size : int
    shuffle : bool
    seed : int or None

    Yields
    ------
    ndarray of shape (n,) or None
        The order of each epoch in turn.
    """
    rng = np.random.default_rng(seed) if shuffle and batch_size < n else None
    for _ in range(epochs):
        yield None if rng is None else rng.permutation(n)


def _flat_linear(coef, intercept):
    """fastgd's flat ``[W (d, k) row-major, b (k)]`` from scikit-learn's (k, d) and (k,)."""
    coef = np.atleast_2d(coef)
    return np.concatenate([coef.T.ravel(), np.atleast_1d(intercept)])


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
    shuffle : bool
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
    try:
        from sklearn.linear_model import SGDClassifier, SGDRegressor
    except ImportError as exc:
        raise Unavailable('scikit-learn is not installed (pip install "fastgd[bench]")') from exc
    common = dict(penalty=None, learning_rate="constant", max_iter=epochs, tol=None,
                  shuffle=shuffle, random_state=seed)  # fmt: skip
    if case.task == "regression":
        model = SGDRegressor(loss="squared_error", eta0=2 * lr, **common)
    else:
        model = SGDClassifier(loss="log_loss", eta0=lr, n_jobs=threads, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - started
    if not evaluate:
        return Outcome(seconds, "none")
    if case.task == "multiclass":
        return Outcome(seconds, "accuracy", predicted=model.predict(X),
                       note="one-vs-rest: a different model")  # fmt: skip
    if case.task == "regression":
        outputs = model.predict(X)
    else:
        outputs = model.predict_proba(X)
    params = _flat_linear(model.coef_, model.intercept_)
    if shuffle:
        return Outcome(seconds, "loss", outputs=outputs, note="its own row order")
    return Outcome(seconds, "params", params=params, outputs=outputs)


def run_sklearn_mlp(case, X, y, *, batch_size, epochs, lr, seed, threads, shuffle, evaluate=True):
    """scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` with plain SGD.

    Same layers, activation, loss, batch size, learning rate and epochs (no momentum, no
    penalty, no early stopping); its own initialization and row order, so the final
    training losses are checked. Its threads are BLAS threads (pinned by the suite).

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
    shuffle : bool
    evaluate : bool, default True
        Also compute what the check needs (parameters, predictions).

    Returns
    -------
    Outcome
    """
    if case.linear:
        raise NotApplicable("scikit-learn's MLP estimators are for models with hidden layers")
    try:
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    except ImportError as exc:
        raise Unavailable('scikit-learn is not installed (pip install "fastgd[bench]")') from exc
    n = X.shape[0]
    regression = case.task == "regression"
    estimator = MLPRegressor if regression else MLPClassifier
    model = estimator(
        hidden_layer_sizes=case.hidden, activation=case.activation, solver="sgd", alpha=0.0,
        batch_size=n if batch_size is None else min(batch_size, n), learning_rate="constant",
        # its squared loss is (p - y)**2 / 2: twice the rate makes fastgd's MSE updates
        learning_rate_init=2 * lr if regression else lr, momentum=0.0, nesterovs_momentum=False,
        max_iter=epochs, shuffle=shuffle, random_state=seed, tol=0.0,
        n_iter_no_change=epochs + 1, early_stopping=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - started
    if not evaluate:
        return Outcome(seconds, "none")
    outputs = model.predict(X) if regression else model.predict_proba(X)
    return Outcome(seconds, "loss", outputs=outputs, note="its own initialization")


def _torch_module(torch, case, d, k, dtype):
    if case.linear:
        module = torch.nn.Linear(d, k, dtype=dtype)
        with torch.no_grad():  # fastgd's linear models start from zero
            module.weight.zero_()
            module.bias.zero_()
        return module
    activations = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "logistic": torch.nn.Sigmoid,
                   "sigmoid": torch.nn.Sigmoid}  # fmt: skip
    layers, width = [], d
    for hidden in case.hidden:
        layers += [torch.nn.Linear(width, hidden, dtype=dtype), activations[case.activation]()]
        width = hidden
    layers.append(torch.nn.Linear(width, k, dtype=dtype))
    return torch.nn.Sequential(*layers)


def run_torch(case, X, y, *, batch_size, epochs, lr, seed, threads, shuffle, evaluate=True):
    """PyTorch on the CPU: ``torch.optim.SGD`` over the same batches as fastgd.

    The mini-batches are those fastgd draws (:func:`row_orders`), the losses are
    ``MSELoss``, ``BCEWithLogitsLoss`` and ``CrossEntropyLoss`` (batch means, as fastgd),
    ``torch.set_num_threads(threads)``. Linear models start from zero like fastgd's, so the
    parameters are checked; a network starts from PyTorch's own initialization, so the
    loss is checked.

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
    shuffle : bool
    evaluate : bool, default True
        Also compute what the check needs (parameters, predictions).

    Returns
    -------
    Outcome
    """
    try:
        import torch
    except ImportError as exc:
        raise Unavailable("PyTorch is not installed (pip install torch)") from exc
    n, d = X.shape
    k = case.n_outputs()
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
        module = _torch_module(torch, case, d, k, dtype)
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
    if not case.linear:
        return Outcome(seconds, "loss", outputs=outputs, note="its own initialization")
    params = np.concatenate(
        [module.weight.detach().numpy().T.ravel(), module.bias.detach().numpy()]
    )
    return Outcome(seconds, "params", params=params, outputs=outputs)


# name -> (label in tables, runner)
COMPETITORS = {
    "sklearn-sgd": ("scikit-learn", run_sklearn_sgd),
    "sklearn-mlp": ("scikit-learn", run_sklearn_mlp),
    "torch": ("pytorch", run_torch),
}
