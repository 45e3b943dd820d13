"""Property-based fuzzing of every public function and every CLI command.

Each case either returns a valid result or raises ``ValueError``/``TypeError`` (and
``MemoryError`` for a memory guard) whose message names the argument and says what was
expected -- never another exception, a crash, a hang or a silent wrong answer.
Inputs that are *valid but unusual* (int, bool, float16 or mixed-precision data,
Fortran-ordered, strided, read-only or memory-mapped arrays, offsets as lists or
floats) must give bit for bit the result of the same call on the coerced C-contiguous
arrays.  Inputs that are *invalid* (complex, object, NaN/inf, misshapen arrays, offsets
that do not describe the rows, an empty pool) must be refused.

Two hypothesis profiles: ``fastmlr-ci`` (default, few derandomized cases per test) and
``fastmlr-slow`` (the ``*_slow`` twin of every test, marked slow, >= 10,000 cases in
all; run ``pytest -m slow tests/test_fuzz.py --hypothesis-show-statistics``).
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import functools
import io
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import fastmlr
from fastmlr import _config, cli

from helpers import BACKENDS

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# no "explain" phase: re-running every failing case under coverage is slow, the shrunk case is enough
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
settings.register_profile("fastmlr-ci", max_examples=40, deadline=None, derandomize=True, phases=_PHASES,
                          database=None, suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("fastmlr-slow", max_examples=250, deadline=None, database=None, phases=_PHASES,
                          suppress_health_check=_HEALTH, print_blob=True)
CI = settings.get_profile("fastmlr-ci")
SLOW = settings.get_profile("fastmlr-slow")

#: A kernel that never returns is a hang: dump every thread's stack and exit.
HANG_SECONDS = int(os.environ.get("FASTMLR_FUZZ_HANG_SECONDS", 900))

_TMP = tempfile.mkdtemp(prefix="fastmlr-fuzz-")


@atexit.register
def _cleanup():
    for root, dirs, _ in os.walk(_TMP):  # the read-only directories made for save_model
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


def fuzz(*, backends=False, **strategies):
    """``@given(**strategies)`` under the CI profile, plus a ``<name>_slow`` twin.

    The twin runs the same property under the slow profile and carries
    ``pytest.mark.slow``.  With ``backends``, both take a ``backend`` parameter that
    runs over every available backend.
    """

    def deco(fn):
        module = sys.modules[fn.__module__].__dict__
        slow = settings(SLOW)(given(**strategies)(fn))
        slow.__name__ = fn.__name__ + "_slow"
        ci = settings(CI)(given(**strategies)(fn))
        if backends:
            slow = pytest.mark.parametrize("backend", BACKENDS)(slow)
            ci = pytest.mark.parametrize("backend", BACKENDS)(ci)
        module[slow.__name__] = pytest.mark.slow(slow)
        return ci

    return deco


def mostly(good, bad):
    """``good`` three times in four, else ``bad``: most cases should get through."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda g: good if g else bad)


# ---------------------------------------------------------------------------------
# outcomes


_EXPECTS = re.compile(r"expected|must|need|use |pass |limit|rescale|remove", re.I)


def names_argument(msg: str, names) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", msg) for n in names)


