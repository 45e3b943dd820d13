"""Pools of tasks from files and frames: ``.npz``, ``.csv``, ``.parquet``, DataFrames and
Arrow tables.

* ``.npz``: arrays ``X`` (N, d), ``y`` (N,) and ``task`` (N,) -- one task id per row
  (integers or strings; byte strings are read as UTF-8 text).  Other arrays in the
  file are not read, and each of the three has its declared shape checked against
  the data it holds before it is read (:mod:`fastmlr._npz`).
* ``.csv`` (UTF-8, with or without a byte-order mark): a header line, then one row per
  example: a task-id column (default ``task``), a target column (default ``y``) and
  feature columns (default: every other column, in file order).  Empty cells and
  ``NA``/``NaN`` are missing values.  Task ids are text: each distinct cell (leading
  and trailing spaces removed) is one task, so ``7``, ``07`` and ``+7`` are three tasks,
  and ids are written back exactly as read.
* ``.parquet`` (pyarrow): the same columns as a ``.csv``, read as a table is (below);
  task ids keep their type (integers stay integers).  ``.csv`` files are read by
  pyarrow's multi-threaded reader too when it is installed; a file that reader cannot
  read by the rules above goes to the exact reader, which names the row and column.
* a pandas or polars DataFrame, or a pyarrow Table (:func:`tasks_from_frame`): columns
  by name, task ids of any type kept as they are.  pandas, polars and pyarrow are
  optional: nothing here imports them; a frame is read through its own methods.

Missing targets are **query rows**: :func:`read_pool` refuses them unless
``allow_query=True`` (as ``fastmlr predict`` passes), and then returns them separately
so that the task's other rows are its training examples; :func:`tasks_from_frame`
always returns them separately.  Missing features or task ids are always an error.
Every error is one line that names the file (or the argument) and what is wrong.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import NamedTuple

import numpy as np

from ._atomic import atomic_open
from ._npz import ZIP_ERRORS, MemberError, read_members
from ._validation import quiet
from .tasks import missing_values

__all__ = ["Pool", "read_pool", "write_pool", "tasks_from_frame", "MISSING"]

#: Cell texts read as a missing value in a ``.csv`` file.
MISSING = frozenset({"", "na", "nan", "null", "none"})


class Pool(NamedTuple):
    """A pool of tasks read from a file or a frame, grouped by task.

    A task set: ``X``, ``y`` and ``offsets`` come first and every function that takes
    a task set takes a ``Pool`` (it is read through those three attributes); the
    query rows are left out of them.

    Attributes
    ----------
    X : (N, d) float64, or float32 when every feature and the target were float32 in
        a frame or a ``.parquet`` -- training rows, grouped by task (tasks in sorted-id
        order)
    y : (N,) same dtype as X
    offsets : (n + 1,) int64 -- task i is rows offsets[i]:offsets[i+1]
    tasks : (n,) -- the task ids, sorted.  Ids of a ``.npz`` and non-text ids of a
        frame (integers, floats, dates): in numpy's order (byte strings of a ``.npz``
        decoded as UTF-8).  Text ids (every ``.csv`` id, text ids of a frame): those
        that read as an integer first, by value (ties, such as ``7`` and ``07``, by
        text), then the others by text -- so integer ids come out in the same order
        whether they were stored as numbers or as text.
        A task whose rows are all query rows is listed, with no training rows.
    rows : (N,) int64 -- line of each training row in the file, or its position in
        the frame (0 = first data row)
    query_X : (q, d) same dtype as X -- rows whose target is missing
    query_task : (q,) int64 -- index into ``tasks`` of each query row
    query_rows : (q,) int64 -- line (position) of each query row
    features : list -- feature names: the columns of a ``.csv`` or a frame; ``x0``,
        ``x1``, ... (by position) for a ``.npz``
    named : bool -- True if ``features`` are column names (a ``.csv`` or a frame)
    """

    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    tasks: np.ndarray
    rows: np.ndarray
    query_X: np.ndarray
    query_task: np.ndarray
    query_rows: np.ndarray
    features: list
    named: bool = False


def _fmt(path, msg):
    return f"{path}: {msg}"


def _read_npz(path):
    try:
        z = read_members(path, ("X", "y", "task"))
    except MemberError as exc:
        what = "too large to read" if exc.over_limit else "a damaged .npz pool"
        raise ValueError(_fmt(path, f"{what}: {exc}")) from None
    except ZIP_ERRORS as exc:
        msg = str(exc).replace("\n", " ")
        raise ValueError(_fmt(path, f"not a readable .npz file ({msg})")) from None
    missing = [key for key in ("X", "y", "task") if key not in z]
    if missing:
        raise ValueError(_fmt(path, f"missing array(s) {', '.join(missing)}; a pool .npz needs X (N, d), y (N,) and task (N,)"))
    X, y, task = z["X"], z["y"], z["task"]
    if X.ndim != 2 or X.shape[1] < 1:
        raise ValueError(_fmt(path, f"X has shape {X.shape}; expected (N, d) with d >= 1"))
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(_fmt(path, f"y has shape {y.shape}; expected ({X.shape[0]},), one target per row of X"))
    if task.ndim != 1 or task.shape[0] != X.shape[0]:
        raise ValueError(_fmt(path, f"task has shape {task.shape}; expected ({X.shape[0]},), one task id per row of X"))
    for name, arr in (("X", X), ("y", y)):
        if arr.dtype.kind not in "fiub":
            raise ValueError(_fmt(path, f"{name} has dtype {arr.dtype}; expected numbers"))
    if task.dtype.kind == "f":
        if not np.all(np.isfinite(task)) or np.any(task != np.round(task)):
            raise ValueError(_fmt(path, "task holds non-integer or missing ids; expected integer or string ids"))
        if np.any(np.abs(task) >= 2.0**63):
            raise ValueError(_fmt(path, "task holds an id beyond the 64-bit integer range; expected integer or "
                                        "string ids"))
        task = task.astype(np.int64)
    elif task.dtype.kind == "S":
        task = _decode_ids(task, path)
    elif task.dtype.kind not in "iuU":
        raise ValueError(_fmt(path, f"task has dtype {task.dtype}; expected integer or string ids"))
    X = X.astype(np.float64)
    y = y.astype(np.float64)
    if not np.all(np.isfinite(X)):
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(_fmt(path, f"X has a missing or non-finite value at row {r}, column {c}"))
    return X, y, task, [f"x{j}" for j in range(X.shape[1])]


def _decode_ids(task, path):
    """Byte-string task ids as text (UTF-8), so that every later step (sorting, writing
    a .csv) sees the same ids; an id that is not UTF-8 is refused naming the file."""
    try:
        return np.char.decode(task, "utf-8")
    except UnicodeDecodeError:
        for i, raw in enumerate(task.tolist()):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(_fmt(path, f"task id {raw!r} on row {i} is not UTF-8 text ({exc.reason}); "
                                            f"expected integer ids, text, or byte strings in UTF-8")) from None
        raise


def _parse_column(cells, name, path, allow_missing):
    """Column of cell strings -> float64 array (NaN for missing cells if allowed)."""
    low = np.char.lower(np.char.strip(np.asarray(cells, dtype=str)))
    miss = np.isin(low, list(MISSING))
    if miss.any() and not allow_missing:
        i = int(np.argmax(miss))
        raise ValueError(_fmt(path, f"column '{name}' has a missing value on data line {i + 1}"))
    vals = np.full(low.size, np.nan)
    ok = ~miss
    try:
        vals[ok] = low[ok].astype(np.float64)
    except ValueError:
        for i in np.flatnonzero(ok):
            try:
                float(low[i])
            except ValueError:
                raise ValueError(_fmt(path, f"column '{name}' has a non-numeric value {cells[i]!r} on data line {i + 1}")) from None
    if not np.all(np.isfinite(vals[ok])):
        i = int(np.flatnonzero(ok)[np.argmax(~np.isfinite(vals[ok]))])
        raise ValueError(_fmt(path, f"column '{name}' has a non-finite value {cells[i]!r} on data line {i + 1}"))
    return vals


def _read_csv(path, task_col, target_col, features):
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValueError(_fmt(path, "the file is empty; expected a header line")) from None
            body = list(reader)
    except UnicodeDecodeError:
        raise ValueError(_fmt(path, "not a text .csv file")) from None
    except csv.Error as exc:
        raise ValueError(_fmt(path, f"not a readable .csv file ({exc})")) from None
    body = [row for row in body if any(cell.strip() for cell in row)]
    if len(set(header)) != len(header):
        raise ValueError(_fmt(path, "the header names a column twice"))
    for col, what in ((task_col, "task-id"), (target_col, "target")):
        if col not in header:
            raise ValueError(_fmt(path, f"no {what} column '{col}' (columns: {', '.join(header)})"))
    if features is None:
        features = [h for h in header if h not in (task_col, target_col)]
    else:
        absent = [f for f in features if f not in header]
        if absent:
            raise ValueError(_fmt(path, f"no feature column(s) {', '.join(absent)} (columns: {', '.join(header)})"))
    if not features:
        raise ValueError(_fmt(path, "no feature columns; expected at least one besides the task and target columns"))
    if not body:
        raise ValueError(_fmt(path, "no data rows after the header"))
    width = len(header)
    for i, row in enumerate(body):
        if len(row) != width:
            raise ValueError(_fmt(path, f"data line {i + 1} has {len(row)} fields; the header has {width}"))
    cols = list(zip(*body))
    index = {h: j for j, h in enumerate(header)}
    task_cells = np.char.strip(np.asarray(cols[index[task_col]], dtype=str))
    miss = np.isin(np.char.lower(task_cells), list(MISSING))
    if miss.any():
        raise ValueError(_fmt(path, f"column '{task_col}' has a missing task id on data line {int(np.argmax(miss)) + 1}"))
    y = _parse_column(cols[index[target_col]], target_col, path, allow_missing=True)
    X = np.column_stack([_parse_column(cols[index[f]], f, path, allow_missing=False) for f in features])
    return X, y, task_cells, list(features)


def _text_order(ids):
    """Distinct text task ids in pool order (see :class:`Pool`) and each id's index.

    Parameters
    ----------
    ids : (N,) str array -- one id per row

    Returns
    -------
    tasks : (n,) str array, inverse : (N,) int64 -- ``tasks[inverse] == ids``
    """
    uniq, inverse = np.unique(ids, return_inverse=True)  # by text
    return _rank_text(uniq, inverse.reshape(-1))


def _rank_text(uniq, codes):
    """Distinct text ids ``uniq`` (m,) put in pool order, and ``codes`` (N,) (an index
    into ``uniq`` per row) turned into indices into the result."""
    perm = _text_perm(np.asarray(uniq, dtype=str))
    rank = np.empty(perm.size, dtype=np.int64)
    rank[perm] = np.arange(perm.size)
    return np.asarray(uniq, dtype=str)[perm], rank[codes]


def _text_perm(uniq):
    """The permutation putting distinct text ids in pool order: ids that read as an
    integer (an optional sign, then ASCII digits) first, by value, ties by text; then
    the others by text.  Vectorized; a Python sort only when some id has more digits
    than an int64 holds."""
    m = uniq.size
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    first = uniq.astype("U1")
    signed = (first == "+") | (first == "-")
    body = np.where(signed, np.char.lstrip(uniq, "+-"), uniq)
    lens = np.char.str_len(uniq)
    blen = np.char.str_len(body)
    width = max(1, body.dtype.itemsize // 4)
    code = np.ascontiguousarray(body).view(np.uint32).reshape(m, width)
    digits = (((code >= 48) & (code <= 57)) | (code == 0)).all(axis=1) & (blen > 0) & (lens - blen == signed)
    if (digits & (blen > 18)).any():  # beyond int64: Python integers
        def key(i):
            text = str(uniq[i])
            return (0, int(text), text) if digits[i] else (1, 0, text)

        return np.array(sorted(range(m), key=key), dtype=np.int64)
    value = np.zeros(m, dtype=np.int64)
    if digits.any():
        value[digits] = body[digits].astype(np.int64)
        value[digits & (first == "-")] *= -1
    return np.lexsort((uniq, value, ~digits)).astype(np.int64)


# ---- .csv through pyarrow's reader ---------------------------------------------------

#: Cell texts pyarrow reads as a null directly (the case variants of ``MISSING`` met in
#: practice); any other spelling sends the file to the exact reader (:func:`_read_csv`).
_ARROW_NULLS = ["", "NA", "na", "Na", "NaN", "nan", "NAN", "null", "NULL", "Null", "none", "None", "NONE"]


def _csv_header(path):
    """The header line of a ``.csv`` as the ``csv`` module reads it (raw names), or
    ``None`` when it cannot be read (the exact reader then says why)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), None)
    except (UnicodeDecodeError, csv.Error):
        return None


