"""Ctrl-C during ``fit``: stop at the end of the current mini-batch, keep the result.

A compiled kernel runs a whole block of epochs without returning to Python, and Python
runs signal handlers only between bytecodes of the main thread, so a ``KeyboardInterrupt``
would wait for the end of the block (minutes, on large data) and then lose the run. While
a fit trains in the main thread (with Python's default SIGINT handler in place):

- SIGINT is handled by :class:`Interruption`: the first one sets the flag
  ``state.stop_state[INTERRUPT]`` (:mod:`fastgd.specs.stopping`), which every backend's
  epoch loop polls before each mini-batch; the kernel returns ``INTERRUPTED`` with the
  state after its last whole update, and ``fit`` returns that result with a warning. A
  second SIGINT raises ``KeyboardInterrupt`` at once.
- the kernel calls of the compiled backends (which release the GIL) run in one worker
  thread, while the main thread waits on a lock with a short timeout, so that the
  handler runs within :data:`POLL_SECONDS` of the signal. Handing a call to the thread
  costs tens of microseconds, as much as a whole small epoch: after a call shorter than
  :data:`DIRECT_BELOW`, the next is made directly in the main thread (a SIGINT during it
  is handled when it returns, that short time later, and the next call stops at once).

Elsewhere (a fit in another thread, or a program with its own SIGINT handler) nothing
changes: kernels are called directly and SIGINT is the program's business.
"""

import os
import queue
import signal
import threading
import time

from ..specs import stopping

# The main thread's wait for a kernel call wakes at least this often: a SIGINT delivered
# to another thread does not interrupt the wait, and the handler runs once it returns.
POLL_SECONDS = 0.1
# A kernel call that took less than this makes the next one run directly in the main thread.
DIRECT_BELOW = 0.02


class Interruption:
    """Context manager of one fit's training: SIGINT requests a stop through ``stop_state``.

    Parameters
    ----------
    stop_state : ndarray of float64
        The run's ``State.stop_state``; entry ``INTERRUPT`` becomes 1 on the first SIGINT.
    offload : bool
        Run :meth:`call`'s functions in the worker thread (compiled kernels, which release
        the GIL); False for Python loops (the NumPy reference, the Dask drivers, the
        second-order solvers), in which the handler runs between bytecodes anyway.
    """

    def __init__(self, stop_state, offload=False):
        self.stop_state, self.offload = stop_state, offload
        self.signals = 0
        self._previous = None
        self._direct = False  # the last call was short: make the next one directly

    @property
    def active(self):
        """True while this fit handles SIGINT (main thread, default handler replaced)."""
        return self._previous is not None

    @property
    def requested(self):
        """True once a stop was requested."""
        return bool(self.stop_state[stopping.INTERRUPT])

    def __enter__(self):
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        self.signals += 1
        if self.signals > 1:  # a second Ctrl-C during the wind-down: stop now
            raise KeyboardInterrupt
        self.stop_state[stopping.INTERRUPT] = 1.0

    def call(self, function, *args):
        """``function(*args)``: in the kernel worker thread while this context is active
        (the main thread stays free to handle SIGINT), else directly; directly too after a
        call shorter than :data:`DIRECT_BELOW`."""
        if not (self.active and self.offload):
            return function(*args)
        started = time.perf_counter()
        if self._direct:
            result = function(*args)
        else:
            job = _Job(function, args)
            _worker().put(job)
            result = job.wait()
        self._direct = time.perf_counter() - started < DIRECT_BELOW
        return result


class _Job:
    """One call handed to the worker thread; :meth:`wait` returns its result or raises
    its exception in the calling thread."""

    def __init__(self, function, args):
        self.function, self.args = function, args
        self.result = self.error = None
        self.finished = threading.Lock()
        self.finished.acquire()

    def run(self):
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # re-raised in the waiting thread
            self.error = exc
        finally:
            self.finished.release()

    def wait(self):
        # a lock wait with a timeout: signal handlers run in between (POLL_SECONDS)
        while not self.finished.acquire(timeout=POLL_SECONDS):
            pass
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.result


_WORKER = {"pid": None, "queue": None}
_WORKER_LOCK = threading.Lock()


def _worker():
    """The queue of the process's kernel worker thread, started on first use (and again
    in a forked child, which has no copy of the thread)."""
    with _WORKER_LOCK:
        if _WORKER["pid"] != os.getpid():
            jobs = queue.SimpleQueue()
            thread = threading.Thread(target=_serve, args=(jobs,), name="fastgd-kernels")
            thread.daemon = True
            thread.start()
            _WORKER["pid"], _WORKER["queue"] = os.getpid(), jobs
        return _WORKER["queue"]


def _serve(jobs):
    """The worker thread: SIGINT blocked (so the kernel's threads, which inherit the mask,
    leave it to the main thread), then run jobs forever."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    while True:
        jobs.get().run()
