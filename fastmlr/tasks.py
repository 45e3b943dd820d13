"""The task set: its layout, the forms a function accepts it in, and packing helpers.

A *task set* is ``(X, y, offsets)``:

* ``X`` : (N, d) float64 or float32, C-contiguous -- the rows of every task, stacked;
* ``y`` : (N,) same dtype -- the responses;
* ``offsets`` : (n + 1,) int64 with ``offsets[0] == 0``, non-decreasing and
  ``offsets[-1] == N``; task ``i`` is rows ``offsets[i]:offsets[i + 1]``.

Every function that reads tasks takes the task set as its first argument, in one of
three forms (:func:`as_tasks`): an ``(X, y, offsets)`` tuple, a :class:`TaskSet` (or
any object with attributes ``X``, ``y`` and ``offsets``, such as a sample of
:func:`fastmlr.sample_tasks`), or a :class:`TaskStream` of chunks of whole tasks.
The older form with three separate arrays, ``f(X, y, offsets, ...)``, still works
for one release and warns (:func:`takes_tasks`).

Every public function validates its task set with :func:`check_tasks` before any
compiled code runs, so a kernel only ever sees arrays it can read safely.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from ._validation import check_int, check_sums, quiet, user_stacklevel

__all__ = ["TaskSet", "TaskStream", "as_tasks", "takes_tasks", "renamed_keyword", "check_tasks", "pack_tasks", "group_tasks",
           "select_tasks", "task_sizes"]


class TaskSet(NamedTuple):
    """A task set: ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,) int64.

    The functions of this module return validated task sets (C-contiguous, one float
    dtype, int64 offsets).  Any ``(X, y, offsets)`` tuple is accepted wherever a task
    set is.

    See Also
    --------
    pack_tasks, group_tasks, TaskStream

    Examples
    --------
    >>> import numpy as np
    >>> ts = TaskSet(np.ones((5, 2)), np.zeros(5), np.array([0, 2, 5]))
    >>> np.diff(ts.offsets)                    # task sizes
    array([2, 3])
    """

    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray


class TaskStream:
    """A task set delivered as consecutive chunks of whole tasks.

    Parameters
    ----------
    source : callable or iterable
        A callable returning a fresh iterator of ``(X, y, offsets)`` triples (each a
        task set of its own: offsets start at 0), or a re-iterable collection of
        triples (a list).  A one-shot iterator (a generator object) works for
        single-pass stages only; iterating it twice raises ``ValueError``.

    Notes
    -----
    Statistics of chunks add up (:mod:`fastmlr.stats`), so results equal those of the
    concatenated arrays up to the order of floating-point summation (chunks are
    reduced in order, so a stream gives the same result every time).

    See Also
    --------
    fastmlr.open_npy_chunks : a stream over ``.npy`` files, through memory maps.

    Examples
    --------
    >>> import numpy as np
    >>> chunk = (np.ones((4, 2)), np.ones(4), np.array([0, 2, 4]))
    >>> stream = TaskStream([chunk, chunk])      # two chunks of two tasks each
    >>> sum(len(off) - 1 for _, _, off in stream)
    4
    """

    def __init__(self, source):
        if not callable(source) and not isinstance(source, Iterable):
            raise TypeError(f"source must be a callable or an iterable of (X, y, offsets) chunks, got {type(source).__name__}")
        self._source = source
        self._one_shot = not callable(source) and iter(source) is source
        self._used = False

    def __iter__(self):
        if self._one_shot:
            if self._used:
                raise ValueError("this TaskStream wraps a one-shot iterator that was already consumed; "
                                 "pass a callable that returns a fresh iterator to read it more than once")
            self._used = True
        it = self._source() if callable(self._source) else iter(self._source)
        for chunk in it:
            if not isinstance(chunk, (tuple, list)) or len(chunk) < 3:
                raise TypeError(f"a chunk must be an (X, y, offsets) triple, got {type(chunk).__name__}")
            yield chunk[0], chunk[1], chunk[2]

    @property
    def one_shot(self) -> bool:
        """Whether the stream wraps a one-shot iterator, which can be read only once."""
        return self._one_shot

    def __repr__(self):
        return f"TaskStream({self._source!r})"


def _has_fields(obj) -> bool:
    return all(hasattr(obj, a) for a in ("X", "y", "offsets")) and not isinstance(obj, np.ndarray)


def as_tasks(tasks, name: str = "tasks"):
    """A task set in one of its accepted forms, as a :class:`TaskSet` or a :class:`TaskStream`.

    Parameters
    ----------
    tasks : tuple, TaskSet, TaskStream or object with ``X``, ``y``, ``offsets``
        An ``(X, y, offsets)`` tuple (or list), a :class:`TaskSet`, any object with
        attributes ``X``, ``y`` and ``offsets`` (a :func:`fastmlr.sample_tasks`
        sample), or a :class:`TaskStream`.
    name : str
        How an error message names the argument.

    Returns
    -------
    TaskSet or TaskStream
        The arrays as given (validation is each stage's, with its own minimum task
        size), or the stream itself.

    Raises
    ------
    TypeError
        Any other object, such as a bare array.

    See Also
    --------
    check_tasks : validation and coercion of the arrays.

    Examples
    --------
    >>> import numpy as np
    >>> ts = as_tasks((np.ones((3, 2)), np.ones(3), [0, 1, 3]))
    >>> type(ts).__name__, ts.offsets
    ('TaskSet', [0, 1, 3])
    """
    if isinstance(tasks, TaskStream):
        return tasks
    if _has_fields(tasks):
        return TaskSet(tasks.X, tasks.y, tasks.offsets)
    if isinstance(tasks, (tuple, list)) and len(tasks) == 3:
        if isinstance(tasks[0], TaskStream):
            raise TypeError(f"{name} holds a TaskStream as X; pass the stream alone and leave y and offsets out "
                            f"(each chunk carries its own)")
        return TaskSet(*tasks)
    what = f"an array of shape {tasks.shape}" if isinstance(tasks, np.ndarray) else type(tasks).__name__
    raise TypeError(f"{name} is {what}; expected a task set: an (X, y, offsets) tuple, a TaskSet or a TaskStream")


def _looks_like_tasks(obj) -> bool:
    """Whether ``obj`` is a task set in one of its forms rather than the X of the older
    three-array form: a stream, an object with task-set fields, a tuple of three, or a
    list of three that is not itself a matrix of three rows (an X given as a list)."""
    if isinstance(obj, TaskStream) or _has_fields(obj) or (isinstance(obj, tuple) and len(obj) == 3):
        return True
    if isinstance(obj, list) and len(obj) == 3:
        try:
            rows = np.asarray(obj)
        except (ValueError, TypeError):  # ragged: three arrays of different shapes
            return True
        return not (rows.ndim == 2 and rows.dtype.kind in "biuf")
    return False


def takes_tasks(fn):
    """Decorate a function whose first argument is a task set.

    A call in the older form with three separate arrays, ``fn(X, y, offsets, ...)``
    (or ``y=`` and ``offsets=`` by keyword), is turned into
    ``fn((X, y, offsets), ...)`` with a ``DeprecationWarning``; every other call
    passes through unchanged.  This form is accepted for one release.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if args and not _looks_like_tasks(args[0]) and (len(args) >= 3 or "offsets" in kwargs or "y" in kwargs):
            rest = list(args[1:])
            y = kwargs.pop("y") if "y" in kwargs else (rest.pop(0) if rest else None)
            offsets = kwargs.pop("offsets") if "offsets" in kwargs else (rest.pop(0) if rest else None)
            warnings.warn(f"{name}(X, y, offsets, ...) is deprecated; pass the task set as one argument: "
                          f"{name}((X, y, offsets), ...)", DeprecationWarning, stacklevel=user_stacklevel())
            args = ((args[0], y, offsets), *rest)
        return fn(*args, **kwargs)

    return wrapper


