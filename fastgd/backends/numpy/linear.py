"""NumPy reference for the linear family: plain and readable, the oracle of every test.

Two passes over X per batch (``X @ W``, then ``X.T @ dZ``), one Python step per batch:
the compiled backends fuse these into one pass and run the whole loop in compiled code.
Containers: :mod:`fastgd.backends.contract`. Sparse rows (:class:`SparseData`) are read as
a ``scipy.sparse`` CSR matrix: the same two products, done by SciPy.
"""

import numpy as np

from ..contract import Data
from ..shared import output_loss
from .update import train_loop


def loss_and_gradient(model, data, params):
    """Mean (weighted) loss over the rows of ``data`` and its gradient w.r.t. ``params``.

    Parameters
    ----------
    model : LinearModel
        Loss code, outputs ``k`` and whether the intercepts are trained (if not, their
        gradient is zero).
    data : Data or SparseData
        Rows ``X`` (n, d; a dense array or a CSR matrix), targets ``Y`` and sample weights.
    params : ndarray of shape (d * k + k,)
        Flat parameters ``[W (d, k) row-major, b (k)]``.

    Returns
    -------
    loss : float
        The mean (weighted) per-sample loss; penalties are not included.
    grad : ndarray of shape (d * k + k,)
        Its gradient, same dtype as ``params``.
    """
    X, Y, weights = data.X, data.Y, data.weights
    d, k = X.shape[1], model.n_outputs
    W = params[: d * k].reshape(d, k)
    loss, dZ = output_loss(X @ W + params[d * k :], Y, weights, model.loss_code)
    dZ = dZ.astype(params.dtype, copy=False)
    grad = np.empty_like(params)
    grad[: d * k] = np.asarray(X.T @ dZ).ravel()
    grad[d * k :] = dZ.sum(axis=0) if model.fit_intercept else 0.0
    return loss, grad


def train_epochs(model, data, state, update, block, n_threads):
    """Mini-batch gradient descent for up to ``block.n_epochs`` epochs, in place.

    See :meth:`fastgd.backends.contract.Backend.train_epochs`; ``n_threads`` is unused
    (NumPy's BLAS threads are its own).
    """
    X, Y, weights = data.X, data.Y, data.weights  # a CSR matrix for SparseData
    n_weights = X.shape[1] * model.n_outputs
    n_trained = state.params.size if model.fit_intercept else n_weights

    def batch_step(rows, epoch):
        batch = Data(X[rows], Y[rows], weights[rows] if weights.size else weights)
        return loss_and_gradient(model, batch, state.params)

    return train_loop(X.shape[0], batch_step, state, update, block, n_weights, n_trained)
