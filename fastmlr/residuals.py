"""Residual sums of squares of every task under every component.

The one quantity behind classification, the E-step, the cluster variances and the
posterior.  The predictions ``X W^T`` are one BLAS product per chunk of rows (in the
data's precision); the ``residual_sums`` kernel then sums ``(y - x.w)^2`` per task in
float64.  Chunks bound the (rows, k) temporary by ``_config.BLOCK_BYTES``.
"""

from __future__ import annotations

import numpy as np

from . import _config
from .backend import kernels
from .tasks import chunk_bounds, slice_tasks

__all__ = ["task_sse", "class_sse"]


def task_sse(X, y, offsets, W) -> np.ndarray:
    """Residual sums of squares, shape (n, k), of a validated task set.

    Parameters
    ----------
    X : (N, d) float32 or float64, C-contiguous
    y : (N,) same dtype
    offsets : (n + 1,) int64
    W : (k, d) float array -- components (rows)

    Returns
    -------
    (n, k) float64 -- ``out[i, l] = ||y_i - X_i w_l||^2``
    """
    W = np.asarray(W)
    k = W.shape[0]
    Wt = np.ascontiguousarray(W.T, dtype=X.dtype)  # (d, k)
    n = offsets.size - 1
    out = np.empty((n, k))
    kern = kernels()
    rows = max(1, _config.BLOCK_BYTES // (X.itemsize * max(k, 1)))
    bounds = chunk_bounds(offsets, rows)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = slice_tasks(X, y, offsets, lo, hi)
        out[lo:hi] = kern.residual_sums(part.X @ Wt, part.y, part.offsets)
    return out


def class_sse(X, y, offsets, labels, W) -> np.ndarray:
    """Residual sum of squares of every class under its own component, shape (k,).

    ``out[l] = sum over tasks i with labels[i] == l of ||y_i - X_i w_l||^2``: the
    ``labeled_sse`` kernel scores each task under its own component only, in one pass
    over the rows (a k-th of the work of :func:`task_sse`, which scores every task
    under every component); the tasks' sums are then added per class in task order.

    Parameters
    ----------
    X : (N, d), y : (N,), offsets : (n + 1,) -- a validated task set
    labels : (n,) int in [0, k)
    W : (k, d) float array

    Returns
    -------
    (k,) float64
    """
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    per_task = kernels().labeled_sse(X, y, offsets, labels, np.ascontiguousarray(W, dtype=np.float64))
    return np.bincount(labels, weights=per_task, minlength=W.shape[0])
