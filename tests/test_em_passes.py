"""fit's generalized EM in passes over the rows (fastmlr.em_passes), and fit on a stream."""

import numpy as np
import pytest

import fastmlr
import fastmlr.metrics
from fastmlr import em as _em
from fastmlr import em_passes
from fastmlr.residuals import task_sse
from fastmlr.tasks import TaskSet, TaskStream


def _pool(k=4, d=24, n=2500, t=4, seed=0, dtype="float64"):
    W, s2, p = fastmlr.make_mixture(k, d, seed=seed)
    sizes = np.full(n, t)
    sizes[:200] = 40  # a few larger tasks for the heavy set
    S = fastmlr.sample_tasks(W, s2, p, sizes, seed=seed + 1, dtype=dtype)
    return W, TaskSet(S.X, S.y, S.offsets)


def _start(ts, k, seed=3):
    rng = np.random.default_rng(seed)
    d = ts.X.shape[1]
    return rng.standard_normal((k, d)) / np.sqrt(d), np.ones(k), np.full(k, 1.0 / k)


def _run(ts, W0, s20, p0, **kw):
    S = ts.X.T @ ts.X / ts.X.shape[0]
    return em_passes.run_gem(em_passes.array_pool(ts), W0, s20, p0, np.linalg.inv(S),
                             floor=_em.s2_floor(ts), **kw)


@pytest.mark.parametrize("omega, accelerate", [(1.0, False), (1.8, False), (1.0, True), (1.8, True)])
def test_loglik_never_decreases_from_a_poor_start(omega, accelerate):
    _, ts = _pool()
    res = _run(ts, *_start(ts, 4), tol=0.0, max_iter=60, omega=omega, accelerate=accelerate)
    steps = np.diff(res.loglik)
    # a generalized EM step cannot lower the likelihood (round-off of the sums aside)
    assert steps.min() >= -1e-9 * abs(res.loglik[-1]), steps.min()
    assert res.loglik[-1] - res.loglik[0] > 100.0  # and it climbed from the poor start


def test_fixed_point_is_exact_ems():
    """From the same start, the passes and exact EM (per-task statistics) reach the same optimum."""
    _, ts = _pool()
    start = _start(ts, 4)
    res = _run(ts, *start, tol=1e-12, max_iter=2000)
    exact = _em.run_em(ts, *start, tol=1e-12, max_iter=2000, stats=_em.task_stats(*ts))
    N = ts.offsets[-1]
    assert abs(res.loglik[-1] - exact.loglik[-1]) <= 1e-7 * N
    perm = fastmlr.metrics.match_components(res.W, exact.W)
    assert np.abs(res.W[perm] - exact.W).max() <= 1e-4 * np.abs(exact.W).max()
    assert np.allclose(res.s2[perm], exact.s2, rtol=1e-4)
    assert np.allclose(res.p[perm], exact.p, atol=1e-5)
    # the responsibilities returned are those of the returned estimate
    ll, RT = _em._e_step(ts, np.diff(ts.offsets).astype(float), res.W, res.s2, res.p)
    assert np.allclose(RT.T, res.resp, atol=1e-10)
    assert ll == pytest.approx(res.loglik[-1], rel=1e-12)
    # and the weighted rows per component, summed by the last E-pass, are theirs too
    t = np.diff(ts.offsets).astype(float)
    assert np.allclose(res.rows, t @ res.resp, rtol=1e-12)
    assert np.allclose(exact.rows, t @ exact.resp, rtol=0, atol=0)
    without = _run(ts, *start, tol=1e-12, max_iter=2000, resp=False)
    assert without.resp is None and np.array_equal(without.rows, res.rows) and np.array_equal(without.W, res.W)


def test_extrapolation_reaches_the_same_optimum_in_fewer_passes():
    """SQUAREM's extrapolated points are kept only when they do not lower the likelihood;
    with and without them EM ends at the same optimum, with them in fewer passes."""
    _, ts = _pool(k=6, d=24, n=4000)
    start = _start(ts, 6, seed=5)
    lines = []
    fast = _run(ts, *start, tol=1e-10, max_iter=3000, progress=lines.append)
    slow = _run(ts, *start, tol=1e-10, max_iter=3000, accelerate=False)
    assert fast.converged and slow.converged
    kept = [line for line in lines if "extrapolated" in line]
    assert kept, "no extrapolated point was kept"
    assert len(fast.loglik) < 0.8 * len(slow.loglik), (len(fast.loglik), len(slow.loglik))
    assert np.diff(fast.loglik).min() >= -1e-9 * abs(fast.loglik[-1])
    N = ts.offsets[-1]
    assert abs(fast.loglik[-1] - slow.loglik[-1]) <= 1e-6 * N
    perm = fastmlr.metrics.match_components(fast.W, slow.W)
    assert np.abs(fast.W[perm] - slow.W).max() <= 1e-3 * np.abs(slow.W).max()


