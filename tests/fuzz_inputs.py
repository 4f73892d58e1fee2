"""Hypothesis strategies and the property checked by ``tests/test_fuzz.py``.

The property of every public entry point (issue 17): a call returns a finite result or
raises ``ValueError``/``TypeError`` whose message names the argument; never another
exception, a crash or a hang; and the caller's arrays are never changed.

Profiles: ``fastgd-fuzz`` (the normal suite: few examples, derandomized, so CI is
reproducible) and, when ``FASTGD_FUZZ_EXAMPLES=N`` is set, ``fastgd-fuzz-long`` (N random
examples per test; ``--hypothesis-show-statistics`` prints how many ran).
"""

import copy
import os
import re

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

LONG_EXAMPLES = int(os.environ.get("FASTGD_FUZZ_EXAMPLES", "0") or 0)
_COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
settings.register_profile("fastgd-fuzz", derandomize=True, **_COMMON)
settings.register_profile(
    "fastgd-fuzz-long", derandomize=False, max_examples=max(LONG_EXAMPLES, 1), **_COMMON
)


def fuzz_settings(bounded):
    """Settings of one fuzz test: ``bounded`` examples in the suite, or the long profile."""
    if LONG_EXAMPLES:
        return settings(settings.get_profile("fastgd-fuzz-long"))
    return settings(settings.get_profile("fastgd-fuzz"), max_examples=bounded)


# values that break naive code: NaN, infinities, overflow in squares and sums, subnormals,
# the float16 and float32 limits
SPECIALS = [np.nan, np.inf, -np.inf, 1e300, -1e300, 5e-324, 1e-310, -0.0, 65504.0, 3.4e38]
DTYPES = [
    "float64", "float64", "float32", "float32", ">f8", ">f4", "float16", "longdouble",
    "bool", "int8", "int64", "uint64", ">i4", "complex128", "object", "str", "bytes",
    "datetime64[s]",
]  # fmt: skip
# the last two are Python lists: nested, and ragged (one row shorter than the others)
LAYOUTS = ["C", "C", "F", "reversed", "strided", "readonly", "unaligned", "list", "ragged"]


@st.composite
def float_matrix(draw, shape, special=True):
    """float64 values of ``shape``: moderate numbers, perhaps a constant column and a few
    special values (drawn apart, so most examples are clean)."""
    values = draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10, width=32)))
    if values.ndim == 2 and values.shape[1] and draw(st.booleans()):
        values[:, draw(st.integers(0, values.shape[1] - 1))] = draw(st.floats(-10, 10))
    n_special = draw(st.sampled_from([0, 0, 0, 1, 2])) if special and values.size else 0
    for _ in range(n_special):
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(SPECIALS))
    return values


def cast(values, dtype):
    """``values`` (float64) as ``dtype``, as a user's array of that type would hold them."""
    return np.asarray(_cast(values, dtype))  # 0-D: an array, not a NumPy scalar


def _cast(values, dtype):
    with np.errstate(all="ignore"):
        if dtype == "object":
            return values.astype(object)
        if dtype == "str":
            return values.astype(str)
        if dtype == "bytes":
            return values.astype("S12")
        if dtype.startswith("datetime"):
            return np.nan_to_num(values).astype(np.int64).astype(dtype)
        kind = np.dtype(dtype).kind
        if kind == "b":
            return values != 0
        if kind in "iu":
            info = np.iinfo(np.dtype(dtype))
            finite = np.nan_to_num(values, nan=0.0, posinf=info.max, neginf=info.min)
            return np.clip(finite, info.min, info.max).astype(dtype)
        return values.astype(dtype)


