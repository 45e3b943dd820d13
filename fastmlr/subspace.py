"""Stage 1 -- subspace estimation (Algorithm 2 of the paper).

Each task's rows are split into two halves; with b1, b2 the means of y*x over the
halves, ``M = (1/2n) sum_i (b1_i b2_i^T + b2_i b1_i^T)`` is an unbiased estimate of
``sum_l p_l w_l w_l^T``, and U spans its top-k eigenvectors.

The three steps: per chunk of whole tasks, :class:`MomentStats` (``sum_i b1_i b2_i^T``
and the task count); combine by ``+``; finalize by :meth:`MomentStats.moment` and the
top-k eigenvectors (:func:`top_eigenvectors`).
"""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import _config
from ._validation import check_sums, check_work, quiet
from ._parallel import one_blas_thread, reduce_blocks
from .backend import kernels
from .stream import is_stream, task_chunks
from .tasks import as_tasks, check_finite_through, check_k, check_tasks, chunk_bounds, slice_tasks, takes_tasks

__all__ = ["second_moment", "estimate_subspace", "top_eigenvectors", "MomentStats", "moment_stats"]


class MomentStats(NamedTuple):
    """Additive sufficient statistic of the subspace stage.

    ``cross`` (d, d) float64 is ``sum_i b1_i b2_i^T`` and ``n`` the number of tasks;
    statistics of disjoint task sets add termwise.

    See Also
    --------
    moment_stats : the statistic of a task set.

    Examples
    --------
    >>> import numpy as np
    >>> a = MomentStats(np.array([[2.0, 0.0], [1.0, 0.0]]), 2)
    >>> (a + a).moment()
    array([[1.  , 0.25],
           [0.25, 0.  ]])
    """

    cross: np.ndarray
    n: int

    def __add__(self, other):  # type: ignore[override]
        return MomentStats(self.cross + other.cross, self.n + other.n)

    def moment(self) -> np.ndarray:
        """The symmetric estimate M (d, d) of ``sum_l p_l w_l w_l^T``."""
        return (self.cross + self.cross.T) / (2.0 * self.n)


