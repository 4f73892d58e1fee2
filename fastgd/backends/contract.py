"""The backend contract: the containers every kernel takes, and what a backend provides.

Every backend (``numpy``, the readable reference; ``numba``; ``cython``) implements the
same :class:`Backend` protocol over the same containers. The containers are NamedTuples
of arrays, numbers and integer codes only (Numba takes them; kernels never see strings,
objects or Python callbacks):

- a *kernel model*, what to compute: :class:`LinearModel`, :class:`NetworkModel` or
  :class:`RecurrentModel`;
- :class:`Data`, the rows to train on, or :class:`SparseData`, the same rows as a CSR
  matrix (the kernels read a row through a per-backend row accessor: a dot product with
  the weights and a gradient scatter; the epoch loop and the update are shared), or
  :class:`SequenceData` for recurrent models;
- :class:`State`, everything training changes in place (parameters, batch-norm running
  averages, optimizer state, update count, state of the tolerance rule);
- :class:`UpdateConfig`, how one update is made and when training stops;
- :class:`EpochBlock`, one call's epochs: row orders, learning rates, and the arrays that
  receive the loss history and the gradient norms.

A backend dispatches on the type of the kernel model to one module per model kind
(``backends/<name>/linear.py``, ``network.py``, ``recurrent.py``), each with the functions
``train_epochs(model, data, state, update, block, n_threads)`` and
``loss_and_gradient(model, data, params)``; the Newton pass of the linear family,
``loss_gradient_hessian``, is one more module per backend (``backends/<name>/hessian.py``).
A new model kind is one more container here
and one more module per backend; a new data kind is one more container beside
:class:`Data`, read by a per-backend row accessor.

Array conventions: float arrays share one dtype, float32 or float64 (that of ``X``),
except ``hyper``, ``net_hyper``, ``stop_state``, ``lr_epochs``, ``history`` and
``grad_norms``, which are float64; codes and counts are int64.
"""

import contextlib
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class Data(NamedTuple):
    """Training rows.

    Attributes
    ----------
    X : ndarray of shape (n, d)
        Samples, C-contiguous (read-only is fine).
    Y : ndarray of shape (n, m)
        Targets: ``m = k`` regression targets for the mean squared error, otherwise one
        column holding the label (0/1 for binary cross-entropy, the class index for
        categorical cross-entropy).
    weights : ndarray of shape (n,) or (0,)
        Sample weights (mean 1); an empty array means every weight is 1.
    """

    X: np.ndarray
    Y: np.ndarray
    weights: np.ndarray


class SparseData(NamedTuple):
    """Training rows as a CSR matrix: the second data kind beside :class:`Data`.

    Row ``i`` holds the values ``values[indptr[i]:indptr[i + 1]]`` in the columns
    ``indices[indptr[i]:indptr[i + 1]]``. Columns may be unsorted and may repeat within a
    row (repeated entries add up, as in SciPy): every kernel only sums over a row's
    entries (dot product) or scatters into the columns (gradient), so both are read as
    the dense row they stand for. Validation (:func:`fastgd._validation.check_features`)
    guarantees ``indptr[0] == 0``, nondecreasing ``indptr``, ``0 <= indices <
    n_features`` and finite values, so the kernels index without checks.

    Attributes
    ----------
    values : ndarray of shape (nnz,)
        The stored entries, float32 or float64 (the dtype of the model).
    indices : ndarray of shape (nnz,), int32 or int64
        Column of each entry (the same integer dtype as ``indptr``).
    indptr : ndarray of shape (n + 1,), int32 or int64
        Row ``i``'s entries are ``indptr[i]:indptr[i + 1]``.
    n_features : int
        ``d``, the number of columns.
    Y : ndarray of shape (n, m)
        Targets, as in :class:`Data`.
    weights : ndarray of shape (n,) or (0,)
        Sample weights, as in :class:`Data`.
    """

    values: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    n_features: int
    Y: np.ndarray
    weights: np.ndarray

    @property
    def shape(self):
        """``(n, d)``."""
        return (self.indptr.shape[0] - 1, int(self.n_features))

    @property
    def X(self):
        """The rows as a ``scipy.sparse.csr_matrix`` over the same arrays (the NumPy
        reference's matrix products and prediction use it; SciPy may copy int64
        indices that fit in int32)."""
        from scipy import sparse

        return sparse.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)


def is_sparse(data):
    """True for :class:`SparseData`."""
    return isinstance(data, SparseData)


