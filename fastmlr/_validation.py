"""Argument checks and guards shared by the whole library.

* :func:`check_int` and :func:`check_real` check a scalar argument: Python and NumPy
  integers (and, for :func:`check_real`, floats of any width) are accepted, ``bool``
  never is.  A value of the wrong type raises :class:`ArgumentTypeError` (both a
  ``TypeError`` and a ``ValueError``); a value out of range raises ``ValueError``.
  Both messages name the argument, show the value and say what was expected.
* :func:`check_work` refuses, *before allocating*, a call whose working memory would
  exceed ``_config.MAX_WORK_BYTES``, saying how much it would need and which option
  avoids it.
* :func:`check_sums` refuses a result whose sums overflowed: finite inputs of huge
  magnitude (|x| ~ 1e150 and above, or ~ 1e19 for float32) make squares overflow, and
  an inf or NaN that slipped into an estimate would otherwise be returned silently.
* :func:`check_params` checks the parameters of a mixture (W, s2, p) against the data's
  dimension; a component that cannot be estimated from its data is announced by
  :class:`FallbackWarning`.
* :func:`quiet` runs a public function with NumPy's floating-point warnings off: every
  overflow they would announce is detected from the results (:func:`check_sums`) and
  reported as one error, so no ``RuntimeWarning`` reaches the caller first.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import sys

import numpy as np

from . import _config

__all__ = ["ArgumentTypeError", "FallbackWarning", "check_int", "check_real", "check_work", "check_sums",
           "check_params", "quiet", "user_stacklevel"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a float or a bool where an integer is expected,
    text where a number is).  Both a ``TypeError`` and a ``ValueError``: code that
    caught either for a bad argument keeps working."""


class FallbackWarning(RuntimeWarning):
    """A component could not be estimated from its data and kept its previous value."""


def _shown(value) -> str:
    """``value`` as the message shows it: NumPy scalars by their value, with the type."""
    if isinstance(value, np.generic):
        return f"{value.item()!r} ({type(value).__name__})"
    return f"{value!r} ({type(value).__name__})"


def _int_words(low, high) -> str:
    if low is not None and high is not None:
        return f"an integer between {low} and {high}"
    if low == 0:
        return "a non-negative integer"
    if low == 1:
        return "a positive integer"
    if low is not None:
        return f"an integer >= {low}"
    if high is not None:
        return f"an integer <= {high}"
    return "an integer"


def check_int(value, name: str, *, low=None, high=None, expected: str | None = None) -> int:
    """``value`` as a Python ``int``, or an error naming ``name``.

    Parameters
    ----------
    value : the argument -- an ``int`` or a NumPy integer (``bool`` is refused)
    name : str -- the argument's name in messages
    low, high : int, optional -- inclusive bounds
    expected : str, optional -- what the messages say was expected (default from the bounds)

    Raises
    ------
    ArgumentTypeError -- not an integer (a float, even 2.0; a bool; text; None)
    ValueError -- outside ``[low, high]``
    """
    words = expected or _int_words(low, high)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ArgumentTypeError(f"{name} must be {words}, but {name} is {_shown(value)}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} is {v}; expected {words}")
    return v


