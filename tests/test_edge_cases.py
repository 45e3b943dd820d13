"""Numerical edge cases, each with its documented outcome, under every backend.

| case | outcome |
|---|---|
| two equal components | found as one component carrying their joint weight; the spare one takes few tasks |
| k above the rank of the data | the true components are recovered; the spare ones get small weights |
| rank-deficient X (k > rank X) | finite minimum-norm estimates; empty classes keep their start (FallbackWarning) |
| a component absent from the heavy set | not recoverable by Algorithm 1 (finite, wrong); fit() recovers it (EM over every task) |
| a cluster left empty at classification | keeps its start W, r2 (FallbackWarning); its p is 0 |
| a class with <= d rows at the refit | keeps its start (FallbackWarning), never a singular solve |
| noise-free tasks | W exact to rounding; s2 floored at eps * mean y^2, so predictions stay exact |
| constant features | a column of ones is recovered; a column of zeros gets a zero coefficient |
| inputs scaled by 1e-8 and 1e8 | y: same labels, estimates scale (1e-9); X: each stage equivariant, but Algorithm 1's cluster estimate assumes E[xx^T] = I (fit whitens: equivariant to EM's tolerance) |
| odd task sizes | halves/groups differ by one row; the estimates are as good as for even sizes |
| one-example tasks in a pool | refused by the subspace (named, counted); used by classify/predict; fit leaves them out of the subspace and heavy set and counts them |
| memory guards | refused before allocating, with the size and the option that avoids it |
"""

import tracemalloc
import warnings

import numpy as np
import pytest

import fastmlr
from fastmlr import _config

from helpers import BACKENDS

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


def three_sets(W, s2, p, *, seed=0, n1=20000, nH=200, tH=64, n2=2000, t2=16, heavy_p=None):
    light = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=n1, seed=seed + 1)
    heavy = fastmlr.sample_tasks(W, s2, p if heavy_p is None else heavy_p, tH, n_tasks=nH, seed=seed + 2)
    light2 = fastmlr.sample_tasks(W, s2, p, t2, n_tasks=n2, seed=seed + 3)
    return light, heavy, light2


def learn(sets, k, **kw):
    light, heavy, light2 = sets
    return fastmlr.meta_learn(light[:3], heavy[:3], light2[:3], k, **kw)


def nearest(W_hat, w):
    """Index and distance of the row of W_hat closest to w."""
    dist = np.linalg.norm(W_hat - w, axis=1)
    return int(np.argmin(dist)), float(dist.min())


def test_two_equal_components(backend):
    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    W[1] = W[0]
    m = learn(three_sets(W, s2, p), 3)
    i, dist = nearest(m.W, W[0])
    assert dist < 0.05  # measured 0.02: the pair is one component ...
    assert abs(m.p[i] - (p[0] + p[1])) < 0.1  # ... carrying their joint weight (measured 0.607 of 2/3)
    j, dist2 = nearest(m.W, W[2])
    assert j != i and dist2 < 0.05
    spare = ({0, 1, 2} - {i, j}).pop()
    assert m.p[spare] < 0.1  # measured 0.05
    assert np.all(np.isfinite(m.W)) and np.all(m.s2 > 0)


def test_k_above_the_number_of_components(backend):
    W, s2, p = fastmlr.make_mixture(2, 8, seed=0)
    m = learn(three_sets(W, s2, p), 4)
    assert fastmlr.parameter_error(m.W, W).max < 0.06  # measured 0.029
    perm = fastmlr.metrics.match_components(m.W, W)
    spare = sorted(set(range(4)) - set(perm.tolist()))
    assert m.p[spare].sum() < 0.1  # measured 0.037
    assert np.all(np.isfinite(m.W)) and np.all(m.s2 > 0)


def test_k_above_the_rank_of_X(backend):
    rng = np.random.default_rng(0)
    W, s2, p = fastmlr.make_mixture(2, 6, s2=0.01, seed=0)
    B = rng.standard_normal((2, 6)) / np.sqrt(6)  # X = Z B has rank 2 < k = 4 <= d

    def low_rank(t):
        X = np.ascontiguousarray(t.X[:, :2] @ B)
        y = np.einsum("ij,ij->i", X, W[np.repeat(t.z, np.diff(t.offsets))]) + 0.1 * rng.standard_normal(t.y.size)
        return X, y, t.offsets

    sets = [low_rank(t) for t in three_sets(W, s2, p)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlr.FallbackWarning)  # a class may end up empty
        m = fastmlr.meta_learn(*sets, 4)
    assert np.all(np.isfinite(m.W)) and np.abs(m.W).max() < 10  # minimum-norm, not blown up
    # only X w is identifiable: its coefficients on the 2 latent coordinates are
    # recovered for every used class (one true component is split among the spares)
    used = np.flatnonzero(m.p > 0)
    fitted = B @ m.W[used].T  # (2, used)
    truth = B @ W.T
    err = np.linalg.norm(fitted[:, :, None] - truth[:, None, :], axis=0).min(axis=1)
    assert err.max() < 0.1, err  # measured 0.03
    assert np.all(m.s2[used] > 0.005) and np.all(m.s2[used] < 0.02)  # noise 0.1^2


