"""Crafted files, extreme magnitudes and odd argument types: refused with one line that
names the real cause, never a MemoryError, a NumPy warning or a silent wrong answer."""

import io
import math
import os
import subprocess
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import fastmlr
from fastmlr import _config
from fastmlr._validation import ArgumentTypeError, check_int, check_real
from fastmlr.pool_io import read_pool, write_pool


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastmlr", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def pool():
    W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    S = fastmlr.sample_tasks(W, s2, p, np.random.default_rng(0).integers(4, 20, size=150), seed=1)
    task = np.repeat(np.arange(150), np.diff(S.offsets))
    return S, task


@pytest.fixture(scope="module")
def model(pool):
    return fastmlr.fit(pool[0][:3], 2)


# ---------------------------------------------------------------------------------
# .npz members: only the defined ones are read, each header checked first


def npy(arr, shape=None):
    """The .npy bytes of ``arr``; with ``shape``, its header declares that shape instead."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    data = buf.getvalue()
    if shape is None:
        return data
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(np.asarray(arr).dtype),
                                                "fortran_order": False, "shape": shape})
    return head.getvalue() + data[len(data) - np.asarray(arr).nbytes:]


def write_npz(path, members, big=None):
    """An .npz of ``members`` (name -> .npy bytes); ``big`` = (name, nbytes) adds a
    deflated float64 member of that many zero bytes, written in pieces."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
        if big is not None:
            name, nbytes = big
            info = zipfile.ZipInfo(name + ".npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as fh:
                fh.write(npy(np.zeros(0), (nbytes // 8,)))  # the header alone
                piece = bytes(1 << 20)
                for _ in range(nbytes >> 20):
                    fh.write(piece)
    return str(path)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    fastmlr.save_model(path, model)
    with np.load(path) as z:
        members = {key: npy(z[key]) for key in z.files}
    return str(path), members


def peak_bytes(fn, *args):
    tracemalloc.start()
    try:
        out = fn(*args)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_load_model_does_not_read_an_unused_large_member(model_file, model, tmp_path):
    path, members = model_file
    big = write_npz(tmp_path / "big.npz", members, big=("notes", 64 << 20))  # 64 MiB of zeros, 64 KiB on disk
    assert os.path.getsize(big) < 1 << 20
    back, peak = peak_bytes(fastmlr.load_model, big)
    assert peak < 8 << 20, f"read {peak / 2**20:.0f} MiB"
    np.testing.assert_array_equal(back.W, model.W)


def test_load_model_refuses_an_absurd_header_naming_the_file(model_file, tmp_path):
    path, members = model_file
    for key, shape in (("W", (10**12, 3)), ("transform", (3, 10**15)), ("notes", (10**12, 3))):
        arr = np.zeros((2, 3)) if key != "notes" else np.zeros(4)
        bad = write_npz(tmp_path / f"{key}.npz", {**members, key: npy(arr, shape)})
        if key == "notes":  # a member the format does not define is never read
            assert fastmlr.load_model(bad).W.shape == (2, 3)
            continue
        with pytest.raises(ValueError) as info:
            fastmlr.load_model(bad)
        msg = str(info.value)
        assert bad in msg and "damaged fastmlr model file" in msg and f"{key} declares shape {shape}" in msg, msg
        assert "\n" not in msg


def test_load_model_refuses_a_header_that_disagrees_with_its_data(model_file, tmp_path):
    path, members = model_file
    bad = write_npz(tmp_path / "short.npz", {**members, "W": npy(np.zeros((2, 3)), (3, 3))})
    with pytest.raises(ValueError, match=r"short\.npz is a damaged fastmlr model file: W declares shape \(3, 3\) .* "
                                         r"but holds 48 bytes"):
        fastmlr.load_model(bad)


def test_pool_npz_refuses_an_absurd_header_and_skips_other_members(pool, tmp_path):
    S, task = pool
    members = {"X": npy(S.X), "y": npy(S.y), "task": npy(task)}
    bad = write_npz(tmp_path / "p.npz", {**members, "X": npy(S.X, (10**12, 3))})
    with pytest.raises(ValueError, match=r"p\.npz: a damaged \.npz pool: X declares shape \(1000000000000, 3\)"):
        read_pool(bad)
    extra = write_npz(tmp_path / "extra.npz", members, big=("true_z", 64 << 20))
    got, peak = peak_bytes(read_pool, extra)
    assert peak < 4 * S.X.nbytes + (8 << 20), f"read {peak / 2**20:.0f} MiB"
    np.testing.assert_array_equal(got.offsets, S.offsets)


def test_a_member_over_the_work_limit_is_refused_before_reading(pool, tmp_path, monkeypatch):
    S, task = pool
    path = write_npz(tmp_path / "p.npz", {"X": npy(S.X), "y": npy(S.y), "task": npy(task)})
    monkeypatch.setattr(_config, "MAX_WORK_BYTES", 1 << 10)
    with pytest.raises(ValueError, match=r"p\.npz: too large to read: X declares .* over the 1\.0 KiB limit"):
        read_pool(path)


@pytest.mark.parametrize("scale", [0.7, 1.0 + 1e-6])
def test_weights_that_do_not_sum_to_one_are_refused(model, model_file, tmp_path, scale):
    with pytest.raises(ValueError, match=r"model\.p sums to .*; expected weights that sum to 1"):
        fastmlr.save_model(tmp_path / "m.npz", model._replace(p=model.p * scale))
    assert not (tmp_path / "m.npz").exists()
    path, members = model_file
    bad = write_npz(tmp_path / "p.npz", {**members, "p": npy(model.p * scale)})
    with pytest.raises(ValueError, match=r"p\.npz is a damaged fastmlr model file \(p sums to"):
        fastmlr.load_model(bad)
    p = model.p.copy()
    p[0] += 4e-16  # a few roundings of a sum of k weights: accepted, and stored as given
    fastmlr.save_model(tmp_path / "m.npz", model._replace(p=p))
    assert fastmlr.load_model(tmp_path / "m.npz").p[0] == p[0]


# ---------------------------------------------------------------------------------
# no NumPy warning before the one error


BIG = 1e160


@pytest.mark.parametrize("case", ["X and y", "y", "X"])
def test_fit_overflow_is_one_error_without_warnings(pool, case):
    S, _ = pool
    X = S.X * BIG if "X" in case else S.X
    y = S.y * BIG if "y" in case else S.y
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="overflowed float64.*rescale"):
            fastmlr.fit((X, y, S.offsets), 2)
    assert [str(w.message) for w in seen] == []


def test_metrics_do_not_overflow_in_squares():
    W = np.random.default_rng(0).standard_normal((3, 4))
    U = np.linalg.qr(np.random.default_rng(1).standard_normal((4, 2)))[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        e_big = fastmlr.subspace_error(U, W * 1e200)
        e_tiny = fastmlr.subspace_error(U, W * 1e-200)
        err = fastmlr.parameter_error(W * 1e200 + 1e199, W * 1e200)
    assert [str(w.message) for w in seen] == []
    e = fastmlr.subspace_error(U, W)
    assert math.isclose(e_big, e * 1e200, rel_tol=1e-12) and math.isclose(e_tiny, e * 1e-200, rel_tol=1e-12)
    assert math.isclose(err.max, 1e199 * 2.0, rel_tol=1e-12)  # ||(1e199, ..., 1e199)|| over d = 4 columns


def test_sample_tasks_refuses_an_overflowing_sample():
    W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="sampled y overflowed float64: W and s2 are too large"):
            fastmlr.sample_tasks(W * 1e308, s2, p, 4, n_tasks=10, seed=0)
    assert [str(w.message) for w in seen] == []


def test_cli_overflow_is_exactly_one_line(pool, tmp_path):
    S, task = pool
    write_pool(tmp_path / "huge.csv", S.X * BIG, S.y * BIG, task)
    r = run("fit", "huge.csv", "--k", "2", "-o", "m.npz", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("fastmlr: error: ") and "rescale" in r.stderr


# ---------------------------------------------------------------------------------
# messages that name the real cause


def test_tiny_y_or_x_asks_to_rescale(pool):
    S, _ = pool
    with pytest.raises(ValueError, match=r"y is too small in magnitude \(largest \|y\| is .*e-170.*rescale y"):
        fastmlr.fit((S.X, S.y * 1e-170, S.offsets), 2)
    with pytest.raises(ValueError, match=r"X is too small in magnitude \(largest \|x\| is .*e-170.*rescale X"):
        fastmlr.fit((S.X * 1e-170, S.y, S.offsets), 2)
    with pytest.raises(ValueError, match=r"y is 0 on every row"):
        fastmlr.fit((S.X, S.y * 0.0, S.offsets), 2)


def test_empty_pool_is_named_as_such():
    with pytest.raises(ValueError, match=r"the pool has no rows \(X has shape \(0, 2\); all 3 tasks are empty\)"):
        fastmlr.fit(np.zeros((0, 2)), np.zeros(0), [0, 0, 0, 0], 2)


def test_cli_all_query_csv_names_the_missing_rows(tmp_path):
    (tmp_path / "q.csv").write_text("task,y,x1,x2\n1,,1,2\n1,,2,3\n2,,3,1\n")
    r = run("fit", "q.csv", "--k", "2", "-o", "m.npz", "--skip-query-rows", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "the pool has no rows" in r.stderr and "query row" in r.stderr and "y is 0" not in r.stderr


def test_estimate_subspace_without_features():
    with pytest.raises(ValueError, match=r"X has shape \(4, 0\); expected at least one feature column"):
        fastmlr.estimate_subspace((np.zeros((4, 0)), np.ones(4), [0, 2, 4]), 1)


# ---------------------------------------------------------------------------------
# task ids


def test_npz_byte_string_ids_are_read_as_utf8_text(pool, model, tmp_path):
    S, task = pool
    ids = np.array([f"é-{t}".encode() for t in task])
    np.savez(tmp_path / "p.npz", X=S.X, y=S.y, task=ids)
    got = read_pool(tmp_path / "p.npz")
    assert got.tasks.dtype.kind == "U" and "é-7" in set(got.tasks.tolist())
    fastmlr.save_model(tmp_path / "m.npz", model)
    r = run("predict", "m.npz", "p.npz", "-o", "o.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "é-7," in (tmp_path / "o.csv").read_text(encoding="utf-8")


def test_npz_ids_that_are_not_utf8_are_refused_naming_the_file(pool, tmp_path):
    S, task = pool
    ids = np.array([b"\xff%d" % t for t in task])
    np.savez(tmp_path / "bad.npz", X=S.X, y=S.y, task=ids)
    with pytest.raises(ValueError, match=r"bad\.npz: task id b'\\xff0' on row 0 is not UTF-8 text"):
        read_pool(tmp_path / "bad.npz")


@pytest.mark.parametrize("ids", [np.array([1.0, np.nan, 2.0, np.nan]), np.array([1, None, 2, 3], dtype=object),
                                 np.array(["a", float("nan"), "b", "c"], dtype=object)])
def test_group_tasks_refuses_missing_ids(ids):
    X, y = np.ones((4, 2)), np.ones(4)
    with pytest.raises(ValueError, match=r"task_ids has a missing id .* at row 1 .*; expected an id on every row"):
        fastmlr.group_tasks(X, y, ids)


def test_feasibility_counts_huge_sizes_exactly():
    sizes = np.array([2**62, 2**62, 3], dtype=np.int64)
    f = fastmlr.feasibility(sizes, 2, 3)
    assert f.roles["rows"] == 2**63 + 3
    huge = np.array([2**63 + 5, 2**64 - 1], dtype=np.uint64)
    f = fastmlr.feasibility(huge, 2, 3)
    assert f.roles["rows"] == 2**63 + 5 + 2**64 - 1 and f.supported


# ---------------------------------------------------------------------------------
# one integer and one number checker


def test_checkers_accept_numpy_scalars_and_refuse_bool():
    assert check_int(np.int32(3), "n", low=1) == 3 and type(check_int(np.uint8(3), "n")) is int
    assert check_real(np.float32(0.5), "tol", low=0) == 0.5 and check_real(np.int64(2), "tol") == 2.0
    for bad in (True, np.bool_(False), 2.0, "2", None, [2]):
        with pytest.raises(ArgumentTypeError, match=r"^n must be a positive integer, but n is .*\(.*\)$"):
            check_int(bad, "n", low=1)
    for bad in (True, "x", 1j, None):
        with pytest.raises(TypeError, match="^tol must be"):
            check_real(bad, "tol", low=0)
    with pytest.raises(ValueError, match=r"^n is 0; expected a positive integer$"):
        check_int(np.int64(0), "n", low=1)
    for bad in (float("nan"), float("inf"), np.float32(-1)):
        with pytest.raises(ValueError, match=r"^tol is .*; expected a non-negative finite number$"):
            check_real(bad, "tol", low=0)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


def test_fit_takes_numpy_scalars_and_refuses_flags_as_numbers(pool):
    S, _ = pool
    a = fastmlr.fit(S[:3], np.int64(2), tol=np.float32(1e-3), seed=np.uint16(3), max_iter=np.int8(50))
    b = fastmlr.fit(S[:3], 2, tol=float(np.float32(1e-3)), seed=3, max_iter=50)
    np.testing.assert_array_equal(a.W, b.W)
    for kwargs, words in (({"tol": True}, "tol must be a non-negative finite number, but tol is True"),
                          ({"tol": float("nan")}, "tol is nan"), ({"seed": np.float64(1.0)}, "seed must be"),
                          ({"max_iter": np.bool_(True)}, "max_iter must be a positive integer"),
                          ({"whiten": 1}, "whiten is 1")):
        with pytest.raises(ValueError, match=words):
            fastmlr.fit(S[:3], 2, **kwargs)


def test_integer_arguments_everywhere_accept_numpy_integers(tmp_path, pool):
    S, _ = pool
    for name, arr in (("X", S.X), ("y", S.y), ("off", S.offsets)):
        np.save(tmp_path / f"{name}.npy", arr)
    stream = fastmlr.open_npy_chunks(tmp_path / "X.npy", tmp_path / "y.npy", tmp_path / "off.npy",
                                     max_rows=np.int64(100))
    np.testing.assert_allclose(fastmlr.subspace.second_moment(stream), fastmlr.subspace.second_moment(S[:3]), rtol=1e-12)
    f = fastmlr.feasibility(np.diff(S.offsets), np.int32(2), np.uint8(3))
    assert (f.k, f.d) == (2, 3)
    with pytest.raises(ValueError, match=r"L must be a positive integer number of median pairs, but L is 1\.0"):
        fastmlr.cluster_tasks(S[:3], np.eye(3)[:, :2], 2, L=1.0)


def test_cluster_memory_guard_is_check_work():
    n = 10**6
    off = np.arange(n + 1, dtype=np.int64) * 2
    X = np.zeros((2 * n, 1))
    with pytest.raises(MemoryError, match=r"distance matrix of 7450\.6 GiB, over the 8\.0 GiB limit "
                                          r"\(fastmlr\._config\.MAX_WORK_BYTES\); pass fewer heavy tasks"):
        fastmlr.cluster_tasks((X, X[:, 0], off), np.ones((1, 1)), 2)


def test_demo_names_a_bad_scale():
    from fastmlr.demo import run_demo

    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match=r"^scale is .*; expected a positive finite number$"):
            run_demo(k=2, d=4, scale=bad)


def test_every_computing_public_function_runs_without_numpy_warnings():
    settings = {"available_backends", "get_backend", "n_threads", "set_backend", "use_backend"}  # compute nothing
    functions = {name for name in fastmlr.__all__ if callable(getattr(fastmlr, name))
                 and not isinstance(getattr(fastmlr, name), type)} - settings
    from fastmlr import pool_io
    from fastmlr.demo import run_demo

    unwrapped = sorted(name for name in functions if not getattr(getattr(fastmlr, name), "__quiet__", False))
    assert unwrapped == [] and pool_io.read_pool.__quiet__ and pool_io.write_pool.__quiet__ and run_demo.__quiet__
