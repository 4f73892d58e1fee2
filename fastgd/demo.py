"""The classic example: recover ``y = 2x + 1`` from 100 noisy points by gradient descent.

It is the example fastgd grew from, with its two bugs fixed (no intercept, and a
per-sample gradient vector that was never averaged), run by ``fastgd.fit`` on every
backend and by the plain NumPy loop it replaces.
"""

import time

import numpy as np

from .api import fit
from .backends import available_backends


def make_data(seed=0):
    """100 points ``x`` in [-1, 1] and ``y = 2 x + 1 + N(0, 0.1**2)`` noise."""
    X = np.linspace(-1, 1, 100)
    y = 2 * X + 1 + 0.1 * np.random.default_rng(seed).standard_normal(100)
    return X, y


def plain_numpy_loop(X, y, lr=0.01, steps=1000):
    """Full-batch gradient descent on ``w x + b`` in a Python loop (the baseline)."""
    w, b = 0.0, 0.0
    for _ in range(steps):
        residual = w * X + b - y
        w -= lr * 2.0 * np.mean(residual * X)  # average the per-sample gradients
        b -= lr * 2.0 * np.mean(residual)
    return w, b


def run(lr=0.1, steps=1000, print_every=100):
    """Fit the classic example on every backend and print the results and times."""
    X, y = make_data()
    print(
        f"Data: 100 points, y = 2x + 1 + noise. Full-batch gradient descent, {steps} steps, lr={lr}.\n"
    )
    result = fit(X, y, batch_size=None, epochs=steps, lr=lr, verbose=print_every)
    print(
        f"\nLearned: weight = {result.coef_[0]:.4f}, bias = {result.intercept_:.4f}  (true: 2, 1)\n"
    )

    started = time.perf_counter()
    plain_numpy_loop(X, y, lr, steps)
    baseline = time.perf_counter() - started
    print(f"{'implementation':<22}{'weight':>9}{'bias':>9}{'train time':>13}{'speed-up':>10}")
    print(f"{'plain NumPy loop':<22}{'':>18}{baseline * 1e3:>10.2f} ms{1.0:>9.1f}x")
    for name in available_backends():
        r = fit(X, y, batch_size=None, epochs=steps, lr=lr, backend=name)
        print(
            f"{'fastgd ' + name:<22}{r.coef_[0]:>9.4f}{r.intercept_:>9.4f}"
            f"{r.train_time * 1e3:>10.2f} ms{baseline / r.train_time:>9.1f}x"
            f"   (compile/load {r.compile_time:.2f} s)"
        )
    return result