def n_rows(data):
    """Rows of a :class:`Data`, :class:`SparseData` or :class:`SequenceData` (``Y`` has one
    row per sample), or of a container of chunks elsewhere (its ``X.shape``)."""
    return data.Y.shape[0] if hasattr(data, "Y") else data.X.shape[0]


def epoch_rows(data, block):
    """Rows one epoch of ``block`` visits: as many as its row orders hold (with early
    stopping, the training rows of the caller's array), else every row of ``data``."""
    return block.orders.shape[1] if block.orders.shape[0] else n_rows(data)


def n_features(data):
    """Columns of a :class:`Data` or :class:`SparseData`."""
    return int(data.n_features) if is_sparse(data) else data.X.shape[1]


class LinearModel(NamedTuple):
    """A linear model ``z = x @ W + b``; flat parameters ``[W (d, k) row-major, b (k)]``.

    Attributes
    ----------
    loss_code : int
        A code of :mod:`fastgd.specs.losses`.
    n_outputs : int
        ``k``, the decision values per sample.
    fit_intercept : bool
        Whether ``b`` is trained (if not, its gradient is zero and it stays as it is).
    """

    loss_code: int
    n_outputs: int
    fit_intercept: bool


class NetworkModel(NamedTuple):
    """A multi-layer perceptron (layout and formulas: :mod:`fastgd.specs.network`).

    Attributes
    ----------
    sizes : ndarray of int64, shape (L + 1,)
        Layer widths, input first.
    batch_norm : ndarray of int64, shape (L,)
        1 for batch-normalized hidden layers (the output layer is always 0).
    activation : int
        Activation code of the hidden layers.
    net_hyper : ndarray of float64
        Leaky slope, batch-norm momentum, batch-norm eps.
    loss_code : int
        Loss of the output layer.
    """

    sizes: np.ndarray
    batch_norm: np.ndarray
    activation: int
    net_hyper: np.ndarray
    loss_code: int


class SequenceData(NamedTuple):
    """Training sequences (for :class:`RecurrentModel`).

    Attributes
    ----------
    X : ndarray of shape (n, T, f)
        Sequences, C-contiguous: ``T`` steps of ``f`` features.
    Y : ndarray of shape (n, m) or (n, T, m)
        Targets as in :class:`Data`, one row per sequence (``output="last"``) or per step
        (``output="sequence"``; rows of padded steps are not read).
    weights : ndarray of shape (n,) or (0,)
        Sample weights of the sequences (mean 1); empty: every weight is 1.
    lengths : ndarray of int64, shape (n,)
        Valid steps of each sequence, in ``[1, T]``; steps ``t >= lengths[i]`` are padding.
    """

    X: np.ndarray
    Y: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray


class RecurrentModel(NamedTuple):
    """A recurrent network (equations and layout: :mod:`fastgd.specs.recurrent`).

    Attributes
    ----------
    cell : int
        Cell code (LSTM, GRU, tanh RNN).
    n_features, hidden, n_layers : int
        Features per step, units per recurrent layer, recurrent layers.
    head_sizes : ndarray of int64, shape (H + 1,)
        Widths of the dense head, ``[hidden, ..., k]``.
    head_activation : int
        Activation code (:mod:`fastgd.specs.network`) of the hidden head layers.
    sequence : int
        1: a prediction at every step (``output="sequence"``); 0: from the last state.
    loss_code : int
        Loss of the output layer.
    """

    cell: int
    n_features: int
    hidden: int
    n_layers: int
    head_sizes: np.ndarray
    head_activation: int
    sequence: int
    loss_code: int


class State(NamedTuple):
    """What training updates in place; kept between calls so blocks of epochs chain.

    Attributes
    ----------
    params : ndarray of shape (n_params,)
        The flat parameters.
    running : ndarray of shape (n_running,)
        Batch-norm running averages (empty for models without).
    opt_state : ndarray of shape (n_rows, n_params)
        Optimizer state (rows named in :data:`fastgd.specs.optimizers.STATE_ROWS`).
    step_count : ndarray of int64, shape (1,)
        Updates made so far (the ``t`` of bias corrections and inverse scaling).
    stop_state : ndarray of float64, shape (4,)
        ``[best_loss, n_no_change, first_loss, interrupt]`` of the stopping rules
        (:mod:`fastgd.specs.stopping`); ``interrupt`` is set to 1 from another thread to
        stop at the end of the current mini-batch.
    """

    params: np.ndarray
    running: np.ndarray
    opt_state: np.ndarray
    step_count: np.ndarray
    stop_state: np.ndarray


