"""fastgd.fit end to end: known answers, dtypes, reproducibility, results and messages."""

import warnings

import numpy as np
import pytest

import fastgd
from fastgd.backends import get_backend
from fastgd.specs import stopping


def test_demo_recovers_weight_and_bias(backend):
    from fastgd.demo import make_data

    X, y = make_data()
    result = fastgd.fit(X, y, batch_size=None, epochs=1000, lr=0.1, backend=backend)
    assert result.coef_.shape == (1,)
    assert result.coef_[0] == pytest.approx(2.0, abs=0.05)
    assert result.intercept_ == pytest.approx(1.0, abs=0.05)
    assert result.n_epochs == 1000 and result.stop_reason == "max_epochs"
    assert result.backend == backend
    # the loss falls to the noise level (noise variance 0.01)
    assert result.loss_history[0] > 1.0 and result.loss_history[-1] < 0.012


def test_least_squares_matches_normal_equations(backend):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 6))
    y = X @ rng.standard_normal(6) + 3.0 + 0.5 * rng.standard_normal(500)
    A = np.column_stack([X, np.ones(500)])
    exact = np.linalg.solve(A.T @ A, A.T @ y)
    result = fastgd.fit(X, y, batch_size=None, epochs=2000, lr=0.2, backend=backend)
    np.testing.assert_allclose(result.coef_, exact[:6], atol=1e-8)
    assert result.intercept_ == pytest.approx(exact[6], abs=1e-8)


def test_multi_target_regression_matches_normal_equations(backend):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 4))
    Y = X @ rng.standard_normal((4, 2)) + 0.1 * rng.standard_normal((300, 2))
    exact = np.linalg.lstsq(X, Y, rcond=None)[0]
    result = fastgd.fit(X, Y, batch_size=None, epochs=3000, lr=0.5, fit_intercept=False, backend=backend)  # fmt: skip
    assert result.coef_.shape == (2, 4) and result.intercept_.shape == (2,)
    np.testing.assert_allclose(result.coef_, exact.T, atol=1e-8)
    assert np.all(result.intercept_ == 0)
    assert result.predict(X).shape == (300, 2)


def _standardized(loader):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)  # fmt: skip
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def test_logistic_on_breast_cancer_close_to_scikit_learn(backend):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, y_test = _standardized(load_breast_cancer)
    reference = LogisticRegression(C=1e4, max_iter=5000).fit(X_train, y_train).score(X_test, y_test)  # fmt: skip
    result = fastgd.fit(X_train, y_train, model="logistic", batch_size=32, epochs=50, lr=0.05, seed=0, backend=backend)  # fmt: skip
    accuracy = np.mean(result.predict(X_test) == y_test)
    assert accuracy >= reference - 0.03
    assert accuracy > 0.93


def test_softmax_on_digits_close_to_scikit_learn(backend):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, y_test = _standardized(load_digits)
    reference = LogisticRegression(max_iter=5000).fit(X_train, y_train).score(X_test, y_test)
    result = fastgd.fit(X_train, y_train, model="softmax", batch_size=32, epochs=30, lr=0.05, seed=0, backend=backend)  # fmt: skip
    accuracy = np.mean(result.predict(X_test) == y_test)
    assert accuracy >= reference - 0.03
    proba = result.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(result.classes_[proba.argmax(axis=1)], result.predict(X_test))


def test_labels_may_be_any_two_values(backend):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 2))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "spam", "ham")
    result = fastgd.fit(X, labels, model="logistic", epochs=20, lr=0.1, seed=0, backend=backend)
    assert list(result.classes_) == ["ham", "spam"]
    assert np.mean(result.predict(X) == labels) > 0.95
    proba = result.predict_proba(X)
    assert proba.shape == (200, 2)
    np.testing.assert_array_equal(
        result.classes_[(proba[:, 1] > 0.5).astype(int)], result.predict(X)
    )


def test_softmax_with_two_classes_and_unsorted_numeric_labels(backend):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 2))
    y = np.where(X[:, 0] > 0, 7, -3)
    result = fastgd.fit(X, y, model="softmax", epochs=20, lr=0.1, seed=0, backend=backend)
    assert list(result.classes_) == [-3, 7]
    assert np.mean(result.predict(X) == y) > 0.95