def test_one_step_goes_the_predicted_length():
    """A step moves each w by S^-1 G_l / rows_l (the minimum of its weighted residual sum
    when the weighted Gram matrix is rows_l S), and the E-pass there is kept when the
    log-likelihood rose."""
    _, ts = _pool(n=600)
    W0, s20, p0 = _start(ts, 3)
    lines = []
    res = _run(ts, W0, s20, p0, tol=0.0, max_iter=1, omega=1.0, accelerate=False, progress=lines.append)
    t = np.diff(ts.offsets).astype(float)
    _, RT = _em._e_step(ts, t, W0, s20, p0)
    rho = np.repeat(RT.T, np.diff(ts.offsets), axis=0)  # (N, k)
    G = ((ts.y[:, None] - ts.X @ W0.T) * rho).T @ ts.X
    S = ts.X.T @ ts.X / ts.X.shape[0]
    D = np.linalg.solve(S, G.T).T / (RT @ t)[:, None]
    assert np.allclose(res.W, W0 + D, rtol=1e-9, atol=1e-12)
    assert res.loglik[1] > res.loglik[0] and "line search" not in lines[-1]


def test_a_step_that_overshoots_is_replaced_by_exact_line_search():
    """With a preconditioner three times too large, the predicted step goes three times
    too far and lowers the likelihood; the step taken instead is exact line search along
    the same direction: the weighted RSS there is lower than at the start and at nearby
    points of the line, and s2 is that residual sum over the weighted rows."""
    _, ts = _pool(n=600)
    W0, s20, p0 = _start(ts, 3)
    S = ts.X.T @ ts.X / ts.X.shape[0]
    lines = []
    res = em_passes.run_gem(em_passes.array_pool(ts), W0, s20, p0, 3.0 * np.linalg.inv(S),
                            floor=_em.s2_floor(ts), tol=0.0, max_iter=1, accelerate=False, progress=lines.append)
    assert "line search" in lines[-1]
    assert res.loglik[1] >= res.loglik[0]
    t = np.diff(ts.offsets).astype(float)
    _, RT = _em._e_step(ts, t, W0, s20, p0)

    def wrss(W):  # (k,) sum_i R_il ||y_i - X_i w_l||^2
        return np.einsum("ik,ik->k", RT.T, task_sse(*ts, W))

    D = res.W - W0
    base = wrss(res.W)
    assert np.all(base < wrss(W0))
    for f in (0.9, 1.1, 3.0):
        assert np.all(base <= wrss(W0 + f * D) + 1e-9 * base)
    assert np.allclose(res.s2, base / (RT @ t), rtol=1e-9)


@pytest.mark.parametrize("scale", [0.2, 3.0, 10.0])
def test_a_poor_preconditioner_changes_the_path_not_the_optimum(scale):
    """The preconditioner only sets the steps: scaled by 0.2 (short steps), 3 or 10
    (overshooting ones, replaced by line searches) EM still never goes down and ends at
    the optimum of exact EM."""
    _, ts = _pool(n=1200)
    start = _start(ts, 4)
    S = ts.X.T @ ts.X / ts.X.shape[0]
    res = em_passes.run_gem(em_passes.array_pool(ts), *start, scale * np.linalg.inv(S), floor=_em.s2_floor(ts),
                            tol=1e-11, max_iter=5000)
    exact = _em.run_em(ts, *start, tol=1e-12, max_iter=2000, stats=_em.task_stats(*ts))
    assert np.diff(res.loglik).min() >= -1e-9 * abs(res.loglik[-1])
    assert abs(res.loglik[-1] - exact.loglik[-1]) <= 1e-6 * ts.offsets[-1]
    perm = fastmlr.metrics.match_components(res.W, exact.W)
    assert np.abs(res.W[perm] - exact.W).max() <= 1e-3 * np.abs(exact.W).max()


def test_fit_picks_passes_for_many_tiny_tasks_and_matches_exact_em():
    W, ts = _pool(k=4, d=32, n=3000)
    m = fastmlr.fit(ts, 4, tol=1e-9)
    assert m.diagnostics["em_path"] == "passes"
    exact = fastmlr.fit(ts, 4, tol=1e-9, em_path="stats")
    N = ts.offsets[-1]
    assert abs(m.diagnostics["loglik"] - exact.diagnostics["loglik"]) <= 1e-6 * N
    assert np.abs(m.W - exact.W).max() <= 1e-3
    assert fastmlr.parameter_error(m.W, W).max < 0.3


