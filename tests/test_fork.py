"""A process forked after a fit: its fits finish, with the parent's results, or fail
with a message naming the fix; they never hang.

GNU OpenMP's worker threads do not exist in a forked child, so the Cython kernels run
there on one thread, and the Numba kernels (whose OpenMP layer ends a forked child)
are replaced by the Cython ones.  Each case runs in a fresh interpreter whose forked
child is given a deadline, so that a hang fails the test instead of stopping it.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from helpers import BACKENDS, COMPILED

#: subprocesses run here, outside the checkout, so that they import the installed package
_HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

# The parent fits on two kernel threads (so OpenMP starts its threads), then a child
# made by multiprocessing's "fork" start method fits the same pool and sends back its
# estimates; the parent checks them against its own, bitwise.
FIT_THEN_FORK = """
import multiprocessing as mp
import sys

import numpy as np

import fastmlr
from fastmlr.backend import set_backend

set_backend(sys.argv[1])


def small_fit():
    W, s, p = fastmlr.make_mixture(2, 6, seed=0)
    X, y, off, _ = fastmlr.sample_tasks(W, s, p, 8, n_tasks=600, seed=1)
    with fastmlr.n_threads(2):
        return fastmlr.fit((X, y, off), 2, seed=0)


def child(queue):
    try:
        model = small_fit()
    except Exception as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
    else:
        queue.put(("ok", model.W.tobytes(), model.s2.tobytes()))


if __name__ == "__main__":
    parent = small_fit()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        proc.join()
        sys.exit("HANG: the forked child did not finish")
    if proc.exitcode != 0:
        sys.exit(f"CHILD EXIT {proc.exitcode}")
    got = queue.get(timeout=10)
    if got[0] == "error":
        print(got[1])
        sys.exit(3)
    assert got[1] == parent.W.tobytes() and got[2] == parent.s2.tobytes(), "the child's fit differs"
    print("OK")
"""


def run_script(code, *args, blocked=()):
    """Run ``code`` in a fresh interpreter (``blocked`` top-level modules made
    unimportable, as where they are not installed)."""
    prelude = ""
    if blocked:
        prelude = textwrap.dedent(
            f"""
            import sys

            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if name in {set(blocked)!r}:
                        raise ImportError(f"No module named {{name!r}} (blocked for this test)")
                    return None

            sys.meta_path.insert(0, _Block())
            """
        )
    env = {k: v for k, v in os.environ.items() if k not in ("FASTMLR_BACKEND", "NUMBA_THREADING_LAYER")}
    return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True,
                          env=env, timeout=400, cwd=_HERE)


@pytest.mark.parametrize("name", COMPILED)
def test_a_child_forked_after_a_fit_fits_too(name):
    if "cython" not in BACKENDS:
        pytest.skip("the Cython extension is not built here: a forked child of the numba backend raises")
    p = run_script(FIT_THEN_FORK, name)
    assert p.returncode == 0 and p.stdout.strip() == "OK", p.stdout + p.stderr


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed here")
def test_without_cython_a_forked_numba_child_names_the_fix():
    p = run_script(FIT_THEN_FORK, "numba", blocked={"fastmlr._ckernels"})
    assert p.returncode == 3, p.stdout + p.stderr
    msg = p.stdout.strip()
    assert msg.startswith("RuntimeError: the Numba kernels cannot run in this process")
    assert "'spawn'" in msg and "'forkserver'" in msg
    assert "Terminating" not in p.stderr


@pytest.mark.skipif("cython" not in BACKENDS, reason="the Cython extension is not built here")
def test_openmp_threads_in_a_child_forked_before_or_after_they_started():
    # a child forked before any parallel region may use every thread; one forked after
    # runs its regions on one thread (libgomp's pool is the parent's, without threads)
    code = """
    import os
    import signal
    import time

    import fastmlr
    from fastmlr import backend

    ck = backend._load("cython")
    if not ck.OPENMP:
        print("NOOPENMP")
        raise SystemExit(0)

    def threads_in_child():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            with fastmlr.n_threads(2):
                os.write(w, str(ck._parallel_threads()).encode())
            os._exit(0)
        os.close(w)
        deadline = time.monotonic() + 60
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:  # hung: end it, and say so
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "HANG"
            time.sleep(0.01)
        return int(os.read(r, 16))

    before = threads_in_child()
    with fastmlr.n_threads(2):
        in_parent = ck._parallel_threads()
    after = threads_in_child()
    print(before, in_parent, after)
    """
    p = run_script(textwrap.dedent(code), blocked={"numba"})
    assert p.returncode == 0, p.stderr
    if p.stdout.strip() == "NOOPENMP":
        pytest.skip("the Cython extension was built without OpenMP")
    assert p.stdout.split() == ["2", "2", "1"]
