"""FitResult: what ``fastgd.fit`` returns, with prediction helpers."""

from dataclasses import dataclass, field

import numpy as np

from ._pandas import frames_to_arrays
from ._validation import check_features, check_lengths, check_sequences
from .backends.shared import predict


@dataclass
class FitResult:
    """The outcome of :func:`fastgd.fit`.

    Attributes
    ----------
    model : LinearModelSpec, NetworkSpec or RecurrentSpec
        What was trained (family or layers, number of features and outputs).
    params : ndarray of shape (n_params,)
        The flat parameter vector (see :mod:`fastgd.specs.models` for its layout).
    classes_ : ndarray or None
        The class labels of a classifier, in the order of its outputs.
    loss_history : ndarray of shape (n_epochs,)
        Training loss per epoch: the mean over all samples of each sample's loss in its
        mini-batch, before that batch's update (for full batches: the loss at the start of
        the step), plus the penalty (if any) of the parameters at the end of the epoch.
    lr_history : ndarray of shape (n_epochs,)
        Learning rate of each epoch, as the schedule set it (before the per-update factor
        ``t**-power`` of inverse scaling).
    n_epochs : int
        Number of epochs run (including a diverged one, whose update was discarded; not
        the epoch an interruption cut short, whose updates are in ``params``).
    stop_reason : {"max_epochs", "converged", "diverged", "callback", "early_stopping", \
"line_search_failed", "interrupted"}
        Why training stopped: all epochs run, the tolerance rule, a NaN/inf loss, the
        callback returned True, or the validation loss stopped improving; Newton and
        L-BFGS may also stop when no step length decreases the objective; Ctrl-C stops
        at the end of the current mini-batch (or solver iteration) with "interrupted".
    backend : str
        The backend that ran the training loop.
    n_threads : int
        Threads used by the compiled kernels.
    compile_time : float
        Seconds spent compiling or loading kernels before training.
    train_time : float
        Seconds spent in the training loop.
    optimizer : fastgd.optim.Optimizer
        The optimizer and its hyperparameters.
    optimizer_state : ndarray of shape (n_rows, n_params)
        Its state at the end (momentum buffers, moments; rows named in
        :data:`fastgd.specs.optimizers.STATE_ROWS`).
    n_updates : int
        Parameter updates made (Adam's step count), up to the returned parameters.
    validation_loss_history : ndarray or None
        With early stopping: the validation loss after each epoch.
    best_epoch : int or None
        With early stopping: the epoch whose parameters are returned.
    validation_rows : ndarray or None
        With early stopping: the indices of the rows held out for validation.
    running : ndarray or None
        Networks: the batch-norm running averages (see :attr:`named_params`).
    gradient_norms : ndarray of shape (n_epochs, n_layers) or None
        Networks: per epoch and layer, the root mean square over the epoch's batches of
        the norm of the layer's weight gradient.
    gradient_diagnosis : {None, "vanishing", "exploding"}
        Networks: whether the gradients vanished or exploded; ``gradient_message`` says
        where and what may help.
    gradient_through_time : dict or None
        Recurrent networks: offset ``k`` back from the last step -> mean norm over (up to
        256) training sequences of the loss gradient with respect to the first recurrent
        layer's hidden state at step ``T - 1 - k``, at the returned parameters: how much
        the early steps still influence learning (vanishing for a tanh RNN on long
        sequences, kept by LSTM and GRU cells).
    feature_names_in_ : ndarray of str or None
        The column names of a pandas ``DataFrame`` X (when all of them are strings).
    gradient_norm : float or None
        Newton and L-BFGS: ``max|g|`` of the penalised objective's gradient at the returned
        iterate (before early stopping restores a best one); None for first-order fits.
    distributed : dict or None
        Dask fits: ``n_chunks``, ``n_rounds``, ``round_time`` (wall time of the rounds),
        ``compute_time`` (per round, the busiest worker's kernel time, summed),
        ``worker_time`` (all chunks' kernel time), ``communication_time`` (round time
        minus compute time: scheduling, transfers, serialization), ``prepare_time``
        (validating and persisting the chunks) and ``scheduler``.
    """

    model: object
    params: np.ndarray
    classes_: np.ndarray | None
    loss_history: np.ndarray
    n_epochs: int
    stop_reason: str
    backend: str
    n_threads: int
    compile_time: float
    train_time: float
    optimizer: object = None
    optimizer_state: np.ndarray | None = None
    n_updates: int = 0
    validation_loss_history: np.ndarray | None = None
    best_epoch: int | None = None
    validation_rows: np.ndarray | None = None
    lr_history: np.ndarray | None = None
    running: np.ndarray | None = None
    gradient_norms: np.ndarray | None = None
    gradient_diagnosis: str | None = None
    gradient_message: str | None = None
    feature_names_in_: np.ndarray | None = None
    gradient_norm: float | None = None
    distributed: dict | None = None
    gradient_through_time: dict | None = None
    _single_target: bool = field(default=True, repr=False)

    @property
    def converged(self):
        """True if the tolerance rule stopped training."""
        return self.stop_reason == "converged"

    @property
    def dtype(self):
        """The float dtype training ran in (that of X)."""
        return self.params.dtype

    @property
    def is_network(self):
        """True for a model with layers (a multi-layer perceptron)."""
        return self.model.n_layers > 0

    @property
    def named_params(self):
        """Networks: copies of every layer's parameters by name (``"dense1.weight"`` with
        shape (n_in, n_out), ``"dense1.bias"``, ``"dense1.bn_scale"``, ...); linear
        models: ``"weight"`` (n_features, n_outputs) and ``"bias"``."""
        views = self.model.named(self.params, self.running)
        return {name: view.copy() for name, view in views.items()}

    @property
    def coef_(self):
        """Weights, scikit-learn style.

        Shape (n_features,) for a single regression target, otherwise
        (n_outputs, n_features). Linear models only (networks: :attr:`named_params`).
        """
        self._linear_only("coef_")
        W, _ = self.model.unpack(self.params)
        if self.model.task == "regression" and self._single_target:
            return W[:, 0].copy()
        return W.T.copy()

    @property
    def intercept_(self):
        """Intercepts: a float for a single regression target, else shape (n_outputs,)."""
        self._linear_only("intercept_")
        _, b = self.model.unpack(self.params)
        if self.model.task == "regression" and self._single_target:
            return float(b[0])
        return b.copy()

    def _linear_only(self, name):
        if self.is_network:
            raise AttributeError(f"{name} is defined for linear models; use named_params")

    def decision_function(self, X, lengths=None):
        """Decision values ``X @ W + b`` (networks: the output layer's).

        Networks use the batch-norm running averages.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Recurrent models: sequences of shape (n_samples, n_steps, n_features) (2-D:
            one feature per step).
        lengths : array-like of int, shape (n_samples,), optional
            Recurrent models: the valid steps of each sequence (default: all).

        Returns
        -------
        ndarray of shape (n_samples, n_outputs); (n_samples, n_steps, n_outputs) for a
        recurrent model with ``output="sequence"``
        """
        if self.model.name == "rnn":
            X = check_sequences(X, n_features=self.model.n_features)
            lengths = check_lengths(lengths, X.shape[0], X.shape[1])
        else:
            if lengths is not None:
                raise ValueError("lengths is only for sequence models (fastgd.RNN)")
            X = frames_to_arrays(X, None)[0]  # a data frame or series: as fit reads it
            X = check_features(X, n_features=self.model.n_features, allow_1d=self.model.n_features == 1)  # fmt: skip
        params = self.params.astype(X.dtype, copy=False)
        running = None if self.running is None else self.running.astype(X.dtype, copy=False)
        return predict(self.model.kernel_model(), X, params, running, lengths)

    def predict(self, X, lengths=None):
        """Predicted targets (regression) or labels (classification).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Recurrent models: (n_samples, n_steps, n_features).
        lengths : array-like of int, optional
            Recurrent models: the valid steps of each sequence.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_targets); with a leading
        (n_samples, n_steps) for a recurrent model with ``output="sequence"``
        """
        Z = self.decision_function(X, lengths)
        if self.model.task == "regression":
            return Z[..., 0] if self._single_target else Z
        if self.model.task == "binary":
            return self.classes_[(Z[..., 0] > 0).astype(np.intp)]
        return self.classes_[np.argmax(Z, axis=-1)]

    def predict_proba(self, X, lengths=None):
        """Class probabilities, shape (n_samples, n_classes) (recurrent models with
        ``output="sequence"``: (n_samples, n_steps, n_classes)), columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional
            Recurrent models: the valid steps of each sequence.
        """
        if self.model.task == "regression":
            raise AttributeError("predict_proba is only available for classifiers")
        Z = self.decision_function(X, lengths)
        if self.model.task == "binary":
            p = 0.5 * (1.0 + np.tanh(0.5 * Z[..., 0]))  # sigmoid without overflow
            return np.stack([1.0 - p, p], axis=-1)
        Z = Z - Z.max(axis=-1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=-1, keepdims=True)

    def __repr__(self):
        return (
            f"FitResult(model={self.model.name!r}, backend={self.backend!r}, dtype={self.dtype}, "
            f"n_epochs={self.n_epochs}, stop_reason={self.stop_reason!r}, "
            f"final_loss={self.loss_history[-1] if len(self.loss_history) else float('nan'):.6g}, "
            f"train_time={self.train_time:.4g}s, compile_time={self.compile_time:.4g}s)"
        )