def lay_out(arr, layout):
    """The same values in another memory layout (or as nested lists)."""
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "reversed" and arr.ndim:
        return arr[::-1]  # negative strides (the rows in reverse order)
    if layout == "strided" and arr.ndim:
        wide = np.zeros((2 * arr.shape[0],) + arr.shape[1:], dtype=arr.dtype)
        wide[::2] = arr
        return wide[::2]
    if layout == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
        return arr
    if layout == "unaligned" and arr.dtype.kind in "fiuc" and arr.dtype.itemsize > 1:
        buffer = np.zeros(arr.nbytes + 1, dtype=np.uint8)
        view = buffer[1:].view(arr.dtype).reshape(arr.shape)
        view[...] = arr
        return view
    if layout == "list":
        return arr.tolist()
    if layout == "ragged" and arr.ndim and arr.shape[0] > 1:
        rows = arr.tolist()
        rows[-1] = [rows[-1]] if arr.ndim == 1 else rows[-1][:-1]
        return rows
    return arr


@st.composite
def user_array(draw, shape, dtypes=DTYPES, layouts=LAYOUTS, special=True):
    """An array of ``shape`` as a user might pass it: any dtype, values and layout."""
    values = draw(float_matrix(shape, special))
    return lay_out(cast(values, draw(st.sampled_from(dtypes))), draw(st.sampled_from(layouts)))


@st.composite
def feature_shape(draw, odd=True):
    """(n, d) mostly; 0 rows, 0 columns, 1-D, 0-D and 3-D shapes when ``odd``."""
    n = draw(st.sampled_from([1, 2, 3, 5, 8, 13]) | (st.just(0) if odd else st.nothing()))
    d = draw(st.sampled_from([1, 2, 3, 4]) | (st.just(0) if odd else st.nothing()))
    if odd:
        return draw(st.sampled_from([(n, d)] * 6 + [(n,), (), (n, d, 2)]))
    return (n, d)


LABEL_SETS = [
    [0, 1], [0, 1, 2], [1], ["cat", "dog"], ["a", "b", "c", "d"], [True, False], [-1.5, 2.5],
    [0.0, np.nan], [1, "a"], [None, 1], [3, 3.5],
]  # fmt: skip


@st.composite
def targets(draw, n, regression):
    """y for ``n`` rows: regression values (perhaps 2 targets), or labels from a small set
    (one class, mixed types, None, NaN); sometimes the wrong length or shape."""
    rows = draw(st.sampled_from([n] * 8 + [max(n - 1, 0), n + 1]))
    if regression:
        shape = draw(st.sampled_from([(rows,)] * 3 + [(rows, 2), (rows, 1), (rows, 0)]))
        return draw(user_array(shape, dtypes=DTYPES[:12], layouts=LAYOUTS[:6]))
    labels = draw(st.sampled_from(LABEL_SETS))
    y = np.array([labels[draw(st.integers(0, len(labels) - 1))] for _ in range(rows)], dtype=object)  # fmt: skip
    kind = draw(st.sampled_from(["native", "native", "object", "list", "column"]))
    if kind == "native":
        try:
            y = np.array(y.tolist())
        except ValueError:
            pass
    return y.tolist() if kind == "list" else y.reshape(-1, 1) if kind == "column" else y


def sample_weights(n):
    """None mostly; else weights with zeros, negatives, NaN, huge or tiny values."""
    values = st.sampled_from([1.0, 1.0, 2.5, 0.0, -1.0, np.nan, np.inf, 1e300, 5e-324, 1e-30])
    sizes = st.sampled_from([n, n, n, max(n - 1, 0), n + 1])
    arrays = sizes.flatmap(lambda m: st.lists(values, min_size=m, max_size=m))
    return st.one_of(st.none(), st.none(), arrays.map(np.array), st.just(np.zeros(n)))


# --- the property --------------------------------------------------------------------


def snapshot(*objects):
    """Deep copies of the arguments (arrays, sparse matrices, lists), to compare later."""
    return [_frozen(obj) for obj in objects]