def renamed_keyword(old: str, new: str):
    """Decorate a function whose argument ``new`` was called ``old``: a call with
    ``old=`` by keyword is passed on as ``new=`` with a ``DeprecationWarning``."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old}= and {new}=; pass {new} only")
                warnings.warn(f"{fn.__name__}({old}=...) is deprecated; the argument is called {new}",
                              DeprecationWarning, stacklevel=user_stacklevel())
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _float_dtype(arr: np.ndarray, name: str) -> np.dtype:
    """The float dtype an array is computed in: float32 stays, other reals go to float64."""
    kind = arr.dtype.kind
    if kind == "f":
        return np.dtype(np.float32) if arr.dtype.itemsize <= 4 else np.dtype(np.float64)
    if kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} has dtype {arr.dtype}; expected real numbers "
        f"(float64 or float32; integers and booleans are converted to float64)"
    )


def _as_array(a, name: str) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be read as an array: {exc}") from None


def _total(arr: np.ndarray):
    """A sum of every entry of ``arr`` in its own precision, read once: a matrix is
    multiplied by a vector of ones (BLAS reads it at full memory bandwidth, on every
    core, about 3x faster than ``np.sum``), anything else is summed."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled by the caller
        if arr.ndim == 2 and arr.dtype in (np.float32, np.float64) and (arr.flags.c_contiguous or arr.flags.f_contiguous):
            return np.sum(arr @ np.ones(arr.shape[1], dtype=arr.dtype))
        return np.sum(arr)


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or inf.

    A single pass: a NaN or inf makes the sum non-finite, and a sum of finite numbers
    is finite unless it overflows; only then is the exact (allocating) check needed.
    """
    if arr.size and not np.isfinite(_total(arr)):  # native precision: no cast, one read
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} contains NaN or inf (first at index {tuple(int(i) for i in where)}); "
                f"remove or impute non-finite values first"
            )


def check_finite_through(out: np.ndarray, X: np.ndarray, y: np.ndarray, what: str) -> None:
    """Check X and y for NaN and inf through a kernel's output ``out``, which every
    value of X and y reaches through products and sums (such as the group means of
    y*x): any NaN or inf among them makes ``out`` non-finite, so a finite ``out`` (read
    from cache, a fraction of X's size) clears them without a separate read of X.
    Otherwise X and y are checked exactly, and if they are finite ``out`` overflowed.

    Raises
    ------
    ValueError -- naming X or y and the first bad index, or saying what overflowed
    """
    if np.isfinite(_total(out.reshape(-1, out.shape[-1]) if out.ndim > 2 else out)):
        return
    check_finite(X, "X")
    check_finite(y, "y")
    check_sums(out, what, out.dtype)


def check_offsets(offsets, N: int, name: str = "offsets") -> np.ndarray:
    """Validate ``offsets`` against ``N`` rows and return it as C-contiguous int64."""
    off = _as_array(offsets, name)
    if off.ndim != 1:
        raise ValueError(f"{name} is {off.ndim}-dimensional; expected a 1-D array of n + 1 row offsets")
    if off.dtype.kind not in "iu":
        if off.dtype.kind == "f" and off.size and np.all(np.isfinite(off)) and np.all(off == np.round(off)):
            off = off.astype(np.int64)
        else:
            raise TypeError(f"{name} has dtype {off.dtype}; expected integers (int64)")
    if off.size < 2:
        raise ValueError(f"{name} has length {off.size}; expected n + 1 >= 2 entries (at least one task)")
    outside = (off < 0) | (off > N)
    if outside.any():  # before the cast to int64, which would wrap huge values
        i = int(np.argmax(outside))
        raise ValueError(f"{name}[{i}] is {off[i]}; expected row offsets between 0 and the number of rows N = {N}")
    off = np.ascontiguousarray(off, dtype=np.int64)
    if off[0] != 0:
        raise ValueError(f"{name}[0] is {int(off[0])}; expected 0")
    if off[-1] != N:
        raise ValueError(f"{name}[-1] is {int(off[-1])}; expected the number of rows N = {N}")
    steps = np.diff(off)
    if (steps < 0).any():
        i = int(np.argmax(steps < 0))
        raise ValueError(
            f"{name} decreases at position {i + 1} ({int(off[i])} -> {int(off[i + 1])}); "
            f"expected non-decreasing offsets"
        )
    return off


@quiet
def check_tasks(X, y, offsets, *, min_size: int = 0, role: str = "tasks", finite: bool = True) -> TaskSet:
    """Validate and coerce a task set once, before any kernel runs.

    Parameters
    ----------
    X : array_like, shape (N, d)
        Features; float32 is kept, every other real dtype becomes float64.
    y : array_like, shape (N,)
        Responses; converted to the dtype of ``X``.
    offsets : array_like of int, shape (n + 1,)
        Row offsets of the tasks.
    min_size : int
        Smallest number of rows every task must have for the calling stage.
    role : str
        How the calling stage names this task set in error messages.
    finite : bool
        Check ``X`` and ``y`` for NaN and inf.

    Returns
    -------
    TaskSet
        ``X`` C-contiguous (N, d), ``y`` C-contiguous (N,) of the same float dtype,
        ``offsets`` C-contiguous int64 (n + 1,).

    Raises
    ------
    TypeError
        A non-real dtype (complex, object, strings).
    ValueError
        Wrong shapes, non-finite values, offsets that do not describe the rows, or a
        task smaller than ``min_size``.

    See Also
    --------
    as_tasks : the forms a task set is accepted in.

    Examples
    --------
    >>> import numpy as np
    >>> ts = check_tasks(np.ones((3, 2), dtype=np.float32), np.ones(3, dtype=np.float32), [0, 1, 3])
    >>> ts.X.dtype, ts.y.dtype, ts.offsets.dtype
    (dtype('float32'), dtype('float32'), dtype('int64'))
    """
    X = _as_array(X, "X")
    y = _as_array(y, "y")
    if X.ndim != 2:
        raise ValueError(f"X is {X.ndim}-dimensional with shape {X.shape}; expected a 2-D (N, d) array")
    if y.ndim != 1:
        raise ValueError(f"y is {y.ndim}-dimensional with shape {y.shape}; expected a 1-D (N,) array")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} rows but X has {X.shape[0]}; expected one response per row of X")
    if X.shape[1] < 1:
        raise ValueError(f"X has shape {X.shape}; expected at least one feature column")
    dt = _float_dtype(X, "X")
    ydt = _float_dtype(y, "y")
    if dt != ydt:
        dt = np.dtype(np.float64)  # mixed precision: compute in the wider one
    X = np.ascontiguousarray(X, dtype=dt)
    y = np.ascontiguousarray(y, dtype=dt)
    off = check_offsets(offsets, X.shape[0])
    if finite:
        check_finite(X, "X")
        check_finite(y, "y")
    min_size = check_int(min_size, "min_size", expected="an integer number of rows")
    if min_size > 0:
        sizes = np.diff(off)
        small = sizes < min_size
        if small.any():
            i = int(np.argmax(small))
            raise ValueError(
                f"{role}: {int(small.sum())} of {sizes.size} tasks have fewer than {min_size} rows "
                f"(task {i} has {int(sizes[i])}); this stage needs at least {min_size} rows per task"
            )
    return TaskSet(X, y, off)


def check_k(k, *, upper: int | None = None, what: str = "") -> int:
    """Validate a number of components: an integer with ``1 <= k <= upper``."""
    k = check_int(k, "k", low=1, expected="a number of components k >= 1")
    if upper is not None and k > upper:
        raise ValueError(f"k is {k}; expected k <= {upper}{' ' + what if what else ''}")
    return k


def task_sizes(offsets) -> np.ndarray:
    """Number of rows of each task, shape (n,), from validated ``offsets``."""
    return np.diff(np.asarray(offsets, dtype=np.int64))


@quiet
def pack_tasks(Xs, ys) -> TaskSet:
    """Pack a list of per-task arrays into the ``(X, y, offsets)`` layout.

    Parameters
    ----------
    Xs : sequence of array_like, each shape (t_i, d)
    ys : sequence of array_like, each shape (t_i,)

    Returns
    -------
    TaskSet
        ``X`` (sum t_i, d), ``y`` (sum t_i,), ``offsets`` (n + 1,) int64.

    See Also
    --------
    group_tasks : from rows tagged with task ids.

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> ts = fastmlr.pack_tasks([np.ones((2, 3)), np.zeros((1, 3))], [np.ones(2), np.zeros(1)])
    >>> ts.X.shape, ts.offsets
    ((3, 3), array([0, 2, 3]))
    """
    try:
        Xs, ys = list(Xs), list(ys)
    except TypeError:
        raise TypeError(
            f"Xs and ys must be sequences of per-task arrays, got {type(Xs).__name__} and {type(ys).__name__}"
        ) from None
    if len(Xs) != len(ys):
        raise ValueError(f"Xs has {len(Xs)} tasks but ys has {len(ys)}; expected one response vector per task")
    if not Xs:
        raise ValueError("Xs is empty; expected at least one task")
    Xs = [_as_array(a, f"Xs[{i}]") for i, a in enumerate(Xs)]
    ys = [_as_array(a, f"ys[{i}]") for i, a in enumerate(ys)]
    d = None
    for i, (a, b) in enumerate(zip(Xs, ys)):
        if a.ndim != 2:
            raise ValueError(f"Xs[{i}] has shape {a.shape}; expected a 2-D (t_i, d) array")
        if b.ndim != 1 or b.shape[0] != a.shape[0]:
            raise ValueError(f"ys[{i}] has shape {b.shape}; expected ({a.shape[0]},) to match Xs[{i}]")
        if d is None:
            d = a.shape[1]
        elif a.shape[1] != d:
            raise ValueError(f"Xs[{i}] has {a.shape[1]} columns but Xs[0] has {d}; expected the same d for every task")
    sizes = np.array([a.shape[0] for a in Xs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = np.concatenate(Xs, axis=0) if len(Xs) > 1 else Xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    return check_tasks(X, y, offsets)


@quiet
def group_tasks(X, y, task_ids) -> TaskSet:
    """Gather rows tagged with a task id into the ``(X, y, offsets)`` layout.

    Rows are grouped by ``task_ids`` (stable: rows keep their order within a task);
    tasks are ordered by sorted id.  Like ``y ~ x | g`` in a mixture-of-regressions
    formula.

    Parameters
    ----------
    X : array_like, shape (N, d)
    y : array_like, shape (N,)
    task_ids : array_like, shape (N,)
        Any sortable labels (integers, strings); a missing id (NaN, NaT or None) is
        refused, as the file readers refuse a missing task id.

    Returns
    -------
    TaskSet
        The regrouped task set; task ``i`` holds the rows of the ``i``-th smallest id.

    See Also
    --------
    pack_tasks : from per-task arrays.

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> ts = fastmlr.group_tasks(X, [1.0, 2.0, 3.0, 4.0], ["b", "a", "b", "a"])
    >>> ts.y, ts.offsets                     # task "a" first: rows 1 and 3
    (array([2., 4., 1., 3.]), array([0, 2, 4]))
    """
    X = _as_array(X, "X")
    y = _as_array(y, "y")
    ids = _as_array(task_ids, "task_ids")
    if ids.ndim != 1:
        raise ValueError(f"task_ids has shape {ids.shape}; expected a 1-D array with one id per row")
    if X.ndim != 2 or ids.shape[0] != X.shape[0]:
        raise ValueError(f"task_ids has {ids.shape[0]} entries but X has shape {X.shape}; expected one id per row of X")
    if ids.size == 0:
        raise ValueError("task_ids is empty; expected at least one row")
    missing = missing_values(ids)
    if missing.any():  # np.unique would merge every NaN into one task (or keep each apart)
        i = int(np.argmax(missing))
        raise ValueError(f"task_ids has a missing id ({ids[i]!r}) at row {i} ({int(missing.sum())} rows in all); "
                         f"expected an id on every row")
    try:
        uniq, inverse = np.unique(ids, return_inverse=True)
    except TypeError as exc:  # ids of mixed types that do not sort together
        raise TypeError(f"task_ids must be mutually sortable labels (all numbers or all strings): {exc}") from None
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=uniq.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    y = _as_array(y, "y")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y has shape {y.shape}; expected ({X.shape[0]},) to match X")
    return check_tasks(X[order], y[order], offsets)


def missing_values(arr: np.ndarray) -> np.ndarray:
    """(N,) bool: which entries are missing (NaN, NaT, or None, NaN, ``pd.NA`` or
    ``pd.NaT`` in an object array)."""
    kind = arr.dtype.kind
    if kind in "fc":
        return np.isnan(arr)
    if kind in "mM":
        return np.isnat(arr)
    if kind == "O":
        return np.fromiter((v is None or v != v or type(v).__name__ in ("NAType", "NaTType") for v in arr.tolist()),
                           dtype=bool, count=arr.size)
    return np.zeros(arr.shape[0], dtype=bool)


def chunk_bounds(offsets: np.ndarray, max_rows: int) -> np.ndarray:
    """Task indices that cut a task set into consecutive chunks of about ``max_rows`` rows.

    Returns ``b`` (m + 1,) with ``b[0] == 0`` and ``b[-1] == n``; chunk ``c`` is tasks
    ``b[c]:b[c+1]``.  A chunk holds at least one task, so one task larger than
    ``max_rows`` forms a chunk of its own.  The cut depends only on ``offsets``.
    """
    n = offsets.size - 1
    marks = np.searchsorted(offsets, np.arange(max_rows, offsets[-1], max_rows), side="right") - 1
    b = np.unique(np.concatenate([[0], marks, [n]]))
    return b[(b >= 0) & (b <= n)]


def select_tasks(ts: TaskSet, idx: np.ndarray) -> TaskSet:
    """The tasks ``idx`` (in that order) as a new, contiguous task set.

    Parameters
    ----------
    ts : TaskSet -- validated; ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,)
    idx : (m,) int -- task indices, in the order wanted

    Returns
    -------
    TaskSet -- ``X`` (M, d), ``y`` (M,), ``offsets`` (m + 1,), M the rows of those tasks;
    views of ``ts``'s arrays when ``idx`` is a run of consecutive tasks in increasing
    order (no copy), else new arrays
    """
    idx = np.asarray(idx)
    if idx.size and idx[-1] - idx[0] == idx.size - 1 and (idx.size == 1 or np.all(np.diff(idx) == 1)):
        return slice_tasks(*ts, int(idx[0]), int(idx[-1]) + 1)
    sizes = np.diff(ts.offsets)[idx]
    starts = ts.offsets[idx]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.repeat(starts - off[:-1], sizes) + np.arange(off[-1])
    return TaskSet(np.ascontiguousarray(ts.X[rows]), np.ascontiguousarray(ts.y[rows]), off)


def slice_tasks(X, y, offsets, lo: int, hi: int) -> TaskSet:
    """Tasks ``lo:hi`` as a task set of views (offsets rebased to 0)."""
    a, b = int(offsets[lo]), int(offsets[hi])
    return TaskSet(X[a:b], y[a:b], offsets[lo : hi + 1] - a)
