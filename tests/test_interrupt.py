"""Ctrl-C during ``fit``: the result so far, with a consistent state that ``init=`` resumes.

A real SIGINT is sent to a child process in the middle of long fits on every backend (the
kernels poll the request before every mini-batch, so the fits stop mid-epoch and mid-block);
in-process tests send SIGINT from a callback, so that every kernel kind's poll is reached at
a known point, and check the handler itself.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from scipy import sparse

import fastgd
from fastgd.backends import available_backends
from fastgd.specs import stopping
from fastgd.specs.stopping import new_stop_state
from fastgd.training.interrupt import Interruption

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_default_handler = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT has a non-default handler in this process",
)

# The child: for each case, a fit of a million epochs whose learning-rate schedule prints
# "training" just before the first kernel call; the parent then sends SIGINT. The child
# prints the interrupted result, then checks the resume: the epoch cut short is finished
# by fit(X[rows done:], init=result) and compared with an uninterrupted run of one epoch
# more (the natural row order: batches are contiguous rows).
CHILD = r"""
import json, sys, time, warnings
import numpy as np
import fastgd
from fastgd.schedules import Constant

class Marked(Constant):
    def epoch_lrs(self, base_lr, first, count):
        print("training", flush=True)
        return super().epoch_lrs(base_lr, first, count)

