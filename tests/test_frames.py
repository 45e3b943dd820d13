"""tasks_from_frame: pandas, polars and pyarrow frames give the pool a file gives."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlr
from fastmlr.io import read_pool, write_pool
from fastmlr.synthetic import simulate_pool

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def sim():
    """A small seeded pool with query rows (NaN targets), rows in simulation order."""
    return simulate_pool(2, 3, 150, low=4, high=12, queries=1, seed=3)


def frame(sim, ids=None):
    d = sim["X"].shape[1]
    cols = {"task": sim["task"] if ids is None else ids, "y": sim["y"]}
    cols.update({f"x{j + 1}": sim["X"][:, j] for j in range(d)})
    return pd.DataFrame(cols)


def every_frame(df):
    return {"pandas": df, "polars": pl.from_pandas(df), "arrow": pa.Table.from_pandas(df, preserve_index=False)}


def same_pool(a, b):
    for name in ("X", "y", "offsets", "rows", "query_X", "query_task", "query_rows"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    np.testing.assert_array_equal(a.tasks.astype(str), b.tasks.astype(str))  # a .csv's ids are text


def test_every_frame_gives_the_pool_of_the_files(sim, tmp_path):
    df = frame(sim)
    write_pool(tmp_path / "p.npz", sim["X"], sim["y"], sim["task"])
    write_pool(tmp_path / "p.csv", sim["X"], sim["y"], sim["task"])
    files = [read_pool(tmp_path / f"p.{ext}", allow_query=True) for ext in ("npz", "csv")]
    assert files[0].query_rows.size == 150
    for kind, f in every_frame(df).items():
        got = fastmlr.tasks_from_frame(f)
        for want in files:
            same_pool(got, want)
        assert got.tasks.dtype.kind == "i" and got.features == ["x1", "x2", "x3"] and got.named, kind


def test_every_frame_fits_the_same_model_bit_for_bit(sim, tmp_path):
    write_pool(tmp_path / "p.csv", sim["X"], sim["y"], sim["task"])
    want = fastmlr.fit(read_pool(tmp_path / "p.csv", allow_query=True), 2, seed=0)
    for kind, f in every_frame(frame(sim)).items():
        got = fastmlr.fit(fastmlr.tasks_from_frame(f), 2, seed=0)
        for name in ("W", "s2", "p"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{kind} {name}")


def test_columns_by_name_in_any_order_and_features_chosen(sim):
    df = frame(sim)
    shuffled = df[["x3", "y", "x1", "task", "x2"]].rename(columns={"task": "g", "y": "out"})
    shuffled["other"] = "text"
    for kind, f in every_frame(shuffled).items():
        got = fastmlr.tasks_from_frame(f, task="g", target="out", features=["x1", "x2", "x3"])
        same_pool(got, fastmlr.tasks_from_frame(df))
        got = fastmlr.tasks_from_frame(f, task="g", target="out", features=["x2", "x1"])
        np.testing.assert_array_equal(got.X, fastmlr.tasks_from_frame(df).X[:, [1, 0]])
        assert got.features == ["x2", "x1"], kind


def test_text_ids_are_kept_and_ordered_as_in_a_csv(sim, tmp_path):
    ids = np.array([f"{t:03d}" if t % 3 == 0 else f"g{t}" for t in sim["task"]])
    write_pool(tmp_path / "p.csv", sim["X"], sim["y"], ids)
    want = read_pool(tmp_path / "p.csv", allow_query=True)
    for kind, f in every_frame(frame(sim, ids)).items():
        got = fastmlr.tasks_from_frame(f)
        same_pool(got, want)
        assert got.tasks.dtype.kind == "U" and set(got.tasks) == set(ids), kind
    assert list(fastmlr.tasks_from_frame(pd.DataFrame({"task": ["10", "9", "x"], "y": 1.0, "a": 1.0})).tasks) == \
        ["9", "10", "x"]


def test_ids_of_other_types_are_kept():
    dates = pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-02"])
    got = fastmlr.tasks_from_frame(pd.DataFrame({"task": dates, "y": [1.0, 2.0, 3.0], "a": [1.0, 2.0, 3.0]}))
    assert got.tasks.dtype.kind == "M" and list(got.offsets) == [0, 1, 3] and list(got.y) == [2.0, 1.0, 3.0]
    nullable = pd.DataFrame({"task": pd.array([5, 3, 5], dtype="Int64"), "y": pd.array([1.0, None, 3.0], dtype="Float64"),
                             "a": pd.array([1, 2, 3], dtype="Int32")})
    got = fastmlr.tasks_from_frame(nullable)
    assert got.tasks.dtype == np.int64 and list(got.tasks) == [3, 5] and list(got.query_rows) == [1]
    assert list(got.offsets) == [0, 0, 2]  # task 3 has only a query row
    cat = pl.DataFrame({"task": pl.Series(["b", "a", "b"]).cast(pl.Categorical), "y": [1.0, 2.0, 3.0], "a": [1, 2, 3]})
    assert list(fastmlr.tasks_from_frame(cat).tasks) == ["a", "b"]
    dic = pa.table({"task": pa.array(["b", "a", "b"]).dictionary_encode(), "y": [1.0, 2.0, 3.0], "a": [1, 2, 3]})
    assert list(fastmlr.tasks_from_frame(dic).tasks) == ["a", "b"]


def test_float32_is_kept_when_every_column_is_float32(sim):
    df = frame(sim).astype({c: np.float32 for c in ("y", "x1", "x2", "x3")})
    for kind, f in every_frame(df).items():
        got = fastmlr.tasks_from_frame(f)
        assert got.X.dtype == got.y.dtype == got.query_X.dtype == np.float32, kind
        assert fastmlr.fit(got, 2, seed=0).W.shape == (2, 3)
    mixed = df.astype({"y": np.float64})
    assert fastmlr.tasks_from_frame(mixed).X.dtype == np.float64


def test_an_empty_frame_is_a_pool_of_no_tasks(sim):
    for kind, f in every_frame(frame(sim).iloc[:0]).items():
        got = fastmlr.tasks_from_frame(f)
        assert got.X.shape == (0, 3) and list(got.offsets) == [0] and got.tasks.size == 0, kind


def test_every_stage_takes_the_result(sim):
    W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    pool = fastmlr.tasks_from_frame(frame(sim))
    arrays = (pool.X, pool.y, pool.offsets)
    U = fastmlr.estimate_subspace(pool, 2)
    np.testing.assert_array_equal(U, fastmlr.estimate_subspace(arrays, 2))
    np.testing.assert_array_equal(fastmlr.posterior(pool, W, s2, p), fastmlr.posterior(arrays, W, s2, p))
    np.testing.assert_array_equal(fastmlr.predict_params(pool, W, s2, p), fastmlr.predict_params(arrays, W, s2, p))
    np.testing.assert_array_equal(fastmlr.classify_tasks(pool, W, s2, p).labels,
                                  fastmlr.classify_tasks(arrays, W, s2, p).labels)


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
@pytest.mark.parametrize("change, error, words", [
    (lambda df: df.assign(task=df["task"].astype(object).where(df.index != 4, None)), ValueError,
     r"^df: column 'task' has a missing task id at row 4 \(1 rows in all\)"),
    (lambda df: df.assign(x2=df["x2"].where(df.index != 7, np.nan)), ValueError,
     r"^df: feature column 'x2' has a missing value at row 7"),
    (lambda df: df.assign(x1=df["x1"].where(df.index != 2, np.inf)), ValueError,
     r"^df: feature column 'x1' has a non-finite value inf at row 2; expected finite numbers$"),
    (lambda df: df.assign(y=df["y"].where(df.index != 3, -np.inf)), ValueError, r"^df: target column 'y' has a non-finite value -inf at row 3; expected finite numbers$"),
    (lambda df: df.assign(x3="a"), TypeError, r"^df: feature column 'x3' .*expected a numeric column$"),
    (lambda df: df.drop(columns="y"), ValueError, r"^df has no target column 'y' \(columns: task, x1, x2, x3\)"),
    (lambda df: df[["task", "y"]], ValueError, r"^df has no feature columns"),
])
def test_bad_frames_are_one_line_naming_column_and_row(sim, kind, change, error, words):
    f = every_frame(change(frame(sim)))[kind]
    with pytest.raises(error, match=words):
        fastmlr.tasks_from_frame(f)


def test_bad_arguments_are_named(sim):
    df = frame(sim)
    with pytest.raises(TypeError, match=r"^df is numpy.ndarray; expected a pandas DataFrame"):
        fastmlr.tasks_from_frame(np.zeros((3, 3)))
    with pytest.raises(TypeError, match=r"LazyFrame.*collect\(\)"):
        fastmlr.tasks_from_frame(pl.from_pandas(df).lazy())
    with pytest.raises(ValueError, match=r"^df has no feature column\(s\) 'z'"):
        fastmlr.tasks_from_frame(df, features=["x1", "z"])
    with pytest.raises(ValueError, match=r"^features includes the task column 'task'$"):
        fastmlr.tasks_from_frame(df, features=["x1", "task"])
    with pytest.raises(TypeError, match=r"^features is str; expected a list of column names$"):
        fastmlr.tasks_from_frame(df, features="x1")
    with pytest.raises(ValueError, match=r"^df has two columns named 'x1'"):
        fastmlr.tasks_from_frame(pd.concat([df, df[["x1"]]], axis=1))


def test_import_fastmlr_imports_no_frame_library(tmp_path):
    code = "import sys, fastmlr, fastmlr.io; print(sorted(m for m in ('pandas', 'polars', 'pyarrow') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_unsorted_ids_give_the_same_pool_in_every_frame(sim):
    order = np.random.default_rng(7).permutation(sim["task"].size)
    df = frame(sim).iloc[order].reset_index(drop=True)
    want = fastmlr.tasks_from_frame(df)
    assert not np.all(np.diff(df["task"].to_numpy()) >= 0)
    for kind, f in every_frame(df).items():
        same_pool(fastmlr.tasks_from_frame(f), want)
    np.testing.assert_array_equal(want.X, frame(sim)[["x1", "x2", "x3"]].to_numpy()[order][want.rows])


@pytest.mark.parametrize("queries", [False, True])
@pytest.mark.parametrize("dtype", ["int64", "float64", "uint8"])
def test_ids_in_sorted_order_are_grouped_as_runs(dtype, queries):
    """A frame sorted by id (a partition of a sorted pool) is grouped without sorting:
    the same pool as from its rows in any order, the training rows kept in place."""
    W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    sizes = np.array([3, 1, 4, 2, 5])
    S = fastmlr.sample_tasks(W, s2, p, sizes, seed=1)
    ids = np.repeat(np.array([0, 2, 3, 7, 9]), sizes).astype(dtype)
    y = S.y.copy()
    if queries:
        y[[2, 8]] = np.nan
    df = pd.DataFrame({"task": ids, "y": y, "x1": S.X[:, 0], "x2": S.X[:, 1], "x3": S.X[:, 2]})
    pool = fastmlr.tasks_from_frame(df)
    order = np.random.default_rng(2).permutation(len(df))
    shuffled = fastmlr.tasks_from_frame(df.iloc[order].reset_index(drop=True))
    np.testing.assert_array_equal(pool.tasks, [0, 2, 3, 7, 9])
    np.testing.assert_array_equal(pool.offsets, np.concatenate([[0], np.cumsum(sizes - np.bincount(
        np.repeat(np.arange(5), sizes)[np.isnan(y)], minlength=5))]))
    np.testing.assert_array_equal(pool.rows, np.flatnonzero(~np.isnan(y)))
    np.testing.assert_array_equal(pool.X, shuffled.X[np.argsort(order[shuffled.rows], kind="stable")])
    np.testing.assert_array_equal(pool.query_rows, np.flatnonzero(np.isnan(y)))
    assert pool.tasks.dtype == np.dtype(dtype)
