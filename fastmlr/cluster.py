"""Stage 2 -- clustering the heavy tasks and first estimates (Algorithm 3 of the paper).

Each heavy task is split into 2L equal groups of rows; g_i^(l) = U^T (mean of y*x over
group l).  ``H_ij = median_l (g_i^l - g_j^l) . (g_i^(l+L) - g_j^(l+L))`` estimates
``||U^T (beta_i - beta_j)||^2`` without the noise bias of a plain squared distance,
and the tasks are clustered with H as a dissimilarity.

H can be negative: two tasks of the same component have expected H of zero, and
the estimate scatters around it.  Both linkages are O(n_H^2) kernels that take H
exactly as computed (average and single linkage compare means and minima of
dissimilarities, which a common shift moves alike, so negative values need no
shift): ``average_linkage`` by the nearest-neighbour chain, with H as its working
matrix, and ``single_linkage`` by a minimum spanning tree.  (The NumPy backend's
SciPy linkage wants non-negative values and is given H shifted by a constant.)

The three steps: per chunk of whole tasks, :class:`GroupMeans` (each task's 2L group
means of y*x in U coordinates, small); combine by ``+`` (concatenation: clustering
needs every pair, so the heavy set's means are gathered); finalize by H, the linkage
and each cluster's w~ and r~^2 (the variances read the heavy set once more, each
task under its own cluster).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _config
import warnings

from ._parallel import one_blas_thread
from ._validation import check_int, check_sums, check_work, quiet, user_stacklevel
from .backend import kernels
from .residuals import class_sse
from .stream import collect
from .tasks import check_finite, check_finite_through, check_k, takes_tasks

__all__ = ["ClusterResult", "GroupMeans", "group_means", "cluster_tasks", "distance_matrix", "LINKAGES"]

LINKAGES = ("average", "single")


class ClusterResult(NamedTuple):
    """Output of :func:`cluster_tasks`.

    Attributes
    ----------
    labels : (n_H,) int64 -- cluster of each heavy task, numbered by first appearance
    W : (k, d) float64 -- w~_l, the cluster means of y*x projected on U
    s2 : (k,) float64 -- noise variances r~_l^2: the mean squared residual
        ``RSS_l / rows_l`` of the cluster's rows under w~_l
    p : (k,) float64 -- fraction of heavy tasks in each cluster
    """

    labels: np.ndarray
    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray

    @property
    def r2(self) -> np.ndarray:
        """The earlier name of :attr:`s2` (deprecated)."""
        warnings.warn("ClusterResult.r2 is deprecated; the noise variance is called s2", DeprecationWarning,
                      stacklevel=user_stacklevel())
        return self.s2


class GroupMeans(NamedTuple):
    """Statistic of the clustering stage for a chunk of whole tasks.

    Attributes
    ----------
    P : (n, 2L, r) float64 -- ``U^T`` times the mean of y*x over each of a task's 2L
        groups of rows
    sizes : (n,) int64 -- rows of each task

    Statistics of consecutive chunks combine by ``+``, which concatenates them (in
    task order): they are small, and clustering needs all of them together.

    Examples
    --------
    >>> import numpy as np
    >>> a = GroupMeans(np.zeros((3, 2, 1)), np.full(3, 4))
    >>> (a + a).P.shape
    (6, 2, 1)
    """

    P: np.ndarray
    sizes: np.ndarray

    def __add__(self, other):  # type: ignore[override]
        return GroupMeans(np.concatenate([self.P, other.P]), np.concatenate([self.sizes, other.sizes]))


def _check_U(U, d: int) -> np.ndarray:
    U = np.asarray(U)
    if U.dtype.kind not in "fiu" or U.ndim != 2 or U.shape[0] != d or U.shape[1] < 1:
        raise ValueError(f"U has shape {U.shape} and dtype {U.dtype}; expected a real (d, r) = ({d}, r) array")
    U = np.ascontiguousarray(U, dtype=np.float64)
    check_finite(U, "U")
    return U


def _check_L(L, sizes: np.ndarray) -> int:
    if L is None:
        L = _config.DEFAULT_L
    L = check_int(L, "L", low=1, expected="a positive integer number of median pairs")
    tmin = int(sizes.min())
    if tmin < 2 * L:
        raise ValueError(
            f"L is {L} but the smallest heavy task has {tmin} rows; clustering splits every "
            f"task into 2L = {2 * L} groups, so use L <= {tmin // 2} or larger tasks"
        )
    return L


def _check_distance_work(n: int) -> None:
    check_work(8.0 * n * n, f"clustering {n} heavy tasks needs an {n} x {n} distance matrix of {{size}}",
               "pass fewer heavy tasks (a few thousand suffice: the paper needs n_H of order k log k)")


@quiet
@takes_tasks
def distance_matrix(tasks, U, *, L=None):
    """The median-of-L distance matrix H of Algorithm 3, and the projected group means.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        The heavy task set; every task needs at least 2L rows.
    U : (d, r) float array -- the subspace (usually from :func:`estimate_subspace`)
    L : int, optional -- median pairs (default ``_config.DEFAULT_L``)

    Returns
    -------
    H : (n_H, n_H) float64
    P : (n_H, 2L, r) float64 -- U^T times each group's mean of y*x

    See Also
    --------
    cluster_tasks : H clustered, and each cluster's estimates.

    Examples
    --------
    >>> import fastmlr
    >>> from fastmlr.cluster import distance_matrix
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> H, P = distance_matrix(fastmlr.sample_tasks(W, s2, p, 16, n_tasks=5, seed=1), W.T)
    >>> H.shape, P.shape
    ((5, 5), (5, 2, 2))
    """
    ts = collect(tasks, min_size=2, role="heavy tasks", finite=False)  # checked in group_means
    U = _check_U(U, ts.X.shape[1])
    sizes = np.diff(ts.offsets)
    L = _check_L(L, sizes)
    _check_distance_work(sizes.size)
    return _distances(group_means(ts, U, L), L)


def group_means(ts, U, L) -> GroupMeans:
    """:class:`GroupMeans` of a chunk of whole tasks, validated but for its values.

    Every value of X and y reaches the group means (as y*x), so NaN and inf are caught
    from them (:func:`fastmlr.tasks.check_finite_through`): the stage reads X once.

    Parameters
    ----------
    ts : TaskSet -- ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,), tasks of >= 2L rows
    U : (d, r) float64
    L : int

    Returns
    -------
    GroupMeans
    """
    with np.errstate(over="ignore", invalid="ignore"):  # reported by the check below
        G = kernels().group_means(ts.X, ts.y, ts.offsets, 2 * L)  # (n, 2L, d)
    check_finite_through(G, ts.X, ts.y, "the group means of y*x")
    P = np.ascontiguousarray(G.astype(np.float64, copy=False) @ U)  # (n, 2L, r)
    check_sums(P, "the projected group means")
    return GroupMeans(P, np.diff(ts.offsets))


def _distances(gm: GroupMeans, L):
    """H (n, n) from the gathered group means, with P (n, 2L, r)."""
    P = gm.P
    with np.errstate(over="ignore", invalid="ignore"):  # reported by the check below
        H = median_distance_matrix(P, L)
    # every entry of H and every partial sum behind it is at most 4 r max|P|^2 in
    # magnitude (s_i + s_j - a_i.b_j - b_i.a_j, inner products of r terms): when that
    # bound is finite H cannot have overflowed, and its n_H^2 entries are not read again
    m = float(np.abs(P).max()) if P.size else 0.0
    if not 4.0 * P.shape[-1] * m * m < np.finfo(np.float64).max:
        check_sums(H, "the distance matrix H")
    return H, P


def median_distance_matrix(P, L):
    """H of Algorithm 3 from projected group means, in O(n^2) memory and BLAS time.

    ``H[i, j] = median_l (a_i - a_j).(b_i - b_j)`` with ``a = P[:, l]``,
    ``b = P[:, l + L]``.  Expanded, the cross term of every layer is one matrix
    product ``[a b] [b a]^T``; blocks of rows are computed for the upper triangle
    (columns from the block's first row on) and the kernel ``median_combine`` takes
    the median over l; the lower triangle is then copied from the upper, so H is
    exactly symmetric with a zero diagonal.

    Parameters
    ----------
    P : (n, 2L, r) float64
    L : int

    Returns
    -------
    H : (n, n) float64
    """
    n, _, r = P.shape
    A, B = P[:, :L, :], P[:, L:, :]
    s = np.ascontiguousarray(np.einsum("ilr,ilr->li", A, B))  # (L, n)
    AB = np.ascontiguousarray(np.concatenate([A, B], axis=2).transpose(1, 0, 2))  # (L, n, 2r)
    BA = np.ascontiguousarray(np.concatenate([B, A], axis=2).transpose(1, 0, 2))
    H = np.empty((n, n))
    rows = max(16, _config.BLOCK_BYTES // (8 * L * max(n, 1)))
    kern = kernels()
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        S = np.empty((L, r1 - r0, n - r0))
        for l in range(L):
            np.matmul(AB[l, r0:r1], BA[l, r0:].T, out=S[l])
        kern.median_combine(S, s, r0, H)
        H[r1:, r0:r1] = H[r0:r1, r1:].T
        D = H[r0:r1, r0:r1]
        low = np.tril_indices(r1 - r0, -1)
        D[low] = D.T[low]
    return H


@quiet
@one_blas_thread
@takes_tasks
def cluster_tasks(tasks, U, k, *, L=None, linkage=None) -> ClusterResult:
    """Cluster heavy tasks in the subspace U and estimate each cluster (Algorithm 3).

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        The heavy tasks: ``X`` (N, d), ``y`` (N,), ``offsets`` (n_H + 1,); each task
        needs at least 2L rows.  A stream is gathered in memory, as H needs all of it.
    U : (d, r) float array
        Orthonormal basis of the estimated subspace.
    k : int, 1 <= k <= n_H
    L : int, optional
        Median pairs: every task is split into 2L groups.  Default 1, which measured
        best at the demo's sizes (128-256 rows per task); larger L trades the variance
        of each estimate for robustness to outliers and needs more rows per task.
    linkage : {"average", "single"}, optional
        "average" (default: it measured more accurate), by an O(n_H^2)
        nearest-neighbour-chain kernel, or "single", the paper's, by an O(n_H^2)
        minimum-spanning-tree kernel.

    Returns
    -------
    ClusterResult
        ``labels`` (n_H,), ``W`` (k, d), ``s2`` (k,), ``p`` (k,).

    See Also
    --------
    estimate_subspace : the subspace U.
    classify_tasks : the next stage, started from ``W`` and ``s2``.
    fastmlr.cluster.distance_matrix : the matrix H alone.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> heavy = fastmlr.sample_tasks(W, s2, p, 64, n_tasks=20, seed=1)
    >>> c = fastmlr.cluster_tasks(heavy, W.T, 2)
    >>> c.W.shape, fastmlr.clustering_accuracy(c.labels, heavy.z)
    ((2, 4), 1.0)
    """
    ts = collect(tasks, min_size=2, role="heavy tasks", finite=False)  # checked in group_means
    n = ts.offsets.size - 1
    U = _check_U(U, ts.X.shape[1])
    k = check_k(k, upper=n, what=f"(the number of heavy tasks)")
    sizes = np.diff(ts.offsets)
    L = _check_L(L, sizes)
    if linkage is None:
        linkage = _config.DEFAULT_LINKAGE
    if not isinstance(linkage, str) or linkage not in LINKAGES:
        raise ValueError(f"linkage is {linkage!r}; expected one of {', '.join(map(repr, LINKAGES))}")
    _check_distance_work(n)

    gm = group_means(ts, U, L)  # the statistic (one chunk: the heavy set is small)
    H, P = _distances(gm, L)
    if linkage == "single":
        labels = kernels().single_linkage(H, k)
    else:
        labels = kernels().average_linkage(H, k)  # overwrites H
    del H

    # cluster means of y*x, weighted by rows: group sums are group means times sizes
    G = 2 * L
    g = np.arange(G + 1)
    edges = (g[None, :] * sizes[:, None]) // G
    gsize = np.diff(edges, axis=1).astype(np.float64)  # (n, 2L)
    proj_sums = np.einsum("ig,igr->ir", gsize, P)  # (n, r)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    rows = onehot.T @ sizes.astype(np.float64)  # (k,)
    W = ((onehot.T @ proj_sums) / rows[:, None]) @ U.T  # (k, d)
    sse = class_sse(ts.X, ts.y, ts.offsets, labels, W)  # each cluster under its own w
    check_sums(sse, "the residual sums of squares")
    s2 = sse / rows
    s2 = np.maximum(s2, np.finfo(np.float64).tiny)
    p = onehot.sum(axis=0) / n
    return ClusterResult(labels.astype(np.int64), W, s2, p)