def test_float32_stays_float32_and_agrees_with_float64(backend):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1000, 8))
    y = X @ rng.standard_normal(8) + 1.0
    r64 = fastgd.fit(X, y, epochs=10, lr=0.01, seed=0, backend=backend)
    r32 = fastgd.fit(X.astype(np.float32), y.astype(np.float32), epochs=10, lr=0.01, seed=0, backend=backend)  # fmt: skip
    assert r64.dtype == np.float64 and r32.dtype == np.float32
    assert r32.coef_.dtype == np.float32
    assert r32.predict(X.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(r32.params, r64.params, rtol=1e-4, atol=1e-4)


def test_integer_input_is_converted_to_float64(backend):
    X = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    result = fastgd.fit(X, y, epochs=2, lr=1e-3, backend=backend)
    assert result.dtype == np.float64


def test_same_seed_same_result_and_backends_agree(backend):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((500, 5))
    y = (X[:, 0] > 0).astype(int)
    a = fastgd.fit(X, y, model="logistic", epochs=5, seed=42, backend=backend)
    b = fastgd.fit(X, y, model="logistic", epochs=5, seed=42, backend=backend)
    reference = fastgd.fit(X, y, model="logistic", epochs=5, seed=42, backend="numpy")
    assert np.array_equal(a.params, b.params)
    np.testing.assert_allclose(a.params, reference.params, rtol=1e-10, atol=1e-12)
    c = fastgd.fit(X, y, model="logistic", epochs=5, seed=43, backend=backend)
    assert not np.array_equal(a.params, c.params)


def test_n_threads_do_not_change_the_fit(backend):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40000, 10))
    y = X @ rng.standard_normal(10)
    one = fastgd.fit(X, y, batch_size=None, epochs=3, n_threads=1, backend=backend)
    two = fastgd.fit(X, y, batch_size=None, epochs=3, n_threads=2, backend=backend)
    assert np.array_equal(one.params, two.params)
    assert one.n_threads == 1 and two.n_threads == 2


def test_tol_stops_training_as_converged(backend):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    result = fastgd.fit(X, y, batch_size=None, epochs=10000, lr=0.1, tol=1e-12, n_iter_no_change=3, backend=backend)  # fmt: skip
    assert result.converged and result.stop_reason == "converged"
    assert result.n_epochs < 10000 and len(result.loss_history) == result.n_epochs
    history = result.loss_history
    for epoch in range(result.n_epochs - 3, result.n_epochs):  # no improvement by tol on the best
        assert history[epoch] > history[:epoch].min() - 1e-12
    assert history[-4] <= history[:-4].min() - 1e-12  # the epoch before did improve


def test_tol_rule_spans_kernel_calls(backend):
    # verbose=1 runs one epoch per kernel call: the stop must come at the same epoch
    rng = np.random.default_rng(8)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    kwargs = dict(batch_size=None, epochs=5000, lr=0.1, tol=1e-10, n_iter_no_change=3, backend=backend)  # fmt: skip
    whole = fastgd.fit(X, y, **kwargs)
    stepwise = fastgd.fit(X, y, verbose=100000, **kwargs)
    assert whole.n_epochs == stepwise.n_epochs < 5000
    assert np.array_equal(whole.params, stepwise.params)


def test_shuffled_blocks_match_one_call(backend, monkeypatch):
    # the epochs run in several kernel calls when the row orders exceed the budget
    import fastgd.training.trainer

    rng = np.random.default_rng(9)
    X = rng.standard_normal((1000, 4))
    y = X @ rng.standard_normal(4)
    whole = fastgd.fit(X, y, epochs=6, seed=1, backend=backend)
    monkeypatch.setattr(fastgd.training.trainer, "ORDER_BUDGET", 2500)  # two epochs per call
    blocks = fastgd.fit(X, y, epochs=6, seed=1, backend=backend)
    assert np.array_equal(whole.params, blocks.params)


