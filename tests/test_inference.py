"""Standard errors (fastmlr.inference) and predictive intervals (fastmlr.predictive)."""


import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import fastmlr
from fastmlr import inference
from fastmlr.metrics import match_components
from fastmlr.inference import _task_terms, information, standard_errors
from fastmlr.synthetic import pool_sizes, simulate_pool
from fastmlr.predictive import mixture_interval, mixture_quantile, predictive

Z95 = 1.959963984540054


def _pool(k, d, n, seed):
    sim = simulate_pool(k=k, d=d, n_tasks=n, seed=seed)
    tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    return sim, tasks, fastmlr.fit(tasks, k=k)


@pytest.fixture(scope="module")
def small():
    return _pool(3, 4, 600, 1)


def _loglik(tasks, k, d, theta):
    W = theta[:k * d].reshape(k, d)
    s2 = theta[k * d:k * d + k]
    p = np.append(theta[k * d + k:], 1.0 - theta[k * d + k:].sum())
    X, y, off = tasks
    return _task_terms(np.asarray(X, float), np.asarray(y, float), off, W, s2, p, need_u=False).loglik


def test_louis_information_is_minus_the_hessian(small):
    _, tasks, model = small
    k, d = model.W.shape
    theta = np.concatenate([model.W.ravel(), model.s2, model.p[:-1]])
    P = theta.size
    h = 1e-4
    H = np.zeros((P, P))
    for a in range(P):
        for b in range(a, P):
            ea, eb = np.zeros(P), np.zeros(P)
            ea[a] = eb[b] = h
            f = lambda v: _loglik(tasks, k, d, v)  # noqa: E731
            H[a, b] = H[b, a] = (f(theta + ea + eb) - f(theta + ea - eb) - f(theta - ea + eb)
                                 + f(theta - ea - eb)) / (4 * h * h)
    info = information(tasks, model)
    assert info.full.shape == (k * d + 2 * k - 1,) * 2
    np.testing.assert_allclose(info.full, -H, rtol=0, atol=1e-5 * np.abs(H).max())
    assert info.loglik == pytest.approx(model.diagnostics["loglik"], rel=1e-9)


def test_empirical_information_is_the_sum_of_score_outer_products(small):
    _, tasks, model = small
    k, d = model.W.shape
    X, y, off = tasks
    P = k * d + 2 * k - 1
    h = 1e-6
    theta = np.concatenate([model.W.ravel(), model.s2, model.p[:-1]])
    S = np.zeros((off.size - 1, P))  # per-task scores by central differences, a few tasks
    idx = np.arange(0, off.size - 1, 60)
    for i in idx:
        one = (X[off[i]:off[i + 1]], y[off[i]:off[i + 1]], np.array([0, off[i + 1] - off[i]]))
        for a in range(P):
            e = np.zeros(P)
            e[a] = h
            S[i, a] = (_loglik(one, k, d, theta + e) - _loglik(one, k, d, theta - e)) / (2 * h)
    sub = fastmlr.pack_tasks([X[off[i]:off[i + 1]] for i in idx], [y[off[i]:off[i + 1]] for i in idx])
    emp = information(sub, model, method="empirical").full
    np.testing.assert_allclose(emp, S[idx].T @ S[idx], rtol=1e-5, atol=1e-6 * np.abs(emp).max())


def test_blocks_are_the_diagonal_blocks_of_the_full_information(small):
    _, tasks, model = small
    for method in ("louis", "empirical"):
        full = information(tasks, model, method=method, blocks=False)
        blk = information(tasks, model, method=method, blocks=True)
        assert blk.full is None
        np.testing.assert_allclose(blk.comp, full.comp, rtol=1e-10, atol=1e-10 * np.abs(full.comp).max())
        np.testing.assert_allclose(blk.cross, full.cross, rtol=1e-10, atol=1e-10 * np.abs(full.cross).max())
        if method == "louis":
            np.testing.assert_allclose(blk.pp, full.pp, rtol=1e-10)
    se = standard_errors(tasks, model, blocks=True)
    assert se.cov is None and se.cov_W.shape == (3, 4, 4)


