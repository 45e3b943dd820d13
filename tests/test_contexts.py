"""Settings scoped to a thread: ``use_backend`` and ``n_threads`` blocks entered and
left by two threads in overlapping order, BLAS limits shared by overlapping sections,
and worker threads that work with their caller's settings.

Each test forces its interleaving with events: thread A enters, thread B enters, A
leaves while B is still inside, then B leaves.
"""

import threading

import numpy as np
import pytest

import fastmlr
from fastmlr import _parallel, _threads, backend

from helpers import BACKENDS, COMPILED


class Steps:
    """Events that order two threads, and the first error either thread raised."""

    def __init__(self, *names):
        self.ev = {n: threading.Event() for n in names}
        self.errors = []

    def set(self, name):
        self.ev[name].set()

    def wait(self, name):
        assert self.ev[name].wait(60), f"timed out waiting for {name}"

    def run(self, *targets):
        def guard(fn):
            def inner():
                try:
                    fn()
                except BaseException as exc:  # reported by the main thread
                    self.errors.append(exc)
                    for e in self.ev.values():  # release the other thread
                        e.set()
            return inner

        threads = [threading.Thread(target=guard(t)) for t in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            assert not t.is_alive()
        if self.errors:
            raise self.errors[0]


def test_overlapping_n_threads_blocks_keep_their_own_counts():
    default = _threads.get()
    seen = {}
    steps = Steps("a_in", "b_in", "a_out")

    def a():
        with fastmlr.n_threads(1):
            steps.set("a_in")
            steps.wait("b_in")
            seen["a_inside"] = _threads.get()
        steps.set("a_out")
        seen["a_after"] = _threads.get()

    def b():
        steps.wait("a_in")
        with fastmlr.n_threads(3):
            steps.set("b_in")
            steps.wait("a_out")  # A has left: B's count must still be its own
            seen["b_inside"] = _threads.get()
        seen["b_after"] = _threads.get()

    steps.run(a, b)
    assert seen == {"a_inside": 1, "a_after": default, "b_inside": 3, "b_after": default}
    assert _threads.get() == default and _threads._count is None


def test_overlapping_use_backend_blocks_keep_their_own_backends():
    default = backend.get_backend()
    other = "numpy" if default != "numpy" else BACKENDS[0]
    seen = {}
    steps = Steps("a_in", "b_in", "a_out")

    def a():
        with fastmlr.use_backend(other):
            steps.set("a_in")
            steps.wait("b_in")
            seen["a_inside"] = (backend.get_backend(), backend.kernels().__name__)
        steps.set("a_out")
        seen["a_after"] = backend.get_backend()

    def b():
        steps.wait("a_in")
        with fastmlr.use_backend(default):
            steps.set("b_in")
            steps.wait("a_out")
            seen["b_inside"] = (backend.get_backend(), backend.kernels().__name__)
        seen["b_after"] = backend.get_backend()

    steps.run(a, b)
    assert seen == {
        "a_inside": (other, backend._MODULES[other]),
        "a_after": default,
        "b_inside": (default, backend._MODULES[default]),
        "b_after": default,
    }
    assert backend.get_backend() == default


def test_set_backend_is_the_default_a_block_overrides():
    default = backend.get_backend()
    try:
        with fastmlr.use_backend("numpy"):
            backend.set_backend(default)
            assert backend.get_backend() == "numpy"  # the block's choice holds in the block
            seen = []
            t = threading.Thread(target=lambda: seen.append(backend.get_backend()))
            t.start()
            t.join()
            assert seen == [default]  # another thread sees the default
    finally:
        backend.set_backend(default)
    assert backend.get_backend() == default


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed here")
def test_numba_runs_with_the_count_of_the_calling_context():
    import contextvars

    import numba

    with fastmlr.use_backend("numba"):
        backend.kernels()  # loads the Numba kernels
    full = min(_threads.get(), numba.config.NUMBA_NUM_THREADS)

    def in_context():
        with fastmlr.use_backend("numba"):
            backend.kernels()  # what a stage does right before a kernel call
            return numba.get_num_threads()

    ctx = contextvars.copy_context()
    block = fastmlr.n_threads(1)
    ctx.run(block.__enter__)  # a context inside an n_threads(1) block, on this same OS thread
    try:
        assert ctx.run(in_context) == 1
        assert in_context() == full
        assert ctx.run(in_context) == 1
    finally:
        ctx.run(block.__exit__, None, None, None)
    assert in_context() == full


def test_overlapping_single_blas_sections_restore_the_count_from_before():
    libs = _parallel._blas_libs()
    if not libs:
        pytest.skip("threadpoolctl sees no BLAS here")

    def blas_threads():
        return {lib.get_num_threads() for lib in libs}

    start = blas_threads()
    if start == {1}:
        pytest.skip("BLAS runs on one thread here: a section would change nothing")
    seen = {}
    steps = Steps("a_in", "b_in", "a_out")

    def a():
        with _parallel.single_blas():
            steps.set("a_in")
            steps.wait("b_in")
        steps.set("a_out")

    def b():
        steps.wait("a_in")
        with _parallel.single_blas():
            steps.set("b_in")
            steps.wait("a_out")
            seen["b_inside"] = blas_threads()  # A has left; B is still in its section
        seen["after"] = blas_threads()

    steps.run(a, b)
    assert seen == {"b_inside": {1}, "after": start}
    assert blas_threads() == start


def test_workers_use_the_backend_and_count_of_their_caller():
    # two threads, each in its own block, run block-parallel sums at the same time;
    # every block must run with its caller's backend and one kernel thread
    names = [COMPILED[0] if COMPILED else "numpy", "numpy"]
    seen = {0: set(), 1: set()}
    barrier = threading.Barrier(2, timeout=60)

    def caller(i):
        def term(b):
            seen[i].add((backend.get_backend(), backend.kernels().__name__, _threads.get()))
            return np.ones(1)

        def run():
            with fastmlr.use_backend(names[i]), fastmlr.n_threads(2):
                barrier.wait()  # both blocks entered before either runs
                # on worker threads (one kernel thread each), unless this backend's
                # kernels may not run concurrently: then here, with the block's count
                expected[i] = 1 if _parallel._concurrent_kernels_ok() else 2
                total = _parallel.reduce_blocks(term, 16, (1,))
                barrier.wait()  # both ran before either leaves
            assert total[0] == 16.0

        return run

    expected = {}
    Steps().run(caller(0), caller(1))
    for i in (0, 1):
        assert seen[i] == {(names[i], backend._MODULES[names[i]], expected[i])}
    assert expected[1] == 1  # the numpy backend's blocks did run on the workers


@pytest.mark.parametrize("name", COMPILED)
def test_fits_in_two_threads_with_different_settings_match_serial_fits(name):
    W, s, p = fastmlr.make_mixture(2, 6, seed=3)
    X, y, off, _ = fastmlr.sample_tasks(W, s, p, 8, n_tasks=500, seed=4)
    with fastmlr.use_backend(name):
        want = fastmlr.fit((X, y, off), 2, seed=0)
    got = {}
    barrier = threading.Barrier(2, timeout=60)

    def run(key, backend_name, count):
        def go():
            with fastmlr.use_backend(backend_name), fastmlr.n_threads(count):
                barrier.wait()
                got[key] = (fastmlr.fit((X, y, off), 2, seed=0), backend.get_backend(), _threads.get())
        return go

    Steps().run(run("a", name, 1), run("b", "numpy", 2))
    assert got["a"][1:] == (name, 1) and got["b"][1:] == ("numpy", 2)
    np.testing.assert_array_equal(got["a"][0].W, want.W)
    np.testing.assert_allclose(got["b"][0].W, want.W, rtol=1e-9, atol=1e-12)