class UpdateConfig(NamedTuple):
    """How one update is made, and the tolerance rule.

    Attributes
    ----------
    batch_size : int
        Rows per mini-batch (the last batch of an epoch may be smaller).
    opt_code : int
        A code of :mod:`fastgd.specs.optimizers`.
    hyper : ndarray of float64, shape (N_HYPER,)
        Optimizer hyperparameters, clipping thresholds, penalty strengths and the
        inverse-scaling power, at the positions named in :mod:`fastgd.specs.optimizers`.
    tol : float
        An epoch whose loss is not below ``best - tol`` counts as no change (``-inf``: off).
    n_iter_no_change : int
        Epochs without change after which training has converged.
    """

    batch_size: int
    opt_code: int
    hyper: np.ndarray
    tol: float
    n_iter_no_change: int


class EpochBlock(NamedTuple):
    """The epochs of one kernel call.

    Attributes
    ----------
    orders : ndarray of int64, shape (n_orders, n_epoch_rows) or (0, 0)
        Row order of each epoch (epoch ``e`` visits ``orders[e % n_orders]``, indices of
        rows of the data); empty for the natural order of all rows in every epoch. An
        epoch visits ``n_epoch_rows <= n`` rows: fewer with early stopping, whose orders
        hold only the training rows (:func:`epoch_rows`); the epoch's mean loss is over
        the rows it visits.
    lr_epochs : ndarray of float64, shape (>= n_epochs,)
        Learning rate of each epoch (update ``t`` uses ``lr / t**hyper[POWER_T]``).
    n_epochs : int
        Maximum number of epochs of the call (0 only compiles or loads the kernels).
    history : ndarray of float64, shape (>= n_epochs,)
        Receives each epoch's loss: the mean over the rows it visits of the (weighted)
        loss each saw in its mini-batch before that batch's update, plus the penalty of
        the parameters at the end of the epoch.
    grad_norms : ndarray of float64, shape (>= n_epochs, L) or (0, 0)
        Networks: per epoch and layer, the root mean square over the epoch's batches of
        the norm of the layer's weight gradient (before penalty and clipping).
    """

    orders: np.ndarray
    lr_epochs: np.ndarray
    n_epochs: int
    history: np.ndarray
    grad_norms: np.ndarray


KernelModel = LinearModel | NetworkModel | RecurrentModel
AnyData = Data | SparseData


@runtime_checkable
class Backend(Protocol):
    """What every backend provides (see :class:`ModuleBackend`)."""

    name: str

    def max_threads(self) -> int:
        """Threads the backend's kernels can use in this process."""

    def train_epochs(self, model, data, state, update, block, n_threads) -> tuple:
        """Run up to ``block.n_epochs`` epochs, updating ``state`` in place.

        Returns ``(n_done, status)``: epochs run (a diverged one included) and a code of
        :mod:`fastgd.specs.stopping`. On divergence ``state`` is restored to the start of
        the diverged epoch. Once ``state.stop_state[INTERRUPT]`` is non-zero, no further
        mini-batch starts: ``(completed epochs, INTERRUPTED)`` with the state after the
        last whole update. Results do not depend on ``n_threads``.
        """

    def loss_and_gradient(self, model, data, params) -> tuple:
        """Mean (weighted) data loss over all rows and its gradient (no penalty).

        Networks use batch statistics (training mode), as one full batch would.
        """

    def loss_gradient_hessian(self, model, data, params, n_threads, hessian=True, gram_dtype="float64") -> tuple:  # fmt: skip
        """Newton's pass of a :class:`LinearModel`: mean loss, gradient and Hessian, in float64.

        One read of ``X``, parallel over fixed row chunks whose sums are added in chunk
        order (the result does not depend on ``n_threads``); accumulated in float64 for
        float32 data too. No penalty is included.

        Parameters
        ----------
        model : LinearModel
        data : Data
        params : ndarray of float64, shape (d * k + k,)
            Flat parameters ``[W (d, k) row-major, b (k)]``.
        n_threads : int
        hessian : bool, default True
            False: only the loss and the gradient (a line-search trial).
        gram_dtype : {"float64", "float32"}, default "float64"
            Precision of the Gram products ``X~^T diag(h) X~`` with ``h >= 0`` (one output;
            softmax's diagonal class blocks): ``"float32"`` rounds the ``sqrt(h)``-scaled
            rows of each row block to float32, multiplies them in float32 and adds each
            block's product to the float64 sums (``Newton(hessian_dtype="float32")``).
            The loss and the gradient are float64 either way.

        Returns
        -------
        loss : float
            Mean (weighted) data loss over all rows.
        grad : ndarray of float64, shape (d * k + k,)
            Its gradient (intercept entries zero when ``fit_intercept`` is False).
        H : ndarray of float64 or None
            Its Hessian w.r.t. the flat vector, whose entry ``j * k + c`` is the weight of
            feature ``j`` for output ``c`` (``j = d``: the intercept); with
            ``x~ = [x, 1]`` and ``w`` the sample weights:

            - mean squared error: the ``(d + 1, d + 1)`` block
              ``B = 2 / (n k) * sum_i w_i x~_i x~_i^T`` shared by every output; the full
              Hessian is ``kron(B, I_k)``, never formed;
            - binary cross-entropy (``k = 1``): the full ``(d + 1, d + 1)`` matrix
              ``1 / n * sum_i w_i p_i (1 - p_i) x~_i x~_i^T``;
            - categorical cross-entropy: the full ``((d + 1) k, (d + 1) k)`` matrix, entry
              ``(j k + c, j' k + c')`` being
              ``1 / n * sum_i w_i p_ic (delta_cc' - p_ic') x~_ij x~_ij'``.

            The intercept rows and columns are included even when ``fit_intercept`` is
            False (the solver leaves them out). None when ``hessian`` is False.
        """


