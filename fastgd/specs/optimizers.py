"""Optimizers as integer codes, a hyperparameter vector and state arrays.

Every optimizer updates the flat parameter vector elementwise, so one implementation per
backend serves every model. The formulas (and defaults, in :mod:`fastgd.optim`) are those
of ``torch.optim``, so results can be compared with PyTorch step for step. With ``g`` the
mean gradient of the batch and ``t`` the 1-based number of the update:

- ``SGD``: with momentum ``mu`` and dampening ``tau``, ``b = g`` at ``t = 1``, else
  ``b = mu b + (1 - tau) g``; the step uses ``g + mu b`` (Nesterov) or ``b``;
  ``p -= lr * step``. Without momentum, ``p -= lr * g``.
- ``ADAGRAD``: ``s += g**2``; ``p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``.
- ``RMSPROP``: ``v = alpha v + (1 - alpha) g**2``; centered: ``a = alpha a + (1 - alpha) g``
  and ``d = sqrt(v - a**2) + eps``, else ``d = sqrt(v) + eps``; with momentum ``mu``:
  ``b = mu b + g / d`` and ``p -= lr b``, else ``p -= lr g / d``.
- ``ADAM`` / ``ADAMW``: AdamW first decays ``p *= 1 - lr wd``; Adam with ``wd`` adds
  ``wd p`` to ``g``. Then ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``
  (AMSGrad: ``vmax = max(vmax, v)`` is used for ``v``), and
  ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.

Gradient clipping happens before the optimizer sees ``g`` (as ``torch.nn.utils``'s
``clip_grad_value_`` then ``clip_grad_norm_``): first each entry is clamped to
``[-clip_value, clip_value]``, then, with ``norm`` the Euclidean norm of the trained
entries, ``g *= clip_norm / (norm + 1e-6)`` when that factor is below 1.

The whole update ``t`` (1-based) of a batch, on every backend, in this order:

1. ``g`` = the (sample-weighted) mean gradient of the data loss over the batch;
2. L2 penalty: ``g[w] += l2 * p[w]`` on the weights ``w`` (not the intercepts);
3. clipping, as above;
4. the learning rate of the update: ``lr_t = lr_epochs[epoch] / t**power_t``, where
   ``lr_epochs`` holds the schedule's rate per epoch (see :mod:`fastgd.schedules`);
5. the optimizer's update with ``lr_t`` in place of ``lr``;
6. L1 penalty, a proximal (soft-thresholding) step on the weights:
   ``p[w] = sign(p[w]) * max(|p[w]| - lr_t * l1, 0)``, which sets small weights exactly
   to zero. It is the exact proximal step of ``lr_t * l1 * |w|`` for plain SGD; with the
   adaptive optimizers it is the same truncation applied after their step.
"""

import numpy as np

SGD = 0
ADAGRAD = 1
RMSPROP = 2
ADAM = 3
ADAMW = 4
# second-order solvers: run by fastgd.training.solvers in Python over full-batch passes;
# no training kernel ever receives these codes
NEWTON = 100
LBFGS = 101
SECOND_ORDER = (NEWTON, LBFGS)

# positions in the hyperparameter vector handed to the kernels (float64)
LR = 0
MOMENTUM = 1
DAMPENING = 2
NESTEROV = 3
BETA1 = 4
BETA2 = 5
EPS = 6
WEIGHT_DECAY = 7
AMSGRAD = 8
CENTERED = 9
ALPHA = 10
LR_DECAY = 11
CLIP_VALUE = 12  # 0: off; else each gradient entry is clamped to [-clip_value, clip_value]
CLIP_NORM = 13  # 0: off; else the gradient is scaled by clip_norm / (norm + 1e-6) if below 1
POWER_T = 14  # inverse scaling: update t uses lr_epoch / t**power_t (0: off)
L1 = 15  # strength of the L1 penalty l1 * sum|w| (proximal step after the update; 0: off)
L2 = 16  # strength of the L2 penalty l2 / 2 * sum w**2 (added to the gradient; 0: off)
N_HYPER = 17

# rows of the (n_rows, n_params) state array: what each row holds, per optimizer
STATE_ROWS = {
    SGD: ("momentum_buffer",),
    ADAGRAD: ("sum",),
    RMSPROP: ("square_avg", "grad_avg", "momentum_buffer"),
    ADAM: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    ADAMW: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}


def new_state(opt_code, n_params, dtype, initial_accumulator_value=0.0):
    """Zeroed optimizer state of shape (len(STATE_ROWS[opt_code]), n_params)."""
    state = np.zeros((len(STATE_ROWS[opt_code]), n_params), dtype=dtype)
    if opt_code == ADAGRAD:
        state[0] = initial_accumulator_value
    return state
