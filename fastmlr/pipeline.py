"""Algorithm 1 of the paper end to end: subspace, clustering, classification."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ._parallel import one_blas_thread
from ._validation import quiet
from .classify import ClassifyResult, classify_tasks
from .cluster import ClusterResult, cluster_tasks
from .subspace import estimate_subspace
from .tasks import as_tasks, check_k

__all__ = ["MetaLearnResult", "meta_learn"]


class MetaLearnResult(NamedTuple):
    """Output of :func:`meta_learn`.

    Attributes
    ----------
    W : (k, d) float64 -- regression vectors
    s2 : (k,) float64 -- noise variances
    p : (k,) float64 -- mixing weights
    U : (d, k) float64 -- the estimated subspace
    cluster : ClusterResult -- the clustering stage (labels of the heavy tasks, first estimates)
    classify : ClassifyResult -- the classification stage (labels of the second light set)
    seconds : dict -- wall time of each stage
    """

    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray
    U: np.ndarray
    cluster: ClusterResult
    classify: ClassifyResult
    seconds: dict


@quiet
@one_blas_thread
def meta_learn(light, heavy, light2, k, *, L=None, linkage=None) -> MetaLearnResult:
    """Estimate a mixture of k linear regressions with Algorithm 1.

    Parameters
    ----------
    light : (X, y, offsets), TaskSet or TaskStream
        Tasks with >= 2 rows, for the subspace (D_L1).
    heavy : (X, y, offsets), TaskSet or TaskStream
        Tasks with >= 2L rows, for clustering (D_H); a stream is gathered in memory.
    light2 : (X, y, offsets), TaskSet or TaskStream
        Tasks for classification and the refit (D_L2).
    k : int -- number of components
    L, linkage : options of :func:`cluster_tasks`

    A stream is read one chunk at a time (one pass for each light set).

    Returns
    -------
    MetaLearnResult
        ``W`` (k, d), ``s2`` (k,) (the unbiased ``RSS / (rows - d)`` of the refit),
        ``p`` (k,), ``U`` (d, k), the stages' results and their times.

    See Also
    --------
    estimate_subspace, cluster_tasks, classify_tasks : the three stages.
    fit : one pool of tasks of any sizes, by EM.
    predict_params : predictions for new tasks.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> light = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=2000, seed=1)
    >>> heavy = fastmlr.sample_tasks(W, s2, p, 32, n_tasks=20, seed=2)
    >>> light2 = fastmlr.sample_tasks(W, s2, p, 16, n_tasks=200, seed=3)
    >>> m = fastmlr.meta_learn(light, heavy, light2, 2)
    >>> m.W.shape, bool(fastmlr.parameter_error(m.W, W).max < 0.2)
    ((2, 4), True)
    """
    light, heavy, light2 = as_tasks(light, "light"), as_tasks(heavy, "heavy"), as_tasks(light2, "light2")
    check_k(k)
    seconds = {}
    t0 = time.perf_counter()
    U = estimate_subspace(light, k)
    t1 = time.perf_counter()
    seconds["subspace"] = t1 - t0
    c = cluster_tasks(heavy, U, k, L=L, linkage=linkage)
    t2 = time.perf_counter()
    seconds["cluster"] = t2 - t1
    r = classify_tasks(light2, c.W, c.s2)
    seconds["classify"] = time.perf_counter() - t2
    return MetaLearnResult(r.W, r.s2, r.p, U, c, r, seconds)
