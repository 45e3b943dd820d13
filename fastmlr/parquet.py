"""Pools larger than memory from a ``.parquet`` file: a :class:`~fastmlr.TaskStream`.

:func:`open_parquet` reads the columns it needs in record batches (pyarrow reads a
row group at a time) and hands on chunks of **whole tasks**: the rows of a task must
be consecutive in the file (sorted by id, or merely grouped), and a task cut by a
batch boundary is carried into the next chunk.  Resident memory stays near a few
chunks whatever the size of the file.  pyarrow is imported when a stream is read.
"""

from __future__ import annotations

import os

import numpy as np

from . import _config
from ._validation import check_int, quiet
from .io import _arrow_matrix, _check_columns, _feature_names, _frame_numbers, _parquet_file, _pyarrow
from .tasks import TaskStream

__all__ = ["open_parquet"]


@quiet
def open_parquet(path, *, task="task", target="y", features=None, allow_query=False,
                 max_rows: int | None = None) -> TaskStream:
    """A :class:`~fastmlr.TaskStream` over a ``.parquet`` pool, read a batch at a time.

    Parameters
    ----------
    path : path-like
        A ``.parquet`` file, one row per example, the rows of each task consecutive
        (tasks sorted or grouped by id: :func:`fastmlr.io.write_pool` of a pool in
        task order, or any file sorted by its task column).
    task, target : str
        Names of the task-id and target columns (defaults ``task`` and ``y``).
    features : list of str, optional
        Feature columns, in this order (default: every other column, in file order).
    allow_query : bool
        Rows with a missing target (null or NaN) are left out instead of an error
        (a task with only such rows stays, with no rows).
    max_rows : int, optional
        Rows per batch (a chunk holds the whole tasks among them, so one task larger
        than ``max_rows`` is still a chunk of its own).  pyarrow reads a row group at
        a time, so memory is about one row group (as written: ``write_pool`` writes
        groups of ``fastmlr.io.ROW_GROUP_ROWS`` rows) plus a few batches.  Default: as many
        rows as fit in ``_config.STREAM_CHUNK_BYTES`` (256 MiB) of X.

    Returns
    -------
    TaskStream
        Re-iterable: every pass reads the file again.  Chunks are ``(X, y, offsets)``
        with ``X`` (N_c, d) float64 (float32 when every feature and the target are
        float32), tasks in file order.

    Raises
    ------
    ValueError
        At once: no such file, not a ``.parquet`` file, an absent column.  While the
        stream is read: a task whose rows are not consecutive, a missing task id,
        feature or target, an infinite value -- one line naming the file, the column
        and the row (from 0).

    See Also
    --------
    fastmlr.open_npy_chunks : a stream over ``.npy`` files.
    fastmlr.io.read_pool : a whole ``.parquet`` pool in memory.

    Examples
    --------
    >>> import os, tempfile, numpy as np, fastmlr
    >>> from fastmlr.io import write_pool
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> S = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=1000, seed=1)
    >>> task = np.repeat(np.arange(1000), 4)              # rows of a task together
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_pool(os.path.join(tmp, "pool.parquet"), S.X, S.y, task)
    ...     stream = fastmlr.open_parquet(os.path.join(tmp, "pool.parquet"), max_rows=1000)
    ...     U = fastmlr.estimate_subspace(stream, 2)
    >>> U.shape
    (4, 2)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} is not a file; expected an existing .parquet file")
    if max_rows is not None:
        max_rows = check_int(max_rows, "max_rows", low=1)
    pa, _ = _pyarrow(path)
    schema = _parquet_file(path).schema_arrow
    columns = list(schema.names)
    _check_columns(columns, task, target, path)
    features = _feature_names(features, columns, task, target, path)
    single = all(schema.field(c).type == pa.float32() for c in (target, *features))
    dtype = np.float32 if single else np.float64
    rows = max_rows or max(1, _config.STREAM_CHUNK_BYTES // (len(features) * np.dtype(dtype).itemsize))

    def chunks():
        return _chunks(path, task, target, features, dtype, rows, allow_query)

    return TaskStream(chunks)


def _batch_arrays(batch, task, target, features, dtype, path, first):
    """X (b, d), y (b,), ids (b,) of one record batch, every value checked; rows are
    numbered from ``first`` in messages."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = batch.column(0)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    miss = pc.is_null(col, nan_is_null=True) if pa.types.is_floating(col.type) else pc.is_null(col)
    if col.null_count or (pa.types.is_floating(col.type) and pc.any(miss).as_py()):
        i = pc.index(miss, True).as_py()
        raise ValueError(f"{path}: column {task!r} has a missing task id at row {first + i}; "
                         f"expected an id on every row")
    ids = col.to_numpy(zero_copy_only=False)
    y = _frame_numbers(batch.column(1).to_numpy(zero_copy_only=False), target, "target", True, path, first)
    sub = batch.select(list(range(2, batch.num_columns)))
    X = _arrow_matrix(sub, features)
    if X is not None:
        X = X.astype(dtype, copy=False)
    else:
        X = np.empty((batch.num_rows, len(features)), dtype=dtype)
        for j, name in enumerate(features):
            X[:, j] = _frame_numbers(sub.column(j).to_numpy(zero_copy_only=False), name, "feature", False, path,
                                     first)
    return np.ascontiguousarray(X), y.astype(dtype, copy=False), ids


