"""Algorithm 1 of the paper end to end: subspace, clustering, classification."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ._validation import quiet
from .classify import ClassifyResult, classify_tasks
from .cluster import ClusterResult, cluster_tasks
from .subspace import estimate_subspace
from .stream import is_stream
from .tasks import check_k

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


def _triple(arg, name):
    if is_stream(arg):
        return arg, None, None
    if not isinstance(arg, (tuple, list)) or len(arg) < 3:
        raise TypeError(f"{name} must be an (X, y, offsets) triple, got {type(arg).__name__}")
    return arg[0], arg[1], arg[2]


@quiet
def meta_learn(light, heavy, light2, k, *, L=None, linkage=None) -> MetaLearnResult:
    """Estimate a mixture of k linear regressions with Algorithm 1.

    Parameters
    ----------
    light : (X, y, offsets) -- tasks with >= 2 rows, for the subspace (D_L1)
    heavy : (X, y, offsets) -- tasks with >= 2L rows, for clustering (D_H)
    light2 : (X, y, offsets) -- tasks for classification and the refit (D_L2)

    Each set may also be a :class:`TaskStream` of chunks: the light sets are then read
    one chunk at a time (one pass each), the heavy set is gathered in memory.
    k : int -- number of components
    L, linkage : options of :func:`cluster_tasks`

    Returns
    -------
    MetaLearnResult
    """
    light, heavy, light2 = _triple(light, "light"), _triple(heavy, "heavy"), _triple(light2, "light2")
    check_k(k)
    seconds = {}
    t0 = time.perf_counter()
    U = estimate_subspace(*light, k)
    t1 = time.perf_counter()
    seconds["subspace"] = t1 - t0
    c = cluster_tasks(*heavy, U, k, L=L, linkage=linkage)
    t2 = time.perf_counter()
    seconds["cluster"] = t2 - t1
    r = classify_tasks(*light2, c.W, c.r2)
    seconds["classify"] = time.perf_counter() - t2
    return MetaLearnResult(r.W, r.s2, r.p, U, c, r, seconds)
