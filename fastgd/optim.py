"""Optimizers: ``fastgd.optim.Adam(lr=1e-3, betas=(0.9, 0.999))`` and friends.

Each object validates its hyperparameters and turns them into an integer code and a
float64 vector for the compiled kernels. Formulas and defaults follow ``torch.optim``
(written out in :mod:`fastgd.specs.optimizers`), so a fit can be compared with PyTorch
step for step.
"""

import numpy as np

from ._validation import check_number
from .specs import optimizers as codes


class Optimizer:
    """Base class: a code, hyperparameters and the number of state rows."""

    code = None

    def __init__(self, lr):
        self.lr = check_number(lr, "lr", low=0.0, low_open=True)

    def hyperparameters(self):
        """The float64 vector the kernels read (positions in :mod:`fastgd.specs.optimizers`)."""
        hyper = np.zeros(codes.N_HYPER)
        hyper[codes.LR] = self.lr
        return hyper

    def new_state(self, n_params, dtype):
        """Zeroed state arrays for ``n_params`` parameters."""
        return codes.new_state(self.code, n_params, dtype)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    ``b = g`` at the first update, then ``b = momentum * b + (1 - dampening) * g``;
    ``p -= lr * (g + momentum * b)`` with Nesterov, ``p -= lr * b`` without, and
    ``p -= lr * g`` when ``momentum == 0``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0
    dampening : float, default 0
    nesterov : bool, default False
        Requires ``momentum > 0`` and ``dampening == 0`` (as in PyTorch).
    """

    code = codes.SGD

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum = check_number(momentum, "momentum", low=0.0)
        self.dampening = check_number(dampening, "dampening", low=0.0, high=1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0")

    def hyperparameters(self):
        hyper = super().hyperparameters()
        hyper[codes.MOMENTUM] = self.momentum
        hyper[codes.DAMPENING] = self.dampening
        hyper[codes.NESTEROV] = self.nesterov
        return hyper


class Adagrad(Optimizer):
    """Adagrad: ``s += g**2``; ``p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``.

    Parameters
    ----------
    lr : float, default 0.01
    lr_decay : float, default 0
    eps : float, default 1e-10
    initial_accumulator_value : float, default 0
    """

    code = codes.ADAGRAD

    def __init__(self, lr=0.01, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0):
        super().__init__(lr)
        self.lr_decay = check_number(lr_decay, "lr_decay", low=0.0)
        self.eps = check_number(eps, "eps", low=0.0)
        self.initial_accumulator_value = check_number(
            initial_accumulator_value, "initial_accumulator_value", low=0.0
        )

    def hyperparameters(self):
        hyper = super().hyperparameters()
        hyper[codes.LR_DECAY] = self.lr_decay
        hyper[codes.EPS] = self.eps
        return hyper

    def new_state(self, n_params, dtype):
        return codes.new_state(self.code, n_params, dtype, self.initial_accumulator_value)


class RMSprop(Optimizer):
    """RMSprop: ``v = alpha v + (1 - alpha) g**2``, step ``lr * g / (sqrt(v) + eps)``.

    ``centered`` subtracts the squared running mean of ``g`` under the root; ``momentum``
    accumulates ``b = momentum * b + g / denom`` and steps ``lr * b``.

    Parameters
    ----------
    lr : float, default 0.01
    alpha : float, default 0.99
    eps : float, default 1e-8
    momentum : float, default 0
    centered : bool, default False
    """

    code = codes.RMSPROP

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
        super().__init__(lr)
        self.alpha = check_number(alpha, "alpha", low=0.0, high=1.0, high_open=True)
        self.eps = check_number(eps, "eps", low=0.0)
        self.momentum = check_number(momentum, "momentum", low=0.0)
        self.centered = bool(centered)

    def hyperparameters(self):
        hyper = super().hyperparameters()
        hyper[codes.ALPHA] = self.alpha
        hyper[codes.EPS] = self.eps
        hyper[codes.MOMENTUM] = self.momentum
        hyper[codes.CENTERED] = self.centered
        return hyper


class Adam(Optimizer):
    """Adam (optionally AMSGrad), with L2 ``weight_decay`` added to the gradient.

    ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g**2``;
    ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
    amsgrad : bool, default False
        Use the running maximum of ``v``.
    """

    code = codes.ADAM
    default_weight_decay = 0.0

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=None, amsgrad=False):
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1); got {betas!r}")
        self.betas = tuple(
            check_number(b, f"betas[{i}]", low=0.0, high=1.0, high_open=True)
            for i, b in enumerate(betas)
        )
        self.eps = check_number(eps, "eps", low=0.0)
        if weight_decay is None:
            weight_decay = self.default_weight_decay
        self.weight_decay = check_number(weight_decay, "weight_decay", low=0.0)
        self.amsgrad = bool(amsgrad)

    def hyperparameters(self):
        hyper = super().hyperparameters()
        hyper[codes.BETA1], hyper[codes.BETA2] = self.betas
        hyper[codes.EPS] = self.eps
        hyper[codes.WEIGHT_DECAY] = self.weight_decay
        hyper[codes.AMSGRAD] = self.amsgrad
        return hyper


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * weight_decay`` each step.

    Parameters as :class:`Adam`, with ``weight_decay`` defaulting to 0.01.
    """

    code = codes.ADAMW
    default_weight_decay = 1e-2


