"""fastgd on Dask against dask-glm, on one ``distributed.LocalCluster``: time to the same
objective value of logistic regression, and the per-iteration cost of going through Dask.

Data: ``--rows`` x ``--features`` float64 (default 1,000,000 x 100, 800 MB) in
``--chunks`` row chunks (default 10), generated and persisted in the workers, labels from
a logistic model; no intercept (dask-glm fits none unless given a column of ones).
Cluster: 2 worker processes, 1 thread each (``--workers``); BLAS is single-threaded in the
workers (the nanny sets OMP/OPENBLAS_NUM_THREADS=1).

Pairs, each timed ``--repeat`` times (medians), the repeats interleaved (one run of each
contender per round, so a change of the machine's load hits them alike):

- **L-BFGS, L2**: fastgd ``optimizer="lbfgs", penalty="l2", alpha=lam / n`` against
  dask-glm ``lbfgs(regularizer="l2", lamduh=lam, normalize=False)``; dask-glm minimises
  ``n`` times fastgd's mean objective, so both have the same minimiser.
- **Newton, no penalty**: dask-glm's ``newton`` takes no regularizer, so this pair fits
  the unpenalised model (fastgd ``optimizer="newton"``, ``penalty=None``). fastgd runs
  once per ``--hessian-dtypes`` entry: ``float64`` (the default Newton) and ``float32``
  (``fastgd.optim.Newton(hessian_dtype="float32")``: the Hessian's Gram products in
  float32, an inexact Newton method reaching the same optimum), each a row against the
  same dask-glm time.

The target is the optimum ``f*`` from a tight fastgd Newton fit; "time to objective" is
the wall time until the objective (fastgd's mean form) is within ``1e-6`` relative of
``f*``. L-BFGS: fastgd stops through a callback as soon as its objective is there;
dask-glm's records its iterates through SciPy's callback and the time of the first at the
target counts. Newton, without a callback on either side: each stops by its own rule
(fastgd: ``max|g|`` and the Newton decrement; dask-glm: the step's size) at the loosest
``tol`` of ``NEWTON_TOLS`` whose result reaches the target in an untimed first run, and
the whole run counts. The per-iteration overhead compares the Dask
L-BFGS fit with the same fit on one machine (the data gathered into this process, 2
threads), same iterations.

Run (holds the machine-wide benchmark lock; about 10 minutes)::

    pip install "fastgd[dask]" dask-glm
    flock /tmp/fastgd-bench.lock python benchmarks/dask_scaling.py --repeat 3 --backend cython

(Both compiled backends' Newton passes take about the same time at d = 100: 50 / 32 ms
per 100,000-row chunk on one thread with float64 / float32 Gram products; see
``benchmarks/hessian_pass.py``.)
"""

import argparse
import os
import statistics
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait

import fastgd
from fastgd.backends import available_backends
from fastgd.optim import Newton

TARGET = 1e-6
NEWTON_TOLS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8)