def test_component_absent_from_the_heavy_set(backend):
    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    m = learn(three_sets(W, s2, p, heavy_p=[0.5, 0.5, 0.0]), 3)
    # Algorithm 1 cannot find a component its heavy set never shows: the clustering must
    # split a present one, and the classification cannot create the missing one.
    assert nearest(m.cluster.W, W[2])[1] > 0.5  # measured 1.4: no cluster is near it
    # the classification then cannot recover it reliably (measured 0.28 here, 0.94 with
    # another heavy sample, against 0.03 when it is present)
    assert nearest(m.W, W[2])[1] > 0.1
    assert np.all(np.isfinite(m.W)) and np.all(m.s2 > 0) and abs(m.p.sum() - 1) < 1e-12


def test_component_only_in_small_tasks_is_recovered_by_fit(backend):
    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    big = fastmlr.sample_tasks(W, s2, [0.5, 0.5, 0.0], 64, n_tasks=200, seed=2)  # no large task of component 2
    small = fastmlr.sample_tasks(W, s2, p, 6, n_tasks=6000, seed=3)
    X = np.vstack([big.X, small.X])
    y = np.concatenate([big.y, small.y])
    off = np.concatenate([big.offsets, big.offsets[-1] + small.offsets[1:]])
    model = fastmlr.fit((X, y, off), 3)
    assert nearest(model.W, W[2])[1] < 0.1  # measured 0.028: EM over every task finds it
    assert fastmlr.parameter_error(model.W, W).max < 0.1


def test_cluster_left_empty_keeps_its_start(backend, small_problem):
    light2 = small_problem["light2"]
    W0 = np.vstack([small_problem["W"], 100.0 * np.ones((1, 16))])  # no task fits component 4
    r2 = np.ones(5)
    with pytest.warns(fastmlr.FallbackWarning, match=r"components \[4\]"):
        r = fastmlr.classify_tasks(light2[:3], W0, r2)
    assert not np.any(r.labels == 4) and r.p[4] == 0
    np.testing.assert_array_equal(r.W[4], W0[4])
    assert r.s2[4] == r2[4]
    assert fastmlr.parameter_error(r.W[:4], small_problem["W"]).max < 0.1


def test_class_with_fewer_rows_than_d_keeps_its_start(backend, small_problem):
    W, light2 = small_problem["W"], small_problem["light2"]
    start = np.vstack([W, 50.0 * np.eye(16)[:1]])  # a fifth start far from every task
    rng = np.random.default_rng(0)
    Xs = [light2.X[light2.offsets[i]:light2.offsets[i + 1]] for i in range(light2.offsets.size - 1)]
    ys = [light2.y[light2.offsets[i]:light2.offsets[i + 1]] for i in range(light2.offsets.size - 1)]
    for _ in range(3):  # three tasks of 3 rows fitting it: 9 rows for d = 16 unknowns
        Xt = rng.standard_normal((3, 16))
        Xs.append(Xt)
        ys.append(Xt @ start[4] + 0.1 * rng.standard_normal(3))
    X, y, off = fastmlr.pack_tasks(Xs, ys)
    with pytest.warns(fastmlr.FallbackWarning, match=r"components \[4\] have no more rows than d = 16 \(\[9\.0\]\)"):
        r = fastmlr.classify_tasks((X, y, off), start, np.ones(5))
    np.testing.assert_array_equal(np.flatnonzero(r.labels == 4), [2000, 2001, 2002])
    np.testing.assert_array_equal(r.W[4], start[4])  # kept, not a singular solve
    assert r.s2[4] == 1.0 and r.p[4] == 3 / 2003
    assert np.all(np.isfinite(r.W)) and fastmlr.parameter_error(r.W[:4], W).max < 0.1


