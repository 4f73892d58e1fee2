"""The objective the full-batch solvers minimise, over a float64 parameter vector.

``f(x) = mean (weighted) data loss + l2 / 2 * ||W||^2`` (the weights ``x[:n_weights]``,
not the intercepts or biases), its gradient and, for the linear family, its Hessian; the
passes over the data run in the backend (:mod:`fastgd.backends.contract`). With
``alpha = 1 / (C n)`` (``1 / (C sum w)`` before fastgd rescales weights to mean 1) this is
scikit-learn's ``LogisticRegression`` objective divided by ``C n``: the same minimiser.

:class:`NewtonSystem` solves ``H step = -g`` over the entries Newton may move: the
intercepts are left out when they are not trained; softmax's decision values are
unchanged by adding a constant to every class, so one class's intercept (with a penalty)
or all of its entries (without one) are held fixed, which makes ``H`` non-singular; the
solver re-centres the classes at the end.
"""

import numpy as np

from .._config import HELD_OUT_VALUES, PASS_BLOCK_WORK
from ..backends.contract import Data, LinearModel, NetworkModel, is_sparse
from ..backends.hessian_layout import n_pairs
from ..specs import losses, stopping


class PassInterrupted(Exception):
    """Ctrl-C arrived during a full-batch pass: it stopped at the end of a row block."""


class Objective:
    """``f``, ``g`` (and ``H``) of the penalised mean loss at float64 parameters ``x``.

    Parameters
    ----------
    backend : fastgd.backends.contract.Backend
    spec : LinearModelSpec or NetworkSpec
    data : fastgd.backends.contract.Data
    l2 : float
        Strength of the L2 penalty ``l2 / 2 * ||W||^2``.
    n_threads : int
    rows : ndarray of int64, optional
        Train on these rows of ``data`` only (early stopping), gathered a block at a time.
    """

    def __init__(self, backend, spec, data, l2, n_threads, rows=None):
        self.backend, self.spec, self.data, self.rows = backend, spec, data, rows
        self.model, self.l2, self.n_threads = spec.kernel_model(), l2, n_threads
        self.n_weights = spec.n_weights
        self.linear = spec.n_layers == 0
        self.evaluations = 0
        self.stop_state = None  # the run's, polled between the row blocks of a pass
        # precision of the Gram products of H (Newton's hessian_dtype; set by the solver)
        self.hessian_dtype = "float64"

    def _penalise(self, x, loss, grad):
        w = x[: self.n_weights]
        grad = np.array(grad, dtype=np.float64)
        grad[: self.n_weights] += self.l2 * w
        return loss + 0.5 * self.l2 * float(w @ w), grad

    def _terms(self, x, hessian, gram_dtype="float64"):
        """The data part ``(loss, grad, H)`` at ``x`` (see :func:`data_terms`)."""
        return data_terms(self.backend, self.model, self.data, x, self.n_threads, hessian,
                          self.stop_state, self.rows, gram_dtype)  # fmt: skip

    def value_grad(self, x):
        """``(f, g)`` at ``x`` (see :func:`data_terms` for the precision)."""
        self.evaluations += 1
        loss, grad, _ = self._terms(x, None)
        return self._penalise(x, loss, grad)

    @property
    def inexact(self):
        """True when :meth:`value_grad_hess` gives float32 Gram products (an inexact
        Newton method: :meth:`exact_hessian` is the fallback)."""
        return self.hessian_dtype == "float32"

    def value_grad_hess(self, x, hessian=True):
        """``(f, g, H)`` at ``x`` (linear family; ``H`` as the backend lays it out, with
        the penalty on its weight diagonal; None without ``hessian``), ``H`` from Gram
        products in :attr:`hessian_dtype`."""
        return self._value_grad_hess(x, hessian, self.hessian_dtype)

    def exact_hessian(self, x):
        """``H`` at ``x`` from float64 Gram products (a full pass over the data)."""
        return self._value_grad_hess(x, True, "float64")[2]

    def _value_grad_hess(self, x, hessian, gram_dtype):
        self.evaluations += 1
        loss, grad, H = self._terms(x, hessian, gram_dtype)
        f, g = self._penalise(x, loss, grad)
        if H is not None and self.l2:
            d = self.spec.n_features
            n_diag = d if self.model.loss_code == losses.MSE else self.n_weights
            H[np.arange(n_diag), np.arange(n_diag)] += self.l2
        return f, g, H