def test_verbose_prints_loss_per_epoch(backend, capsys):
    from fastgd.demo import make_data

    X, y = make_data()
    result = fastgd.fit(X, y, batch_size=None, epochs=5, lr=0.1, verbose=True, backend=backend)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"Epoch: {e}, Loss: {result.loss_history[e]:.6g}" for e in range(5)]
    fastgd.fit(X, y, batch_size=None, epochs=250, lr=0.1, verbose=100, backend=backend)
    printed = [line.split(",")[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == ["Epoch: 0", "Epoch: 100", "Epoch: 200", "Epoch: 249"]


def test_divergence_warns_names_epoch_and_keeps_finite_parameters(backend):
    rng = np.random.default_rng(10)
    X = 10 * rng.standard_normal((100, 3))
    y = X @ np.ones(3)
    with pytest.warns(
        fastgd.DivergenceWarning, match=r"diverged at epoch \d+.*smaller learning rate"
    ):
        result = fastgd.fit(X, y, batch_size=None, epochs=1000, lr=1.0, backend=backend)
    assert result.stop_reason == "diverged" and not result.converged
    assert result.n_epochs < 1000
    assert np.all(np.isfinite(result.params))
    last, first = result.loss_history[-1], result.loss_history[0]
    # the loss that stopped it: non-finite, or finite and run away
    assert not np.isfinite(last) or last > stopping.RUNAWAY_FACTOR * max(first, 1.0)
    assert np.all(np.isfinite(result.loss_history[:-1]))
    with pytest.raises(fastgd.DivergenceError, match="smaller learning rate"):
        fastgd.fit(X, y, batch_size=None, epochs=1000, lr=1.0, backend=backend, on_divergence="raise")  # fmt: skip


def test_a_finite_runaway_loss_is_divergence_and_keeps_the_last_good_parameters(backend):
    # the example: the loss grows geometrically while finite (2e217 after 5 epochs
    # before the runaway rule); it stops at the first epoch past 1e4 x the first epoch's
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = 1e6 * X[:, 0]
    with pytest.warns(fastgd.DivergenceWarning, match="grew to .* over 10000 times.*clip_norm"):
        result = fastgd.fit(X, y, lr=10, epochs=5, seed=0, backend=backend)
    assert result.stop_reason == "diverged" and result.n_epochs == 2
    first, last = result.loss_history
    assert np.isfinite(last) and last > stopping.RUNAWAY_FACTOR * first
    # the parameters are those after epoch 0: one epoch from the same start gives them
    one = fastgd.fit(X, y, lr=10, epochs=1, seed=0, backend=backend)
    np.testing.assert_array_equal(result.params, one.params)
    np.testing.assert_array_equal(result.optimizer_state, one.optimizer_state)


def test_a_float32_loss_beyond_float32_range_is_divergence(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2)).astype(np.float32)
    y = (1e17 * X[:, 0]).astype(np.float32)  # first loss ~1e34, near float32's 3.4e38
    with pytest.warns(fastgd.DivergenceWarning):
        result = fastgd.fit(X, y, lr=1.5, batch_size=None, epochs=20, backend=backend)
    assert result.stop_reason == "diverged"
    assert np.all(np.isfinite(result.params))
    assert (
        result.loss_history[-1] > np.finfo(np.float32).max
        or not np.isfinite(result.loss_history[-1])
        or result.loss_history[-1] > stopping.RUNAWAY_FACTOR * result.loss_history[0]
    )


def test_runaway_rule_thresholds():
    # the rule every backend applies (the reference and Numba call this very function;
    # Cython's C spelling is checked by the fits above): factor x max(first loss, 1), so
    # losses below 1 never count as runaway, and anything beyond the dtype's range does
    f64_max = float(np.finfo(np.float64).max)

    def losses_after(first, later, largest=f64_max):
        state = stopping.new_stop_state()
        assert not stopping.runaway(first, state, largest) and state[2] == first
        return stopping.runaway(later, state, largest)

    assert not losses_after(1e-8, 1e-3)  # a thousandfold, but below 1
    assert not losses_after(1e-8, 0.9e4)
    assert losses_after(1e-8, 1.1e4)
    assert not losses_after(10.0, 0.9e5)
    assert losses_after(10.0, 1.1e5)
    assert losses_after(1e30, 1e39, largest=float(np.finfo(np.float32).max))
    assert not losses_after(1e30, 1e33, largest=float(np.finfo(np.float32).max))


def test_user_arrays_are_not_modified_and_fitting_arrays_not_copied(backend, monkeypatch):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 4))
    y = X @ rng.standard_normal(4)
    X_before, y_before = X.copy(), y.copy()
    seen = []
    module = get_backend(backend)
    original = module.train_epochs

    def spy(model, data, *args):
        seen.append(data.X)
        return original(model, data, *args)

    monkeypatch.setattr(module, "train_epochs", spy)
    fastgd.fit(X, y, epochs=3, backend=backend)
    assert np.array_equal(X, X_before) and np.array_equal(y, y_before)
    assert all(np.shares_memory(s, X) for s in seen)  # C-contiguous float64: no copy