def test_noise_free_tasks(backend):
    W, s2, p = fastmlr.make_mixture(3, 8, s2=0.0, seed=0)
    sets = three_sets(W, s2, p)
    m = learn(sets, 3)
    assert fastmlr.parameter_error(m.W, W).max < 1e-12  # measured 1.5e-15
    assert fastmlr.clustering_accuracy(m.classify.labels, sets[2].z) == 1.0
    mean_y2 = float(np.mean(sets[2].y ** 2))
    # s2 is floored at the rounding level of the normal equations, never 0 or denormal
    assert np.all(m.s2 > 0.1 * np.finfo(np.float64).eps * mean_y2) and np.all(m.s2 < 1e-12)
    new = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=50, seed=5)
    B = fastmlr.predict_params(new[:3], m.W, m.s2, m.p, method="bayes")
    assert np.abs(B - W[new.z]).max() < 1e-12  # with a denormal floor this was 0.96


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_constant_feature(backend, value):
    W, s2, p = fastmlr.make_mixture(3, 8, s2=0.25, seed=0)
    if value == 0.0:
        W[:, 0] = 0.0  # nothing to learn on a zero column

    def const(t):
        w_rows = W[np.repeat(t.z, np.diff(t.offsets))]
        noise = t.y - np.einsum("ij,ij->i", t.X, w_rows)
        X = t.X.copy()
        X[:, 0] = value
        return X, np.einsum("ij,ij->i", X, w_rows) + noise, t.offsets

    sets = [const(t) for t in three_sets(W, s2, p)]
    m = fastmlr.meta_learn(*sets, 3)
    assert fastmlr.parameter_error(m.W, W).max < 0.1  # measured 0.03 (ones), 0.03 (zeros)
    if value == 0.0:
        assert np.abs(m.W[:, 0]).max() < 1e-12  # the minimum-norm solution of a singular system


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_scaled_inputs(backend, scale):
    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    sets = three_sets(W, s2, p, n1=5000, nH=100, n2=500)
    base = learn(sets, 3)
    # y scaled: Algorithm 1 is equivariant -- same labels, W scaled, s2 scaled squared
    m = fastmlr.meta_learn(*[(t.X, t.y * scale, t.offsets) for t in sets], 3)
    np.testing.assert_array_equal(m.cluster.labels, base.cluster.labels)
    np.testing.assert_array_equal(m.classify.labels, base.classify.labels)
    np.testing.assert_allclose(m.W, base.W * scale, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(m.s2, base.s2 * scale**2, rtol=1e-9)
    np.testing.assert_array_equal(m.p, base.p)
    # X scaled: the subspace and the classification are equivariant stage by stage ...
    light, heavy, light2 = sets
    U = fastmlr.estimate_subspace((light.X * scale, light.y, light.offsets), 3)
    np.testing.assert_allclose(U, base.U, atol=1e-9)
    r = fastmlr.classify_tasks((light2.X * scale, light2.y, light2.offsets), base.cluster.W / scale, base.cluster.s2)
    np.testing.assert_array_equal(r.labels, base.classify.labels)
    np.testing.assert_allclose(r.W, base.W / scale, rtol=1e-9, atol=1e-9 / scale)
    # ... but the clustering's first estimate is E[y x] = E[x x^T] w, which is w only for
    # isotropic x (the paper's model): scaled X needs the whitening that fit() applies
    c = fastmlr.cluster_tasks((heavy.X * scale, heavy.y, heavy.offsets), base.U, 3)
    np.testing.assert_allclose(c.W, base.cluster.W * scale, rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_scaled_inputs_fit(backend, scale):
    from fastmlr.fit import fit

    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    pool = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(0).integers(2, 30, size=1000), seed=1)
    base = fit(pool[:3], 3)
    mx = fit((pool.X * scale, pool.y, pool.offsets), 3)
    my = fit((pool.X, pool.y * scale, pool.offsets), 3)
    # equivariant up to EM's relative stopping rule (measured 1e-6 and 1e-4)
    np.testing.assert_allclose(mx.W * scale, base.W, atol=1e-3)
    np.testing.assert_allclose(my.W / scale, base.W, atol=1e-3)
    np.testing.assert_allclose(my.s2 / scale**2, base.s2, rtol=1e-3)


def test_odd_task_sizes(backend):
    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    errs = {}
    for t in (3, 4, 5):
        light = fastmlr.sample_tasks(W, s2, p, t, n_tasks=40000, seed=t)
        errs[t] = fastmlr.subspace_error(fastmlr.estimate_subspace(light[:3], 3), W)
    assert max(errs.values()) < 0.1, errs  # every row is used; halves differ by one
    for tH in (63, 64, 65):
        heavy = fastmlr.sample_tasks(W, s2, p, tH, n_tasks=150, seed=tH)
        U = np.linalg.qr(W.T)[0]
        for L in (1, 2, 3):  # 2L groups of unequal sizes
            c = fastmlr.cluster_tasks(heavy[:3], U, 3, L=L)
            assert fastmlr.clustering_accuracy(c.labels, heavy.z) >= 0.98, (tH, L)  # measured >= 0.993


def test_one_example_tasks_in_a_pool(backend):
    W, s2, p = fastmlr.make_mixture(2, 6, seed=0)
    sizes = np.r_[np.full(300, 1), np.full(3000, 6), np.full(100, 40)]
    pool = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(0).permutation(sizes), seed=1)
    # stages that cannot use them refuse, naming how many
    with pytest.raises(ValueError, match="subspace tasks: 300 of 3400 tasks have fewer than 2 rows"):
        fastmlr.estimate_subspace(pool[:3], 2)
    U = np.linalg.qr(W.T)[0]
    with pytest.raises(ValueError, match="heavy tasks: 300 of 3400 tasks have fewer than 2 rows"):
        fastmlr.cluster_tasks(pool[:3], U, 2)
    # the stages that can use them do: classification, posterior, prediction
    r = fastmlr.classify_tasks(pool[:3], W, s2, p)
    assert r.labels.shape == (3400,) and fastmlr.parameter_error(r.W, W).max < 0.1
    post = fastmlr.posterior(pool[:3], W, s2, p)
    assert np.all(np.isfinite(post)) and np.allclose(post.sum(axis=1), 1)


