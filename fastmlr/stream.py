"""Pools larger than memory: task sets given as a stream of chunks.

Every stage reads task data once and keeps only small additive statistics, so a task
set can arrive in chunks -- consecutive groups of whole tasks, each an
``(X, y, offsets)`` triple -- that are never all in memory together.  A
:class:`TaskStream` wraps such a source; :func:`open_npy_chunks` makes one over
``.npy`` files opened with ``mmap_mode="r"``.  Stage functions accept a stream in
place of the three arrays (``estimate_subspace(stream, 32)``).  The class itself
lives with the other task-set forms in :mod:`fastmlr.tasks`.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from . import _config
from ._validation import check_int, quiet
from .tasks import TaskSet, TaskStream, as_tasks, check_offsets, check_tasks, chunk_bounds, slice_tasks

__all__ = ["TaskStream", "open_npy_chunks", "task_chunks", "is_stream", "collect"]  # TaskStream: from tasks


def is_stream(X) -> bool:
    """Whether ``X`` stands for a whole task set given as chunks."""
    return isinstance(X, TaskStream)


def _resolve(X, y, offsets):
    """The task set behind ``(X, y, offsets)`` or a task set in one argument."""
    if y is None and offsets is None:
        return as_tasks(X)
    if y is None or offsets is None:
        raise TypeError("pass X, y and offsets (or a task set as one argument)")
    return TaskSet(X, y, offsets)


def task_chunks(X, y=None, offsets=None, *, min_size: int = 0, role: str = "tasks", max_rows: int | None = None,
                finite: bool = True):
    """Validated chunks of a task set (any form of :func:`fastmlr.tasks.as_tasks`, or
    three arrays).

    Arrays are validated once and cut into views of about ``max_rows`` rows (default
    ``_config.CHUNK_ROWS``); a stream's chunks are validated one by one, each before
    any kernel sees it.  ``finite=False`` leaves the values of arrays unchecked (for a
    caller that checks them through its kernels' output); a stream's are always checked.

    Yields
    ------
    TaskSet
    """
    if is_stream(X) and (y is not None or offsets is not None):
        raise TypeError("X is a TaskStream: leave y and offsets out (each chunk carries its own)")
    X = _resolve(X, y, offsets)
    if is_stream(X):
        d = None
        count = 0
        for i, chunk in enumerate(X):
            ts = check_tasks(*chunk, min_size=min_size, role=f"{role} (chunk {i})")
            if d is None:
                d = ts.X.shape[1]
            elif ts.X.shape[1] != d:
                raise ValueError(f"{role}: chunk {i} has d = {ts.X.shape[1]} columns but chunk 0 has {d}; "
                                 f"expected the same d in every chunk")
            count += 1
            yield ts
        if count == 0:
            raise ValueError(f"{role}: the TaskStream yielded no chunk; expected at least one task")
        return
    ts = check_tasks(*X, min_size=min_size, role=role, finite=finite)
    bounds = chunk_bounds(ts.offsets, max_rows or _config.CHUNK_ROWS)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield slice_tasks(*ts, lo, hi)


def collect(X, y=None, offsets=None, *, min_size: int = 0, role: str = "tasks", finite: bool = True) -> TaskSet:
    """The whole task set as validated arrays (a stream is concatenated in memory).

    ``finite=False`` leaves the values of arrays unchecked, for a caller that checks
    them through a kernel's output (:func:`fastmlr.tasks.check_finite_through`); a
    stream's chunks are always checked as they are read."""
    X = _resolve(X, y, offsets)
    if not is_stream(X):
        return check_tasks(*X, min_size=min_size, role=role, finite=finite)
    parts = list(task_chunks(X, min_size=min_size, role=role))
    dtype = np.result_type(*[p.X.dtype for p in parts])
    Xs = np.concatenate([p.X for p in parts]).astype(dtype, copy=False)
    ys = np.concatenate([p.y for p in parts]).astype(dtype, copy=False)
    sizes = np.concatenate([np.diff(p.offsets) for p in parts])
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return TaskSet(np.ascontiguousarray(Xs), np.ascontiguousarray(ys), off)


def _release(arr: np.ndarray, a: int, b: int) -> None:
    """Drop rows a:b of a read-only memory map from this process's resident memory."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or b <= a:
        return
    row = arr.strides[0]
    start = arr.offset + a * row if hasattr(arr, "offset") else a * row
    page = mmap.PAGESIZE
    lo = (start // page) * page
    hi = arr.offset + b * row if hasattr(arr, "offset") else b * row
    try:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (OSError, ValueError):  # not supported here: the kernel will evict pages itself
        pass


def _load_npy(path, name: str, mmap_mode):
    """``np.load`` of one array, with a damaged or non-array file reported as the argument's fault."""
    try:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{name} {os.fspath(path)!r} is not a readable .npy array of numbers ({exc}); "
                         f"expected a file written by numpy.save") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive loads as a mapping of arrays
        arr.close()
        raise ValueError(f"{name} {os.fspath(path)!r} is an .npz archive; expected one .npy array (numpy.save)")
    return arr


