"""Residual sums of squares of every task under every component.

The one quantity behind classification, the E-step, the cluster variances and the
posterior.  The predictions ``X W^T`` are one BLAS product per chunk of rows (in the
data's precision); the ``residual_sums`` kernel then sums ``(y - x.w)^2`` per task in
float64.  Chunks bound the (rows, k) temporary by ``_config.BLOCK_BYTES``.
"""

from __future__ import annotations

import numpy as np

from . import _config
from ._parallel import run_each
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

    ``out[l] = sum over tasks i with labels[i] == l of ||y_i - X_i w_l||^2``: a k-th of
    the work of :func:`task_sse`, which scores every task under every component.  A
    class's rows are gathered in pieces of about ``_config.CACHE_BLOCK_BYTES`` (the
    ``gather_rows`` kernel), each predicted by one BLAS product in the data's
    precision and its residuals summed in float64; the classes run on several threads.

    Parameters
    ----------
    X : (N, d), y : (N,), offsets : (n + 1,) -- a validated task set
    labels : (n,) int in [0, k)
    W : (k, d) float array

    Returns
    -------
    (k,) float64
    """
    k = W.shape[0]
    W = np.asarray(W, dtype=X.dtype)
    out = np.zeros(k)
    sizes = np.diff(offsets)
    order = np.argsort(labels, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(labels, minlength=k))[:-1])
    step = max(1, _config.CACHE_BLOCK_BYTES // (X.shape[1] * X.itemsize))
    gather = kernels().gather_rows

    def one(l):
        tasks = members[l]
        cuts = chunk_bounds(np.concatenate([[0], np.cumsum(sizes[tasks])]), step)
        total = 0.0
        for a, b in zip(cuts[:-1], cuts[1:]):
            Xg, yg = gather(X, y, offsets, tasks[a:b], np.ones(b - a))
            r = yg.astype(np.float64) - Xg @ W[l]
            total += float(r @ r)
        out[l] = total

    run_each(one, [l for l in range(k) if members[l].size and sizes[members[l]].sum() > 0])
    return out
