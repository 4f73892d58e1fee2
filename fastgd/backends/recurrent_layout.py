"""Workspace layout of the compiled recurrent kernels (Numba and Cython share it).

A batch's chunk keeps, for backpropagation through time, the states and gates of every
step of every layer, in blocks laid out ``[t][row][unit]`` so that each step's block is a
contiguous matrix. :func:`workspace` gives the offsets of every block in one chunk's
workspace, for chunks of up to ``R`` rows and ``T`` steps.
"""

from .._config import MAX_CHUNKS
from ..specs import recurrent as rec

_CACHE_LINE_BYTES = 64
# a batch's chunks hold at least this many rows: small enough that a batch of 64 keeps two
# threads busy, large enough for efficient matrix products (more rows for wider layers)
MIN_ROWS_SMALL, MIN_ROWS_WIDE, WIDE = 16, 32, 96
# workspaces above this many bytes are refused with a clear error
MAX_SCRATCH_BYTES = 4 << 30


def chunk_rows(hidden):
    """Minimum rows per chunk for layers of ``hidden`` units (a model constant, so the
    partition of a batch never depends on the thread count)."""
    return MIN_ROWS_WIDE if hidden >= WIDE else MIN_ROWS_SMALL


def n_chunks(rows, hidden):
    """Chunks of a batch of ``rows`` sequences."""
    return min(MAX_CHUNKS, max(1, rows // chunk_rows(hidden)))


def max_chunk_rows(rows, hidden):
    """The most rows a chunk of any batch of up to ``rows`` rows gets (below twice the
    minimum a batch has one chunk fewer than it could hold)."""
    return max(-(-rows // n_chunks(rows, hidden)), min(rows, 2 * chunk_rows(hidden) - 1))


def workspace(model, rows, n_steps, itemsize):
    """Offsets of one chunk's workspace blocks and its size, in entries.

    Returns
    -------
    dict with ints ``xs`` (gathered inputs, (T, R, f)), ``d_in0``, ``d_in1`` (gradients
    between layers, (T, R, h)), ``tmp`` (a recurrent product, (R, G h)), ``dh``, ``dc``,
    ``tmp_h`` ((R, h)), ``w_t`` (a layer's ``W_hh`` for the per-step products: a tile of
    ``TILE_ROWS x STRIP`` entries, then ``W_hh^T`` row-major (float64) or ``W_hh^T`` or
    ``W_hh`` packed in strips (float32, :func:`fastgd.specs.recurrent.packed_entries`)), ``head_d0``,
    ``head_d1`` (head gradients); lists with one entry per layer ``H`` (states,
    (T + 1, R, h)), ``gates`` ((T, R, G h): activated gates, then their gradients),
    ``dah`` (GRU: the hidden-side gate gradients; others: ``gates``), ``C`` (LSTM cell
    states, (T + 1, R, h); else 0), ``aux`` (LSTM ``tanh(c_t)``, GRU ``hn``, (T, R, h);
    else 0); ``head_a`` (each head layer's output); ``size``, ``R``.
    Every block starts on a cache line.
    """
    cell, f, n, L = int(model.cell), int(model.n_features), int(model.hidden), int(model.n_layers)
    G = rec.GATES[cell]
    R, T = max_chunk_rows(rows, n), int(n_steps)
    line = _CACHE_LINE_BYTES // itemsize
    total = 0

    def take(count):
        nonlocal total
        offset = total
        total += -(-count // line) * line
        return offset

    out = dict(xs=take(T * R * f), H=[], gates=[], dah=[], C=[], aux=[])
    for _ in range(L):
        out["H"].append(take((T + 1) * R * n))
        out["gates"].append(take(T * R * G * n))
        out["dah"].append(take(T * R * G * n) if cell == rec.GRU else out["gates"][-1])
        out["C"].append(take((T + 1) * R * n) if cell == rec.LSTM else 0)
        out["aux"].append(take(T * R * n) if cell != rec.TANH else 0)
    out.update(d_in0=take(T * R * n), d_in1=take(T * R * n), tmp=take(R * G * n))
    packed = max(rec.packed_entries(n, G * n), rec.packed_entries(G * n, n))
    out.update(dh=take(R * n), dc=take(R * n), tmp_h=take(R * n))
    out.update(w_t=take(rec.TILE_ROWS * rec.STRIP + packed))
    N = T * R if model.sequence else R
    head = [int(w) for w in model.head_sizes]
    out["head_a"] = [take(N * w) for w in head[1:]]
    out.update(head_d0=take(N * max(head[:-1])), head_d1=take(N * max(head[:-1])))
    out.update(size=max(total, 1) + line, R=R)  # + a line: chunks never share one
    return out


def check_memory(size, n_params, itemsize):
    """Refuse a workspace of ``MAX_CHUNKS`` chunks that would not fit in memory."""
    needed = MAX_CHUNKS * (size + n_params) * itemsize
    if needed > MAX_SCRATCH_BYTES:
        raise ValueError(
            f"a recurrent batch needs {needed / 2**30:.1f} GiB of workspace (states and gates "
            f"of every step are kept for backpropagation through time); use a smaller "
            "batch_size, shorter sequences or fewer hidden units"
        )