def data_terms(backend, model, data, x, n_threads, hessian, stop_state=None, rows=None,  # noqa: PLR0913
               gram_dtype="float64"):  # fmt: skip
    """Mean (weighted) data loss over the rows of ``data``, its gradient and Hessian at ``x``.

    ``hessian=None`` asks for ``(loss, grad, None)``: float32 linear models are summed in
    float64 (the Newton pass without its Hessian); everything else uses the backend's loss
    and gradient in the data's precision. ``hessian`` True/False is the Newton pass of the
    linear family, in float64, with or without ``H`` (whose Gram products are computed in
    ``gram_dtype``: see :meth:`fastgd.backends.contract.Backend.loss_gradient_hessian`).
    The Dask driver runs this very function on each chunk of rows.

    Dense rows of a linear model (or a network without batch norm) are passed in row
    blocks of about
    :data:`fastgd._config.PASS_BLOCK_WORK` (their means weighted by their rows; the
    blocks depend on the data only); with ``stop_state``, a Ctrl-C request
    (``stop_state[INTERRUPT]``) raises :class:`PassInterrupted` after the current block.
    With ``rows`` (dense rows of a linear model or a network without batch norm), the pass is over those rows, each
    block gathered apart (at most about HELD_OUT_VALUES values: no copy of them all).
    """
    # a non-finite value (divergence, or NaN in X: its check comes after training) ends the
    # run with its own report; NumPy's RuntimeWarnings along the way would only add noise
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        blocks = _row_blocks(model, data, hessian, rows)
        if len(blocks) == 1 and rows is None:
            return _data_terms(backend, model, data, x, n_threads, hessian, gram_dtype)
        where = (stop_state, rows, gram_dtype)
        return _blockwise(backend, model, data, x, n_threads, hessian, blocks, where)


