"""Reading and writing a pool of tasks: ``.npz`` (X, y, task) or ``.csv``.

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

Missing targets are **query rows**: :func:`read_pool` refuses them unless
``allow_query=True`` (as ``fastmlr predict`` passes), and then returns them separately
so that the task's other rows are its training examples.  Missing features or task
ids are always an error.  Every error is one line that names the file and what is
wrong.
"""

from __future__ import annotations

import csv
import os
from typing import NamedTuple

import numpy as np

from ._atomic import atomic_open
from ._npz import ZIP_ERRORS, MemberError, read_members
from ._validation import quiet

__all__ = ["Pool", "read_pool", "write_pool", "MISSING"]

#: Cell texts read as a missing value in a ``.csv`` file.
MISSING = frozenset({"", "na", "nan", "null", "none"})


class Pool(NamedTuple):
    """A pool read from a file, grouped by task.

    Attributes
    ----------
    X : (N, d) float64 -- training rows, grouped by task (tasks in sorted-id order)
    y : (N,) float64
    offsets : (n + 1,) int64 -- task i is rows offsets[i]:offsets[i+1]
    tasks : (n,) -- the task ids, sorted.  From a ``.npz``: its ``task`` values (integers
        or strings, in numpy's order; byte strings decoded as UTF-8).  From a ``.csv``: strings, those that read as an
        integer first, by value (ties, such as ``7`` and ``07``, by text), then the
        others by text -- so integer ids come out in the order a ``.npz`` gives them.
    rows : (N,) int64 -- line of each training row in the file (0 = first data row)
    query_X : (q, d) float64 -- rows whose target is missing
    query_task : (q,) int64 -- index into ``tasks`` of each query row
    query_rows : (q,) int64 -- line of each query row in the file
    features : list of str -- feature names: the columns of a ``.csv``; ``x0``, ``x1``,
        ... (by position) for a ``.npz``
    named : bool -- True if ``features`` are the column names of a ``.csv`` header
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


def _csv_task_order(ids):
    """Distinct ``.csv`` task ids in pool order (see :class:`Pool`) and each id's index.

    Parameters
    ----------
    ids : (N,) str array -- one id per row

    Returns
    -------
    tasks : (n,) str array, inverse : (N,) int64 -- ``tasks[inverse] == ids``
    """
    uniq, inverse = np.unique(ids, return_inverse=True)  # by text

    def key(text):
        body = text[1:] if text[:1] in "+-" else text
        if body.isascii() and body.isdigit():
            try:
                return (0, int(text), text)
            except ValueError:  # more digits than Python converts; ordered as text
                pass
        return (1, 0, text)

    perm = sorted(range(uniq.size), key=lambda i: key(str(uniq[i])))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[perm] = np.arange(uniq.size)
    return uniq[perm], rank[inverse.reshape(-1)]


@quiet
def read_pool(path, *, task_col="task", target_col="y", features=None, allow_query=False) -> Pool:
    """Read a pool from ``.npz`` or ``.csv`` (see the module doc).

    Parameters
    ----------
    path : str -- ends in ``.npz`` or ``.csv``
    task_col, target_col : str -- ``.csv`` column names (defaults ``task`` and ``y``)
    features : list of str, optional -- ``.csv`` feature columns (default: all others)
    allow_query : bool -- rows with a missing target are query rows instead of an error

    Returns
    -------
    Pool
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        X, y, task, names = _read_npz(path)
    elif ext == ".csv":
        X, y, task, names = _read_csv(path, task_col, target_col, features)
    else:
        raise ValueError(_fmt(path, "unknown file type; expected a .npz or .csv pool"))
    if X.shape[0] == 0:
        raise ValueError(_fmt(path, "the pool has no rows"))
    query = np.isnan(y)
    if (~np.isfinite(y) & ~query).any():
        raise ValueError(_fmt(path, "y has an infinite value"))
    if query.any() and not allow_query:
        i = int(np.argmax(query))
        raise ValueError(_fmt(path, f"the target is missing on data row {i + 1} ({int(query.sum())} rows in all); "
                                    f"fitting needs a target on every row"))
    if ext == ".csv":
        tasks, inverse = _csv_task_order(task)
    else:
        tasks, inverse = np.unique(task, return_inverse=True)
        inverse = inverse.reshape(-1)
    train = np.flatnonzero(~query)
    order = train[np.argsort(inverse[train], kind="stable")]
    counts = np.bincount(inverse[train], minlength=tasks.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    q = np.flatnonzero(query)
    return Pool(np.ascontiguousarray(X[order]), np.ascontiguousarray(y[order]), offsets, tasks,
                order.astype(np.int64), np.ascontiguousarray(X[q]), inverse[q].astype(np.int64),
                q.astype(np.int64), names, ext == ".csv")


@quiet
def write_pool(path, X, y, task) -> None:
    """Write rows (X, y, task id) to ``.npz`` or ``.csv`` (replaced whole or not at all).

    A ``.csv`` has the header ``task,y,x1,...,xd``; a query row has an empty target,
    and a cell holding a comma, a quote or a line break is quoted (``csv`` module).

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
    else:
        raise ValueError(_fmt(path, "unknown file type; expected a .npz or .csv output"))
