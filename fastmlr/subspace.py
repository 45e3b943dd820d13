"""Stage 1 -- subspace estimation (Algorithm 2 of the paper).

Each task's rows are split into two halves; with b1, b2 the means of y*x over the
halves, ``M = (1/2n) sum_i (b1_i b2_i^T + b2_i b1_i^T)`` is an unbiased estimate of
``sum_l p_l w_l w_l^T``, and U spans its top-k eigenvectors.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import _config
from ._validation import check_sums, check_work, quiet
from ._parallel import reduce_blocks
from .backend import kernels
from .stream import is_stream, task_chunks
from .tasks import check_finite_through, check_k, check_tasks, chunk_bounds, slice_tasks

__all__ = ["second_moment", "estimate_subspace", "top_eigenvectors", "MomentStats", "moment_stats"]


class MomentStats(NamedTuple):
    """Additive sufficient statistic of the subspace stage.

    ``cross`` (d, d) float64 is ``sum_i b1_i b2_i^T`` and ``n`` the number of tasks;
    statistics of disjoint task sets add termwise.
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
def moment_stats(X, y=None, offsets=None) -> MomentStats:
    """The additive statistic of Algorithm 2 over a task set or a :class:`TaskStream`.

    Statistics of disjoint task sets add (``a + b``), so the subspace of a pool can be
    assembled from parts computed anywhere.
    """
    if not is_stream(X):  # NaN and inf are checked through the kernel's output
        return _moment_stats(*check_tasks(X, y, offsets, min_size=2, role="subspace tasks", finite=False))
    total = None
    for ts in task_chunks(X, y, offsets, min_size=2, role="subspace tasks"):
        part = _moment_stats(*ts)
        total = part if total is None else total + part
    return total


@quiet
def second_moment(X, y=None, offsets=None) -> np.ndarray:
    """The moment matrix M of Algorithm 2.

    Parameters
    ----------
    X : (N, d) float array, or a :class:`TaskStream` (then omit y and offsets)
    y : (N,) float array
    offsets : (n + 1,) int array; every task needs at least 2 rows

    Returns
    -------
    M : (d, d) float64, symmetric
    """
    return moment_stats(X, y, offsets).moment()


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
def estimate_subspace(X, y=None, offsets=None, k=None, *, return_eigenvalues: bool = False):
    """Estimate the span of the k regression vectors (Algorithm 2).

    Parameters
    ----------
    X : (N, d) float array, or a :class:`TaskStream` of chunks (then omit y and
        offsets and pass k by keyword)
    y : (N,) float array
    offsets : (n + 1,) int array
        Every task needs at least 2 rows (odd sizes are fine: the halves differ by one).
    k : int, 1 <= k <= d
    return_eigenvalues : bool
        Also return the eigenvalues of M, all d of them in decreasing order.

    Returns
    -------
    U : (d, k) float64 with orthonormal columns, ordered by decreasing eigenvalue
    eigenvalues : (d,) float64, only if ``return_eigenvalues``
    """
    if k is None:
        raise TypeError("estimate_subspace() needs k, the number of components")
    k = check_k(k)
    if not is_stream(X):
        X = np.asarray(X) if not isinstance(X, np.ndarray) else X
        if X.ndim == 2 and X.shape[1] >= 1:  # refuse a too-large k before reading any data
            check_k(k, upper=X.shape[1], what="(the dimension d of X)")
    M = moment_stats(X, y, offsets).moment()
    k = check_k(k, upper=M.shape[0], what="(the dimension d of X)")
    if return_eigenvalues:
        vals, vecs = scipy.linalg.eigh(M)
        _, U = top_eigenvectors(M, k)
        return U, vals[::-1].copy()
    return top_eigenvectors(M, k)[1]
