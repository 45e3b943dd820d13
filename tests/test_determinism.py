"""Determinism: the same inputs give the same outputs.

* repeated runs: bitwise identical, under every backend;
* thread counts 1 and 2 (``fastmlr.n_threads``): labels equal, estimates within 1e-12;
* across backends: labels equal, estimates within 1e-12;
* ``sample_tasks``: bitwise identical whatever the thread count.
"""

import numpy as np
import pytest

import fastmlr

from helpers import BACKENDS

TOL = 1e-12


@pytest.fixture(scope="module")
def problem():
    W, s2, p = fastmlr.make_mixture(4, 12, seed=11)
    light = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(0).integers(2, 7, size=6000), seed=12)
    heavy = fastmlr.sample_tasks(W, s2, p, 48, n_tasks=150, seed=13)
    light2 = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(1).integers(1, 20, size=1500), seed=14)
    new = fastmlr.sample_tasks(W, s2, p, 5, n_tasks=300, seed=15)
    return {"W": W, "s2": s2, "p": p, "sets": (light[:3], heavy[:3], light2[:3]), "new": new[:3]}


def run_all(problem, linkage):
    """Every stage once: a dict of named outputs."""
    light, heavy, light2 = problem["sets"]
    m = fastmlr.meta_learn(light, heavy, light2, 4, linkage=linkage, L=2)
    out = {
        "U": m.U, "cluster.labels": m.cluster.labels, "cluster.W": m.cluster.W, "cluster.s2": m.cluster.s2,
        "classify.labels": m.classify.labels, "W": m.W, "s2": m.s2, "p": m.p,
        "M": fastmlr.subspace.second_moment(light),
        "H": fastmlr.cluster.distance_matrix(heavy, m.U, L=2)[0],
        "loglik": fastmlr.predict.log_likelihoods(problem["new"], m.W, m.s2, m.p),
        "bayes": fastmlr.predict_params(problem["new"], m.W, m.s2, m.p),
    }
    for name, v in out.items():
        assert np.all(np.isfinite(v)), name
    return out


def assert_same(a, b, *, tol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if "labels" in name or tol == 0.0:
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol * max(1.0, np.abs(y).max()), err_msg=name)


@pytest.mark.parametrize("linkage", ["average", "single"])
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_repeated_runs_are_bitwise_identical(backend, problem, linkage):
    first = run_all(problem, linkage)
    second = run_all(problem, linkage)
    assert_same(first, second)


@pytest.mark.parametrize("linkage", ["average", "single"])
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_thread_counts_agree(backend, problem, linkage):
    with fastmlr.n_threads(1):
        one = run_all(problem, linkage)
    with fastmlr.n_threads(2):
        two = run_all(problem, linkage)
    assert_same(one, two, tol=TOL)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="one backend only")
@pytest.mark.parametrize("linkage", ["average", "single"])
def test_backends_agree(problem, linkage):
    results = {}
    for name in BACKENDS:
        with fastmlr.use_backend(name):
            results[name] = run_all(problem, linkage)
    ref = results[BACKENDS[0]]
    for name in BACKENDS[1:]:
        assert_same(results[name], ref, tol=TOL)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_fit_repeats_bitwise(backend, problem):
    from fastmlr.fit import fit

    light, _, light2 = problem["sets"]
    a = fit(light2, 4)
    b = fit(light2, 4)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)


def test_fit_agrees_across_threads_and_backends(problem):
    _, _, light2 = problem["sets"]
    fits = {}
    for name in BACKENDS:
        with fastmlr.use_backend(name):
            for threads in (1, 2):
                with fastmlr.n_threads(threads):
                    fits[name, threads] = fastmlr.fit(light2, 4)
    ref = fits[BACKENDS[0], 1]
    for key, m in fits.items():
        assert m.diagnostics["em_iterations"] == ref.diagnostics["em_iterations"], key
        for a, b in zip(m[:3], ref[:3]):
            np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=str(key))  # measured 2.2e-16


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sample_tasks_ignores_the_thread_count(dtype):
    W, s2, p = fastmlr.make_mixture(3, 5, seed=0)
    sizes = np.random.default_rng(0).integers(0, 40, size=6000)  # ~120k rows: several chunks
    runs = []
    for threads in (1, 2, 1):
        with fastmlr.n_threads(threads):
            runs.append(fastmlr.sample_tasks(W, s2, p, sizes, seed=5, dtype=dtype))
    assert runs[0].offsets[-1] > 3 * (1 << 15)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
