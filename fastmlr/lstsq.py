"""Least squares per class: additive normal equations, their solves, and refit.

The statistic of a chunk of whole tasks is :class:`NormalEquations` -- per class
``X^T X`` (k, d, d), ``X^T y`` (k, d), ``y^T y`` (k,) and the (weighted) row count --
built by :func:`normal_equations` (weighted, for EM's M-step) or class by class by
:func:`add_class_rows` (hard labels, for classification).  Statistics of disjoint
task sets add (``a + b``); :func:`solve_classes` finalizes them into ``W`` and the
variances.  :func:`refit` is the three steps over one task set.

Two variances come out of one residual sum ``RSS_l``: the unbiased
``RSS_l / (rows_l - d)`` (``variance="unbiased"``, Algorithm 4's refit) and the
maximum-likelihood ``RSS_l / rows_l`` (``variance="ml"``, what EM maximizes).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import _config
from ._parallel import run_each
from ._validation import FallbackWarning, check_sums, check_work, user_stacklevel
from .backend import kernels
from .residuals import task_sse
from .tasks import chunk_bounds, slice_tasks

__all__ = ["NormalEquations", "normal_equations", "add_class_rows", "solve_classes", "refit", "CANCELLATION",
           "VARIANCES"]

#: The two estimators of a class's noise variance from its residual sum RSS.
VARIANCES = ("unbiased", "ml")


class NormalEquations(NamedTuple):
    """Additive statistics of weighted least squares per class.

    ``XtX`` (k, d, d), ``Xty`` (k, d), ``yty`` (k,) and ``rows`` (k,), all float64:
    statistics of disjoint task sets add termwise (``a + b``).

    See Also
    --------
    normal_equations : the statistic of a task set.
    solve_classes : the finalize step.

    Examples
    --------
    >>> a = NormalEquations.zeros(2, 3)
    >>> (a + a).XtX.shape
    (2, 3, 3)
    """

    XtX: np.ndarray
    Xty: np.ndarray
    yty: np.ndarray
    rows: np.ndarray

    def __add__(self, other):  # type: ignore[override]
        return NormalEquations(*(a + b for a, b in zip(self, other)))

    @classmethod
    def zeros(cls, k: int, d: int) -> "NormalEquations":
        """Empty statistics of k classes in d dimensions (the neutral element of ``+``)."""
        check_work(8.0 * k * d * (d + 1), f"the normal equations of k = {k} classes in d = {d} dimensions",
                   "use fewer components or fewer features (e.g. project X onto a subspace first)")
        return cls(np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k), np.zeros(k))


def add_class_rows(stats: NormalEquations, part, l: int, tasks: np.ndarray, weights: np.ndarray) -> None:
    """Add the rows of ``tasks`` of one validated chunk, weighted, to class l (in place).

    The rows are gathered in pieces of about ``_config.CACHE_BLOCK_BYTES``, each reduced
    by BLAS while it is still in cache.
    """
    if tasks.size == 0:
        return
    sizes = np.diff(part.offsets)[tasks]
    stats.rows[l] += float(weights @ sizes)
    step = max(1, _config.CACHE_BLOCK_BYTES // (part.X.shape[1] * part.X.itemsize))
    cuts = chunk_bounds(np.concatenate([[0], np.cumsum(sizes)]), step)
    gather = kernels().gather_rows
    for a, b in zip(cuts[:-1], cuts[1:]):
        Xg, yg = gather(part.X, part.y, part.offsets, tasks[a:b], weights[a:b])
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by the caller's check
            stats.XtX[l] += Xg.T @ Xg  # one BLAS product (syrk) per piece
            stats.Xty[l] += Xg.T @ yg
            stats.yty[l] += float(yg @ yg)


def normal_equations(ts, R):
    """Weighted per-class normal equations, streamed over chunks of tasks.

    Class l sums every task i with ``R[i, l] > 0``, each row weighted by ``R[i, l]``.
    Per chunk and class the rows are gathered (scaled by the root of their weight) by
    the ``gather_rows`` kernel and reduced by one BLAS product; only nonzero weights
    are visited, so hard labels read every row once.

    Parameters
    ----------
    ts : TaskSet -- validated ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,)
    R : (n, k) float64 >= 0 -- task-to-class weights (one-hot for hard labels)

    Returns
    -------
    NormalEquations
        ``XtX`` (k, d, d) = ``sum_i R[i,l] X_i^T X_i``, ``Xty`` (k, d), ``yty`` (k,),
        ``rows`` (k,) = ``sum_i R[i,l] t_i``.

    See Also
    --------
    solve_classes : the finalize step.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlr.tasks import check_tasks
    >>> ts = check_tasks(np.eye(3), np.array([1.0, 2.0, 3.0]), [0, 1, 3])
    >>> ne = normal_equations(ts, np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> ne.Xty
    array([[1., 0., 0.],
           [0., 2., 3.]])
    """
    X, y, offsets = ts
    n, k = R.shape
    stats = NormalEquations.zeros(k, X.shape[1])
    bounds = chunk_bounds(offsets, _config.CHUNK_ROWS)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = slice_tasks(X, y, offsets, lo, hi)
        Rc = R[lo:hi]

        def add(l):  # each class into its own normal equations: several at once
            idx = np.flatnonzero(Rc[:, l])
            add_class_rows(stats, part, l, idx, np.ascontiguousarray(Rc[idx, l]))

        run_each(add, range(k))
    check_sums(stats.XtX, "the normal equations X^T X", X.dtype)
    return stats


#: The residual sum ``y'y - 2 w.X'y + w'X'X w`` of a class is recomputed from its rows
#: when it is below this many roundings of its terms (``eps * (y'y + |2 w.X'y| +
#: w'X'X w)``, eps of the dtype the sums were formed in): its relative error could
#: then exceed about 1e-4.  This happens for float32 data whose noise is small beside
#: its signal (at noise 1e-2 of the signal the variances were 1% off, at 1e-3 86%), and
#: for (nearly) noise-free data in float64.
CANCELLATION = 1e4


def solve_classes(stats: NormalEquations, W_prev, s2_prev, dtype=np.float64, exact_rss=None, *,
                  variance: str = "unbiased"):
    """Least squares per class from its normal equations.

    A class with no more rows than d cannot be refit; it keeps ``W_prev``/``s2_prev``
    and a :class:`FallbackWarning` names it.  A singular system (constant features)
    gets the minimum-norm solution.

    The residual sum comes from the normal equations, ``y'y - 2 w.X'y + w'X'X w``.
    Where that difference cancelled too far to be accurate (see :data:`CANCELLATION`)
    and ``exact_rss`` is given, it is recomputed from the rows.

    Parameters
    ----------
    stats : NormalEquations -- ``XtX`` (k, d, d), ``Xty`` (k, d), ``yty`` (k,), ``rows`` (k,)
    W_prev : (k, d), s2_prev : (k,) -- kept by classes that cannot be refit
    dtype : the dtype the sums were formed in (float32 data: float32 BLAS)
    exact_rss : callable(W (k, d)) -> (k,) float64, optional -- every class's residual
        sum under ``W``, summed over its rows in float64
    variance : {"unbiased", "ml"}
        ``s2 = RSS / (rows - d)`` (unbiased, Algorithm 4) or ``RSS / rows`` (maximum
        likelihood).

    Returns
    -------
    W (k, d), s2 (k,)

    See Also
    --------
    normal_equations : the statistic this finalizes.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlr.tasks import check_tasks
    >>> X = np.array([[1.0], [1.0], [1.0]])
    >>> ts = check_tasks(X, np.array([1.0, 2.0, 3.0]), [0, 3])
    >>> W, s2 = solve_classes(normal_equations(ts, np.ones((1, 1))), np.zeros((1, 1)), np.ones(1))
    >>> W, s2                          # mean 2, residuals (-1, 0, 1) over 3 - 1 rows
    (array([[2.]]), array([1.]))
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance is {variance!r}; expected one of {', '.join(map(repr, VARIANCES))}")
    XtX, Xty, yty, rows = stats
    k, d = Xty.shape
    lost = d if variance == "unbiased" else 0  # degrees of freedom the fit takes
    W = np.array(W_prev, dtype=np.float64, copy=True)
    s2 = np.array(s2_prev, dtype=np.float64, copy=True)
    kept = []
    inexact = []

    def solve(l):  # one small system of size d, on a worker thread (which has its own errstate)
        with np.errstate(all="ignore"):  # an overflow was refused by the caller's check_sums
            _solve(l)

    def _solve(l):
        if rows[l] <= d:
            kept.append(l)
            return
        try:
            c = scipy.linalg.cho_factor(XtX[l], check_finite=False)
            w = scipy.linalg.cho_solve(c, Xty[l], check_finite=False)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(XtX[l], Xty[l], rcond=None)[0]
        cross, quad = w @ Xty[l], w @ XtX[l] @ w
        rss = yty[l] - 2.0 * cross + quad
        W[l] = w
        if exact_rss is not None and rss < CANCELLATION * np.finfo(dtype).eps * (yty[l] + 2.0 * abs(cross) + abs(quad)):
            inexact.append(l)
        # rss from the normal equations is exact only to about eps * y'y: a noise-free
        # class gets that as its variance, not 0 or a denormal, so that its likelihoods
        # stay comparable with the other classes' (and a new task is not misclassified)
        floor = max(np.finfo(dtype).eps * yty[l] / rows[l], np.finfo(np.float64).tiny)
        s2[l] = max(max(rss, 0.0) / (rows[l] - lost), floor)

    run_each(solve, range(k))  # the classes on several threads at once
    if inexact:
        inexact.sort()
        rss = exact_rss(W)
        for l in inexact:  # exact to about eps64 * y'y: the float64 floor applies
            floor = max(np.finfo(np.float64).eps * yty[l] / rows[l], np.finfo(np.float64).tiny)
            s2[l] = max(rss[l] / (rows[l] - lost), floor)
    kept.sort()
    if kept:
        warnings.warn(
            f"components {kept} have no more rows than d = {d} ({rows[kept].round(1).tolist()}); "
            f"they keep their previous estimates",
            FallbackWarning,
            stacklevel=user_stacklevel(),
        )
    return W, s2


def refit(ts, R, W_prev, s2_prev, *, variance: str = "unbiased"):
    """Weighted least squares per class: :func:`normal_equations` then :func:`solve_classes`.

    Parameters
    ----------
    ts : TaskSet -- validated ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,)
    R : (n, k) float64 >= 0 -- task-to-class weights
    W_prev : (k, d), s2_prev : (k,) -- kept by classes that cannot be refit
    variance : {"unbiased", "ml"} -- see :func:`solve_classes`

    Returns
    -------
    W (k, d), s2 (k,), rows (k,) -- the weighted row count of each class

    See Also
    --------
    normal_equations, solve_classes

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlr.tasks import check_tasks
    >>> ts = check_tasks(np.ones((3, 1)), np.array([1.0, 2.0, 3.0]), [0, 3])
    >>> refit(ts, np.ones((1, 1)), np.zeros((1, 1)), np.ones(1), variance="ml")[1]   # 2 / 3
    array([0.66666667])
    """
    stats = normal_equations(ts, R)

    def exact_rss(W):  # sum_i R_il ||y_i - X_i w_l||^2, in float64 over the rows
        return np.einsum("il,il->l", R, task_sse(ts.X, ts.y, ts.offsets, W))

    W, s2 = solve_classes(stats, W_prev, s2_prev, ts.X.dtype, exact_rss, variance=variance)
    return W, s2, stats.rows


