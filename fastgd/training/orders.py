"""The row order of each epoch: ``fit``'s ``shuffle`` modes.

``"rows"`` (``shuffle=True``) draws a permutation of the rows; ``"blocks"`` a permutation
of blocks of ``fastgd._config.SHUFFLE_BLOCK_ROWS`` consecutive rows, each block's
rows then visited in increasing order (the last block is shorter when the block length
does not divide the rows, and is shuffled with the others). The kernels take any order,
so every backend trains on the same batches; the orders are drawn from NumPy's generator
in Python, never on a kernel's threads, so they do not depend on ``n_threads``.
"""

import os
import threading

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


def block_orders(rng, count, n, shuffle, train_rows):
    """The :class:`~fastgd.backends.contract.EpochBlock` row orders of ``count`` epochs
    over ``n`` training rows.

    Shuffled (``shuffle`` "rows" or "blocks"): one permutation per epoch, drawn from
    ``rng`` (:func:`epoch_order`); in order: none (the kernels then read rows
    ``0..n-1``). With early stopping the kernels read the caller's array, so the orders
    hold its row indices (``train_rows``): the training rows taken in the order of the
    same permutations (the epochs of a fit on the gathered training rows), or in
    increasing order, one row of orders for every epoch.

    Parameters
    ----------
    rng : numpy.random.Generator
    count, n : int
    shuffle : {"rows", "blocks"} or None
    train_rows : ndarray of int64 or None

    Returns
    -------
    ndarray of int64, shape (count, n), (1, n) or (0, 0)
    """
    if not shuffle:
        no_orders = np.empty((0, 0), dtype=np.int64)
        return no_orders if train_rows is None else train_rows.reshape(1, -1)
    orders = np.empty((count, n), dtype=np.int64)
    for epoch in range(count):
        permutation = epoch_order(rng, n, shuffle)
        if train_rows is None:
            orders[epoch] = permutation
        else:  # no temporary: the indices go straight into the block's row
            np.take(train_rows, permutation, out=orders[epoch])
    return orders


# Shuffled epochs of at least this many rows have their next block of orders drawn in a
# background thread when a core is spare (BlockOrders): below it, a permutation costs
# little more than starting the thread.
DRAW_AHEAD_MIN_ROWS = 1 << 16


def spare_core(n_threads):
    """True when this process may run on more CPUs than the kernel's ``n_threads``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n_threads < (cpus or 1)


class BlockOrders:
    """The row orders of a fit's kernel calls, block after block (:func:`block_orders`).

    After :meth:`draw_ahead`, the next block is drawn in a background thread while the
    kernel trains on the current one. A permutation of 1,000,000 rows takes about 10 ms,
    a fifth of a shuffled epoch of 1,000,000 x 100 on one thread; NumPy's shuffle
    releases the GIL, and so do the compiled kernels, so on a spare core the two
    overlap. Blocks are drawn from ``rng`` in the order they are taken, so the orders,
    and the fit, are the same with or without drawing ahead.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    shuffle : {"rows", "blocks"} or None
    train_rows : ndarray of int64 or None
    """

    def __init__(self, rng, n, shuffle, train_rows):
        self._draw = lambda count: block_orders(rng, count, n, shuffle, train_rows)
        self._thread = self._drawn = self._error = None

    def take(self, count):
        """The orders of the next ``count`` epochs: those drawn ahead first (waiting for
        them), any more drawn now. In order (no shuffle), the same array every time."""
        self._join()
        drawn, self._drawn = self._drawn, None
        if drawn is None or drawn.shape[0] == 0:
            return self._draw(count)
        if drawn.shape[0] > count:  # the rest stays first in line
            drawn, self._drawn = drawn[:count], drawn[count:]
        elif drawn.shape[0] < count:
            drawn = np.concatenate([drawn, self._draw(count - drawn.shape[0])])
        return drawn

    def draw_ahead(self, count):
        """Start drawing the orders of the ``count`` epochs after those taken so far."""
        self._join()
        if self._drawn is not None:  # already drawn: the new ones go after them
            self._drawn = np.concatenate([self._drawn, self._draw(count)])
            return
        self._thread = threading.Thread(target=self._background, args=(count,), daemon=True)
        self._thread.start()

    def _background(self, count):
        try:
            self._drawn = self._draw(count)
        except BaseException as exc:  # re-raised by the next take in the fit's thread
            self._error = exc

    def _join(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self):
        """Wait for a block still being drawn (the fit stopped before taking it)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drawn = self._error = None
