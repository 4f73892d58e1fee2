"""Regression tests of the input-side bugs found by fuzzing (``tests/test_fuzz.py``) and by
reading the input paths for issue 17; each failed before its fix."""

import io
import os
import zipfile

import numpy as np
import pytest

import fastgd
from fastgd.__main__ import main
from fastgd._validation import check_features, check_lengths, check_targets

rng = np.random.default_rng(0)
X = rng.standard_normal((24, 3))
y = X @ np.array([1.0, -2.0, 0.5])
labels = (X[:, 0] > 0).astype(int)


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["X", "y", "sample_weight"])
def test_ragged_nested_lists_name_the_argument(argument):
    """NumPy's own error ("inhomogeneous shape") did not say which argument."""
    ragged = [[1.0, 2.0]] * 23 + [[1.0]]
    kwargs = dict(X=X, y=y, sample_weight=None)
    kwargs[argument] = ragged if argument == "X" else [[1.0]] * 23 + [[1.0, 2.0]]
    with pytest.raises(ValueError, match=rf"^{argument} could not be read as an array"):
        fastgd.fit(kwargs["X"], kwargs["y"], sample_weight=kwargs["sample_weight"], backend="numpy")  # fmt: skip


def test_negative_seed_is_refused_by_name():
    """NumPy's generators refuse negative seeds with a message that named no argument."""
    with pytest.raises(ValueError, match="seed must be None or a non-negative integer; got -1"):
        fastgd.fit(X, y, seed=-1, backend="numpy", epochs=1)
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="random_state must be None, a non-negative integer"):
        fastgd.LinearRegressor(random_state=-1, backend="numpy", epochs=1).fit(X, y)


@pytest.mark.parametrize("scale", [1e300, 1e-300, 5e-324])
def test_sample_weights_beyond_float32_range_train_as_their_ratios(scale):
    """Weights were cast to float32 before being rescaled to mean 1: 1e300 became inf (a
    NaN loss, "diverged"), 1e-300 became 0 ("sample_weight is zero")."""
    X32 = X.astype(np.float32)
    weights = np.where(np.arange(24) % 3 == 0, 2.0, 1.0)
    options = dict(backend="numpy", epochs=3, batch_size=None, lr=0.1)
    reference = fastgd.fit(X32, y, sample_weight=weights, **options)
    scaled = fastgd.fit(X32, y, sample_weight=weights * scale, **options)
    assert scaled.stop_reason == "max_epochs"
    np.testing.assert_allclose(scaled.params, reference.params, rtol=1e-5, atol=1e-6)


def test_weight_rescaling_keeps_every_bit():
    """The power-of-two prescaling of the weights is exact: float64 fits are unchanged."""
    weights = rng.uniform(0.1, 3.0, 24)
    a = fastgd.fit(X, y, sample_weight=weights, backend="numpy", epochs=2, seed=0)
    b = fastgd.fit(X, y, sample_weight=weights * 2.0**40, backend="numpy", epochs=2, seed=0)
    np.testing.assert_array_equal(a.params, b.params)


def test_unaligned_arrays_are_copied_to_aligned_ones():
    """An array at an odd byte offset passed through validation unaligned to kernels that
    may assume aligned elements."""
    buffer = np.zeros(X.nbytes + 1, dtype=np.uint8)
    unaligned = buffer[1:].view(np.float64).reshape(X.shape)
    unaligned[...] = X
    assert not unaligned.flags.aligned
    checked = check_features(unaligned)
    assert checked.flags.aligned and checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, X)
    Y, _ = check_targets(buffer[1 : 1 + y.nbytes].view(np.float64), 24, "linear", np.float64)
    assert Y.flags.aligned
    lengths = np.zeros(3 * 8 + 1, dtype=np.uint8)[1:].view(np.int64)
    lengths[...] = 1
    assert check_lengths(lengths, 3, 2).flags.aligned
    assert check_features(X) is X  # aligned C-contiguous input: still no copy