def attempt(fn, *args, names, must_fail=False, memory=False, **kwargs):
    """Call ``fn``; a refusal must name one of ``names`` and say what was expected.

    Returns ``(True, result)`` or ``(False, None)`` after an acceptable refusal.  Any
    other exception propagates and fails the test.
    """
    allowed = (ValueError, TypeError, MemoryError) if memory else (ValueError, TypeError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastmlr.FallbackWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = fn(*args, **kwargs)
    except allowed as exc:
        msg = str(exc)
        assert names_argument(msg, names), f"{type(exc).__name__} does not name any of {names}: {msg}"
        assert _EXPECTS.search(msg), f"{type(exc).__name__} does not say what was expected: {msg}"
        assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
        event(f"refused: {type(exc).__name__}: {re.sub(r'[-+.0-9e]{2,}|[0-9]', '#', msg)[:48]}")
        return False, None
    assert not must_fail, f"{fn.__name__} accepted an invalid input"
    event("returned")
    return True, res


def same(a, b, path="result"):
    """Bitwise equality of nested results (NamedTuples, tuples, arrays, scalars)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if key != "seconds":
                same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, tuple):
        assert len(a) == len(b), path
        fields = getattr(a, "_fields", range(len(a)))
        for f, x, y in zip(fields, a, b):
            if f != "seconds":
                same(x, y, f"{path}.{f}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=True), f"{path} differs"
    else:
        assert a == b or (a != a and b != b), path


def finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(a)), "result holds NaN or inf"


def check_mixture_result(W, s2, p, k, d):
    assert W.shape == (k, d) and s2.shape == (k,) and p.shape == (k,)
    finite(W, s2, p)
    assert np.all(s2 > 0)
    assert np.all(p >= 0) and abs(p.sum() - 1.0) < 1e-9


# ---------------------------------------------------------------------------------
# task sets: contents, valid layouts and corruptions

CONTENTS = ("normal", "mixture", "noise_free", "zeros", "constant", "integers", "tiny", "large", "huge")


def _content(rng, kind, N, d):
    X = rng.standard_normal((N, d))
    if kind == "zeros":
        return np.zeros((N, d)), np.zeros(N)
    if kind == "constant":
        X[:, 0] = 1.0
        if d > 1:
            X[:, -1] = 3.0
    if kind == "integers":
        X = np.round(3 * X)
    if kind in ("mixture", "noise_free", "constant", "integers"):
        w = rng.standard_normal((2, d))
        z = rng.integers(0, 2, size=N)
        y = np.einsum("ij,ij->i", X, w[z])
        if kind != "noise_free":
            y += 0.1 * rng.standard_normal(N)
        return X, y
    y = rng.standard_normal(N)
    scale = {"tiny": 1e-8, "large": 1e8, "huge": 1e200}.get(kind, 1.0)
    return X * scale, y * scale


@st.composite
def raw_tasks(draw, min_t=None, max_t=9, max_n=7, max_d=5):
    """A well-formed task set (X, y, offsets) of float64 and its content kind."""
    if min_t is None:
        min_t = draw(st.sampled_from([2, 2, 2, 1, 0]))
    n = draw(st.integers(1, max_n))
    sizes = draw(st.lists(st.integers(min_t, max_t), min_size=n, max_size=n))
    d = draw(st.integers(1, max_d))
    kind = draw(st.sampled_from(CONTENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X, y = _content(rng, kind, int(off[-1]), d)
    return X, y, off, kind


VALID_LAYOUTS = ("plain", "float32", "x32_y64", "x64_y32", "int", "bool", "float16", "fortran",
                 "strided", "readonly", "memmap", "lists", "offsets_int32", "offsets_float",
                 "offsets_uint64")
CORRUPTIONS = {
    "X_complex": "X", "X_object": "X", "X_strings": "X", "X_nan": "X", "X_inf": "X",
    "y_nan": "y", "y_inf": "y", "y_short": "y", "y_long": "y", "X_1d": "X", "X_3d": "X",
    "y_2d": "y", "X_no_columns": "X", "y_complex": "y",
    "offsets_decrease": "offsets", "offsets_start": "offsets", "offsets_end_short": "offsets",
    "offsets_end_past": "offsets", "offsets_len0": "offsets", "offsets_len1": "offsets",
    "offsets_2d": "offsets", "offsets_fraction": "offsets", "offsets_complex": "offsets",
    "offsets_huge": "offsets", "offsets_nan": "offsets", "empty_pool": "offsets",
}


def _memmap(a):
    path = tempfile.mktemp(dir=_TMP, suffix=".dat")
    m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    m.flush()
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def make_layout(X, y, off, layout):
    """Rewrite a valid task set in another valid form; return it and its coerced twin."""
    if layout == "float32":
        X, y = X.astype(np.float32), y.astype(np.float32)
    elif layout == "x32_y64":
        X = X.astype(np.float32)
    elif layout == "x64_y32":
        y = y.astype(np.float32)
    elif layout == "int":
        X, y = np.clip(np.round(X), -1e15, 1e15).astype(np.int64), np.clip(np.round(y), -1e15, 1e15).astype(np.int64)
    elif layout == "bool":
        X = X > 0
    elif layout == "float16":
        with np.errstate(over="ignore"):
            X, y = X.astype(np.float16), y.astype(np.float16)
    elif layout == "fortran":
        X = np.asfortranarray(X)
    elif layout == "strided":
        wide = np.zeros((X.shape[0], 2 * X.shape[1]))
        wide[:, ::2] = X
        X = wide[:, ::2]
        long = np.zeros(2 * y.shape[0])
        long[1::2] = y
        y = long[1::2]
    elif layout == "readonly":
        X, y, off = X.copy(), y.copy(), off.copy()
        for a in (X, y, off):
            a.setflags(write=False)
    elif layout == "memmap":
        if X.size:
            X = _memmap(X)
        if y.size:
            y = _memmap(y)
    elif layout == "offsets_int32":
        off = off.astype(np.int32)
    elif layout == "offsets_float":
        off = off.astype(np.float64)
    elif layout == "offsets_uint64":
        off = off.astype(np.uint64)
    elif layout == "lists":
        X, y, off = X.tolist(), y.tolist(), off.tolist()
        if not X:
            X = np.zeros((0, np.shape(X)[1] if np.ndim(X) == 2 else 1))
    Xa, ya = np.asarray(X), np.asarray(y)
    real = lambda a: np.float32 if a.dtype.kind == "f" and a.dtype.itemsize <= 4 else np.float64
    dt = real(Xa) if real(Xa) == real(ya) else np.float64
    twin = (np.ascontiguousarray(Xa, dtype=dt), np.ascontiguousarray(ya, dtype=dt),
            np.asarray(off).astype(np.int64))
    return (X, y, off), twin


def corrupt(X, y, off, how, rng):
    """An invalid form of a task set: the name of the argument at fault comes with it."""
    X, y, off = X.copy(), y.copy(), off.copy()
    N = X.shape[0]
    if how == "X_complex":
        X = X + 1j
    elif how == "X_object":
        X = X.astype(object)
    elif how == "X_strings":
        X = X.astype(str)
    elif how in ("X_nan", "X_inf"):
        if N == 0:
            X, y, off = np.zeros((1, X.shape[1])), np.zeros(1), np.array([0, 1])
        X[rng.integers(X.shape[0]), rng.integers(X.shape[1])] = np.nan if how == "X_nan" else -np.inf
    elif how in ("y_nan", "y_inf"):
        if N == 0:
            X, y, off = np.zeros((1, X.shape[1])), np.zeros(1), np.array([0, 1])
        y[rng.integers(y.shape[0])] = np.nan if how == "y_nan" else np.inf
    elif how == "y_short":
        y = y[:-1] if N else np.zeros(1)
    elif how == "y_long":
        y = np.append(y, 0.0)
    elif how == "X_1d":
        X = X[:, 0]
    elif how == "X_3d":
        X = X[:, :, None]
    elif how == "y_2d":
        y = y[:, None]
    elif how == "X_no_columns":
        X = X[:, :0]
    elif how == "y_complex":
        y = y.astype(complex)
    elif how == "offsets_decrease":
        off = np.concatenate([off[:1], [off[-1] + 1], off[1:]])
    elif how == "offsets_start":
        off[0] = 1
    elif how == "offsets_end_short":
        off[-1] = off[-1] - 1 if N else -1
    elif how == "offsets_end_past":
        off[-1] += 1 + int(rng.integers(0, 1000))
    elif how == "offsets_len0":
        off = off[:0]
    elif how == "offsets_len1":
        off = off[:1]
    elif how == "offsets_2d":
        off = off[None, :]
    elif how == "offsets_fraction":
        off = off.astype(np.float64)
        off[-1] += 0.5
    elif how == "offsets_complex":
        off = off.astype(complex)
    elif how == "offsets_huge":
        off = off.astype(np.uint64)
        off[1:] = np.uint64(2**64 - 1)
    elif how == "offsets_nan":
        off = off.astype(np.float64)
        off[-1] = np.nan
    elif how == "empty_pool":
        X, y, off = X[:0], y[:0], off[:1]
    return X, y, off


@st.composite
def task_input(draw, **kw):
    """A task set in a valid layout, or corrupted.

    Returns ``(args, twin, fault)``: ``twin`` is the coerced form a valid input must match
    bit for bit (None if corrupted); ``fault`` the argument at fault (None if valid).
    """
    X, y, off, kind = draw(raw_tasks(**kw))
    event(f"content: {kind}")
    if draw(st.sampled_from([False, False, False, True])):
        how = draw(st.sampled_from(sorted(CORRUPTIONS)))
        event(f"corrupted: {how}")
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        return corrupt(X, y, off, how, rng), None, CORRUPTIONS[how], kind
    layout = draw(st.sampled_from(VALID_LAYOUTS))
    args, twin = make_layout(X, y, off, layout)
    return args, twin, None, kind


DATA_NAMES = ("X", "y", "offsets", "tasks")
BAD_INTS = st.sampled_from([2.0, True, "2", None, 1.5, np.float64(2.0), [2]])


def ints_or_junk(lo, hi, good=None):
    """Integers in [lo, hi] (numpy ones too); with ``good``, mostly in that range."""
    ints = st.one_of(st.integers(lo, hi), st.integers(lo, hi).map(np.int64))
    if good is None:
        return st.one_of(ints, BAD_INTS)
    return mostly(st.integers(*good), st.one_of(ints, BAD_INTS))


def run_on(fn, inp, extra_names, *args, memory=False, **kwargs):
    """Run ``fn((X, y, offsets), *args)`` on a fuzzed task input with the outcome rules
    (``fn(X, y, offsets, *args)`` for ``check_tasks``, which takes the three arrays).

    A corrupted task set must be refused naming the argument at fault (or another
    argument that may also be bad); a valid layout must give bitwise the result of its
    coerced twin.  Returns the result or None.
    """
    (X, y, off), twin, fault, kind = inp
    # "tasks": the task set as a whole, the argument a refusal of a task too small names
    names = tuple(extra_names) + (DATA_NAMES if fault is None else (fault, "tasks") + tuple(extra_names))
    if kind == "huge":
        names = names + ("X", "y")
    def call(X, y, off, *rest, **kw):
        if fn is fastmlr.tasks.check_tasks:
            return fn(X, y, off, *rest, **kw)
        return fn((X, y, off), *rest, **kw)

    ok, res = attempt(call, X, y, off, *args, names=names, must_fail=fault is not None, memory=memory, **kwargs)
    if ok and twin is not None:
        ok2, res2 = attempt(call, *twin, *args, names=names, memory=memory, **kwargs)
        assert ok2, "the coerced twin of a valid input was refused"
        same(res, res2)
    return res


# ---------------------------------------------------------------------------------
# the task-set layout


@fuzz(inp=task_input(), min_size=st.one_of(st.integers(-1, 4), st.sampled_from(["2", 2.0, None])))
def test_check_tasks(inp, min_size):
    res = run_on(fastmlr.tasks.check_tasks, inp, ("min_size",), min_size=min_size)
    if res is not None:
        X, y, off = res
        assert X.flags.c_contiguous and y.flags.c_contiguous and off.dtype == np.int64
        assert X.dtype == y.dtype and X.dtype in (np.float32, np.float64)
        assert off[0] == 0 and off[-1] == X.shape[0] == y.shape[0] and np.all(np.diff(off) >= 0)


@st.composite
def per_task_lists(draw):
    (X, y, off), twin, fault, kind = draw(task_input())
    if fault is not None and fault != "y" and draw(st.booleans()):
        return ([X], [y]), ("Xs", "ys", "X", "y")
    X, y, off = twin if twin is not None else (np.asarray(X), np.asarray(y), np.asarray(off))
    n = off.size - 1 if off.ndim == 1 and off.size else 0
    Xs = [X[off[i]:off[i + 1]] for i in range(n)] if fault is None else [X]
    ys = [y[off[i]:off[i + 1]] for i in range(n)] if fault is None else [y]
    choice = draw(st.integers(0, 6))
    if choice == 0 and Xs:
        ys = ys[:-1]
    elif choice == 1 and Xs and Xs[0].ndim == 2:
        Xs[0] = Xs[0][:, :0] if Xs[0].shape[1] > 1 else np.zeros((Xs[0].shape[0], 2))
    elif choice == 2:
        return (3, 4), ("Xs", "ys")
    elif choice == 3:
        return ([None], [None]), ("Xs", "ys")
    elif choice == 4:
        return ([], []), ("Xs", "ys")
    return (Xs, ys), ("Xs", "ys", "X", "y")


@fuzz(case=per_task_lists())
def test_pack_tasks(case):
    (Xs, ys), names = case
    ok, res = attempt(fastmlr.pack_tasks, Xs, ys, names=names)
    if ok:
        assert res.offsets.size == len(Xs) + 1
        np.testing.assert_array_equal(np.diff(res.offsets), [np.shape(a)[0] for a in Xs])


IDS = st.sampled_from(["int", "str", "float", "mixed", "nan", "2d", "short", "object"])


@fuzz(inp=task_input(), ids=IDS, seed=st.integers(0, 99))
def test_group_tasks(inp, ids, seed):
    (X, y, off), twin, fault, kind = inp
    rng = np.random.default_rng(seed)
    N = np.shape(X)[0] if np.ndim(X) else 0
    tid = rng.integers(0, 4, size=N)
    tid = {"int": tid, "str": tid.astype(str), "float": tid * 0.5, "nan": np.where(tid == 0, np.nan, tid),
           "mixed": np.array([1, "a"] * N, dtype=object)[:N], "2d": tid[:, None], "short": tid[:-1],
           "object": tid.astype(object)}[ids]
    names = ("task_ids", "X", "y") if fault is None else ("task_ids", fault, "X", "y")
    ok, res = attempt(fastmlr.group_tasks, X, y, tid, names=names, must_fail=fault in ("X", "y"))
    if ok:
        assert res.offsets[-1] == res.X.shape[0] and np.all(np.diff(res.offsets) > 0)


# ---------------------------------------------------------------------------------
# the stages


@fuzz(backends=True, inp=task_input(), k=ints_or_junk(-2, 7, good=(1, 3)), eig=st.booleans())
def test_estimate_subspace(backend, inp, k, eig):
    with fastmlr.use_backend(backend):
        res = run_on(fastmlr.estimate_subspace, inp, ("k",), k, return_eigenvalues=eig)
    if res is not None:
        U = res[0] if eig else res
        d = U.shape[0]
        assert U.shape == (d, int(k))
        finite(U)
        np.testing.assert_allclose(U.T @ U, np.eye(int(k)), atol=1e-8)
        if eig:
            assert res[1].shape == (d,) and np.all(np.diff(res[1]) <= 0)


@fuzz(backends=True, inp=task_input())
def test_second_moment(backend, inp):
    with fastmlr.use_backend(backend):
        M = run_on(fastmlr.subspace.second_moment, inp, ())
    if M is not None:
        finite(M)
        np.testing.assert_array_equal(M, M.T)


def _U(d, r, seed, how):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((d, max(1, min(r, d)))))[0]
    return {"ok": U, "nan": np.full_like(U, np.nan), "complex": U + 0j, "wrong_d": np.ones((d + 1, 1)),
            "1d": U[:, 0], "empty": U[:, :0], "int": np.round(U).astype(int), "fortran": np.asfortranarray(U),
            "list": U.tolist()}[how]


U_KINDS = mostly(st.sampled_from(["ok", "int", "fortran", "list"]),
                 st.sampled_from(["nan", "complex", "wrong_d", "1d", "empty"]))
L_VALUES = mostly(st.one_of(st.none(), st.integers(1, 2)),
                  st.one_of(st.integers(-1, 6), st.sampled_from([1.5, "1", True, 10**30])))
LINKAGES = mostly(st.sampled_from([None, "average", "single"]), st.sampled_from(["ward", 3, ["single"], b"single"]))


def _d_of(inp):
    X = inp[1][0] if inp[1] is not None else np.asarray(inp[0][0], dtype=object)
    return X.shape[1] if X.ndim == 2 and X.shape[1] else 1


@fuzz(backends=True, inp=task_input(max_t=12), r=st.integers(1, 4), seed=st.integers(0, 99), how=U_KINDS, L=L_VALUES)
def test_distance_matrix(backend, inp, r, seed, how, L):
    U = _U(_d_of(inp), r, seed, how)
    with fastmlr.use_backend(backend):
        res = run_on(fastmlr.cluster.distance_matrix, inp, ("U", "L"), U, L=L)
    if res is not None:
        H, P = res
        n = H.shape[0]
        finite(H, P)
        assert H.shape == (n, n) and P.shape[0] == n
        np.testing.assert_array_equal(H, H.T)
        assert np.all(np.diag(H) == 0)


@fuzz(backends=True, inp=task_input(max_t=12), k=ints_or_junk(-1, 8, good=(1, 3)), r=st.integers(1, 4), seed=st.integers(0, 99),
      how=U_KINDS, L=L_VALUES, linkage=LINKAGES)
def test_cluster_tasks(backend, inp, k, r, seed, how, L, linkage):
    U = _U(_d_of(inp), r, seed, how)
    with fastmlr.use_backend(backend):
        res = run_on(fastmlr.cluster_tasks, inp, ("U", "L", "k", "linkage"), U, k, L=L, linkage=linkage)
    if res is not None:
        k = int(k)
        n = res.labels.size
        assert res.labels.min() >= 0 and res.labels.max() < k and res.labels.dtype == np.int64
        assert np.unique(res.labels).size == k <= n  # no cluster left empty
        check_mixture_result(res.W, res.s2, res.p, k, res.W.shape[1])


PARAM_FAULTS = ("ok",) * 16 + ("p_none", "p_one_zero", "W_nan", "W_wrong_d", "W_1d", "W_complex", "W_empty", "s2_zero",
                "s2_negative", "s2_nan", "s2_shape", "s2_strings", "p_negative", "p_zero_sum", "p_shape",
                "p_nan", "s2_tiny", "W_huge")


def _params(d, k, seed, fault):
    """Mixture parameters (W, s2, p), one of them possibly faulty, and the names to expect."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((k, d))
    s2 = rng.uniform(0.1, 2.0, size=k)
    p = rng.dirichlet(np.ones(k))
    if fault == "W_nan":
        W[0, 0] = np.nan
    elif fault == "W_wrong_d":
        W = np.ones((k, d + 1))
    elif fault == "W_1d":
        W = W[0]
    elif fault == "W_complex":
        W = W + 1j
    elif fault == "W_empty":
        W, s2, p = W[:0], s2[:0], p[:0]
    elif fault == "W_huge":
        W = W * 1e200
    elif fault == "s2_zero":
        s2[0] = 0.0
    elif fault == "s2_negative":
        s2[-1] = -1.0
    elif fault == "s2_nan":
        s2[0] = np.nan
    elif fault == "s2_shape":
        s2 = s2[:-1] if k > 1 else np.ones(2)
    elif fault == "s2_strings":
        s2 = s2.astype(str)
    elif fault == "s2_tiny":
        s2[:] = 5e-324
    elif fault == "p_negative":
        p[0] = -0.5
    elif fault == "p_zero_sum":
        p[:] = 0.0
    elif fault == "p_shape":
        p = np.append(p, 0.1)
    elif fault == "p_nan":
        p[0] = np.nan
    elif fault == "p_none":
        p = None
    elif fault == "p_one_zero" and k > 1:
        p[0] = 0.0
    return W, s2, p


def _param_names(fault, s2_name="s2"):
    """Names a refusal may cite: the faulty parameter (and what its fault touches)."""
    base = fault.split("_")[0]
    if fault in ("ok", "p_none", "p_one_zero"):
        return ()
    if fault in ("s2_tiny", "W_huge"):
        return ("W", s2_name, "X", "y")
    return ({"W": "W", "s2": s2_name, "p": "p"}[base],) + (("W",) if base == "W" else ())


@fuzz(backends=True, inp=task_input(max_t=10), k=st.integers(1, 4), seed=st.integers(0, 99),
      fault=st.sampled_from(PARAM_FAULTS))
def test_classify_tasks(backend, inp, k, seed, fault):
    W, r2, p = _params(_d_of(inp), k, seed, fault)
    names = _param_names(fault, "s2")
    with fastmlr.use_backend(backend):
        res = run_on(fastmlr.classify_tasks, inp, names, W, r2, p)
    if fault not in ("ok", "p_none", "p_one_zero", "s2_tiny", "W_huge"):
        assert res is None
    if res is not None:
        n = res.labels.size
        assert res.labels.min() >= 0 and res.labels.max() < k
        check_mixture_result(res.W, res.s2, res.p, k, W.shape[1])
        np.testing.assert_array_equal(res.p, np.bincount(res.labels, minlength=k) / n)


@fuzz(backends=True, inp=task_input(max_t=10), k=st.integers(1, 4), seed=st.integers(0, 99),
      fault=st.sampled_from([f for f in PARAM_FAULTS if f != "p_none"]),
      method=mostly(st.sampled_from(["bayes", "map"]), st.sampled_from(["mean", None, 3, np.array(["map", "bayes"])])),
      which=st.sampled_from(["log_likelihoods", "posterior", "predict_params"]))
def test_predict(backend, inp, k, seed, fault, method, which):
    W, s2, p = _params(_d_of(inp), k, seed, fault)
    names = _param_names(fault)
    fn = getattr(fastmlr, which)
    kw = {"method": method} if which == "predict_params" else {}
    if kw:
        names = names + ("method",)
    with fastmlr.use_backend(backend):
        res = run_on(fn, inp, names, W, s2, p, **kw)
    if fault not in ("ok", "p_one_zero", "s2_tiny", "W_huge"):
        assert res is None
    if res is not None:
        n = res.shape[0]
        if which == "log_likelihoods":
            assert res.shape == (n, k) and not np.any(np.isnan(res)) and np.all(res < np.inf)
            assert np.all(np.isfinite(res.max(axis=1)))
        elif which == "posterior":
            finite(res)
            assert res.shape == (n, k) and np.all(res >= 0)
            np.testing.assert_allclose(res.sum(axis=1), 1.0, rtol=1e-12)
        else:
            finite(res)
            assert res.shape == (n, W.shape[1])


@st.composite
def pipeline_input(draw):
    """Three task sets of one mixture, one of them possibly in another layout or corrupted."""
    k = draw(st.integers(1, 3))
    d = draw(st.integers(k, 5))
    seed = draw(st.integers(0, 2**16))
    W, s2, p = fastmlr.make_mixture(k, d, s2=draw(st.sampled_from([0.0, 0.01, 1.0])), seed=seed)
    light = fastmlr.sample_tasks(W, s2, p, draw(st.integers(2, 4)), n_tasks=draw(st.integers(20, 200)), seed=seed + 1)
    heavy = fastmlr.sample_tasks(W, s2, p, draw(st.integers(2, 40)), n_tasks=draw(st.integers(k, 30)), seed=seed + 2)
    light2 = fastmlr.sample_tasks(W, s2, p, draw(st.integers(1, 10)), n_tasks=draw(st.integers(k, 60)), seed=seed + 3)
    sets = [light[:3], heavy[:3], light2[:3]]
    which = draw(st.integers(0, 2))
    fault, twin = None, None
    if draw(st.sampled_from([False, False, False, True])):
        how = draw(st.sampled_from(sorted(CORRUPTIONS)))
        event(f"corrupted: {how}")
        sets[which] = corrupt(*sets[which], how, np.random.default_rng(seed))
        fault = CORRUPTIONS[how]
    else:
        layout = draw(st.sampled_from(VALID_LAYOUTS))
        twin = list(sets)
        sets[which], twin[which] = make_layout(*sets[which], layout)
    shape = draw(mostly(st.just("ok"), st.sampled_from(["not_tuple", "short", "none"])))
    if shape == "not_tuple":
        sets[which] = np.zeros(3)
    elif shape == "short":
        sets[which] = sets[which][:2]
    elif shape == "none":
        sets[which] = None
    if shape != "ok":
        fault, twin = ("light", "heavy", "light2")[which], None
    return sets, twin, fault, k


@fuzz(backends=True, inp=pipeline_input(), k=st.one_of(st.none(), ints_or_junk(-1, 6)), L=L_VALUES, linkage=LINKAGES)
def test_meta_learn(backend, inp, k, L, linkage):
    sets, twin, fault, k_true = inp
    k = k_true if k is None else k  # usually the true k
    names = ("k", "L", "linkage") + (DATA_NAMES + ("W", "s2") if fault is None else (fault,))
    with fastmlr.use_backend(backend):
        ok, res = attempt(fastmlr.meta_learn, *sets, k, L=L, linkage=linkage, names=names,
                          must_fail=fault is not None)
        if ok and twin is not None:
            same(res, fastmlr.meta_learn(*twin, k, L=L, linkage=linkage))
    if ok:
        check_mixture_result(res.W, res.s2, res.p, int(k), res.W.shape[1])
        assert set(res.seconds) == {"subspace", "cluster", "classify"}


@fuzz(backends=True, inp=task_input())
def test_moment_stats(backend, inp):
    with fastmlr.use_backend(backend):
        res = run_on(fastmlr.subspace.moment_stats, inp, ())
    if res is not None:
        finite(res.cross)
        assert res.n == np.asarray(inp[0][2]).size - 1


STREAM_FAULTS = ("ok",) * 6 + ("not_triple", "other_d", "nan_chunk", "empty", "one_shot_twice", "bad_offsets")


@fuzz(backends=True, raw=raw_tasks(min_t=2), cuts=st.lists(st.integers(0, 7), max_size=4), fault=st.sampled_from(STREAM_FAULTS),
      k=st.integers(1, 2), which=st.sampled_from(["moment_stats", "second_moment", "estimate_subspace", "classify_tasks",
                                                 "posterior", "log_likelihoods", "predict_params"]))
def test_task_streams(backend, raw, cuts, fault, k, which):
    """Stages given a TaskStream of chunks: the in-memory result, or a refusal naming the chunk."""
    X, y, off, kind = raw
    n = off.size - 1
    cut = sorted({0, n, *[c for c in cuts if c < n]})
    chunks = [(X[off[a]:off[b]], y[off[a]:off[b]], off[a:b + 1] - off[a]) for a, b in zip(cut[:-1], cut[1:])]
    if fault == "not_triple":
        chunks.append((X,))
    elif fault == "other_d":
        chunks.append((np.ones((2, X.shape[1] + 1)), np.ones(2), np.array([0, 2])))
    elif fault == "nan_chunk":
        chunks.append((np.full((2, X.shape[1]), np.nan), np.ones(2), np.array([0, 2])))
    elif fault == "empty":
        chunks = []
    elif fault == "bad_offsets":
        chunks.append((np.ones((2, X.shape[1])), np.ones(2), np.array([0, 3])))
    source = iter(chunks) if fault == "one_shot_twice" else chunks
    stream = fastmlr.TaskStream(source)
    d = X.shape[1]
    W, s2, p = _params(d, k, 0, "ok")
    call = {"moment_stats": lambda a: fastmlr.subspace.moment_stats(a),
            "estimate_subspace": lambda a: fastmlr.estimate_subspace(a, min(k, d)),
            "second_moment": lambda a: fastmlr.subspace.second_moment(a),
            "classify_tasks": lambda a: fastmlr.classify_tasks(a, W, s2),
            "posterior": lambda a: fastmlr.posterior(a, W, s2, p),
            "log_likelihoods": lambda a: fastmlr.predict.log_likelihoods(a, W, s2, p),
            "predict_params": lambda a: fastmlr.predict_params(a, W, s2, p, method="map")}[which]
    names = ("chunk", "TaskStream", "X", "y", "offsets", "tasks", "k", "W", "r2", "s2")
    with fastmlr.use_backend(backend):
        if fault == "one_shot_twice":
            attempt(lambda: list(stream), names=names)
        ok, res = attempt(call, stream, names=names, must_fail=fault != "ok")
        if ok:
            ok2, ref = attempt(call, (X, y, off), names=names)
            assert ok2
            for a, b in zip(np.atleast_1d(res) if not isinstance(res, tuple) else res,
                            np.atleast_1d(ref) if not isinstance(ref, tuple) else ref):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * max(1.0, float(np.max(np.abs(b)))))


