"""The statistics that add: the shape every stage of fastmlr is written in.

Every stage reads its tasks in chunks of whole tasks and runs three steps:

1. a **statistic** of one chunk, computed from the chunk alone;
2. an associative **combine** of two statistics (``a + b``), in chunk order;
3. a **finalize** on the combined statistic, which is small.

The in-memory path (the arrays cut into chunks), the stream path (a
:class:`~fastmlr.tasks.TaskStream`) and the thread-parallel blocks run the same three
functions, so a new engine (say, one that maps over partitions on several machines and
reduces the results in a tree) needs only these.

=========================  ===========================================  ==============================  ==========================================
stage                      statistic of a chunk                         combine                         finalize
=========================  ===========================================  ==============================  ==========================================
subspace (Algorithm 2)     :class:`MomentStats`: ``sum b1 b2^T`` (d, d)  ``+``: sum                       ``M = (C + C^T) / 2n``, top-k eigenvectors
                           and the task count (:func:`moment_stats`)                                     (:func:`fastmlr.estimate_subspace`)
clustering (Algorithm 3)   :class:`GroupMeans`: the 2L group means of   ``+``: concatenation (small;    H, linkage, w~ and r~^2
                           y*x of each task in U coordinates            gathered)                       (:func:`fastmlr.cluster_tasks`)
                           (:func:`group_means`)
classification, EM M-step  :class:`NormalEquations`: per class X^T X,   ``+``: sum                       solves (:func:`solve_classes`)
                           X^T y, y^T y, rows (:func:`normal_equations`)
posterior, E-step,         the (n_chunk, k) log joints                  concatenation (each stays with  softmax (:func:`fastmlr.posterior`)
prediction                 (:func:`task_log_joint`)                     its tasks)
=========================  ===========================================  ==============================  ==========================================

:func:`combine` is the fold every path uses to add statistics in order.

Examples
--------
>>> import fastmlr
>>> from fastmlr.stats import combine, moment_stats
>>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
>>> parts = [fastmlr.sample_tasks(W, s2, p, 4, n_tasks=100, seed=s) for s in (1, 2, 3)]
>>> total = combine(moment_stats(part) for part in parts)
>>> total.n, total.moment().shape
(300, (4, 4))
"""

from __future__ import annotations

from functools import reduce
from operator import add

from .cluster import GroupMeans, group_means
from .likelihood import task_log_joint
from .lstsq import NormalEquations, normal_equations, solve_classes
from .subspace import MomentStats, moment_stats

__all__ = ["combine", "MomentStats", "moment_stats", "GroupMeans", "group_means", "NormalEquations",
           "normal_equations", "solve_classes", "task_log_joint"]


def combine(parts):
    """The sum ``parts[0] + parts[1] + ...`` of statistics, added in order.

    Parameters
    ----------
    parts : iterable of statistics (:class:`MomentStats`, :class:`GroupMeans`,
        :class:`NormalEquations`), at least one

    Returns
    -------
    the combined statistic, of the same type

    Raises
    ------
    ValueError
        ``parts`` is empty.

    Examples
    --------
    >>> import numpy as np
    >>> combine([MomentStats(np.eye(2), 1), MomentStats(np.eye(2), 3)]).n
    4
    """
    it = iter(parts)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("combine() got no statistic; expected at least one part") from None
    return reduce(add, it, first)
