"""Each stage recovers its target on small seeded problems, with margin.

Bars are set from the measured values on these seeds (in comments) and are far
from what a broken stage gives (a random subspace of dimension 4 in d = 16 misses a
component by ~0.87; random labels cluster ~25-40% of tasks).
"""

import warnings

import numpy as np
import pytest

import fastmlr
from fastmlr.classify import FallbackWarning

from helpers import BACKENDS


@pytest.fixture(scope="module")
def U(small_problem):
    return fastmlr.estimate_subspace(small_problem["light"][:3], 4)


def test_subspace_recovers_span(small_problem, U):
    W = small_problem["W"]
    assert U.shape == (16, 4)
    np.testing.assert_allclose(U.T @ U, np.eye(4), atol=1e-12)
    assert fastmlr.subspace_error(U, W) < 0.2  # measured 0.096


def test_second_moment_is_unbiased(small_problem):
    W, p = small_problem["W"], small_problem["p"]
    M = fastmlr.subspace.second_moment(small_problem["light"][:3])
    np.testing.assert_array_equal(M, M.T)
    truth = (W.T * p) @ W
    assert np.abs(M - truth).max() < 0.05  # measured ~0.02; entries of truth are O(0.25)


def test_subspace_odd_sizes_and_eigenvalues():
    W, s2, p = fastmlr.make_mixture(2, 6, seed=5)
    sizes = np.where(np.arange(30000) % 2 == 0, 3, 5)
    X, y, off, _ = fastmlr.sample_tasks(W, s2, p, sizes, seed=6)
    U, ev = fastmlr.estimate_subspace((X, y, off), 2, return_eigenvalues=True)
    assert ev.shape == (6,) and np.all(np.diff(ev) <= 0)
    assert ev[1] > 0.3 and abs(ev[2]) < 0.05  # truth: 0.5, 0.5, then 0
    assert fastmlr.subspace_error(U, W) < 0.1


def test_subspace_errors(small_problem):
    X, y, off = small_problem["light"][:3]
    with pytest.raises(ValueError, match="k is 17; expected k <= 16"):
        fastmlr.estimate_subspace((X, y, off), 17)
    with pytest.raises(ValueError, match="fewer than 2 rows"):
        fastmlr.estimate_subspace((X[:5], y[:5], np.array([0, 1, 5])), 1)


def assert_reports_bad_values(calls, X, y, cases):
    """Each ``(name, row, col, value)`` put into a copy of X or y (col None for y) makes
    every ``call(X, y)`` raise the up-front check's error: the argument and the index
    of the value in the whole array."""
    for name, row, col, value in cases:
        Xb, yb = X.copy(), y.copy()
        if name == "X":
            Xb[row, col] = value
            where = rf"\({row}, {col}\)"
        else:
            yb[row] = value
            where = rf"\({row},\)"
        for call in calls:
            with pytest.raises(ValueError, match=rf"{name} contains NaN or inf \(first at index {where}\)"):
                call(Xb, yb)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subspace_finds_every_non_finite_value(backend, dtype):
    # the stage reads X once: NaN and inf are found through the kernel's group means
    rng = np.random.default_rng(4)
    off = np.arange(0, 3001, 3)
    X = rng.standard_normal((3000, 5)).astype(dtype)
    y = rng.standard_normal(3000).astype(dtype)
    X[1234] = 0.0  # x = 0 where y is inf below, and y = 0 where x is inf: inf * 0 is NaN, still caught
    y[2345] = 0.0
    assert_reports_bad_values([lambda Xb, yb: fastmlr.estimate_subspace((Xb, yb, off), 2)], X, y,
                              [("X", 7, 2, np.nan), ("X", 2999, 4, np.inf), ("X", 2345, 1, -np.inf),
                               ("y", 0, None, np.nan), ("y", 1234, None, np.inf)])
    big = np.finfo(dtype).max / 4
    with pytest.raises(ValueError, match="overflowed"):  # finite, but y*x overflows
        fastmlr.estimate_subspace((np.full((6, 2), big, dtype=dtype), np.full(6, big, dtype=dtype), [0, 3, 6]), 1)
    assert fastmlr.estimate_subspace((X, y, off), 2).shape == (5, 2)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cluster_finds_every_non_finite_value(backend, dtype):
    # the clustering stage reads X once too: NaN and inf are found through the group means
    rng = np.random.default_rng(7)
    off = np.arange(0, 401, 8)
    X = rng.standard_normal((400, 4)).astype(dtype)
    y = rng.standard_normal(400).astype(dtype)
    X[100] = 0.0  # as above: inf * 0 is NaN, still caught
    y[300] = 0.0
    U = np.eye(4)[:, :2]
    assert_reports_bad_values([lambda Xb, yb: fastmlr.cluster_tasks((Xb, yb, off), U, 2),
                               lambda Xb, yb: fastmlr.cluster.distance_matrix((Xb, yb, off), U)], X, y,
                              [("X", 3, 1, np.nan), ("X", 399, 3, np.inf), ("X", 300, 0, -np.inf),
                               ("y", 0, None, np.nan), ("y", 100, None, np.inf)])
    assert fastmlr.cluster_tasks((X, y, off), U, 2).W.shape == (2, 4)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_classify_finds_every_non_finite_value(backend, dtype):
    # classification reads X once: NaN and inf are found through the residual sums and
    # the normal equations
    rng = np.random.default_rng(8)
    off = np.arange(0, 601, 6)
    X = rng.standard_normal((600, 4)).astype(dtype)
    y = rng.standard_normal(600).astype(dtype)
    W = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # zeros: X W^T may skip a column
    assert_reports_bad_values([lambda Xb, yb: fastmlr.classify_tasks((Xb, yb, off), W, np.ones(2))], X, y,
                              [("X", 5, 3, np.nan), ("X", 599, 2, np.inf), ("X", 300, 0, -np.inf),
                               ("y", 0, None, np.nan), ("y", 421, None, -np.inf)])
    assert fastmlr.classify_tasks((X, y, off), W, np.ones(2)).W.shape == (2, 4)