def test_fit_leaves_one_example_tasks_out_of_the_spectral_steps_and_counts_them(backend):
    from fastmlr.fit import fit

    W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    sizes = np.r_[np.full(300, 1), np.full(300, 8), np.full(40, 40), np.full(5, 0)]
    pool = fastmlr.sample_tasks(W, s2, p, sizes, seed=3)
    model = fit(pool[:3], 2)
    diag = model.diagnostics
    assert diag["n_tasks"] == 640 and diag["empty_tasks_ignored"] == 5
    assert diag["roles"]["subspace_tasks"] == 340  # the 300 one-example tasks are left out
    assert diag["roles"]["heavy_min_rows"] >= 2
    assert fastmlr.parameter_error(model.W, W).max < 0.1  # measured 0.04


# ---------------------------------------------------------------------------------
# memory guards: refused before allocating, with the size and the way around


def refused_without_allocating(fn, *args, match, **kwargs):
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=match) as info:
            fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"allocated {peak / 2**20:.0f} MiB before refusing"
    assert "GiB" in str(info.value) and "MAX_WORK_BYTES" in str(info.value)
    return str(info.value)


def test_guard_cluster_distance_matrix(backend):
    n = 10**6  # an n x n matrix of 7.3 TiB
    off = np.arange(n + 1, dtype=np.int64) * 2
    X = np.zeros((2 * n, 1))
    with pytest.raises(MemoryError, match=r"1000000 x 1000000 distance matrix of 7450.6 GiB.*fewer heavy tasks"):
        fastmlr.cluster_tasks((X, X[:, 0], off), np.ones((1, 1)), 2)


def test_guard_sample_tasks(backend):
    W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    refused_without_allocating(fastmlr.sample_tasks, W, s2, p, 10**9, n_tasks=10**4,
                               match=r"sampling 10000000000000 rows.*fewer or smaller tasks.*float32")
    refused_without_allocating(fastmlr.sample_tasks, W, s2, p, 4, n_tasks=10**13, match=r"n_tasks = .* fewer tasks")


def test_guard_make_mixture(backend):
    refused_without_allocating(fastmlr.make_mixture, 4, 10**12, match=r"mixture of \(k, d\).*smaller k or d")


def test_guard_normal_equations(backend):
    k, d = 64, 5000  # k d^2 float64 = 12 GiB
    X = np.ones((2, d))
    msg = refused_without_allocating(fastmlr.classify_tasks, (X, np.ones(2), [0, 2]), np.zeros((k, d)), np.ones(k),
                                     match=r"normal equations of k = 64 classes in d = 5000")
    assert "fewer components or fewer features" in msg


def test_guard_moment_matrix(backend):
    d = 20000
    refused_without_allocating(fastmlr.estimate_subspace, (np.ones((2, d)), np.ones(2), [0, 2]), 1,
                               match=r"\(d, d\) = \(20000, 20000\) moment matrix.*fewer features")


def test_guard_scores_and_posterior(backend, monkeypatch):
    monkeypatch.setattr(_config, "MAX_WORK_BYTES", 1 << 20)
    n, k = 10000, 8
    X, y, off = np.ones((n, 1)), np.ones(n), np.arange(n + 1)
    W, s2 = np.ones((k, 1)), np.ones(k)
    # classification scores one chunk of tasks at a time: no (n, k) matrix, no refusal
    assert fastmlr.classify_tasks((X, y, off), W, s2).labels.shape == (n,)
    for fn in (fastmlr.posterior, fastmlr.predict.log_likelihoods, fastmlr.predict_params):
        with pytest.raises(MemoryError, match=r"\(n, k\) = \(10000, 8\) log-likelihoods.*in batches"):
            fn((X, y, off), W, s2, np.ones(k))


def test_guard_confusion_table(backend):
    n = 10**5  # 10^5 distinct labels on each side: a 75 GiB table
    refused_without_allocating(fastmlr.clustering_accuracy, np.arange(n), np.arange(n)[::-1].copy(),
                               match=r"confusion table.*fewer distinct labels")
