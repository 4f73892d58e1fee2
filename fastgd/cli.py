"""``fastgd train`` and ``fastgd predict``: train on a file, save the model, predict with it.

Data files are CSV with a header row, ``.npy`` (a 2-D array; ``--target`` is a column
index) or ``.npz`` (features in the array ``X``; ``--target`` names the target array).
Bad input ends with exit status 2 and a one-line message on stderr.
"""

import argparse
import csv
import os
import sys
import zipfile
import zlib

import numpy as np

MODELS = ("linear", "logistic", "softmax", "mlp")
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
BACKENDS = ("auto", "numba", "cython", "numpy")
# --shuffle: the value of fit's shuffle for each choice
SHUFFLE = {"rows": True, "blocks": "blocks", "none": False}


class UsageError(ValueError):
    """Bad input from the command line: reported in one line, exit status 2."""


def _hidden(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden must be positive integers like 64,64; got {text!r}")  # fmt: skip
    return sizes


def _batch_size(text):
    if text == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-size must be an integer or 'full'; got {text!r}") from None  # fmt: skip


def _one_line_errors(parser):
    """Make argparse report usage errors in one line (exit status 2)."""

    def error(message):
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    parser.error = error


def add_commands(commands):
    """Add the ``train`` and ``predict`` subcommands to the ``fastgd`` parser.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        What ``parser.add_subparsers`` returned.
    """
    train = commands.add_parser(
        "train", help="train a model on a CSV/.npy/.npz file and save it",
        description="Train a model with fastgd.fit on a data file and save it with fastgd.save.",
    )  # fmt: skip
    train.add_argument("data", help="CSV with a header row, .npy or .npz")
    train.add_argument("--target", required=True, help="target column (CSV), column index (.npy) or array name (.npz)")  # fmt: skip
    train.add_argument("--model", required=True, choices=MODELS)
    train.add_argument("--hidden", type=_hidden, default=(100,), help="mlp: hidden layer widths, e.g. 64,64 (default 100)")  # fmt: skip
    train.add_argument("--task", choices=("classification", "regression"), default="classification", help="mlp: the task (default classification)")  # fmt: skip
    train.add_argument("--epochs", type=int, default=100, help="passes over the data (default 100)")  # fmt: skip
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")  # fmt: skip
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    train.add_argument("--batch-size", type=_batch_size, default=32, help="samples per update, or 'full' (default 32)")  # fmt: skip
    train.add_argument("--backend", choices=BACKENDS, default="auto")
    train.add_argument("--shuffle", choices=tuple(SHUFFLE), default="rows", help="row order of each epoch: rows (a permutation, the default), blocks (of consecutive rows, faster on large data) or none")  # fmt: skip
    train.add_argument("--seed", type=int, default=None, help="seed of the shuffling and initial weights")  # fmt: skip
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, help="where to save the model (fastgd.save)")
    predict = commands.add_parser(
        "predict", help="predict with a saved model, writing CSV",
        description="Predict with a model saved by fastgd train or fastgd.save; writes CSV.",
    )  # fmt: skip
    predict.add_argument("model", help="a file written by fastgd train / fastgd.save")
    predict.add_argument("data", help="CSV with a header row, .npy or .npz (array X)")
    predict.add_argument("--out", default=None, help="CSV file to write (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="class probabilities, one column per class")  # fmt: skip
    for parser in (train, predict):
        _one_line_errors(parser)


def run(args):
    """Run ``fastgd train`` or ``fastgd predict``; returns the exit status.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        0, or 2 after printing a one-line message for bad input.
    """
    try:
        return _train(args) if args.command == "train" else _predict(args)
    except BrokenPipeError:  # the reader of stdout stopped (``| head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"fastgd {args.command}: error: {message}", file=sys.stderr)
        return 2


def _read_csv(path):
    """Header and columns (lists of strings) of a CSV file."""
    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
    except (UnicodeDecodeError, csv.Error) as exc:  # a binary file, a field over csv's limit
        raise UsageError(f"{path} is not a readable CSV file: {exc}") from None
    if not rows or not rows[0]:
        raise UsageError(f"{path} is empty; a header row naming the columns is needed")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise UsageError(f"line {number} of {path} has {len(row)} fields, the header has {len(header)}")  # fmt: skip
    if not body:
        raise UsageError(f"{path} has a header but no rows")
    return header, [list(column) for column in zip(*body, strict=True)]


def _numeric(values, name, path):
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        row, bad = next((i, v) for i, v in enumerate(values, start=2) if not _is_float(v))
        what = "an empty value" if not bad.strip() else f"the value {bad!r}"
        raise UsageError(
            f"column {name!r} of {path} is not numeric: {what} on line {row}"
        ) from None


def _is_int64(text):
    try:
        return -(2**63) <= int(text) < 2**63
    except ValueError:
        return False


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _features_csv(path, header, columns, names):
    if not names:
        raise UsageError(f"{path} has no feature columns (columns: {', '.join(header)})")
    missing = [name for name in names if name not in header]
    if missing:
        raise UsageError(f"{path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})")  # fmt: skip
    return np.column_stack([_numeric(columns[header.index(n)], n, path) for n in names])


def read_training_data(path, target):
    """Features, targets and feature names (or None) from a data file.

    Parameters
    ----------
    path : str
        CSV with a header row, ``.npy`` or ``.npz``.
    target : str
        The target column (CSV), column index (``.npy``) or array name (``.npz``).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    names : list of str or None
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        data = _load_npy(path)
        try:
            column = range(data.shape[1])[int(target)]
        except (ValueError, IndexError):
            raise UsageError(f"--target must be a column index of {path} (0 to {data.shape[1] - 1}) for .npy data; got {target!r}") from None  # fmt: skip
        return np.delete(data, column, axis=1), data[:, column], None
    if suffix == ".npz":
        return _npz_array(path, "X"), _npz_array(path, target), None
    header, columns = _read_csv(path)
    if target not in header:
        raise UsageError(f"{path} has no column {target!r} (columns: {', '.join(header)})")
    names = [name for name in header if name != target]
    y = columns[header.index(target)]
    return _features_csv(path, header, columns, names), _target_values(y, target, path), names


def _target_values(values, name, path):
    """Whole numbers as int64 (class labels print as 0, 1, ...), numbers as float, else str."""
    if all(_is_int64(v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    if all(_is_float(v) for v in values):
        return _numeric(values, name, path)
    return np.array(values)


def read_features(path, names):
    """The feature matrix of a data file for prediction (CSV columns picked by ``names``)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        return _load_npy(path)
    if suffix == ".npz":
        return _npz_array(path, "X")
    header, columns = _read_csv(path)
    return _features_csv(path, header, columns, names if names is not None else header)


def _np_load(path):
    """What ``np.load`` reads from ``path`` (no pickle); a file it cannot read is bad input."""
    try:
        return np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is not a readable NumPy file: {exc}") from None


def _load_npy(path):
    data = _np_load(path)
    if not isinstance(data, np.ndarray):
        data.close()
        raise UsageError(f"{path} is an .npz archive; a .npy file of one array was expected")
    if data.ndim != 2 or data.dtype.kind not in "biuf":
        raise UsageError(f"{path} must hold a 2-D numeric array; got shape {data.shape}, dtype {data.dtype}")  # fmt: skip
    return data


def _npz_array(path, name):
    archive = _np_load(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(f"{path} holds a single array; an .npz archive was expected")
    with archive:
        if name not in archive.files:
            raise UsageError(f"{path} has no array {name!r} (arrays: {', '.join(archive.files)})")
        try:
            return archive[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise UsageError(f"array {name!r} of {path} cannot be read: {exc}") from None


def _train(args):
    import fastgd

    X, y, names = read_training_data(args.data, args.target)
    model = fastgd.MLP(hidden=args.hidden, task=args.task) if args.model == "mlp" else args.model
    progress = not args.no_progress and _has_tqdm()
    result = fastgd.fit(X, y, model=model, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                        batch_size=args.batch_size, backend=args.backend, seed=args.seed,
                        shuffle=SHUFFLE[args.shuffle], progress=progress)  # fmt: skip
    if names is not None:
        result.feature_names_in_ = np.array(names, dtype=object)
    fastgd.save(result, args.out)
    print(
        f"trained {args.model} on {X.shape[0]} rows x {X.shape[1]} features ({result.backend}): "
        f"loss {result.loss_history[-1]:.6g} after {result.n_epochs} epochs, "
        f"stop reason {result.stop_reason}, {result.train_time:.3g} s; saved to {args.out}"
    )
    return 0


def _has_tqdm():
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _predict(args):
    import fastgd

    model = fastgd.load(args.model)
    result = getattr(model, "result_", model)
    names = result.feature_names_in_
    X = read_features(args.data, None if names is None else list(names))
    if args.proba:
        if result.classes_ is None:
            raise UsageError("--proba needs a classifier; this model is a regression model")
        values, header = result.predict_proba(X), [f"proba_{c}" for c in result.classes_]
    else:
        values = result.predict(X)
        header = ["prediction"] if values.ndim == 1 else [f"prediction_{i}" for i in range(values.shape[1])]  # fmt: skip
    _write_csv(args.out, header, values.reshape(len(values), -1))
    return 0


def _text(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


def _write_csv(out, header, rows):
    file = sys.stdout if out is None else open(out, "w", newline="")
    try:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_text(v) for v in row] for row in rows)
    finally:
        if out is not None:
            file.close()
