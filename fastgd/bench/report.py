"""Tables (text and Markdown), the JSON file and the chart of a benchmark run."""

import json
from pathlib import Path

IMPL_ORDER = ("numpy-loop", "numpy", "numba", "cython", "pytorch", "scikit-learn")
# the implementation every speed-up is relative to (fastgd.bench.numpy_loop)
BASELINE_IMPL = "numpy-loop"


def rate(samples_per_s):
    """Human-readable throughput, e.g. ``"4.53 M/s"``.

    Parameters
    ----------
    samples_per_s : float or None

    Returns
    -------
    str
    """
    if samples_per_s is None:
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if samples_per_s >= scale:
            return f"{samples_per_s / scale:.3g} {unit}/s"
    return f"{samples_per_s:.3g} /s"


def _impls(records):
    present = {r["impl"] for r in records}
    return [i for i in IMPL_ORDER if i in present] + sorted(present - set(IMPL_ORDER))


def _cell(record):
    if record is None:
        return "-"
    if record["median_s"] is None:
        return "CHECK FAILED"
    text = rate(record["samples_per_s"])
    if record["impl"] != BASELINE_IMPL and record["speedup_vs_numpy"]:
        text += f" ({record['speedup_vs_numpy']:.1f}x)"
    return text


def grid_rows(records):
    """The main table as a header and rows of strings: one row per grid point.

    Columns: model, dtype, batch size, threads, then per implementation its throughput
    (samples per second) and, in parentheses, its speed-up over the tight NumPy loop.

    Parameters
    ----------
    records : list of dict
        Grid records of :func:`fastgd.bench.suite.run_grid`.

    Returns
    -------
    header : list of str
    rows : list of list of str
    """
    impls = _impls(records)
    header = ["model", "dtype", "batch", "threads"] + impls
    points = {}
    for r in records:
        key = (r["model"], r["dtype"], r["batch_size"], r["threads"])
        points.setdefault(key, {})[r["impl"]] = r
    rows = [
        list(map(str, key)) + [_cell(cells.get(i)) for i in impls] for key, cells in points.items()
    ]
    return header, rows


def share_rows(records):
    """The roofline table: per grid point, each implementation's share of the machine's
    limit (``limit_share`` of the records, in percent).

    Parameters
    ----------
    records : list of dict
        Grid records with ``limit_share`` (see :func:`fastgd.bench.roofline.share`).

    Returns
    -------
    header : list of str
    rows : list of list of str
        Empty when no record has a share (the limits were not measured).
    """
    if not any(r.get("limit_share") for r in records):
        return [], []
    impls = _impls(records)
    points = {}
    for r in records:
        key = (r["model"], r["dtype"], r["batch_size"], r["threads"])
        points.setdefault(key, {})[r["impl"]] = r.get("limit_share")
    rows = [
        list(map(str, key)) + ["-" if cells.get(i) is None else f"{100 * cells[i]:.0f}%" for i in impls]
        for key, cells in points.items()
    ]  # fmt: skip
    return ["model", "dtype", "batch", "threads"] + impls, rows