def test_stream_and_chunks_give_the_same_information(small, monkeypatch):
    _, tasks, model = small
    X, y, off = tasks
    ref = information(tasks, model).full
    monkeypatch.setattr(inference, "_CHUNK_ROWS", 100)  # many chunks of whole tasks
    np.testing.assert_allclose(information(tasks, model).full, ref, rtol=1e-10)
    half = (off.size - 1) // 2
    cut = off[half]
    stream = fastmlr.TaskStream([(X[:cut], y[:cut], off[:half + 1]), (X[cut:], y[cut:], off[half:] - cut)])
    np.testing.assert_allclose(information(stream, model).full, ref, rtol=1e-10)


def test_standard_errors_follow_the_model_order(small):
    _, tasks, model = small
    se = standard_errors(tasks, model)
    order = np.array([2, 0, 1])
    perm = model._replace(W=model.W[order], s2=model.s2[order], p=model.p[order])
    se2 = standard_errors(tasks, perm)
    np.testing.assert_allclose(se2.W, se.W[order], rtol=1e-8)
    np.testing.assert_allclose(se2.s2, se.s2[order], rtol=1e-8)
    np.testing.assert_allclose(se2.p, se.p[order], rtol=1e-8)
    # p_k by the delta method: the weights sum to one, so Var(p_k) = 1' Cov(p_1..k-1) 1
    cov_pp = se.cov[-2:, -2:]
    assert se.p[-1] == pytest.approx(np.sqrt(cov_pp.sum()))
    assert se.W.shape == model.W.shape and se.method == "louis"


def test_coverage_small_version():
    """Nominal 95% coefficient intervals and 90% predictive intervals, 40 seeded pools
    (k = 3, d = 4; 480 coefficients, 2,000 query rows; measured 95.4% and 88.4%)."""
    hit_w = hit_q = n_w = n_q = 0
    for seed in range(40):
        sim, tasks, model = _pool(3, 4, 600, seed)
        perm = match_components(model.W, sim["W"])
        se = standard_errors(tasks, model)
        hit_w += int(np.sum(np.abs(model.W[perm] - sim["W"]) <= Z95 * se.W[perm]))
        n_w += sim["W"].size
        sizes = pool_sizes(50, 4, 32, seed=10**6 + seed)
        S = fastmlr.sample_tasks(sim["W"], sim["s2"], sim["p"], sizes + 1, seed=2 * 10**6 + seed)
        last = S.offsets[1:] - 1
        keep = np.setdiff1d(np.arange(S.y.size), last)
        support = (S.X[keep], S.y[keep], np.concatenate([[0], np.cumsum(sizes)]))
        lo, hi = predictive(support, S.X[last], np.arange(50), model).interval(0.9)
        hit_q += int(np.sum((S.y[last] >= lo) & (S.y[last] <= hi)))
        n_q += 50
    assert 0.92 <= hit_w / n_w <= 0.98
    assert 0.86 <= hit_q / n_q <= 0.94


def test_bootstrap_agrees_with_louis_within_15_percent():
    _, tasks, model = _pool(4, 8, 1500, 0)
    lo = standard_errors(tasks, model)
    bs = standard_errors(tasks, model, method="bootstrap", n_boot=200, seed=0)
    assert bs.method == "bootstrap" and bs.W.shape == (4, 8) and bs.cov.shape == (39, 39)
    for par in ("W", "s2", "p"):
        a, b = getattr(lo, par), getattr(bs, par)
        assert np.sqrt(np.mean(a ** 2) / np.mean(b ** 2)) == pytest.approx(1.0, abs=0.15), par
        assert np.median(a / b) == pytest.approx(1.0, abs=0.15), par
    # per coefficient: a bootstrap SD from 200 refits has ~5% relative error
    assert np.mean(np.abs(lo.W / bs.W - 1.0) <= 0.15) >= 0.9


def test_bootstrap_is_seeded(small):
    _, tasks, model = small
    a = standard_errors(tasks, model, method="bootstrap", n_boot=5, seed=3)
    b = standard_errors(tasks, model, method="bootstrap", n_boot=5, seed=3)
    c = standard_errors(tasks, model, method="bootstrap", n_boot=5, seed=4)
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.array_equal(a.W, c.W)


