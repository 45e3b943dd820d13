"""The kernels of ``kernels.py`` in plain NumPy/SciPy: the test oracle and the baseline.

Same names, same arguments, same results (within rounding) as ``kernels.py`` and
``_ckernels.pyx``.  Written the way a competent NumPy user would: vectorized
(``np.add.reduceat``, BLAS products, SciPy's hierarchical clustering), with no Python
loop over tasks or pairs, so that it is both obviously correct and a fair baseline for
the speed ratios.
"""

from __future__ import annotations

import ctypes

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

__all__ = ["group_means", "median_combine", "median_distances", "single_linkage", "average_linkage", "residual_sums",
           "weighted_residuals", "labeled_sse", "gather_rows", "task_gram", "columns_into_rows"]


def _segment_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums of ``values`` over consecutive row segments ``bounds[s]:bounds[s+1]`` (empty -> 0)."""
    m = bounds.size - 1
    out = np.zeros((m,) + values.shape[1:], dtype=np.float64)
    nonempty = bounds[1:] > bounds[:-1]
    if values.shape[0] and nonempty.any():
        starts = bounds[:-1][nonempty]
        out[nonempty] = np.add.reduceat(values.astype(np.float64, copy=False), starts, axis=0)
    return out


def _group_bounds(offsets: np.ndarray, G: int) -> np.ndarray:
    """Row boundaries of the G groups of every task, flattened: shape (n*G + 1,)."""
    start = offsets[:-1, None]
    t = np.diff(offsets)[:, None]
    g = np.arange(G)[None, :]
    lo = start + (g * t) // G
    return np.append(lo.ravel(), offsets[-1]).astype(np.int64)


def group_means(X, y, offsets, G):
    """Per-task means of y*x over G equal contiguous groups (see ``kernels.group_means``)."""
    n = offsets.size - 1
    bounds = _group_bounds(offsets, G)
    sums = _segment_sums(y[:, None] * X, bounds)
    sizes = np.diff(bounds).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(sizes[:, None] > 0, sums / sizes[:, None], 0.0)
    return means.reshape(n, G, X.shape[1]).astype(X.dtype)


def median_combine(S, s, row0, H):
    """One block of rows of the median-of-L distance matrix (see ``kernels.median_combine``)."""
    L, m, w = S.shape
    layers = (s[:, row0 : row0 + m, None] + s[:, None, row0:]) - S
    block = np.median(layers, axis=0)
    idx = np.arange(m)
    block[idx, idx] = 0.0
    H[row0 : row0 + m, row0:] = block


def median_distances(P, L):
    """The median-of-L distance matrix straight from its definition (the oracle).

    ``H[i, j] = median_l (P[i,l] - P[j,l]) . (P[i,l+L] - P[j,l+L])`` with an (L, n, n)
    temporary; the clustering stage computes the same by blocks of rows.
    """
    n = P.shape[0]
    layers = np.empty((L, n, n))
    for l in range(L):  # L is small: one BLAS product per l
        A = P[:, l, :]
        B = P[:, l + L, :]
        ab = np.einsum("ic,ic->i", A, B)
        C = A @ B.T
        layers[l] = ab[:, None] + ab[None, :] - C - C.T
    H = np.median(layers, axis=0)
    H = 0.5 * (H + H.T)
    np.fill_diagonal(H, 0.0)
    return H


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber labels by first appearance (the first task gets 0)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.ravel()]


def apply_merges(Z, n, m):
    """Cluster of each of n points after the first m merges of a SciPy linkage matrix Z.

    Merge i joins clusters ``Z[i, 0]`` and ``Z[i, 1]`` into cluster ``n + i``; every
    point's cluster is found by pointer jumping (O(n log n), no loop over points).
    """
    parent = np.arange(2 * n - 1)
    merged = np.arange(n, n + m)
    parent[Z[:m, 0].astype(np.int64)] = merged
    parent[Z[:m, 1].astype(np.int64)] = merged
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent[:n]
        parent = nxt


def cut_linkage(H, k, method):
    """Agglomerative clustering of H with SciPy, cut after its first n - k merges.

    H may hold negative values: it is shifted by a constant to be non-negative, which
    changes no merge of single or average linkage (both compare sums or minima of
    dissimilarities, and a common shift moves them all alike).
    """
    n = H.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if n == 1 or k == 1:
        return np.zeros(n, dtype=np.int64)
    condensed = squareform(H, checks=False)
    condensed = condensed - min(0.0, float(condensed.min()))
    Z = linkage(condensed, method=method)
    return _canonical(apply_merges(Z, n, n - k))


def single_linkage(H, k):
    """Single-linkage clustering into k clusters (see ``kernels.single_linkage``)."""
    return cut_linkage(H, k, "single")


def average_linkage(H, k):
    """Average-linkage (UPGMA) clustering into k clusters (see ``kernels.average_linkage``).

    SciPy's, on a condensed copy: unlike the compiled kernels, H is left as it is.
    """
    return cut_linkage(H, k, "average")


def residual_sums(P, y, offsets):
    """Residual sums of squares per task from predictions (see ``kernels.residual_sums``)."""
    resid = y[:, None].astype(np.float64) - P.astype(np.float64)
    return _segment_sums(resid * resid, offsets)


def weighted_residuals(P, y, offsets, R):
    """Predictions turned into residuals weighted by their task's responsibilities, in
    place (see ``kernels.weighted_residuals``)."""
    rho = np.repeat(np.asarray(R, dtype=np.float64), np.diff(offsets), axis=0)
    P[...] = ((y[:, None].astype(np.float64) - P.astype(np.float64)) * rho).astype(P.dtype)


def labeled_sse(X, y, offsets, labels, W):
    """Residual sum of squares of every task under its own component (see
    ``kernels.labeled_sse``): every row's prediction under its task's component."""
    t = np.diff(offsets)
    w = np.repeat(np.asarray(W, dtype=np.float64)[labels], t, axis=0)  # (N, d)
    resid = y.astype(np.float64) - np.einsum("ij,ij->i", X.astype(np.float64), w)
    return _segment_sums(resid * resid, offsets)


def gather_rows(X, y, offsets, tasks, weights):
    """Rows of the listed tasks scaled by sqrt(weight) (see ``kernels.gather_rows``)."""
    t = offsets[tasks + 1] - offsets[tasks]
    rows = np.repeat(offsets[tasks] - np.cumsum(t) + t, t) + np.arange(int(t.sum()))
    sw = np.repeat(np.sqrt(weights), t)
    Xg = (X[rows] * sw[:, None]).astype(X.dtype, copy=False)
    yg = (y[rows] * sw).astype(X.dtype, copy=False)
    return Xg, yg


def task_gram(X, y, offsets):
    """Per-task X_i^T X_i (upper triangle packed row by row, as ``np.triu_indices``),
    X_i^T y_i and y_i^T y_i, float64: one batched matrix product per distinct task size."""
    n = offsets.size - 1
    d = X.shape[1]
    iu, ju = np.triu_indices(d)
    sizes = np.diff(offsets)
    A = np.zeros((n, iu.size))
    b = np.zeros((n, d))
    c = np.zeros(n)
    for t in np.unique(sizes):
        if t == 0:
            continue
        idx = np.flatnonzero(sizes == t)
        rows = offsets[idx][:, None] + np.arange(t)
        Xg = X[rows].astype(np.float64, copy=False)  # (m, t, d)
        yg = y[rows].astype(np.float64, copy=False)  # (m, t)
        XgT = Xg.transpose(0, 2, 1)
        A[idx] = np.matmul(XgT, Xg)[:, iu, ju]
        b[idx] = np.matmul(XgT, yg[:, :, None])[:, :, 0]
        c[idx] = np.einsum("it,it->i", yg, yg)
    return A, b, c


def columns_into_rows(X, addresses):
    """Copy the columns at ``addresses`` into the rows of X; True if every value is
    finite (see ``kernels.columns_into_rows``)."""
    n, d = X.shape
    cell = ctypes.c_float if X.dtype == np.float32 else ctypes.c_double
    for j in range(d):
        X[:, j] = np.ctypeslib.as_array((cell * n).from_address(int(addresses[j])))
    return bool(np.isfinite(X).all())
