"""``fastgd bench``: the standard benchmark suite from the command line."""

import dataclasses
import datetime
import os
import sys
import time

import numpy as np

from . import report, roofline
from .models import MODELS
from .recurrent import recurrent_case, recurrent_rows
from .solvers import solver_case, solver_rows
from .suite import BenchConfig, batch_label, parse_batch, run_grid, scaling
from .system import BLAS_VARIABLES, machine_info, max_threads, measure_memory, measure_startup

# The standard suite (meant to take about two minutes on a 2-core laptop) and --quick (a
# fraction of that); the MLP trains on at most 2,000 rows (ModelCase.max_rows). Where
# PyTorch is installed, its per-step overhead (~0.5 ms) dominates the batch-size-1 rows.
# Measured on a shared 2-core 2.5 GHz Xeon VM with PyTorch: --quick 37 s, of which 12 s
# PyTorch's timed runs (at 2,000 rows it took 90 s); the standard suite about 6 minutes.
STANDARD = dict(rows=10_000, features=100, epochs=2, full_epochs=50, repeats=5, max_time=0.5,
                memory_rows="20000,200000", solver_shapes="200000x100,20000x1000",
                rnn_hidden="32,128", rnn_sequences=1024)  # fmt: skip
QUICK = dict(rows=500, features=20, epochs=2, full_epochs=20, repeats=3, max_time=0.2,
             memory_rows="5000", solver_shapes="2000x20", rnn_hidden="32",
             rnn_sequences=256)  # fmt: skip

FAIRNESS = (
    "Same algorithm (plain SGD, same loss, learning rate, batch size, epochs, start), same data, "
    "same number of updates on every side; threads pinned on every side (fastgd n_threads, BLAS "
    "via threadpoolctl, torch.set_num_threads); every implementation warmed up first, so "
    "compile time is reported apart; medians of repeated wall times of the whole fit call; "
    "final parameters (or loss/accuracy where the algorithms differ) checked against the NumPy "
    "reference before a time is reported."
)


def _csv(text, kind=str):
    return tuple(kind(x) for x in text.split(",") if x)


