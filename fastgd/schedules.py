"""Learning-rate schedules: ``fastgd.fit(..., lr=fastgd.schedules.CosineAnnealing(T_max=50))``.

A schedule gives the learning rate of each epoch; :func:`fastgd.fit` evaluates it in Python
once per epoch and hands the rates of a block of epochs to the compiled loop, so no Python
runs between mini-batches. The one per-update schedule, :class:`InverseScaling`, is done
inside the loop: update ``t`` (1-based, counted over the whole training, warm starts
included) uses ``lr_epoch / t**power``. Epochs are counted from 0 at the start of each fit.

Every schedule takes an optional base ``lr``. Without it the base is the optimizer's
learning rate, so a schedule combines with an optimizer object:
``fit(..., optimizer=Adam(lr=1e-3), lr=CosineAnnealing(T_max=50))``.

The epoch-wise schedules change the rate once per epoch, as ``torch.optim.lr_scheduler``
schedulers do when stepped once per epoch, so a fit can be compared with PyTorch.
"""

import math
import numbers

import numpy as np

from ._validation import check_number, check_positive_float


def _count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class LRSchedule:
    """Base class. Subclasses define :meth:`epoch_lr` (and :attr:`power_t`, :meth:`start`).

    Parameters
    ----------
    lr : float, optional
        Base learning rate; default: the optimizer's.
    """

    #: exponent of the per-update factor ``t**-power_t`` applied inside the compiled loop
    power_t = 0.0

    def __init__(self, lr=None):
        self.lr = None if lr is None else check_number(lr, "lr", low=0.0, low_open=True)

    def epoch_lr(self, base_lr, epoch):
        """The learning rate of epoch ``epoch`` (0-based) for a base rate ``base_lr``."""
        raise NotImplementedError

    def epoch_lrs(self, base_lr, first, count):
        """The rates of epochs ``first .. first + count - 1`` as a float64 array."""
        return np.array(
            [self.epoch_lr(base_lr, e) for e in range(first, first + count)], dtype=np.float64
        )

    def start(self, base_lr):
        """A fresh :class:`ScheduleRun` of this schedule for one fit."""
        return ScheduleRun(self, base_lr)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class ScheduleRun:
    """The schedule during one fit: ``lr(epoch)`` for each epoch, ``observe(loss)`` after it.

    Attributes
    ----------
    adaptive : bool
        Whether the rates depend on the losses observed; then the fit calls the compiled
        loop once per epoch.
    """

    adaptive = False

    def __init__(self, schedule, base_lr):
        self.schedule = schedule
        self.base_lr = base_lr

    def lr(self, epoch):
        """Learning rate of epoch ``epoch``."""
        return self.schedule.epoch_lr(self.base_lr, epoch)

    def rates(self, first, count):
        """Learning rates of epochs ``first .. first + count - 1`` (float64 array)."""
        if type(self).lr is ScheduleRun.lr:  # a fixed schedule: possibly one NumPy call
            return self.schedule.epoch_lrs(self.base_lr, first, count)
        return np.array([self.lr(e) for e in range(first, first + count)], dtype=np.float64)

    def observe(self, loss):
        """Record the monitored loss of the epoch that just ended (no-op here)."""


class Constant(LRSchedule):
    """The same learning rate in every epoch (what a plain number ``lr`` means)."""

    def epoch_lr(self, base_lr, epoch):
        return base_lr

    def epoch_lrs(self, base_lr, first, count):
        return np.full(count, base_lr, dtype=np.float64)


class InverseScaling(LRSchedule):
    """``lr / t**power`` at update ``t`` (1-based), as scikit-learn's ``"invscaling"``.

    Parameters
    ----------
    power : float, default 0.5
        Exponent, ``> 0``.
    lr : float, optional
    """

    def __init__(self, power=0.5, lr=None):
        super().__init__(lr)
        self.power = check_number(power, "power", low=0.0, low_open=True)

    @property
    def power_t(self):
        return self.power

    def epoch_lr(self, base_lr, epoch):
        return base_lr

    def epoch_lrs(self, base_lr, first, count):
        return np.full(count, base_lr, dtype=np.float64)


