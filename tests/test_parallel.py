"""Block-parallel sums (fastmlr._parallel) and the stages built on them.

The sum of ``reduce_blocks`` has a fixed order (block b into partial b % PARTIALS, the
partials in order), so it is bitwise the same for every thread count; the subspace
stage, cut into many small blocks, must keep that, agree with the NumPy oracle, and
report a bad value in any block by its index in the whole array.
"""

import threading

import numpy as np
import pytest

import fastmlr
from fastmlr import _config, _parallel, _threads
from fastmlr.subspace import moment_stats

from helpers import BACKENDS


def fixed_order_sum(terms):
    """The documented order of reduce_blocks, written out."""
    parts = min(_parallel.PARTIALS, len(terms))
    acc = [np.zeros_like(terms[0]) for _ in range(parts)]
    for b, t in enumerate(terms):
        acc[b % parts] += t
    out = acc[0].copy()
    for a in acc[1:]:
        out += a
    return out


@pytest.mark.parametrize("nblocks", [1, 3, 8, 29])
def test_reduce_blocks_has_a_fixed_order(nblocks):
    rng = np.random.default_rng(nblocks)
    # magnitudes far apart, so that another order of additions gives other bits
    terms = [rng.standard_normal((3, 4)) * 10.0 ** rng.integers(-8, 8) for _ in range(nblocks)]
    want = fixed_order_sum(terms)
    for threads in (1, 2, 3):
        with fastmlr.n_threads(threads):
            got = _parallel.reduce_blocks(lambda b: terms[b], nblocks, (3, 4))
        np.testing.assert_array_equal(got, want)


def test_reduce_blocks_uses_worker_threads_with_one_kernel_thread_each():
    seen = {}

    def term(b):
        seen[b] = (threading.get_ident(), _threads.get())
        return np.ones(1)

    fastmlr.estimate_subspace(fastmlr.sample_tasks(*fastmlr.make_mixture(1, 2, seed=0), 2, n_tasks=10)[:3], 1)
    with fastmlr.n_threads(2):
        total = _parallel.reduce_blocks(term, 16, (1,))
    assert total[0] == 16.0 and sorted(seen) == list(range(16))
    if _parallel._concurrent_kernels_ok():
        assert {count for _, count in seen.values()} == {1}
        assert threading.get_ident() not in {ident for ident, _ in seen.values()}
    assert _threads.get() >= 1 and _threads._scoped.get() is None


def test_reduce_blocks_reraises_a_block_error():
    def term(b):
        if b == 5:
            raise ValueError("block 5 is bad")
        return np.zeros(2)

    for threads in (1, 2):
        with fastmlr.n_threads(threads), pytest.raises(ValueError, match="block 5 is bad"):
            _parallel.reduce_blocks(term, 12, (2,))


@pytest.fixture
def many_blocks(monkeypatch):
    """The subspace stage cut into blocks of about 40 rows."""
    monkeypatch.setattr(_config, "CACHE_BLOCK_BYTES", 40 * 7 * 8)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subspace_in_many_blocks_is_thread_independent_and_matches_numpy(backend, dtype, many_blocks):
    W, s, p = fastmlr.make_mixture(3, 7, seed=2)
    sizes = np.random.default_rng(3).integers(2, 9, size=700)
    X, y, off, _ = fastmlr.sample_tasks(W, s, p, sizes, seed=4, dtype=dtype)
    runs = []
    for threads in (1, 2, 3):
        with fastmlr.n_threads(threads):
            runs.append(moment_stats((X, y, off)).cross)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    with fastmlr.use_backend("numpy"):
        want = moment_stats((X, y, off)).cross
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(runs[0], want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_subspace_in_many_blocks_reports_the_first_bad_value(backend, many_blocks):
    rng = np.random.default_rng(5)
    off = np.arange(0, 3001, 3)
    X, y = rng.standard_normal((3000, 7)), rng.standard_normal(3000)
    X[2998, 6] = np.inf  # the last block
    X[1501, 0] = np.nan  # a middle one: this is the first bad value of X
    for threads in (1, 2):
        with fastmlr.n_threads(threads), pytest.raises(ValueError, match=r"X contains NaN or inf \(first at index \(1501, 0\)\)"):
            fastmlr.estimate_subspace((X, y, off), 2)


def test_a_call_from_inside_a_worker_runs_serially():
    # a worker's own thread count is 1: a nested call must not wait on the busy pool
    out = np.zeros((4, 3))

    def inner(i):
        _parallel.run_each(lambda j: out.__setitem__((i, j), i * 10 + j), range(3))

    with fastmlr.n_threads(2):
        _parallel.run_each(inner, range(4))
    np.testing.assert_array_equal(out, np.arange(4)[:, None] * 10 + np.arange(3))


_FORK_SCRIPT = """
import os, time, numpy as np, fastmlr
from fastmlr import _parallel
out = np.zeros(6)
with fastmlr.n_threads(2):
    # slow items, so that the parent's pool starts both its workers
    _parallel.run_each(lambda i: (time.sleep(0.05), out.__setitem__(i, i)), range(6))
time.sleep(0.5)  # its workers go idle: a stale pool in the child would then never start one
pid = os.fork()
if pid == 0:
    child = np.zeros(6)
    with fastmlr.n_threads(2):
        _parallel.run_each(lambda i: child.__setitem__(i, 2 * i), range(6))
    os._exit(0 if child.tolist() == [0, 2, 4, 6, 8, 10] else 1)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_workers():
    # a fresh interpreter on the NumPy backend: Numba's OpenMP layer refuses to fork
    # once it has run, so the pool is tested alone (a child that inherited the parent's
    # pool object, without its threads, would wait forever)
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTMLR_BACKEND="numpy")
    done = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], env=env, timeout=120,
                          cwd=os.path.dirname(os.path.abspath(__file__)))  # the installed package
    assert done.returncode == 0


@pytest.mark.parametrize("stage", ["fit", "meta_learn"])
def test_public_computations_run_blas_on_one_thread_and_restore_it(stage, monkeypatch):
    # every kernel fetched during the call sees single-threaded BLAS (kernels and BLAS
    # alternate throughout), and the count from before is back afterwards
    from fastmlr import backend, cluster, em

    libs = _parallel._blas_libs()
    if not libs:
        pytest.skip("threadpoolctl sees no BLAS here")
    blas = lambda: {lib.get_num_threads() for lib in libs}  # noqa: E731
    seen = []

    def kernels():
        seen.append(blas())
        return backend.kernels()

    monkeypatch.setattr(em, "kernels", kernels)
    monkeypatch.setattr(cluster, "kernels", kernels)
    W, s2, p = fastmlr.make_mixture(2, 5, seed=0)
    light = fastmlr.sample_tasks(W, s2, p, 3, n_tasks=3000, seed=1)[:3]
    heavy = fastmlr.sample_tasks(W, s2, p, 40, n_tasks=60, seed=2)[:3]
    with fastmlr.n_threads(2):
        before = blas()
        if before == {1}:
            pytest.skip("BLAS runs on one thread here: nothing to tell apart")
        if stage == "fit":
            fastmlr.fit(light, 2, seed=0)
        else:
            fastmlr.meta_learn(light, heavy, light, 2)
        after = blas()
    assert seen and all(s == {1} for s in seen)
    assert after == before
