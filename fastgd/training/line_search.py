"""Line searches of the full-batch solvers, along a descent direction ``p`` from ``x``.

- :func:`armijo` (Newton): backtracking by halving from ``t0``, at most 21 trials,
  accepting ``f(t) - f(0) <= 2**-11 t g.p``, or, when the change is within round-off
  (``|f(t) - f(0)| <= 16 eps |f(0)|``), a smaller gradient 1-norm. Its first trial also
  computes the Hessian there (unless told not to): a Newton step is usually accepted at
  once, and the next iteration then needs no other pass over the data.
- :func:`strong_wolfe` (L-BFGS): a point with ``f(t) <= f(0) + c1 t g.p`` and
  ``|g(t).p| <= c2 |g.p|``; it widens the step until the minimum is bracketed, then
  narrows the bracket with safeguarded cubic interpolation (Nocedal and Wright,
  *Numerical Optimization*, algorithms 3.5 and 3.6).
"""

import numpy as np

EPS = np.finfo(float).eps


def armijo(objective, x, f0, g0, p, t0, hessian=True, max_trials=21):  # noqa: PLR0913
    """``(t, x + t p, f, g, H or None)`` of the accepted trial, or None; ``H`` only when
    ``hessian`` and the first trial is accepted."""
    slope = float(g0 @ p)
    g0_norm = np.sum(np.abs(g0))
    t = t0
    for trial in range(max_trials):
        xt = x + t * p
        ft, gt, Ht = objective.value_grad_hess(xt, hessian=hessian and trial == 0)
        if np.isfinite(ft):
            if ft - f0 <= 2.0**-11 * t * slope:
                return t, xt, ft, gt, Ht
            if abs(ft - f0) <= 16 * EPS * abs(f0) and np.sum(np.abs(gt)) < g0_norm:
                return t, xt, ft, gt, Ht
        t *= 0.5
    return None


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic through ``(a, fa, da)`` and ``(b, fb, db)``, or None."""
    if a == b:
        return None
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if not np.isfinite(disc) or disc < 0:
        return None
    d2 = np.copysign(np.sqrt(disc), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0:
        return None
    return b - (b - a) * (db + d2 - d1) / denom


def strong_wolfe(objective, x, f0, g0, p, t, c1=1e-4, c2=0.9, max_evals=20):
    """``(t, f(t), g(t))`` satisfying the strong Wolfe conditions, or None.

    When the trials run out, the best point with sufficient decrease is returned if any.
    """
    d0 = float(g0 @ p)
    if not d0 < 0:
        return None

    def phi(step):
        f, g = objective.value_grad(x + step * p)
        return f, g, float(g @ p) if np.isfinite(f) else np.nan

    prev = (0.0, f0, d0, g0)
    for evals in range(max_evals):
        ft, gt, dt = phi(t)
        cur = (t, ft, dt, gt)
        if not np.isfinite(ft) or ft > f0 + c1 * t * d0 or (evals and ft >= prev[1]):
            return _zoom(phi, prev, cur, f0, d0, c1, c2, max_evals - evals - 1)
        if abs(dt) <= -c2 * d0:
            return t, ft, gt
        if dt >= 0:
            return _zoom(phi, cur, prev, f0, d0, c1, c2, max_evals - evals - 1)
        # still descending: extrapolate, between 1.1 and 10 times the current step
        guess = _cubic_min(prev[0], prev[1], prev[2], t, ft, dt)
        prev = cur
        t = 4.0 * t if guess is None else min(max(guess, 1.1 * t), 10.0 * t)
    return None


def _zoom(phi, lo, hi, f0, d0, c1, c2, evals):
    """Narrow ``[lo, hi]`` (``lo``: the lower value with sufficient decrease)."""
    for _ in range(evals):
        a, b = lo[0], hi[0]
        width = abs(b - a)
        if width <= EPS * max(abs(a), abs(b)):
            break
        guess = None
        if np.isfinite(hi[1]):
            guess = _cubic_min(a, lo[1], lo[2], b, hi[1], hi[2])
        low, high = min(a, b) + 0.1 * width, max(a, b) - 0.1 * width
        t = 0.5 * (a + b) if guess is None or not low <= guess <= high else guess
        ft, gt, dt = phi(t)
        if not np.isfinite(ft) or ft > f0 + c1 * t * d0 or ft >= lo[1]:
            hi = (t, ft, dt, gt)
            continue
        if abs(dt) <= -c2 * d0:
            return t, ft, gt
        if dt * (b - a) >= 0:
            hi = lo
        lo = (t, ft, dt, gt)
    return (lo[0], lo[1], lo[3]) if lo[0] > 0 else None
