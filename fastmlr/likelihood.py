"""The task log-likelihood: one formula behind classification, the E-step, the posterior
and prediction.

All rows of a task share one component, so task i of t_i rows with residual sums
``SSE_il = ||y_i - X_i w_l||^2`` has, under component l, the log joint

    log p_l - SSE_il / (2 s2_l) - (t_i / 2) log(2 pi s2_l).

The residual sums come from :func:`fastmlr.residuals.task_sse` (a BLAS product and the
``residual_sums`` kernel); this module turns them into log joints.  The (n, k) result
stays with the chunk of tasks it belongs to (see :mod:`fastmlr.stats`); a softmax
over its rows is the posterior.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_sums, check_work
from .residuals import task_sse

__all__ = ["LOG_2PI", "log_joint", "log_joint_T", "task_log_joint", "softmax", "normalize"]

LOG_2PI = float(np.log(2.0 * np.pi))


def log_joint_T(sseT, t, s2, p=None, *, out=None, scratch=None):
    """Log joint of every component and task, components by rows.

    Parameters
    ----------
    sseT : (k, n) float64 -- residual sums ``SSE_il``, transposed
    t : (n,) float64 -- task sizes
    s2 : (k,) float64 > 0 -- noise variances
    p : (k,) float64 >= 0, or None -- weights; None leaves ``log p_l`` out (the paper's
        classification rule, which has no prior term)
    out : (k, n) float64, optional -- where to write (may be ``sseT`` itself)
    scratch : (k, n) float64, optional -- room for the size term (else a temporary)

    Returns
    -------
    (k, n) float64
        ``log p_l - sseT[l, i] / (2 s2_l) - (t_i / 2) log(2 pi s2_l)``; a zero weight
        gives ``-inf``.

    See Also
    --------
    log_joint : the same, tasks by rows.
    task_log_joint : from a task set and the mixture.

    Examples
    --------
    >>> import numpy as np
    >>> lj = log_joint_T(np.array([[0.0, 2.0]]), np.array([1.0, 1.0]), np.array([1.0]))
    >>> np.round(lj, 4)
    array([[-0.9189, -1.9189]])
    """
    s2 = np.asarray(s2, dtype=np.float64)
    out = np.multiply(sseT, (-0.5 / s2)[:, None], out=out)
    out -= np.multiply.outer(0.5 * (np.log(s2) + LOG_2PI), t, out=scratch)
    if p is not None:
        with np.errstate(divide="ignore"):
            out += np.log(np.asarray(p, dtype=np.float64))[:, None]
    return out


def log_joint(sse, t, s2, p=None):
    """Log joint of every task and component, tasks by rows.

    Parameters
    ----------
    sse : (n, k) float64 -- residual sums ``SSE_il``
    t : (n,) float64 -- task sizes
    s2 : (k,) float64 > 0 -- noise variances
    p : (k,) float64 >= 0, or None -- weights (None: no prior term)

    Returns
    -------
    (n, k) float64 -- ``log p_l - SSE_il / (2 s2_l) - (t_i / 2) log(2 pi s2_l)``

    See Also
    --------
    log_joint_T : the same, components by rows (the layout of EM).

    Examples
    --------
    >>> import numpy as np
    >>> lj = log_joint(np.array([[0.0, 2.0]]), np.array([1.0]), np.array([1.0, 1.0]), np.array([0.5, 0.5]))
    >>> np.round(lj, 4)
    array([[-1.6121, -2.6121]])
    """
    sseT = np.array(np.asarray(sse, dtype=np.float64).T, order="C")
    return log_joint_T(sseT, np.asarray(t, dtype=np.float64), s2, p, out=sseT).T


def task_log_joint(ts, W, s2, p=None, *, offset: int = 0, s2_name: str = "s2", guard: bool = True):
    """Log joint (n, k) of a validated chunk of tasks under a checked mixture.

    Raises ``ValueError`` naming the first task (numbered from ``offset``) whose
    likelihood is zero under every component, where the posterior is undefined.

    Parameters
    ----------
    ts : TaskSet -- validated ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,)
    W : (k, d) float64, s2 : (k,) float64, p : (k,) float64 or None
    guard : bool -- refuse an (n, k) result over the work limit (a caller that
        returns it); one that reduces it chunk by chunk passes False

    Returns
    -------
    (n, k) float64
    """
    n, k = ts.offsets.size - 1, W.shape[0]
    if guard:
        check_work(32.0 * n * k, f"the (n, k) = ({n}, {k}) log-likelihoods", "pass the tasks in batches")
    sse = task_sse(ts.X, ts.y, ts.offsets, W)
    check_sums(sse, "the residual sums of squares")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = log_joint(sse, np.diff(ts.offsets).astype(np.float64), s2, p)
    dead = ~np.isfinite(out.max(axis=1))
    if dead.any():  # every component infinitely unlikely: the posterior is undefined
        i = int(np.argmax(dead)) + offset
        raise ValueError(
            f"task {i} has zero likelihood under every component (SSE / (2 {s2_name}) overflows); "
            f"{s2_name} = {np.min(s2):.3g} is too small for the residuals: expected larger variances"
        )
    return out


def softmax(logits):
    """Row-wise softmax of an (n, k) array: the posterior from the log joint.

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np.log(np.array([[1.0, 3.0]])))
    array([[0.25, 0.75]])
    """
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    return e / e.sum(axis=1, keepdims=True)


def normalize(lj, axis: int):
    """Turn a log joint into responsibilities, in place: a softmax over ``axis`` (the
    components).  Returns ``log sum_l exp(lj)`` per task (the log-likelihood terms),
    with ``axis`` kept as a length-1 axis.  A task whose every term is ``-inf`` keeps
    ``-inf`` as its log-likelihood (and NaN responsibilities).

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log(np.array([[1.0], [3.0]]))   # (k, n) = (2, 1)
    >>> ll = normalize(lj, 0)
    >>> lj[:, 0], np.round(ll, 4)
    (array([0.25, 0.75]), array([[1.3863]]))
    """
    m = lj.max(axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0.0
    lj -= m
    R = np.exp(lj, out=lj)
    tot = R.sum(axis=axis, keepdims=True)
    R /= tot
    return np.log(tot) + m