def make_data(client, n, d, chunks, seed=0):
    """Persisted X (features of different scales) and 0/1 labels, generated in the workers."""
    rng = da.random.default_rng(seed)
    scales = np.random.default_rng(seed).uniform(0.5, 2.0, d)
    X = rng.standard_normal((n, d), chunks=(-(-n // chunks), d)) * scales
    w = np.random.default_rng(seed + 1).standard_normal(d) / np.sqrt(d) / scales
    p = 1.0 / (1.0 + da.exp(-(X @ w)))
    y = (rng.random(n, chunks=X.chunks[0]) < p).astype(np.float64)
    X, y = client.persist([X, y])
    wait([X, y])
    return X, y


def objective(X, y, beta, alpha):
    """fastgd's mean objective: mean log-loss + alpha / 2 |beta|^2 (computed on the cluster)."""
    z = X @ beta
    loss = (da.logaddexp(0.0, z) - y * z).mean().compute()
    return float(loss) + 0.5 * alpha * float(beta @ beta)


BACKEND = "auto"  # --backend


def fastgd_fit(X, y, optimizer, alpha, target=None, epochs=300, tol=1e-12, **kw):
    stop = None if target is None else (lambda epoch, info: info["loss"] <= target)
    kw.setdefault("backend", BACKEND)
    return fastgd.fit(X, y, "logistic", optimizer=optimizer, fit_intercept=False,
                      penalty="l2" if alpha else None, alpha=alpha, tol=tol, epochs=epochs,
                      callback=stop, **kw)  # fmt: skip


def time_fastgd(X, y, optimizer, alpha, target, tol=1e-12):
    started = time.perf_counter()
    r = fastgd_fit(X, y, optimizer, alpha, target, tol=tol)
    seconds = time.perf_counter() - started
    return seconds, r.coef_.ravel(), r.n_epochs, r.distributed


def time_dask_glm(X, y, solver, alpha, tol, target):
    """dask-glm's wall time to ``target``: L-BFGS records each iterate through SciPy's
    callback (evaluated afterwards, outside the timing) and reports the time of the first
    that reaches it; Newton reports the whole run (it stops on its step size)."""
    from dask_glm import algorithms

    n, trace = X.shape[0], []
    started = time.perf_counter()
    if solver == "lbfgs":
        scipy_lbfgs = algorithms.fmin_l_bfgs_b

        def traced(*args, **kw):
            kw["callback"] = lambda xk: trace.append((time.perf_counter() - started, xk.copy()))
            return scipy_lbfgs(*args, **kw)

        algorithms.fmin_l_bfgs_b = traced
        try:
            beta = algorithms.lbfgs(X, y, regularizer="l2", lamduh=alpha * n, tol=tol, max_iter=500, normalize=False)  # fmt: skip
        finally:
            algorithms.fmin_l_bfgs_b = scipy_lbfgs
    else:  # its iterations: one least-squares solve each
        lstsq = np.linalg.lstsq

        def counted(*args, **kw):
            trace.append(None)
            return lstsq(*args, **kw)

        np.linalg.lstsq = counted
        try:
            beta = algorithms.newton(X, y, tol=tol, max_iter=50, normalize=False)
        finally:
            np.linalg.lstsq = lstsq
    seconds = time.perf_counter() - started
    for at, xk in trace if solver == "lbfgs" else ():  # the first iterate at the target
        if objective(X, y, xk, alpha) <= target:
            return at, xk, len(trace), None
    return seconds, np.asarray(beta), len(trace) or None, None


def loosest_tol(run, X, y, alpha, target):
    """The loosest of ``NEWTON_TOLS`` whose run (untimed) ends at the target."""
    for tol in NEWTON_TOLS:
        if objective(X, y, run(tol)[1], alpha) <= target:
            return tol
    return NEWTON_TOLS[-1]


def measure(runs, X, y, alpha, f_star, repeat):
    """Time each of ``runs`` (name -> callable) ``repeat`` times, interleaved (one of each
    per round, so a change of the machine's load hits them alike); returns their rows."""
    times, last = {name: [] for name in runs}, {}
    for _ in range(repeat):
        for name, run in runs.items():
            seconds, beta, iterations, info = run()
            times[name].append(seconds)
            last[name] = (beta, iterations, info)
    return [_row(name, times[name], *last[name], X, y, alpha, f_star) for name in runs]


def _row(name, times, beta, iterations, info, X, y, alpha, f_star):  # noqa: PLR0913
    gap = (objective(X, y, beta, alpha) - f_star) / abs(f_star)
    row = dict(name=name, time=statistics.median(times), times=times, gap=gap,
               reached=gap <= TARGET, iterations=iterations, info=info)  # fmt: skip
    print(f"{name:32s} median {row['time']:7.2f} s  {[round(t, 2) for t in times]}  "
          f"gap {gap:.1e}  iterations {iterations}", flush=True)  # fmt: skip
    if info:  # fastgd: where the last run's time went
        print(f"{'':32s} preparation {info['prepare_time']:.2f} s, {info['n_rounds']} rounds: "
              f"compute {info['compute_time']:.2f} s (busiest worker), communication "
              f"{info['communication_time']:.2f} s", flush=True)  # fmt: skip
    return row


def per_iteration(X, y, alpha, repeat):
    """Seconds per L-BFGS iteration: Dask (all chunks) vs the same fit in this process."""
    local_X, local_y = X.compute(), y.compute()
    rows = {}
    for where, (A, b) in (("dask", (X, y)), ("single machine", (local_X, local_y))):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            r = fastgd_fit(A, b, "lbfgs", alpha, n_threads=2 if where != "dask" else None)
            times.append(time.perf_counter() - started)
        rows[where] = (statistics.median(times) / r.n_epochs, r.n_epochs, r.distributed)
    del local_X
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lam", type=float, default=1.0, help="dask-glm lamduh (alpha = lam / n)")
    parser.add_argument("--backend", default="auto", help="fastgd backend in the workers")
    parser.add_argument("--solvers", default="lbfgs,newton", help="pairs to time: lbfgs, newton")
    parser.add_argument(
        "--hessian-dtypes", default="float64,float32", help="fastgd Newton's hessian_dtype(s)"
    )
    parser.add_argument(
        "--no-overhead", action="store_true", help="skip the per-iteration comparison"
    )
    args = parser.parse_args()
    global BACKEND
    BACKEND = args.backend
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__)))
    # Load the backends (and OpenMP's runtime, which reads OMP_NUM_THREADS once, when it
    # loads) before the cluster starts: LocalCluster sets OMP_NUM_THREADS=1 in this
    # process too, which would leave the single-machine Cython fit one thread.
    available_backends()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, env={"PYTHONPATH": root})  # fmt: skip
    with Client(cluster) as client:
        run_all(client, args)
    cluster.close()


