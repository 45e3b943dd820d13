"""Task-level EM for a mixture of linear regressions.

All rows of a task share one hidden component, so the E-step computes one
responsibility per task and component, from the task's log-likelihood

    log p_l - SSE_il / (2 s2_l) - (t_i / 2) log(2 pi s2_l),

and the M-step solves one weighted least-squares problem per component, every row
of task i weighted by its responsibility R_il; then ``s2_l = RSS_l / rows_l`` (the
maximum-likelihood variance) and ``p_l = mean_i R_il``.  Each iteration cannot lower
the log-likelihood (a component whose system is singular keeps its w and updates s2
given it, which still cannot lower it).

Two equivalent ways to build the M-step's normal equations:

* ``"stats"``: per-task statistics X_i^T X_i (packed upper triangle), X_i^T y_i and
  y_i^T y_i are computed once, and each M-step is one (k, n) x (n, d(d+1)/2) product --
  cheap when the statistics fit in memory (the usual case for d <= 64 and up to a few
  hundred thousand tasks);
* ``"rows"``: :func:`fastmlr.lstsq.normal_equations` over the rows at every
  iteration (memory O(k d^2), for pools whose per-task statistics would not fit).

The E-step's residual sums come from the statistics too
(``SSE_il = c_i - 2 b_i.w_l + w_l^T A_i w_l``, one BLAS product) when that costs less
than a pass of the ``task_sse`` kernel over the rows (:func:`stats_pay_off`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dgemm as _gemm

from .backend import kernels
from .residuals import task_sse
from .likelihood import log_joint_T, normalize
from .lstsq import normal_equations

__all__ = ["TaskStats", "task_stats", "unpack", "stats_pay_off", "EMResult", "run_em", "log_joint", "STATS_MAX_BYTES"]

#: Largest per-task statistics array (n d(d+1)/2 float64) the "auto" path will build.
STATS_MAX_BYTES = 512 << 20

_LOG_2PI = float(np.log(2.0 * np.pi))


class TaskStats(NamedTuple):
    """Per-task sufficient statistics, float64; statistics of disjoint task sets concatenate.

    Attributes
    ----------
    A : (n, d(d+1)/2) -- X_i^T X_i, upper triangle packed row by row (``np.triu_indices``)
    b : (n, d) -- X_i^T y_i
    c : (n,) -- y_i^T y_i
    """

    A: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def gram(self, i=slice(None)) -> np.ndarray:
        """X_i^T X_i unpacked: (d, d) for one task, (m, d, d) for several."""
        return unpack(self.A[i], self.b.shape[1])


@functools.lru_cache(maxsize=64)
def _triu(d: int):
    """Row and column indices of the upper triangle of a (d, d) matrix, and the weight of
    each entry in a quadratic form (1 on the diagonal, 2 off it)."""
    iu, ju = np.triu_indices(d)
    return iu, ju, np.where(iu == ju, 1.0, 2.0)


@functools.lru_cache(maxsize=64)
def _full_index(d: int) -> np.ndarray:
    """(d*d,) position in the packed upper triangle of every entry of a symmetric (d, d)
    matrix, row by row."""
    iu, ju, _ = _triu(d)
    pos = np.empty((d, d), dtype=np.intp)
    pos[iu, ju] = pos[ju, iu] = np.arange(iu.size)
    return pos.ravel()


def unpack(packed, d: int) -> np.ndarray:
    """Symmetric (..., d, d) matrices from their packed upper triangles (..., d(d+1)/2)."""
    packed = np.asarray(packed)
    return np.take(packed, _full_index(d), axis=-1).reshape(packed.shape[:-1] + (d, d))


def _quad_weights(W) -> np.ndarray:
    """(k, d(d+1)/2) weights q with ``A_packed . q_l = w_l^T A w_l``."""
    iu, ju, mult = _triu(W.shape[1])
    return W[:, iu] * W[:, ju] * mult


def task_stats(X, y, offsets) -> TaskStats:
    """Per-task X^T X (packed), X^T y and y^T y of a validated task set (the
    ``task_gram`` kernel of the current backend: one parallel pass over the rows).

    Returns
    -------
    TaskStats -- ``A`` (n, d(d+1)/2), ``b`` (n, d), ``c`` (n,), float64
    """
    return TaskStats(*kernels().task_gram(X, y, offsets))


def stats_pay_off(n: int, N: int, d: int) -> bool:
    """Whether SSE from the statistics (n d^2/2 per component, one BLAS product) beats
    a pass over the rows (N d per component)."""
    return n * d * (d + 1) / 2 <= 2.0 * N * d


class EMResult(NamedTuple):
    """Output of :func:`run_em`.

    Attributes
    ----------
    W : (k, d), s2 : (k,), p : (k,) -- the estimate
    loglik : (m,) -- log-likelihood of the pool at every iterate, the last one at (W, s2, p)
    resp : (n, k) or None -- responsibilities of the tasks under (W, s2, p) (None where
        EM ran in passes over a pool held elsewhere and was not asked for them)
    converged : bool -- the gain per row fell below the tolerance before the cap
    kept : list of int -- components that once had too few weighted rows and kept their W
    rows : (k,) -- the weighted rows of every component under (W, s2, p),
        ``sum_i resp_il t_i`` (t_i the rows of task i)
    """

    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray
    loglik: np.ndarray
    resp: np.ndarray | None
    converged: bool
    kept: list
    rows: np.ndarray


def log_joint(ts, W, s2, p):
    """(n, k) log p_l + log N(y_i | X_i w_l, s2_l I), including the 2 pi constant."""
    return _log_joint_T(ts, np.diff(ts.offsets).astype(np.float64), W, s2, p).T


def _log_joint_T(ts, t, W, s2, p):
    sseT = np.ascontiguousarray(task_sse(ts.X, ts.y, ts.offsets, W).T)
    return log_joint_T(sseT, t, s2, p, out=sseT)


def _sse_stats(stats, W):
    """(k, n) SSE_il = c_i - 2 b_i.w_l + w_l^T A_i w_l from the statistics (clipped at 0
    against round-off).  Components index rows, so that the reductions over them in the
    E-step run along the outer axis (a few long vector operations)."""
    sseT = _quad_weights(W) @ stats.A.T
    sseT -= 2.0 * (W @ stats.b.T)
    sseT += stats.c[None, :]
    return np.maximum(sseT, 0.0, out=sseT)


def _log_joint_stats(stats, tc, W, s2, p):
    """(k, n) log-joint from the statistics: it is linear in them,

        log p_l - (t_i / 2) log(2 pi s2_l) - (c_i - 2 b_i.w_l + A_i . q_l) / (2 s2_l),

    so three BLAS products write it with no (k, n) temporary.  ``tc`` is the (3, n)
    array of rows ``c``, ``t``, ``1`` (:func:`_tc`).  Unlike :func:`_sse_stats` the
    residual sums are not clipped at 0: a negative one is round-off of order
    ``1e-16 c_i``, and its effect on the log-joint is as small."""
    a = -0.5 / s2
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    coef = np.column_stack([a, -0.5 * (np.log(s2) + _LOG_2PI), logp])  # (k, 3)
    # Fortran-ordered (n, k) products are the (k, n) log-joint in C order
    out = _gemm(1.0, stats.A.T, _quad_weights(W) * a[:, None], trans_a=1, trans_b=1)
    out = _gemm(1.0, stats.b.T, W * (-2.0 * a)[:, None], beta=1.0, c=out, trans_a=1, trans_b=1, overwrite_c=1)
    out = _gemm(1.0, tc, coef, beta=1.0, c=out, trans_a=1, trans_b=1, overwrite_c=1)
    return out.T


def _tc(stats, t) -> np.ndarray:
    """(3, n) rows c, t, 1: the per-task factors of :func:`_log_joint_stats`."""
    return np.ascontiguousarray(np.stack([stats.c, t, np.ones_like(t)]))


def _e_step(ts, t, W, s2, p, stats=None, groups=1):
    """Log-likelihood of the pool and responsibilities ``RT`` (k, n), components by rows;
    ``t`` (n,) float task sizes.

    With ``groups = S > 1`` the k components are S independent mixtures of k / S
    components each (consecutive blocks, each ``p`` block summing to one): the
    responsibilities are normalized within every block and the log-likelihood is an
    (S,) array, one per mixture.
    """
    if stats is not None:
        lj = _log_joint_stats(stats, _tc(stats, t), W, s2, p)
    else:
        lj = _log_joint_T(ts, t, W, s2, p)
    ll = normalize(lj.reshape(groups, -1, lj.shape[1]), 1)[:, 0, :].sum(axis=1)
    return (float(ll[0]) if groups == 1 else ll), lj


def mean_square(y) -> float:
    """Mean of y^2, summed in float64 (0 for no rows)."""
    y = np.asarray(y, dtype=np.float64)
    return float(y @ y) / max(y.size, 1)


def s2_floor(ts) -> float:
    """Variance floor of EM: 1e-10 of the mean y^2, which keeps a component that fits a
    few tasks exactly from diverging."""
    return 1e-10 * max(mean_square(ts.y), np.finfo(np.float64).tiny)


def _normal_equations(ts, t, stats, RT):
    if stats is None:
        return normal_equations(ts, np.ascontiguousarray(RT.T))
    XtX = unpack(RT @ stats.A, stats.b.shape[1])
    return XtX, RT @ stats.b, RT @ stats.c, RT @ t


def _m_step(ts, t, stats, RT, W, floor):
    XtX, Xty, yty, rows = _normal_equations(ts, t, stats, RT)
    k, d = Xty.shape
    W = W.copy()
    ok = rows > d
    try:  # one batched Cholesky solve for all components
        np.linalg.cholesky(XtX[ok])  # raises unless every system is positive definite
        W[ok] = np.linalg.solve(XtX[ok], Xty[ok][:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # some system is singular: solve one by one
        for l in np.flatnonzero(ok):
            try:
                c = scipy.linalg.cho_factor(XtX[l], check_finite=False)
                W[l] = scipy.linalg.cho_solve(c, Xty[l], check_finite=False)
            except np.linalg.LinAlgError:
                ok[l] = False
    kept = [int(l) for l in np.flatnonzero(~ok)]
    # with w fixed (new or kept), this s2 maximizes the expected log-likelihood
    rss = yty - 2.0 * np.einsum("ld,ld->l", W, Xty) + np.einsum("ld,lde,le->l", W, XtX, W)
    s2 = np.where(rows > 0, rss / np.maximum(rows, 1e-300), floor)
    s2 = np.maximum(s2, floor)
    p = RT.mean(axis=1)
    return W, s2, p, kept


def run_em(ts, W, s2, p, *, tol=1e-7, max_iter=200, stats=None, progress=None) -> EMResult:
    """Task-level EM from an initial mixture until the log-likelihood stops rising.

    Parameters
    ----------
    ts : TaskSet -- validated, every task with at least one row
    W : (k, d), s2 : (k,) > 0, p : (k,) > 0 -- the starting point
    tol : float -- stop when an iteration raises the log-likelihood by less than
        ``tol`` per row (``tol * N``): a criterion that does not depend on the units of y
        (the log-likelihood itself shifts by ``N log c`` when y is scaled by c)
    max_iter : int -- most M-steps
    stats : TaskStats or None -- per-task statistics for the M-step (and the E-step when
        :func:`stats_pay_off`); None reads the rows at every step
    progress : callable(str) or None

    Returns
    -------
    EMResult
    """
    W = np.array(W, dtype=np.float64)
    s2 = np.array(s2, dtype=np.float64)
    p = np.array(p, dtype=np.float64)
    n, d = ts.offsets.size - 1, W.shape[1]
    t_all = float(ts.offsets[-1])
    floor = s2_floor(ts)
    s2 = np.maximum(s2, floor)
    # the statistics give SSE in O(d^2) per task and component, the rows in O(t_i d)
    sse_stats = stats if stats is not None and stats_pay_off(n, int(t_all), d) else None
    t = np.diff(ts.offsets).astype(np.float64)
    ll, R = _e_step(ts, t, W, s2, p, sse_stats)
    history = [ll]
    converged = False
    kept_all: set = set()
    for it in range(max_iter):
        W_new, s2_new, p_new, kept = _m_step(ts, t, stats, R, W, floor)
        ll_new, R_new = _e_step(ts, t, W_new, s2_new, p_new, sse_stats)
        kept_all.update(kept)
        W, s2, p, R = W_new, s2_new, p_new, R_new
        history.append(ll_new)
        if progress is not None and it % 10 == 0:
            progress(f"EM iteration {it + 1}: log-likelihood {ll_new:.6g}")
        if ll_new - ll <= tol * t_all:
            converged = True
            break
        ll = ll_new
    resp = np.ascontiguousarray(R.T)
    return EMResult(W, s2, p, np.asarray(history), resp, converged, sorted(kept_all), t @ resp)
