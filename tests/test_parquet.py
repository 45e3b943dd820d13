"""open_parquet: a TaskStream over a .parquet pool, a row group at a time."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlr
from fastmlr.io import read_pool, write_pool

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A pool of 400 tasks of 3..20 rows written in task order, in row groups of 500 rows."""
    rng = np.random.default_rng(0)
    W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    sizes = rng.integers(3, 21, size=400)
    S = fastmlr.sample_tasks(W, s2, p, sizes, seed=1)
    task = np.repeat(np.arange(400) * 7 - 900, sizes)  # sorted, negative and positive ids
    path = tmp_path_factory.mktemp("pq") / "pool.parquet"
    cols = {"task": task, "y": S.y, **{f"x{j + 1}": S.X[:, j] for j in range(4)}}
    pq.write_table(pa.table(cols), path, row_group_size=500)
    return {"path": path, "S": S, "task": task, "W": W, "s2": s2, "p": p}


def test_chunks_are_whole_tasks_and_add_up_to_the_pool(pool):
    for max_rows in (1, 37, 500, 10**6):
        chunks = list(fastmlr.open_parquet(pool["path"], max_rows=max_rows))
        sizes = np.concatenate([np.diff(off) for _, _, off in chunks])
        np.testing.assert_array_equal(sizes, np.diff(pool["S"].offsets))
        np.testing.assert_array_equal(np.concatenate([X for X, _, _ in chunks]), pool["S"].X)
        np.testing.assert_array_equal(np.concatenate([y for _, y, _ in chunks]), pool["S"].y)
        assert all(off[0] == 0 and off[-1] == X.shape[0] for X, _, off in chunks)