NPY_FAULTS = ("ok",) * 6 + ("missing", "directory", "garbage", "truncated", "pickled", "wrong_shape", "complex",
                            "offsets_float", "offsets_short", "offsets_decrease", "nan")


@fuzz(backends=True, raw=raw_tasks(min_t=2), fault=st.sampled_from(NPY_FAULTS), which=st.sampled_from(["X", "y", "offsets"]),
      max_rows=mostly(st.integers(1, 64), st.sampled_from([0, -1, 2.5, "8", None])))
def test_open_npy_chunks(backend, raw, fault, which, max_rows):
    X, y, off, kind = raw
    if fault.startswith("offsets"):
        which = "offsets"
    arrays = {"X": X, "y": y, "offsets": off}
    paths = {}
    for name, a in arrays.items():
        path = tempfile.mktemp(dir=_TMP, suffix=".npy")
        if name == which and fault != "ok":
            if fault == "missing":
                paths[name] = path
                continue
            if fault == "directory":
                os.mkdir(path)
                paths[name] = path
                continue
            if fault == "garbage":
                open(path, "wb").write(b"\x93NUMPY garbage" * 3)
                paths[name] = path
                continue
            a = {"pickled": a.astype(object), "wrong_shape": a.reshape(-1, 1) if a.ndim == 1 else a.ravel(),
                 "complex": a + 1j, "offsets_float": a + 0.5, "offsets_short": a[:-1],
                 "offsets_decrease": a[::-1].copy(), "nan": a * np.nan, "truncated": a}.get(fault, a)
        np.save(path, a, allow_pickle=True)
        if name == which and fault == "truncated":
            data = open(path, "rb").read()
            open(path, "wb").write(data[: max(1, len(data) // 2)])
        paths[name] = path
    names = ("X_path", "y_path", "offsets_path", "max_rows", "X", "y", "offsets", "tasks", "chunk")
    with fastmlr.use_backend(backend):
        def read():
            stream = fastmlr.open_npy_chunks(paths["X"], paths["y"], paths["offsets"], max_rows=max_rows)
            return fastmlr.subspace.moment_stats(stream)
        ok, res = attempt(read, names=names, must_fail=fault != "ok")
        if ok:
            ref = fastmlr.subspace.moment_stats((X, y, off))
            np.testing.assert_allclose(res.cross, ref.cross, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(ref.cross).max()))


FIT_OPTIONS = st.fixed_dictionaries({}, optional={
    "whiten": mostly(st.sampled_from(["auto", True, False]), st.sampled_from(["yes", None, 1])),
    "linkages": mostly(st.sampled_from([(), ("average",), ("single", "average")]),
                       st.sampled_from(["ward", ("x",), 3])),
    "n_seeds": mostly(st.integers(0, 2), st.sampled_from([-1, 1.5, "2"])),
    "n_heavy": mostly(st.none(), st.sampled_from([0, -3, 10**6, 2.5])),
    "em_path": mostly(st.sampled_from(["auto", "stats", "rows"]), st.sampled_from(["x", None])),
    "tol": mostly(st.sampled_from([1e-6, 1e-3]), st.sampled_from([-1.0, float("nan"), "x"])),
    "k_max": st.sampled_from([None, 2, 0, -1]),
})


@fuzz(backends=True, inp=task_input(max_t=12, max_n=30, max_d=4), k=st.one_of(ints_or_junk(-1, 6, good=(1, 3)), st.none()),
      options=FIT_OPTIONS)
def test_fit(backend, inp, k, options):
    names = ("k", "tasks", "pool", "L") + tuple(options) + tuple(
        {"n_seeds": "linkages", "linkages": "n_seeds", "k_max": "k"}.get(o, o) for o in options)
    with fastmlr.use_backend(backend):
        model = run_on(fastmlr.fit, inp, names, k, max_iter=25, **options)
    if model is not None:
        kk = model.W.shape[0]
        check_mixture_result(model.W, model.s2, model.p, kk, model.W.shape[1])
        if k is not None:
            assert kk == int(k)
        json.dumps(model.diagnostics)  # the diagnostics are plain data


@fuzz(sizes=mostly(st.lists(st.integers(0, 300), min_size=1, max_size=50).map(np.array),
                   st.one_of(st.lists(st.integers(-2, 5), max_size=5), st.just([1.5, 2.0]), st.just(np.zeros((2, 2))),
                             st.just("abc"), st.just([]), st.none())),
      k=ints_or_junk(-1, 9, good=(1, 6)), d=ints_or_junk(-1, 64, good=(1, 64)))
def test_feasibility(sizes, k, d):
    ok, res = attempt(fastmlr.feasibility, sizes, k, d, names=("sizes", "k", "d"))
    if ok:
        assert res.k == int(k) and res.d == int(d)
        assert 0 <= res.largest_k <= 64
        json.dumps(res._asdict(), default=str)


MODEL_FILES = ("good", "truncated", "flipped", "empty", "missing", "directory", "other_version", "not_a_model",
               "text", "pool_file")


@functools.lru_cache(maxsize=None)
def fitted_files():
    """A small pool (.npz, .csv) and a model fitted to it, written once."""
    W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    pool = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(0).integers(2, 20, size=150), seed=1)
    task = np.repeat(np.arange(150), np.diff(pool.offsets))
    paths = {"npz": f"{_TMP}/pool.npz", "csv": f"{_TMP}/pool.csv", "model": f"{_TMP}/model.npz"}
    np.savez(paths["npz"], X=pool.X, y=pool.y, task=task)
    with open(paths["csv"], "w") as fh:
        fh.write("task,y,x0,x1,x2\n")
        fh.writelines(f"{t},{float(v)!r},{float(a)!r},{float(b)!r},{float(c)!r}\n"
                      for t, v, (a, b, c) in zip(task, pool.y, pool.X))
    fastmlr.save_model(paths["model"], fastmlr.fit(pool[:3], 2))
    return paths


def damaged_file(kind, base, rng, suffix):
    """A file (or path) of the given kind, derived from the good file ``base``."""
    path = tempfile.mktemp(dir=_TMP, suffix=suffix)
    data = open(base, "rb").read()
    if kind == "good":
        return base
    if kind == "truncated":
        data = data[: int(rng.integers(0, len(data)))]
    elif kind == "flipped":
        data = bytearray(data)
        for i in rng.integers(0, len(data), size=8):
            data[i] ^= 0xFF
        data = bytes(data)
    elif kind == "empty":
        data = b""
    elif kind == "missing":
        return path
    elif kind == "directory":
        os.mkdir(path)
        return path
    elif kind == "other_version":
        with np.load(base) as z:
            arrays = {name: z[name] for name in z.files}
        arrays["format_version"] = np.array(99)
        np.savez(path, **arrays)
        return path if path.endswith(".npz") else path + ".npz"
    elif kind == "not_a_model":
        np.savez(path, W=np.ones((2, 2)))
        return path if path.endswith(".npz") else path + ".npz"
    elif kind == "text":
        data = b"task,y,x\n1,2\n\x00\xff,,\n"
    elif kind == "pool_file":
        return fitted_files()["npz"]
    with open(path, "wb") as fh:
        fh.write(data)
    return path


@fuzz(kind=st.sampled_from(MODEL_FILES), seed=st.integers(0, 2**16))
def test_load_model(kind, seed):
    path = damaged_file(kind, fitted_files()["model"], np.random.default_rng(seed), ".npz")
    try:
        model = fastmlr.load_model(path)
    except (ValueError, OSError) as exc:
        event(f"refused: {type(exc).__name__}")
        assert kind != "good"
        assert path in str(exc) or os.path.basename(path) in str(exc), str(exc)
        assert "\n" not in str(exc).strip()
        return
    event("returned")
    check_mixture_result(model.W, model.s2, model.p, model.W.shape[0], model.W.shape[1])


OUT_PATHS = ("ok", "ok", "ok", "no_directory", "is_directory", "existing", "read_only_dir")


def output_path(kind, suffix):
    path = tempfile.mktemp(dir=_TMP, suffix=suffix)
    if kind == "no_directory":
        return os.path.join(path, "sub", "out" + suffix)
    if kind == "is_directory":
        os.mkdir(path)
    elif kind == "existing":
        with open(path, "w") as fh:
            fh.write("previous content")
    elif kind == "read_only_dir":
        d = tempfile.mkdtemp(dir=_TMP)
        os.chmod(d, 0o500)
        return os.path.join(d, "out" + suffix)
    return path


@fuzz(where=st.sampled_from(OUT_PATHS), model=st.sampled_from(["good", "not_a_model", "none"]))
def test_save_model(where, model):
    path = output_path(where, ".npz")
    before = open(path, "rb").read() if os.path.isfile(path) else None
    m = {"good": lambda: fastmlr.load_model(fitted_files()["model"]), "none": lambda: None,
         "not_a_model": lambda: (np.ones((2, 2)), np.ones(2), np.ones(2))}[model]()
    try:
        fastmlr.save_model(path, m)
    except (ValueError, TypeError, OSError) as exc:
        event(f"refused: {type(exc).__name__}")
        assert "\n" not in str(exc).strip()
        # nothing half-written: the path holds what it held before
        after = open(path, "rb").read() if os.path.isfile(path) else None
        assert after == before
        return
    event("returned")
    assert model == "good"
    same(fastmlr.load_model(path)[:4], m[:4])


# ---------------------------------------------------------------------------------
# synthetic data, metrics, backends


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["x", 1j, None, [1.0, 2.0]]))