@pytest.mark.parametrize("linkage", ["average", "single"])
def test_cluster_recovers_components(small_problem, U, linkage):
    W, heavy = small_problem["W"], small_problem["heavy"]
    if linkage == "single":  # chaining needs cleaner distances: longer tasks
        heavy = fastmlr.sample_tasks(W, small_problem["s2"], small_problem["p"], 512, n_tasks=100, seed=9)
    c = fastmlr.cluster_tasks(heavy[:3], U, 4, linkage=linkage)
    assert fastmlr.clustering_accuracy(c.labels, heavy.z) == 1.0
    assert fastmlr.parameter_error(c.W, W).max < 0.25  # measured 0.12 (average)
    np.testing.assert_allclose(c.s2, 1.0, atol=0.2)
    np.testing.assert_allclose(c.p.sum(), 1.0)
    assert c.labels[0] == 0


def test_cluster_L_greater_than_one(small_problem, U):
    heavy = small_problem["heavy"]
    c = fastmlr.cluster_tasks(heavy[:3], U, 4, L=3)
    assert fastmlr.clustering_accuracy(c.labels, heavy.z) > 0.95


def test_distance_matrix_separates_components(small_problem, U):
    heavy = small_problem["heavy"]
    H, P = fastmlr.cluster.distance_matrix(heavy[:3], U, L=2)
    assert P.shape == (200, 4, 4)
    same = heavy.z[:, None] == heavy.z[None, :]
    off = ~np.eye(200, dtype=bool)
    # E[H] is 0 within a component and ||w_i - w_j||^2 = 2 across
    assert abs(H[same & off].mean()) < 0.1 and abs(H[~same].mean() - 2.0) < 0.2


def test_cluster_errors(small_problem, U):
    X, y, off = small_problem["heavy"][:3]
    with pytest.raises(ValueError, match="L is 40 but the smallest heavy task has 64 rows"):
        fastmlr.cluster_tasks((X, y, off), U, 4, L=40)
    with pytest.raises(ValueError, match="linkage is 'ward'"):
        fastmlr.cluster_tasks((X, y, off), U, 4, linkage="ward")
    with pytest.raises(ValueError, match="U has shape \\(3, 4\\)"):
        fastmlr.cluster_tasks((X, y, off), U[:3], 4)
    with pytest.raises(ValueError, match="k is 201; expected k <= 200"):
        fastmlr.cluster_tasks((X, y, off), U, 201)
    with pytest.raises(ValueError, match="L is 0"):
        fastmlr.cluster_tasks((X, y, off), U, 4, L=0)


