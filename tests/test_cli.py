"""``fastgd train`` and ``fastgd predict``, end to end through subprocesses."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastgd

ROOT = str(Path(fastgd.__file__).resolve().parent.parent)


def _run(cwd, *args):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "fastgd", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture()
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    rows = X.tolist()  # Python floats: repr() round-trips them exactly
    labels = np.where(X[:, 0] + X[:, 1] > 0, "cat", "dog")
    with open(tmp_path / "train.csv", "w") as file:
        file.write("a,b,c,animal\n")
        file.writelines(f"{r[0]!r},{r[1]!r},{r[2]!r},{lab}\n" for r, lab in zip(rows, labels, strict=True))  # fmt: skip
    with open(tmp_path / "new.csv", "w") as file:  # other column order, no target
        file.write("c,a,b\n")
        file.writelines(f"{r[2]!r},{r[0]!r},{r[1]!r}\n" for r in rows[:10])
    (tmp_path / "gaps.csv").write_text("a,b\n1,2\n3,\n")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    np.save(tmp_path / "reg.npy", np.column_stack([X, 2 * X[:, 0] - X[:, 2]]))
    np.savez(tmp_path / "cls.npz", X=X, y=(X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    return tmp_path, X, labels


def _read_csv(path_or_text, from_text=False):
    lines = path_or_text.splitlines() if from_text else Path(path_or_text).read_text().splitlines()
    rows = list(csv.reader(lines))
    return rows[0], rows[1:]


def test_train_csv_then_predict_matches_the_saved_model(data_dir):
    tmp, X, labels = data_dir
    done = _run(tmp, "train", "train.csv", "--target", "animal", "--model", "logistic",
                "--epochs", "15", "--lr", "0.1", "--backend", "numpy", "--seed", "0",
                "--out", "model.npz")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip()
    assert summary.startswith("trained logistic on 120 rows x 3 features (numpy): loss ")
    assert "after 15 epochs, stop reason max_epochs" in summary and "saved to model.npz" in summary
    assert "15/15" in done.stderr  # the progress bar
    model = fastgd.load(tmp / "model.npz")
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert (model.predict(X) == labels).mean() > 0.9

    done = _run(tmp, "predict", "model.npz", "new.csv")  # columns picked by name
    assert done.returncode == 0, done.stderr
    header, rows = _read_csv(done.stdout, from_text=True)
    assert header == ["prediction"]
    assert [r[0] for r in rows] == list(model.predict(X[:10]))

    done = _run(tmp, "predict", "model.npz", "train.csv", "--proba", "--out", "p.csv")
    assert done.returncode == 0 and done.stdout == ""
    header, rows = _read_csv(tmp / "p.csv")
    assert header == ["proba_cat", "proba_dog"]
    np.testing.assert_array_equal(np.array(rows, dtype=float), model.predict_proba(X))  # exact


def test_train_npy_mlp_regression_and_npz_softmax(data_dir):
    tmp, X, _ = data_dir
    done = _run(tmp, "train", "reg.npy", "--target", "-1", "--model", "mlp", "--task",
                "regression", "--hidden", "8,4", "--optimizer", "adam", "--lr", "0.01",
                "--batch-size", "full", "--epochs", "5", "--backend", "numpy",
                "--no-progress", "--out", "net.npz")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar
    net = fastgd.load(tmp / "net.npz")
    assert net.model.sizes == (3, 8, 4, 1) and net.n_updates == 5
    assert type(net.optimizer) is fastgd.optim.Adam and net.optimizer.lr == 0.01
    np.save(tmp / "features.npy", X)
    done = _run(tmp, "predict", "net.npz", "features.npy")
    _, rows = _read_csv(done.stdout, from_text=True)
    np.testing.assert_array_equal(np.array(rows, dtype=float)[:, 0], net.predict(X))

    done = _run(tmp, "train", "cls.npz", "--target", "y", "--model", "softmax", "--epochs",
                "3", "--batch-size", "16", "--backend", "numpy", "--shuffle", "blocks",
                "--seed", "0", "--out", "soft.npz")  # fmt: skip
    assert done.returncode == 0, done.stderr
    soft = fastgd.load(tmp / "soft.npz")
    assert soft.model.name == "softmax" and list(soft.classes_) == [0, 1, 2]
    assert soft.n_updates == 3 * 8
    y = np.load(tmp / "cls.npz")["y"]
    blocks = fastgd.fit(X, y, "softmax", epochs=3, batch_size=16, backend="numpy", seed=0, shuffle="blocks")  # fmt: skip
    np.testing.assert_array_equal(soft.params, blocks.params)


BAD_INPUT = [
    (["train", "missing.csv", "--target", "animal", "--model", "linear", "--out", "m.npz"],
     "No such file or directory"),
    (["train", "train.csv", "--target", "weight", "--model", "linear", "--out", "m.npz"],
     "train.csv has no column 'weight' (columns: a, b, c, animal)"),
    (["train", "train.csv", "--target", "a", "--model", "linear", "--out", "m.npz"],
     "column 'animal' of train.csv is not numeric: the value 'dog' on line 2"),
    (["train", "gaps.csv", "--target", "a", "--model", "linear", "--out", "m.npz"],
     "column 'b' of gaps.csv is not numeric: an empty value on line 3"),
    (["train", "ragged.csv", "--target", "a", "--model", "linear", "--out", "m.npz"],
     "line 3 of ragged.csv has 1 fields, the header has 2"),
    (["train", "train.csv", "--target", "animal", "--model", "linear", "--backend", "numpy",
      "--no-progress", "--out", "m.npz"], "y must be numeric for a regression model"),
    (["train", "reg.npy", "--target", "7", "--model", "linear", "--out", "m.npz"],
     "--target must be a column index of reg.npy"),
    (["train", "cls.npz", "--target", "labels", "--model", "softmax", "--out", "m.npz"],
     "cls.npz has no array 'labels' (arrays: X, y)"),
    (["train", "train.csv", "--target", "animal", "--model", "logistic", "--hidden", "8,x",
      "--out", "m.npz"], "--hidden must be positive integers like 64,64"),
    (["train", "train.csv", "--target", "animal", "--model", "logistic"],
     "the following arguments are required: --out"),
    (["train", "train.csv", "--target", "animal", "--model", "logistic", "--epochs", "0",
      "--out", "m.npz"], "epochs must be a positive integer"),
    (["predict", "model.npz", "reg.npy"], "X has 4 features, but the model was fit with 3"),
    (["predict", "model.npz", "missing.csv"], "No such file or directory: 'missing.csv'"),
    (["predict", "train.csv", "new.csv"], "not a readable fastgd model file"),
]  # fmt: skip


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_bad_input_exits_2_with_one_line(data_dir, args, message):
    tmp, _, _ = data_dir
    fastgd.save(fastgd.fit(np.zeros((4, 3)), np.arange(4.0), backend="numpy", epochs=1), tmp / "model.npz")  # fmt: skip
    done = _run(tmp, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"fastgd {args[0]}: error: ") and message in lines[0]


def test_proba_of_a_regression_model_is_refused(data_dir):
    tmp, X, _ = data_dir
    np.save(tmp / "X3.npy", X)
    fastgd.save(fastgd.fit(X, X[:, 0], backend="numpy", epochs=1), tmp / "reg_model.npz")
    done = _run(tmp, "predict", "reg_model.npz", "X3.npy", "--proba")
    assert done.returncode == 2
    assert done.stderr.strip() == "fastgd predict: error: --proba needs a classifier; this model is a regression model"  # fmt: skip


def test_whole_number_targets_are_integer_labels(tmp_path):
    rows = "".join(f"{i / 10!r},{i % 3}\n" for i in range(30))
    (tmp_path / "d.csv").write_text("x,label\n" + rows)
    done = _run(tmp_path, "train", "d.csv", "--target", "label", "--model", "softmax",
                "--epochs", "2", "--backend", "numpy", "--no-progress", "--out", "m.npz")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert fastgd.load(tmp_path / "m.npz").classes_.tolist() == [0, 1, 2]
    done = _run(tmp_path, "predict", "m.npz", "d.csv", "--proba")
    assert done.stdout.splitlines()[0] == "proba_0,proba_1,proba_2"
