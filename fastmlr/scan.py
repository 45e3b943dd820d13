"""A pool read as a stream of chunks: what ``fit`` learns in one pass, and the passes after.

``fit`` on a :class:`~fastmlr.stream.TaskStream` never holds the pool in memory.  One
scan (:func:`scan_stream`) gathers, chunk by chunk, every statistic the spectral start
needs -- the task sizes, the moment statistic of Algorithm 2 over the tasks with two
rows or more, and the scale of y; a second pass (:meth:`StreamScan.second_moment`)
sums ``x x^T`` over a sample of the rows chosen by their index in the pool (the
pooled second moment S: whitening, and the W step's preconditioner); a third
(:meth:`StreamScan.gather`) collects the chosen heavy tasks (a few thousand); EM then
reads the stream once per pass (:meth:`StreamScan.pool`).  Empty tasks are dropped everywhere, as ``fit`` drops them
from arrays.  Each pass validates its chunks as it reads them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np

from . import _config
from ._parallel import reduce_blocks
from .em_passes import Pool
from .stream import task_chunks
from .subspace import MomentStats, _moment_stats
from .tasks import TaskSet, select_tasks

__all__ = ["PoolScan", "StreamScan", "ChunkScan", "scan_chunk", "scan_stream", "gather_tasks",
           "SECOND_MOMENT_ROWS", "moment_stride", "second_moment_chunk"]


_BLOCK_ROWS_BYTES = _config.CACHE_BLOCK_BYTES


def _nonempty(ts: TaskSet) -> TaskSet:
    sizes = np.diff(ts.offsets)
    return ts if sizes.all() else select_tasks(ts, np.flatnonzero(sizes))


@runtime_checkable
class PoolScan(Protocol):
    """What ``fit`` needs of a pool it does not hold in memory: the statistics of one
    scan (the attributes of :class:`StreamScan`, but ``stream``), ``gather(idx)`` and
    ``pool()``.  ``gather_later(idx)`` starts fetching the tasks ``idx`` and returns a
    callable that returns them (``gather(idx)``): a pool held by other processes sends
    them while EM runs, one read from disk reads them when they are asked for.
    :class:`StreamScan` is one; ``fastmlr.dask`` makes another, whose chunks are the
    partitions of a Dask DataFrame."""

    sizes: np.ndarray
    d: int
    dtype: np.dtype
    moment: MomentStats | None
    yy: float
    y_max: float
    empty: int

    @property
    def N(self) -> int: ...

    def second_moment(self, stride: int) -> np.ndarray: ...

    def gather(self, idx) -> TaskSet: ...

    def gather_later(self, idx) -> Callable[[], TaskSet]: ...

    def pool(self): ...


class StreamScan(NamedTuple):
    """What one pass over a stream tells ``fit`` (non-empty tasks only).

    Attributes
    ----------
    stream : TaskStream
    sizes : (n,) int64 -- rows of every non-empty task, in stream order
    chunk_tasks : (m,) int64 -- non-empty tasks in each chunk
    d : int
    dtype : numpy dtype of X
    moment : MomentStats or None -- Algorithm 2's statistic over the tasks with >= 2 rows
    yy : float -- ``sum y^2``
    y_max : float -- largest |y|
    empty : int -- empty tasks dropped
    """

    stream: object
    sizes: np.ndarray
    chunk_tasks: np.ndarray
    d: int
    dtype: np.dtype
    moment: MomentStats | None
    yy: float
    y_max: float
    empty: int

    @property
    def N(self) -> int:
        return int(self.sizes.sum())

    def second_moment(self, stride: int) -> np.ndarray:
        """(d, d) float64: ``sum x x^T`` over the rows whose index in the pool is a
        multiple of ``stride`` (:func:`second_moment_chunk`), in one pass."""
        total = np.zeros((self.d, self.d))
        first_row = 0
        for _, ts in self.chunks():
            total += second_moment_chunk(ts.X, first_row, stride)
            first_row += ts.X.shape[0]
        return total

    def chunks(self):
        """``(first_task, TaskSet)`` of every chunk, empty tasks dropped, validated again."""
        first = 0
        for j, ts in enumerate(task_chunks(self.stream, role="pool")):
            ts = _nonempty(ts)
            n_j = ts.offsets.size - 1
            if j >= self.chunk_tasks.size or n_j != self.chunk_tasks[j] or ts.X.shape[1] != self.d:
                raise ValueError(f"pool: the TaskStream gave different chunks on a second reading (chunk {j}); "
                                 f"fit reads the stream several times and needs the same chunks every time")
            if n_j:
                yield first, ts
            first += n_j

    def pool(self) -> Pool:
        """The stream as a :class:`fastmlr.em_passes.Pool`."""
        return Pool(self.chunks, int(self.sizes.size), self.N, self.sizes.astype(np.float64))

    def gather(self, idx) -> TaskSet:
        """The tasks ``idx`` (indices among the non-empty tasks, in that order), in memory."""
        firsts = np.concatenate([[0], np.cumsum(self.chunk_tasks)[:-1]]).astype(np.int64)

        def fetch(requests):
            want = {int(firsts[j]): local for j, local in requests}
            return [select_tasks(ts, want[first]) for first, ts in self.chunks() if first in want]

        return gather_tasks(idx, np.column_stack([firsts, self.chunk_tasks]), fetch, self.d, self.dtype)

    def gather_later(self, idx):
        """``gather(idx)`` as a callable: the stream is read when it is called (the
        tasks are not held while EM reads the stream)."""
        return lambda: self.gather(idx)


def gather_tasks(idx, spans, fetch, d: int, dtype) -> TaskSet:
    """The tasks ``idx`` of a pool held in chunks, in memory and in the order of ``idx``.

    Parameters
    ----------
    idx : (m,) int -- indices of tasks in the pool
    spans : (c, 2) int -- first task and number of tasks of every chunk, in pool order
    fetch : callable -- ``fetch([(j, local), ...])``, for every chunk j holding some of
        the tasks (in pool order) with ``local`` the sorted indices of those tasks in
        the chunk, returns the list of their task sets (``select_tasks`` of the chunk)
    d, dtype -- of X (for an empty result)
    """
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    wanted = idx[order]
    requests, got = [], []
    for j, (first, count) in enumerate(np.asarray(spans, dtype=np.int64).reshape(-1, 2)):
        a, b = np.searchsorted(wanted, [first, first + count])
        if b > a:
            requests.append((j, wanted[a:b] - first))
            got.append(order[a:b])
    whole = _concat(fetch(requests) if requests else [], d, dtype)
    # back from pool order to the order asked for
    pos = np.empty(idx.size, dtype=np.int64)
    pos[np.concatenate(got) if got else np.zeros(0, np.int64)] = np.arange(idx.size)
    return select_tasks(whole, pos)


def _concat(parts, d, dtype) -> TaskSet:
    if not parts:
        return TaskSet(np.zeros((0, d), dtype), np.zeros(0, dtype), np.zeros(1, np.int64))
    sizes = np.concatenate([np.diff(p.offsets) for p in parts])
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return TaskSet(np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts]), off)


class ChunkScan(NamedTuple):
    """The scan's statistic of a chunk of whole tasks, or of consecutive chunks: the
    fields of :class:`StreamScan` but ``stream``.  ``a + b`` is the statistic of ``a``'s
    tasks followed by ``b``'s (sizes concatenated, sums added, maxima taken)."""

    sizes: np.ndarray
    chunk_tasks: np.ndarray
    d: int
    dtype: np.dtype
    moment: MomentStats | None
    yy: float
    y_max: float
    empty: int

    def __add__(self, other):  # type: ignore[override]
        if other.d != self.d:
            raise ValueError(f"pool: a chunk has d = {other.d} columns but an earlier one has {self.d}; "
                             f"expected the same d in every chunk")
        moment = other.moment if self.moment is None else (
            self.moment if other.moment is None else self.moment + other.moment)
        return ChunkScan(np.concatenate([self.sizes, other.sizes]),
                         np.concatenate([self.chunk_tasks, other.chunk_tasks]), self.d,
                         np.dtype(np.result_type(self.dtype, other.dtype)), moment,
                         self.yy + other.yy, max(self.y_max, other.y_max), self.empty + other.empty)


