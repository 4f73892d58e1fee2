"""The statistical effect of ``shuffle="blocks"``: final loss and accuracy against
``shuffle=True`` (rows) and ``shuffle=False``, on data stored in random order and on the
same data stored sorted by label.

Usage::

    python benchmarks/shuffle_effect.py            # the table quoted in README
    python benchmarks/shuffle_effect.py --quick    # one data set, two seeds

Softmax regression, plain SGD, a few epochs, on scikit-learn's digits (1,797 x 64, 10
classes) and a synthetic 5-class problem (``make_classification``, 50,000 x 20); a
quarter of the rows is held out (a stratified split, the same for every run), the
training rows are then stored either in random order or sorted by label. Each cell is the
mean (and spread: standard deviation) over seeds of the final training loss (the mean
cross-entropy of the final parameters over the training rows) and the held-out accuracy,
and ``var``: the mean squared distance of a batch's gradient from the full gradient (at
the start, over one epoch's batches), relative to row shuffling's.
"""

import argparse
import statistics
import sys

import numpy as np

import fastgd
from fastgd import _config
from fastgd.bench.competitors import row_orders

MODES = {"rows": True, "blocks": "blocks", "none": False}


def datasets(quick):
    """(name, X, y, epochs, lr) of each data set, features standardized."""
    from sklearn.datasets import load_digits, make_classification

    X, y = load_digits(return_X_y=True)
    found = [("digits", X, y, 10, 0.2)]
    if not quick:
        X, y = make_classification(n_samples=50_000, n_features=20, n_informative=10,
                                   n_classes=5, n_clusters_per_class=1, class_sep=1.5,
                                   random_state=0)  # fmt: skip
        found.append(("synthetic", X, y, 3, 0.2))
    return [(name, (X - X.mean(0)) / (X.std(0) + 1e-8), y, e, lr) for name, X, y, e, lr in found]


def split(X, y, seed=0):
    """A stratified split: three quarters for training (in random order), the rest held out."""
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)


def stored(X, y, how):
    """The training rows stored in random order (as split returns them) or sorted by label."""
    if how == "random":
        return X, y
    order = np.argsort(y, kind="stable")
    return X[order], y[order]


def cell(X, y, X_test, y_test, shuffle, batch_size, epochs, lr, seeds):
    """Mean and standard deviation over seeds of (final training loss, held-out accuracy)."""
    losses, accuracies = [], []
    for seed in seeds:
        result = fastgd.fit(X, y, "softmax", batch_size=batch_size, epochs=epochs, lr=lr,
                            shuffle=shuffle, seed=seed, backend="numba")  # fmt: skip
        proba = result.predict_proba(X)  # labels are 0..k-1: column y of each row
        losses.append(-np.mean(np.log(np.maximum(proba[np.arange(len(y)), y], 1e-300))))
        accuracies.append(np.mean(result.predict(X_test) == y_test))
    spread = (lambda v: statistics.stdev(v)) if len(seeds) > 1 else (lambda v: 0.0)
    return (statistics.mean(losses), spread(losses)), (statistics.mean(accuracies), spread(accuracies))  # fmt: skip


def gradient_spread(X, y, shuffle, batch_size, seeds):
    """Mean over batches of one epoch (and over seeds) of ``|g_batch - g|^2``, the squared
    distance of a mini-batch's gradient from the full gradient, at the start (all
    parameters 0: every class has probability 1/k), for the batches ``fit`` draws."""
    k = int(y.max()) + 1
    residual = np.full((len(y), k), 1.0 / k)
    residual[np.arange(len(y)), y] -= 1.0  # dloss/dz of each row at z = 0
    rows = np.hstack([X, np.ones((len(y), 1))])  # the intercept's input
    per_row = (rows[:, :, None] * residual[:, None, :]).reshape(len(y), -1)
    full = per_row.mean(axis=0)
    starts = np.arange(0, len(y), batch_size)
    sizes = np.diff(np.append(starts, len(y)))[:, None]
    spreads = []
    for seed in seeds:
        (order,) = row_orders(len(y), 1, batch_size, shuffle, seed)
        ordered = per_row if order is None else per_row[order]
        batches = np.add.reduceat(ordered, starts, axis=0) / sizes
        spreads.append(np.mean(np.sum((batches - full) ** 2, axis=1)))
    return statistics.mean(spreads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, two seeds")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--block-rows", type=int, default=None, help="rows per block")
    args = parser.parse_args(argv)
    if args.block_rows:  # read by fastgd.training.orders at every epoch
        _config.SHUFFLE_BLOCK_ROWS = args.block_rows
    seeds = range(2 if args.quick else args.seeds)
    print(f"softmax, plain SGD, blocks of {_config.SHUFFLE_BLOCK_ROWS} rows; mean (sd) over "
          f"{len(seeds)} seeds of the final training loss and the held-out accuracy")  # fmt: skip
    print(f"{'data':<10} {'stored':<7} {'batch':>5} " + "".join(f"{m + ' loss':>17}{m + ' acc':>16}{m + ' var':>11}" for m in MODES))  # fmt: skip
    for name, X, y, epochs, lr in datasets(args.quick):
        X_train, X_test, y_train, y_test = split(X, y)
        for how in ("random", "sorted"):
            Xs, ys = stored(X_train, y_train, how)
            for text in args.batch_sizes.split(","):
                line = f"{name:<10} {how:<7} {text:>5} "
                base = gradient_spread(Xs, ys, True, int(text), seeds)
                for shuffle in MODES.values():
                    (loss, sd), (acc, acc_sd) = cell(Xs, ys, X_test, y_test, shuffle, int(text), epochs, lr, seeds)  # fmt: skip
                    spread = gradient_spread(Xs, ys, shuffle, int(text), seeds) / base
                    line += f"{loss:>9.4f} ({sd:.4f}){acc:>9.3f} ({acc_sd:.3f}){spread:>10.2f}x"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