def test_stages_read_the_stream_as_the_arrays(pool):
    stream = fastmlr.open_parquet(pool["path"], max_rows=300)
    S, W, s2, p = pool["S"], pool["W"], pool["s2"], pool["p"]
    np.testing.assert_allclose(np.abs(fastmlr.estimate_subspace(stream, 2)), np.abs(fastmlr.estimate_subspace(S, 2)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fastmlr.predict_params(stream, W, s2, p), fastmlr.predict_params(S, W, s2, p),
                               rtol=1e-10, atol=1e-12)
    model = fastmlr.fit(stream, 2, seed=0)
    assert fastmlr.parameter_error(model.W, W).max < 0.5


def test_float32_columns_stay_float32(pool, tmp_path):
    t = pq.read_table(pool["path"])
    t = t.cast(pa.schema([pa.field(n, pa.int64() if n == "task" else pa.float32()) for n in t.column_names]))
    pq.write_table(t, tmp_path / "f32.parquet", row_group_size=300)
    X, y, _ = next(iter(fastmlr.open_parquet(tmp_path / "f32.parquet")))
    assert X.dtype == y.dtype == np.float32
    assert read_pool(tmp_path / "f32.parquet").X.dtype == np.float32


def test_tasks_grouped_but_not_sorted_are_read_in_file_order(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    write_pool(tmp_path / "g.parquet", X, np.ones(6), np.array(["b", "b", "a", "a", "a", "c"]))
    chunks = list(fastmlr.open_parquet(tmp_path / "g.parquet", max_rows=2))
    assert [list(np.diff(off)) for _, _, off in chunks] == [[2], [3], [1]]


def test_a_task_split_across_the_file_is_refused(pool, tmp_path):
    t = pq.read_table(pool["path"])
    order = np.random.default_rng(1).permutation(t.num_rows)
    pq.write_table(t.take(order), tmp_path / "shuffled.parquet", row_group_size=500)
    with pytest.raises(ValueError, match=r"shuffled\.parquet: the rows of task -?\d+ are not consecutive \(again at "
                                         r"row \d+\); expected the rows of each task together"):
        fastmlr.fit(fastmlr.open_parquet(tmp_path / "shuffled.parquet"), 2)


def test_query_rows_are_refused_or_left_out(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([1.0, np.nan, 2.0, 3.0, np.nan, 4.0])
    write_pool(tmp_path / "q.parquet", X, y, np.array([1, 1, 2, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"q\.parquet: target column 'y' has a missing value at row 1 .*"
                                         r"allow_query=True"):
        list(fastmlr.open_parquet(tmp_path / "q.parquet"))
    chunks = list(fastmlr.open_parquet(tmp_path / "q.parquet", allow_query=True))
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), X[[0, 2, 3, 5]])
    assert [list(np.diff(c[2])) for c in chunks] == [[1, 2], [1]]


def test_bad_files_and_arguments_are_named(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    X[4, 1] = np.nan
    write_pool(tmp_path / "nan.parquet", X, np.ones(6), np.array([1, 1, 2, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"nan\.parquet: feature column 'x2' has a missing value at row 4"):
        list(fastmlr.open_parquet(tmp_path / "nan.parquet", max_rows=2))
    with pytest.raises(ValueError, match=r"nan\.parquet has no task column 'g'"):
        fastmlr.open_parquet(tmp_path / "nan.parquet", task="g")
    with pytest.raises(ValueError, match=r"^path '.*none\.parquet' is not a file"):
        fastmlr.open_parquet(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"junk\.parquet: not a readable \.parquet file"):
        fastmlr.open_parquet(tmp_path / "junk.parquet")
    with pytest.raises(TypeError, match=r"max_rows"):
        fastmlr.open_parquet(tmp_path / "nan.parquet", max_rows=2.5)


MEMORY = textwrap.dedent("""
    import resource, sys
    import fastmlr

    def peak():
        # this process's own high-water mark: VmHWM starts afresh at exec, while ru_maxrss
        # keeps the peak of the forked parent (the test runner) and could hide this one
        try:
            with open("/proc/self/status") as fh:
                return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    path, small, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fastmlr.fit(fastmlr.open_parquet(small, max_rows=rows), 2, seed=0, max_iter=2)  # imports, compiled kernels
    before = peak()
    fastmlr.fit(fastmlr.open_parquet(path, max_rows=rows), 2, seed=0, max_iter=2)
    print(before, peak() - before)
""")


def test_fit_from_parquet_stays_under_a_memory_budget(tmp_path):
    """A pool of about 216 MB of X and y, read in row groups of 16384 rows: fit's peak
    resident memory grows by less than a third of the pool (what reading it whole would
    need at the least); the file is written in this process, fitted in a fresh one.
    Part of the growth is per task (sizes, responsibilities, the ids the reader has
    seen: about 200 bytes a task of 16 rows), a sixth of this pool; the rest (about
    10 MB) is fixed."""
    d, rows = 8, 16384
    W, s2, p = fastmlr.make_mixture(2, d, seed=0)
    n_pool = 187500
    for name, n in (("pool.parquet", n_pool), ("small.parquet", 500)):
        S = fastmlr.sample_tasks(W, s2, p, 16, n_tasks=n, seed=2)
        cols = {"task": np.repeat(np.arange(n), 16), "y": S.y, **{f"x{j}": S.X[:, j] for j in range(d)}}
        pq.write_table(pa.table(cols), tmp_path / name, row_group_size=rows)
    data = n_pool * 16 * (d + 1) * 8
    r = subprocess.run([sys.executable, "-c", MEMORY, str(tmp_path / "pool.parquet"), str(tmp_path / "small.parquet"),
                        str(rows)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    before, grew = map(int, r.stdout.strip().splitlines()[-1].split())
    assert before > 50e6  # a real measure: the interpreter, NumPy, Numba and pyarrow are in it
    assert grew < data / 3, f"peak memory grew by {grew / 1e6:.1f} MB for a pool of {data / 1e6:.1f} MB"


def test_seen_ids_in_order_keep_arrays_and_find_a_repeat_after_the_order_breaks():
    from fastmlr.parquet import _SeenIds

    seen = _SeenIds()
    assert seen.repeat(np.array([1, 2, 5])) == -1
    assert seen.repeat(np.array([7, 9])) == -1
    assert seen.ids is None and seen.last == 9  # a sorted file: no set
    assert seen.repeat(np.array([3, 4])) == -1  # out of order but new: the order breaks, the ids go on
    assert seen.ids == {1, 2, 3, 4, 5, 7, 9}
    assert seen.repeat(np.array([10, 5, 11])) == 1  # 5 came in the first chunk
    text = _SeenIds()
    assert text.repeat(np.array(["a", "b"], dtype=object)) == -1
    assert text.repeat(np.array(["c", "b"], dtype=object)) == 1


def test_a_task_back_after_a_sorted_start_is_refused(tmp_path):
    task = np.array([1, 1, 2, 2, 3, 3, 4, 4, 2, 2])  # sorted through 4, then task 2 again
    write_pool(tmp_path / "back.parquet", np.arange(20.0).reshape(10, 2), np.ones(10), task)
    with pytest.raises(ValueError, match=r"back\.parquet: the rows of task 2 are not consecutive \(again at row 8\)"):
        list(fastmlr.open_parquet(tmp_path / "back.parquet", max_rows=3))
