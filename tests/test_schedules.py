"""Learning-rate schedules: hand-computed rates, inside every backend's loop, bad arguments."""

import math

import numpy as np
import pytest
from helpers import LOSS_CASES, LOSS_IDS, make_problem, numpy_ref, run_epochs

import fastgd
from fastgd import optim
from fastgd.schedules import (
    Constant,
    CosineAnnealing,
    ExponentialDecay,
    InverseScaling,
    ReduceOnPlateau,
    StepDecay,
    Warmup,
)
from fastgd.specs import losses


def _rates(schedule, base_lr, epochs, losses_seen=None):
    run = schedule.start(base_lr)
    out = []
    for epoch in range(epochs):
        out.append(run.lr(epoch))
        if losses_seen is not None:
            run.observe(losses_seen[epoch])
    return out


def test_epoch_schedules_by_hand():
    assert _rates(Constant(), 0.3, 3) == [0.3, 0.3, 0.3]
    assert _rates(StepDecay(step_size=2, gamma=0.5), 1.0, 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert _rates(ExponentialDecay(gamma=0.9), 1.0, 3) == pytest.approx([1.0, 0.9, 0.81])
    # cosine from 1 to 0.2 over 4 epochs: 1, 0.2 + 0.8 (1 + cos(pi/4)) / 2, 0.6, ..., then 0.2
    cosine = _rates(CosineAnnealing(T_max=4, eta_min=0.2), 1.0, 6)
    expected = [1.0, 0.2 + 0.4 * (1 + math.cos(math.pi / 4)), 0.6, 0.2 + 0.4 * (1 - math.cos(math.pi / 4)), 0.2, 0.2]  # fmt: skip
    assert cosine == pytest.approx(expected)
    # warm-up over 2 epochs from 0.5 of the first rate, then the step schedule starts
    warm = _rates(Warmup(StepDecay(step_size=1, gamma=0.5), epochs=2, start_factor=0.5), 1.0, 5)
    assert warm == pytest.approx([0.5, 0.75, 1.0, 0.5, 0.25])
    assert InverseScaling(power=0.25).power_t == 0.25
    assert Warmup(InverseScaling(0.5), epochs=1).power_t == 0.5


def test_reduce_on_plateau_by_hand():
    # patience 1: the second epoch in a row without improvement cuts the rate
    seen = [1.0, 0.5, 0.6, 0.55, 0.4, 0.4, 0.4, 0.4]
    rates = _rates(ReduceOnPlateau(factor=0.5, patience=1, threshold=0.0), 1.0, 8, seen)
    # epochs 2 and 3 do not improve on 0.5 -> cut after epoch 3; 5 and 6 not on 0.4 -> cut
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    floor = _rates(ReduceOnPlateau(factor=0.1, patience=0, min_lr=0.05), 1.0, 4, [1.0] * 4)
    assert floor == [1.0, 1.0, 0.1, 0.05]


def test_schedule_runs_are_independent():
    schedule = ReduceOnPlateau(factor=0.5, patience=0)
    first = _rates(schedule, 1.0, 3, [1.0, 1.0, 1.0])
    assert first == [1.0, 1.0, 0.5] and _rates(schedule, 1.0, 3, [1.0, 1.0, 1.0]) == first


@pytest.mark.parametrize("loss_code,k", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("batch_size", [1, 32, 2000])
@pytest.mark.parametrize("power_t", [0.0, 0.5])
def test_backend_schedules_match_reference(compiled_backend, loss_code, k, batch_size, power_t):
    X, Y, _ = make_problem(loss_code, k, n=2000, d=20)
    lr_epochs = np.array([0.02, 0.05, 0.03, 0.01])
    if batch_size == 1:
        lr_epochs = lr_epochs / 4
    kwargs = dict(epochs=4, batch_size=batch_size, lr_epochs=lr_epochs, power_t=power_t)
    expected = run_epochs(numpy_ref, X, Y, loss_code, k, **kwargs)
    constant = run_epochs(numpy_ref, X, Y, loss_code, k, epochs=4, batch_size=batch_size)
    assert not np.allclose(expected[0], constant[0])  # the schedule does change the result
    one = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=1, **kwargs)
    two = run_epochs(compiled_backend, X, Y, loss_code, k, n_threads=2, **kwargs)
    np.testing.assert_allclose(one[0], expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one[1], expected[1], rtol=1e-10)
    assert np.array_equal(one[0], two[0])


@pytest.mark.parametrize("optimizer", [optim.SGD(lr=0.1, momentum=0.9), optim.Adam(lr=0.05)])
def test_backend_schedule_with_optimizers_float32(compiled_backend, optimizer):
    X, Y, _ = make_problem(losses.MSE, 1, n=1000, d=10, dtype=np.float32)
    kwargs = dict(epochs=3, optimizer=optimizer, lr_epochs=np.array([0.05, 0.02, 0.01]), power_t=0.3)  # fmt: skip
    expected = run_epochs(numpy_ref, X, Y, losses.MSE, 1, **kwargs)
    result = run_epochs(compiled_backend, X, Y, losses.MSE, 1, **kwargs)
    assert result[0].dtype == np.float32
    np.testing.assert_allclose(result[0], expected[0], rtol=1e-4, atol=1e-5)


def test_inverse_scaling_steps_by_hand():
    # one sample, x = 1, y = 0, b = 0 unused: w_t = w_{t-1} - lr / t**0.5 * 2 w_{t-1}
    X, y = np.array([[1.0]]), np.array([0.0])
    init = fastgd.fit(X, y, fit_intercept=False, batch_size=None, epochs=1, lr=1e-9)
    init.params[0] = 1.0
    result = fastgd.fit(
        X, y, fit_intercept=False, batch_size=None, epochs=3, backend="numpy", init=init,
        lr=InverseScaling(power=0.5, lr=0.1),
    )  # fmt: skip
    w = 1.0
    for t in (2, 3, 4):  # the warm start carries one update over
        w -= 0.1 / math.sqrt(t) * 2 * w
    assert result.params[0] == pytest.approx(w, rel=1e-12)


def test_fit_records_the_rates_and_follows_them(backend):
    X, y = make_problem(losses.MSE, 1, n=400, d=5)[:2]
    schedule = Warmup(StepDecay(step_size=3, gamma=0.5, lr=0.04), epochs=2)
    result = fastgd.fit(X, y, epochs=8, lr=schedule, backend=backend, seed=0)
    np.testing.assert_allclose(result.lr_history, _rates(schedule, 0.04, 8))
    reference = fastgd.fit(X, y, epochs=8, lr=schedule, backend="numpy", seed=0)
    np.testing.assert_allclose(result.params, reference.params, rtol=1e-10)
    assert result.optimizer.lr == 0.04


def test_named_schedules():
    X, y = make_problem(losses.MSE, 1, n=200, d=3)[:2]
    cosine = fastgd.fit(X, y, epochs=10, lr="cosine", backend="numpy", seed=0)
    np.testing.assert_allclose(cosine.lr_history, _rates(CosineAnnealing(T_max=10), 0.01, 10))
    adam = fastgd.fit(X, y, epochs=3, optimizer="adam", lr="constant", backend="numpy")
    np.testing.assert_allclose(adam.lr_history, 1e-3)  # Adam's default rate


def test_reduce_on_plateau_in_fit(backend):
    # a rate too large for per-sample steps makes the loss stall (2.86, then 3.09), and the
    # schedule cuts it (at lr 0.4 the loss runs away to 1e170: a divergence, not a stall)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.standard_normal(300)
    result = fastgd.fit(
        X, y, batch_size=1, epochs=25, lr=ReduceOnPlateau(factor=0.2, patience=1, lr=0.1),
        seed=0, backend=backend,
    )  # fmt: skip
    assert result.lr_history[0] == 0.1 and result.lr_history[-1] < 0.1
    cuts = np.flatnonzero(np.diff(result.lr_history))
    assert len(cuts) >= 1
    np.testing.assert_allclose(result.lr_history[cuts + 1] / result.lr_history[cuts], 0.2)
    assert result.loss_history[-1] < result.loss_history[cuts[0]]


def test_schedule_with_optimizer_object():
    X, y = make_problem(losses.MSE, 1, n=100, d=3)[:2]
    result = fastgd.fit(
        X, y, epochs=4, optimizer=optim.Adam(lr=0.1), lr=ExponentialDecay(0.5), backend="numpy"
    )
    np.testing.assert_allclose(result.lr_history, [0.1, 0.05, 0.025, 0.0125])
    with pytest.raises(ValueError, match="not both"):
        fastgd.fit(X, y, optimizer=optim.Adam(lr=0.1), lr=ExponentialDecay(0.5, lr=0.2))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: StepDecay(step_size=0), "step_size must be a positive integer"),
        (lambda: StepDecay(step_size=2, gamma=0.0), "gamma must be > 0"),
        (lambda: ExponentialDecay(gamma=1.5), "gamma must be <= 1"),
        (lambda: CosineAnnealing(T_max=0), "T_max must be a positive integer"),
        (lambda: CosineAnnealing(T_max=5, eta_min=-1.0), "eta_min must be >= 0"),
        (lambda: InverseScaling(power=0.0), "power must be > 0"),
        (lambda: Warmup(0.1, epochs=2), "after must be a fastgd.schedules.LRSchedule"),
        (lambda: Warmup(Constant(), epochs=0), "epochs must be a positive integer"),
        (lambda: ReduceOnPlateau(factor=1.0), "factor must be < 1"),
        (lambda: ReduceOnPlateau(patience=-1), "patience must be a non-negative integer"),
        (lambda: Constant(lr=-0.1), "lr must be > 0"),
    ],
)
def test_invalid_schedule_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match="'cosine'.*unknown schedule name 'warmup'"):
        fastgd.fit(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20), lr="warmup")
