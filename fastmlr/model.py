"""Model files: a fitted mixture in one ``.npz`` with a format version.

The file holds the arrays ``W`` (k, d), ``s2`` (k,), ``p`` (k,), ``transform`` (d, d),
the diagnostics as a JSON string (an object), and ``format`` / ``format_version`` (one
string, one integer).  The weights p are a probability vector: their sum is 1 within
:data:`P_SUM_TOL` times k.  It is written to a temporary file and renamed, so a failed
write never leaves half a model; a file with any field malformed is refused on reading
with one error that names it.  Reading touches only these seven members, and checks
each one's declared shape against the data it holds before reading it
(:mod:`fastmlr._npz`): other members cost nothing, and a header claiming more than the
file holds is refused as damage.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from ._atomic import atomic_open
from ._npz import ZIP_ERRORS, MemberError, read_members
from ._validation import check_params, quiet

__all__ = ["Model", "save_model", "load_model", "FORMAT", "FORMAT_VERSION", "P_SUM_TOL"]

class Model(NamedTuple):
    """A fitted mixture of linear regressions.

    Attributes
    ----------
    W : (k, d) float64 -- regression vectors (rows), in the original coordinates of x
    s2 : (k,) float64 -- noise variances, maximum likelihood (``RSS_l / rows_l`` at the EM
        optimum, as flexmix estimates them; :func:`fastmlr.classify_tasks` divides by
        ``rows_l - d`` as Algorithm 4 does, a factor ``rows_l / (rows_l - d)`` larger)
    p : (k,) float64 -- mixing weights
    transform : (d, d) float64 -- the whitening T used for the spectral start (identity
        if none)
    diagnostics : dict -- roles, starts, EM history, choice of k, times (JSON-friendly)
    """

    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray
    transform: np.ndarray
    diagnostics: dict


FORMAT = "fastmlr-model"
FORMAT_VERSION = 1

#: The weights p of a model must sum to 1 within ``P_SUM_TOL * k``: rounding moves a
#: sum of k weights by about k * 1.1e-16, so this leaves room for weights written with
#: nine or more significant digits and refuses anything that is not a probability vector.
P_SUM_TOL = 1e-9

#: The members a model file defines; no other member is read.
_MEMBERS = ("format", "format_version", "W", "s2", "p", "transform", "diagnostics")


def _check_p_sum(p, name):
    """ValueError unless the weights ``p`` (validated, non-negative) sum to 1 within rounding."""
    total = float(np.sum(p))
    if not abs(total - 1.0) <= P_SUM_TOL * p.size:
        raise ValueError(f"{name} sums to {total!r}; expected weights that sum to 1 (within {P_SUM_TOL:g} * k)")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


@quiet
def save_model(path, model: Model) -> None:
    """Write ``model`` to ``path`` (one ``.npz`` file; replaced whole or not at all).

    Parameters
    ----------
    path : str or os.PathLike
    model : Model -- as returned by :func:`fastmlr.fit`; ``p`` summing to 1 (within
        :data:`P_SUM_TOL` * k), ``transform`` finite (d, d), ``diagnostics`` a
        JSON-friendly dict (or None)

    Raises
    ------
    TypeError
        ``model`` is not a Model, or its diagnostics are not a dict of JSON values.
    ValueError
        A parameter has the wrong shape or a non-finite value, or p does not sum to 1.
    OSError
        ``path`` cannot be written (a directory, no such directory, ...).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a fastmlr Model (from fastmlr.fit), got {type(model).__name__}")
    W, s2, _ = check_params(model.W, model.s2, model.p, np.asarray(model.W).shape[1])
    p = np.asarray(model.p, dtype=np.float64)  # validated above; stored as given
    _check_p_sum(p, "model.p")
    d = W.shape[1]
    T = _check_transform(model.transform, d, "model.transform")
    diagnostics = {} if model.diagnostics is None else model.diagnostics
    if not isinstance(diagnostics, dict):
        raise TypeError(f"model.diagnostics is a {type(diagnostics).__name__}; expected a dict (or None)")
    try:
        diag = json.dumps(diagnostics, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"model.diagnostics cannot be stored as JSON ({exc})") from None
    with atomic_open(path, "wb") as fh:
        np.savez(fh, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION),
                 W=W, s2=s2, p=p, transform=T, diagnostics=np.array(diag))


def _check_transform(T, d, name):
    """``T`` as a finite (d, d) float64 array, or a ValueError naming ``name``."""
    T = np.asarray(T)
    if T.dtype.kind not in "fiu" or T.shape != (d, d):
        raise ValueError(f"{name} has shape {T.shape} and dtype {T.dtype}; expected a real ({d}, {d}) array")
    T = T.astype(np.float64)
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} has a non-finite value; expected finite numbers")
    return T


def _scalar(data, key, kinds):
    """The 0-d entry ``key`` of a model file as a Python value, or None if malformed."""
    value = data[key]
    if not isinstance(value, np.ndarray) or value.ndim != 0 or value.dtype.kind not in kinds:
        return None
    return value.item()


def _read(path, keys, what):
    """``read_members`` with its errors as one ValueError naming the file."""
    try:
        return read_members(path, keys)
    except MemberError as exc:
        if exc.over_limit:
            raise ValueError(f"{path} is too large to read as a fastmlr model file: {exc}") from None
        raise ValueError(f"{path} is {what} fastmlr model file: {exc}") from None
    except ZIP_ERRORS as exc:
        msg = str(exc).replace("\n", " ")
        raise ValueError(f"{path} is not a readable fastmlr model file ({type(exc).__name__}: {msg})") from None


@quiet
def load_model(path) -> Model:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a fastmlr model, is damaged (a member whose header declares more
        data than it holds, weights that do not sum to 1, ...), or has an unknown format
        version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    data = _read(path, _MEMBERS[:1], "not a readable")  # the marker first: any other file is not read further
    if "format" not in data or _scalar(data, "format", "U") != FORMAT:
        raise ValueError(f"{path} is not a fastmlr model file (no '{FORMAT}' marker)")
    data.update(_read(path, _MEMBERS[1:], "a damaged"))
    if "format_version" not in data:
        raise ValueError(f"{path} is a damaged fastmlr model file: missing format_version")
    version = _scalar(data, "format_version", "iu")
    if version is None:
        v = data["format_version"]
        raise ValueError(f"{path} is a damaged fastmlr model file: format_version has shape {v.shape} and "
                         f"dtype {v.dtype}; expected one integer")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has model format version {version}; this fastmlr reads version {FORMAT_VERSION}")
    missing = [key for key in ("W", "s2", "p", "transform", "diagnostics") if key not in data]
    if missing:
        raise ValueError(f"{path} is a damaged fastmlr model file: missing {', '.join(missing)}")
    try:
        W, s2, _ = check_params(data["W"], data["s2"], data["p"], np.asarray(data["W"]).shape[-1])
        p = np.asarray(data["p"], dtype=np.float64)
        _check_p_sum(p, "p")
        T = _check_transform(data["transform"], W.shape[1], "transform")
        text = _scalar(data, "diagnostics", "U")
        if text is None:
            raise ValueError("diagnostics is not one JSON string")
        diagnostics = json.loads(text)
        if not isinstance(diagnostics, dict):
            raise ValueError(f"diagnostics is a JSON {type(diagnostics).__name__}; expected a JSON object")
    except (ValueError, TypeError, IndexError, OverflowError, RecursionError) as exc:
        raise ValueError(f"{path} is a damaged fastmlr model file ({exc})") from None
    return Model(W, s2, p, T, diagnostics)
