"""Helpers shared by the test modules."""

import os

import numpy as np

from fastmlr.backend import available_backends

#: Every backend that imports here; the compiled ones are compared with "numpy".
BACKENDS = available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]

#: Set where the Cython extension must exist (CI installs with it): its absence is then
#: a failure, not a skip.
CYTHON_REQUIRED = os.environ.get("FASTMLR_REQUIRE_CYTHON", "").strip().lower() in ("1", "true", "yes", "on")

#: Thread counts every compiled kernel is run with.
THREADS = [1, 2]


def ragged_tasks(rng, n, d, low, high, dtype=np.float64):
    """A task set with sizes drawn uniformly from [low, high]."""
    sizes = rng.integers(low, high + 1, size=n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = rng.standard_normal((offsets[-1], d)).astype(dtype)
    y = rng.standard_normal(offsets[-1]).astype(dtype)
    return X, y, offsets


def tasks_of_sizes(rng, sizes, d, dtype=np.float64):
    """A task set with the given task sizes (zeros allowed)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = rng.standard_normal((offsets[-1], d)).astype(dtype)
    y = rng.standard_normal(offsets[-1]).astype(dtype)
    return X, y, offsets


def prim_levels(H, labels):
    """Per cluster, the largest edge of a minimum spanning tree of H restricted to it.

    O(m^2) Prim on each cluster; a singleton has level -inf.
    """
    levels = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        sub = H[np.ix_(idx, idx)]
        m = idx.size
        done = np.zeros(m, bool)
        done[0] = True
        best = sub[0].astype(float).copy()
        top = -np.inf
        for _ in range(m - 1):
            j = np.flatnonzero(~done)[np.argmin(best[~done])]
            top = max(top, best[j])
            done[j] = True
            best = np.minimum(best, sub[j])
        levels[c] = top
    return levels


def is_single_linkage_partition(H, labels, k):
    """True if ``labels`` is a k-cluster cut of single linkage on H (ties allowed).

    Single linkage cut into k clusters gives exactly the partitions whose clusters are
    each connected at some level no larger than the smallest distance between two
    clusters; with tied distances several partitions qualify.
    """
    labels = np.asarray(labels)
    if np.unique(labels).size != k:
        return False
    inside = max(prim_levels(H, labels).values())
    between = H[labels[:, None] != labels[None, :]]
    return between.size == 0 or inside <= between.min()