def _read_csv_arrow(path, task_col, target_col, features):
    """A ``.csv`` read by pyarrow's multi-threaded reader, or ``None`` when the file
    needs the exact reader (:func:`_read_csv`) -- for an error message naming the row
    and the column, or for cells pyarrow does not read the way the format says
    (a spelling of a missing value it does not know, a blank row, a row of
    the wrong width, text that is not UTF-8).  The file is read once when it is clean.

    Returns
    -------
    X (N, d) float64, y (N,) float64, (uniq, codes) -- the distinct ids (m,) str,
    stripped, and the index into them of each row's id (N,) int64, features (list)
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    raw = _csv_header(path)
    if not raw:
        return None
    header = [h.strip() for h in raw]
    if len(set(header)) != len(header) or task_col not in header or target_col not in header:
        return None
    if features is None:
        features = [h for h in header if h not in (task_col, target_col)]
    elif any(f not in header for f in features):
        return None
    if not features:
        return None
    rawname = dict(zip(header, raw))
    wanted = [task_col, target_col, *features]
    types = {rawname[task_col]: pa.string()}
    types.update({rawname[c]: pa.float64() for c in wanted[1:]})
    try:
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types=types, include_columns=[rawname[c] for c in wanted],
                                                null_values=_ARROW_NULLS, strings_can_be_null=False,
                                                quoted_strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError):
        return None
    if table.num_rows == 0 or table.column_names != [rawname[c] for c in wanted]:
        return None
    ids = pc.utf8_trim_whitespace(table.column(0))
    if pc.any(pc.is_in(pc.utf8_lower(ids), value_set=pa.array(sorted(MISSING)))).as_py():
        return None  # a missing id, or a blank row: the exact reader skips or names it
    y = table.column(1).to_numpy()
    if not np.isfinite(y[~np.isnan(y)]).all():
        return None
    sub = table.select(list(range(2, 2 + len(features))))
    if any(sub.column(j).null_count for j in range(sub.num_columns)):
        return None
    X = _arrow_owned((table.num_rows, len(features)), np.float64)
    if not _fill_rows(X, [[c.to_numpy() for c in batch.columns] for batch in sub.to_batches()]):
        return None
    uniq = pc.unique(ids)
    codes = pc.index_in(ids, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return X, y, (np.asarray(uniq.to_numpy(zero_copy_only=False), dtype=str), codes), list(features)


def _row_sums(X):
    """Sum of each block of X, read once: NaN or inf anywhere makes it non-finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        return X @ np.ones(X.shape[1], dtype=X.dtype) if X.size else np.zeros(0)