@fuzz(k=ints_or_junk(-1, 6, good=(1, 4)), d=ints_or_junk(-1, 8, good=(4, 8)),
      kind=mostly(st.sampled_from(["orthonormal", "gaussian"]), st.sampled_from(["x", None])),
      s2=mostly(st.one_of(st.floats(0, 3), st.lists(st.floats(0, 3), min_size=1, max_size=4)),
                   st.one_of(st.floats(-1, 0, exclude_max=True), NUMBERS, st.just(np.ones((2, 2))))),
      weights=mostly(st.one_of(st.none(), st.just("random"), st.lists(st.floats(0, 2), min_size=1, max_size=4)),
                     st.one_of(st.just("x"), st.lists(st.floats(-1, 2), max_size=6), NUMBERS)),
      seed=mostly(st.one_of(st.none(), st.integers(0, 10**6)), st.sampled_from([-1, 1.5, "x"])),
      big=st.sampled_from([False] * 9 + [True]))
def test_make_mixture(k, d, kind, s2, weights, seed, big):
    if big:
        d = 10**12  # refused by the memory guard, never allocated
    ok, res = attempt(fastmlr.make_mixture, k, d, kind=kind, s2=s2, weights=weights, seed=seed,
                      names=("k", "d", "kind", "s2", "weights", "seed", "mixture"), memory=big)
    assert not (ok and big)
    if ok:
        W, s2, p = res
        assert W.shape == (int(k), int(d))
        finite(W, s2, p)
        assert np.all(s2 >= 0) and abs(p.sum() - 1) < 1e-12


