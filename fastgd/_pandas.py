"""pandas input: a ``DataFrame`` of numeric columns becomes an array, its column names kept.

pandas is an optional dependency. Nothing here imports it: an object is a data frame or a
series only if pandas is already imported (the user made one), so the check is free
otherwise.
"""

import sys

import numpy as np


def _is_frame(obj):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)


def _is_series(obj):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.Series)


def frame_dtype(frame, name="X"):
    """The dtype a numeric data frame converts to; a ValueError names the other columns.

    float32 and float64 columns keep their type (all float32 stays float32, any float64
    makes float64); bool and integer columns join them as NumPy's type promotion says,
    and become float64 in :func:`fastgd.fit` if the result is not a float type. pandas'
    nullable numeric types convert to float64 (their missing values to NaN).

    Parameters
    ----------
    frame : pandas.DataFrame
    name : str
        Name used in error messages.

    Returns
    -------
    numpy.dtype
    """
    pd = sys.modules["pandas"]
    # by position: column names may repeat (frame[name] is then a frame, not a column)
    refused = [
        (str(column), str(dtype))
        for column, dtype in frame.dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_complex_dtype(dtype)
    ]  # fmt: skip
    if refused:
        bad, kinds = [column for column, _ in refused], sorted({kind for _, kind in refused})
        raise ValueError(
            f"{name} has non-numeric or categorical columns {bad} (dtype {', '.join(kinds)}); "
            "encode them as numbers (e.g. one-hot) or drop them"
        )
    dtypes = [d if isinstance(d, np.dtype) else np.dtype(np.float64) for d in frame.dtypes]
    return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)


def feature_names(frame):
    """Column names as an object array of str if all of them are strings, else None."""
    columns = list(frame.columns)
    if columns and all(isinstance(c, str) for c in columns):
        return np.asarray(columns, dtype=object)
    return None


# rows converted at a time by frame_to_array: about 64 K entries per block
_BLOCK_ENTRIES = 1 << 16


def frame_to_array(frame, dtype):
    """A numeric data frame as a C-contiguous array of ``dtype`` (float32 or float64),
    converted a block of rows at a time.

    pandas stores a frame by columns, so ``frame.to_numpy()`` is column-major (a copy
    already when the columns have several dtypes), and the row-major array the kernels
    read would be a second n x d copy. Filling the row-major array block by block makes
    it the only one. Missing values of nullable columns become NaN (rejected, with
    their count, by the validation that follows).
    """
    n, d = frame.shape
    out = np.empty((n, d), dtype=dtype)
    step = max(1, _BLOCK_ENTRIES // max(1, d))
    for start in range(0, n, step):
        block = frame.iloc[start : start + step]
        out[start : start + step] = block.to_numpy(dtype=dtype, na_value=np.nan)
    return out


def _float_dtype(dtype):
    """float32 stays float32; other numeric types train in float64."""
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def frames_to_arrays(X, y):
    """``(X, y, feature_names)`` with data frames and series turned into NumPy arrays.

    Anything that is not a pandas object is returned unchanged (and ``feature_names`` is
    None), so :func:`fastgd.fit` validates it as before.

    Parameters
    ----------
    X : pandas.DataFrame, pandas.Series or array-like
        A series is one feature.
    y : pandas.Series, pandas.DataFrame or array-like
        Targets; a data frame holds several regression targets (numeric columns).

    Returns
    -------
    X : ndarray or the input
    y : ndarray or the input
    feature_names : ndarray of str or None
        The column names of a data frame ``X`` whose column names are all strings.
    """
    names = None
    if _is_series(X):
        X = X.to_frame()  # one feature
    if _is_frame(X):
        names = feature_names(X)
        X = frame_to_array(X, _float_dtype(frame_dtype(X, "X")))
    if _is_frame(y):
        y = y.to_numpy(dtype=frame_dtype(y, "y"))
    elif _is_series(y):
        y = y.to_numpy()
    return X, y, names