class StepDecay(LRSchedule):
    """``lr * gamma ** (epoch // step_size)`` (``torch.optim.lr_scheduler.StepLR``).

    Parameters
    ----------
    step_size : int
        Epochs between decays.
    gamma : float, default 0.1
        Factor per decay, in (0, 1].
    lr : float, optional
    """

    def __init__(self, step_size, gamma=0.1, lr=None):
        super().__init__(lr)
        self.step_size = _count(step_size, "step_size")
        self.gamma = check_number(gamma, "gamma", low=0.0, high=1.0, low_open=True)

    def epoch_lr(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(LRSchedule):
    """``lr * gamma ** epoch`` (``torch.optim.lr_scheduler.ExponentialLR``).

    Parameters
    ----------
    gamma : float
        Factor per epoch, in (0, 1].
    lr : float, optional
    """

    def __init__(self, gamma, lr=None):
        super().__init__(lr)
        self.gamma = check_number(gamma, "gamma", low=0.0, high=1.0, low_open=True)

    def epoch_lr(self, base_lr, epoch):
        return base_lr * self.gamma**epoch


class CosineAnnealing(LRSchedule):
    """``eta_min + (lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``, then ``eta_min``.

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` for epochs up to
    ``T_max``; after ``T_max`` the rate stays at ``eta_min`` (no restart).

    Parameters
    ----------
    T_max : int
        Epochs from the base rate down to ``eta_min``.
    eta_min : float, default 0
        Final rate, ``>= 0``.
    lr : float, optional
    """

    def __init__(self, T_max, eta_min=0.0, lr=None):
        super().__init__(lr)
        self.T_max = _count(T_max, "T_max")
        self.eta_min = check_number(eta_min, "eta_min", low=0.0)

    def epoch_lr(self, base_lr, epoch):
        if epoch >= self.T_max:
            return self.eta_min
        return (
            self.eta_min
            + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        )


class Warmup(LRSchedule):
    """Linear warm-up in front of another schedule.

    For ``epoch < epochs`` the rate is ``factor * after's first rate``, with ``factor``
    rising linearly from ``start_factor`` (epoch 0) toward 1 (as
    ``torch.optim.lr_scheduler.LinearLR``); from epoch ``epochs`` on, ``after`` runs as if
    it started there (as ``SequentialLR``).

    Parameters
    ----------
    after : LRSchedule
        The schedule that follows the warm-up (e.g. :class:`CosineAnnealing`).
    epochs : int
        Length of the warm-up.
    start_factor : float, default 0.1
        Factor of the first epoch, in (0, 1].
    """

    def __init__(self, after, epochs, start_factor=0.1):
        if not isinstance(after, LRSchedule):
            raise ValueError(f"after must be a fastgd.schedules.LRSchedule; got {after!r}")
        super().__init__(after.lr)
        self.after = after
        self.epochs = _count(epochs, "epochs")
        self.start_factor = check_number(
            start_factor, "start_factor", low=0.0, high=1.0, low_open=True
        )

    @property
    def power_t(self):
        return self.after.power_t

    def start(self, base_lr):
        return _WarmupRun(self, base_lr)


class _WarmupRun(ScheduleRun):
    def __init__(self, schedule, base_lr):
        super().__init__(schedule, base_lr)
        self.after = schedule.after.start(base_lr)
        self.adaptive = self.after.adaptive

    def lr(self, epoch):
        s = self.schedule
        if epoch < s.epochs:
            factor = s.start_factor + (1.0 - s.start_factor) * epoch / s.epochs
            return factor * self.after.lr(0)
        return self.after.lr(epoch - s.epochs)

    def observe(self, loss):
        self.after.observe(loss)


class ReduceOnPlateau(LRSchedule):
    """Multiply the rate by ``factor`` when the loss stops improving.

    As ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode ``"min"``, relative threshold):
    an epoch improves when its loss is below ``best * (1 - threshold)``; after more than
    ``patience`` epochs in a row without improvement the rate becomes
    ``max(rate * factor, min_lr)``. The loss watched is the training loss, or the
    validation loss with ``early_stopping=True``. The fit then runs one compiled call per
    epoch.

    Parameters
    ----------
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
        Epochs without improvement that are tolerated, ``>= 0``.
    threshold : float, default 1e-4
        Relative improvement that counts, ``>= 0``.
    min_lr : float, default 0
    lr : float, optional
    """

    def __init__(self, factor=0.1, patience=10, threshold=1e-4, min_lr=0.0, lr=None):
        super().__init__(lr)
        self.factor = check_number(
            factor, "factor", low=0.0, high=1.0, low_open=True, high_open=True
        )
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer; got {patience!r}")
        self.patience = int(patience)
        self.threshold = check_number(threshold, "threshold", low=0.0)
        self.min_lr = check_number(min_lr, "min_lr", low=0.0)

    def start(self, base_lr):
        return _PlateauRun(self, base_lr)


class _PlateauRun(ScheduleRun):
    adaptive = True

    def __init__(self, schedule, base_lr):
        super().__init__(schedule, base_lr)
        self.rate = base_lr
        self.best = math.inf
        self.bad_epochs = 0

    def lr(self, epoch):
        return self.rate

    def observe(self, loss):
        s = self.schedule
        if loss < self.best * (1.0 - s.threshold):
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > s.patience:
            self.rate = max(self.rate * s.factor, s.min_lr)
            self.bad_epochs = 0


# schedules that can be named in ``fit(lr=...)``, built with their defaults
NAMED = ("constant", "invscaling", "cosine", "plateau")


def make_schedule(lr, epochs):
    """The schedule meant by ``fit``'s ``lr`` argument, and the plain rate it carries.

    Parameters
    ----------
    lr : None, float, str or LRSchedule
        ``None`` (the optimizer's rate), a positive number (constant), a name of
        :data:`NAMED` (``"cosine"`` anneals over all ``epochs``; ``"invscaling"`` has
        power 0.5), or a schedule object.
    epochs : int
        Number of epochs of the fit.

    Returns
    -------
    schedule : LRSchedule
    lr : float or None
        The base rate given explicitly (to configure the optimizer), if any.
    """
    if isinstance(lr, LRSchedule):
        return lr, lr.lr
    if isinstance(lr, str):
        named = {
            "constant": Constant,
            "invscaling": InverseScaling,
            "cosine": lambda: CosineAnnealing(T_max=epochs),
            "plateau": ReduceOnPlateau,
        }
        if lr not in named:
            raise ValueError(
                f"lr must be a positive number, a schedule name ({', '.join(map(repr, NAMED))}) "
                f"or a fastgd.schedules object; got the unknown schedule name {lr!r}"
            )
        return named[lr](), None
    if lr is None:
        return Constant(), None
    return Constant(), check_positive_float(lr, "lr")