def _real_words(low, high, low_open, finite) -> str:
    kind = "a finite number" if finite else "a number"
    if low is not None and high is not None:
        return f"{kind} between {low} and {high}"
    if low == 0:
        return f"a positive {kind[2:]}" if low_open else f"a non-negative {kind[2:]}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def check_real(value, name: str, *, low=None, high=None, low_open: bool = False, finite: bool = True,
               expected: str | None = None) -> float:
    """``value`` as a Python ``float``, or an error naming ``name``.

    Parameters
    ----------
    value : the argument -- an ``int``, a ``float`` or a NumPy integer or floating
        scalar of any width (``bool`` is refused)
    name : str -- the argument's name in messages
    low, high : number, optional -- bounds (``high`` inclusive; ``low`` inclusive unless
        ``low_open``)
    finite : bool -- refuse NaN and infinities
    expected : str, optional -- what the messages say was expected (default from the bounds)

    Raises
    ------
    ArgumentTypeError -- not a real number (a bool, text, a complex number, an array)
    ValueError -- NaN or infinite (when ``finite``), or out of range
    """
    words = expected or _real_words(low, high, low_open, finite)
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating))):
        raise ArgumentTypeError(f"{name} must be {words}, but {name} is {_shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond float's range
        v = math.copysign(math.inf, value)
    bad = (math.isnan(v) or (finite and math.isinf(v)) or (low is not None and (v <= low if low_open else v < low))
           or (high is not None and v > high))
    if bad:
        raise ValueError(f"{name} is {value.item() if isinstance(value, np.generic) else value!r}; expected {words}")
    return v


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_work(nbytes, what: str, avoid: str) -> None:
    """Raise ``MemoryError`` if ``nbytes`` of working memory exceed the limit.

    Parameters
    ----------
    nbytes : int or float -- the memory the call would allocate
    what : str -- what would be allocated, e.g. "a (k, d, d) = (10, 20000, 20000) array";
        the message reads "<what> needs <size>", or ``what`` places the size itself
        with ``{size}`` ("an n x n matrix of {size}")
    avoid : str -- how the caller can stay under the limit
    """
    limit = _config.MAX_WORK_BYTES
    if nbytes > limit:
        size = _gib(nbytes)
        head = what.replace("{size}", size) if "{size}" in what else f"{what} needs {size}"
        raise MemoryError(f"{head}, over the {_gib(limit)} limit (fastmlr._config.MAX_WORK_BYTES); {avoid}")


def check_sums(arr: np.ndarray, what: str, dtype=np.float64) -> None:
    """Raise ``ValueError`` if ``arr``, computed from finite inputs, holds NaN or inf.

    ``dtype`` is the precision the sums were formed in (float32 data goes through BLAS
    in float32, whose squares overflow from |x| around 1e19 on)."""
    if not np.all(np.isfinite(arr)):
        name = np.dtype(dtype).name
        hint = "; or pass float64 arrays, whose sums overflow only near |x| = 1e150" if np.dtype(dtype) == np.float32 else ""
        raise ValueError(
            f"{what} overflowed {name}: X and y are too large in magnitude for sums of "
            f"their squares; rescale X and y (e.g. divide them by their largest absolute "
            f"value) and scale the estimates back{hint}"
        )


def check_params(W, s2, p, d: int, *, s2_name: str = "s2"):
    """Check the parameters of a mixture of k regressions in d dimensions.

    Parameters
    ----------
    W : array_like, shape (k, d) -- components (rows), real and finite
    s2 : array_like, shape (k,) -- noise variances, finite and > 0
    p : array_like, shape (k,), or None -- weights, finite and >= 0 with a positive sum
    d : int -- the dimension of the data
    s2_name : str -- how the message names ``s2``

    Returns
    -------
    W : (k, d) float64, C-contiguous
    s2 : (k,) float64
    p : (k,) float64 normalized to sum to one, or None
    """
    W = np.asarray(W)
    if W.dtype.kind not in "fiu" or W.ndim != 2 or W.shape[1] != d or W.shape[0] < 1:
        raise ValueError(f"W has shape {W.shape} and dtype {W.dtype}; expected a real (k, d) = (k, {d}) array")
    W = np.ascontiguousarray(W, dtype=np.float64)
    if not np.all(np.isfinite(W)):
        where = np.argwhere(~np.isfinite(W))[0]
        raise ValueError(f"W contains NaN or inf (first at index {tuple(int(i) for i in where)}); "
                         f"remove or impute non-finite values first")
    k = W.shape[0]
    s2 = np.asarray(s2, dtype=np.float64) if np.asarray(s2).dtype.kind in "fiu" else None
    if s2 is None or s2.shape != (k,):
        raise ValueError(f"{s2_name} must be a real array of shape ({k},), one variance per row of W")
    if not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
        raise ValueError(f"{s2_name} must hold finite positive variances, got {s2}")
    if p is not None:
        p = np.asarray(p, dtype=np.float64) if np.asarray(p).dtype.kind in "fiu" else None
        if p is None or p.shape != (k,):
            raise ValueError(f"p must be a real array of shape ({k},), one weight per row of W")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"p must hold finite non-negative weights with a positive sum, got {p}")
        p = p / p.sum()
    return W, s2, p


def quiet(fn):
    """Run ``fn`` with NumPy's floating-point warnings off (``np.errstate(all="ignore")``).

    For public functions whose every overflow is detected from their results: the
    caller gets one error that says what overflowed, never ``RuntimeWarning`` lines
    before it.  The setting is per thread (and per context): work handed to other
    threads sets its own.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    wrapper.__quiet__ = True
    return wrapper


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function
    point at the first frame outside fastmlr (the user's call), however many of
    fastmlr's functions and wrappers lie between."""
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level
