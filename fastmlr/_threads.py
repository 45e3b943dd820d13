"""The one thread-count setting that both compiled backends honour, and what a forked
process may still do with OpenMP.

The count has a process-wide default (:func:`set`) and a value scoped to the calling
thread or context (:func:`scoped`, behind ``fastmlr.n_threads`` and the workers of
:mod:`fastmlr._parallel`): a context variable, so that blocks entered and left by
several threads in any order never change each other's count.

OpenMP after ``fork``: GNU OpenMP (libgomp, used by the Cython kernels and by Numba's
"omp" threading layer) keeps its worker threads in a pool that a forked child inherits
without the threads, so a parallel region there waits forever.  A child forked after
such threads started therefore runs the Cython kernels on one thread, and does not run
the Numba kernels at all (Numba's OpenMP layer ends the child): see
:func:`numba_forked` and ``fastmlr.backend.kernels``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys

_count: int | None = None  # the process-wide default; None: every core
_scoped: contextvars.ContextVar[int | None] = contextvars.ContextVar("fastmlr_n_threads", default=None)

_omp_started = False  # an OpenMP region of this process ran on more than one thread
_omp_forked = False  # forked after OpenMP threads started: regions must stay on one thread
_numba_forked = False  # forked after Numba's OpenMP threading layer started


def _cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get() -> int:
    """Threads the kernels may use: the count of the calling context, else the process
    default, else every core available."""
    own = _scoped.get()
    if own is not None:
        return own
    return _count if _count is not None else _cores()


def set(count: int | None) -> None:  # noqa: A001 - mirrors get()
    """Set the process-wide default count (``None``: every core).  A :func:`scoped`
    count of the calling context takes precedence."""
    global _count
    _count = count
    tell_numba()


@contextlib.contextmanager
def scoped(count: int | None):
    """Context manager: ``count`` threads in the calling thread or context only
    (``None``: the process default), restored on leaving."""
    token = _scoped.set(count)
    tell_numba()
    try:
        yield
    finally:
        _scoped.reset(token)
        tell_numba()


def omp_threads(work: int) -> int:
    """Threads for an OpenMP region of ``work`` independent iterations: :func:`get`,
    at most ``work``, at least 1, and 1 in a process forked after OpenMP threads
    started.  Read by the Cython kernels at every call."""
    global _omp_started
    if _omp_forked:
        return 1
    t = min(get(), work)
    if t > 1:
        _omp_started = True
        return t
    return 1


def numba_forked() -> bool:
    """Whether this process was forked after Numba's OpenMP threading layer started
    (its parallel kernels would end the process)."""
    return _numba_forked


def _numba_layer() -> str | None:
    """Numba's threading layer if one has started in this process, else None."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run: no layer started
        return None


def _after_fork_in_child() -> None:
    global _omp_forked, _numba_forked
    layer = _numba_layer()
    if layer is not None and layer not in ("workqueue", "tbb"):  # Numba's fork-safe layers
        _numba_forked = True
        _omp_forked = True  # its OpenMP threads have started too
    if _omp_started:
        _omp_forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def tell_numba() -> None:
    """Pass :func:`get` to Numba for the calling thread, once the Numba kernels are
    loaded (Numba's count is per OS thread; this keeps it equal to the calling
    context's).  ``fastmlr.backend.kernels`` calls it before the kernels run."""
    if _numba_forked or "fastmlr.kernels" not in sys.modules:
        return
    numba = sys.modules["numba"]
    want = min(get(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