def test_standard_errors_refuse_bad_input(small):
    _, tasks, model = small
    X, y, off = tasks
    with pytest.raises(ValueError, match="method"):
        standard_errors(tasks, model, method="sandwich")
    with pytest.raises(ValueError, match="d = 4"):
        standard_errors((X[:, :3], y, off), model)
    with pytest.raises(TypeError, match="Model"):
        standard_errors(tasks, "model")
    with pytest.raises(ValueError, match="n_boot"):
        standard_errors(tasks, model, method="bootstrap", n_boot=1)
    with pytest.raises(ValueError, match="interior"):
        standard_errors(tasks, model._replace(p=np.array([1.0, 0.0, 0.0])))


def test_mixture_quantile_solves_the_cdf():
    rng = np.random.default_rng(0)
    m, k = 20, 4
    w = rng.dirichlet(np.ones(k), size=m)
    loc = rng.normal(0, 3, size=(m, k))
    sd = rng.uniform(0.2, 2.0, size=(m, k))
    q = rng.uniform(0.01, 0.99, size=m)
    x = mixture_quantile(w, loc, sd, q)
    for i in range(m):
        cdf = lambda v: float(w[i] @ scipy.stats.norm.cdf(v, loc[i], sd[i])) - q[i]  # noqa: E731
        assert x[i] == pytest.approx(scipy.optimize.brentq(cdf, -50, 50, xtol=1e-13), abs=1e-9)
    lo, hi = mixture_interval([[1.0]], [[2.0]], [[3.0]], 0.9)
    assert (lo[0], hi[0]) == (pytest.approx(2 - 1.6448536269514722 * 3), pytest.approx(2 + 1.6448536269514722 * 3))
    with pytest.raises(ValueError, match="level"):
        mixture_interval([[1.0]], [[0.0]], [[1.0]], 1.0)


def test_predictive_mean_is_the_bayes_prediction(small):
    sim, _, model = small
    S = fastmlr.sample_tasks(sim["W"], sim["s2"], sim["p"], np.array([5, 0, 9]), seed=7)
    Xq = np.random.default_rng(1).standard_normal((4, 4))
    qt = np.array([0, 1, 2, 2])
    pred = predictive(S[:3], Xq, qt, model)
    beta = fastmlr.predict_params((S.X, S.y, S.offsets), model.W, model.s2, model.p)
    np.testing.assert_allclose(pred.mean, np.einsum("md,md->m", Xq, beta[qt]), rtol=1e-10)
    np.testing.assert_allclose(pred.weights[1], model.p)  # a task without rows: the prior
    second = np.einsum("mk,mk->m", pred.weights, pred.scale ** 2 + pred.loc ** 2)
    np.testing.assert_allclose(pred.var, second - pred.mean ** 2, rtol=1e-10)
    se = standard_errors(small[1], model)
    wide = predictive(S[:3], Xq, qt, model, se=se)
    assert np.all(wide.scale > pred.scale) and np.all(wide.var > pred.var)
    lo, hi = pred.interval(0.9)
    lo2, hi2 = wide.interval(0.9)
    assert np.all(lo2 < lo) and np.all(hi2 > hi)
    with pytest.raises(ValueError, match="query_task"):
        predictive(S[:3], Xq, np.array([0, 1, 2, 3]), model)


def test_one_component_and_a_streamed_bootstrap():
    sim = simulate_pool(k=1, d=3, n_tasks=300, seed=0)
    tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    model = fastmlr.fit(tasks, k=1)
    se = standard_errors(tasks, model)
    assert se.p.tolist() == [0.0] and se.cov.shape == (4, 4)
    # one component: least squares, Cov(w) = s2 (X^T X)^-1 (w and s2 are orthogonal at the optimum)
    X = np.asarray(tasks.X, dtype=np.float64)
    np.testing.assert_allclose(se.cov_W[0], model.s2[0] * np.linalg.inv(X.T @ X), rtol=1e-6)
    X, y, off = tasks
    cut = off[150]
    stream = fastmlr.TaskStream([(X[:cut], y[:cut], off[:151]), (X[cut:], y[cut:], off[150:] - cut)])
    a = standard_errors(stream, model, method="bootstrap", n_boot=4, seed=1)
    b = standard_errors(tasks, model, method="bootstrap", n_boot=4, seed=1)
    np.testing.assert_array_equal(a.W, b.W)