rng = np.random.default_rng(0)
X = rng.standard_normal((2048, 6))
y = X @ rng.standard_normal(6) + 0.1 * rng.standard_normal(2048)
CASES = {
    "per-sample": dict(batch_size=1, optimizer="sgd", lr=0.001),
    "batches": dict(batch_size=16, optimizer="adam", lr=0.001),
    "network": dict(batch_size=16, optimizer="adam", lr=0.001,
                    model=fastgd.MLP(hidden=(8,), task="regression")),
}
for backend in sys.argv[1:]:
    for name, case in CASES.items():
        case = dict(case, backend=backend, shuffle=False, tol=None, seed=0)
        lr, b = case.pop("lr"), case["batch_size"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = fastgd.fit(X, y, epochs=10**6, lr=Marked(lr=lr), **case)
        done = time.perf_counter()
        rows = (r.n_updates - r.n_epochs * (len(X) // b)) * b
        report = dict(backend=backend, case=name, stop_reason=r.stop_reason,
                      n_epochs=r.n_epochs, n_updates=r.n_updates, rows=rows,
                      finite=bool(np.all(np.isfinite(r.params))),
                      warned=[w.category.__name__ for w in caught])
        print(json.dumps(report), flush=True)
        rest = fastgd.fit(X[rows:], y[rows:], epochs=1, init=r, lr=lr, **case)
        whole = fastgd.fit(X, y, epochs=r.n_epochs + 1, lr=lr, **case)
        same = [np.array_equal(a, c) for a, c in ((rest.params, whole.params),
                (rest.optimizer_state, whole.optimizer_state))] + [rest.n_updates == whole.n_updates]
        print(json.dumps(dict(resumed_equals_continued=same, wind_down=time.perf_counter() - done)), flush=True)
print("done", flush=True)
"""


def _read_line(child, what):
    line = child.stdout.readline()
    assert line, f"the child ended while waiting for {what}: {child.stderr.read()}"
    return line


def test_sigint_stops_a_long_fit_on_every_backend_and_init_resumes_it():
    backends = [b for b in ("numpy", "numba", "cython") if b in available_backends()]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *backends], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    watchdog = threading.Timer(600, child.kill)  # a hang fails the test, never blocks CI
    watchdog.start()
    latencies = []
    try:
        for backend in backends:
            for case in ("per-sample", "batches", "network"):
                assert _read_line(child, "the marker").strip() == "training"
                time.sleep(0.3)  # inside the kernel's block of a million epochs
                sent = time.perf_counter()
                child.send_signal(signal.SIGINT)
                report = json.loads(_read_line(child, "the result"))
                latencies.append(time.perf_counter() - sent)
                where = f"{backend} {case}: {report}"
                assert report["backend"] == backend and report["case"] == case
                assert report["stop_reason"] == "interrupted", where
                assert report["warned"] == ["InterruptedWarning"], where
                assert report["finite"] and report["n_updates"] > 0, where
                assert report["n_epochs"] < 10**6, where
                check = json.loads(_read_line(child, "the resume check"))
                assert check["resumed_equals_continued"] == [True, True, True], where
        assert _read_line(child, "the end").strip() == "done"
        assert child.wait(timeout=60) == 0
    finally:
        watchdog.cancel()
        child.kill()
        child.communicate()
    print("SIGINT to result (s):", [round(t, 3) for t in latencies])


def _interrupting_callback(at_epoch):
    """A callback that sends SIGINT to this process after epoch ``at_epoch``."""

    def callback(epoch, info):
        if epoch == at_epoch:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before this returns

    return callback


def _case(kind, rng):
    X = rng.standard_normal((96, 5))
    y = X @ rng.standard_normal(5) + 0.3 * rng.standard_normal(96)
    if kind == "per-sample":
        return X, y, dict(batch_size=1, optimizer="sgd", lr=0.01)
    if kind == "batches":
        return X, y, dict(batch_size=16, optimizer="adam", lr=0.01)
    if kind == "sparse per-sample":
        return sparse.csr_matrix(X * (X > 0)), y, dict(batch_size=1, optimizer="sgd", lr=0.01)
    if kind == "sparse batches":
        return sparse.csr_matrix(X * (X > 0)), y, dict(batch_size=16, optimizer="adam")
    if kind == "network":
        return X, y, dict(batch_size=16, model=fastgd.MLP(hidden=(4,), task="regression"))
    if kind == "recurrent":
        sequences = X.reshape(96, 5, 1)
        return sequences, y, dict(batch_size=16, model=fastgd.RNN("gru", hidden=3, task="regression"))  # fmt: skip
    return X, y, dict(optimizer="lbfgs")


KINDS = ["per-sample", "batches", "sparse per-sample", "sparse batches", "network", "recurrent", "lbfgs"]  # fmt: skip


@needs_default_handler
@pytest.mark.parametrize("kind", KINDS)
def test_sigint_between_epochs_stops_every_kernel_kind(backend, kind):
    """SIGINT from the callback after epoch 1: the next kernel call stops before its
    first batch (the solver after its iteration); the result is that of 2 epochs."""
    X, y, options = _case(kind, np.random.default_rng(3))
    options = dict(options, backend=backend, shuffle=False, tol=None, seed=0)
    with pytest.warns(fastgd.InterruptedWarning, match="interrupted"):
        stopped = fastgd.fit(X, y, epochs=50, callback=_interrupting_callback(1), **options)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert stopped.stop_reason == "interrupted"
    assert stopped.n_epochs == 2 and stopped.loss_history.shape == (2,)
    two = fastgd.fit(X, y, epochs=2, **options)
    assert two.stop_reason == "max_epochs"
    np.testing.assert_array_equal(stopped.params, two.params)
    assert stopped.n_updates == two.n_updates
    np.testing.assert_array_equal(stopped.loss_history, two.loss_history)


@needs_default_handler
def test_a_second_sigint_raises_and_the_handler_is_put_back():
    stop_state = new_stop_state()
    with pytest.raises(KeyboardInterrupt):
        with Interruption(stop_state) as interruption:
            assert interruption.active
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs at the next bytecode
            assert interruption.requested and stop_state[stopping.INTERRUPT] == 1.0
            os.kill(os.getpid(), signal.SIGINT)  # the second: KeyboardInterrupt
            time.sleep(1.0)
            pytest.fail("the second SIGINT did not raise")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_handler_outside_the_main_thread_and_kernel_errors_propagate():
    seen = {}

    def in_thread():
        with Interruption(new_stop_state(), offload=True) as interruption:
            seen["active"] = interruption.active
            seen["value"] = interruption.call(lambda a, b: a + b, 2, 3)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == {"active": False, "value": 5}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        for function in (threading.current_thread, lambda: 1 / 0):
            with Interruption(new_stop_state(), offload=True) as interruption:
                assert interruption.active
                # the first call runs in the worker thread; its result or exception
                # comes back to this one
                if function is threading.current_thread:
                    assert interruption.call(function) is not threading.current_thread()
                else:
                    with pytest.raises(ZeroDivisionError):
                        interruption.call(function)


def test_a_request_before_the_call_leaves_the_state_untouched(backend):
    """The kernels poll before the first batch: a flag already set runs nothing."""
    from fastgd.backends import get_backend
    from fastgd.backends.contract import Data, EpochBlock, LinearModel, State, UpdateConfig
    from fastgd.specs import optimizers as opt

    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 3))
    Y = X @ np.ones((3, 1))
    params = rng.standard_normal(4)
    for batch_size in (1, 8):
        state = State(params.copy(), np.zeros(0), np.zeros((1, 4)), np.zeros(1, np.int64),
                      new_stop_state())  # fmt: skip
        state.stop_state[stopping.INTERRUPT] = 1.0
        hyper = np.zeros(opt.N_HYPER)
        block = EpochBlock(np.empty((0, 0), np.int64), np.full(4, 0.1), 4, np.zeros(4), np.zeros((0, 0)))  # fmt: skip
        update = UpdateConfig(batch_size, opt.SGD, hyper, -np.inf, 5)
        n_done, status = get_backend(backend).train_epochs(
            LinearModel(0, 1, True), Data(X, Y, np.empty(0)), state, update, block, 1
        )
        assert (n_done, status) == (0, stopping.INTERRUPTED)
        np.testing.assert_array_equal(state.params, params)
        assert state.step_count[0] == 0


@needs_default_handler
@pytest.mark.parametrize("optimizer", ["newton", "lbfgs"])
def test_sigint_during_a_solver_pass_stops_at_the_end_of_a_row_block(monkeypatch, optimizer):
    """A full-batch pass over many rows runs in row blocks; a SIGINT during the first pass
    stops it after the block under way: no further block, no iteration, the start kept."""
    import fastgd.training.objective as objective

    # blocks of 2267 rows: a row costs (d + 1)^2 = 441 with a Hessian, d + 1 = 21 without
    monkeypatch.setattr(objective, "PASS_BLOCK_WORK", 2267 * (441 if optimizer == "newton" else 21))
    rng = np.random.default_rng(7)
    X = rng.standard_normal((8192, 20))
    y = (X @ rng.standard_normal(20) > 0).astype(int)
    calls = []
    real = objective._data_terms

    def counted(*args):
        calls.append(len(args[2].X))
        if len(calls) == 2:  # the SIGINT arrives during the second block
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs at the next bytecode
        return real(*args)

    monkeypatch.setattr(objective, "_data_terms", counted)
    with pytest.warns(fastgd.InterruptedWarning):
        result = fastgd.fit(X, y, "logistic", optimizer=optimizer, epochs=20, backend="numpy")
    assert result.stop_reason == "interrupted" and result.n_epochs == 0
    assert calls == [2267, 2267]
    np.testing.assert_array_equal(result.params, np.zeros_like(result.params))
