"""Stage 4 -- prediction for new tasks with the learnt mixture as a prior.

For a task with responses y (tau rows), ``log L_l = -SSE_l / (2 s_l^2) - (tau/2) log s_l^2
+ log p_l``; the posterior is the softmax of log L.  The MAP estimate is the w_l of
the largest posterior, the Bayes estimate the posterior mean ``sum_l post_l w_l``
(Definition 4.5 of the paper).
"""

from __future__ import annotations

import numpy as np

from ._validation import check_sums, check_work, quiet
from .residuals import task_sse
from .classify import check_params
from .stream import task_chunks
from .tasks import check_tasks

__all__ = ["log_likelihoods", "posterior", "predict_params", "METHODS"]

METHODS = ("bayes", "map")


@quiet
def log_likelihoods(X, y=None, offsets=None, W=None, s2=None, p=None):
    """Log joint of every task and component, up to a constant per task.

    Parameters
    ----------
    X : (N, d), y : (N,), offsets : (n + 1,) -- the tasks (size 0 allowed: the prior);
        or a :class:`TaskStream` as X (then pass W, s2, p by keyword)
    W : (k, d), s2 : (k,) > 0, p : (k,) >= 0

    Returns
    -------
    (n, k) float64 -- ``log p_l + log N(y_i | X_i w_l, s2_l I)`` minus a per-task constant
    """
    if W is None or s2 is None or p is None:
        raise TypeError("log_likelihoods() needs the mixture: W, s2 and p")
    out = []
    for ts in task_chunks(X, y, offsets, role="tasks"):
        if not out:
            W, s2, p = check_params(W, s2, p, ts.X.shape[1])
        out.append(_log_joint(ts, W, s2, p))
    return np.concatenate(out) if len(out) > 1 else out[0]


def _log_joint(ts, W, s2, p):
    n, k = ts.offsets.size - 1, W.shape[0]
    check_work(32.0 * n * k, f"the (n, k) = ({n}, {k}) log-likelihoods", "pass the tasks in batches")
    sse = task_sse(ts.X, ts.y, ts.offsets, W)
    check_sums(sse, "the residual sums of squares")
    t = np.diff(ts.offsets).astype(np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        logp = np.log(p)
        out = -sse / (2.0 * s2) - 0.5 * t[:, None] * np.log(s2) + logp
    dead = ~np.isfinite(out.max(axis=1))
    if dead.any():  # every component infinitely unlikely: the posterior is undefined
        i = int(np.argmax(dead))
        raise ValueError(
            f"task {i} has zero likelihood under every component (SSE / (2 s2) overflows); "
            f"s2 = {s2.min():.3g} is too small for the residuals: expected larger variances"
        )
    return out


def _softmax(logits):
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    return e / e.sum(axis=1, keepdims=True)


@quiet
def posterior(X, y=None, offsets=None, W=None, s2=None, p=None):
    """Posterior probability of each component for each task.

    Parameters
    ----------
    X : (N, d), y : (N,), offsets : (n + 1,) -- the tasks (or a :class:`TaskStream` as X)
    W : (k, d), s2 : (k,), p : (k,) -- the mixture

    Returns
    -------
    (n, k) float64, rows sum to one
    """
    return _softmax(log_likelihoods(X, y, offsets, W, s2, p))


@quiet
def predict_params(X, y=None, offsets=None, W=None, s2=None, p=None, *, method="bayes"):
    """Regression vector of each task given its few examples and the mixture prior.

    Parameters
    ----------
    X : (N, d), y : (N,), offsets : (n + 1,) -- the tasks' training rows (or a
        :class:`TaskStream` as X)
    W : (k, d), s2 : (k,), p : (k,) -- the mixture
    method : {"bayes", "map"}
        "bayes": posterior mean of w (minimizes the expected squared error);
        "map": the component of largest posterior probability.

    Returns
    -------
    (n, d) float64
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method is {method!r}; expected one of {', '.join(map(repr, METHODS))}")
    post = posterior(X, y, offsets, W, s2, p)
    W = np.asarray(W, dtype=np.float64)
    if method == "map":
        return W[np.argmax(post, axis=1)]
    return post @ W
