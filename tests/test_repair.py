"""Split moves after EM (fastmlr.repair): a component covering two regimes is found from
the residuals of the heavy tasks and split, and EM leaves the optimum it was stuck in."""

import numpy as np
import pytest

import fastmlr
from fastmlr import em as _em
from fastmlr import em_passes
from fastmlr.metrics import parameter_error
from fastmlr.repair import SPLIT_RATIO, heterogeneity, repair
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
    fixed, moves = repair(stuck, heavy, np.diff(ts.offsets), em_from)
    assert moves and moves[0]["kept"] and moves[0]["split"][0] == merged
    N = ts.offsets[-1]
    assert fixed.loglik[-1] >= truth.loglik[-1] - 1e-6 * N
    assert parameter_error(fixed.W, W).max <= 1.05 * parameter_error(truth.W, W).max


def test_at_the_optimum_nothing_is_split():
    W, s2, p, ts = _pool(seed=3)
    em_from = _em_from(ts)
    truth = em_from(W, s2, p)
    heavy = select_tasks(ts, np.arange(6000, 6300))
    fixed, moves = repair(truth, heavy, np.diff(ts.offsets), em_from)
    assert moves == [] and fixed is truth


def test_fit_reports_its_moves():
    W, s2, p, ts = _pool(seed=5)
    m = fastmlr.fit(ts, 6)
    assert isinstance(m.diagnostics["split_moves"], list)
    for move in m.diagnostics["split_moves"]:
        assert set(move) == {"split", "ratios", "loglik_before", "loglik_after", "kept"}