def add_arguments(parser):
    """Add the ``fastgd bench`` options to an ``argparse`` parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    add = parser.add_argument
    add("--quick", action="store_true",
        help="a short version: small data, fewer repeats, no cold-cache start-up")  # fmt: skip
    add("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    add("--backends", default=None, help="fastgd backends (default: all available)")
    add("--batch-sizes", default="1,32,256,full", help='comma-separated; "full" = full batch')
    add("--dtypes", default="float64,float32")
    add("--threads", default="1,2", help="thread counts to run at (default 1,2)")
    add(
        "--rows",
        type=int,
        help=f"rows of the data (default {STANDARD['rows']}, quick {QUICK['rows']})",
    )
    add(
        "--features",
        type=int,
        help=f"features (default {STANDARD['features']}, quick {QUICK['features']})",
    )
    add("--epochs", type=int, help=f"epochs of mini-batch runs (default {STANDARD['epochs']})")
    add(
        "--full-epochs",
        type=int,
        help=f"epochs of full-batch runs (default {STANDARD['full_epochs']})",
    )
    add("--repeats", type=int, help="timed runs per implementation, at most (median reported)")
    add("--max-time", type=float, help="stop repeating after this many seconds per implementation")
    add("--shuffle", nargs="?", const="rows", default=False, choices=("rows", "blocks"),
        help="shuffle each epoch: rows (the default of the flag) or blocks of consecutive rows "
             "(fit's shuffle='blocks'); scikit-learn then draws its own order: loss checked")  # fmt: skip
    add("--no-compare", action="store_true", help="skip scikit-learn and PyTorch")
    add(
        "--memory-rows",
        help=f"data sizes of the memory measurement (default {STANDARD['memory_rows']})",
    )
    add("--no-memory", action="store_true", help="skip the peak-memory measurement")
    add(
        "--solver-shapes",
        help="rows x features of the second-order table (time to the L2-logistic optimum; "
        f"default {STANDARD['solver_shapes']}, quick {QUICK['solver_shapes']})",
    )
    add("--no-solvers", action="store_true", help="skip the second-order table")
    add(
        "--rnn-hidden",
        help="hidden sizes of the recurrent table (LSTM and GRU against PyTorch; "
        f"default {STANDARD['rnn_hidden']}, quick {QUICK['rnn_hidden']})",
    )
    add("--rnn-sequences", type=int, help="sequences per epoch of the recurrent table")
    add("--no-recurrent", action="store_true", help="skip the recurrent-network table")
    add(
        "--no-roofline",
        action="store_true",
        help="skip measuring the machine's limits (streaming read, matmul peak)",
    )
    add("--no-startup", action="store_true", help="skip the import/first-fit measurement")
    add("--no-cold", action="store_true", help="skip the first fit with an empty kernel cache")
    add("--seed", type=int, default=0)
    add("--json", default="fastgd-bench.json", help="results file (default fastgd-bench.json)")
    add(
        "--plot",
        default="fastgd-bench.png",
        help="chart (needs matplotlib; default fastgd-bench.png)",
    )
    add("--no-plot", action="store_true", help="do not draw the chart")
    add("--markdown", default=None, help="also write the tables as Markdown to this file")


def config_from_args(args):
    """The :class:`BenchConfig` of parsed ``fastgd bench`` options.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    BenchConfig
    """
    import fastgd

    sizes = QUICK if args.quick else STANDARD
    value = lambda name: sizes[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    models = _csv(args.models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    backends = _csv(args.backends) if args.backends else tuple(fastgd.available_backends())
    missing = [b for b in backends if b not in fastgd.available_backends()]
    if missing:
        raise SystemExit(f"backend(s) {missing} not available here: {fastgd.available_backends()}")
    threads = tuple(t for t in _csv(args.threads, int) if 1 <= t <= max_threads())
    if not threads:
        raise SystemExit(f"no usable thread count in {args.threads!r} (max {max_threads()})")
    return BenchConfig(
        models=models, backends=backends, batch_sizes=_csv(args.batch_sizes, parse_batch),
        dtypes=_csv(args.dtypes), threads=threads, rows=value("rows"), features=value("features"),
        epochs=value("epochs"), full_epochs=value("full_epochs"), repeats=value("repeats"),
        max_time=value("max_time"), shuffle=args.shuffle, competitors=not args.no_compare,
        seed=args.seed,
    )  # fmt: skip


def _row_bytes(case, features, dtype):
    """Bytes of one row of X as stored: dense, or CSR (values and int32 column indices)."""
    if case.nnz_per_row:
        return min(case.nnz_per_row, features) * (np.dtype(dtype).itemsize + 4)
    return features * np.dtype(dtype).itemsize


def _working_sets(config):
    """Bytes of X of every linear-family data set of the grid (their read limits)."""
    sets = set()
    for name in config.models:
        case = MODELS[name]
        if case.linear:
            features = case.features or config.features
            for dtype in config.dtypes:
                sets.add(case.n_rows(config.rows) * _row_bytes(case, features, dtype))
    return sorted(sets)


def _add_shares(records, limits):
    """Each grid record's share of the limit that bounds it (``limit_share``, or None)."""
    for r in records:
        case = MODELS[r["model"]]
        sizes = None if case.linear else [r["features"], *case.hidden, case.n_outputs()]
        row_bytes = _row_bytes(case, r["features"], r["dtype"])
        r["limit_share"] = roofline.share(r, limits, sizes, row_bytes)


def _solvers(args, config, sizes, log):
    """Records of the second-order table (:mod:`fastgd.bench.solvers`), one case per shape."""
    backends = [b for b in config.backends if b != "numpy"] or list(config.backends)
    records = []
    for shape in _csv(args.solver_shapes or sizes["solver_shapes"]):
        n, d = (int(x) for x in shape.split("x"))
        records += solver_case(n, d, max(config.threads), backends, min(config.repeats, 3), log)
    return records


def _extras(args, config, sizes, log):
    """The measurements beside the grid, each skipped by its ``--no-...`` option."""
    extra = dict(memory=[], solvers=[], recurrent=[], startup=[])
    if not args.no_memory:
        extra["memory"] = _memory(args, config, sizes, log)
    if not args.no_solvers:
        log("second-order solvers: time to the optimum ...")
        extra["solvers"] = _solvers(args, config, sizes, log)
    if not args.no_recurrent:
        log("recurrent networks: LSTM and GRU against PyTorch ...")
        extra["recurrent"] = _recurrent(args, config, sizes, log)
    if not args.no_startup:
        log("import and first fit in a new process ...")
        extra["startup"] = measure_startup(config.backends,
                                           cold=not (args.no_cold or args.quick), log=log)  # fmt: skip
    return extra


