"""Pools on a Dask cluster: ``fit``, ``meta_learn`` and ``predict`` over a Dask DataFrame.

A Dask DataFrame with a task-id column, a target column and feature columns (as
``dask.dataframe.read_parquet`` or ``read_csv`` give it) is a pool held in partitions.
Each partition, turned into a task set by :func:`fastmlr.tasks_from_frame`, is a chunk
of whole tasks, and every stage runs as it does over a stream of chunks: the same
per-chunk statistic (:func:`fastmlr.scan.scan_chunk`, :func:`fastmlr.em_passes.e_chunk`
and :func:`~fastmlr.em_passes.curvature_chunk`, :func:`fastmlr.subspace.moment_stats`,
:func:`fastmlr.classify.classify_chunk`, :func:`fastmlr.posterior`) runs on the workers,
the small results are added in a tree of fixed shape (so the bits do not depend on
where a task ran), and the client finalizes.  What crosses the network: d x d and
k x d statistics, the task sizes (n,), the few thousand heavy tasks the starts need,
and for ``predict`` nothing (its output stays a Dask DataFrame).  Between EM's passes
the workers hold the partitions' task sets and nothing else: a pass is one task per
worker, over the partitions it holds; it computes each partition's responsibilities
(n_j, k) in a buffer it reuses and returns only their sums, which the client adds in
the same tree.

The result equals the in-memory call on the concatenation of the partitions' task sets
in partition order (each partition's tasks sorted by id), up to the rounding of sums
added in another order: ``fit(ddf, k)`` is ``fastmlr.fit(pool, k, em_path="passes")``
with ``pool`` that concatenation, so for a frame sorted by task id it is the in-memory
fit of ``fastmlr.tasks_from_frame(ddf.compute())``.

Tasks must not straddle partitions; the check comes with the first pass (each
partition's sorted task ids), and the fix is one line: ``ddf.shuffle(on="task")`` or
``ddf.set_index("task")``.

A frame of ``read_parquet`` is read lean (:func:`_lean_parquet`): each column a view of
the buffer Arrow decoded it into, and local files memory-mapped, unless the caller gave
those options.

The computations run on the active ``dask.distributed`` Client when there is one, else
on Dask's default scheduler.  On a worker, the compiled kernels get the worker's share
of its machine's cores (the cores divided by the threads of all workers on that host)
and BLAS one thread, under the kernel backend in force where the call was made.  A
worker lost during a fit is survived: Dask recomputes its partitions from the source,
and the sums, added in the same tree, give the same result.

``import fastmlr`` does not import this module; this module imports Dask when called
(``pip install "fastmlr[dask]"``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from operator import add
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np

from . import _threads
from ._parallel import _concurrent_kernels_ok, single_blas
from .backend import get_backend, n_threads, use_backend
from .classify import ClassifyResult, classify_chunk
from .cluster import cluster_tasks
from .em_passes import _buffer, curvature_chunk, e_chunk, pass_stats
from .io import tasks_from_frame
from .lstsq import NormalEquations, VARIANCES, solve_classes
from .model import Model
from .pipeline import MetaLearnResult
from .residuals import class_sse
from .scan import ChunkScan, _concat, _nonempty, gather_tasks, scan_chunk, second_moment_chunk
from .subspace import moment_stats, top_eigenvectors
from .tasks import TaskSet, check_k, check_tasks, select_tasks
from ._validation import check_params, check_sums, quiet

__all__ = ["fit", "meta_learn", "predict", "SPLIT_EVERY"]

#: Partial results added per node of the reduction tree.
SPLIT_EVERY = 8

_KERNEL_LOCK = threading.Lock()


def _dask():
    try:
        import dask
        import dask.dataframe  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ImportError(f"fastmlr.dask needs Dask ({exc}); install it with `pip install \"fastmlr[dask]\"`") from None
    return dask


# ---------------------------------------------------------------- the frame and its partitions

class _Spec:
    """How a partition becomes a task set, and the kernel threads of the task running it.

    A plain object, not a tuple: Dask hands it to a task as it is, where it would walk
    the fields of a tuple (and its list of features) at every task it builds."""

    __slots__ = ("task", "target", "features", "plan", "backend")

    def __init__(self, task, target, features: list, plan: dict, backend: str):
        self.task, self.target, self.features = task, target, features
        self.plan = plan  # host -> threads of all workers on it ("" : the local scheduler's threads)
        self.backend = backend  # the kernel backend in force where the call was made

    def __dask_tokenize__(self):
        return ("fastmlr.dask._Spec", self.task, self.target, tuple(self.features),
                tuple(sorted(self.plan.items())), self.backend)


def _spec(ddf, name, task, target, features):
    """``(ddf, spec)``: the frame checked (and read lean, :func:`_lean_parquet`) and how
    its partitions become task sets."""
    dask = _dask()
    import dask.dataframe as dd

    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"{name} is {type(ddf).__name__}; expected a dask.dataframe.DataFrame (one row per "
                        f"example; e.g. dask.dataframe.read_parquet(path) or dask.dataframe.from_pandas(df))")
    columns = list(ddf.columns)
    if task not in columns and ddf.index.name != task:
        raise ValueError(f"{name} has no task column {task!r} (columns: {', '.join(map(str, columns))}); "
                         f"pass task= the name of the column")
    if target not in columns:
        raise ValueError(f"{name} has no target column {target!r} (columns: {', '.join(map(str, columns))}); "
                         f"pass target= the name of the column")
    if features is None:  # decided here, so that every partition has the same columns
        features = [c for c in columns if c != task and c != target]
    elif isinstance(features, (str, bytes)) or not hasattr(features, "__iter__"):
        raise TypeError(f"features is {type(features).__name__}; expected a list of column names")
    return _lean_parquet(ddf), _Spec(task, target, list(features), _thread_plan(dask), get_backend())


#: ``arrow_to_pandas`` options under which a partition of ``dask.dataframe.read_parquet``
#: reaches fastmlr with each column a view of the buffer Arrow decoded it into: by
#: default pandas copies the float columns into one block, a copy of the whole
#: partition before fastmlr copies it into rows (``split_blocks``), and frees each Arrow
#: column as it goes (``self_destruct``; Arrow's own file system reader does that already,
#: and refuses the option twice).
_LEAN = {"ReadParquetFSSpec": {"split_blocks": True, "self_destruct": True},
         "ReadParquetPyarrowFS": {"split_blocks": True}}


def _mapped(path, **_):
    """A local Parquet file memory-mapped: Arrow decodes its pages from the page cache,
    where fsspec's file object would first copy each file's bytes into fresh memory.
    (As with any map, a file cut short while it is read ends the reading process.)"""
    import pyarrow as pa

    return pa.memory_map(path)


def _local_files(node) -> bool:
    """Whether a ``read_parquet`` of fsspec reads local files."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs = node.operand("filesystem")
    if fs not in (None, "fsspec") and not isinstance(fs, LocalFileSystem):
        return False
    paths = node.operand("path")
    paths = paths if isinstance(paths, (list, tuple)) else [paths]
    return all(fsspec.utils.get_protocol(fsspec.utils.stringify_path(p)) in ("file", "local") for p in paths)