def _group(X, y, ids, text, features, named, query_ok, where):
    """The :class:`Pool` of rows ``X``, ``y`` tagged with ``ids``.

    ``ids``: one id per row, or a form from :func:`_arrow_ids`.  ``text``: the ids
    are text (ordered as :class:`Pool` says), else numpy's order.  Rows with a NaN
    target are query rows (an error unless ``query_ok``); ``where`` prefixes every
    message.  No loop over rows: the ids are ranked once (a sort of the distinct ids)
    and the rows gathered by a stable argsort of their ranks; ids in sorted runs keep
    the rows in place.
    """
    query = np.isnan(y)
    if (~np.isfinite(y) & ~query).any():
        raise ValueError(f"{where}y has an infinite value")
    if query.any() and not query_ok:
        i = int(np.argmax(query))
        raise ValueError(f"{where}the target is missing on data row {i + 1} ({int(query.sum())} rows in all); "
                         f"fitting needs a target on every row")
    if isinstance(ids, tuple) and isinstance(ids[0], str) and ids[0] == "runs":  # sorted ids: (runs, distinct, starts)
        tasks, starts = ids[1], ids[2]
        if not query.any():  # rows stay in place, tasks are the runs
            none = np.zeros(0, dtype=np.int64)
            return Pool(np.ascontiguousarray(X), np.ascontiguousarray(y), starts, tasks, _row_numbers(X.shape[0]),
                        X[:0].copy(), none, none, list(features), named)
        inverse = np.repeat(np.arange(tasks.size, dtype=np.int64), np.diff(starts))
    elif isinstance(ids, tuple) and len(ids) == 3:  # ids already ranked (an Arrow column)
        tasks, inverse = ids[1], ids[2]
    elif isinstance(ids, tuple):  # (distinct text ids, code per row) from an Arrow column
        tasks, inverse = _rank_text(*ids)
    elif text:
        tasks, inverse = _text_order(ids)
    else:
        tasks, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(-1)
    if query.any():
        train = np.flatnonzero(~query)
        order = train[np.argsort(inverse[train], kind="stable")]
        q = np.flatnonzero(query)
    elif inverse.size and np.all(inverse[1:] >= inverse[:-1]):  # a file sorted by task: rows stay in place
        order = np.arange(inverse.size, dtype=np.int64)
        q = np.zeros(0, dtype=np.int64)
    else:
        order = np.argsort(inverse, kind="stable")
        q = np.zeros(0, dtype=np.int64)
    counts = np.bincount(inverse[order], minlength=tasks.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Pool(_take(X, order), _take(y, order), offsets, tasks, order.astype(np.int64),
                np.ascontiguousarray(X[q]), inverse[q].astype(np.int64), q.astype(np.int64), list(features), named)


def _row_numbers(n):
    """``arange(n)`` (int64) in pyarrow's allocator when it is loaded (see
    :func:`_arrow_owned`: a pool's arrays reuse pages instead of faulting in fresh
    ones), written a block at a time."""
    if "pyarrow" not in sys.modules:
        return np.arange(n, dtype=np.int64)
    out = _arrow_owned((n,), np.int64)
    step = 1 << 16
    for s in range(0, n, step):
        out[s:s + step] = np.arange(s, min(n, s + step), dtype=np.int64)
    return out


def _take(a, order):
    """``a[order]``, C-contiguous; no copy when ``order`` keeps every row in place."""
    if order.size == a.shape[0] and (order.size == 0 or (order[0] == 0 and order[-1] == order.size - 1
                                                         and np.all(order[1:] > order[:-1]))):
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a[order])