def test_csr_over_strided_arrays_does_not_compile_again():
    """SciPy keeps a strided array given to the CSR constructor; Numba compiled every
    sparse kernel again for that layout."""
    sparse = pytest.importorskip("scipy.sparse")
    numba_kernels = pytest.importorskip("fastgd.backends.numba.linear")
    dense = np.where(np.abs(X) > 0.5, X, 0.0)
    plain = sparse.csr_matrix(dense)
    reference = fastgd.fit(plain, y, epochs=2, backend="numba", seed=0)
    count = numba_kernels.compiled_signatures()
    wide = np.zeros(2 * plain.nnz)
    wide[::2] = plain.data
    strided = sparse.csr_matrix((wide[::2], plain.indices, plain.indptr), shape=plain.shape)
    assert not strided.data.flags.c_contiguous
    result = fastgd.fit(strided, y, epochs=2, backend="numba", seed=0)
    assert numba_kernels.compiled_signatures() == count
    np.testing.assert_array_equal(result.params, reference.params)


def test_mixed_dtype_frame_converts_to_one_row_major_array():
    pd = pytest.importorskip("pandas")
    from fastgd._pandas import frame_to_array

    frame = pd.DataFrame({"a": X[:, 0].astype(np.float32), "b": X[:, 1], "c": labels})
    converted = frame_to_array(frame, np.float64)
    assert converted.flags.c_contiguous and converted.dtype == np.float64
    np.testing.assert_array_equal(converted, frame.to_numpy(dtype=np.float64))


# --- save / load ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    result = fastgd.fit(X, y, backend="numpy", epochs=2, seed=0)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    fastgd.save(result, path)
    return result, path


def test_save_to_an_integer_path_is_refused_and_leaves_the_descriptor_open(saved, tmp_path):
    """``open(3, "wb")`` takes 3 as a file descriptor: save wrote into it and closed it."""
    result, _ = saved
    with open(tmp_path / "other", "wb") as file:
        fd = file.fileno()
        with pytest.raises(TypeError, match="path must be a file name"):
            fastgd.save(result, fd)
        os.fstat(fd)  # still open
        assert os.path.getsize(tmp_path / "other") == 0
    with pytest.raises(TypeError, match="path must be a file name"):
        fastgd.load(3)


