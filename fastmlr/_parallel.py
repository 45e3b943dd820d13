"""Block-parallel sums over Python threads.

A stage that streams its data through a kernel and then a BLAS product block by block
(the subspace stage's group means and their cross product) runs its blocks on several
threads at once, each block's kernel and product single-threaded: the compiled kernels
and BLAS release the GIL, and a product of one cache-sized block is faster on one core
than split over several (at d = 256 a block's product took longer on two BLAS threads
than on one).

Results do not depend on the thread count: block ``b`` is added to partial sum
``b % PARTIALS`` (in increasing ``b``), the partial sums are added in order, and every
block's product is computed by single-threaded BLAS whatever the number of workers.
:func:`run_each` runs independent calls the same way (classification's classes, each
writing its own normal equations).  The worker threads are kept between calls, and
each runs in a copy of its caller's ``contextvars`` context (backend, thread count,
NumPy's error state).

BLAS runs on one thread inside fastmlr's public computations (:func:`one_blas_thread`,
:func:`single_blas`): a limit shared by all threads, counted, and restored when the
last section ends.  Nothing is set at import.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _threads

__all__ = ["PARTIALS", "reduce_blocks", "run_each", "single_blas", "one_blas_thread"]

#: Number of partial sums of :func:`reduce_blocks`; at most this many threads share a
#: sum.  Fixed, so that the order of additions never depends on the thread count.
PARTIALS = 8

_blas: list = []  # threadpoolctl's controllers of the loaded BLAS libraries, found once
_lock = threading.Lock()


def _blas_libs() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (NumPy's
    and SciPy's, loaded by ``import fastmlr``), found on first use; empty without
    threadpoolctl."""
    with _lock:
        if not _blas:
            try:
                from threadpoolctl import ThreadpoolController

                _blas.append(ThreadpoolController().select(user_api="blas").lib_controllers)
            except Exception:  # threadpoolctl missing or unable to inspect the libraries
                _blas.append([])
        return _blas[0]


def _set_blas_threads(lib, count: int) -> None:
    # threadpoolctl (3.8) lets only one Python thread at a time change OpenBLAS's
    # process-wide count through its public setter, and ignores the others; the
    # sections below keep their own count of users, so they set it directly.
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(count)


_blas_lock = threading.Lock()
_blas_users = 0  # sections inside single_blas now, over all threads
_blas_saved: list = []  # (library, count before the outermost section) it changed


@contextlib.contextmanager
def single_blas():
    """Context manager: BLAS runs on one thread inside it.

    The limit is process-wide (BLAS has one thread count), so sections of several
    threads share it: the first to enter sets it, the last to leave restores the
    count from before, whatever the order in which they enter and leave.  A section
    nested in another costs a lock and a counter.
    """
    global _blas_users
    with _blas_lock:
        if _blas_users == 0:
            for lib in _blas_libs():
                count = lib.get_num_threads()
                if count is not None and count != 1:
                    _set_blas_threads(lib, 1)
                    _blas_saved.append((lib, count))
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                while _blas_saved:
                    lib, count = _blas_saved.pop()
                    _set_blas_threads(lib, count)


def one_blas_thread(fn):
    """Decorator for fastmlr's public computations: ``fn`` runs inside
    :func:`single_blas`, its parallelism coming from the kernels' threads and the
    block-parallel sums.  Kernels and BLAS products alternate throughout the stages;
    with BLAS on several threads, its idle threads (which spin for a while after each
    product) and the kernels' OpenMP threads would contend for the same cores."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_blas():
            return fn(*args, **kwargs)

    return wrapper


def _concurrent_kernels_ok() -> bool:
    """Whether compiled kernels may be called from several threads at once: always for
    Cython (OpenMP) and NumPy; for Numba only under a thread-safe threading layer (its
    "workqueue" layer is not), known once a parallel kernel has run."""
    from .backend import get_backend

    if get_backend() != "numba":
        return True
    numba = sys.modules.get("numba")
    try:
        return numba is not None and numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False


_pool: list = []  # the persistent worker threads (one ThreadPoolExecutor), made on first use


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool of worker threads, grown to at least ``workers`` threads.

    Workers persist between calls: starting threads, and the threading state a
    compiled backend builds in each new thread, cost milliseconds per call otherwise.
    """
    with _lock:
        if not _pool or _pool[0]._max_workers < workers:
            if _pool:
                _pool.pop().shutdown(wait=False)
            _pool.append(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastmlr"))
        return _pool[0]


def _forget_pool() -> None:
    """In a forked child: it has none of the parent's worker threads, and a lock another
    thread held at the fork would stay held."""
    global _lock, _blas_lock
    _lock = threading.Lock()
    _blas_lock = threading.Lock()
    _pool.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _run(fn, items) -> None:
    """``fn(item)`` for every item: on the calling thread when one thread is allowed
    (or kernels may not run concurrently), else on up to ``_threads.get()`` workers,
    worker w taking items w, w + workers, ... in order, each with one kernel thread.
    BLAS is single-threaded throughout.  The first exception in item order is raised.

    Each worker runs in a copy of the caller's ``contextvars`` context (its backend
    and settings), with its own thread count 1, so a call made from inside a worker
    runs serially instead of waiting on the pool it occupies."""
    items = list(items)
    workers = min(_threads.get(), len(items))
    with single_blas():
        if workers <= 1 or not _concurrent_kernels_ok():
            for it in items:
                fn(it)
            return
        errors: dict = {}

        def job(w):
            with _threads.scoped(1):
                for j in range(w, len(items), workers):
                    try:
                        fn(items[j])
                    except BaseException as exc:  # re-raised by the caller, in item order
                        errors[j] = exc
                        return

        pool = _executor(workers)
        futures = [pool.submit(contextvars.copy_context().run, job, w) for w in range(workers)]
        for f in futures:
            f.result()
        if errors:
            raise errors[min(errors)]


def reduce_blocks(fn, nblocks: int, shape, dtype=np.float64) -> np.ndarray:
    """``sum over b < nblocks of fn(b)``, blocks run on up to ``_threads.get()`` threads.

    Parameters
    ----------
    fn : callable(int) -> array of ``shape`` -- one block's term; it may raise, and the
        first exception (in block order of the partial sums) is re-raised here
    nblocks : int
    shape : tuple -- shape of every term and of the result
    dtype : dtype of the partial sums and the result

    Returns
    -------
    array of ``shape``: block ``b`` summed into partial ``b % PARTIALS`` in increasing
    order, the partials then summed in order, so the bits do not depend on the threads.
    """
    parts = min(PARTIALS, max(nblocks, 1))
    acc = np.zeros((parts,) + tuple(shape), dtype=dtype)

    def partial(p):
        for b in range(p, nblocks, parts):
            acc[p] += fn(b)

    _run(partial, range(parts))
    out = acc[0].copy()
    for p in range(1, parts):
        out += acc[p]
    return out


def run_each(fn, items) -> None:
    """Call ``fn(item)`` for every item, on up to ``_threads.get()`` threads, each call
    with one kernel thread and single-threaded BLAS.  The calls must write disjoint
    outputs (so the result cannot depend on the threads); the first exception, in item
    order, is re-raised."""
    _run(fn, items)
