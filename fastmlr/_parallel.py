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
"""

from __future__ import annotations

import contextlib
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _threads

__all__ = ["PARTIALS", "reduce_blocks", "run_each"]

#: Number of partial sums of :func:`reduce_blocks`; at most this many threads share a
#: sum.  Fixed, so that the order of additions never depends on the thread count.
PARTIALS = 8

_controller: list = []
_lock = threading.Lock()


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (on first use, when
    NumPy's and SciPy's BLAS are loaded); None without threadpoolctl."""
    with _lock:
        if not _controller:
            try:
                from threadpoolctl import ThreadpoolController

                _controller.append(ThreadpoolController())
            except Exception:  # threadpoolctl missing or unable to inspect the libraries
                _controller.append(None)
        return _controller[0]


def single_blas():
    """Context manager: BLAS runs on one thread inside it (process-wide, restored after)."""
    ctl = _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


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


def _one_thread_each(fn):
    """``fn`` wrapped to run with one kernel thread in the calling thread."""

    def run(*args):
        _threads.set_local(1)
        try:
            return fn(*args)
        finally:
            _threads.set_local(None)

    return run


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

    workers = min(_threads.get(), parts)
    with single_blas():
        if workers <= 1 or not _concurrent_kernels_ok():
            for p in range(parts):
                partial(p)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for f in [pool.submit(_one_thread_each(partial), p) for p in range(parts)]:
                    f.result()
    out = acc[0].copy()
    for p in range(1, parts):
        out += acc[p]
    return out


def run_each(fn, items) -> None:
    """Call ``fn(item)`` for every item, on up to ``_threads.get()`` threads, each call
    with one kernel thread and single-threaded BLAS.  The calls must write disjoint
    outputs (so the result cannot depend on the threads); the first exception, in item
    order, is re-raised."""
    items = list(items)
    workers = min(_threads.get(), len(items))
    with single_blas():
        if workers <= 1 or not _concurrent_kernels_ok():
            for it in items:
                fn(it)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(_one_thread_each(fn), it) for it in items]:
                f.result()