def _noop(x):
    return x


def empty_round(client, repeat=30):
    """Seconds of a round that does nothing: one task per worker, submitted and gathered
    (median of ``repeat``): the floor of every round, whatever runs in it."""
    workers = list(client.scheduler_info()["workers"])
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        futures = [client.submit(_noop, np.zeros(101), pure=False, workers=[w]) for w in workers]
        client.gather(futures)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def run_all(client, args):
    n, d = args.rows, args.features
    print(f"{n} x {d} float64 in {args.chunks} chunks, {args.workers} workers x 1 thread")
    print(f"a round that does nothing (one task per worker, gathered): {1e3 * empty_round(client):.1f} ms")  # fmt: skip
    X, y = make_data(client, n, d, args.chunks)
    alpha = args.lam / n
    rows = []
    pairs = (("L-BFGS, L2", alpha, "lbfgs"), ("Newton, no penalty", 0.0, "newton"))
    for pair, a, solver in [p for p in pairs if p[2] in args.solvers.split(",")]:
        fastgd_fit(X, y, solver, a, epochs=2)  # warm-up: the workers load the kernels
        best = fastgd_fit(X, y, "newton", a)
        f_star = objective(X, y, best.coef_.ravel(), a)
        target = f_star + TARGET * abs(f_star)
        print(f"{pair}: f* = {f_star:.12g}")
        if solver == "lbfgs":  # fastgd: the callback; dask-glm: SciPy's callback
            runs = {
                "fastgd lbfgs": lambda a=a, t=target: time_fastgd(X, y, "lbfgs", a, t),
                "dask-glm lbfgs (tol=1e-4)": lambda a=a, g=target: time_dask_glm(X, y, "lbfgs", a, 1e-4, g),
            }  # fmt: skip
            fast, glm = measure(runs, X, y, a, f_star, args.repeat)
            rows.append((pair, fast, glm))
            continue
        # Newton: each by its own stopping rule, at its loosest tol that reaches the target
        runs = newton_runs(X, y, a, target, args.hessian_dtypes.split(","))
        tol = loosest_tol(lambda t, a=a: time_dask_glm(X, y, "newton", a, t, None), X, y, a, target)  # fmt: skip
        runs[f"dask-glm newton (tol={tol:g})"] = lambda a=a, t=tol: time_dask_glm(X, y, "newton", a, t, None)  # fmt: skip
        *fasts, glm = measure(runs, X, y, a, f_star, args.repeat)
        for dtype, fast in zip(args.hessian_dtypes.split(","), fasts, strict=True):
            rows.append((f"{pair}, hessian_dtype={dtype}", fast, glm))
            hessian_rate(fast["info"], n // args.workers, d)
    overhead = None if args.no_overhead else per_iteration(X, y, alpha, args.repeat)
    report(rows, overhead)


def newton_runs(X, y, alpha, target, dtypes):
    """fastgd's Newton per ``--hessian-dtypes`` entry, at its loosest tol: name -> run."""
    runs = {}
    for dtype in dtypes:
        solver = Newton(hessian_dtype=dtype)
        fastgd_fit(X, y, solver, alpha, epochs=1)  # warm-up of this pass in the workers
        tol = loosest_tol(lambda t, s=solver: time_fastgd(X, y, s, alpha, None, t), X, y, alpha, target)  # fmt: skip
        runs[f"fastgd newton {dtype} (tol={tol:g})"] = lambda s=solver, t=tol: time_fastgd(X, y, s, alpha, None, t)  # fmt: skip
    return runs


def hessian_rate(info, rows_per_worker, d):
    """How close Newton's rounds run to the machine: the Gram products of the Hessian
    rounds (every round but the last, whose Hessian is skipped; ``rows x d^2`` FLOPs each
    as dsyrk counts them) per second of the busiest worker's compute, against one core's
    float64 BLAS matmul rate measured now in this process (workers idle)."""
    from fastgd.bench.roofline import matmul_rate

    peak = matmul_rate("float64", 1) / 1e9
    rounds = info["n_rounds"] - 1
    rate = rounds * rows_per_worker * d * d / info["compute_time"] / 1e9
    print(f"Newton: {rounds} Hessian rounds of {rows_per_worker} rows x {d} per worker: "
          f"{rate:.1f} GFLOP/s of Gram products per worker ({100 * rate / peak:.0f}% of one "
          f"core's float64 matmul, {peak:.1f} GFLOP/s), counting all compute time", flush=True)  # fmt: skip


def report(rows, overhead):
    print("\n| pair | fastgd (s) | dask-glm (s) | ratio | iterations (fastgd / dask-glm) | reached (fastgd / dask-glm) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for pair, fast, glm in rows:
        print(f"| {pair} | {fast['time']:.2f} | {glm['time']:.2f} | {glm['time'] / fast['time']:.1f}x | "
              f"{fast['iterations']} / {glm['iterations'] or '-'} | {'yes' if fast['reached'] else 'no'} / {'yes' if glm['reached'] else 'no'} "
              f"(gap {fast['gap']:.0e} / {glm['gap']:.0e}) |")  # fmt: skip
    for pair, fast, glm in rows:  # the ratio fastgd's kernels alone would give: the bound
        compute = fast["info"]["compute_time"]
        print(f"{pair}: fastgd's kernels alone (last run, busiest worker) {compute:.2f} s: at most "
              f"{glm['time'] / compute:.1f}x dask-glm without any preparation or communication")  # fmt: skip
    if overhead is None:
        return
    dask_s, iterations, info = overhead["dask"]
    local_s = overhead["single machine"][0]
    rounds = info["n_rounds"]
    print(f"\nL-BFGS per iteration ({iterations} iterations): Dask {1e3 * dask_s:.1f} ms, "
          f"single machine (2 threads) {1e3 * local_s:.1f} ms, overhead {1e3 * (dask_s - local_s):+.1f} ms "
          f"({dask_s / local_s:.2f}x); per round: compute {1e3 * info['compute_time'] / rounds:.1f} ms "
          f"(slowest chunk), communication {1e3 * info['communication_time'] / rounds:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
