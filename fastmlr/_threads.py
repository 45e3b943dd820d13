"""The one thread-count setting that both compiled backends honour."""

from __future__ import annotations

import os
import sys

_count: int | None = None


def _cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get() -> int:
    """Threads the kernels may use: the set value, else every core available."""
    return _count if _count is not None else _cores()


def set(count: int | None) -> None:  # noqa: A001 - mirrors get()
    """Set the kernel thread count (``None``: every core).

    The Cython kernels read :func:`get` at every call; Numba is told here (and by
    ``kernels.py`` when it is first imported).  Numba's setting is per calling thread,
    so a thread that calls the kernels should set the count itself.
    """
    global _count
    _count = count
    numba = sys.modules.get("numba")
    if numba is not None:
        limit = numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(min(get(), limit))