@fuzz(k=st.integers(1, 4), d=st.integers(1, 6), seed=st.integers(0, 99),
      s_fault=mostly(st.just("ok"), st.sampled_from(["negative", "nan", "shape", "strings", "complex"])),
      p_fault=mostly(st.just("ok"), st.sampled_from(["negative", "zero_sum", "shape", "nan", "strings"])),
      sizes=mostly(st.one_of(st.integers(0, 6), st.lists(st.integers(0, 6), min_size=1, max_size=8).map(np.array)),
                   st.one_of(st.integers(-1, 6), st.lists(st.integers(-1, 6), max_size=8), st.just(10**13),
                             st.sampled_from([2.5, "3", [1.5, 2.0], np.zeros((2, 2), int)]))),
      n_tasks=mostly(st.integers(1, 6), st.one_of(st.none(), st.integers(-1, 6), st.just(2.0), st.just(10**13))),
      dtype=mostly(st.sampled_from(["float64", "float32", np.float32]),
                   st.sampled_from(["float16", "garbage", int, np.complex128])),
      sample_seed=mostly(st.one_of(st.none(), st.integers(0, 10**6)), st.sampled_from([-1, "x", 2.5])))
def test_sample_tasks(k, d, seed, s_fault, p_fault, sizes, n_tasks, dtype, sample_seed):
    W, s2, p = fastmlr.make_mixture(k, d, kind="gaussian", seed=seed)
    s2 = {"ok": s2, "negative": -s2, "nan": s2 * np.nan, "shape": np.ones(k + 1), "strings": s2.astype(str),
          "complex": s2 + 1j}[s_fault]
    p = {"ok": p, "negative": p - 1, "zero_sum": p * 0, "shape": np.ones(k + 1), "nan": p * np.nan,
         "strings": p.astype(str)}[p_fault]
    names = ("s2", "p", "sizes", "n_tasks", "dtype", "seed")
    ok, res = attempt(fastmlr.sample_tasks, W, s2, p, sizes, n_tasks=n_tasks, seed=sample_seed, dtype=dtype,
                      names=names, memory=True, must_fail=s_fault != "ok" or p_fault != "ok")
    if ok:
        X, y, off, z = res
        assert X.dtype == y.dtype == np.dtype(dtype)
        assert X.shape == (off[-1], d) and off[0] == 0 and np.all(np.diff(off) >= 0)
        assert z.shape == (off.size - 1,) and np.all((z >= 0) & (z < k))
        finite(X, y)


MATRICES = st.sampled_from(["ok", "nan", "1d", "wrong_d", "fewer_rows", "complex", "strings", "empty", "list"])


def _matrix(rng, k, d, how):
    A = rng.standard_normal((k, d))
    return {"ok": A, "nan": A * np.nan, "1d": A[0], "wrong_d": np.ones((k, d + 1)), "fewer_rows": A[:0],
            "complex": A + 1j, "strings": A.astype(str), "empty": np.zeros((0, 0)), "list": A.tolist()}[how]


@fuzz(k=st.integers(1, 5), d=st.integers(1, 6), seed=st.integers(0, 99), a=MATRICES, b=MATRICES,
      which=st.sampled_from(["parameter_error", "match_components", "subspace_error"]))
def test_matching_metrics(k, d, seed, a, b, which):
    rng = np.random.default_rng(seed)
    A = _matrix(rng, k + (which != "subspace_error"), d, a)
    B = _matrix(rng, k, d, b)
    if which == "subspace_error":
        A = np.asarray(np.linalg.qr(rng.standard_normal((d, min(k, d))))[0]) if a == "ok" else A
        A = np.ones((d + 1, k)) if a == "wrong_d" else A
        names = ("U", "W")
    else:
        names = ("W_hat", "W")
    ok, res = attempt(getattr(fastmlr, which), A, B, names=names,
                      must_fail=(a not in ("ok", "list") or b not in ("ok", "list")) and not a == b == "wrong_d")
    if ok:
        if which == "match_components":
            assert sorted(set(res.tolist())) == sorted(res.tolist()) and res.shape == (k,)
        elif which == "parameter_error":
            assert np.isfinite(res.max) and 0 <= res.mean <= res.max
        else:
            assert np.isfinite(res) and res >= 0


LABELS = st.sampled_from(["ok", "negative", "float", "fraction", "huge", "strings", "2d", "short", "empty", "bool"])


@fuzz(n=st.integers(1, 30), seed=st.integers(0, 99), a=LABELS, b=LABELS)
def test_clustering_accuracy(n, seed, a, b):
    rng = np.random.default_rng(seed)

    def labels(how):
        v = rng.integers(0, 4, size=n)
        return {"ok": v, "negative": v - 2, "float": v.astype(float), "fraction": v + 0.5, "huge": v + 10**12,
                "strings": v.astype(str), "2d": v[:, None], "short": v[:-1], "empty": v[:0],
                "bool": v > 1}[how]

    la, lb = labels(a), labels(b)
    bad = {"fraction", "strings", "2d", "short", "empty", "float"}
    ok, res = attempt(fastmlr.clustering_accuracy, la, lb, names=("labels", "z"),
                      must_fail=bool({a, b} & bad) and not (a == b == "short"))
    if ok:
        assert 0 < res <= 1
        # invariant under relabelling: the accuracy of labels against themselves is 1
        assert fastmlr.clustering_accuracy(la, la) == 1.0


@fuzz(name=st.one_of(st.sampled_from(["numba", "cython", "numpy", "NumPy", "fortran", "", None, 3, ["numba"]])),
      count=st.one_of(st.none(), st.integers(-1, 4), st.integers(1, 4).map(np.int64), st.sampled_from([1.5, "2", True])))
def test_backend_functions(name, count):
    before = fastmlr.backend.get_backend()
    assert before in fastmlr.backend.available_backends()
    try:
        ok, _ = attempt(fastmlr.backend.set_backend, name, names=("backend",))
        assert ok == (isinstance(name, str) and name.lower() in fastmlr.backend.available_backends())
        if ok:
            assert fastmlr.backend.get_backend() == name.lower()
    finally:
        fastmlr.backend.set_backend(before)

    def enter():
        with fastmlr.n_threads(count):
            return fastmlr.backend.get_backend()

    ok, _ = attempt(enter, names=("n_threads",))
    valid = count is None or (not isinstance(count, (bool, float, str)) and int(count) >= 1)
    assert ok == valid


# ---------------------------------------------------------------------------------
# the command line


@contextlib.contextmanager
def small_memory_limit(limit=1 << 28):
    """Lower the work-memory limit so that an oversized CLI call is refused, not run."""
    old = _config.MAX_WORK_BYTES
    _config.MAX_WORK_BYTES = limit
    try:
        yield
    finally:
        _config.MAX_WORK_BYTES = old


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), small_memory_limit():
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def check_cli_outcome(argv, code, out, err):
    assert code in (0, 2), f"{argv}: exit status {code}\n{err}"
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("fastmlr") and "error" in lines[-1], err
        assert len([line for line in lines if "error" in line]) == 1, err
        event(f"cli: exit 2: {re.sub(r'[-+.0-9e]{2,}|[0-9]', '#', lines[-1])[:60]}")
    else:
        assert out.strip()
        event("cli: exit 0")


JUNK = st.sampled_from(["", "x", "-1", "0", "1e3", "2.5", "nan", "inf", "-inf", "1e400", "9" * 30, "--json"])


def opt(flag, good):
    """An option absent, with a good value, or (one time in eight) with junk."""
    pair = lambda values: st.tuples(st.just(flag), values).map(list)
    return st.sampled_from([1] * 6 + [0, 2]).flatmap(lambda c: (st.just([]), pair(good), pair(JUNK))[c])


DEMO_ARGS = st.tuples(
    opt("--k", st.integers(1, 4).map(str)),
    opt("--d", st.integers(1, 10).map(str)),
    opt("--seed", st.integers(0, 5).map(str)),
    st.tuples(st.just("--scale"), mostly(st.sampled_from(["0.0005", "0.001", "1e-9"]),
                                         st.sampled_from(["0", "-1", "nan", "inf", "1e300", "x", ""]))).map(list),
    opt("--dtype", st.sampled_from(["float64", "float32", "float16"])),
    opt("--backend", st.sampled_from(BACKENDS + ["fortran"])),
    opt("--threads", st.sampled_from(["1", "2", "0", "-3", "64"])),
    st.sampled_from([[], ["--json"]] * 4 + [["--nope"]]),
)


@fuzz(parts=DEMO_ARGS, order=st.randoms(use_true_random=False))
def test_cli_demo(parts, order):
    parts = list(parts)
    order.shuffle(parts)
    argv = ["demo"] + [tok for part in parts for tok in part]
    before = fastmlr.backend.get_backend()
    try:
        code, out, err = run_cli(argv)
    finally:
        fastmlr.backend.set_backend(before)
    check_cli_outcome(argv, code, out, err)
    if code == 0 and "--json" in argv:
        res = json.loads(out)
        assert set(res) >= {"setting", "seconds", "prediction", "checks"}


@fuzz(argv=st.lists(st.sampled_from(["demo", "nosuch", "--help", "-h", "--k", "2", "--backend", "numpy", "--json",
                                     "--threads", "1", "x", "--scale"]), max_size=4))
def test_cli_any_tokens(argv):
    if "demo" in argv and not any(t in ("--help", "-h") for t in argv):
        argv = argv + ["--scale", "0.0005", "--d", "6"]  # keep a valid demo small
    code, out, err = run_cli(argv)
    if code == 0 and not out.strip():
        out = "help"  # argparse --help prints through its own stream
    check_cli_outcome(argv, code, out, err)


POOL_FILES = ("good", "good", "good", "truncated", "flipped", "empty", "missing", "directory", "text",
              "not_a_model", "model_file")