def test_read_only_and_non_contiguous_input(backend):
    rng = np.random.default_rng(12)
    X = rng.standard_normal((200, 6))
    y = X @ rng.standard_normal(6)
    X.flags.writeable = False
    y.flags.writeable = False
    a = fastgd.fit(X, y, epochs=3, seed=0, backend=backend)
    b = fastgd.fit(np.asfortranarray(X), y, epochs=3, seed=0, backend=backend)
    assert np.array_equal(a.params, b.params)


def test_second_fit_does_not_compile_again():
    pytest.importorskip("numba")
    from fastgd.backends.numba import linear

    rng = np.random.default_rng(13)
    X = rng.standard_normal((100, 3))
    y = X @ np.ones(3)
    fastgd.fit(X, y, epochs=2, backend="numba")
    count = linear.compiled_signatures()
    second = fastgd.fit(X[:50] * 2, y[:50], epochs=3, batch_size=7, lr=0.02, backend="numba")
    assert linear.compiled_signatures() == count
    assert second.compile_time < 0.5


def test_one_signature_per_kernel_with_early_stopping():
    pytest.importorskip("numba")
    import subprocess
    import sys

    # a new process: the kernels have seen no other dtype or layout
    script = (
        "import numpy as np, fastgd\n"
        "from fastgd.backends.numba import linear\n"
        "rng = np.random.default_rng(14)\n"
        "X = rng.standard_normal((300, 4))\n"
        "y = (X[:, 0] > 0).astype(int)\n"
        "for _ in range(2):\n"
        "    fastgd.fit(X, y, model='logistic', epochs=3, early_stopping=True, backend='numba')\n"
        "from fastgd.backends.contract import Data, LinearModel\n"
        "data = Data(X, y[:, None].astype(float), np.empty(0))\n"
        "for model in [LinearModel(1, 1, True), LinearModel(np.int64(1), np.int32(1), np.True_)]:\n"
        "    linear.loss_and_gradient(model, data, np.zeros(5))\n"
        "print(sorted(len(kernel.signatures) for kernel in linear.dispatchers()))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    counts = eval(run.stdout)
    assert max(counts) == 1 and sum(counts) == 2, (
        run.stdout
    )  # training and gradient kernels, once each


def test_read_only_data_does_not_compile_again():
    # Numba types read-only arrays apart; the backend marks all data read-only, so a
    # memmap or a locked array reuses the kernels of a writeable one
    numba_kernels = pytest.importorskip("fastgd.backends.numba.linear")
    rng = np.random.default_rng(14)
    X = rng.standard_normal((100, 3))
    y = X @ np.ones(3)
    writeable = fastgd.fit(X, y, epochs=2, backend="numba", seed=0)
    count = numba_kernels.compiled_signatures()
    X.flags.writeable = False
    locked = fastgd.fit(X, y, epochs=2, backend="numba", seed=0)
    assert numba_kernels.compiled_signatures() == count
    assert np.array_equal(locked.params, writeable.params)


def test_result_repr_and_fields():
    X = np.linspace(-1, 1, 50)
    result = fastgd.fit(X, 3 * X, epochs=2, backend="numpy")
    text = repr(result)
    assert "model='linear'" in text and "backend='numpy'" in text
    assert result.train_time >= 0 and result.compile_time >= 0
    with pytest.raises(AttributeError, match="only available for classifiers"):
        result.predict_proba(X)


def test_show_config_lists_backends(capsys):
    info = fastgd.show_config()
    out = capsys.readouterr().out
    assert "backends available" in out and info["backends available"].startswith(fastgd.available_backends()[0])  # fmt: skip
    assert info["default backend"] in fastgd.available_backends()


def test_auto_backend_and_environment_override(monkeypatch):
    X = np.linspace(-1, 1, 20)
    assert fastgd.fit(X, X, epochs=1).backend == fastgd.available_backends()[0]
    monkeypatch.setenv("FASTGD_BACKEND", "numpy")
    assert fastgd.fit(X, X, epochs=1).backend == "numpy"
    monkeypatch.setenv("FASTGD_BACKEND", "fortran")
    with pytest.raises(ValueError, match="FASTGD_BACKEND"):
        fastgd.fit(X, X, epochs=1)


def test_no_warnings_on_a_normal_fit(backend):
    X = np.linspace(-1, 1, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastgd.fit(X, 2 * X + 1, epochs=3, backend=backend)


def test_new_process_loads_compiled_kernels_from_disk_cache():
    pytest.importorskip("numba")
    import subprocess
    import sys

    script = (
        "import numpy as np, fastgd\n"
        "from fastgd.backends.numba import linear\n"
        "X = np.linspace(-1, 1, 50)\n"
        "fastgd.fit(X, 2 * X, epochs=2, backend='numba')\n"
        "assert linear.dispatchers()\n"
        "print([dict(k.stats.cache_misses) for k in linear.dispatchers() if k.stats.cache_misses])\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[1].stdout.strip() == "[]", runs[1].stdout + runs[1].stderr  # nothing compiled


def test_callback_sees_each_epoch_and_can_stop(backend):
    X = np.linspace(-1, 1, 100)
    seen = []

    def stop_after_three(epoch, info):
        seen.append((epoch, info["loss"], info["params"]))
        return epoch == 2

    result = fastgd.fit(X, 2 * X + 1, epochs=50, callback=stop_after_three, seed=0, backend=backend)
    assert [e for e, _, _ in seen] == [0, 1, 2]
    assert result.n_epochs == 3 and result.stop_reason == "callback"
    assert [loss for _, loss, _ in seen] == list(result.loss_history)
    np.testing.assert_array_equal(seen[-1][2], result.params)
    assert not np.array_equal(seen[0][2], seen[-1][2])  # copies, not views of live params
    with pytest.raises(ValueError, match="callback must be callable"):
        fastgd.fit(X, X, callback="print")


def test_warm_start_continues_training(backend):
    rng = np.random.default_rng(14)
    X = rng.standard_normal((300, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    kwargs = dict(model="logistic", optimizer="adam", lr=0.01, batch_size=None, backend=backend)
    whole = fastgd.fit(X, y, epochs=10, **kwargs)
    first = fastgd.fit(X, y, epochs=4, **kwargs)
    rest = fastgd.fit(X, y, epochs=6, init=first, **kwargs)
    # full batches, same optimizer state carried over: exactly the uninterrupted run
    np.testing.assert_allclose(rest.params, whole.params, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([first.loss_history, rest.loss_history]), whole.loss_history, rtol=1e-12)  # fmt: skip
    assert rest.n_updates == 10
    assert first.params is not rest.params and not np.array_equal(first.params, rest.params)
    with pytest.raises(ValueError, match="does not match"):
        fastgd.fit(X[:, :3], y, epochs=1, init=first, **kwargs)
    with pytest.raises(ValueError, match="init must be a FitResult"):
        fastgd.fit(X, y, epochs=1, init=first.params, **kwargs)


def test_early_stopping_returns_the_best_validation_epoch(backend):
    # more features than the training rows can pin down: the validation loss turns up
    rng = np.random.default_rng(15)
    X = rng.standard_normal((60, 40))
    y = X[:, 0] + 0.5 * rng.standard_normal(60)
    result = fastgd.fit(X, y, early_stopping=True, validation_fraction=0.25, n_iter_no_change=5,
                        optimizer="adam", lr=0.05, batch_size=None, epochs=2000, seed=3, backend=backend)  # fmt: skip
    assert result.stop_reason == "early_stopping"
    history = result.validation_loss_history
    assert len(history) == result.n_epochs == result.best_epoch + 1 + 5
    assert result.best_epoch == int(np.argmin(history))
    assert len(result.validation_rows) == 15
    # the returned parameters are those of the best epoch: their validation loss is the minimum
    rows = result.validation_rows
    loss = np.mean((result.predict(X[rows]) - y[rows]) ** 2)
    assert loss == pytest.approx(history.min(), rel=1e-10)
    assert result.loss_history[-1] < result.loss_history[result.best_epoch]  # training went on


def test_early_stopping_arguments():
    X = np.linspace(-1, 1, 20)
    for bad in (0.0, 1.0, -0.2, "a"):
        with pytest.raises(ValueError, match="validation_fraction must be in \\(0, 1\\)"):
            fastgd.fit(X, X, early_stopping=True, validation_fraction=bad)
    with pytest.raises(ValueError, match="leaves none to train on"):
        fastgd.fit(X[:2], X[:2], early_stopping=True, validation_fraction=0.9)


def test_progress_bar_shows_epochs_and_loss(backend, capsys):
    pytest.importorskip("tqdm")
    X = np.linspace(-1, 1, 100)
    result = fastgd.fit(X, 2 * X, epochs=7, progress=True, backend=backend)
    err = capsys.readouterr().err
    assert "7/7" in err and f"loss={result.loss_history[-1]:.4g}" in err


def test_progress_without_tqdm_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # makes the import fail
    with pytest.raises(ValueError, match=r"progress=True needs tqdm.*fastgd\[progress\]"):
        fastgd.fit(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20), progress=True)