def _recurrent(args, config, sizes, log):
    """Records of the recurrent table (:mod:`fastgd.bench.recurrent`): LSTM and GRU at each
    hidden size, float32, the most threads of the run."""
    n = args.rnn_sequences or sizes["rnn_sequences"]
    records = []
    for cell in ("lstm", "gru"):
        for hidden in _csv(args.rnn_hidden or sizes["rnn_hidden"], int):
            records += recurrent_case(cell, hidden, n, 2, max(config.threads), config.backends,
                                      min(config.repeats, 3), log)  # fmt: skip
    return records


def _recurrent_section(records, limits, threads, out, md):
    peak = limits.get("matmul_gflops", {}).get("float32", {}).get(str(threads)) if limits else None
    _section(f"Recurrent networks: training samples/s (50 steps x 16 features, batch 64, "
             f"float32, Adam, {threads} threads; PyTorch runs the same nn.LSTM/nn.GRU + "
             "nn.Linear; check = parameters against the numpy backend's):",
             recurrent_rows(records, peak and peak * 1e9), out, md)  # fmt: skip


def _memory(args, config, sizes, log):
    """Peak memory per model kind: the first model at every size (how the peak grows with
    the data), the other model kinds at the largest."""
    rows = _csv(args.memory_rows or sizes["memory_rows"], int)
    if config.models:
        log("peak memory per model kind (one new process per size) ...")
    memory = []
    for i, model in enumerate(config.models):
        memory += measure_memory(model, rows if i == 0 else rows[-1:], config.features,
                                 config.backends, dtype=config.dtypes[0],
                                 threads=max(config.threads), log=log)  # fmt: skip
    return memory


def _section(title, header_rows, out, md):
    header, rows = header_rows
    if not rows:
        return
    print(f"\n{title}", file=out)
    print(report.text_table(header, rows), file=out)
    md.append(f"{title}\n\n{report.markdown_table(header, rows)}\n")


def _log_notes(records, skipped, log):
    """Notes, skipped competitors and failed checks; returns the failed records."""
    notes = {(r["impl"], r["model"]): r["note"] for r in records if r.get("note")}
    for (impl, model), note in notes.items():
        log(f"note: {impl} for {model}: {note}")
    for entry in skipped:
        log(f"not compared: {entry['competitor']} for {entry['model']}: {entry['reason']}")
    failed = [r for r in records if r["check"] is not None and not r["check"]["ok"]]
    for r in failed:
        log(f"CHECK FAILED: {r['impl']} {r['model']} {r['dtype']} batch {r['batch_size']} "
            f"{r['threads']} thr: {r['check']['kind']} differs by {r['check']['value']:.3g} "
            f"> {r['check']['tol']:g}")  # fmt: skip
    return failed


def _log_setup(args, config, machine, log):
    """What the run measures, on which machine, and warnings about the environment."""
    log(f"fastgd bench{' --quick' if args.quick else ''}: {machine['cpu']}, "
        f"{machine['logical_cpus']} logical CPUs, {machine['memory_gb']} GB")  # fmt: skip
    log(f"BLAS: {machine['blas']}; numba threading layer: {machine.get('numba_threading_layer')}")
    for name in BLAS_VARIABLES:
        if name in os.environ:
            log(f"note: {name}={os.environ[name]} is set and may slow NumPy's BLAS; for a fair "
                f"baseline run: env -u {' -u '.join(BLAS_VARIABLES)} fastgd bench ...")  # fmt: skip
    log(f"data: {config.rows} x {config.features}, plain SGD, {config.epochs} epochs "
        f"(full batch: {config.full_epochs}), {'shuffled (' + config.shuffle + ')' if config.shuffle else 'rows in order'}; "
        f"threads {', '.join(map(str, config.threads))}")  # fmt: skip
    capped = [f"{m} {MODELS[m].n_rows(config.rows)}" for m in config.models
              if MODELS[m].n_rows(config.rows) < config.rows]  # fmt: skip
    if capped:
        log(f"rows of the models with a row limit: {', '.join(capped)}")