def _frozen(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            return (
                "object",
                obj.shape,
                [repr(v) for v in obj.ravel(order="K")],
                obj.flags.writeable,
            )
        return ("array", obj.dtype.str, obj.shape, obj.strides, obj.tobytes(order="A"), obj.flags.writeable)  # fmt: skip
    if hasattr(obj, "tocsr") and hasattr(obj, "format"):  # scipy.sparse
        parts = [getattr(obj, name, None) for name in ("data", "indices", "indptr", "row", "col")]
        return ("sparse", obj.format, obj.shape, [_frozen(p) for p in parts if p is not None])
    if hasattr(obj, "to_numpy") and hasattr(obj, "index"):  # pandas data frame or series
        labels = [repr(list(obj.columns)) if hasattr(obj, "columns") else repr(obj.name)]
        dtypes = obj.dtypes.tolist() if hasattr(obj, "columns") else [obj.dtype]
        return ("pandas", type(obj).__name__, repr(dtypes), labels, repr(obj.index),
                _frozen(obj.to_numpy(dtype=object)), obj.flags.allows_duplicate_labels)  # fmt: skip
    return ("other", repr(copy.deepcopy(obj)))


def assert_unchanged(before, *objects):
    """The arguments hold exactly what :func:`snapshot` saw (values, layout, flags)."""
    for i, (old, obj) in enumerate(zip(before, objects, strict=True)):
        assert _frozen(obj) == old, f"argument {i} was modified by the call"


def names_argument(message, names):
    """True if ``message`` names one of the arguments ``names`` (as a whole word)."""
    return any(re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) for name in names)


def moderate(*arrays, bound=1e3):
    """True if every value of the numeric ``arrays`` is finite and at most ``bound``."""
    for arr in arrays:
        try:
            values = np.asarray(arr, dtype=np.float64)
        except (ValueError, TypeError):
            return False
        if not (np.all(np.isfinite(values)) and np.all(np.abs(values) <= bound)):
            return False
    return True


# --- pandas input --------------------------------------------------------------------

# column types of a data frame: NumPy's, pandas' nullable ones (with pd.NA), categorical,
# object, string and datetime columns
PANDAS_KINDS = [
    "float64", "float64", "float32", "int64", "uint8", "bool", "Int64", "Float64", "boolean",
    "category", "object", "string", "datetime",
]  # fmt: skip
NUMERIC_KINDS = PANDAS_KINDS[:9]  # what fit takes (missing values aside)
# column names: strings, integers, a name used twice, mixed types
COLUMN_NAMES = {
    "str": ["a", "b", "c", "d"], "int": [0, 1, 2, 3], "duplicate": ["a", "a", "b", "b"],
    "mixed": ["a", 1, 2.5, None],
}  # fmt: skip
INDEXES = ["range", "range", "shifted", "reversed", "strings", "duplicated", "datetime"]


def pandas_column(values, kind, missing):
    """A column (pandas array or NumPy array) of ``kind`` from float64 ``values``;
    ``missing`` marks the entries that nullable kinds hold as missing (pd.NA, NaT, None)."""
    import pandas as pd

    finite = np.nan_to_num(values, nan=0.0, posinf=1e300, neginf=-1e300)
    if kind in ("Int64", "boolean"):
        base = np.clip(finite, -1e9, 1e9).astype(np.int64) if kind == "Int64" else finite != 0
        return pd.array([pd.NA if m else v for v, m in zip(base.tolist(), missing, strict=True)], dtype=kind)  # fmt: skip
    if kind == "Float64":
        return pd.array([pd.NA if m else v for v, m in zip(values.tolist(), missing, strict=True)], dtype=kind)  # fmt: skip
    if kind == "category":
        return pd.Categorical(np.where(finite > 0, "pos", "neg"))
    if kind == "object":
        return np.array([None if m else v for v, m in zip(values.tolist(), missing, strict=True)], dtype=object)  # fmt: skip
    if kind == "string":
        return pd.array([pd.NA if m else str(v) for v, m in zip(values.tolist(), missing, strict=True)], dtype="string")  # fmt: skip
    if kind == "datetime":
        stamps = pd.to_datetime(np.clip(finite, 0, 1e9).astype(np.int64), unit="s")
        return stamps.where(~np.asarray(missing, dtype=bool))
    return cast(values, kind)