COL_OPTIONS = st.sampled_from([[], [], [], ["--task-col", "nope"], ["--target-col", "x0"], ["--features", ""],
                               ["--features", "x0,x2"], ["--features", "zz"]])


def pool_path(kind, fmt, rng):
    files = fitted_files()
    if kind == "model_file":
        return files["model"]
    return damaged_file(kind, files[fmt], rng, "." + fmt)


@st.composite
def file_command(draw):
    """argv of one of the file commands, with its inputs and output possibly bad."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    command = draw(st.sampled_from(["simulate", "fit", "predict", "check"]))
    fmt = draw(st.sampled_from(["npz", "csv"]))
    out_kind = draw(st.sampled_from(OUT_PATHS))
    if command == "simulate":
        out = output_path(out_kind, draw(st.sampled_from([".npz", ".csv", ".npz", ".txt"])))
        argv = ["simulate", "-o", out, "--tasks", draw(mostly(st.sampled_from(["40", "200"]), JUNK)),
                "--k", draw(mostly(st.sampled_from(["1", "3"]), JUNK)), "--d", draw(mostly(st.sampled_from(["2", "5"]), JUNK))]
        argv += draw(st.sampled_from([[], ["--min-size", "1", "--max-size", "3"], ["--min-size", "9", "--max-size", "3"],
                                      ["--queries", "2"], ["--noise", "0"], ["--sizes", "uniform"], ["--kind", "gaussian"]]))
        return argv, out
    src = pool_path(draw(st.sampled_from(POOL_FILES)), fmt, rng)
    cols = draw(COL_OPTIONS) if fmt == "csv" else []
    if command == "check":
        return ["check", src] + cols + draw(st.sampled_from([[], ["--json"], ["--k", "2"], ["--k", "0"]])), None
    if command == "fit":
        out = output_path(out_kind, draw(st.sampled_from([".npz", ".npz", ".csv"])))
        k = draw(mostly(st.sampled_from(["1", "2", "auto"]), JUNK))
        return ["fit", src, "--k", k, "-o", out, "--quiet"] + cols + draw(
            st.sampled_from([[], ["--json"], ["--whiten", "no"], ["--whiten", "maybe"], ["--skip-query-rows"]])), out
    model = damaged_file(draw(st.sampled_from(MODEL_FILES + ("good",) * 5)), fitted_files()["model"], rng, ".npz")
    out = output_path(out_kind, draw(st.sampled_from([".npz", ".csv", ".json"])))
    return ["predict", model, src, "-o", out] + cols, out


@fuzz(case=file_command())
def test_cli_file_commands(case):
    argv, out = case
    before = open(out, "rb").read() if out and os.path.isfile(out) else None
    outdir = os.path.dirname(out) if out else None
    listing = set(os.listdir(outdir)) if outdir and os.path.isdir(outdir) else None
    code, stdout, err = run_cli(argv)
    check_cli_outcome(argv, code, stdout, err)
    event(f"{argv[0]}: exit {code}")
    if out is None:
        return
    after = open(out, "rb").read() if os.path.isfile(out) else None
    if code == 2:
        assert after == before, "a failed command changed its output file"
    else:
        assert after is not None and after != before
    if listing is not None:  # no temporary file left behind
        extra = set(os.listdir(outdir)) - listing - {os.path.basename(out)}
        assert not [f for f in extra if f.startswith(".tmp")], extra


@fuzz(name=st.sampled_from(["prediction", "clustering", "all", "nosuch", "", "--quick"]),
      opts=st.lists(st.sampled_from([["--trials", "0"], ["--trials", "-2"], ["--trials", "x"], ["--seed", "-1"],
                                     ["--seed", "x"], ["--out"], ["--no-figure"], ["--backend", "fortran"],
                                     ["--threads", "x"]]), min_size=1, max_size=3),
      out=st.sampled_from(["missing", "file", "dir"]))
def test_cli_reproduce_bad_arguments(name, opts, out):
    """Every case has a bad argument (a valid experiment would run for minutes)."""
    out_path = {"missing": None, "file": fitted_files()["npz"] + "/sub", "dir": tempfile.mkdtemp(dir=_TMP)}[out]
    argv = ["reproduce", name] + [t for o in opts for t in o] + (["--out", out_path] if out_path else [])
    bad_arg = any(o[0] in ("--trials", "--seed", "--backend", "--threads") or o == ["--out"] for o in opts)
    if not (bad_arg or out == "missing" or name in ("nosuch", "", "--quick")):
        argv.append("--nope")
    code, stdout, err = run_cli(argv)
    assert code == 2, (argv, code, stdout[-300:], err)
    check_cli_outcome(argv, code, stdout, err)


# ---------------------------------------------------------------------------------
# regressions: one deterministic case per bug the fuzzing found


def _zip_flag_bit_5(path):
    """A copy of a .npz whose first zip header announces 'compressed patched data'."""
    data = bytearray(open(path, "rb").read())
    data[data.index(b"PK\x01\x02") + 8] |= 1 << 5  # general purpose flags of the first central directory entry
    out = tempfile.mktemp(dir=_TMP, suffix=".npz")
    open(out, "wb").write(bytes(data))
    return out


def _npy(a):
    path = tempfile.mktemp(dir=_TMP, suffix=".npy")
    np.save(path, a, allow_pickle=True)
    return path


_X, _Y, _OFF = np.random.default_rng(0).standard_normal((6, 2)), np.ones(6), np.array([0, 3, 6])
_W, _S2, _P = np.ones((2, 2)), np.ones(2), np.full(2, 0.5)
REGRESSIONS = {
    "sample_tasks dtype garbage": (lambda: fastmlr.sample_tasks(_W, [1, 1], _P, 3, n_tasks=2, dtype="garbage"),
                                   ValueError, r"dtype is 'garbage'; expected"),
    "sample_tasks s2 complex": (lambda: fastmlr.sample_tasks(_W, [1j, 1], _P, 3, n_tasks=2), TypeError, r"^s2 has dtype"),
    "sample_tasks n_tasks vs sizes": (lambda: fastmlr.sample_tasks(_W, [1, 1], _P, [3], n_tasks=2), ValueError,
                                      r"n_tasks is 2 but sizes has 1 entries; expected"),
    "make_mixture s2 shape": (lambda: fastmlr.make_mixture(2, 3, s2=[1, 2, 3]), ValueError, r"^s2 has shape"),
    "make_mixture s2 text": (lambda: fastmlr.make_mixture(2, 3, s2="x"), TypeError, r"^s2 has dtype"),
    "offsets beyond int64": (lambda: fastmlr.tasks.check_tasks(_X, _Y, np.array([0, 2**64 - 1, 6], dtype=np.uint64)),
                             ValueError, r"offsets\[1\] is 18446744073709551615; expected row offsets between 0 and"),
    "check_tasks min_size text": (lambda: fastmlr.tasks.check_tasks(_X, _Y, _OFF, min_size="2"), TypeError, r"^min_size must"),
    "pack_tasks of numbers": (lambda: fastmlr.pack_tasks(3, 4), TypeError, r"^Xs and ys must be sequences"),
    "group_tasks mixed ids": (lambda: fastmlr.group_tasks(_X, _Y, np.array([1, "a"] * 3, dtype=object)), TypeError,
                              r"^task_ids must be mutually sortable"),
    "predict method array": (lambda: fastmlr.predict_params((_X, _Y, _OFF), _W, _S2, _P, method=np.array(["map", "x"])),
                             ValueError, r"^method is"),
    "cluster linkage array": (lambda: fastmlr.cluster_tasks((_X, _Y, _OFF), np.eye(2), 2, linkage=np.array(["a", "b"])),
                              ValueError, r"^linkage is"),
    "posterior s2 denormal": (lambda: fastmlr.posterior((_X, _Y, _OFF), _W, [5e-324, 5e-324], _P), ValueError,
                              r"zero likelihood under every component.*s2 = .* is too small"),
    "classify s2 denormal": (lambda: fastmlr.classify_tasks((_X, _Y, _OFF), _W, [5e-324, 5e-324]), ValueError,
                             r"zero likelihood under every component.*s2 = "),
    "posterior X overflow": (lambda: fastmlr.posterior((_X * 1e200, _Y, _OFF), _W, _S2, _P), ValueError,
                             r"residual sums of squares overflowed.*rescale X and y"),
    "classify X overflow": (lambda: fastmlr.classify_tasks((_X * 1e200, _Y, _OFF), _W, _S2), ValueError,
                            r"overflowed float64.*rescale X and y"),
    "subspace X overflow": (lambda: fastmlr.estimate_subspace((_X * 1e200, _Y * 1e200, _OFF), 1), ValueError,
                            r"group means of y\*x overflowed"),
    "cluster X overflow, one task": (lambda: fastmlr.cluster.distance_matrix((_X[:2] * 1e200, _Y[:2] * 1e200, [0, 2]), np.eye(2)),
                                     ValueError, r"group means of y\*x overflowed"),
    "fit X overflow": (lambda: fastmlr.fit(_X * 1e200, _Y * 1e200, _OFF, 1), ValueError, r"X\^T X / N overflowed"),
    "fit n_heavy too large": (lambda: fastmlr.fit(_X, _Y, _OFF, 1, n_heavy=10**6), ValueError,
                              r"n_heavy is 1000000 .*; expected n_heavy <= 2"),
    "fit linkages number": (lambda: fastmlr.fit(_X, _Y, _OFF, 1, linkages=3), TypeError, r"^linkages is 3; expected"),
    "cluster one-row tasks": (lambda: fastmlr.cluster_tasks((_X, _Y, [0, 1, 6]), np.eye(2), 2), ValueError,
                              r"heavy tasks: 1 of 2 tasks have fewer than 2 rows"),
    "match_components NaN": (lambda: fastmlr.metrics.match_components(np.full((2, 2), np.nan), _W), ValueError,
                             r"^W_hat contains NaN or inf"),
    "subspace_error shapes": (lambda: fastmlr.subspace_error(np.ones((4, 2)), _W), ValueError,
                              r"^U has shape \(4, 2\) and W \(2, 2\); expected"),
    "subspace_error empty W": (lambda: fastmlr.subspace_error(np.eye(2), np.ones((0, 2))), ValueError,
                               r"^W has shape \(0, 2\); expected a non-empty"),
    "clustering_accuracy fractions": (lambda: fastmlr.clustering_accuracy([0.5, 0, 1], [0, 1, 1]), TypeError,
                                      r"^labels has dtype float64; expected integer labels"),
    "load_model zip flag bit 5": (lambda: fastmlr.load_model(_zip_flag_bit_5(fitted_files()["model"])), ValueError,
                                  r"is not a readable fastmlr model file \(NotImplementedError"),
    "open_npy_chunks object array": (lambda: fastmlr.subspace.moment_stats(fastmlr.open_npy_chunks(
        _npy(_X), _npy(_Y), _npy(_OFF.astype(object)))), ValueError, r"^offsets_path .* is not a readable .npy array"),
    "open_npy_chunks .npz given": (lambda: fastmlr.subspace.moment_stats(fastmlr.open_npy_chunks(
        fitted_files()["npz"], _npy(_Y), _npy(_OFF))), ValueError, r"^X_path .* is an .npz archive; expected one .npy"),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name):
    fn, exc, pattern = REGRESSIONS[name]
    with pytest.raises(exc, match=pattern):
        fn()


def test_regression_clustering_accuracy_negative_labels():
    # np.add.at wrapped negative labels around: the accuracy of [-1, 0, 1] was wrong
    assert fastmlr.clustering_accuracy([-1, 0, 1, 1], [0, 1, 2, 2]) == 1.0
    assert fastmlr.clustering_accuracy([10**12, 0, 0], [1, 0, 0]) == 1.0


@pytest.mark.parametrize("argv", [["demo", "--scale", "inf"], ["demo", "--scale", "nan"]])
def test_regression_cli_scale_not_finite(argv):
    code, out, err = run_cli(argv)
    assert code == 2 and "expected a positive number" in err


def test_regression_demo_exact_oracle():
    # k = 1 with fewer rows than d: the oracle keeps the truth, its error is 0
    code, out, err = run_cli(["demo", "--k", "1", "--d", "256", "--scale", "0.0005", "--dtype", "float32", "--json"])
    assert code == 0, err
    assert json.loads(out)["parameter_error"]["ratio_max"] is None


# ---------------------------------------------------------------------------------
# every public function is fuzzed

# ---------------------------------------------------------------------------------
# standard_errors: a small fitted pool, the model or the tasks damaged at random


@functools.lru_cache(maxsize=None)
def _se_pool():
    W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    S = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(0).integers(4, 16, size=120), seed=1)
    return (S.X, S.y, S.offsets), fastmlr.fit((S.X, S.y, S.offsets), 2)


@fuzz(damage=st.sampled_from(["none", "nan_y", "d_mismatch", "p_sum", "s2_negative", "model_type", "method",
                              "tasks_type", "empty_task"]),
      method=st.sampled_from(["louis", "empirical"]))
def test_standard_errors_result_or_one_line(damage, method):
    (X, y, off), model = _se_pool()
    tasks, kw = (X, y, off), {"method": method}
    if damage == "nan_y":
        y = y.copy()
        y[3] = np.nan
        tasks = (X, y, off)
    elif damage == "d_mismatch":
        tasks = (X[:, :2], y, off)
    elif damage == "p_sum":
        model = model._replace(p=model.p * 1.5)
    elif damage == "s2_negative":
        model = model._replace(s2=-model.s2)
    elif damage == "model_type":
        model = {"W": model.W}
    elif damage == "method":
        kw["method"] = "fisher"
    elif damage == "tasks_type":
        tasks = X
    elif damage == "empty_task":
        tasks = (X, y, np.insert(off, 1, 0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no NumPy warning escapes
            se = fastmlr.standard_errors(tasks, model, **kw)
    except (ValueError, TypeError) as exc:
        assert damage not in ("none", "empty_task"), exc
        assert "\n" not in str(exc) and str(exc)
        return
    assert damage in ("none", "empty_task")
    assert se.W.shape == model.W.shape and se.s2.shape == se.p.shape == model.p.shape
    assert np.all(np.isfinite(se.W)) and np.all(se.W > 0)


# ---------------------------------------------------------------------------------
# fork after a call: a child made by multiprocessing's "fork" start method repeats the
# call the parent made (with OpenMP's threads started) and gets the same bits, or a
# clear error; it never hangs


def _fork_call(which, n, threads, backend):
    W, s2, p = fastmlr.make_mixture(2, 5, seed=n)
    S = fastmlr.sample_tasks(W, s2, p, 6, n_tasks=n, seed=n + 1)
    tasks = (S.X, S.y, S.offsets)
    with fastmlr.use_backend(backend), fastmlr.n_threads(threads):
        if which == "fit":
            return fastmlr.fit(tasks, 2).W
        if which == "subspace":
            return fastmlr.estimate_subspace(tasks, 2)
        return fastmlr.posterior(tasks, W, s2, p)


def _fork_child(queue, args):
    try:
        queue.put(("ok", _fork_call(*args).tobytes()))
    except Exception as exc:  # reported to the parent, which checks the message
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@fuzz(backends=True, which=st.sampled_from(["fit", "subspace", "posterior"]),
      n=st.integers(40, 400), threads=st.sampled_from([1, 2]))
def test_fork_after_a_call_works_or_names_the_fix(backend, which, n, threads):
    import multiprocessing as mp

    args = (which, n, threads, backend)
    parent = _fork_call(*args).tobytes()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_fork_child, args=(queue, args))
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"HANG: a child forked after {which} under {backend} did not finish")
    assert proc.exitcode == 0, f"the forked child ended with status {proc.exitcode}"
    status, got = queue.get(timeout=10)
    if status == "error":  # only where no backend can run in the child
        assert "spawn" in got and "forkserver" in got, got
    else:
        assert got == parent


FRAME_FAULTS = ("none", "nan_feature", "inf_feature", "missing_id", "text_feature", "no_target", "float32", "shuffled")


@fuzz(raw=raw_tasks(min_t=2), fault=st.sampled_from(FRAME_FAULTS), kind=st.sampled_from(["pandas", "polars", "arrow",
                                                                                         "parquet"]),
      row=st.integers(0, 10**6))
def test_tasks_from_frame_and_open_parquet(raw, fault, kind, row):
    """A frame (or a .parquet of it) of a valid pool gives the pool of group_tasks, bit for bit;
    one bad cell or column is refused naming the column."""
    pd = pytest.importorskip("pandas")
    X, y, off = (np.asarray(a) for a in raw[:3])
    if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "fiu" or y.shape != (X.shape[0],):
        return
    X, y = X.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        return
    ids = np.repeat(np.arange(off.size - 1), np.diff(off))
    df = pd.DataFrame({"task": ids, "y": y, **{f"x{j}": X[:, j] for j in range(X.shape[1])}})
    r = row % X.shape[0]
    if fault == "nan_feature":
        df.loc[r, "x0"] = np.nan
    elif fault == "inf_feature":
        df.loc[r, "x0"] = np.inf
    elif fault == "missing_id":
        df["task"] = df["task"].astype(object)
        df.loc[r, "task"] = None
    elif fault == "text_feature":
        df["x0"] = "a"
    elif fault == "no_target":
        df = df.drop(columns="y")
    elif fault == "float32":
        df = df.astype({c: np.float32 for c in df.columns if c != "task"})
    elif fault == "shuffled" and kind != "parquet":
        df = df.iloc[np.random.default_rng(row).permutation(len(df))].reset_index(drop=True)
    names = ["df", "task", "x0", "y", "task id", "path", "parquet"]
    if kind == "parquet":
        pa = pytest.importorskip("pyarrow")
        path = os.path.join(_TMP, f"frame_{os.getpid()}.parquet")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        ok, res = attempt(lambda: fastmlr.stream.collect(fastmlr.open_parquet(path, max_rows=7)), names=names + [path],
                          must_fail=fault not in ("none", "float32", "shuffled"))
    else:
        frame = {"pandas": lambda d: d, "polars": lambda d: pytest.importorskip("polars").from_pandas(d),
                 "arrow": lambda d: pytest.importorskip("pyarrow").Table.from_pandas(d, preserve_index=False)}[kind](df)
        ok, res = attempt(fastmlr.tasks_from_frame, frame, names=names,
                          must_fail=fault not in ("none", "float32", "shuffled"))
    if ok:
        want = fastmlr.group_tasks(df[[c for c in df.columns if c.startswith("x")]].to_numpy(), df["y"].to_numpy(),
                                   df["task"].to_numpy())
        for a, b in zip(res[:3], want):
            same(np.asarray(a), np.asarray(b))


FUZZED = {
    "available_backends", "get_backend", "n_threads", "set_backend", "use_backend",
    "classify_tasks", "cluster_tasks", "distance_matrix", "clustering_accuracy", "match_components",
    "parameter_error", "subspace_error", "meta_learn", "log_likelihoods", "posterior", "predict_params",
    "estimate_subspace", "second_moment", "make_mixture", "sample_tasks", "check_tasks", "group_tasks",
    "pack_tasks", "fit", "feasibility", "save_model", "load_model", "moment_stats", "open_npy_chunks",
    "standard_errors", "tasks_from_frame", "open_parquet",
}


def test_every_public_function_is_fuzzed():
    functions = {name for name in fastmlr.__all__ if not isinstance(getattr(fastmlr, name), type)}
    assert functions - FUZZED == set()


def test_use_backend_restores_after_a_refusal():
    before = fastmlr.backend.get_backend()
    with pytest.raises(ValueError, match="backend"):
        with fastmlr.use_backend("fortran"):
            pass
    assert fastmlr.backend.get_backend() == before


# ---------------------------------------------------------------------------------
# output paths that are inputs, or each other

#: Ways of naming a file of the working directory: as is, through ./, through the
#: parent, absolutely, through a directory and .., through a symbolic link to the
#: directory, or by a new symbolic or hard link to the file.
PATH_FORMS = ("same", "dot", "parent", "abs", "double", "dirlink", "symlink", "hardlink")


def _path_to(form, name, where, links):
    """A path, from the working directory ``where``, to the file ``name`` in it."""
    if form == "same":
        return name
    if form == "dot":
        return os.path.join(".", name)
    if form == "parent":
        return os.path.join("..", os.path.basename(where), name)
    if form == "abs":
        return os.path.join(where, name)
    if form == "double":
        return os.path.join("sub", "..", name)
    if form == "dirlink":
        return os.path.join("here", name)
    link = f"link{len(links)}{os.path.splitext(name)[1]}"
    links.append(link)
    if form == "symlink":
        os.symlink(name, os.path.join(where, link))
    else:
        if not os.path.exists(os.path.join(where, name)):  # an earlier output, to link to
            with open(os.path.join(where, name), "w") as fh:
                fh.write("earlier output")
        os.link(os.path.join(where, name), os.path.join(where, link))
    return link


@functools.lru_cache(maxsize=None)
def _collision_csv():
    """The pool of :func:`fitted_files` as a .csv, numbers written with float()."""
    path = os.path.join(_TMP, "collision_pool.csv")
    with np.load(fitted_files()["npz"]) as z:
        X, y, task = z["X"], z["y"], z["task"]
    with open(path, "w") as fh:
        fh.write("task,y,x0,x1,x2\n")
        fh.writelines(f"{t},{float(v)!r},{','.join(repr(float(a)) for a in x)}\n" for t, v, x in zip(task, y, X))
    return path


@st.composite
def collision_case(draw):
    """``(argv, inputs, outputs, clashes)``: a fit or predict whose outputs may be its
    inputs, or each other, under other names.  ``inputs`` and ``outputs`` are
    ``(path as given, file it names)``; ``clashes`` the pairs of paths as given that
    name one file."""
    where = tempfile.mkdtemp(dir=_TMP)
    files = fitted_files()
    for src, name in ((_collision_csv(), "in.queries.csv"), (files["npz"], "in.npz"), (files["model"], "model.npz")):
        shutil.copy(src, os.path.join(where, name))
    os.mkdir(os.path.join(where, "sub"))
    os.symlink(".", os.path.join(where, "here"))
    links = []
    form = lambda: draw(st.sampled_from(PATH_FORMS))
    path = lambda name: _path_to(form(), name, where, links)
    command = draw(st.sampled_from(["fit", "predict"]))
    pool = draw(st.sampled_from(["in.queries.csv", "in.npz"]))
    in_form = draw(st.sampled_from([f for f in PATH_FORMS if f != "hardlink"]))
    inputs = [(_path_to(in_form, pool, where, links), pool)]
    if command == "fit":
        target = draw(st.sampled_from(["in.npz", "model.npz", "out.npz"]))
        o = path(target)
        argv = ["fit", inputs[0][0], "--k", "1", "-o", o, "--quiet"]
        outputs = [(o, target)]
    else:
        inputs.insert(0, (_path_to(draw(st.sampled_from(["same", "symlink", "abs"])), "model.npz", where, links),
                          "model.npz"))
        ext = draw(st.sampled_from([".csv", ".npz"]))
        targets = ["in.queries.csv", "in.csv", "out.csv"] if ext == ".csv" else ["in.npz", "model.npz", "out.npz"]
        o_form, target = form(), draw(st.sampled_from(targets))
        o = _path_to(o_form, target, where, links)
        argv = ["predict", inputs[0][0], inputs[1][0], "-o", o]
        outputs = [(o, target)]
        if ext == ".csv":
            q_target = draw(st.sampled_from([None, "in.queries.csv", "q.csv", target]))
            if q_target is None:  # the default: OUT with .queries.csv
                q = os.path.splitext(o)[0] + ".queries.csv"
                q_target = os.path.basename(q) if o_form in ("symlink", "hardlink") else \
                    os.path.splitext(target)[0] + ".queries.csv"
            else:
                q = path(q_target)
                argv += ["--queries-out", q]
            outputs.append((q, q_target))
    clashes = [(out, src) for out, t in outputs for src, s in inputs if t == s]
    clashes += [(b, a) for i, (a, ta) in enumerate(outputs) for b, tb in outputs[i + 1:] if ta == tb]
    return argv, where, inputs, outputs, clashes


@fuzz(case=collision_case())
def test_cli_output_collisions(case):
    argv, where, inputs, outputs, clashes = case
    before = {t: open(os.path.join(where, t), "rb").read() for _, t in inputs}
    with contextlib.chdir(where):
        code, out, err = run_cli(argv)
    check_cli_outcome(argv, code, out, err)
    # the inputs are untouched, whatever happened
    assert {t: open(os.path.join(where, t), "rb").read() for _, t in inputs} == before
    assert not [f for f in os.listdir(where) if f.startswith(".fastmlr-tmp") or f.startswith(".tmp")]
    if clashes:
        event(f"refused: {argv[0]}")
        assert code == 2, (argv, clashes, out)
        named = lambda p: re.search(rf"(?<!\S){re.escape(p)}(?=[\s;]|$)", err) is not None
        assert any(named(a) and named(b) for a, b in clashes), (clashes, err)
    else:
        event(f"written: {argv[0]}")
        assert code == 0, (argv, err)
        for o, _ in outputs:
            assert os.path.isfile(os.path.join(where, o)) and not os.path.islink(os.path.join(where, o))


# ---------------------------------------------------------------------------------
# crafted .npz members: model and pool files whose members lie about themselves

import zipfile  # noqa: E402

from fastmlr.pool_io import read_pool  # noqa: E402

MEMBER_FAULTS = ("good", "absurd_shape", "shape_too_small", "shape_too_large", "negative_dim", "zero_d",
                 "empty", "complex", "text", "bool", "int8", "float16", "big_endian", "object", "fortran",
                 "version_2", "version_9", "long_header", "not_npy", "deflated", "duplicate")
EXTRA_FAULTS = ("extra_absurd", "extra_large", "extra_garbage")
ID_FAULTS = ("bytes_utf8", "bytes_latin1", "nan_ids", "unicode_ids")


def _header(descr, shape, fortran=False, version=(1, 0)):
    buf = io.BytesIO()
    d = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def crafted_member(arr, fault, rng):
    """``.npy`` bytes for ``arr`` with ``fault`` applied (see MEMBER_FAULTS)."""
    arr = np.asarray(arr)
    descr = np.lib.format.dtype_to_descr(arr.dtype)
    data = arr.tobytes()
    if fault == "absurd_shape":
        return _header(descr, (10 ** int(rng.integers(9, 16)),) + arr.shape[1:]) + data
    if fault in ("shape_too_small", "shape_too_large"):
        n = max(arr.shape[0] if arr.ndim else 1, 1)
        return _header(descr, (n - 1 if fault == "shape_too_small" else n + 5,) + arr.shape[1:]) + data
    if fault == "negative_dim":
        return _header(descr, (-3,) + arr.shape[1:]) + data
    if fault == "zero_d":
        return _header(descr, ()) + data[: arr.dtype.itemsize]
    if fault == "empty":
        return _header(descr, (0,) + arr.shape[1:])
    if fault == "object":
        return _header("|O", arr.shape) + bytes(8 * max(arr.size, 1))
    if fault == "fortran":
        return _header(descr, arr.shape, fortran=True) + np.asfortranarray(arr).tobytes(order="F")
    if fault == "version_2":
        return _header(descr, arr.shape, version=(2, 0)) + data
    if fault == "version_9":
        return b"\x93NUMPY\x09\x00" + _header(descr, arr.shape)[8:] + data
    if fault == "long_header":
        return _header(descr, (1,) * 4000) + data[: arr.dtype.itemsize]
    if fault == "not_npy":
        return rng.bytes(int(rng.integers(0, 64)))
    cast = {"complex": np.complex128, "text": "U3", "bool": np.bool_, "int8": np.int8, "float16": np.float16,
            "big_endian": ">f8"}.get(fault)
    if cast is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                other = arr.astype(cast)
            except ValueError:  # text that is no number
                other = np.zeros(arr.shape, dtype=cast)
            return crafted_member(other, "good", rng)
    return _header(descr, arr.shape) + data


def _ids(task, fault):
    if fault == "bytes_utf8":
        return np.array([f"t\u00e9{t}".encode() for t in task])
    if fault == "bytes_latin1":
        return np.array([f"t\u00e9{t}".encode("latin-1") for t in task])
    if fault == "nan_ids":
        return np.where(task == 3, np.nan, task.astype(np.float64))
    return np.array([f"\u03c4{t}" for t in task])


@functools.lru_cache(maxsize=None)
def _good_members(kind):
    path = fitted_files()["model" if kind == "model" else "npz"]
    with np.load(path) as z:
        return {key: z[key] for key in z.files}


def crafted_npz(kind, member, fault, rng):
    """A model or pool file whose ``member`` has ``fault``; returns its path."""
    arrays = _good_members(kind)
    path = tempfile.mktemp(dir=_TMP, suffix=".npz")
    members = {key: crafted_member(a, "good", rng) for key, a in arrays.items()}
    deflate = set()
    extra = None
    if fault in ID_FAULTS:
        members["task"] = crafted_member(_ids(arrays["task"], fault), "good", rng)
    elif fault == "extra_absurd":
        members["extra"] = _header("<f8", (10**12, 3)) + bytes(24)
    elif fault == "extra_garbage":
        members["extra"] = rng.bytes(100)
    elif fault == "extra_large":
        extra = 2 << 20
    elif fault == "deflated":
        deflate.add(member)
    elif fault != "duplicate":
        members[member] = crafted_member(arrays[member], fault, rng)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile's warning about a duplicate name
        for key, data in members.items():
            zf.writestr(key + ".npy", data,
                        compress_type=zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED)
        if fault == "duplicate":  # a second member of the same name, last in the archive
            first = arrays[member][:1] if arrays[member].ndim else arrays[member]
            zf.writestr(member + ".npy", crafted_member(first, "good", rng))
        if extra:
            info = zipfile.ZipInfo("extra.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as fh:
                fh.write(_header("<f8", (extra // 8,)))
                fh.write(bytes(extra))
    return path


def _crafted_case(kind):
    members = ("format", "format_version", "W", "s2", "p", "transform", "diagnostics") if kind == "model" \
        else ("X", "y", "task")
    faults = MEMBER_FAULTS + EXTRA_FAULTS + (ID_FAULTS if kind == "pool" else ())
    return st.tuples(st.just(kind), st.sampled_from(members), st.sampled_from(faults))


@fuzz(case=st.one_of(_crafted_case("model"), _crafted_case("pool")), seed=st.integers(0, 2**16),
      cli_too=st.sampled_from([False, False, False, True]))
def test_crafted_npz_members(case, seed, cli_too):
    kind, member, fault = case
    event(f"{kind}: {fault}")
    path = crafted_npz(kind, member, fault, np.random.default_rng(seed))
    read = fastmlr.load_model if kind == "model" else read_pool
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a NumPy warning is a failure too
            res = read(path)
    except ValueError as exc:  # MemoryError or any other exception fails the test
        msg = str(exc)
        assert path in msg, msg
        assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
        assert fault != "good" or kind == "pool" and member == "task", msg
        event(f"refused: {re.sub(r'[-+.0-9e]{2,}|[0-9]', '#', msg[len(path):])[:50]}")
    else:
        event("returned")
        if kind == "model":
            check_mixture_result(res.W, res.s2, res.p, res.W.shape[0], res.W.shape[1])
        else:
            assert res.X.shape[0] == res.y.shape[0] == res.offsets[-1] and np.all(np.isfinite(res.X))
            assert res.tasks.dtype.kind in "iuU"
    if cli_too:
        argv = ["predict", path, fitted_files()["npz"], "-o", tempfile.mktemp(dir=_TMP, suffix=".npz")] \
            if kind == "model" else ["check", path]
        code, out, err = run_cli(argv)
        check_cli_outcome(argv, code, out, err)