def run(args, out=None):
    """Run ``fastgd bench`` with parsed options; print, write JSON (and chart).

    Parameters
    ----------
    args : argparse.Namespace
        Options of :func:`add_arguments`.
    out : file-like, optional
        Where to print (default: standard output).

    Returns
    -------
    int
        0, or 1 if any implementation disagreed with the reference.
    """
    out = out or sys.stdout
    log = lambda text: print(text, file=out, flush=True)  # noqa: E731
    config = config_from_args(args)
    sizes = QUICK if args.quick else STANDARD
    machine = machine_info()
    started = time.perf_counter()
    _log_setup(args, config, machine, log)
    limits = {}
    if not args.no_roofline:
        log("the machine's limits (compiled streaming read, BLAS matmul) ...")
        limits = roofline.measure(config.threads, config.dtypes, quick=args.quick, log=log,
                                  working_sets=_working_sets(config))  # fmt: skip
    log("grid (median wall time of a fit):")
    records, skipped = run_grid(config, log=log)
    _add_shares(records, limits)
    scale = scaling(records)
    try:  # the layer Numba actually used, known once a parallel kernel has run
        import numba

        machine["numba_threading_layer"] = numba.threading_layer()
    except (ImportError, ValueError):
        pass

    extra = _extras(args, config, sizes, log)
    memory, solvers, recurrent, startup = (extra[k] for k in ("memory", "solvers", "recurrent", "startup"))  # fmt: skip

    md = []
    _section("Throughput in samples/s (speed-up over the tight NumPy loop, numpy-loop; numpy = fastgd's reference backend):",
             report.grid_rows(records), out, md)  # fmt: skip
    _section("Share of the machine's limit (linear: bytes of X read per second / the read rate "
             "of an array of X's size, from memory or, when X fits, from a cache; networks: "
             "FLOP/s / BLAS matmul peak; same threads):",
             report.share_rows(records), out, md)  # fmt: skip
    _section("Scaling with threads (time at fewer threads / time at more):",
             report.scaling_rows(scale), out, md)  # fmt: skip
    _section("Compile or kernel-cache load, first fit in this process (not in the times above):",
             report.compile_rows(records), out, md)  # fmt: skip
    _section("Second-order solvers: time to the L2-logistic optimum (float64, C = 1, "
             f"{max(config.threads)} threads; 'reached' = within 1e-8 of the best objective):",
             solver_rows(solvers), out, md)  # fmt: skip
    _recurrent_section(recurrent, limits, max(config.threads), out, md)
    _section("Peak memory of a fit per model kind (new process per size):",
             report.memory_rows(memory), out, md)  # fmt: skip
    _section("Import and first fit in a new process:", report.startup_rows(startup), out, md)
    failed = _log_notes(records, skipped, log)
    for r in recurrent:
        if r["check"]:
            failed.append(r)
            log(f"CHECK FAILED: {r['cell']} {r['hidden']} on {r['contender']}: {r['check']}")
    elapsed = time.perf_counter() - started

    payload = dict(
        options={k: v for k, v in vars(args).items() if k != "command"},
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        elapsed_s=elapsed,
        settings=dict(dataclasses.asdict(config),
                      batch_sizes=[batch_label(b) for b in config.batch_sizes]),  # fmt: skip
        machine=machine, fairness=FAIRNESS, ok=not failed, grid=records, skipped=skipped,
        scaling=scale, memory=memory, startup=startup, solvers=solvers, recurrent=recurrent,
        roofline=limits,
    )  # fmt: skip
    path = report.write_json(args.json, payload)
    log(f"\nwrote {path}")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(md))
        log(f"wrote {args.markdown}")
    if not args.no_plot and records:
        chart = report.plot(records, args.plot,
                            title=f"fastgd speed-up over the NumPy loop ({max(config.threads)} threads), "
                                  f"{machine['cpu']}")  # fmt: skip
        if chart:
            log(f"wrote {chart}")
    log(f"done in {elapsed:.0f} s" + ("" if not failed else f"; {len(failed)} CHECK(S) FAILED"))
    return 1 if failed else 0


def main(argv=None):
    """``python -m fastgd.bench``: the same as ``fastgd bench``.

    Parameters
    ----------
    argv : list of str, optional
        Options (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="fastgd bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
