"""Split moves after EM (fastmlr.repair): a component covering two regimes is found from
the residuals of the heavy tasks and split, and EM leaves the optimum it was stuck in."""

import importlib

import numpy as np
import pytest

import fastmlr
from fastmlr import em as _em
from fastmlr import em_passes
from fastmlr import repair as repair_module
from fastmlr.metrics import parameter_error
from fastmlr.repair import SPLIT_RATIO, WIDE_RATIO, _moves, _refit_wide, heterogeneity, repair, repair_set, unexplained
from fastmlr.tasks import TaskSet, select_tasks


def _pool(k=6, d=16, seed=0):
    W, s2, p = fastmlr.make_mixture(k, d, seed=seed)
    sizes = np.concatenate([np.full(6000, 4), np.full(300, 32)])
    S = fastmlr.sample_tasks(W, s2, p, sizes, seed=seed + 1)
    return W, s2, p, TaskSet(S.X, S.y, S.offsets)


def _em_from(ts):
    S_inv = np.linalg.inv(ts.X.T @ ts.X / ts.X.shape[0])
    pool = em_passes.array_pool(ts)
    return lambda W, s2, p: em_passes.run_gem(pool, W, s2, p, S_inv, floor=_em.s2_floor(ts))


def _stuck(W, s2, p):
    """Components 0 and 1 merged into one, component 2 twice: two equal components stay
    equal under EM, so EM cannot leave this point's basin."""
    W0, s20, p0 = W.copy(), s2.copy(), p.copy()
    W0[0], s20[0], p0[0] = 0.5 * (W[0] + W[1]), s2[0] + 0.5, p[0] + p[1]
    W0[1], s20[1], p0[1] = W[2], s2[2], 0.5 * p[2]
    p0[2] = 0.5 * p[2]
    return W0, s20, p0


def test_a_merged_component_stands_out_and_its_split_reaches_the_optimum():
    W, s2, p, ts = _pool()
    em_from = _em_from(ts)
    truth = em_from(W, s2, p)
    stuck = em_from(*_stuck(W, s2, p))
    assert parameter_error(stuck.W, W).max > 0.5  # EM alone stays in the wrong optimum
    heavy = select_tasks(ts, np.arange(6000, 6300))
    ratio, lam, u = heterogeneity(heavy, stuck.W, stuck.s2, stuck.p)
    merged = int(np.argmin(np.linalg.norm(stuck.W - 0.5 * (W[0] + W[1]), axis=1)))
    assert int(np.argmax(ratio)) == merged and ratio[merged] > SPLIT_RATIO
    others = np.delete(ratio, merged)
    assert others.max() < SPLIT_RATIO, ratio
    # its top eigenvector points from one regime to the other
    diff = (W[0] - W[1]) / np.linalg.norm(W[0] - W[1])
    assert abs(u[merged] @ diff) > 0.8
    fixed, moves = repair(stuck, heavy, em_from)
    assert moves and moves[0]["kept"] and moves[0]["split"][0] == merged
    N = ts.offsets[-1]
    assert fixed.loglik[-1] >= truth.loglik[-1] - 1e-6 * N
    assert parameter_error(fixed.W, W).max <= 1.05 * parameter_error(truth.W, W).max


def test_at_the_optimum_nothing_is_split():
    W, s2, p, ts = _pool(seed=3)
    em_from = _em_from(ts)
    truth = em_from(W, s2, p)
    heavy = select_tasks(ts, np.arange(6000, 6300))
    fixed, moves = repair(truth, heavy, em_from)
    assert moves == [] and fixed is truth


def test_fit_reports_its_moves():
    W, s2, p, ts = _pool(seed=5)
    m = fastmlr.fit(ts, 6)
    assert isinstance(m.diagnostics["split_moves"], list)
    for move in m.diagnostics["split_moves"]:
        assert set(move) - {"split", "ratios", "reseed", "refit_empty", "unexplained_tasks", "refit_wide",
                            "variance_ratio"} == {
            "loglik_before", "loglik_after", "kept"}