@quiet
def read_pool(path, *, task_col="task", target_col="y", features=None, allow_query=False) -> Pool:
    """Read a pool from a ``.npz``, ``.csv`` or ``.parquet`` file, grouped by task.

    Parameters
    ----------
    path : str or path-like
        A file ending in ``.npz``, ``.csv`` or ``.parquet`` (see the module doc).
    task_col, target_col : str
        Column names in a ``.csv`` or ``.parquet`` (defaults ``task`` and ``y``).
    features : list of str, optional
        Feature columns of a ``.csv`` or ``.parquet`` (default: every other column,
        in file order).
    allow_query : bool
        Rows with a missing target are returned as query rows instead of an error.

    Returns
    -------
    Pool
        A task set (X (N, d), y (N,), offsets (n + 1,)) with the task ids, the file
        line of every row and the query rows.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Any bad content: one line naming the file, the row and the column.

    See Also
    --------
    write_pool : the inverse.
    tasks_from_frame : the same pool from a DataFrame or an Arrow table.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_pool(os.path.join(tmp, "p.csv"), X, [1.0, 2.0, np.nan, 4.0], ["b", "a", "b", "a"])
    ...     pool = read_pool(os.path.join(tmp, "p.csv"), allow_query=True)
    >>> pool.tasks, pool.offsets, pool.query_rows
    (array(['a', 'b'], dtype='<U1'), array([0, 2, 3]), array([2]))
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        X, y, task, names = _read_npz(path)
    elif ext == ".csv":
        got = _read_csv_arrow(path, task_col, target_col, features)
        X, y, task, names = got if got is not None else _read_csv(path, task_col, target_col, features)
    elif ext == ".parquet":
        return _read_parquet(path, task_col, target_col, features, allow_query)
    else:
        raise ValueError(_fmt(path, "unknown file type; expected a .npz, .csv or .parquet pool"))
    if X.shape[0] == 0:
        raise ValueError(_fmt(path, "the pool has no rows"))
    return _group(X, y, task, ext == ".csv", names, ext == ".csv", allow_query,
                  f"{path}: ")


# ---- frames: pandas, polars, pyarrow -------------------------------------------------


def _frame_kind(df) -> str:
    """``"pandas"``, ``"polars"`` or ``"arrow"``: told from the object's class, so that
    no frame library is imported to recognise it."""
    cls = type(df)
    root = cls.__module__.split(".")[0]
    if root == "pandas" and cls.__name__ == "DataFrame":
        return "pandas"
    if root == "polars" and cls.__name__ == "DataFrame":
        return "polars"
    if root == "pyarrow" and cls.__name__ in ("Table", "RecordBatch"):
        return "arrow"
    if root == "polars" and cls.__name__ == "LazyFrame":
        raise TypeError("df is a polars LazyFrame; expected a DataFrame: call .collect() on it first")
    if root == "pandas" and cls.__name__ == "Series":
        raise TypeError("df is a pandas Series; expected a DataFrame with task, target and feature columns")
    raise TypeError(f"df is {cls.__module__}.{cls.__name__}; expected a pandas DataFrame, a polars DataFrame "
                    f"or a pyarrow Table")


def _frame_columns(df, kind) -> list:
    if kind == "pandas":
        cols = list(df.columns)
    else:
        cols = list(df.column_names) if kind == "arrow" else list(df.columns)
    seen = set()
    for c in cols:
        if c in seen:
            raise ValueError(f"df has two columns named {c!r}; expected distinct column names")
        seen.add(c)
    return cols


def _frame_column(df, kind, name):
    """Column ``name`` of a frame as a NumPy array (nulls as NaN in a numeric column,
    as None or NaN in any other)."""
    if kind == "pandas":
        s = df[name]
        dt = s.dtype
        if not isinstance(dt, np.dtype):  # an extension dtype: nullable numbers, Arrow-backed, categorical
            base = getattr(dt, "numpy_dtype", None)
            if base is not None and base.kind in "biuf":
                if base.kind in "biu" and not s.isna().any():
                    return s.to_numpy(dtype=base)
                return s.to_numpy(dtype=np.float32 if base == np.float32 else np.float64, na_value=np.nan)
            return np.asarray(s.to_numpy(dtype=object, na_value=None))
        return s.to_numpy()
    if kind == "polars":
        return df.get_column(name).to_numpy()
    col = df.column(name)
    typ = col.type
    if hasattr(typ, "value_type"):  # dictionary-encoded: its values
        col = col.cast(typ.value_type)
    return col.to_numpy(zero_copy_only=False)


def _frame_ids(arr, name, who="df"):
    """Task ids as an array of one kind; text ids as a NumPy ``str`` array.

    Returns
    -------
    ids : (N,) array, text : bool -- whether the ids are text
    """
    miss = missing_values(arr)
    if miss.any():
        i = int(np.argmax(miss))
        raise ValueError(f"{who}: column {name!r} has a missing task id at row {i} ({int(miss.sum())} rows in all); "
                         f"expected an id on every row")
    if arr.dtype.kind == "O":
        if arr.size and all(isinstance(v, str) for v in arr.tolist()):
            return arr.astype(str), True
        if arr.size and all(isinstance(v, bytes) for v in arr.tolist()):
            raise TypeError(f"{who}: column {name!r} holds byte strings; expected integer or text task ids "
                            f"(decode them first)")
    return arr, arr.dtype.kind == "U"


def _frame_numbers(arr, name, what, allow_missing, who="df", first=0, check=True):
    """A numeric column as float32 (if it is float32) or float64; a missing value is
    NaN (an error unless ``allow_missing``), an infinite one an error.  Messages
    number rows from ``first``.  ``check=False`` converts only (the caller checks the
    values another way, and calls :func:`_check_numbers` to name a bad one)."""
    kind = arr.dtype.kind
    if kind == "f":
        out = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
    elif kind in "biu":
        out = arr.astype(np.float64)
    elif kind == "O":
        try:
            out = np.array([np.nan if (v is None or type(v).__name__ == "NAType") else v for v in arr.tolist()],
                           dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError(f"{who}: {what} column {name!r} holds values that are not numbers; expected a numeric "
                            f"column") from None
    else:
        raise TypeError(f"{who}: {what} column {name!r} has dtype {arr.dtype}; expected a numeric column")
    if check:
        _check_numbers(out, name, what, allow_missing, who, first)
    return out


def _check_numbers(out, name, what, allow_missing, who="df", first=0) -> None:
    """Refuse an infinite value in a numeric column, and a missing one (NaN) unless
    ``allow_missing``: one line naming the column and the row."""
    bad = ~np.isfinite(out)
    if bad.any():
        nan = np.isnan(out)
        if (bad & ~nan).any():
            i = int(np.argmax(bad & ~nan))
            raise ValueError(f"{who}: {what} column {name!r} has a non-finite value {float(out[i])} at row {i + first}; "
                             f"expected finite numbers")
        if not allow_missing:
            i = int(np.argmax(nan))
            raise ValueError(f"{who}: {what} column {name!r} has a missing value at row {i + first} ({int(nan.sum())} rows "
                             f"in all); expected a number on every row")


@quiet
def tasks_from_frame(df, *, task="task", target="y", features=None) -> Pool:
    """The task set held by a DataFrame or an Arrow table: one row per example.

    Parameters
    ----------
    df : pandas.DataFrame, polars.DataFrame or pyarrow.Table
        One row per example, with a task-id column, a target column and feature
        columns, by name and in any order (other columns are ignored when
        ``features`` is given).  pandas, polars and pyarrow are optional
        dependencies of fastmlr; none is imported unless its object is passed.
    task : column name
        Task ids: integers, text, or any type NumPy sorts (dates, floats), kept as
        they are (text as a NumPy ``str`` array).  A missing id is an error.
    target : column name
        Targets; a missing value (null, NaN) marks a **query row**: it goes to
        ``query_X`` and the task's other rows are its training rows.
    features : list of column names, optional
        Feature columns, in this order (default: every column but ``task`` and
        ``target``, in frame order).  A missing or infinite value is an error.

    Returns
    -------
    Pool
        A task set -- ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,), the training
        rows grouped by task, tasks in sorted-id order (see :class:`Pool`: text ids
        as in a ``.csv``), rows in frame order within a task -- with the ids
        ``tasks`` (n,), the frame position ``rows`` (N,) of every row, and the query
        rows ``query_X`` (q, d), ``query_task`` (q,), ``query_rows`` (q,).  ``X`` and
        ``y`` are float32 when every feature column and the target are float32,
        otherwise float64.  An empty frame gives a pool of no tasks.  Every
        function that takes a task set takes the result.

    Raises
    ------
    TypeError
        ``df`` is not a frame, or a column is not numeric (task ids aside).
    ValueError
        An absent column, a missing task id or feature, an infinite value: one line
        naming the column and the row (its position in the frame, from 0).

    See Also
    --------
    read_pool : the same pool from a ``.npz`` or ``.csv`` file.
    fastmlr.group_tasks : from arrays tagged with task ids.

    Examples
    --------
    >>> import numpy as np, pandas as pd, fastmlr
    >>> df = pd.DataFrame({"task": ["b", "a", "b", "a"], "y": [1.0, 2.0, np.nan, 4.0],
    ...                    "x1": [0.5, 1.0, 1.5, 2.0], "x2": [1.0, 0.0, 1.0, 0.0]})
    >>> pool = fastmlr.tasks_from_frame(df)
    >>> pool.tasks, pool.offsets, pool.y        # task "a" first; row 2 is a query row
    (array(['a', 'b'], dtype='<U1'), array([0, 2, 3]), array([2., 4., 1.]))
    >>> pool.query_X, pool.query_task
    (array([[1.5, 1. ]]), array([1]))
    """
    kind = _frame_kind(df)
    return _frame_pool(df, kind, task, target, features, "df", True)


def _check_columns(columns, task, target, who) -> None:
    """Refuse a task or target column that ``columns`` lacks, or one column for both."""
    for col, what in ((task, "task"), (target, "target")):
        if col not in columns:
            raise ValueError(f"{who} has no {what} column {col!r} (columns: {', '.join(map(str, columns))}); "
                             f"pass {what}= the name of the column")
    if task == target:
        raise ValueError(f"task and target are both {task!r}; expected two different columns")


def _frame_pool(df, kind, task, target, features, who, query_ok, X=None):
    """:func:`tasks_from_frame` of a frame of ``kind``; ``who`` names it in messages
    (``df``, or a file), ``query_ok`` lets rows with a missing target be query rows;
    ``X``: the feature columns already read, checked, into rows."""
    columns = _frame_columns(df, kind)
    _check_columns(columns, task, target, who)
    if X is None:
        features = _feature_names(features, columns, task, target, who)
    if kind == "arrow":
        ids = _arrow_ids(df.column(task), task, who)
        text = False
    else:
        ids, text = _frame_ids(_frame_column(df, kind, task), task, who)
        ids = _sorted_runs(ids) or ids  # sorted by id (a partition of a sorted pool): runs
    y = _frame_numbers(_frame_column(df, kind, target), target, "target", True, who)
    if not query_ok and np.isnan(y).any():
        query = np.isnan(y)
        raise ValueError(f"{who}: target column {target!r} has a missing value at row {int(np.argmax(query))} "
                         f"({int(query.sum())} rows in all); fitting needs a target on every row")
    if X is None and kind == "arrow":
        X = _arrow_matrix(df, features)
    if X is None:
        cols = [_frame_numbers(_frame_column(df, kind, f), f, "feature", False, who, check=False) for f in features]
        dtype = np.float32 if all(c.dtype == np.float32 for c in cols) and y.dtype == np.float32 else np.float64
        X = np.empty((y.shape[0], len(cols)), dtype=dtype)
        if not _fill_rows(X, [cols]):  # the copy checks every value; a bad one is found and named here
            for f, c in zip(features, cols):
                _check_numbers(c, f, "feature", False, who)
    elif X.dtype != np.float32 or y.dtype != np.float32:
        X = X.astype(np.float64, copy=False)
    return _group(X, y.astype(X.dtype, copy=False), ids, text, features, True, query_ok, f"{who}: ")


def _feature_names(features, columns, task, target, who):
    """The feature columns: every other column by default, else ``features`` checked."""
    if features is None:
        features = [c for c in columns if c != task and c != target]
    else:
        if isinstance(features, (str, bytes)) or not hasattr(features, "__iter__"):
            raise TypeError(f"features is {type(features).__name__}; expected a list of column names")
        features = list(features)
        absent = [f for f in features if f not in columns]
        if absent:
            raise ValueError(f"{who} has no feature column(s) {', '.join(map(repr, absent))} "
                             f"(columns: {', '.join(map(str, columns))})")
        if len(set(features)) != len(features):
            raise ValueError("features names a column twice; expected distinct columns")
        clash = [f for f in features if f == task or f == target]
        if clash:
            raise ValueError(f"features includes the {'task' if clash[0] == task else 'target'} column {clash[0]!r}")
    if not features:
        raise ValueError(f"{who} has no feature columns; expected at least one besides the task and target columns")
    return features


def _arrow_ids(col, name, who):
    """Task ids of an Arrow column, in one of the forms :func:`_group` takes:
    ``("runs", distinct ids, run starts + [N])`` for numeric ids in sorted order (no
    code per row), ``("sorted", distinct ids in order, rank per row)`` for other
    numeric ids, ``(distinct text ids, code per row)`` for text (ranked as
    :class:`Pool` says)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    miss = pc.is_null(col, nan_is_null=True) if pa.types.is_floating(col.type) else pc.is_null(col)
    n_miss = pc.sum(miss).as_py() or 0
    if n_miss:
        i = pc.index(miss, True).as_py()
        raise ValueError(f"{who}: column {name!r} has a missing task id at row {i} ({n_miss} rows in all); "
                         f"expected an id on every row")
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        raise TypeError(f"{who}: column {name!r} holds byte strings; expected integer or text task ids")
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        runs = _sorted_runs(col.to_numpy())
        if runs is not None:
            return runs
    uniq = pc.unique(col)
    codes = pc.index_in(col, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    values = uniq.to_numpy(zero_copy_only=False)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        return np.asarray(values, dtype=str), codes
    perm = np.argsort(values, kind="stable")
    rank = np.empty(perm.size, dtype=np.int64)
    rank[perm] = np.arange(perm.size)
    return ("sorted", values[perm], rank[codes])


def _sorted_runs(values):
    """``("runs", distinct ids, run starts + [N])`` (a form :func:`_group` takes: no
    code per row, rows in place) for numeric ids (N,) in sorted order, else None."""
    if values.dtype.kind not in "biuf" or not values.size or not np.all(values[1:] >= values[:-1]):
        return None
    starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1, [values.size]])
    return ("runs", values[starts[:-1]], starts.astype(np.int64, copy=False))