@dataclass
class ModuleBackend:
    """A backend made of one module per model kind, chosen by the kernel model's type.

    Parameters
    ----------
    name : str
        ``"numpy"``, ``"numba"`` or ``"cython"``.
    kinds : dict
        Kernel-model type (:class:`LinearModel`, :class:`NetworkModel`) -> module with
        ``train_epochs`` and ``loss_and_gradient`` over the containers.
    threads : callable
        Returns the number of threads the kernels can use.
    prepare : callable, optional
        ``prepare(data)`` -> the :class:`Data` the kernels get (e.g. read-only views).
    hessian : module, optional
        Module with ``loss_gradient_hessian`` for :class:`LinearModel` (Newton's pass).
    releases_gil : bool, default True
        The kernels release the GIL for their whole call: ``fit`` then runs them in a
        worker thread, and the main thread stays free to handle Ctrl-C
        (:mod:`fastgd.training.interrupt`). False for Python loops (the reference).
    guard : callable, optional
        ``guard()`` -> a context manager held around every kernel call (the Numba
        backend serializes its calls under the ``workqueue`` threading layer).
    """

    name: str
    kinds: dict
    threads: object
    prepare: object = None
    hessian: object = None
    releases_gil: bool = True
    guard: object = None

    def _guard(self):
        return contextlib.nullcontext() if self.guard is None else self.guard()

    def _data(self, data):
        return data if self.prepare is None or data is None else self.prepare(data)

    def _module(self, model):
        try:
            return self.kinds[type(model)]
        except KeyError:
            raise TypeError(
                f"backend {self.name!r} has no kernels for {type(model).__name__}"
            ) from None

    def max_threads(self):
        """Threads the kernels can use in this process."""
        return int(self.threads())

    def train_epochs(self, model, data, state, update, block, n_threads):
        """See :meth:`Backend.train_epochs`."""
        module, data = self._module(model), self._data(data)
        with self._guard():
            return module.train_epochs(model, data, state, update, block, n_threads)

    def loss_and_gradient(self, model, data, params):
        """See :meth:`Backend.loss_and_gradient`."""
        module, data = self._module(model), self._data(data)
        with self._guard():
            return module.loss_and_gradient(model, data, params)

    def loss_gradient_hessian(self, model, data, params, n_threads, hessian=True, gram_dtype="float64"):  # fmt: skip
        """See :meth:`Backend.loss_gradient_hessian`."""
        if not isinstance(model, LinearModel) or self.hessian is None:
            raise TypeError(
                f"backend {self.name!r} has no Hessian kernels for {type(model).__name__}; "
                "Newton's method is for the linear family (use L-BFGS for networks)"
            )
        data = self._data(data)
        with self._guard():
            return self.hessian.loss_gradient_hessian(
                model, data, params, n_threads, hessian, gram_dtype
            )