def test_cluster_memory_guard(monkeypatch, small_problem, U):
    monkeypatch.setattr(fastmlr._config, "MAX_WORK_BYTES", 1000)
    with pytest.raises(MemoryError, match="200 x 200 distance matrix"):
        fastmlr.cluster_tasks(small_problem["heavy"][:3], U, 4)


def test_classify_refines(small_problem, U):
    W, heavy, light2 = small_problem["W"], small_problem["heavy"], small_problem["light2"]
    c = fastmlr.cluster_tasks(heavy[:3], U, 4)
    r = fastmlr.classify_tasks(light2[:3], c.W, c.s2)
    assert fastmlr.clustering_accuracy(r.labels, light2.z) > 0.97  # measured 0.9885
    err = fastmlr.parameter_error(r.W, W)
    assert err.max < 0.1  # measured 0.051; the clustering estimate was 0.12
    np.testing.assert_allclose(r.s2, 1.0, atol=0.1)
    np.testing.assert_allclose(r.p, 0.25, atol=0.03)


def test_classify_fallback_for_small_class():
    W, s2, p = fastmlr.make_mixture(2, 8, seed=0)
    X, y, off, z = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=50, seed=1)
    W0 = np.vstack([W[0], 10 + W[1]])  # nobody goes to component 1
    with pytest.warns(FallbackWarning, match="components \\[1\\]"):
        r = fastmlr.classify_tasks((X, y, off), W0, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(r.W[1], W0[1])
    assert r.p[1] == 0 and r.s2[1] == 1.0


def test_classify_errors(small_problem):
    X, y, off = small_problem["light2"][:3]
    W = small_problem["W"]
    with pytest.raises(ValueError, match="s2 must hold finite positive"):
        fastmlr.classify_tasks((X, y, off), W, -np.ones(4))
    with pytest.raises(ValueError, match="W has shape \\(4, 15\\)"):
        fastmlr.classify_tasks((X, y, off), W[:, :15], np.ones(4))
    with pytest.raises(ValueError, match="s2 must be a real array of shape \\(4,\\)"):
        fastmlr.classify_tasks((X, y, off), W, np.ones(3))


def test_meta_learn_end_to_end_and_deterministic(small_problem):
    sp = small_problem
    args = (sp["light"][:3], sp["heavy"][:3], sp["light2"][:3], 4)
    m = fastmlr.meta_learn(*args)
    assert fastmlr.parameter_error(m.W, sp["W"]).max < 0.1
    assert set(m.seconds) == {"subspace", "cluster", "classify"}
    m2 = fastmlr.meta_learn(*args)
    for a, b in zip(m[:4], m2[:4]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="heavy is an array of shape .*expected a task set"):
        fastmlr.meta_learn(sp["light"][:3], sp["heavy"][0], sp["light2"][:3], 4)


def test_float32_matches_float64(small_problem):
    sp = small_problem
    f32 = [tuple(a.astype(np.float32) if a.dtype.kind == "f" else a for a in s[:3]) for s in (sp["light"], sp["heavy"], sp["light2"])]
    m64 = fastmlr.meta_learn(sp["light"][:3], sp["heavy"][:3], sp["light2"][:3], 4)
    m32 = fastmlr.meta_learn(*f32, 4)
    np.testing.assert_array_equal(m32.classify.labels, m64.classify.labels)
    np.testing.assert_allclose(m32.W, m64.W, atol=1e-4)


def test_posterior_and_prediction(small_problem):
    W, s2, p = small_problem["W"], small_problem["s2"], small_problem["p"]
    X, y, off, z = fastmlr.sample_tasks(W, s2, p, 40, n_tasks=300, seed=4)
    post = fastmlr.posterior((X, y, off), W, s2, p)
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    assert (post.argmax(axis=1) == z).mean() > 0.99
    B_map = fastmlr.predict_params((X, y, off), W, s2, p, method="map")
    B_bayes = fastmlr.predict_params((X, y, off), W, s2, p)
    np.testing.assert_array_equal(B_map, W[post.argmax(axis=1)])
    np.testing.assert_allclose(B_bayes, post @ W)
    # a task with no rows gets the prior
    X0, y0 = np.zeros((0, 16)), np.zeros(0)
    prior = fastmlr.posterior((X0, y0, np.array([0, 0])), W, s2, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(prior, [[0.1, 0.2, 0.3, 0.4]])
    with pytest.raises(ValueError, match="method is 'mean'"):
        fastmlr.predict_params((X, y, off), W, s2, p, method="mean")


def test_bayes_beats_map_on_tiny_tasks(small_problem):
    W, s2, p = small_problem["W"], small_problem["s2"], small_problem["p"]
    X, y, off, z = fastmlr.sample_tasks(W, s2, p, 2, n_tasks=4000, seed=8)
    err = {}
    for method in ("map", "bayes"):
        B = fastmlr.predict_params((X, y, off), W, s2, p, method=method)
        err[method] = np.mean(np.sum((B - W[z]) ** 2, axis=1))
    assert err["bayes"] < 0.9 * err["map"]


def test_metrics():
    W = np.eye(3)
    assert fastmlr.parameter_error(W[[2, 0, 1]], W).max == 0.0
    np.testing.assert_array_equal(fastmlr.metrics.match_components(W[[2, 0, 1]], W), [1, 2, 0])
    assert fastmlr.clustering_accuracy([1, 1, 0, 0], [0, 0, 1, 1]) == 1.0
    assert fastmlr.clustering_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == 0.75
    assert fastmlr.subspace_error(np.eye(3)[:, :2], W) == pytest.approx(1.0)


def test_distance_matrix_overflow_is_reported():
    # group means near 1e155 are finite, their inner products are not: H overflows, and
    # the bound 4 r max|P|^2 that lets the stage skip reading H is infinite here
    X = np.array([[1.0, 0.5], [0.5, 1.0], [-1.0, 0.2], [0.3, -1.0]])
    y = np.full(4, 1e155)
    with pytest.raises(ValueError, match="the distance matrix H overflowed"):
        fastmlr.cluster.distance_matrix((X, y, [0, 2, 4]), np.eye(2))
    H = fastmlr.cluster.distance_matrix((X, y * 1e-150, [0, 2, 4]), np.eye(2))[0]  # same shape, finite
    assert np.all(np.isfinite(H)) and H[0, 1] == H[1, 0] != 0.0


def test_float32_overflow_names_the_precision_and_warns_nothing():
    # finite float32 data whose squares pass float32's range: BLAS forms the sums in
    # float32, so the message names float32 and points to float64; no RuntimeWarning leaks
    W, s2, p = fastmlr.make_mixture(k=2, d=4, seed=0)
    S = fastmlr.sample_tasks(W, s2, p, 8, n_tasks=200, seed=2)
    X32, y32 = (S.X * 1e18).astype(np.float32), S.y.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="normal equations X\\^T X overflowed float32.*pass float64"):
            fastmlr.classify_tasks((X32, y32, S.offsets), W / 1e18, s2)
        with pytest.raises(ValueError, match="moment matrix M overflowed float32.*pass float64"):
            fastmlr.estimate_subspace(((S.X * 1e19).astype(np.float32), y32, S.offsets), 2)
    res = fastmlr.classify_tasks((S.X * 1e18, S.y, S.offsets), W / 1e18, s2)  # float64: fine
    assert np.all(np.isfinite(res.W)) and res.labels.size == S.offsets.size - 1


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_float32_variances_survive_small_noise(backend):
    # y'y - 2 w.X'y + w'X'X w cancels when the noise is small beside the signal: with the
    # sums in float32 the variances were 1% off at noise 1e-2 and 86% at 1e-3.  The
    # residual sums are then recomputed from the rows, in float64 -- also for a stream
    W, s2, p = fastmlr.make_mixture(4, 16, seed=0, s2=1e-6)
    S = fastmlr.sample_tasks(W, s2, p, 16, n_tasks=3000, seed=3)
    X32, y32 = S.X.astype(np.float32), S.y.astype(np.float32)
    r2 = np.full(4, 2e-6)
    want = fastmlr.classify_tasks((X32.astype(np.float64), y32.astype(np.float64), S.offsets), W, r2)
    got = fastmlr.classify_tasks((X32, y32, S.offsets), W, r2)
    streamed = fastmlr.classify_tasks(fastmlr.TaskStream([(X32[:20000], y32[:20000], S.offsets[S.offsets <= 20000]),
                                                          (X32[20000:], y32[20000:], S.offsets[S.offsets >= 20000] - 20000)]),
                                      W=W, s2=r2)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.s2, want.s2, rtol=1e-4)
    np.testing.assert_allclose(streamed.s2, want.s2, rtol=1e-4)
    np.testing.assert_allclose(got.s2, s2, rtol=0.1)  # and they estimate the truth
