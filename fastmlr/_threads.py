"""The one thread-count setting that both compiled backends honour."""

from __future__ import annotations

import os
import sys

_count: int | None = None


def get() -> int:
    """Threads the kernels may use: the set value, else every core."""
    return _count if _count is not None else (os.cpu_count() or 1)


def set(count: int | None) -> None:  # noqa: A001 - mirrors get()
    """Set the kernel thread count (``None``: every core)."""
    global _count
    _count = count
    numba = sys.modules.get("numba")
    if numba is not None:
        limit = numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(min(get(), limit))
