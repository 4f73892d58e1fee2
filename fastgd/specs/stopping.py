"""Why a training run stopped: integer codes returned by every backend's kernel.

The stopping rules themselves, applied after every epoch by each backend:

- divergence: the epoch's loss or any parameter is NaN/inf. The parameters are restored
  to their values at the start of that epoch (the last finite ones) and training stops.
- tolerance: an epoch whose loss is not below ``best_loss - tol`` counts as "no change";
  after ``n_iter_no_change`` such epochs in a row training stops as converged.
  ``tol = -inf`` disables the rule (no loss exceeds ``best + inf``).
- ``epochs`` is the upper bound on the number of epochs.

The rule state carried between kernel calls is ``stop_state = [best_loss, n_no_change]``.
"""

import numpy as np

MAX_EPOCHS = 0
CONVERGED = 1
DIVERGED = 2

REASONS = {
    MAX_EPOCHS: "max_epochs",
    CONVERGED: "converged",
    DIVERGED: "diverged",
}


def new_stop_state():
    """Fresh state of the tolerance rule: no best loss yet, no epoch without change."""
    return np.array([np.inf, 0.0])


def tolerance_rule(epoch_loss, tol, n_iter_no_change, stop_state):
    """Update ``stop_state = [best, n_no_change]`` with an epoch's loss; True when
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