def _lean_parquet(ddf):
    """``ddf`` with every ``read_parquet`` in its expression that was given no
    ``arrow_to_pandas`` options reading with :data:`_LEAN`'s, and every one of local
    files through fsspec that was given no ``open_file_options`` reading them mapped
    (:func:`_mapped`): the same values, a copy fewer each.  Any other frame, or a Dask
    whose expressions differ, is returned as it is."""
    try:
        from dask.dataframe.dask_expr import new_collection

        expr = ddf.expr
        for node in list(expr.walk()):
            lean = _LEAN.get(type(node).__name__)
            if lean is None:
                continue
            if "arrow_to_pandas" in node._parameters:  # Arrow's file system
                if node.operand("arrow_to_pandas"):
                    continue
                new = node.substitute_parameters({"arrow_to_pandas": dict(lean)})
            else:  # fsspec: the options are read into the dataset's description, made again
                kwargs = dict(node.operand("kwargs") or {})
                add = {}
                if not kwargs.get("arrow_to_pandas"):
                    add["arrow_to_pandas"] = dict(lean)
                if not kwargs.get("open_file_options") and _local_files(node):
                    add["open_file_options"] = {"open_file_func": _mapped}
                if not add:
                    continue
                new = node.substitute_parameters({"kwargs": {**kwargs, **add}, "_dataset_info_cache": None})
            expr = expr.substitute(node, new)
        return ddf if expr is ddf.expr else new_collection(expr)
    except (ImportError, AttributeError, TypeError, KeyError, ValueError):  # pragma: no cover - another Dask
        return ddf