class SecondOrder(Optimizer):
    """Base of the full-batch solvers (:mod:`fastgd.training.solvers`): no state rows, and
    ``lr`` is the first trial step of each line search."""

    def __init__(self, lr, tol):
        super().__init__(lr)
        self.tol = check_number(tol, "tol", low=0.0)

    def new_state(self, n_params, dtype):
        """No per-parameter state is kept between fits."""
        return np.zeros((0, n_params), dtype=dtype)


class Newton(SecondOrder):
    """Newton's method for the linear family (``"linear"``, ``"logistic"``, ``"softmax"``).

    Each iteration computes the loss, gradient and Hessian in one compiled pass, solves
    ``H step = -g`` by Cholesky (retrying with ``H + tau I``, ``tau`` growing tenfold from
    ``1e-10 max diag H``, when ``H`` is not positive definite), and backtracks from
    ``lr`` by halving until ``f(t) - f(0) <= 2**-11 t g.step`` (at most 21 trials).
    The point that quadratic convergence predicts to be the last gets no Hessian: its
    decrement uses the previous point's (``max|g|`` is tested exactly).

    Parameters
    ----------
    tol : float, default 1e-8
        Converged when ``max|g| <= tol`` and the Newton decrement ``step.H.step / 2 <= tol``
        (``fit(tol=...)`` overrides it).
    lr : float, default 1.0
        First trial step of the line search.
    hessian_dtype : {"float64", "float32"}, default "float64"
        Precision of the Gram products ``X~^T diag(h) X~`` that make up the Hessian (their
        sums are float64 either way). ``"float32"`` computes each row block's product in
        single precision (about twice the BLAS rate) and adds it to the float64 sums: an
        *inexact* Newton method. The loss, the gradient, the line search and the stopping
        test stay float64, so it trades the precision of the steps, not of the answer:
        the fit stops at the same optimum, to the same ``tol``. The steps are those of a
        Hessian with relative errors of about ``1e-7``, which stay Newton-fast while that
        error times the Hessian's condition number is small; on ill-conditioned problems
        (nearly collinear features, tiny ``alpha``) they would slow down: keep the default
        there. As a safeguard, where the float32 Hessian is not positive definite, its
        diagonally scaled condition number (estimated from its Cholesky pivots) is 1e4 or
        more, its step is no descent direction, or the line search fails along it, that
        iteration recomputes the Hessian in float64 (one more pass over the data) and the
        rest of the fit stays in float64. For softmax, only the diagonal class blocks
        (and the whole Hessian of ``"linear"`` and ``"logistic"``) are float32.
    """

    code = codes.NEWTON
    hessian_dtypes = ("float64", "float32")

    def __init__(self, tol=1e-8, lr=1.0, hessian_dtype="float64"):
        super().__init__(lr, tol)
        name = getattr(hessian_dtype, "__name__", None) or str(hessian_dtype)
        if not isinstance(hessian_dtype, (str, type, np.dtype)) or name not in self.hessian_dtypes:
            raise ValueError(f"hessian_dtype must be 'float64' or 'float32'; got {hessian_dtype!r}")
        self.hessian_dtype = name


class LBFGS(SecondOrder):
    """Limited-memory BFGS for every model, networks included.

    Two-loop recursion over the last ``history`` pairs (``s``, ``y``), kept when
    ``y.s > eps * (-g.s)``; the first iteration tries ``lr / ||g||`` along ``-g``.

    Parameters
    ----------
    history : int, default 10
        Pairs kept (SciPy's ``maxcor``).
    line_search : {"strong_wolfe", None}, default "strong_wolfe"
        ``"strong_wolfe"``: a bracketing line search with cubic interpolation accepting
        ``f(t) <= f(0) + 1e-4 t g.d`` and ``|g(t).d| <= 0.9 |g.d|`` (at most 20 trials);
        None: fixed steps of ``lr`` (as ``torch.optim.LBFGS`` without line search).
    tol : float, default 1e-6
        Converged when ``max|g| <= tol`` (``fit(tol=...)`` overrides it).
    ftol : float, default 64 * machine epsilon
        Converged when ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol``.
    lr : float, default 1.0
    """

    code = codes.LBFGS

    def __init__(self, history=10, line_search="strong_wolfe", tol=1e-6, ftol=None, lr=1.0):
        super().__init__(lr, tol)
        if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 1:
            raise ValueError(f"history must be a positive integer; got {history!r}")
        if line_search not in ("strong_wolfe", None):
            raise ValueError(f"line_search must be 'strong_wolfe' or None; got {line_search!r}")
        self.history, self.line_search = int(history), line_search
        self.ftol = check_number(
            64 * np.finfo(float).eps if ftol is None else ftol, "ftol", low=0.0
        )


OPTIMIZERS = {
    "sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
    "newton": Newton, "lbfgs": LBFGS,
}  # fmt: skip


def make_optimizer(optimizer, lr=None):
    """An :class:`Optimizer` from a name (with ``lr`` if given) or an optimizer object.

    Parameters
    ----------
    optimizer : str or Optimizer
        One of ``"sgd"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``, the
        full-batch solvers ``"newton"`` and ``"lbfgs"``, or an object.
    lr : float, optional
        Learning rate for a named optimizer (default: the optimizer's own). Giving it with
        an optimizer object is an error: the object carries its own.
    """
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise ValueError("pass lr either to fit or to the optimizer object, not both")
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))} or a "
            f"fastgd.optim.Optimizer; got {optimizer!r}"
        )
    return OPTIMIZERS[optimizer]() if lr is None else OPTIMIZERS[optimizer](lr=lr)