def text_table(header, rows):
    """Align columns for a terminal.

    Parameters
    ----------
    header : list of str
    rows : list of list

    Returns
    -------
    str
    """
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True))
        for line in [header] + rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header, rows):
    """A GitHub-flavoured Markdown table.

    Parameters
    ----------
    header : list of str
    rows : list of list

    Returns
    -------
    str
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def scaling_rows(scaling):
    """Thread scaling as a table: per grid point, each implementation's speed-up.

    Parameters
    ----------
    scaling : list of dict
        Records of :func:`fastgd.bench.suite.scaling`.

    Returns
    -------
    header, rows : list
    """
    impls = _impls(scaling)
    if not scaling:
        return [], []
    low, high = scaling[0]["threads_from"], scaling[0]["threads_to"]
    header = ["model", "dtype", "batch"] + [f"{i} {low}->{high} thr" for i in impls]
    points = {}
    for s in scaling:
        points.setdefault((s["model"], s["dtype"], s["batch_size"]), {})[s["impl"]] = s
    rows = []
    for key, cells in points.items():
        rows.append(
            list(key) + [f"{cells[i]['speedup']:.2f}x" if i in cells else "-" for i in impls]
        )
    return header, rows


# (column title, format of a record's fields) of the tables of system measurements
MEMORY_COLUMNS = (
    ("backend", "{backend}"), ("model", "{model}"), ("dtype", "{dtype}"),
    ("rows x features", "{rows} x {features}"), ("data MB", "{data_mb:.1f}"),
    ("batch", "{batch_size}"), ("fit peak above data MB", "{extra_mb:.1f}"),
    ("/ data size", "{extra_vs_data:.2f}"), ("kernels MB", "{kernels_mb:.0f}"),
)  # fmt: skip
STARTUP_COLUMNS = (
    ("backend", "{backend}"), ("kernel cache", "{cache}"), ("import fastgd s", "{import_s:.2f}"),
    ("first fit s", "{first_fit_s:.2f}"), ("of which compile/load s", "{compile_s:.2f}"),
    ("whole process s", "{process_s:.2f}"),
)  # fmt: skip


def _format_rows(records, columns):
    """Header and one row of formatted fields per record."""
    header = [title for title, _ in columns]
    return header, [[template.format(**r) for _, template in columns] for r in records]


def memory_rows(memory):
    """Peak memory of a fit as a table.

    Parameters
    ----------
    memory : list of dict
        Records of :func:`fastgd.bench.system.measure_memory`.

    Returns
    -------
    header, rows : list
    """
    return _format_rows(memory, MEMORY_COLUMNS)


def startup_rows(startup):
    """Import and first-fit times in a new process as a table.

    Parameters
    ----------
    startup : list of dict
        Records of :func:`fastgd.bench.system.measure_startup`.

    Returns
    -------
    header, rows : list
    """
    return _format_rows(startup, STARTUP_COLUMNS)


def compile_rows(records):
    """Compile (or cache-load) time of the grid's kernels per backend and dtype, summed
    over the warm-up fits of this process (one per grid row).

    Parameters
    ----------
    records : list of dict
        Grid records of :func:`fastgd.bench.suite.run_grid`.

    Returns
    -------
    header, rows : list
    """
    first = {}
    for r in records:
        if r["kind"] == "fastgd" and r.get("compile_s") is not None:
            key = (r["impl"], r["dtype"])
            first[key] = first.get(key, 0.0) + r["compile_s"]
    header = ["backend", "dtype", "compile or cache load, all kernels of the grid, s"]
    return header, [[b, d, f"{s:.3f}"] for (b, d), s in first.items()]


def write_json(path, payload):
    """Write the run's results (settings, machine, every record) as JSON.

    Parameters
    ----------
    path : str or Path
    payload : dict

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def plot(records, path, title=""):
    """Chart: speed-up over the NumPy loop against batch size, one panel per model, one line per
    implementation (solid float64, dashed float32), at the largest thread count.

    Parameters
    ----------
    records : list of dict
        Grid records of :func:`fastgd.bench.suite.run_grid`.
    path : str or Path
        The PNG to write.
    title : str

    Returns
    -------
    Path or None
        ``None`` (and a message on stdout) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('chart skipped: matplotlib is not installed (pip install "fastgd[bench]")')
        return None
    threads = max(r["threads"] for r in records)
    records = [r for r in records if r["threads"] == threads and r["impl"] != BASELINE_IMPL]
    models = list(dict.fromkeys(r["model"] for r in records))
    batches = list(dict.fromkeys(r["batch_size"] for r in records))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), sharey=True,
                             squeeze=False)  # fmt: skip
    colors = {"numba": "C0", "cython": "C1", "pytorch": "C3", "scikit-learn": "C2", "numpy": "C7"}
    for ax, model in zip(axes[0], models, strict=True):
        for impl in _impls(records):
            for dtype, style, marker in (("float64", "-", "o"), ("float32", "--", "s")):
                points = [(batches.index(r["batch_size"]), r["speedup_vs_numpy"]) for r in records
                          if r["model"] == model and r["impl"] == impl and r["dtype"] == dtype
                          and r["speedup_vs_numpy"]]  # fmt: skip
                if points:
                    x, y = zip(*points, strict=True)
                    ax.plot(
                        x, y, style, marker=marker, color=colors.get(impl), label=f"{impl} {dtype}"
                    )
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(batches)), batches)
        ax.set_xlabel("batch size")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("speed-up over the NumPy loop (x)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(
        title or f"fastgd: speed-up over the NumPy baseline, {threads} threads", fontsize=9
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
