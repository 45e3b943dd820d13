"""The one thread-count setting that both compiled backends honour."""

from __future__ import annotations

import os
import sys
import threading

_count: int | None = None
_local = threading.local()  # a per-thread override (the workers of _parallel)


def _cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get() -> int:
    """Threads the kernels may use: this thread's override, else the set value, else
    every core available."""
    own = getattr(_local, "count", None)
    if own is not None:
        return own
    return _count if _count is not None else _cores()


def set(count: int | None) -> None:  # noqa: A001 - mirrors get()
    """Set the kernel thread count (``None``: every core).

    The Cython kernels read :func:`get` at every call; Numba is told here (and by
    ``kernels.py`` when it is first imported).  Numba's setting is per calling thread,
    so a thread that calls the kernels should set the count itself.
    """
    global _count
    _count = count
    _tell_numba()


def set_local(count: int | None) -> None:
    """Override the thread count for the calling thread only (``None``: drop the
    override).  Numba's setting is per thread already; the Cython kernels read
    :func:`get`."""
    _local.count = count
    _tell_numba()


def _tell_numba() -> None:
    """Pass :func:`get` to Numba for the calling thread (if Numba is loaded)."""
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(get(), numba.config.NUMBA_NUM_THREADS))
