"""Ctrl-C latency of the full-batch solvers: SIGINT in the middle of a long pass.

A child process fits softmax with Newton's method (or L-BFGS) on ``n`` x 100 float64 rows,
10 classes, on the numba backend, printing when each kernel call starts (a pass over the
data runs in row blocks of about a second, one call each); the parent sends SIGINT
``--delay`` seconds into call ``--pass`` and prints how long the fit took to return
after it, and each call's duration.

    flock /tmp/fastgd-bench.lock python benchmarks/interrupt_solver_latency.py [--optimizer newton] [--rows 300000]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(optimizer, n):
    import numpy as np

    import fastgd
    from fastgd.backends import get_backend

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 100))
    y = np.argmax(X[:, :10] + 0.5 * rng.standard_normal((n, 10)), axis=1)
    backend, passes = get_backend("numba"), []
    for name in ("loss_and_gradient", "loss_gradient_hessian"):
        original = getattr(backend, name)

        def timed(*args, _original=original, **kwargs):
            started = time.monotonic()
            print(json.dumps({"start": started}), flush=True)
            result = _original(*args, **kwargs)
            passes.append((started, time.monotonic()))
            return result

        setattr(backend, name, timed)
    fastgd.fit(X[:1000], y[:1000], "softmax", optimizer=optimizer, epochs=1, backend="numba")
    passes.clear()
    print(json.dumps({"ready": True}), flush=True)
    warnings.simplefilter("ignore")
    result = fastgd.fit(X, y, "softmax", optimizer=optimizer, epochs=30, tol=0.0, backend="numba")  # fmt: skip
    print(json.dumps({"returned": time.monotonic(), "reason": result.stop_reason, "passes": passes}), flush=True)  # fmt: skip


def parent(args):
    command = [sys.executable, __file__, "--child", "--optimizer", args.optimizer, "--rows", str(args.rows)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    ready, started, sent = False, 0, None
    for line in process.stdout:
        message = json.loads(line)
        if "ready" in message:
            ready = True
        elif ready and "start" in message:
            started += 1
            if started == args.pass_number:
                time.sleep(args.delay)
                sent = time.monotonic()
                process.send_signal(signal.SIGINT)
        elif "returned" in message:
            print(f"{args.optimizer}, {args.rows} x 100, softmax (10 classes): stop reason "
                  f"{message['reason']!r}, returned {message['returned'] - sent:.2f} s after SIGINT")  # fmt: skip
            for a, b in message["passes"]:
                where = " (SIGINT during it)" if a <= sent <= b else " (after SIGINT)" if a > sent else ""  # fmt: skip
                print(f"  pass {b - a:.2f} s{where}")
    process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="newton", choices=["newton", "lbfgs"])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--pass", dest="pass_number", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.optimizer, args.rows)
    else:
        parent(args)


if __name__ == "__main__":
    main()
