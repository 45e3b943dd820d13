"""Seeded data and the parameter grids shared by the benchmarks."""

import os

import numpy as np

import fastmlr

LARGE = os.environ.get("FASTMLR_ASV_LARGE", "") == "1"
#: FASTMLR_ASV_SMOKE=1 keeps one value of every parameter: a quick check that every
#: benchmark runs (CI), not a measurement.
SMOKE = os.environ.get("FASTMLR_ASV_SMOKE", "") == "1"


def grid(values):
    """A parameter's values (only the first under FASTMLR_ASV_SMOKE=1)."""
    values = list(values)
    return values[:1] if SMOKE else values


BACKENDS = grid(fastmlr.backend.available_backends())
DTYPES = grid(["float64", "float32"])


def sizes(small, large):
    """The size grid: ``small`` always, ``large`` added with FASTMLR_ASV_LARGE=1."""
    return grid(list(small) + (list(large) if LARGE else []))


def long_tailed(n, low, cap, seed=0):
    """n task sizes low + floor(lognormal(0, 1)), capped: mostly tiny, a few large."""
    rng = np.random.default_rng(seed)
    return np.minimum(low + np.floor(np.exp(rng.normal(size=n))).astype(np.int64), cap)


def pool(k, d, sizes_, dtype, seed=0):
    """(W, s2, p) and a sampled task set (X, y, offsets, z)."""
    W, s2, p = fastmlr.make_mixture(k, d, seed=seed)
    return (W, s2, p), fastmlr.sample_tasks(W, s2, p, sizes_, seed=seed + 1, dtype=dtype)


def head(X, y, offsets, tasks=3):
    """The first few tasks as a task set of their own (for JIT warm-up calls)."""
    b = int(offsets[tasks])
    return X[:b], y[:b], offsets[: tasks + 1]
