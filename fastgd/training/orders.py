"""The row order of each epoch: ``fit``'s ``shuffle`` modes.

``"rows"`` (``shuffle=True``) draws a permutation of the rows; ``"blocks"`` a permutation
of blocks of ``fastgd._config.SHUFFLE_BLOCK_ROWS`` consecutive rows, each block's
rows then visited in increasing order (the last block is shorter when the block length
does not divide the rows, and is shuffled with the others). The kernels take any order,
so every backend trains on the same batches; the orders are drawn from NumPy's generator
in Python, never on a kernel's threads, so they do not depend on ``n_threads``.
"""

import numpy as np

from .. import _config

MODES = ("rows", "blocks")


def check_shuffle(shuffle):
    """``shuffle`` as a mode: ``"rows"``, ``"blocks"``, or ``None`` (rows in order).

    Parameters
    ----------
    shuffle : bool or {"rows", "blocks"}
        ``True`` means ``"rows"``.

    Returns
    -------
    str or None

    Raises
    ------
    ValueError
        For any other value, naming ``shuffle``.
    """
    if isinstance(shuffle, (bool, np.bool_)):
        return "rows" if shuffle else None
    if isinstance(shuffle, str) and shuffle in MODES:
        return shuffle
    raise ValueError(f"shuffle must be True, False, 'rows' or 'blocks'; got {shuffle!r}")


def epoch_order(rng, n, mode, block_rows=None):
    """One epoch's order of ``n`` rows, drawn from ``rng`` (a ``numpy.random.Generator``).

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    mode : {"rows", "blocks"}
    block_rows : int, optional
        Rows per block of ``"blocks"``; default ``fastgd._config.SHUFFLE_BLOCK_ROWS``,
        read at each call (the benchmarks sweep it).

    Returns
    -------
    ndarray of int64, shape (n,)
        A permutation of ``0..n-1``.
    """
    if mode == "rows":
        return rng.permutation(n)
    block_rows = block_rows or _config.SHUFFLE_BLOCK_ROWS
    n_blocks = -(-n // block_rows)
    blocks = rng.permutation(n_blocks)
    # every block as if it were full, then the missing end of the last one cut out
    order = (blocks[:, None] * block_rows + np.arange(block_rows)).ravel()
    short = n_blocks * block_rows - n
    if short:
        end = (int(np.flatnonzero(blocks == n_blocks - 1)[0]) + 1) * block_rows
        order = np.delete(order, np.s_[end - short : end])
    return order
