"""Early stopping trains on the training rows of the caller's array, without a copy.

The reference is early stopping written out the way ``fit`` did it when it copied the
rows apart: the plain fit on ``X[train_rows]`` (the same seed, so the same initial
parameters and the same shuffled orders of the training rows), and after each epoch the
validation loss of its parameters on the gathered held-out rows (their sample weights
rescaled to mean 1 on their own). Early stopping must give that run bit for bit: the
training-loss history, the validation-loss history, the best epoch and its parameters,
running averages, optimizer state and update count.
"""

import numpy as np
import pytest

import fastgd
from fastgd.backends.contract import Data, SequenceData
from fastgd.backends.shared import data_loss

SEED = 5
EPOCHS = 6


def _dense(n, d, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    return X, rng


def _linear_weighted():
    X, rng = _dense(80, 3)
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.standard_normal(80)
    options = dict(batch_size=8, lr=0.05, sample_weight=np.linspace(0.5, 2.0, 80))
    return X, y, "linear", options


def _one_feature_in_order():
    X, rng = _dense(60, 1)
    y = 2.0 * X[:, 0] + 0.1 * rng.standard_normal(60)
    return X, y, "linear", dict(batch_size=16, shuffle=False, lr=0.1)


def _softmax_full_batch():
    X, rng = _dense(90, 4)
    y = np.argmax(X[:, :3] + 0.5 * rng.standard_normal((90, 3)), axis=1)
    return X, y, "softmax", dict(batch_size=None, optimizer="adam", lr=0.05)


def _mlp_batch_norm():
    X, rng = _dense(80, 4, np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    model = fastgd.MLP(hidden=(6,), batch_norm=True)
    return X, y, model, dict(batch_size=16, optimizer="adam", lr=0.01)


def _rnn():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 4, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    lengths = rng.integers(1, 5, size=50)
    options = dict(batch_size=8, optimizer="adam", lr=0.01, lengths=lengths)
    return X, y, fastgd.RNN("gru", hidden=4), options


def _csr_logistic():
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.random(80, 20, density=0.2, format="csr", random_state=4)
    y = (np.asarray(X.sum(axis=1)).ravel() > 0.8).astype(int)
    return X, y, "logistic", dict(batch_size=8, lr=0.1)


CASES = {
    "linear-weighted-shuffled": _linear_weighted,
    "one-feature-in-order": _one_feature_in_order,
    "softmax-full-batch": _softmax_full_batch,
    "mlp-batch-norm-float32": _mlp_batch_norm,
    "rnn-gru-lengths": _rnn,
    "csr-logistic": _csr_logistic,
}


def _held_out(X, y, weights, lengths, rows, dtype):
    """The held-out rows as fit gathered them: encoded targets (the labels here are 0..k-1)
    and sample weights rescaled to mean 1 over these rows."""
    Y = y[rows].astype(dtype)[:, None]
    w = np.empty(0, dtype=dtype)
    if weights is not None:
        w = (weights[rows] / weights[rows].mean(dtype=np.float64)).astype(dtype)
    if lengths is not None:
        return SequenceData(X[rows], Y, w, np.asarray(lengths[rows], dtype=np.int64))
    return Data(X[rows], Y, w)


def _reference(X, y, model, backend, options, result):
    """Early stopping as the copying implementation ran it: the plain fit on the training
    rows for the epochs ``result`` ran, with the validation loss of every epoch."""
    rows = result.validation_rows
    train = np.setdiff1d(np.arange(X.shape[0]), rows)
    weights, lengths = options.get("sample_weight"), options.get("lengths")
    plain_options = dict(options)
    for name, value in (("sample_weight", weights), ("lengths", lengths)):
        if value is not None:
            plain_options[name] = value[train]
    snapshots = []
    plain = fastgd.fit(
        X[train], y[train], model, backend=backend, seed=SEED, epochs=result.n_epochs,
        callback=lambda epoch, info: snapshots.append(info["result"]), **plain_options,
    )  # fmt: skip
    dtype = plain.params.dtype
    held_out = _held_out(X, y, weights, lengths, rows, dtype)
    kernel_model = plain.model.kernel_model()
    empty = np.empty(0, dtype=dtype)
    losses = [
        data_loss(kernel_model, held_out, s.params, empty if s.running is None else s.running)
        for s in snapshots
    ]
    return plain, snapshots, np.array(losses)


@pytest.mark.parametrize("case", list(CASES))
def test_early_stopping_equals_the_fit_on_the_training_rows(backend, case):
    X, y, model, options = CASES[case]()
    result = fastgd.fit(
        X, y, model, backend=backend, seed=SEED, epochs=EPOCHS, early_stopping=True,
        validation_fraction=0.3, n_iter_no_change=2, **options,
    )  # fmt: skip
    plain, snapshots, losses = _reference(X, y, model, backend, options, result)
    if backend != "numpy" and case == "one-feature-in-order":
        # the one exception: one feature, least squares, no weights, rows in order. Over
        # the contiguous rows of a copy, the compiled loop of this case is vectorized
        # (the row sums reassociated); over the training rows where they are, it adds
        # them one after the other. The same run up to rounding (a few ulps), and the
        # same on every later call: the order of the sums depends on the data only.
        np.testing.assert_allclose(result.loss_history, plain.loss_history, rtol=1e-13)
        np.testing.assert_allclose(result.params, snapshots[result.best_epoch].params, rtol=1e-12)  # fmt: skip
        return
    np.testing.assert_array_equal(result.loss_history, plain.loss_history)
    np.testing.assert_array_equal(result.validation_loss_history, losses)
    best = snapshots[result.best_epoch]
    assert result.best_epoch == int(np.argmin(losses))
    np.testing.assert_array_equal(result.params, best.params)
    np.testing.assert_array_equal(result.optimizer_state, best.optimizer_state)
    assert result.n_updates == best.n_updates
    if best.running is not None:
        np.testing.assert_array_equal(result.running, best.running)


@pytest.mark.parametrize("min_rows", [2, 5])
@pytest.mark.parametrize("case", ["linear-weighted-shuffled", "mlp-batch-norm-float32", "rnn-gru-lengths", "csr-logistic"])  # fmt: skip
def test_validation_loss_in_small_blocks_is_the_same(monkeypatch, case, min_rows):
    """The held-out rows read a few at a time (blocks of 2-3 or 5-9 rows) give the loss
    of the gathered rows bit for bit."""
    from fastgd.backends import shared

    X, y, model, options = CASES[case]()
    kwargs = dict(backend="numpy", seed=SEED, epochs=3, early_stopping=True, validation_fraction=0.3)  # fmt: skip
    monkeypatch.setattr(shared, "HELD_OUT_VALUES", 1)
    monkeypatch.setattr(shared, "HELD_OUT_MIN_ROWS", min_rows)
    result = fastgd.fit(X, y, model, **kwargs, **options)
    _, _, losses = _reference(X, y, model, "numpy", options, result)
    np.testing.assert_array_equal(result.validation_loss_history, losses)