def test_corrupted_compressed_member_is_a_value_error(saved, tmp_path):
    """A damaged deflated member raised zlib.error (or an unsupported compression method
    NotImplementedError), not the documented ValueError."""
    _, path = saved
    packed = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:  # fmt: skip
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    raw = bytearray(packed.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        info = archive.getinfo("result.params.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start : start + 8] = b"\xff" * 8  # not a valid deflate stream
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged.npz is not a readable fastgd model file"):
        fastgd.load(damaged)


# --- command line --------------------------------------------------------------------


def _cli(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


def _npz(path):
    np.savez(path, X=X, t=labels)
    return path


def _npy(path):
    np.save(path, np.column_stack([X, labels]))
    return path


@pytest.mark.parametrize(
    "name,make,target,message",
    [
        ("data.npy", lambda p: _npz(open(p, "wb")), "3", "is an .npz archive"),
        ("data.npz", lambda p: _npy(open(p, "wb")), "t", "holds a single array"),
        ("data.npy", lambda p: open(p, "wb").close(), "3", "is not a readable NumPy file"),
        ("data.npz", lambda p: open(p, "wb").write(b"PK\x03\x04" + b"\x00" * 40), "t", "is not a readable NumPy file"),  # fmt: skip
        ("data.csv", lambda p: open(p, "w").write("a,t\n" + "x" * 200_000 + ",1\n"), "t", "is not a readable CSV file"),  # fmt: skip
        ("data.csv", lambda p: open(p, "wb").write(b"a,t\n\xff\xfe,1\n"), "t", "is not a readable CSV file"),  # fmt: skip
        ("data.csv", lambda p: open(p, "w").write("t\n1\n2\n"), "t", "has no feature columns"),
    ],
)  # fmt: skip
def test_command_line_reads_files_of_the_wrong_kind_with_a_message(tmp_path, capsys, name, make, target, message):  # fmt: skip
    """These ended in a traceback (AttributeError, EOFError, BadZipFile, csv.Error) or a
    message naming neither file nor column."""
    path = tmp_path / name
    make(path)
    status, err = _cli(["train", str(path), "--target", target, "--model", "logistic",
                        "--backend", "numpy", "--no-progress", "--out", str(tmp_path / "m.npz")], capsys)  # fmt: skip
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_command_line_signed_whole_number_targets(tmp_path, capsys):
    """A label "+-1" looked like a whole number to the label check, then int() failed."""
    path = tmp_path / "data.csv"
    path.write_text("a,t\n1,+-1\n2,3\n")
    status, err = _cli(["train", str(path), "--target", "t", "--model", "logistic", "--backend",
                        "numpy", "--no-progress", "--out", str(tmp_path / "m.npz")], capsys)  # fmt: skip
    assert status == 0, err
    assert fastgd.load(tmp_path / "m.npz").classes_.tolist() == ["+-1", "3"]


def test_command_line_whole_numbers_beyond_int64_are_numbers(tmp_path, capsys):
    """A target of whole numbers past int64 raised OverflowError (a traceback)."""
    path = tmp_path / "data.csv"
    path.write_text("a,t\n1,99999999999999999999\n2,3\n3,5\n")
    status, err = _cli(["train", str(path), "--target", "t", "--model", "linear", "--backend",
                        "numpy", "--no-progress", "--out", str(tmp_path / "m.npz")], capsys)  # fmt: skip
    assert status == 0, err


def test_model_file_with_a_valid_checksum_but_a_broken_network_is_refused(tmp_path):
    """Found by fuzzing: a file whose metadata lost an entry of the network's settings
    (``net_hyper``), with a checksum recomputed to match, loaded; its first predict raised
    an IndexError."""
    import json

    from fastgd import persistence

    net = fastgd.fit(X, labels, fastgd.MLP(hidden=(4,)), backend="numpy", epochs=1, seed=0)
    path = tmp_path / "net.npz"
    fastgd.save(net, path)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("metadata")))
    del meta["result"]["model"]["fields"]["net_hyper"][0]
    text = json.dumps(meta)
    arrays["checksum"] = np.array(persistence._checksum(text, {k: v for k, v in arrays.items() if k != "checksum"}))  # fmt: skip
    arrays["metadata"] = np.array(text)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="holds an invalid fastgd model: its model cannot predict"):
        fastgd.load(path)


# --- pandas input (found by tests/test_fuzz.py's pandas strategies) -------------------


def test_frame_with_a_repeated_column_name_is_refused_by_name():
    """A non-numeric column whose name another column shares: the message's lookup
    ``frame[name]`` gave a frame, and ``.dtype`` an AttributeError."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1].astype(str)})
    frame.columns = ["a", "a"]
    with pytest.raises(ValueError, match=r"^X has non-numeric or categorical columns \['a'\] \(dtype (object|str)"):  # fmt: skip
        fastgd.fit(frame, y, backend="numpy", epochs=1)
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="X has non-numeric or categorical columns"):
        fastgd.LinearRegressor(backend="numpy", epochs=1).fit(frame, y)


def test_predict_reads_a_frame_as_fit_reads_it():
    """``fit`` converts a frame of float, bool and nullable integer columns to one float
    array; ``predict`` passed the frame to NumPy, which made an object array from its
    mixed columns ("X must be numeric ... dtype object")."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "x": X[:, 0], "flag": X[:, 1] > 0, "count": pd.array(np.arange(24), dtype="Int64"),
    })  # fmt: skip
    result = fastgd.fit(frame, labels, "logistic", backend="numpy", epochs=2, seed=0)
    as_array = frame.to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(result.predict(frame), result.predict(as_array))
    np.testing.assert_array_equal(result.predict_proba(frame), result.predict_proba(as_array))
    single = fastgd.fit(frame["x"], y, backend="numpy", epochs=2, seed=0)  # a series: one feature
    np.testing.assert_array_equal(single.predict(frame["x"]), single.predict(X[:, :1]))