def _moment_stats(X, y, offsets) -> MomentStats:
    """MomentStats of a task set validated but for its values, streamed through the
    kernel in cache-sized blocks, several blocks at once (:func:`reduce_blocks`: each
    block's kernel and BLAS product on one thread).  Every value of X and y reaches the
    group means (as y*x), so NaN and inf are caught from each block's means, in cache
    (:func:`check_finite_through`): the stage reads X once."""
    d = X.shape[1]
    check_work(32.0 * d * d, f"the (d, d) = ({d}, {d}) moment matrix and its eigendecomposition",
               "use fewer features (e.g. project X onto a subspace first)")
    # blocks of a few MB: the group means go from the kernel to the product in cache
    bounds = chunk_bounds(offsets, max(1, _config.CACHE_BLOCK_BYTES // (d * X.itemsize)))
    k = kernels()

    def block(b):
        part = slice_tasks(X, y, offsets, bounds[b], bounds[b + 1])
        with np.errstate(over="ignore", invalid="ignore"):  # reported by the check below
            B = k.group_means(part.X, part.y, part.offsets, 2)
        check_finite_through(B, X, y, "the group means of y*x")
        with np.errstate(over="ignore", invalid="ignore"):  # reported by check_sums on the total
            return B[:, 0, :].T @ B[:, 1, :]  # BLAS, in the data's precision

    cross = reduce_blocks(block, bounds.size - 1, (d, d))
    check_sums(cross, "the moment matrix M", X.dtype)
    return MomentStats(cross, offsets.size - 1)


@quiet
@takes_tasks
def moment_stats(tasks) -> MomentStats:
    """The additive statistic of Algorithm 2 over a task set.

    Statistics of disjoint task sets add (``a + b``), so the subspace of a pool can be
    assembled from parts computed anywhere.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,); every task needs at least 2 rows.

    Returns
    -------
    MomentStats
        ``cross`` (d, d) float64 and the number of tasks ``n``.

    See Also
    --------
    second_moment : the finalized moment matrix M.
    estimate_subspace : its top eigenvectors.

    Examples
    --------
    >>> import fastmlr
    >>> from fastmlr.subspace import moment_stats
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> a = moment_stats(fastmlr.sample_tasks(W, s2, p, 4, n_tasks=100, seed=1))
    >>> b = moment_stats(fastmlr.sample_tasks(W, s2, p, 4, n_tasks=50, seed=2))
    >>> (a + b).n, (a + b).moment().shape
    (150, (4, 4))
    """
    tasks = as_tasks(tasks)
    if not is_stream(tasks):  # NaN and inf are checked through the kernel's output
        return _moment_stats(*check_tasks(*tasks, min_size=2, role="subspace tasks", finite=False))
    return reduce(add, (_moment_stats(*ts) for ts in task_chunks(tasks, min_size=2, role="subspace tasks")))


@quiet
@takes_tasks
def second_moment(tasks) -> np.ndarray:
    """The moment matrix M of Algorithm 2, an unbiased estimate of ``sum_l p_l w_l w_l^T``.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,); every task needs at least 2 rows.

    Returns
    -------
    M : (d, d) float64, symmetric

    See Also
    --------
    estimate_subspace : the top-k eigenvectors of M.
    fastmlr.subspace.moment_stats : the additive statistic behind M.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> from fastmlr.subspace import second_moment
    >>> M = second_moment(fastmlr.sample_tasks(W, s2, p, 4, n_tasks=200, seed=1))
    >>> M.shape, bool((M == M.T).all())
    ((4, 4), True)
    """
    return moment_stats(tasks).moment()


def top_eigenvectors(M: np.ndarray, k: int):
    """Eigenvalues (k,) in decreasing order and eigenvectors (d, k) of the k largest.

    Signs are fixed so that the largest-magnitude entry of each column is positive,
    which makes U a deterministic function of M.
    """
    d = M.shape[0]
    vals, vecs = scipy.linalg.eigh(M, subset_by_index=[d - k, d - 1])
    vals, vecs = vals[::-1], vecs[:, ::-1]
    idx = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[idx, np.arange(k)])
    signs[signs == 0] = 1.0
    return vals.copy(), np.ascontiguousarray(vecs * signs)


@quiet
@one_blas_thread
@takes_tasks
def estimate_subspace(tasks, k, *, return_eigenvalues: bool = False):
    """Estimate the span of the k regression vectors (Algorithm 2).

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,).  Every task needs at least 2
        rows (odd sizes are fine: the halves differ by one).
    k : int, 1 <= k <= d
    return_eigenvalues : bool
        Also return the eigenvalues of M, all d of them in decreasing order.

    Returns
    -------
    U : (d, k) float64 with orthonormal columns, ordered by decreasing eigenvalue
    eigenvalues : (d,) float64, only if ``return_eigenvalues``

    See Also
    --------
    second_moment : the matrix M whose eigenvectors these are.
    cluster_tasks : the next stage of Algorithm 1.
    fastmlr.metrics.subspace_error : distance to the true span.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 8, seed=0)
    >>> light = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=2000, seed=1)
    >>> U = fastmlr.estimate_subspace(light, 2)
    >>> U.shape, bool(fastmlr.subspace_error(U, W) < 0.5)
    ((8, 2), True)
    """
    k = check_k(k)
    tasks = as_tasks(tasks)
    if not is_stream(tasks):
        X = np.asarray(tasks.X) if not isinstance(tasks.X, np.ndarray) else tasks.X
        if X.ndim == 2 and X.shape[1] >= 1:  # refuse a too-large k before reading any data
            check_k(k, upper=X.shape[1], what="(the dimension d of X)")
        tasks = tasks._replace(X=X)
    M = moment_stats(tasks).moment()
    k = check_k(k, upper=M.shape[0], what="(the dimension d of X)")
    if return_eigenvalues:
        vals, vecs = scipy.linalg.eigh(M)
        _, U = top_eigenvectors(M, k)
        return U, vals[::-1].copy()
    return top_eigenvectors(M, k)[1]