def _row_blocks(model, data, hessian, rows=None):
    """Row bounds of the blocks of a pass (one block: sparse rows, networks, sequences),
    in positions of ``rows`` when given."""
    if not is_dense_linear(model, data):
        return [(0, None)]
    n, d1 = data.X.shape[0], data.X.shape[1] + 1
    if isinstance(model, NetworkModel):  # forward and backward multiply-adds
        sizes = np.asarray(model.sizes)
        per_row = 3 * int(np.sum(sizes[:-1] * sizes[1:]))
    else:
        k = model.n_outputs
        per_row = d1 * d1 * n_pairs(model.loss_code, k) if hessian else d1 * k
    size = max(1024, PASS_BLOCK_WORK // per_row)
    if rows is not None:  # gathered blocks: bounded memory too
        n, size = rows.shape[0], max(64, min(size, HELD_OUT_VALUES // d1))
    if n <= size:
        return [(0, n)]
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def is_dense_linear(model, data):
    """True for dense rows of a linear model or of a network without batch norm (whose
    loss is a sum over rows): the passes :func:`data_terms` splits."""
    if not isinstance(data, Data) or not isinstance(data.X, np.ndarray) or data.X.ndim != 2:
        return False
    if isinstance(model, NetworkModel):
        return not np.any(model.batch_norm)
    return isinstance(model, LinearModel)


def _blockwise(backend, model, data, x, n_threads, hessian, blocks, where):
    """:func:`_data_terms` summed over row blocks, each weighted by its share of rows;
    ``where``: ``(stop_state, rows, gram_dtype)``."""
    stop_state, rows, gram_dtype = where
    X, Y, weights = data
    n = X.shape[0] if rows is None else rows.shape[0]
    total = None
    for a, b in blocks:
        at = slice(a, b) if rows is None else rows[a:b]
        part = Data(X[at], Y[at], weights[at] if weights.size else weights)
        terms = _data_terms(backend, model, part, x, n_threads, hessian, gram_dtype)
        share = (b - a) / n
        if total is None:
            total = [terms[0] * share, np.asarray(terms[1]) * share, None]
        else:
            total[0] += terms[0] * share
            total[1] = total[1] + np.asarray(terms[1]) * share
        if terms[2] is not None:
            total[2] = terms[2] * share if total[2] is None else total[2] + terms[2] * share
        if stop_state is not None and stop_state[stopping.INTERRUPT] and b < n:
            raise PassInterrupted
    return total[0], total[1], total[2]


def _data_terms(backend, model, data, x, n_threads, hessian, gram_dtype="float64"):  # noqa: PLR0913
    linear = isinstance(model, LinearModel)
    dtype = data.Y.dtype  # the data's (sparse rows have no X)
    # sparse rows have no Newton pass: their float32 sums stay in float32
    if hessian is None and not (linear and dtype != np.float64 and not is_sparse(data)):
        loss, grad = backend.loss_and_gradient(model, data, x.astype(dtype))
        return loss, grad, None
    return backend.loss_gradient_hessian(model, data, x, n_threads, bool(hessian), gram_dtype)


def cholesky_solve(A, b):
    """``A^-1 b`` by Cholesky; when ``A`` is not positive definite, ``A + tau I`` with
    ``tau = 1e-10 max diag A``, tenfold per retry (damping changes the path, not the
    optimum); the least-squares solution if that never succeeds."""
    import scipy.linalg  # loaded at the first Newton solve, not at `import fastgd` (0.4 s)

    tau, scale = 0.0, max(float(np.max(np.abs(np.diag(A)))), np.finfo(float).tiny)
    for _ in range(12):
        try:
            factor = scipy.linalg.cho_factor(A + tau * np.eye(A.shape[0]) if tau else A)
            return scipy.linalg.cho_solve(factor, b)
        except np.linalg.LinAlgError:
            tau = 1e-10 * scale if tau == 0.0 else 10.0 * tau
    return np.linalg.lstsq(A, b, rcond=None)[0]


def checked_solve(A, b, max_cond):
    """``A^-1 b`` for an approximate ``A`` (float32 Gram products), or None when ``A`` is
    not positive definite or too ill-conditioned for its precision.

    ``A`` is scaled to unit diagonal, ``S = D^-1/2 A D^-1/2`` (its float32 rounding
    errors are relative to ``sqrt(A_ii A_jj)``, the same for every entry of ``S``), and
    factored by Cholesky; the ratio of the largest to the smallest pivot is a lower bound
    of the condition number of ``S``. At or above ``max_cond`` the step's relative error
    (about the condition number times the rounding) would slow Newton down: None.
    """
    import scipy.linalg

    diag = np.diag(A)
    if not np.all(diag > 0):
        return None
    root = np.sqrt(diag)
    try:
        L = scipy.linalg.cholesky(A / np.outer(root, root), lower=True)
    except np.linalg.LinAlgError:
        return None
    pivots = np.diag(L) ** 2
    if not pivots.max() < max_cond * pivots.min():
        return None
    scale = root.reshape(-1, *([1] * (np.ndim(b) - 1)))
    return scipy.linalg.cho_solve((L, True), b / scale) / scale


class NewtonSystem:
    """Newton steps of a linear model (see the module docstring for the held entries).

    Parameters
    ----------
    spec : LinearModelSpec
    l2 : float
    """

    def __init__(self, spec, l2):
        d, k = spec.n_features, spec.n_outputs
        self.shape, self.shared = (d + 1, k), spec.loss_code == losses.MSE
        index = np.arange((d + 1) * k).reshape(d + 1, k)
        keep = np.ones((d + 1, k), dtype=bool)
        if not spec.fit_intercept:
            keep[d] = False
        if spec.loss_code == losses.CATEGORICAL_CROSS_ENTROPY:
            keep[d if l2 > 0 else slice(None), k - 1] = False
        self.rows = np.flatnonzero(keep[:, 0]) if self.shared else None
        self.active = index[keep]

    def step(self, H, g, max_cond=None):
        """The Newton step (zero on held entries) and ``step . H . step``. With
        ``max_cond`` (an approximate ``H``): None when ``H`` is not positive definite or
        too ill-conditioned (:func:`checked_solve`)."""
        step = np.zeros(g.size)
        solve = cholesky_solve if max_cond is None else lambda A, b: checked_solve(A, b, max_cond)
        if self.shared:  # MSE: kron(B, I_k): one (d + 1) system with k right-hand sides
            rows = self.rows
            B, G = H[np.ix_(rows, rows)], g.reshape(self.shape)[rows]
            delta = solve(B, -G)
            if delta is None:
                return None
            step.reshape(self.shape)[rows] = delta
            return step, float(np.sum(delta * (B @ delta)))
        a = self.active
        A = H[np.ix_(a, a)]
        delta = solve(A, -g[a])
        if delta is None:
            return None
        step[a] = delta
        return step, float(delta @ (A @ delta))


def centre_classes(spec, x, l2):
    """Softmax: shift intercepts (and, without a penalty, every weight row) to zero mean
    over the classes; the decision values' differences, hence the loss, are unchanged."""
    if spec.loss_code != losses.CATEGORICAL_CROSS_ENTROPY:
        return
    d, k = spec.n_features, spec.n_outputs
    P = x.reshape(d + 1, k)
    rows = slice(None) if l2 == 0 else slice(d, d + 1)
    if not spec.fit_intercept:
        rows = slice(0, d) if l2 == 0 else slice(0, 0)
    P[rows] -= P[rows].mean(axis=1, keepdims=True)