def _missing(W, s2, p):
    """Regime 0 has no component (its place holds a copy of component 2): two equal
    components stay equal under EM, so regime 0's tasks stay spread over the others."""
    W0, s20, p0 = W.copy(), s2.copy(), p.copy()
    W0[0], s20[0] = W[2], s2[2]
    p0[0] = p0[2] = 0.5 * (p[0] + p[2])
    return W0, s20, p0


def test_a_missing_regime_is_refitted_from_the_tasks_no_component_explains(monkeypatch):
    """Here the split move (tried first) does not raise the likelihood; the component
    fitted to the heavy tasks no component explains does, and reaches the optimum (the
    move that refits a wide component is switched off: it is tested below)."""
    monkeypatch.setattr(repair_module, "WIDE_RATIO", np.inf)
    W, s2, p, ts = _pool(seed=11)
    em_from = _em_from(ts)
    truth = em_from(W, s2, p)
    stuck = em_from(*_missing(W, s2, p))
    assert parameter_error(stuck.W, W).max > 0.5  # EM alone stays without regime 0
    heavy = select_tasks(ts, np.arange(6000, 6300))
    t = np.diff(ts.offsets)
    z = unexplained(heavy, stuck.W, float(np.median(stuck.s2)))
    _, RT = _em._e_step(heavy, t[6000:].astype(float), W, s2, p)
    out = z > np.sqrt(2 * np.log(z.size))  # the tasks that stand out: regime 0's about half
    label = RT.argmax(axis=0)  # of them, three times its share of the heavy tasks
    assert out.sum() >= 3 and (label[out] == 0).mean() >= 2.5 * (label == 0).mean()
    fixed, moves = repair(stuck, heavy, em_from)
    assert [("reseed" in m, m["kept"]) for m in moves][:2] == [(False, False), (True, True)]
    N = ts.offsets[-1]
    assert fixed.loglik[-1] >= truth.loglik[-1] - 1e-6 * N
    assert parameter_error(fixed.W, W).max <= 1.05 * parameter_error(truth.W, W).max


def test_empty_components_are_refitted_together():
    """Three components start far from every regime and lose all their tasks in EM; the
    move that refits them together to the heavy tasks no component explains leads EM
    to the optimum."""
    W, s2, p, ts = _pool(k=6, d=16, seed=9)
    em_from = _em_from(ts)
    truth = em_from(W, s2, p)
    rng = np.random.default_rng(0)
    W0 = W.copy()
    W0[:3] = 20.0 * rng.standard_normal((3, W.shape[1]))
    stuck = em_from(W0, s2.copy(), p.copy())
    t = np.diff(ts.offsets)
    rows = t.astype(float) @ stuck.resp
    d = W.shape[1]
    assert (rows <= d).sum() >= 2  # EM emptied them
    heavy = select_tasks(ts, np.arange(6000, 6300))
    noise = float(np.median(stuck.s2[rows > d]))
    refits = [(m, start) for m, start in _moves(heavy, stuck.W, stuck, rows, noise, 6, d) if "refit_empty" in m]
    assert len(refits) == 1 and refits[0][0]["refit_empty"] >= 2
    fixed = em_from(*refits[0][1])
    N = ts.offsets[-1]
    assert fixed.loglik[-1] >= truth.loglik[-1] - 1e-6 * N
    assert parameter_error(fixed.W, W).max <= 1.05 * parameter_error(truth.W, W).max


def test_repair_set_takes_tasks_half_as_large_as_the_heavy_ones():
    sizes = np.array([4, 40, 16, 15, 32, 8, 30, 100])
    heavy = np.array([7, 1, 4])  # 100, 40, 32 rows: half the smallest is 16
    got = repair_set(sizes, heavy, cap=100)
    assert got.tolist() == [7, 1, 4, 6, 2]  # largest first, down to 16 rows
    assert repair_set(sizes, heavy, cap=4).tolist() == [7, 1, 4, 6]
    assert repair_set(sizes, heavy, cap=1).tolist() == [7, 1, 4]  # never fewer than the heavy set


