"""Why a training run stopped: integer codes returned by every backend's kernel.

The stopping rules themselves, applied after every epoch by each backend:

- divergence: the epoch's loss or any parameter is NaN/inf, or the loss ran away while
  still finite (:func:`runaway`: above :data:`RUNAWAY_FACTOR` times the first epoch's
  loss of the run, or above the largest number of the parameters' dtype). The parameters
  are restored to their values at the start of that epoch (the last good ones) and
  training stops.
- tolerance: an epoch whose loss is not below ``best_loss - tol`` counts as "no change";
  after ``n_iter_no_change`` such epochs in a row training stops as converged.
  ``tol = -inf`` disables the rule (no loss exceeds ``best + inf``).
- ``epochs`` is the upper bound on the number of epochs.

- interruption (Ctrl-C): ``stop_state[INTERRUPT]`` is set to 1 from another thread (or
  a signal handler, :mod:`fastgd.training.interrupt`); every backend polls it before each
  mini-batch (each row on the per-sample paths) and returns :data:`INTERRUPTED` with the
  state after the last whole update. That state is consistent (the optimizer state and
  update count match the parameters), so ``init=`` resumes from it; should it hold a
  NaN/inf (an epoch that would have diverged), the state of the epoch's start is put back.
  The epochs counted as done are the completed ones: the interrupted epoch's updates are
  in the parameters, not in the loss history.

The state carried between kernel calls is
``stop_state = [best_loss, n_no_change, first_loss, interrupt]`` (``first_loss`` NaN until
the first epoch of the run has ended; ``interrupt`` 0, or 1 once a stop was requested).
"""

import numpy as np

MAX_EPOCHS = 0
CONVERGED = 1
DIVERGED = 2
INTERRUPTED = 3

# position of the interruption flag in ``stop_state``
INTERRUPT = 3

# A finite loss this many times the first epoch's (or 1, if that was smaller) is a
# divergence: gradient descent that works never multiplies its loss by 10,000, while a
# step size just past the stable range grows the loss geometrically, and would take
# hundreds of epochs to overflow to inf (the NaN/inf test alone then reports nothing).
RUNAWAY_FACTOR = 1e4

REASONS = {
    MAX_EPOCHS: "max_epochs",
    CONVERGED: "converged",
    DIVERGED: "diverged",
    INTERRUPTED: "interrupted",
}


def new_stop_state():
    """Fresh state of the stopping rules: no best loss yet, no epoch without change, no
    first epoch yet, no interruption."""
    return np.array([np.inf, 0.0, np.nan, 0.0])


def runaway(epoch_loss, stop_state, largest):
    """True when a finite ``epoch_loss`` has run away (see :data:`RUNAWAY_FACTOR`), or is
    beyond ``largest``, the largest number of the parameters' dtype (a float32 model's
    loss, summed in float64, can be finite there and not in float32). The first call of a
    run records its loss in ``stop_state[2]``.

    Plain Python, like :func:`tolerance_rule`: the reference calls it, Numba compiles it.
    """
    if stop_state[2] != stop_state[2]:  # NaN: the run's first epoch
        stop_state[2] = epoch_loss
    return epoch_loss > largest or epoch_loss > RUNAWAY_FACTOR * max(stop_state[2], 1.0)


def tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
    """Update ``stop_state[:2] = [best, n_no_change]`` with an epoch's loss; True when
    training has converged.

    Plain Python on scalars and a 2-element array, so that the NumPy reference calls it
    as it is and the Numba kernels compile this very function (one rule, not a copy per
    backend; the Cython kernels spell it in C).
    """
    if epoch_loss > stop_state[0] - tol:
        stop_state[1] += 1
    else:
        stop_state[1] = 0
    stop_state[0] = min(stop_state[0], epoch_loss)
    return stop_state[1] >= n_iter_no_change