def _arrow_matrix(table, features):
    """The feature columns of an Arrow table (or record batch) as one C-contiguous
    (N, d) array, or ``None`` when a column is not float64/float32 or holds a null or
    a non-finite value (the column-by-column path then converts them and names any bad
    value).  float32 when every column is float32."""
    import pyarrow as pa

    types = [table.schema.field(f).type for f in features]
    if any(t not in (pa.float64(), pa.float32()) for t in types):
        return None
    sub = table.select(features)
    if any(sub.column(j).null_count for j in range(sub.num_columns)):
        return None
    dtype = np.float32 if all(t == pa.float32() for t in types) else np.float64
    X = _arrow_owned((sub.num_rows, len(features)), dtype)
    batches = sub.to_batches() if hasattr(sub, "to_batches") else [sub]
    if not _fill_rows(X, [[c.to_numpy() for c in batch.columns] for batch in batches]):
        return None
    return X


def _arrow_owned(shape, dtype):
    """An uninitialised C-contiguous array in memory from pyarrow's allocator, which
    keeps freed pages for its next tables: a pool read after another one reuses the
    memory of the first instead of faulting in fresh pages (as a table read does)."""
    import pyarrow as pa

    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(pa.allocate_buffer(max(n, 1)), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def _fill_rows(X, parts):
    """Copy column arrays into the rows of ``X`` (N, d) with the backend's
    ``columns_into_rows`` kernel (blocks of rows on the kernel threads; about twice as
    fast as NumPy's strided column writes, and 5x Arrow's ``to_tensor``).  ``parts``:
    consecutive pieces of the rows, each a list of d column arrays of equal length
    (converted to X's dtype where they differ).  Returns whether every value is finite."""
    from .backend import kernels

    fill = kernels().columns_into_rows
    ok = True
    a = 0
    for cols in parts:
        n = cols[0].shape[0] if cols else 0
        held = [np.ascontiguousarray(c, dtype=X.dtype) for c in cols]  # alive through the call
        addresses = np.array([c.ctypes.data for c in held], dtype=np.int64)
        ok = fill(X[a:a + n], addresses) and ok
        a += n
    return ok


# ---- .parquet ------------------------------------------------------------------------

#: Rows per row group of a ``.parquet`` pool written by :func:`write_pool`: the unit
#: :func:`fastmlr.open_parquet` reads at a time (about 34 MB of float64 at d = 32).
ROW_GROUP_ROWS = 131072


def _pyarrow(path):
    """``pyarrow`` and ``pyarrow.parquet``, or a one-line error saying how to get them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(_fmt(path, "a .parquet file needs pyarrow (pip install 'fastmlr[parquet]')")) from None
    return pa, pq


def _parquet_file(path, memory_map=False):
    """The ``pyarrow.parquet.ParquetFile`` of ``path``, or a one-line error naming it.

    ``memory_map``: read the column chunks from a map of the file (no copy of the file
    into buffers first); the mapped pages count in the process's resident memory until
    the file is closed, so only a reader that keeps the whole pool anyway maps it."""
    pa, pq = _pyarrow(path)
    try:
        return pq.ParquetFile(path, memory_map=memory_map)
    except (pa.ArrowException, OSError) as exc:
        msg = str(exc).replace("\n", " ")
        raise ValueError(_fmt(path, f"not a readable .parquet file ({msg})")) from None


def _read_parquet(path, task_col, target_col, features, allow_query):
    """A ``.parquet`` pool: the columns named, read by pyarrow, as :func:`tasks_from_frame`
    reads a table (float32 kept when every column read is float32)."""
    pa, _ = _pyarrow(path)
    pf = _parquet_file(path, memory_map=True)
    columns = list(pf.schema_arrow.names)
    for col, what in ((task_col, "task"), (target_col, "target")):
        if col not in columns:
            raise ValueError(f"{path} has no {what} column {col!r} (columns: {', '.join(columns)})")
    features = _feature_names(features, columns, task_col, target_col, path)
    if pf.metadata.num_rows == 0:
        raise ValueError(_fmt(path, "the pool has no rows"))
    try:
        got = _parquet_rows(pf, task_col, target_col, features)
        if got is not None:
            X, table = got
            return _frame_pool(table, "arrow", task_col, target_col, features, path, allow_query, X=X)
        table = pf.read(columns=[task_col, target_col, *features])
    except (pa.ArrowException, OSError) as exc:
        msg = str(exc).replace("\n", " ")
        raise ValueError(_fmt(path, f"not a readable .parquet file ({msg})")) from None
    return _frame_pool(table, "arrow", task_col, target_col, features, path, allow_query)


def _parquet_rows(pf, task_col, target_col, features):
    """The features of a ``.parquet`` pool as one (N, d) array, each row group copied
    into its rows while the next is read (on another thread), with the task and target
    columns as a table; or ``None`` when a feature column is not float64/float32 or
    holds a null or a non-finite value (the whole-table path then names it)."""
    import pyarrow as pa

    from concurrent.futures import ThreadPoolExecutor

    from .backend import n_threads

    schema = pf.schema_arrow
    types = [schema.field(f).type for f in features]
    if any(t not in (pa.float64(), pa.float32()) for t in types):
        return None
    dtype = np.float32 if all(t == pa.float32() for t in types) else np.float64
    X = _arrow_owned((pf.metadata.num_rows, len(features)), dtype)
    keep = []
    a = 0
    columns = [task_col, target_col, *features]
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(pf.read_row_group, 0, columns=columns) if pf.num_row_groups else None
        for g in range(pf.num_row_groups):
            table = ahead.result()
            if g + 1 < pf.num_row_groups:
                ahead = reader.submit(pf.read_row_group, g + 1, columns=columns)
            sub = table.select(features)
            if any(sub.column(j).null_count for j in range(sub.num_columns)):
                return None
            b = a + table.num_rows
            with n_threads(1):  # one core copies while pyarrow reads the next row group
                if not _fill_rows(X[a:b], [[c.to_numpy() for c in batch.columns] for batch in sub.to_batches()]):
                    return None
            keep.append(table.select([task_col, target_col]))
            a = b
    if a != X.shape[0]:
        return None
    return X, pa.concat_tables(keep)


@quiet
def write_pool(path, X, y, task) -> None:
    """Write rows (X, y, task id) to ``.npz``, ``.csv`` or ``.parquet`` (replaced whole
    or not at all).

    A ``.csv`` has the header ``task,y,x1,...,xd``; a query row has an empty target,
    and a cell holding a comma, a quote or a line break is quoted (``csv`` module).
    A ``.parquet`` has the same columns (a query row has a NaN target), in row groups
    of ``ROW_GROUP_ROWS`` rows, in the order given (write a pool grouped by task to
    read it back with :func:`fastmlr.open_parquet`).

    Parameters
    ----------
    path : str -- ends in ``.npz`` or ``.csv``
    X : (N, d), y : (N,) (NaN marks a query row), task : (N,) ids
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    task = np.asarray(task)
    if ext == ".npz":
        with atomic_open(path, "wb") as fh:
            np.savez(fh, X=X, y=y, task=task)
    elif ext == ".csv":
        d = X.shape[1]
        ycol = np.where(np.isnan(y), "", np.char.mod("%.17g", y))
        body = np.column_stack([task.astype(str), ycol, np.char.mod("%.17g", X)])
        with atomic_open(path, "w") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["task", "y"] + [f"x{j + 1}" for j in range(d)])
            writer.writerows(body.tolist())
    elif ext == ".parquet":
        pa, pq = _pyarrow(path)
        cols = {"task": task, "y": y}
        cols.update({f"x{j + 1}": X[:, j] for j in range(X.shape[1])})
        with atomic_open(path, "wb") as fh:
            pq.write_table(pa.table(cols), fh, row_group_size=ROW_GROUP_ROWS)
    else:
        raise ValueError(_fmt(path, "unknown file type; expected a .npz, .csv or .parquet output"))

