"""Backend choice and thread control: defaults, errors, and running without Numba.

The tests that hide a backend run in a fresh interpreter whose import of ``numba``
(or of the Cython extension) fails, as on a machine where it is not installed.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlr
from fastmlr import backend

from helpers import BACKENDS, COMPILED, CYTHON_REQUIRED


# A meta-path finder that makes the named top-level modules unimportable.
BLOCKER = textwrap.dedent(
    """
    import sys

    class _Block:
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name in self.names or name.split(".")[0] in self.names:
                raise ImportError(f"No module named {name!r} (blocked for this test)")
            return None

    sys.meta_path.insert(0, _Block(BLOCKED))
    """
)


def run_python(code, blocked=(), env_backend=None, tmp_path=None):
    """Run ``code`` in a fresh interpreter with ``blocked`` modules unimportable."""
    env = {k: v for k, v in os.environ.items() if k != "FASTMLR_BACKEND"}
    if env_backend is not None:
        env["FASTMLR_BACKEND"] = env_backend
    script = BLOCKER.replace("BLOCKED", repr(set(blocked))) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


def test_available_backends_in_order_of_preference():
    names = fastmlr.backend.available_backends()
    assert names == [b for b in ("numba", "cython", "numpy") if b in names]
    assert names[-1] == "numpy"


def test_cython_backend_built_when_required():
    if not CYTHON_REQUIRED:
        pytest.skip("FASTMLR_REQUIRE_CYTHON is not set: the extension is optional here")
    assert "cython" in BACKENDS, backend._failures.get("cython")
    from fastmlr import _ckernels

    if sys.platform.startswith("linux"):
        assert _ckernels.OPENMP, "the Cython extension was built without OpenMP"


def test_default_is_the_first_available(tmp_path):
    p = run_python("import fastmlr; print(fastmlr.backend.get_backend())", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == BACKENDS[0]


def test_import_does_not_import_numba(tmp_path):
    p = run_python("import sys, fastmlr; print('numba' in sys.modules)", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match=r"backend is 'fortran'; expected one of 'numba', 'cython', 'numpy'"):
        fastmlr.backend.set_backend("fortran")
    with pytest.raises(ValueError, match="backend is 3"):
        fastmlr.backend.set_backend(3)


def test_unavailable_backend_says_why_and_how(monkeypatch):
    before = fastmlr.backend.get_backend()
    monkeypatch.setitem(backend._MODULES, "cython", "fastmlr._no_such_extension")
    with pytest.raises(ImportError) as err:
        fastmlr.backend.set_backend("cython")
    msg = str(err.value)
    assert "backend 'cython' is not available" in msg
    assert "No module named 'fastmlr._no_such_extension'" in msg  # why
    assert "pip install" in msg and "FASTMLR_REQUIRE_CYTHON=1" in msg  # how
    assert fastmlr.backend.get_backend() == before
    assert "cython" not in fastmlr.backend.available_backends()


@pytest.mark.parametrize("name", BACKENDS)
def test_set_backend_and_use_backend_restore(name):
    before = fastmlr.backend.get_backend()
    with fastmlr.use_backend(name):
        assert fastmlr.backend.get_backend() == name
        assert backend.kernels() is backend._load(name)
    assert fastmlr.backend.get_backend() == before
    with pytest.raises(RuntimeError):
        with fastmlr.use_backend(name):
            raise RuntimeError("boom")
    assert fastmlr.backend.get_backend() == before


def test_environment_variable_selects_backend(tmp_path):
    for name in BACKENDS:
        p = run_python("import fastmlr; print(fastmlr.backend.get_backend())", env_backend=name, tmp_path=tmp_path)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == name


def test_bad_environment_variable_is_named(tmp_path):
    p = run_python("import fastmlr; fastmlr.backend.get_backend()", env_backend="fortran", tmp_path=tmp_path)
    assert p.returncode != 0
    assert "ValueError: FASTMLR_BACKEND=fortran: backend is 'fortran'" in p.stderr


@pytest.mark.skipif("cython" not in BACKENDS, reason="the Cython extension is not built here")
def test_runs_on_cython_without_numba(tmp_path):
    code = """
    import json, sys
    import fastmlr
    from fastmlr.cli import main

    assert fastmlr.backend.get_backend() == "cython", fastmlr.backend.get_backend()
    assert fastmlr.backend.available_backends() == ["cython", "numpy"]
    try:
        fastmlr.backend.set_backend("numba")
    except ImportError as exc:
        print("ERROR", exc, file=sys.stderr)
    else:
        raise SystemExit("set_backend('numba') did not fail")
    status = main(["demo", "--k", "3", "--d", "12", "--scale", "0.02", "--seed", "1", "--json"])
    assert "numba" not in sys.modules
    raise SystemExit(status)
    """
    p = run_python(code, blocked={"numba"}, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["setting"]["backend"] == "cython"
    assert res["stages"]["cluster"]["clustering_accuracy"] >= 0.95
    assert "backend 'numba' is not available" in p.stderr and "pip install numba" in p.stderr


def test_falls_back_to_numpy_without_compiled_backends(tmp_path):
    code = """
    import fastmlr
    print(fastmlr.backend.get_backend(), fastmlr.backend.available_backends())
    """
    p = run_python(code, blocked={"numba", "fastmlr._ckernels"}, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == "numpy"


def test_n_threads_restores_even_on_error():
    from fastmlr import _threads

    before = _threads.get()
    with fastmlr.n_threads(1):
        assert _threads.get() == 1
        with fastmlr.n_threads(2):
            assert _threads.get() == 2
        assert _threads.get() == 1
    assert _threads.get() == before
    with pytest.raises(RuntimeError):
        with fastmlr.n_threads(1):
            raise RuntimeError("boom")
    assert _threads.get() == before
    with fastmlr.n_threads(None):
        assert _threads.get() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_n_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="n_threads is"):
        with fastmlr.n_threads(bad):
            pass


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed here")
def test_numba_honours_n_threads():
    import numba

    backend._load("numba")
    before = numba.get_num_threads()
    with fastmlr.n_threads(1):
        assert numba.get_num_threads() == 1
    with fastmlr.n_threads(2):
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert numba.get_num_threads() == before


@pytest.mark.skipif("cython" not in BACKENDS, reason="the Cython extension is not built here")
def test_cython_honours_n_threads():
    ck = backend._load("cython")
    with fastmlr.n_threads(1):
        assert ck._parallel_threads() == 1
    with fastmlr.n_threads(2):
        assert ck._parallel_threads() == (2 if ck.OPENMP else 1)


@pytest.mark.parametrize("name", COMPILED)
def test_stage_results_match_numpy_backend(name, small_problem):
    # one stage end to end under each compiled backend, against the oracle backend
    X, y, off = small_problem["light"][:3]
    with fastmlr.use_backend("numpy"):
        want = fastmlr.subspace.second_moment((X, y, off))
    with fastmlr.use_backend(name):
        got = fastmlr.subspace.second_moment((X, y, off))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


IMPORT_CHANGES_NOTHING = """
import json, os
from threadpoolctl import threadpool_info
import numpy

def blas_threads():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info()}

env, threads = dict(os.environ), blas_threads()
import fastmlr
import fastmlr.cli
after = blas_threads()
print(json.dumps({"env": dict(os.environ) == env,
                  "changed": sorted(set(env.items()) ^ set(os.environ.items())),
                  "threads": {f: n for f, n in after.items() if f in threads} == threads}))
"""


def test_import_changes_no_environment_variable_and_no_thread_count():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    p = subprocess.run([sys.executable, "-c", IMPORT_CHANGES_NOTHING], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))  # the installed package, not the checkout
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"env": True, "changed": [], "threads": True}
