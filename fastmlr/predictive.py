"""Posterior predictive distributions of new tasks' responses.

A new task with support rows ``(X_s, y_s)`` has posterior weights
``pi_l proportional to p_l N(y_s | X_s w_l, s2_l I)`` over the components (the prior
p for a task without rows).  A query row x of that task then has the predictive
distribution

    y | x, support  ~  sum_l pi_l N(x . w_l, v_l),    v_l = s2_l  (+ x^T Cov(w_l) x),

a mixture of normals: its mean is the Bayes prediction ``sum_l pi_l x . w_l``, its
variance ``sum_l pi_l (v_l + (x . w_l)^2) - mean^2``, and its central interval at level
``c`` runs between the ``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of the mixture,
found by bisection on its distribution function (vectorized over rows).

The plug-in form (``v_l = s2_l``) treats the fitted mixture as the truth.  Passing the
standard errors (:func:`fastmlr.inference.standard_errors`) adds the estimation
variance ``x^T Cov(w_l) x`` of each component's prediction.  On pools of thousands of
tasks that term is small beside s2 and both reach the nominal coverage
(``benchmarks/interval_coverage.py`` measures both); it matters when a component rests on few
rows.  The uncertainty of the posterior weights themselves (through W, s2 and p) is
not propagated.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

from .inference import _model_params
from .predict import posterior

__all__ = ["Predictive", "predictive", "mixture_quantile", "mixture_interval"]

#: Bisection steps of :func:`mixture_quantile`: the bracket spans at most ~24 largest
#: standard deviations, halved 64 times it is below float64 resolution.
_BISECT_STEPS = 64


def mixture_quantile(weights, loc, scale, q) -> np.ndarray:
    """Quantile of a mixture of normals, row by row.

    Parameters
    ----------
    weights : (m, k) -- mixture weights, rows summing to one
    loc : (m, k), scale : (m, k) > 0 -- component means and standard deviations
    q : float or (m,) -- probabilities in (0, 1)

    Returns
    -------
    (m,) float64 -- ``x`` with ``sum_l weights_l Phi((x - loc_l) / scale_l) = q``

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlr.predictive import mixture_quantile
    >>> round(float(mixture_quantile([[1.0]], [[0.0]], [[1.0]], 0.975)[0]), 4)
    1.96
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    mu = np.atleast_2d(np.asarray(loc, dtype=np.float64))
    sd = np.atleast_2d(np.asarray(scale, dtype=np.float64))
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), (w.shape[0],))
    if not (w.shape == mu.shape == sd.shape):
        raise ValueError(f"weights {w.shape}, loc {mu.shape} and scale {sd.shape} must have the same (m, k) shape")
    if not np.all((q > 0) & (q < 1)):
        raise ValueError("q must lie strictly between 0 and 1")
    if not np.all(sd > 0):
        raise ValueError("scale must be positive")
    # the quantile lies between the extreme component quantiles
    z = 10.0
    lo = np.min(np.where(w > 0, mu - z * sd, np.inf), axis=1)
    hi = np.max(np.where(w > 0, mu + z * sd, -np.inf), axis=1)
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        F = np.einsum("mk,mk->m", w, ndtr((mid[:, None] - mu) / sd))
        below = F < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def mixture_interval(weights, loc, scale, level) -> tuple[np.ndarray, np.ndarray]:
    """Central interval of a mixture of normals at ``level``: ``(lo, hi)``, each (m,).

    Examples
    --------
    >>> from fastmlr.predictive import mixture_interval
    >>> lo, hi = mixture_interval([[0.5, 0.5]], [[-1.0, 1.0]], [[1.0, 1.0]], 0.9)
    >>> bool(abs(lo[0] + hi[0]) < 1e-9 and hi[0] > 1.645)
    True
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level is {level!r}; expected a coverage strictly between 0 and 1 (say 0.9)")
    a = 0.5 * (1.0 - level)
    return mixture_quantile(weights, loc, scale, a), mixture_quantile(weights, loc, scale, 1.0 - a)


class Predictive(NamedTuple):
    """Posterior predictive distribution of query rows: a mixture of normals per row.

    Attributes
    ----------
    mean : (m,) -- predictive mean (the Bayes prediction)
    var : (m,) -- predictive variance
    weights : (m, k) -- posterior weights of the row's task over the components
    loc : (m, k) -- ``x . w_l``
    scale : (m, k) -- ``sqrt(s2_l [+ x^T Cov(w_l) x])``
    """

    mean: np.ndarray
    var: np.ndarray
    weights: np.ndarray
    loc: np.ndarray
    scale: np.ndarray

    def interval(self, level=0.9):
        """Central predictive interval at ``level``: ``(lo, hi)``, each (m,)."""
        return mixture_interval(self.weights, self.loc, self.scale, level)


def predictive(tasks, X_query, query_task, model, *, se=None) -> Predictive:
    """Posterior predictive distribution of query rows of new tasks.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream -- the new tasks' support rows:
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,); a task may have no rows (its
        weights are then the prior p)
    X_query : (m, d) -- query rows
    query_task : (m,) int -- the task (0 .. n - 1) of each query row
    model : Model -- ``W`` (k, d), ``s2`` (k,), ``p`` (k,)
    se : StandardErrors or None -- with it, each component's variance adds
        ``x^T Cov(w_l) x`` (``se.cov_W``); without it the fitted mixture is plugged in

    Returns
    -------
    Predictive
        ``mean`` (m,), ``var`` (m,), ``weights`` (m, k), ``loc`` (m, k), ``scale``
        (m, k); ``.interval(level)`` gives the central interval.

    See Also
    --------
    fastmlr.predict_params : the tasks' Bayes regression vectors.
    fastmlr.inference.standard_errors

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> from fastmlr.predictive import predictive
    >>> from fastmlr.synthetic import simulate_pool
    >>> sim = simulate_pool(k=2, d=3, n_tasks=400, seed=0)
    >>> model = fastmlr.fit(fastmlr.group_tasks(sim["X"], sim["y"], sim["task"]), k=2)
    >>> support = fastmlr.pack_tasks([np.eye(3)], [np.zeros(3)])
    >>> pred = predictive(support, np.ones((2, 3)), np.array([0, 0]), model)
    >>> lo, hi = pred.interval(0.9)
    >>> pred.mean.shape, bool(np.all(lo < pred.mean) and np.all(pred.mean < hi))
    ((2,), True)
    """
    W, s2, p = _model_params(model)
    k, d = W.shape
    Xq = np.asarray(X_query, dtype=np.float64)
    if Xq.ndim != 2 or Xq.shape[1] != d:
        raise ValueError(f"X_query has shape {Xq.shape}; expected (m, {d})")
    if not np.all(np.isfinite(Xq)):
        raise ValueError("X_query has a non-finite value; expected finite numbers")
    qt = np.asarray(query_task)
    if qt.shape != (Xq.shape[0],) or (qt.size and qt.dtype.kind not in "iu"):
        raise ValueError(f"query_task has shape {qt.shape} and dtype {qt.dtype}; expected ({Xq.shape[0]},) integers")
    post = posterior(tasks, W, s2, p)
    if qt.size and (qt.min() < 0 or qt.max() >= post.shape[0]):
        raise ValueError(f"query_task has values outside 0 .. {post.shape[0] - 1} (the tasks' indices)")
    weights = post[qt]
    loc = Xq @ W.T
    var_l = np.broadcast_to(s2, loc.shape).copy()
    if se is not None:
        cov_W = np.asarray(se.cov_W, dtype=np.float64)
        if cov_W.shape != (k, d, d):
            raise ValueError(f"se.cov_W has shape {cov_W.shape}; expected ({k}, {d}, {d}) for this model")
        var_l += np.einsum("md,lde,me->ml", Xq, np.nan_to_num(cov_W), Xq)
    mean = np.einsum("mk,mk->m", weights, loc)
    var = np.einsum("mk,mk->m", weights, var_l + loc ** 2) - mean ** 2
    return Predictive(mean, np.maximum(var, 0.0), weights, loc, np.sqrt(var_l))
