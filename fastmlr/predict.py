"""Stage 4 -- prediction for new tasks with the learnt mixture as a prior.

For a task with responses y (tau rows), the log joint under component l is
``log p_l - SSE_l / (2 s2_l) - (tau/2) log(2 pi s2_l)`` (:mod:`fastmlr.likelihood`);
the posterior is its softmax.  The MAP estimate is the w_l of the largest posterior,
the Bayes estimate the posterior mean ``sum_l post_l w_l`` (Definition 4.5 of the
paper).

The three steps: per chunk of whole tasks, the (n_chunk, k) log-likelihoods (they stay
with their tasks); combine by concatenation; finalize by the softmax.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_params, quiet
from .likelihood import softmax, task_log_joint
from .stream import task_chunks
from .tasks import takes_tasks

__all__ = ["log_likelihoods", "posterior", "predict_params", "METHODS"]

METHODS = ("bayes", "map")


@quiet
@takes_tasks
def log_likelihoods(tasks, W, s2, p):
    """Log joint of every task and component.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,); a task of size 0 gets the prior.
    W : (k, d) float array -- components
    s2 : (k,) float array, > 0 -- noise variances
    p : (k,) float array, >= 0 -- weights

    Returns
    -------
    (n, k) float64
        ``log p_l + log N(y_i | X_i w_l, s2_l I)``, with the ``2 pi`` constant.

    See Also
    --------
    posterior : their softmax.
    fastmlr.likelihood.log_joint : the formula, from residual sums.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlr.predict import log_likelihoods
    >>> tasks = (np.ones((1, 1)), np.zeros(1), [0, 1])          # one task, y = 0 at x = 1
    >>> np.round(log_likelihoods(tasks, [[0.0], [1.0]], [1.0, 1.0], [0.5, 0.5]), 4)
    array([[-1.6121, -2.1121]])
    """
    out = []
    for ts in task_chunks(tasks, role="tasks"):
        if not out:
            W, s2, p = check_params(W, s2, p, ts.X.shape[1])
        out.append(task_log_joint(ts, W, s2, p, offset=sum(o.shape[0] for o in out)))
    return np.concatenate(out) if len(out) > 1 else out[0]


@quiet
@takes_tasks
def posterior(tasks, W, s2, p):
    """Posterior probability of each component for each task.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,).
    W : (k, d), s2 : (k,) > 0, p : (k,) >= 0 -- the mixture

    Returns
    -------
    (n, k) float64, rows sum to one

    See Also
    --------
    predict_params : the regression vector of each task from its posterior.
    fastmlr.predict.log_likelihoods : the log joint behind it.

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> tasks = (np.ones((2, 1)), np.zeros(2), [0, 2])
    >>> np.round(fastmlr.posterior(tasks, [[0.0], [1.0]], [1.0, 1.0], [0.5, 0.5]), 3)
    array([[0.731, 0.269]])
    """
    return softmax(log_likelihoods(tasks, W, s2, p))


@quiet
@takes_tasks
def predict_params(tasks, W, s2, p, *, method="bayes"):
    """Regression vector of each task given its few examples and the mixture prior.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        The tasks' training rows: ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,).
    W : (k, d), s2 : (k,) > 0, p : (k,) >= 0 -- the mixture
    method : {"bayes", "map"}
        "bayes": posterior mean of w (minimizes the expected squared error);
        "map": the component of largest posterior probability.

    Returns
    -------
    (n, d) float64

    See Also
    --------
    posterior : the weights of the Bayes estimate.
    meta_learn, fit : estimate the mixture.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    >>> new = fastmlr.sample_tasks(W, s2, p, 8, n_tasks=5, seed=1)
    >>> B = fastmlr.predict_params(new, W, s2, p, method="map")
    >>> B.shape, bool((B == W[new.z]).all())
    ((5, 3), True)
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method is {method!r}; expected one of {', '.join(map(repr, METHODS))}")
    post = posterior(tasks, W, s2, p)
    W = np.asarray(W, dtype=np.float64)
    if method == "map":
        return W[np.argmax(post, axis=1)]
    return post @ W