def _thread_plan(dask) -> dict:
    """Threads that run tasks at once on each host: from the workers of the active
    distributed Client, else the local scheduler's pool."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no Client
        client = None
    if client is not None:
        plan: dict = {}
        for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
            host = urlparse(addr).hostname or ""
            plan[host] = plan.get(host, 0) + int(w.get("nthreads", 1))
        return plan
    import dask.local

    if dask.base.get_scheduler() is dask.local.get_sync:
        return {"": 1}
    return {"": int(dask.config.get("num_workers", None) or _threads._cores())}


def _kernel_threads(plan: dict) -> int:
    """Kernel threads for the task calling it: its host's cores shared by the threads
    that run tasks there."""
    share = plan.get("", 1)
    if "" not in plan:
        try:
            from distributed import get_worker

            share = plan.get(urlparse(get_worker().address).hostname or "", 1)
        except (ImportError, ValueError):
            share = max(plan.values(), default=1)
    return max(1, _threads._cores() // max(1, share))


@contextlib.contextmanager
def _on_worker(spec: _Spec):
    """Run a partition's statistic under the caller's kernel backend, with its share of
    the cores and one BLAS thread (and one kernel call at a time in a process whose
    Numba threading layer cannot run two)."""
    lock = contextlib.nullcontext() if _concurrent_kernels_ok() else _KERNEL_LOCK
    with lock, use_backend(spec.backend), n_threads(_kernel_threads(spec.plan)), single_blas():
        yield


def _frame_pool(pdf, spec: _Spec):
    """The task set (an :class:`fastmlr.io.Pool`) of one pandas partition."""
    if spec.task not in pdf.columns and pdf.index.name == spec.task:  # after set_index(task)
        pdf = pdf.reset_index()
    return tasks_from_frame(pdf, task=spec.task, target=spec.target, features=spec.features)


def _task_set(pool) -> TaskSet:
    return TaskSet(pool.X, pool.y, pool.offsets)


def _on_partitions(fn, ddf, spec: _Spec, *args, nout=None):
    """``fn(partition, i, spec, *args)`` as one delayed object per partition."""
    from dask import delayed

    parts = ddf.to_delayed(optimize_graph=True)
    return [delayed(fn, pure=True, nout=nout)(part, i, spec, *args) for i, part in enumerate(parts)]


def _sum_list(items):
    items = [x for x in items if x is not None]
    return functools.reduce(add, items) if items else None


def _tree(items, combine):
    """``items`` added in a tree of fixed shape (:data:`SPLIT_EVERY` per node, None
    terms skipped): ``combine(list)`` makes each node, delayed or at once."""
    items = list(items)
    while len(items) > 1:
        items = [combine(items[i:i + SPLIT_EVERY]) for i in range(0, len(items), SPLIT_EVERY)]
    return combine(items)


def _tree_sum(items):
    """Delayed sum of delayed terms, in the tree of :func:`_tree`: the same additions in
    the same order wherever the terms were computed."""
    from dask import delayed

    return _tree(items, delayed(_sum_list, pure=True))


def _local_sum(items):
    """The sum of :func:`_tree_sum`, of terms already here: the same bits."""
    return _tree(items, _sum_list)


def _check_whole_tasks(ids: list, name: str, task) -> None:
    """Refuse a task id found in two partitions (``ids``: each partition's sorted ids)."""
    live = [(j, a) for j, a in enumerate(ids) if a.size]
    try:  # the common case: partitions in increasing id order, checked from their ends
        if all(prev[1][-1] < cur[1][0] for prev, cur in zip(live[:-1], live[1:])):
            return
    except TypeError:  # ids that do not compare across partitions: the full check
        pass
    if not live:
        return
    every = np.concatenate([a for _, a in live])
    part = np.repeat([j for j, _ in live], [a.size for _, a in live])
    order = np.argsort(every, kind="stable")
    s = every[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        i = dup[0]
        tid = s[i].item() if isinstance(s[i], np.generic) else s[i]
        raise ValueError(
            f"{name}: task {tid!r} has rows in partitions {part[order[i]]} and {part[order[i + 1]]}; "
            f"every task must lie in one partition: group its rows first, e.g. "
            f"{name} = {name}.shuffle(on={task!r}) (or {name}.set_index({task!r}))")


# ---------------------------------------------------------------- fit

def _fit_part(pdf, i, spec):
    """Partition i as (its non-empty tasks, the scan statistic or None, its task ids)."""
    with _on_worker(spec):
        pool = _frame_pool(pdf, spec)
        if pool.offsets.size == 1:  # an empty partition
            return _task_set(pool), None, pool.tasks
        ts = check_tasks(*_task_set(pool), role=f"pool (partition {i})")
        return _nonempty(ts), scan_chunk(ts), pool.tasks


def _pool_part(pdf, i, spec):
    """Partition i's non-empty tasks."""
    with _on_worker(spec):
        ts = _task_set(_frame_pool(pdf, spec))
        return _nonempty(check_tasks(*ts, role=f"pool (partition {i})")) if ts.offsets.size > 1 else ts


def _is_live(scan) -> bool:
    return scan is not None


def _e_buffered(ts, prm):
    """``e_chunk`` of a partition at the point ``prm``, its responsibilities written to a
    buffer this thread reuses."""
    return e_chunk(ts, *prm, R_out=_buffer("R", (ts.offsets.size - 1, prm[0].shape[0])))


def _e_part(ts, prm, spec):
    """A partition's E-pass statistic (its responsibilities dropped)."""
    with _on_worker(spec):
        return _e_buffered(ts, prm)[0]


def _resp_part(ts, prm, spec):
    with _on_worker(spec):
        return e_chunk(ts, *prm)[1]


def _second_moment_part(ts, first_row, stride, spec):
    with _on_worker(spec):
        return second_moment_chunk(ts.X, first_row, stride)


def _curvature_part(ts, prm, D, spec):
    """A partition's curvature at the point ``prm``: its responsibilities there
    computed again (the same operations on the same values, so the same bits)."""
    with _on_worker(spec):
        return curvature_chunk(ts, _e_buffered(ts, prm)[1], D)


def _on_group(fn, tss, each, args, spec):
    """``fn(ts, *e, *args, spec)`` for the partitions of one group, in order."""
    return [fn(ts, *e, *args, spec) for ts, e in zip(tss, each)]


def _placement(parts):
    """``(holders, limits)``: the workers holding each persisted partition (a tuple,
    empty when none does) and each worker's memory limit in bytes (0: none); None
    without a distributed Client."""
    try:
        from distributed import default_client, futures_of

        client = default_client()
    except (ImportError, ValueError):
        return None
    held = [futures_of(p) for p in parts]  # a persisted partition: one future, its own key
    who = client.who_has([f for fs in held for f in fs])
    limits = {a: int(w.get("memory_limit") or 0) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    return [tuple(sorted(who.get(fs[0].key, ()))) if len(fs) == 1 else () for fs in held], limits


def _groups(holders, nbytes, limits) -> list:
    """Partitions grouped for one task each: ``[(worker or None, [j, ...]), ...]``.

    Partition j goes to the holder in ``holders[j]`` given the fewest bytes so far (a
    partition copied to two workers does not load one of them), in partition order;
    a worker's partitions are cut into groups of at most half its memory limit
    (``limits``, 0: no cut), so that no task needs more than a worker can hold, as
    after a worker is lost and its partitions are recomputed on the others.  A
    partition held nowhere is a group of its own, placed by the scheduler."""
    load: dict = {}
    open_group: dict = {}
    groups: list = []
    for j, (hs, b) in enumerate(zip(holders, nbytes)):
        if not hs:
            groups.append((None, [j]))
            continue
        w = min(hs, key=lambda h: (load.get(h, 0), h))
        load[w] = load.get(w, 0) + b
        cap = limits.get(w, 0) // 2
        g = open_group.get(w)
        if g is None or (cap and g[1] + b > cap):
            g = open_group[w] = [len(groups), 0]
            groups.append((w, []))
        groups[g[0]][1].append(j)
        g[1] += b
    return groups


class _DaskPasses:
    """EM's passes over the partitions, one round trip each: a pass is one task per
    worker, over the partitions that worker holds (:meth:`_DaskScan.map_parts`), and
    the client adds their statistics.  Nothing but the partitions stays on the workers:
    the client keeps the accepted point, and a curvature pass (the rare step of a line
    search) computes each partition's responsibilities there again before it uses
    them."""

    def __init__(self, scan, k: int):
        self.scan = scan
        self.last = self.kept = None

    def e_pass(self, W, s2, p):
        # the point is in every task's own arguments (a few k x d numbers): no task of its
        # own for the partitions' tasks to fetch from whichever worker ran it
        self.last = tuple(np.array(a, dtype=np.float64) for a in (W, s2, p))
        return pass_stats(_local_sum(self.scan.map_parts(_e_part, self.last)), *W.shape)

    def keep(self) -> None:
        self.kept = self.last

    def curvature(self, D):
        return _local_sum(self.scan.map_parts(_curvature_part, self.kept, np.array(D, dtype=np.float64)))

    def resp(self) -> np.ndarray:
        R = self.scan.map_parts(_resp_part, self.kept)
        return np.concatenate(R) if R else np.zeros((0, 0))


class _DaskPool(NamedTuple):
    scan: object
    n: int
    N: int

    def passes(self, k: int) -> _DaskPasses:
        return _DaskPasses(self.scan, k)


class _DaskScan:
    """A pool in the partitions of a Dask DataFrame, scanned once: what
    :func:`fastmlr.fit` needs (a :class:`fastmlr.scan.PoolScan`).

    Attributes are those of :class:`fastmlr.scan.ChunkScan` (one chunk per partition
    with tasks), ``parts`` the partitions' task sets (delayed, persisted on the
    workers unless ``persist=False``), ``spec`` how they were read.
    """

    def __init__(self, total: ChunkScan, parts: list, spec: _Spec):
        (self.sizes, self.chunk_tasks, self.d, self.dtype, self.moment, self.yy, self.y_max,
         self.empty) = total
        self.parts = parts
        self.spec = spec
        self.firsts = np.concatenate([[0], np.cumsum(self.chunk_tasks)[:-1]]).astype(np.int64)

    @property
    def N(self) -> int:
        return int(self.sizes.sum())

    def map_parts(self, fn, *args, each=None) -> list:
        """``[fn(ts_j, *each[j], *args, spec) for every partition j]``, computed on the
        workers and returned in partition order: one task per worker, over the
        partitions it holds (and one per partition held nowhere, as when they are read
        again every pass), so that a pass costs the scheduler a few tasks however many
        partitions there are.  A worker lost meanwhile is survived as any task's: the
        task runs elsewhere, its partitions recomputed or fetched."""
        from dask import annotate, delayed

        each = [()] * len(self.parts) if each is None else each
        placed = _placement(self.parts)
        if placed is None:
            groups = [(None, [j]) for j in range(len(self.parts))]
        else:
            nbytes = self.part_rows() * (self.d + 1) * np.dtype(self.dtype).itemsize
            groups = _groups(placed[0], nbytes, placed[1])
        tasks = []
        for worker, js in groups:
            with annotate(**({} if worker is None else {"workers": [worker], "allow_other_workers": True})):
                tasks.append(delayed(_on_group, pure=True)(fn, [self.parts[j] for j in js], [each[j] for j in js],
                                                           args, self.spec))
        out = [None] * len(self.parts)
        for (_, js), res in zip(groups, _dask().compute(*tasks)):
            for j, r in zip(js, res):
                out[j] = r
        return out

    def part_rows(self) -> np.ndarray:
        """(partitions,) rows of each partition."""
        return np.add.reduceat(self.sizes, self.firsts) if self.sizes.size else np.zeros(0, np.int64)

    def second_moment(self, stride: int) -> np.ndarray:
        """(d, d): ``sum x x^T`` over the rows whose index in the pool is a multiple of
        ``stride``, summed on the workers (one round trip)."""
        first_rows = np.concatenate([[0], np.cumsum(self.part_rows())[:-1]]).astype(np.int64)
        terms = self.map_parts(_second_moment_part, int(stride), each=[(int(a),) for a in first_rows])
        return _local_sum(terms) if terms else np.zeros((self.d, self.d))

    def gather(self, idx) -> TaskSet:
        dask = _dask()
        from dask import delayed

        def fetch(requests):
            return list(dask.compute(*[delayed(select_tasks, pure=True)(self.parts[j], local)
                                       for j, local in requests]))

        return gather_tasks(idx, np.column_stack([self.firsts, self.chunk_tasks]), fetch, self.d, self.dtype)

    def gather_later(self, idx):
        """``gather(idx)`` started now in a thread of this process: the tasks travel from
        the workers while EM's passes run there.  Returns the callable that waits for them."""
        from concurrent.futures import ThreadPoolExecutor

        ex = ThreadPoolExecutor(1, thread_name_prefix="fastmlr-gather")
        fetched = ex.submit(self.gather, np.array(idx, dtype=np.int64))
        ex.shutdown(wait=False)
        return fetched.result

    def pool(self) -> _DaskPool:
        return _DaskPool(self, int(self.sizes.size), self.N)


def _scan(ddf, *, task="task", target="y", features=None, persist=True, name="ddf") -> _DaskScan:
    """Read a Dask DataFrame once: its scan statistics, its partitions as task sets.

    See :func:`fit` for the parameters; the partitions stay on the workers (``persist``).
    """
    dask = _dask()
    ddf, spec = _spec(ddf, name, task, target, features)
    from dask import delayed

    convs = _on_partitions(_fit_part, ddf, spec, nout=3)
    tss = [c[0] for c in convs]
    scans = [c[1] for c in convs]
    ids = [c[2] for c in convs]
    if persist:
        tss, scans, ids = dask.persist(tss, scans, ids)
    else:  # every pass converts the partitions again, without the scan
        tss = _on_partitions(_pool_part, ddf, spec)
    live, total, ids = dask.compute([delayed(_is_live, pure=True)(q) for q in scans], _tree_sum(scans), ids)
    _check_whole_tasks(list(ids), name, task)
    live = [j for j, on in enumerate(live) if on]
    if total is None:
        d = len(spec.features)
        total = ChunkScan(np.zeros(0, np.int64), np.zeros(0, np.int64), d, np.dtype(np.float64),
                          None, 0.0, 0.0, 0)
    parts = [tss[j] for j in live]
    keep = np.asarray(total.chunk_tasks) > 0
    return _DaskScan(total._replace(chunk_tasks=total.chunk_tasks[keep]), [p for p, kk in zip(parts, keep) if kk],
                    spec)


@quiet
def fit(ddf, k, *, task="task", target="y", features=None, persist=True, **fit_options) -> Model:
    """Fit a mixture of k linear regressions to a pool held in a Dask DataFrame.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        One row per example: a task-id column, a target column and feature columns
        (a missing target marks a query row, ignored here).  Every task's rows must lie
        in one partition (``ddf.shuffle(on=task)`` or ``ddf.set_index(task)`` makes it
        so); partitions may be empty or of any sizes.
    k : int or None -- number of components (None chooses it, as :func:`fastmlr.fit`)
    task, target : column names (the task ids may also be the index, after
        ``set_index(task)``)
    features : list of column names, optional -- default every other column, in order
    persist : bool
        Keep the partitions' task sets on the workers between EM's passes (Dask spills
        them to disk beyond a worker's memory limit); False reads them from the source
        again at every pass.
    **fit_options
        Options of :func:`fastmlr.fit` (``em_path`` "auto" or "passes").

    Returns
    -------
    Model
        As :func:`fastmlr.fit` returns it for the concatenation of the partitions'
        task sets in partition order, EM in passes (``em_path="passes"``).

    Raises
    ------
    TypeError
        ``ddf`` is not a Dask DataFrame.
    ValueError
        A task in two partitions (the message gives the fix), an absent column, and
        every error of :func:`fastmlr.fit` and :func:`fastmlr.tasks_from_frame`.

    See Also
    --------
    fastmlr.fit : the same fit in one process.
    predict : posteriors and predictions of a Dask DataFrame's tasks.

    Examples
    --------
    >>> import numpy as np, pandas as pd, dask.dataframe as dd, fastmlr, fastmlr.dask
    >>> W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    >>> S = fastmlr.sample_tasks(W, s2, p, 8, n_tasks=300, seed=1)
    >>> df = pd.DataFrame(S.X, columns=["x0", "x1", "x2"])
    >>> df["y"], df["task"] = S.y, np.repeat(np.arange(300), 8)
    >>> ddf = dd.from_pandas(df.set_index("task"), npartitions=3)   # whole tasks per partition
    >>> model = fastmlr.dask.fit(ddf, 2)
    >>> model.W.shape, bool(fastmlr.parameter_error(model.W, W).max < 0.2)
    ((2, 3), True)
    """
    em_path = fit_options.get("em_path", "auto")
    if isinstance(em_path, str) and em_path in ("stats", "rows"):
        raise ValueError(f"em_path is {em_path!r} but the pool is a Dask DataFrame; it is fitted by "
                         f"em_path='passes' (or 'auto'), which reads its partitions once per pass")
    from .fit import fit as _fit

    return _fit(_scan(ddf, task=task, target=target, features=features, persist=persist), k, **fit_options)


# ---------------------------------------------------------------- meta_learn

def _moment_part(pdf, i, spec):
    with _on_worker(spec):
        pool = _frame_pool(pdf, spec)
        if pool.offsets.size == 1:
            return None, pool.tasks
        return moment_stats(_task_set(pool)), pool.tasks


def _tasks_part(pdf, i, spec):
    with _on_worker(spec):
        pool = _frame_pool(pdf, spec)
        return _task_set(pool), pool.tasks


def _classify_part(pdf, i, spec, prm):
    with _on_worker(spec):
        pool = _frame_pool(pdf, spec)
        W, s2, p = prm
        if pool.offsets.size == 1:
            return np.zeros(0, np.int64), None, pool.tasks, np.dtype(pool.X.dtype)
        ts = check_tasks(*_task_set(pool), min_size=1, role=f"classification tasks (partition {i})")
        stats = NormalEquations.zeros(W.shape[0], W.shape[1])
        labels = classify_chunk(ts, W, s2, p, stats)
        return labels, stats, pool.tasks, np.dtype(ts.X.dtype)


def _sse_part(pdf, i, spec, labels, W):
    with _on_worker(spec):
        pool = _frame_pool(pdf, spec)
        if pool.offsets.size == 1:
            return np.zeros(W.shape[0])
        return class_sse(pool.X, pool.y, pool.offsets, labels, W)


@quiet
def meta_learn(light, heavy, light2, k, *, L=None, linkage=None, task="task", target="y", features=None,
               variance="unbiased") -> MetaLearnResult:
    """Algorithm 1 on three Dask DataFrames (subspace, clustering, classification).

    Parameters
    ----------
    light, heavy, light2 : dask.dataframe.DataFrame
        The three batches of :func:`fastmlr.meta_learn`, one row per example, with the
        same columns (every task's rows in one partition).  ``light``'s moment
        statistic and ``light2``'s normal equations are summed over the partitions;
        ``heavy`` (a few thousand tasks) is gathered on the client for the clustering.
    k : int -- number of components
    L, linkage : options of :func:`fastmlr.cluster_tasks`
    task, target, features : columns, as :func:`fit`
    variance : {"unbiased", "ml"} -- the refit variance of :func:`fastmlr.classify_tasks`

    Returns
    -------
    MetaLearnResult
        As :func:`fastmlr.meta_learn` on the concatenation of each frame's partitions'
        task sets, in partition order; ``classify.labels`` (n2,) in that order.

    Raises
    ------
    TypeError, ValueError
        As :func:`fit` (named by the argument: ``light``, ``heavy`` or ``light2``) and
        :func:`fastmlr.meta_learn`.

    See Also
    --------
    fastmlr.meta_learn : the same in one process.
    fit : one pool of tasks of any sizes.

    Examples
    --------
    >>> import numpy as np, pandas as pd, dask.dataframe as dd, fastmlr, fastmlr.dask
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> def frame(t, n, seed):
    ...     S = fastmlr.sample_tasks(W, s2, p, t, n_tasks=n, seed=seed)
    ...     df = pd.DataFrame(S.X, columns=["x0", "x1", "x2", "x3"])
    ...     df["y"], df["task"] = S.y, np.repeat(np.arange(n), t)
    ...     return dd.from_pandas(df.set_index("task"), npartitions=2)
    >>> m = fastmlr.dask.meta_learn(frame(4, 2000, 1), frame(32, 20, 2), frame(16, 200, 3), 2)
    >>> m.W.shape, bool(fastmlr.parameter_error(m.W, W).max < 0.2)
    ((2, 4), True)
    """
    dask = _dask()
    from dask import delayed

    check_k(k)
    if variance not in VARIANCES:
        raise ValueError(f"variance is {variance!r}; expected one of {', '.join(map(repr, VARIANCES))}")
    checked = [_spec(f, nm, task, target, features) for f, nm in ((light, "light"), (heavy, "heavy"),
                                                                   (light2, "light2"))]
    (light, _), (heavy, _), (light2, _) = checked
    specs = [sp for _, sp in checked]
    seconds = {}
    t0 = time.perf_counter()
    parts = _on_partitions(_moment_part, light, specs[0], nout=2)
    total, ids = dask.compute(_tree_sum([q[0] for q in parts]), [q[1] for q in parts])
    _check_whole_tasks(list(ids), "light", task)
    if total is None:
        raise ValueError("light has no tasks; expected tasks with at least 2 rows for the subspace")
    M = total.moment()
    r = check_k(k, upper=M.shape[0], what="(the dimension d of X)")
    U = top_eigenvectors(M, r)[1]
    t1 = time.perf_counter()
    seconds["subspace"] = t1 - t0

    got = dask.compute(*_on_partitions(_tasks_part, heavy, specs[1]))
    _check_whole_tasks([g[1] for g in got], "heavy", task)
    hs = [g[0] for g in got if g[0].offsets.size > 1]
    hts = _concat(hs, M.shape[0], np.result_type(*[h.X.dtype for h in hs]) if hs else np.float64)
    c = cluster_tasks(hts, U, k, L=L, linkage=linkage)
    t2 = time.perf_counter()
    seconds["cluster"] = t2 - t1

    Wc, s2c, pc = check_params(c.W, c.s2, None, M.shape[0])
    outs = dask.persist(*_on_partitions(_classify_part, light2, specs[2], (Wc, s2c, pc)))
    labels, stats, ids, dtypes = dask.compute([o[0] for o in outs], _tree_sum([o[1] for o in outs]),
                                              [o[2] for o in outs], [o[3] for o in outs])
    _check_whole_tasks(list(ids), "light2", task)
    if stats is None:
        raise ValueError("light2 has no tasks; expected tasks with at least 1 row for the classification")
    check_sums(stats.XtX, "the normal equations X^T X", dtypes[0])
    dtype = np.result_type(*[dt for lab, dt in zip(labels, dtypes) if lab.size])
    frames = light2.to_delayed(optimize_graph=True)

    def exact_rss(W):
        terms = [delayed(_sse_part, pure=True)(f, i, specs[2], lab, W)
                 for i, (f, lab) in enumerate(zip(frames, labels))]
        return dask.compute(_tree_sum(terms))[0]

    W_new, s2_new = solve_classes(stats, Wc, s2c, dtype, exact_rss, variance=variance)
    lab = np.concatenate(labels)
    p_new = np.bincount(lab, minlength=Wc.shape[0]) / lab.size
    seconds["classify"] = time.perf_counter() - t2
    res = ClassifyResult(lab, W_new, s2_new, p_new)
    return MetaLearnResult(W_new, s2_new, p_new, U, c, res, seconds)


# ---------------------------------------------------------------- predict

WHATS = ("tasks", "queries")


def _predict_part(pdf, i, spec, prm, what, names):
    import pandas as pd

    with _on_worker(spec):
        from .predict import posterior

        W, s2, p = prm
        pool = _frame_pool(pdf, spec)
        n = pool.offsets.size - 1
        post = posterior(_task_set(pool), W, s2, p) if n else np.zeros((0, W.shape[0]))
        comp = np.argmax(post, axis=1)
        if what == "tasks":
            out = {spec.task: pool.tasks, "map_component": comp}
            out.update({f"post{l}": post[:, l] for l in range(W.shape[0])})
            beta = post @ W
            out.update({f"bayes_{f}": beta[:, j] for j, f in enumerate(names)})
            return pd.DataFrame(out)
        qt = pool.query_task
        qX = pool.query_X.astype(np.float64, copy=False)
        yb = np.einsum("qd,qd->q", qX, (post @ W)[qt]) if qt.size else np.zeros(0)
        ym = np.einsum("qd,qd->q", qX, W[comp[qt]]) if qt.size else np.zeros(0)
        index = pdf.index[pool.query_rows]  # the query rows' labels in the input
        return pd.DataFrame({spec.task: pool.tasks[qt], "yhat_bayes": yb, "yhat_map": ym}, index=index)


def predict(model, ddf, *, what="tasks", task="task", target="y", features=None):
    """Posteriors, regression vectors and query predictions of the tasks of a Dask DataFrame.

    Parameters
    ----------
    model : Model, MetaLearnResult or any object with ``W`` (k, d), ``s2`` (k,), ``p`` (k,)
    ddf : dask.dataframe.DataFrame
        One row per example (every task's rows in one partition): rows with a target are
        a task's training rows, rows whose target is missing its query rows.
    what : {"tasks", "queries"}
        "tasks": one row per task -- the task id, ``map_component`` (the component of
        largest posterior), ``post0`` ... ``post{k-1}`` (the posterior) and
        ``bayes_<feature>`` (the Bayes regression vector, the posterior mean of w).
        "queries": one row per query row, indexed as in ``ddf`` -- the task id,
        ``yhat_bayes`` and ``yhat_map`` (x times the Bayes and the MAP vector).
    task, target, features : columns, as :func:`fit` (d features, in W's order)

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy, one output partition per input partition.

    Raises
    ------
    ValueError
        A task in two partitions (checked from the task column alone, unless the frame
        is indexed by task with known divisions), a bad ``what``, d different from W's.

    See Also
    --------
    fastmlr.posterior, fastmlr.predict_params : the same in one process.

    Examples
    --------
    >>> import numpy as np, pandas as pd, dask.dataframe as dd, fastmlr, fastmlr.dask
    >>> W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    >>> S = fastmlr.sample_tasks(W, s2, p, 8, n_tasks=20, seed=1)
    >>> df = pd.DataFrame(S.X, columns=["x0", "x1", "x2"])
    >>> df["y"], df["task"] = S.y, np.repeat(np.arange(20), 8)
    >>> df.loc[df.index % 8 == 7, "y"] = np.nan           # the last row of every task is a query row
    >>> ddf = dd.from_pandas(df, chunksize=80, sort=False)  # 10 whole tasks per partition
    >>> model = fastmlr.Model(W, s2, p, np.eye(3), {})
    >>> tasks = fastmlr.dask.predict(model, ddf).compute()
    >>> list(tasks.columns[:4]), len(tasks)
    (['task', 'map_component', 'post0', 'post1'], 20)
    >>> queries = fastmlr.dask.predict(model, ddf, what="queries").compute()
    >>> comp = tasks.set_index("task")["map_component"].loc[queries["task"]].to_numpy()
    >>> x = df.loc[queries.index, ["x0", "x1", "x2"]].to_numpy()
    >>> len(queries), bool(np.allclose(queries["yhat_map"], np.einsum("qd,qd->q", x, W[comp])))
    (20, True)
    """
    dask = _dask()
    import pandas as pd
    from dask import delayed

    if not isinstance(what, str) or what not in WHATS:
        raise ValueError(f"what is {what!r}; expected one of {', '.join(map(repr, WHATS))}")
    ddf, spec = _spec(ddf, "ddf", task, target, features)
    W, s2, p = check_params(getattr(model, "W", None), getattr(model, "s2", None), getattr(model, "p", None),
                            len(spec.features))
    if not (ddf.index.name == task and ddf.known_divisions):  # else set_index made whole tasks
        ids = ddf[[task]] if task in ddf.columns else ddf.index.to_frame()
        ids = dask.compute(*[delayed(_ids_part, pure=True)(f, task) for f in ids.to_delayed()])
        _check_whole_tasks(list(ids), "ddf", task)
    tid = ddf.index.dtype if task not in ddf.columns else ddf.dtypes[task]
    if what == "tasks":
        meta = {task: pd.Series([], dtype=tid), "map_component": pd.Series([], dtype=np.int64)}
        meta.update({f"post{l}": pd.Series([], dtype=np.float64) for l in range(W.shape[0])})
        meta.update({f"bayes_{f}": pd.Series([], dtype=np.float64) for f in spec.features})
        meta = pd.DataFrame(meta)
    else:
        meta = pd.DataFrame({task: pd.Series([], dtype=tid), "yhat_bayes": pd.Series([], dtype=np.float64),
                             "yhat_map": pd.Series([], dtype=np.float64)},
                            index=ddf._meta.index[:0])
    prm = (W, s2, p)
    return ddf.map_partitions(_predict_frame, spec, prm, what, spec.features, meta=meta, enforce_metadata=False)


def _predict_frame(pdf, spec, prm, what, names):
    return _predict_part(pdf, 0, spec, prm, what, names)


def _ids_part(pdf, task):
    """The sorted distinct task ids of one partition (of the task column alone)."""
    return np.unique(pdf[task].to_numpy())
