"""Model files: a fitted mixture in one ``.npz`` with a format version.

The file holds the arrays ``W`` (k, d), ``s2`` (k,), ``p`` (k,), ``transform`` (d, d),
the diagnostics as a JSON string, and ``format`` / ``format_version``.  It is written
to a temporary file and renamed, so a failed write never leaves half a model.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ._atomic import atomic_open
from .classify import check_params
from .fit import Model

__all__ = ["save_model", "load_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastmlr-model"
FORMAT_VERSION = 1


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def save_model(path, model: Model) -> None:
    """Write ``model`` to ``path`` (one ``.npz`` file; replaced whole or not at all).

    Parameters
    ----------
    path : str or os.PathLike
    model : Model -- as returned by :func:`fastmlr.fit`
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a fastmlr Model (from fastmlr.fit), got {type(model).__name__}")
    W, s2, _ = check_params(model.W, model.s2, model.p, np.asarray(model.W).shape[1])
    p = np.asarray(model.p, dtype=np.float64)  # validated above; stored as given
    d = W.shape[1]
    T = np.asarray(model.transform, dtype=np.float64)
    if T.shape != (d, d):
        raise ValueError(f"model.transform has shape {T.shape}; expected ({d}, {d})")
    diag = json.dumps(model.diagnostics or {}, default=_json_default)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION),
                 W=W, s2=s2, p=p, transform=T, diagnostics=np.array(diag))


def load_model(path) -> Model:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a fastmlr model, is damaged, or has an unknown format version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {key: z[key] for key in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError) as exc:  # NotImplementedError: a damaged zip header
        raise ValueError(f"{path} is not a readable fastmlr model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or str(data.get("format", "")) != FORMAT:
        raise ValueError(f"{path} is not a fastmlr model file (no '{FORMAT}' marker)")
    version = int(data.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has model format version {version}; this fastmlr reads version {FORMAT_VERSION}")
    missing = [key for key in ("W", "s2", "p", "transform", "diagnostics") if key not in data]
    if missing:
        raise ValueError(f"{path} is a damaged fastmlr model file: missing {', '.join(missing)}")
    try:
        W, s2, _ = check_params(data["W"], data["s2"], data["p"], np.asarray(data["W"]).shape[-1])
        p = np.asarray(data["p"], dtype=np.float64)
        T = np.asarray(data["transform"], dtype=np.float64)
        if T.shape != (W.shape[1], W.shape[1]):
            raise ValueError(f"transform has shape {T.shape}")
        diagnostics = json.loads(str(data["diagnostics"]))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path} is a damaged fastmlr model file ({exc})") from None
    return Model(W, s2, p, T, diagnostics)
