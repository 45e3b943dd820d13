"""Choice of the kernel backend: ``numba`` (default), ``cython`` or ``numpy``.

The three kernel modules -- :mod:`fastmlr.kernels` (Numba), :mod:`fastmlr._ckernels`
(Cython) and :mod:`fastmlr._reference` (NumPy) -- export the same functions with the
same signatures.  Stage modules fetch them through :func:`kernels`, so the backend is
the only global state of the library.  Numba and the Cython extension are imported
lazily: ``import fastmlr`` works without either.

The initial choice is read from the environment variable ``FASTMLR_BACKEND``; without
it the default is the first of numba, cython, numpy that imports here.  The choice is
made at the first kernel call, not at ``import fastmlr``.  :func:`set_backend` changes
the process-wide default; :func:`use_backend` and :func:`n_threads` hold their setting
in a context variable, so a block affects only the thread (or context) that entered it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import numbers
import os

from . import _threads

__all__ = ["set_backend", "get_backend", "available_backends", "kernels", "use_backend", "n_threads"]

_NAMES = ("numba", "cython", "numpy")
_MODULES = {"numba": "fastmlr.kernels", "cython": "fastmlr._ckernels", "numpy": "fastmlr._reference"}
_HOW = {
    "numba": "install it with `pip install numba`",
    "cython": "reinstall fastmlr from source with a C compiler and Cython available "
    "(`pip install --force-reinstall .`; set FASTMLR_REQUIRE_CYTHON=1 to see the build error)",
    "numpy": "",
}

_default_choice: tuple | None = None  # (name, module): the process-wide default
_scoped: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("fastmlr_backend", default=None)
_failures: dict[str, str] = {}


def _load(name: str):
    try:
        return importlib.import_module(_MODULES[name])
    except Exception as exc:  # ImportError, or a broken compiler install
        _failures[name] = f"{type(exc).__name__}: {exc}"
        return None


def available_backends() -> list[str]:
    """Names of the backends that import on this machine, in order of preference.

    Returns
    -------
    list of str
        A sub-list of ``["numba", "cython", "numpy"]``; ``"numpy"`` is always there.
        Calling it imports the compiled backends (Numba's import takes a moment).
    """
    return [name for name in _NAMES if _load(name) is not None]


def _check_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in _NAMES:
        raise ValueError(f"backend is {name!r}; expected one of {', '.join(map(repr, _NAMES))}")
    return name.lower()


def _resolve(name: str):
    """The kernel module of ``name``, or an ImportError that says why and how."""
    name = _check_name(name)
    module = _load(name)
    if module is None:
        raise ImportError(
            f"backend {name!r} is not available ({_failures.get(name, 'import failed')}); {_HOW[name]}"
        )
    return name, module


def set_backend(name: str) -> None:
    """Select the kernel backend for all later calls (the process-wide default).

    Inside a ``with use_backend(...)`` block the block's backend stays in force for
    the thread that entered it.

    Parameters
    ----------
    name : {"numba", "cython", "numpy"}

    Raises
    ------
    ValueError
        Unknown name.
    ImportError
        The backend is not available here; the message says why and how to get it.
    """
    global _default_choice
    _default_choice = _resolve(name)  # one assignment: other threads see old or new


def _default() -> tuple:
    """The default made on first use: FASTMLR_BACKEND, else the first that imports."""
    global _default_choice
    env = os.environ.get("FASTMLR_BACKEND", "").strip()
    if env:
        try:
            set_backend(env)
        except (ValueError, ImportError) as exc:
            raise type(exc)(f"FASTMLR_BACKEND={env}: {exc}") from None
        return _default_choice
    for name in _NAMES:
        module = _load(name)
        if module is not None:
            _default_choice = (name, module)
            return _default_choice


def _current() -> tuple:
    """(name, module) in force for the calling context."""
    own = _scoped.get()
    if own is not None:
        return own
    choice = _default_choice
    return choice if choice is not None else _default()


def get_backend() -> str:
    """Name of the backend in use in the calling thread (or context)."""
    return _current()[0]


_FORK_HELP = (
    "the Numba kernels cannot run in this process: it was forked after they ran, and "
    "Numba's OpenMP threading layer ends a forked child; start worker processes with "
    "multiprocessing.get_context('spawn') or 'forkserver', or build the Cython backend "
    "(which a forked child runs on one thread instead)"
)


def kernels():
    """The kernel module of the backend in use in the calling thread (or context).

    In a process forked after the Numba kernels ran (Numba's OpenMP threading layer
    cannot run in it), the numba backend runs the Cython kernels instead, on one thread
    (the same results), or raises a RuntimeError naming the fix without them.
    """
    name, module = _current()
    if name == "numba":
        if _threads.numba_forked():
            cython = _load("cython")
            if cython is None:
                raise RuntimeError(_FORK_HELP)
            return cython
        _threads.tell_numba()
    return module


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run a block under another backend, then restore the previous one.

    The choice holds for the thread (or ``contextvars`` context) that entered the block,
    and for the work fastmlr does on its behalf in its worker threads; other threads
    keep theirs, whatever the order in which blocks are entered and left.
    """
    token = _scoped.set(_resolve(name))
    try:
        yield
    finally:
        _scoped.reset(token)


@contextlib.contextmanager
def n_threads(count: int | None):
    """Context manager: run a block with at most ``count`` kernel threads, then restore.

    ``None`` leaves the thread count as it is.  Honoured by the Numba backend (through
    ``numba.set_num_threads``) and by the Cython backend (its OpenMP regions read the
    same setting).  The count holds for the thread (or ``contextvars`` context) that
    entered the block and for fastmlr's worker threads working for it; other threads
    keep theirs.
    """
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise ValueError(f"n_threads is {count!r}; expected a positive integer or None")
    with _threads.scoped(int(count)):  # int(): a NumPy integer too
        yield
