"""Guards that refuse a call instead of letting it fail badly.

* :func:`check_work` refuses, *before allocating*, a call whose working memory would
  exceed ``_config.MAX_WORK_BYTES``, saying how much it would need and which option
  avoids it.
* :func:`check_sums` refuses a result whose sums overflowed: finite inputs of huge
  magnitude (|x| ~ 1e150 and above, or ~ 1e19 for float32) make squares overflow, and an inf or NaN
  that slipped into an estimate would otherwise be returned silently.
"""

from __future__ import annotations

import numpy as np

from . import _config

__all__ = ["check_work", "check_sums"]


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_work(nbytes, what: str, avoid: str) -> None:
    """Raise ``MemoryError`` if ``nbytes`` of working memory exceed the limit.

    Parameters
    ----------
    nbytes : int or float -- the memory the call would allocate
    what : str -- what would be allocated, e.g. "a (k, d, d) = (10, 20000, 20000) array"
    avoid : str -- how the caller can stay under the limit
    """
    limit = _config.MAX_WORK_BYTES
    if nbytes > limit:
        raise MemoryError(
            f"{what} needs {_gib(nbytes)}, over the {_gib(limit)} limit "
            f"(fastmlr._config.MAX_WORK_BYTES); {avoid}"
        )


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