def test_a_component_of_wide_noise_is_refitted_as_two():
    """One component over regimes 0 and 1 (their average, its variance grown by the
    half-distance between them) while component 2 is held twice: the move refits the
    wide one as two from its own heavy tasks, each near one of the regimes, and EM from
    there reaches the optimum."""
    W, s2, p, ts = _pool(seed=1)
    em_from = _em_from(ts)
    truth = em_from(W, s2, p)
    stuck = em_from(*_stuck(W, s2, p))
    heavy = select_tasks(ts, np.arange(6000, 6300))
    t = np.diff(ts.offsets)
    d = W.shape[1]
    rows = t.astype(float) @ stuck.resp
    noise = float(np.median(stuck.s2))
    merged = int(np.argmin(np.linalg.norm(stuck.W - 0.5 * (W[0] + W[1]), axis=1)))
    assert stuck.s2[merged] > WIDE_RATIO * noise  # the merged component is the wide one
    _, RT = _em._e_step(heavy, t[6000:].astype(float), stuck.W, stuck.s2, stuck.p)
    l, new_W, ratio = _refit_wide(heavy, stuck.W, stuck, rows, noise, d, RT)
    assert l == merged and ratio > WIDE_RATIO
    near = np.linalg.norm(new_W[:, None, :] - W[None, :2, :], axis=2)  # (2 new, regimes 0 and 1)
    assert sorted(near.argmin(axis=1).tolist()) == [0, 1] and near.min(axis=1).max() < 0.35 * np.linalg.norm(W[0] - W[1])
    wides = [start for m, start in _moves(heavy, stuck.W, stuck, rows, noise, 6, d) if "refit_wide" in m]
    assert len(wides) == 1
    fixed = em_from(*wides[0])
    N = ts.offsets[-1]
    assert fixed.loglik[-1] >= truth.loglik[-1] - 1e-6 * N
    assert parameter_error(fixed.W, W).max <= 1.05 * parameter_error(truth.W, W).max


def test_the_fit_inside_a_move_does_not_warn_the_user():
    """A component kept by the fit a move runs on a few tasks is that step's, not one of
    the user's components: inner_fit is fit without its FallbackWarning."""
    import warnings

    from fastmlr.fit import inner_fit
    from fastmlr._validation import FallbackWarning

    W, s2, p = fastmlr.make_mixture(2, 16, seed=0)
    S = fastmlr.sample_tasks(W, s2, p, np.full(40, 10), seed=1)
    with pytest.warns(FallbackWarning):  # 20 components on 400 rows: some keep their estimates
        direct = fastmlr.fit(S, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        inner = inner_fit(S, 20)
    np.testing.assert_array_equal(inner.W, direct.W)


def test_a_start_that_needed_moves_is_followed_by_a_second_start(monkeypatch):
    """When a move was kept, fit runs its starts again from seed + 1 and keeps the more
    likely optimum; when none was, it does not."""
    fit_module = importlib.import_module("fastmlr.fit")
    W, s2, p, ts = _pool(seed=5)
    plain = fastmlr.fit(ts, 6)
    assert plain.diagnostics["restart"] is None and not any(m["kept"] for m in plain.diagnostics["split_moves"])
    calls = []

    def marked(res, *args, **kwargs):  # every first attempt reports a kept move
        calls.append(float(res.loglik[-1]))
        return res, ([{"kept": True, "split": [0]}] if len(calls) == 1 else [])

    monkeypatch.setattr(fit_module, "repair", marked)
    m = fastmlr.fit(ts, 6)
    restart = m.diagnostics["restart"]
    assert len(calls) == 2 and restart["seed"] == 1
    assert m.diagnostics["loglik"] == max(calls)  # the more likely of the two optima
    assert restart["kept"] == (calls[1] > calls[0])
    other = fastmlr.fit(ts, 6, seed=1)  # the second start is fit's own start from seed 1
    np.testing.assert_allclose(restart["loglik"], other.diagnostics["loglik"], rtol=1e-12)