def _chunks(ts, cuts):
    off = ts.offsets
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        lo, hi = int(off[a]), int(off[b])
        out.append((ts.X[lo:hi], ts.y[lo:hi], off[a:b + 1] - lo))
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_on_a_stream_equals_the_arrays(dtype):
    W, ts = _pool(dtype=dtype)
    m = fastmlr.fit(ts, 4, em_path="passes")
    n = ts.offsets.size - 1
    stream = TaskStream(_chunks(ts, [0, 700, 701, 1900, n]))
    ms = fastmlr.fit(stream, 4)
    assert ms.diagnostics["em_path"] == "passes"
    assert ms.diagnostics["em_iterations"] == m.diagnostics["em_iterations"]
    tol = 1e-10 if dtype == "float64" else 1e-5
    assert np.abs(ms.W - m.W).max() <= tol * np.abs(m.W).max()
    assert np.allclose(ms.p, m.p, rtol=tol, atol=tol)


def test_fit_on_a_stream_with_empty_tasks_and_whitening():
    W, ts = _pool(n=1500)
    scale = np.linspace(0.5, 3.0, ts.X.shape[1])
    X = np.ascontiguousarray(ts.X * scale)
    sizes = np.diff(ts.offsets)
    sizes = np.insert(sizes, [0, 100, 100, 900], 0)  # empty tasks here and there
    off = np.concatenate([[0], np.cumsum(sizes)])
    m = fastmlr.fit((X, ts.y, off), 4, em_path="passes")
    assert m.diagnostics["whitening"]["applied"]
    stream = TaskStream(_chunks(TaskSet(X, ts.y, off), [0, 50, 600, sizes.size]))
    ms = fastmlr.fit(stream, 4)
    assert ms.diagnostics["empty_tasks_ignored"] == 4
    assert ms.diagnostics["loglik"] == pytest.approx(m.diagnostics["loglik"], rel=1e-12)
    # the moment matrix of the whitened stream is T M T, not computed from whitened rows
    assert np.abs(ms.W - m.W).max() <= 1e-8 * np.abs(m.W).max()
    # and whitened or not, the passes reach exact EM's optimum
    exact = fastmlr.fit((X, ts.y, off), 4, em_path="stats", tol=1e-10)
    assert ms.diagnostics["loglik"] == pytest.approx(exact.diagnostics["loglik"], abs=2e-6 * off[-1])


def test_stream_that_changes_between_reads_is_refused():
    _, ts = _pool(n=600)
    first = _chunks(ts, [0, 300, 600])
    second = _chunks(ts, [0, 200, 600])
    reads = iter([first, second, second, second])
    stream = TaskStream(lambda: iter(next(reads)))
    with pytest.raises(ValueError, match="different chunks"):
        fastmlr.fit(stream, 3)


def test_stream_refuses_exact_paths():
    _, ts = _pool(n=300)
    with pytest.raises(ValueError, match="em_path"):
        fastmlr.fit(TaskStream(_chunks(ts, [0, 300])), 3, em_path="rows")


def test_thread_count_does_not_change_the_bits():
    _, ts = _pool(n=1200)
    start = _start(ts, 4)
    with fastmlr.n_threads(1):
        one = _run(ts, *start, max_iter=5, tol=0.0)
    with fastmlr.n_threads(2):
        two = _run(ts, *start, max_iter=5, tol=0.0)
    assert np.array_equal(one.W, two.W) and np.array_equal(one.loglik, two.loglik)


def test_progress_and_logging_report_every_pass(caplog):
    _, ts = _pool(n=800)
    lines = []
    with caplog.at_level("INFO", logger="fastmlr"):
        m = fastmlr.fit(ts, 3, em_path="passes", progress=lines.append)
    passes = [ln for ln in lines if ln.startswith("EM pass")]
    starts = [i for i, ln in enumerate(passes) if ln.startswith("EM pass 0:")]
    moves = m.diagnostics["split_moves"]  # each move tried is one more EM run
    assert len(starts) == 1 + len(moves)
    runs = [passes[a:b] for a, b in zip(starts, starts[1:] + [len(passes)])]
    kept = [0] + [j + 1 for j, move in enumerate(moves) if move["kept"]]
    assert len(runs[kept[-1]]) == m.diagnostics["em_iterations"] + 1  # the run returned
    assert [r.getMessage() for r in caplog.records if r.name == "fastmlr"] == lines


def test_block_buffers_are_reused_per_thread_and_large_ones_not_kept():
    import threading

    from fastmlr import em_passes

    a = em_passes._buffer("test", (100, 4))
    b = em_passes._buffer("test", (50, 4))
    assert a.flags.c_contiguous and b.shape == (50, 4) and np.shares_memory(a, b)  # reused
    other = {}
    th = threading.Thread(target=lambda: other.update(c=em_passes._buffer("test", (100, 4))))
    th.start()
    th.join()
    assert not np.shares_memory(a, other["c"])  # one buffer per thread
    rows = em_passes._KEEP_BYTES // 8 + 1
    big = em_passes._buffer("test-big", (rows,))
    assert big.shape == (rows,) and not np.shares_memory(big, em_passes._buffer("test-big", (rows,)))
