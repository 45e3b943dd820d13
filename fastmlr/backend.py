"""Choice of the kernel backend: ``numba`` (default), ``cython`` or ``numpy``.

The three kernel modules -- :mod:`fastmlr.kernels` (Numba), :mod:`fastmlr._ckernels`
(Cython) and :mod:`fastmlr._reference` (NumPy) -- export the same functions with the
same signatures.  Stage modules fetch them through :func:`kernels`, so the backend is
the only global state of the library.  Numba and the Cython extension are imported
lazily: ``import fastmlr`` works without either.

The initial choice is read from the environment variable ``FASTMLR_BACKEND``; without
it the default is the first of numba, cython, numpy that imports here.  The choice is
made at the first kernel call, not at ``import fastmlr``.
"""

from __future__ import annotations

import contextlib
import importlib
import numbers
import os

__all__ = ["set_backend", "get_backend", "available_backends", "kernels", "use_backend", "n_threads"]

_NAMES = ("numba", "cython", "numpy")
_MODULES = {"numba": "fastmlr.kernels", "cython": "fastmlr._ckernels", "numpy": "fastmlr._reference"}
_HOW = {
    "numba": "install it with `pip install numba`",
    "cython": "reinstall fastmlr from source with a C compiler and Cython available "
    "(`pip install --force-reinstall .`; set FASTMLR_REQUIRE_CYTHON=1 to see the build error)",
    "numpy": "",
}

_state = {"name": None, "module": None}
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


def set_backend(name: str) -> None:
    """Select the kernel backend for all later calls.

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
    name = _check_name(name)
    module = _load(name)
    if module is None:
        raise ImportError(
            f"backend {name!r} is not available ({_failures.get(name, 'import failed')}); {_HOW[name]}"
        )
    _state["name"], _state["module"] = name, module


def _default() -> None:
    env = os.environ.get("FASTMLR_BACKEND", "").strip()
    if env:
        try:
            set_backend(env)
        except (ValueError, ImportError) as exc:
            raise type(exc)(f"FASTMLR_BACKEND={env}: {exc}") from None
        return
    for name in _NAMES:
        module = _load(name)
        if module is not None:
            _state["name"], _state["module"] = name, module
            return


def get_backend() -> str:
    """Name of the backend in use."""
    if _state["name"] is None:
        _default()
    return _state["name"]


def kernels():
    """The kernel module of the backend in use."""
    if _state["module"] is None:
        _default()
    return _state["module"]


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run a block under another backend, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@contextlib.contextmanager
def n_threads(count: int | None):
    """Context manager: run a block with at most ``count`` kernel threads, then restore.

    ``None`` leaves the thread count as it is.  Honoured by the Numba backend (through
    ``numba.set_num_threads``) and by the Cython backend (its OpenMP regions read the
    same setting).
    """
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise ValueError(f"n_threads is {count!r}; expected a positive integer or None")
    count = int(count)  # a NumPy integer too
    from . import _threads

    previous = _threads.get()
    _threads.set(count)
    try:
        yield
    finally:
        _threads.set(previous)