def scan_chunk(ts: TaskSet) -> ChunkScan:
    """The :class:`ChunkScan` of one validated chunk of whole tasks (empty tasks are
    counted and dropped)."""
    n_in = ts.offsets.size - 1
    ts = _nonempty(ts)
    d = ts.X.shape[1]
    s = np.diff(ts.offsets).astype(np.int64)
    yy, y_max, moment = 0.0, 0.0, None
    if s.size:
        y64 = ts.y.astype(np.float64, copy=False)
        yy = float(y64 @ y64)
        y_max = float(np.abs(y64).max())
        two = np.flatnonzero(s >= 2)
        if two.size:
            moment = _moment_stats(*(ts if two.size == s.size else select_tasks(ts, two)))
    return ChunkScan(s, np.array([s.size], dtype=np.int64), int(d), np.dtype(ts.X.dtype), moment, yy,
                     y_max, n_in - s.size)


def scan_stream(stream) -> StreamScan:
    """Read a stream once and return its :class:`StreamScan`.

    Raises
    ------
    ValueError
        A chunk that fails validation (named by its index), chunks of different d.
    """
    total = None
    for ts in task_chunks(stream, role="pool"):
        part = scan_chunk(ts)
        total = part if total is None else total + part
    return StreamScan(stream, *total)


#: Rows per feature over which the pooled second moment ``S = X^T X / N`` is summed:
#: every row of a pool of at most ``SECOND_MOMENT_ROWS * d`` rows, else every
#: ``moment_stride``-th (its cost, N d^2 over all rows, was 4 s of a 37 s fit at Figure
#: 2's scale).  S only whitens the spectral start and preconditions EM's W step; with
#: this many rows its eigenvalues are within about ``2 / sqrt(1024) = 0.06`` of the
#: pool's (Marchenko-Pastur), against the whitening tolerance of 0.25.
SECOND_MOMENT_ROWS = 1024


def moment_stride(N: int, d: int) -> int:
    """The stride of the rows that :func:`second_moment_chunk` sums, for N rows of d features."""
    return max(1, int(N) // (SECOND_MOMENT_ROWS * int(d)))


def second_moment_chunk(X, first_row: int, stride: int) -> np.ndarray:
    """``sum x x^T`` (d, d) float64 over the rows of a chunk whose index in the pool,
    ``first_row + i``, is a multiple of ``stride`` -- the same rows however the pool is
    cut into chunks.  Products in float64 (so that the cut changes only the order of
    float64 additions), in blocks on the library's threads."""
    start = (-int(first_row)) % int(stride)
    n, d = X.shape
    step = max(1, _BLOCK_ROWS_BYTES // max(1, d * X.itemsize)) * stride
    bounds = np.arange(start, n + step, step)

    def block(b):
        B = np.ascontiguousarray(X[bounds[b]:min(bounds[b + 1], n):stride], dtype=np.float64)
        return B.T @ B

    nb = int(np.searchsorted(bounds, n, side="left")) if start < n else 0
    return reduce_blocks(block, nb, (d, d))