@quiet
def open_npy_chunks(X_path, y_path, offsets_path, *, max_rows: int | None = None) -> TaskStream:
    """A :class:`TaskStream` over ``.npy`` files, read through memory maps.

    Parameters
    ----------
    X_path, y_path : path-like -- ``.npy`` files of X (N, d) and y (N,)
    offsets_path : path-like -- ``.npy`` file of offsets (n + 1,)
    max_rows : int, optional
        Rows per chunk (whole tasks; a larger task is a chunk alone).  Default: as
        many rows as fit in ``_config.STREAM_CHUNK_BYTES`` (256 MiB) of X.

    Returns
    -------
    TaskStream
        Re-iterable.  Each chunk is a view of the memory map; the pages of a chunk
        are released once the next chunk is requested, so resident memory stays near
        one chunk whatever the size of the files.

    See Also
    --------
    TaskStream : any other source of chunks.

    Examples
    --------
    >>> import os, tempfile, numpy as np, fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> S = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=1000, seed=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     names = [os.path.join(tmp, f"{a}.npy") for a in ("X", "y", "offsets")]
    ...     for name, a in zip(names, (S.X, S.y, S.offsets)):
    ...         np.save(name, a)
    ...     stream = fastmlr.open_npy_chunks(*names, max_rows=1000)
    ...     U = fastmlr.estimate_subspace(stream, 2)
    >>> U.shape
    (4, 2)
    """
    for name, path in (("X_path", X_path), ("y_path", y_path), ("offsets_path", offsets_path)):
        if not os.path.isfile(path):
            raise ValueError(f"{name} {os.fspath(path)!r} is not a file; expected an existing .npy file")
    if max_rows is not None:
        max_rows = check_int(max_rows, "max_rows", low=1)

    def chunks():
        Xm = _load_npy(X_path, "X_path", "r")
        ym = _load_npy(y_path, "y_path", "r")
        if Xm.ndim != 2 or ym.ndim != 1 or Xm.shape[0] != ym.shape[0]:
            raise ValueError(f"X {Xm.shape} and y {ym.shape} in the .npy files must be (N, d) and (N,)")
        off = check_offsets(_load_npy(offsets_path, "offsets_path", None), Xm.shape[0])
        if off.ndim != 1 or off.size < 2 or off[0] != 0 or off[-1] != Xm.shape[0]:
            raise ValueError(f"offsets in {os.fspath(offsets_path)!r} must run from 0 to N = {Xm.shape[0]}")
        rows = max_rows or max(1, _config.STREAM_CHUNK_BYTES // max(1, Xm.strides[0]))
        bounds = chunk_bounds(off, rows)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            a, b = int(off[lo]), int(off[hi])
            yield Xm[a:b], ym[a:b], off[lo : hi + 1] - a
            _release(Xm, a, b)
            _release(ym, a, b)

    return TaskStream(chunks)
