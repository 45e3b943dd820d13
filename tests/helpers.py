"""Helpers shared by the test modules."""

import numpy as np

from fastmlr.backend import available_backends

#: Every backend that imports here; the compiled ones are compared with "numpy".
BACKENDS = available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]


def ragged_tasks(rng, n, d, low, high, dtype=np.float64):
    """A task set with sizes drawn uniformly from [low, high]."""
    sizes = rng.integers(low, high + 1, size=n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = rng.standard_normal((offsets[-1], d)).astype(dtype)
    y = rng.standard_normal(offsets[-1]).astype(dtype)
    return X, y, offsets
