"""Shared fixtures: seeded problems and the list of backends to test."""

import numpy as np
import pytest

import fastmlr


@pytest.fixture
def backend(request):
    """Run a test under the backend named by its parameter, then restore the previous one."""
    with fastmlr.use_backend(request.param):
        yield request.param


@pytest.fixture(scope="session")
def small_problem():
    """k=4, d=16 orthonormal mixture with the three task sets of Algorithm 1 (seeded)."""
    W, s2, p = fastmlr.make_mixture(4, 16, seed=0)
    light = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=20000, seed=1)
    heavy = fastmlr.sample_tasks(W, s2, p, 64, n_tasks=200, seed=2)
    light2 = fastmlr.sample_tasks(W, s2, p, 16, n_tasks=2000, seed=3)
    return {"W": W, "s2": s2, "p": p, "light": light, "heavy": heavy, "light2": light2}
