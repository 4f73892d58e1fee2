"""Kernels: the reference against finite differences, every backend against the reference."""

import numpy as np
import pytest
from helpers import (
    LOSS_CASES,
    LOSS_IDS,
    NO_WEIGHTS,
    linear_loss,
    make_problem,
    numeric_gradient,
    numpy_ref,
    run_epochs,
)

from fastgd import optim
from fastgd.specs import losses, stopping


@pytest.mark.parametrize("loss_code,k", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_reference_gradient_matches_finite_differences(loss_code, k, fit_intercept, weighted):
    X, Y, params = make_problem(loss_code, k, n=50, d=4)
    weights = np.random.default_rng(5).uniform(0.0, 3.0, size=50) if weighted else NO_WEIGHTS

    def loss(p):
        return linear_loss(numpy_ref, X, Y, weights, p, loss_code, k, fit_intercept)[0]

    _, grad = linear_loss(numpy_ref, X, Y, weights, params, loss_code, k, fit_intercept)
    numeric = numeric_gradient(loss, params)
    n_weights = X.shape[1] * k
    np.testing.assert_allclose(grad[:n_weights], numeric[:n_weights], rtol=1e-6, atol=1e-8)
    if fit_intercept:
        np.testing.assert_allclose(grad[n_weights:], numeric[n_weights:], rtol=1e-6, atol=1e-8)
    else:
        assert np.all(grad[n_weights:] == 0)


def test_reference_losses_have_known_values():
    X = np.zeros((2, 1))
    params = np.array([0.0, 0.0])  # z = 0 for every sample
    loss, _ = linear_loss(
        numpy_ref, X, np.array([[1.0], [3.0]]), NO_WEIGHTS, params, losses.MSE, 1, True
    )
    assert loss == pytest.approx((1 + 9) / 2)
    loss, _ = linear_loss(numpy_ref, X, np.array([[1.0], [0.0]]), NO_WEIGHTS, params, losses.BINARY_CROSS_ENTROPY, 1, True)  # fmt: skip
    assert loss == pytest.approx(np.log(2))
    params3 = np.zeros(3 + 3)
    loss, _ = linear_loss(numpy_ref, X, np.array([[2.0], [0.0]]), NO_WEIGHTS, params3, losses.CATEGORICAL_CROSS_ENTROPY, 3, True)  # fmt: skip
    assert loss == pytest.approx(np.log(3))


def test_cross_entropy_is_finite_for_extreme_decision_values(backend):
    from fastgd.backends import get_backend

    module = get_backend(backend)
    X = np.array([[1.0], [-1.0]])
    huge = np.array([800.0, 0.0])  # z = +-800: exp(800) overflows
    loss, grad = linear_loss(module, X, np.array([[0.0], [1.0]]), NO_WEIGHTS, huge, losses.BINARY_CROSS_ENTROPY, 1, True)  # fmt: skip
    assert loss == pytest.approx(800.0) and np.all(np.isfinite(grad))
    params = np.array([800.0, -800.0, 0.0, 0.0])
    loss, grad = linear_loss(module, X, np.array([[1.0], [0.0]]), NO_WEIGHTS, params, losses.CATEGORICAL_CROSS_ENTROPY, 2, True)  # fmt: skip
    assert loss == pytest.approx(1600.0) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("loss_code,k", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_backend_gradient_matches_reference(compiled_backend, loss_code, k, fit_intercept):
    X, Y, params = make_problem(loss_code, k, n=3000, d=30)  # large enough for parallel chunks
    expected_loss, expected = linear_loss(
        numpy_ref, X, Y, NO_WEIGHTS, params, loss_code, k, fit_intercept
    )
    loss, grad = linear_loss(
        compiled_backend, X, Y, NO_WEIGHTS, params, loss_code, k, fit_intercept
    )
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss_code,k", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("batch_size,shuffle", [(1, True), (32, True), (100, False), (2000, False)])
def test_backend_training_matches_reference_float64(compiled_backend, loss_code, k, batch_size, shuffle):  # fmt: skip
    X, Y, _ = make_problem(loss_code, k, n=2000, d=40)
    lr = 0.005 if batch_size == 1 else 0.05  # stable for per-sample steps on 40 features
    expected = run_epochs(numpy_ref, X, Y, loss_code, k, batch_size=batch_size, shuffle=shuffle, lr=lr)  # fmt: skip
    result = run_epochs(compiled_backend, X, Y, loss_code, k, batch_size=batch_size, shuffle=shuffle, lr=lr, n_threads=2)  # fmt: skip
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result[1], expected[1], rtol=1e-10)
    assert result[2:] == expected[2:] == (5, stopping.MAX_EPOCHS)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_multi_output_blocks_match_reference(compiled_backend, shuffle, weighted):
    """Multi-output models compute each block of a chunk's rows with two BLAS products;
    d = 200 makes blocks of 163 rows, so the 250-row chunks of a 4000-row batch hold two
    blocks (the second one partial), gathered first when the rows are shuffled."""
    rng = np.random.default_rng(3)
    X, Y, _ = make_problem(losses.CATEGORICAL_CROSS_ENTROPY, 4, n=4000, d=200)
    weights = rng.uniform(0.5, 2.0, 4000) if weighted else None
    options = dict(batch_size=4000, shuffle=shuffle, lr=0.1, epochs=3, weights=weights)
    expected = run_epochs(numpy_ref, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 4, **options)
    results = [
        run_epochs(
            compiled_backend,
            X,
            Y,
            losses.CATEGORICAL_CROSS_ENTROPY,
            4,
            n_threads=threads,
            **options,
        )  # fmt: skip
        for threads in (1, 2)
    ]
    np.testing.assert_allclose(results[0][0], expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[0][1], expected[1], rtol=1e-10)
    np.testing.assert_array_equal(results[1][0], results[0][0])  # any thread count


@pytest.mark.parametrize("loss_code,k", LOSS_CASES, ids=LOSS_IDS)
def test_backend_training_matches_reference_float32(compiled_backend, loss_code, k):
    X, Y, _ = make_problem(loss_code, k, n=2000, d=40, dtype=np.float32)
    expected = run_epochs(numpy_ref, X, Y, loss_code, k, batch_size=64)
    result = run_epochs(compiled_backend, X, Y, loss_code, k, batch_size=64, n_threads=2)
    assert result[0].dtype == np.float32
    scale = np.abs(expected[0]).max()
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(result[1], expected[1], rtol=1e-4)


@pytest.mark.parametrize(
    "loss_code", [losses.MSE, losses.BINARY_CROSS_ENTROPY], ids=["mse", "binary-ce"]
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("batch_size,shuffle", [(None, False), (150, False), (32, True), (1, True)])
def test_one_feature_matches_reference(compiled_backend, loss_code, dtype, weighted, fit_intercept, batch_size, shuffle):  # fmt: skip
    # one feature has its own loops (gradient sums in registers; least squares in natural
    # order without weights is vectorized); 150 rows are split into two chunks
    X, Y, _ = make_problem(loss_code, 1, n=150, d=1, seed=3, dtype=dtype)
    weights = np.random.default_rng(4).uniform(0.0, 2.0, 150) if weighted else None
    options = dict(batch_size=batch_size or 150, shuffle=shuffle, lr=0.05, epochs=20, weights=weights, fit_intercept=fit_intercept)  # fmt: skip
    expected = run_epochs(numpy_ref, X, Y, loss_code, 1, **options)
    result = run_epochs(compiled_backend, X, Y, loss_code, 1, n_threads=2, **options)
    assert result[0].dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert np.abs(expected[0]).max() > 0.1  # it learned something
    np.testing.assert_allclose(result[0], expected[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(result[1], expected[1], rtol=tol)
    assert result[2:] == expected[2:]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_size", [32, 20000])
def test_results_bit_identical_for_one_and_two_threads(compiled_backend, dtype, batch_size):
    # 20000 x 20 full batches take the parallel path; batches of 32 the serial one
    X, Y, _ = make_problem(losses.CATEGORICAL_CROSS_ENTROPY, 3, n=20000, d=20, dtype=dtype)
    one = run_epochs(compiled_backend, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 3, epochs=3, batch_size=batch_size, n_threads=1)  # fmt: skip
    two = run_epochs(compiled_backend, X, Y, losses.CATEGORICAL_CROSS_ENTROPY, 3, epochs=3, batch_size=batch_size, n_threads=2)  # fmt: skip
    assert np.array_equal(one[0], two[0])
    assert np.array_equal(one[1], two[1])


# Batches of 256 rows are 4 chunks: on 2 threads both compiled kernels run batches on a
# team of threads (one parallel region per epoch, chunks dealt in tickets). 2000 rows end
# with a batch of 208 rows (3 chunks, dealt unevenly). TEAM_BATCHES = False runs Cython's
# batches as before its team (chunks of a small batch serially, a fork/join per large one);
# the setting is Cython's only, so its two cases are the same for Numba.
TEAM_WORK = pytest.mark.parametrize("team_work", [True, False], ids=["team", "fork-join"])


def _team_work(monkeypatch, value):
    import fastgd.backends.cython.linear as cython_linear

    monkeypatch.setattr(cython_linear, "TEAM_BATCHES", value)


TEAM_CASES = {
    "in-order-sgd": dict(loss=(losses.MSE, 1), shuffle=False, weighted=False, optimizer=None),
    "shuffled-weighted-adam": dict(
        loss=(losses.BINARY_CROSS_ENTROPY, 1),
        shuffle=True,
        weighted=True,
        optimizer=optim.Adam(lr=0.01),
    ),
    "softmax-shuffled": dict(
        loss=(losses.CATEGORICAL_CROSS_ENTROPY, 4), shuffle=True, weighted=False, optimizer=None
    ),
}


@TEAM_WORK
@pytest.mark.parametrize("case", list(TEAM_CASES))
def test_team_batches_match_reference_and_one_thread(compiled_backend, case, team_work, monkeypatch):  # fmt: skip
    _team_work(monkeypatch, team_work)
    c = TEAM_CASES[case]
    (loss_code, k), n = c["loss"], 2000
    X, Y, _ = make_problem(loss_code, k, n=n, d=20)
    weights = np.random.default_rng(6).uniform(0.0, 2.0, n) if c["weighted"] else None
    options = dict(batch_size=256, shuffle=c["shuffle"], lr=0.05, epochs=3, weights=weights,
                   optimizer=c["optimizer"])  # fmt: skip
    expected = run_epochs(numpy_ref, X, Y, loss_code, k, **options)
    one = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=1, **options)
    two = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=2, **options)
    assert expected[2:] == (3, stopping.MAX_EPOCHS)
    np.testing.assert_allclose(two[0], expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(two[1], expected[1], rtol=1e-10)
    assert two[2:] == expected[2:]
    np.testing.assert_array_equal(two[0], one[0])  # bit-identical for any thread count
    np.testing.assert_array_equal(two[1], one[1])


@pytest.mark.parametrize("members", [1, 3, 4, 5])
def test_numba_team_tickets_of_any_span_give_the_same_result(members, monkeypatch):
    """Numba's team deals a batch's chunks in one ticket per member; the team size the
    kernel is told sets the span of a ticket (4 chunks per batch of 256 and 3 in the last
    one: spans of 4, 2, 1 and 1 here), and no span may change a value."""
    import fastgd.backends.numba.linear as numba_linear
    from fastgd.backends import get_backend

    numba_backend = get_backend("numba")
    X, Y, _ = make_problem(losses.BINARY_CROSS_ENTROPY, 1, n=2000, d=20)
    options = dict(batch_size=256, shuffle=True, lr=0.05, epochs=3, n_threads=2)
    expected = run_epochs(numba_backend, X, Y, losses.BINARY_CROSS_ENTROPY, 1, **options)
    made = numba_linear._kernels

    def told(shape, mode, sparse=False):
        train, gradient = made(shape, mode, sparse)
        return (lambda *args: train(*args[:-1], (members, args[-1][1]))), gradient

    monkeypatch.setattr(numba_linear, "_kernels", told)
    dealt = run_epochs(numba_backend, X, Y, losses.BINARY_CROSS_ENTROPY, 1, **options)
    np.testing.assert_array_equal(dealt[0], expected[0])
    np.testing.assert_array_equal(dealt[1], expected[1])


@pytest.mark.parametrize("case", list(TEAM_CASES))
def test_team_members_asked_to_sit_out_change_no_value(compiled_backend, case, monkeypatch):
    """A member that waits long for an update asks the member that published it to sit
    out a while (on a machine busier than its cores, that member shares its core). A wait
    limit of one cycle makes every spinning wait long, so members sit out and rejoin from
    the first batches on, at whatever points the threads' timing puts it; the result must
    be the one of one thread, bit for bit, and every epoch must end."""
    import fastgd.backends.cython.linear as cython_linear
    import fastgd.backends.numba.linear as numba_linear

    _team_work(monkeypatch, True)
    c = TEAM_CASES[case]
    (loss_code, k), n = c["loss"], 4000
    X, Y, _ = make_problem(loss_code, k, n=n, d=20)
    options = dict(batch_size=256, shuffle=c["shuffle"], lr=0.05, epochs=3,
                   optimizer=c["optimizer"])  # fmt: skip
    expected = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=1, **options)
    for module in (cython_linear, numba_linear):
        monkeypatch.setattr(module, "TEAM_WAIT_CYCLES", 1)
    for _ in range(3):
        evicting = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=2, **options)
        np.testing.assert_array_equal(evicting[0], expected[0])
        np.testing.assert_array_equal(evicting[1], expected[1])
        assert evicting[2:] == expected[2:]


@TEAM_WORK
def test_team_batches_diverge_together(compiled_backend, team_work, monkeypatch):
    """A run that blows up inside an epoch of team batches: every thread count reports the
    same divergence and restores the same start-of-epoch parameters."""
    _team_work(monkeypatch, team_work)
    X, Y, _ = make_problem(losses.MSE, 1, n=2000, d=20)
    options = dict(batch_size=256, shuffle=False, lr=5.0, epochs=20)
    one = run_epochs(compiled_backend, X, Y, losses.MSE, 1, n_threads=1, **options)
    two = run_epochs(compiled_backend, X, Y, losses.MSE, 1, n_threads=2, **options)
    assert two[3] == one[3] == stopping.DIVERGED and two[2] == one[2]
    assert np.all(np.isfinite(two[0]))
    np.testing.assert_array_equal(two[0], one[0])
    np.testing.assert_array_equal(two[1], one[1])


@TEAM_WORK
def test_team_batches_stop_together_on_interrupt(compiled_backend, team_work, monkeypatch):
    """Ctrl-C requested from another thread in the middle of a long run of team batches:
    the run stops before a batch, and its parameters are those of the updates done."""
    _team_work(monkeypatch, team_work)
    import threading

    from fastgd.backends.contract import Data, EpochBlock, LinearModel, State, UpdateConfig
    from fastgd.specs import optimizers as opt_codes
    from fastgd.specs.stopping import new_stop_state

    n, batch, epochs = 100_000, 256, 10_000
    X, Y, _ = make_problem(losses.MSE, 1, n=n, d=20)
    params = np.zeros(21)
    sgd = optim.SGD(lr=0.01)
    opt_state = sgd.new_state(21, np.float64)
    state = State(params, np.zeros(0), opt_state, np.zeros(1, np.int64), new_stop_state())
    hyper = sgd.hyperparameters()
    block = EpochBlock(np.empty((0, 0), np.int64), np.full(epochs, 0.01), epochs,
                       np.full(epochs, np.nan), np.zeros((0, 0)))  # fmt: skip
    call = lambda: done.append(compiled_backend.train_epochs(  # noqa: E731
        LinearModel(losses.MSE, 1, True), Data(X, Y, np.empty(0)), state,
        UpdateConfig(batch, opt_codes.SGD, hyper, -np.inf, 5), block, 2))  # fmt: skip
    # compiled first, so that the stop arrives in the middle of an epoch, where the members
    # of a team wait for each other (Numba's once hung there when a member halted)
    run_epochs(compiled_backend, X[:2000], Y[:2000], losses.MSE, 1, epochs=1, batch_size=batch,
               shuffle=False, lr=0.01, n_threads=2)  # fmt: skip
    done = []
    worker = threading.Thread(target=call)
    worker.start()
    worker.join(0.2)
    state.stop_state[stopping.INTERRUPT] = 1.0
    worker.join()
    n_done, status = done[0]
    assert status == stopping.INTERRUPTED and n_done < epochs
    per_epoch = -(-n // batch)
    rows = (int(state.step_count[0]) - n_done * per_epoch) * batch  # of the cut epoch
    assert 0 <= rows < n
    expected = np.zeros(21)
    if n_done:  # the whole epochs, then the rows of the cut one, on 1 thread
        expected = run_epochs(compiled_backend, X, Y, losses.MSE, 1, epochs=n_done,
                              batch_size=batch, shuffle=False, lr=0.01)[0]  # fmt: skip
    if rows:
        run_epochs(compiled_backend, X[:rows], Y[:rows], losses.MSE, 1, epochs=1,
                   batch_size=batch, shuffle=False, lr=0.01, params=expected)  # fmt: skip
    np.testing.assert_array_equal(params, expected)


def test_read_only_inputs_work(backend):
    from fastgd.backends import get_backend

    X, Y, _ = make_problem(losses.MSE, 1, n=500, d=5)
    X.flags.writeable = False
    Y.flags.writeable = False
    params, history, _, _ = run_epochs(get_backend(backend), X, Y, losses.MSE, 1, epochs=2)
    assert np.all(np.isfinite(params)) and history[1] < history[0]


def test_divergence_restores_start_of_epoch_parameters(backend):
    from fastgd.backends import get_backend

    X, Y, _ = make_problem(losses.MSE, 1, n=500, d=5)
    module = get_backend(backend)
    good, _, _, _ = run_epochs(module, X, Y, losses.MSE, 1, epochs=1, lr=1e-3, shuffle=False)
    params, history, n_done, status = run_epochs(
        module, X, Y, losses.MSE, 1, epochs=50, lr=1e3, shuffle=False, params=good.copy()
    )
    assert status == stopping.DIVERGED
    last = history[n_done - 1]  # non-finite, or finite and run away
    assert not np.isfinite(last) or last > stopping.RUNAWAY_FACTOR * max(history[0], 1.0)
    assert np.all(np.isfinite(params))