def pandas_index(kind, n):
    import pandas as pd

    if kind == "shifted":
        return pd.RangeIndex(10, 10 + n)
    if kind == "reversed":
        return pd.Index(np.arange(n)[::-1])
    if kind == "strings":
        return pd.Index([f"r{i}" for i in range(n)])
    if kind == "duplicated":
        return pd.Index(np.zeros(n, dtype=np.int64))
    if kind == "datetime":
        return pd.date_range("2020-01-01", periods=n, freq="D")
    return pd.RangeIndex(n)


@st.composite
def pandas_frame(draw, n, kinds=PANDAS_KINDS, max_columns=4):
    """A ``pandas.DataFrame`` of ``n`` rows: 0 to ``max_columns`` columns of the kinds
    above (two times in three numeric ones only, which fit takes), odd column names, an
    index that is not always 0..n-1."""
    import pandas as pd

    d = draw(st.sampled_from([0] + [1, 2, 3, 4][:max_columns] * 3))
    names = COLUMN_NAMES[draw(st.sampled_from(sorted(COLUMN_NAMES)))][:d]
    kinds = kinds if draw(st.integers(0, 2)) == 0 else [k for k in kinds if k in NUMERIC_KINDS]
    columns = []
    for _ in range(d):
        kind = draw(st.sampled_from(kinds))
        values = draw(float_matrix((n,), special=draw(st.booleans())))
        missing = [False] * n
        if draw(st.integers(0, 3)) == 0:
            missing = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        columns.append(pandas_column(values, kind, missing))
    index = pandas_index(draw(st.sampled_from(INDEXES)), n)
    frame = pd.DataFrame(dict(enumerate(columns)), index=index) if d else pd.DataFrame(index=index)
    frame.columns = names
    return frame


@st.composite
def pandas_features(draw, n):
    """X as a user might pass pandas data: a frame (perhaps without columns or rows), a
    whole empty frame, or a series (one feature)."""
    import pandas as pd

    kind = draw(st.sampled_from(["frame"] * 6 + ["series", "series", "empty"]))
    if kind == "empty":
        return pd.DataFrame()
    frame = draw(pandas_frame(n))
    if kind == "series" and frame.shape[1]:
        return frame.iloc[:, 0]
    return frame


@st.composite
def pandas_targets(draw, n, regression):
    """y as a series (NumPy or nullable dtype, labels, categorical, strings) or a frame of
    one or two columns; sometimes of another length or index than X."""
    import pandas as pd

    rows = draw(st.sampled_from([n] * 6 + [max(n - 1, 0), n + 1]))
    values = draw(float_matrix((rows,), special=draw(st.booleans())))
    if not regression:
        values = np.floor(np.abs(np.nan_to_num(values)) % 3)
    kinds = ["float64", "int64", "Int64", "Float64", "category", "string", "object", "boolean"]
    missing = [False] * rows
    if draw(st.integers(0, 3)) == 0:
        missing = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    index = pandas_index(draw(st.sampled_from(INDEXES)), rows)
    if draw(st.integers(0, 4)) == 0:
        second = pandas_column(values[::-1].copy(), draw(st.sampled_from(kinds[:4])), missing)
        first = pandas_column(values, draw(st.sampled_from(kinds[:4])), missing)
        width = draw(st.sampled_from([1, 2]))
        return pd.DataFrame(dict(list({"t": first, "u": second}.items())[:width]), index=index)
    column = pandas_column(values, draw(st.sampled_from(kinds)), missing)
    return pd.Series(column, index=index, name=draw(st.sampled_from(["y", 0, None])))