def _chunks(path, task, target, features, dtype, rows, allow_query):
    """Chunks of whole tasks from the file (see :func:`open_parquet`)."""
    pf = _parquet_file(path)
    done = _SeenIds()  # tasks already handed on: seeing one again means the file is not grouped
    carry = None  # rows of the last task of the previous batch, which may go on
    first = 0
    for batch in _batches(pf, [task, target, *features], rows):
        X, y, ids = _batch_arrays(batch, task, target, features, dtype, path, first)
        base = first - (0 if carry is None else carry[0].shape[0])
        if carry is not None:
            X = np.concatenate([carry[0], X])
            y = np.concatenate([carry[1], y])
            ids = np.concatenate([carry[2], ids])
        first += batch.num_rows
        starts = _run_starts(ids)
        last = int(starts[-1])
        if last > 0:
            yield _whole_tasks(X[:last], y[:last], ids, starts[:-1], last, done, path, target, base, allow_query)
        carry = (X[last:], y[last:], ids[last:])
    if carry is not None:
        X, y, ids = carry
        yield _whole_tasks(X, y, ids, _run_starts(ids), X.shape[0], done, path, target, first - X.shape[0],
                           allow_query)


def _batches(pf, columns, rows):
    """Record batches of at most ``rows`` rows, a row group read at a time.  (Not
    ``ParquetFile.iter_batches``, whose memory grew with the file in pyarrow 26.)"""
    for g in range(pf.num_row_groups):
        table = pf.read_row_group(g, columns=columns)
        for batch in table.to_batches(max_chunksize=rows):
            if batch.num_rows:
                yield batch
        del table


def _run_starts(ids):
    """Row of the start of each run of equal ids, (r,) int64 (starts[0] == 0)."""
    if ids.shape[0] == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return np.concatenate([[0], change]).astype(np.int64)


class _SeenIds:
    """The task ids handed on so far, to find a task whose rows come back later.

    While the ids come in increasing order (a file sorted by task), each chunk is
    checked against the last id alone, and the ids are kept as arrays (8 bytes a task
    for integer ids, where a Python set takes about 60).  The first chunk out of order
    turns them into a set, which the rest of the file is checked against.
    """

    def __init__(self):
        self.last = None  # largest id so far, while every id came in increasing order
        self.runs: list = []  # the ids so far (increasing), while in order
        self.ids: set | None = None  # the ids so far, once the order broke

    def repeat(self, run_ids: np.ndarray) -> int:
        """Index in ``run_ids`` of the first id seen before (in an earlier chunk or
        earlier in this one), else -1; then the ids count as seen."""
        if self.ids is None:
            try:
                increasing = bool(np.all(run_ids[1:] > run_ids[:-1])) and (
                    self.last is None or not run_ids.size or bool(run_ids[0] > self.last))
            except TypeError:  # ids that do not compare (mixed types)
                increasing = False
            if increasing:
                if run_ids.size:
                    self.runs.append(run_ids)
                    self.last = run_ids[-1]
                return -1
            self.ids = set(np.concatenate(self.runs).tolist()) if self.runs else set()
            self.runs = []
        for j, t in enumerate(run_ids.tolist()):
            if t in self.ids:
                return j
            self.ids.add(t)
        return -1


def _whole_tasks(X, y, ids, starts, end, done, path, target, base, allow_query):
    """One chunk: rows ``:end``, tasks beginning at ``starts``; each id must be new."""
    j = done.repeat(ids[starts])
    if j >= 0:
        t = ids[starts[j]]
        t = t.item() if isinstance(t, np.generic) else t
        raise ValueError(f"{path}: the rows of task {t!r} are not consecutive (again at row {base + int(starts[j])}); "
                         f"expected the rows of each task together (sort the file by its task column)")
    offsets = np.concatenate([starts, [end]]).astype(np.int64)
    query = np.isnan(y)
    if query.any():
        if not allow_query:
            i = int(np.argmax(query))
            raise ValueError(f"{path}: target column {target!r} has a missing value at row {base + i} "
                             f"({int(query.sum())} rows in this chunk); pass allow_query=True to leave such rows out")
        keep = ~query
        counts = np.add.reduceat(keep.astype(np.int64), starts) if starts.size else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        X, y = X[keep], y[keep]
    return np.ascontiguousarray(X), np.ascontiguousarray(y), offsets
