"""Pool files: the pyarrow .csv reader keeps the exact reader's rules; .parquet in and
out; the same pool in every format and frame gives the same model, bit for bit."""

import os

import numpy as np
import pytest

import fastmlr
from fastmlr import io as fio
from fastmlr.cli import main
from fastmlr.synthetic import simulate_pool

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")
pq = pytest.importorskip("pyarrow.parquet")

GOOD = "task,y,x1,x2\n1,0.5,1,2\n1,0.1,2,3\n2,0.3,1,1\n2,0.2,0,1\n"


def exact(path, **kw):
    """The pool by the hand-written reader alone."""
    X, y, task, names = fio._read_csv(str(path), kw.get("task_col", "task"), kw.get("target_col", "y"),
                                      kw.get("features"))
    return fio._group(X, y, task, True, names, True, True, "")


def same_pool(a, b):
    for name in ("X", "y", "offsets", "tasks", "rows", "query_X", "query_task", "query_rows"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.features == b.features


@pytest.mark.parametrize("text", [
    GOOD,
    GOOD.replace("\n", "\r\n"),                                        # Windows line ends
    "\ufeff" + GOOD,                                                   # byte-order mark
    "task, y ,x1,x2\n 1 , 0.5 ,1, 2\n1,0.1,2,3\n2,0.3,1,1\n2,,0,1\n",  # spaces around names and cells
    GOOD.replace("2,0.2,0,1", "2,NA,0,1").replace("1,0.1", "1,nan"),  # missing targets
    GOOD.replace("2,0.2,0,1", "2, Null ,0,1").replace("1,0.1", "1, nAn"),  # spellings the fast path leaves to the exact one
    GOOD + "\n\n" + " , , , \n3,1e3,-1.5E-2,+4\n",                      # blank rows, exponents, signs
    'task,y,x1,x2\n"a, b",1,2,3\n"say ""hi""",2,3,4\n"two\nlines",3,4,5\n"a, b",4,5,6\n',  # quoted ids
    "task,y,x1,x2\n10,1,2,3\n9,2,3,4\n007,3,4,5\n7,4,5,6\n+7,5,6,7\ng,6,7,8\n",   # text ids in pool order
    "task,y,x1,x2\n1,1,2,3\n1,2,3,4\n",                                           # one task
])
def test_csv_reader_gives_the_exact_readers_pool(tmp_path, text):
    path = tmp_path / "p.csv"
    path.write_bytes(text.encode("utf-8"))
    same_pool(fio.read_pool(path, allow_query=True), exact(path))


def test_a_clean_csv_is_read_by_pyarrow(tmp_path, monkeypatch):
    sim = simulate_pool(2, 3, 50, low=4, high=8, seed=0)
    fio.write_pool(tmp_path / "p.csv", sim["X"], sim["y"], sim["task"])
    want = exact(tmp_path / "p.csv")

    def forbidden(*args):
        raise AssertionError("the exact reader ran on a clean file")

    monkeypatch.setattr(fio, "_read_csv", forbidden)
    same_pool(fio.read_pool(tmp_path / "p.csv"), want)


@pytest.mark.parametrize("text, words", [
    ("", "the file is empty; expected a header line"),
    ("task,y,x1\n", "no data rows after the header"),
    ("id,y,x1\n1,2,3\n", "no task-id column 'task' (columns: id, y, x1)"),
    ("task,y\n1,2\n", "no feature columns"),
    (GOOD.replace("1,0.1,2,3", "1,0.1,abc,3"), "column 'x1' has a non-numeric value 'abc' on data line 2"),
    (GOOD.replace("2,0.3,1,1", "2,0.3,,1"), "column 'x1' has a missing value on data line 3"),
    (GOOD.replace("2,0.3,1,1", "2,0.3,inf,1"), "column 'x1' has a non-finite value 'inf' on data line 3"),
    (GOOD.replace("2,0.3,1,1", "2,-inf,1,1"), "column 'y' has a non-finite value '-inf' on data line 3"),
    (GOOD.replace("2,0.3,1,1", "NA,0.3,1,1"), "column 'task' has a missing task id on data line 3"),
    (GOOD.replace("2,0.3,1,1", "2,0.3,1"), "data line 3 has 3 fields; the header has 4"),
    (GOOD.replace("2,0.3,1,1", "2,,1,1"), "the target is missing on data row 3 (1 rows in all)"),
    ("task,y,x1,x1\n1,2,3,4\n", "the header names a column twice"),
])
def test_bad_csv_is_one_line_naming_file_row_and_column(tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        fio.read_pool(path)
    msg = str(err.value)
    assert msg == f"{path}: {words}" or (msg.startswith(f"{path}: ") and words in msg), msg
    assert "\n" not in msg


def test_csv_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(GOOD.replace("1,0.5", "\xe9,0.5").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not a text \.csv file$"):
        fio.read_pool(path)


@pytest.fixture(scope="module")
def sim():
    return simulate_pool(2, 3, 120, low=4, high=12, queries=1, seed=5)


def test_every_format_and_frame_fits_the_same_model_bit_for_bit(sim, tmp_path):
    for ext in ("npz", "csv", "parquet"):
        fio.write_pool(tmp_path / f"p.{ext}", sim["X"], sim["y"], sim["task"])
    pools = {ext: fio.read_pool(tmp_path / f"p.{ext}", allow_query=True) for ext in ("npz", "csv", "parquet")}
    df = pd.DataFrame({"task": sim["task"], "y": sim["y"], **{f"x{j + 1}": sim["X"][:, j] for j in range(3)}})
    table = pa.Table.from_pandas(df, preserve_index=False)
    pools.update({"pandas": fastmlr.tasks_from_frame(df), "polars": fastmlr.tasks_from_frame(pl.from_pandas(df)),
                  "arrow": fastmlr.tasks_from_frame(table)})
    models = {name: fastmlr.fit(pool, 2, seed=1) for name, pool in pools.items()}
    for name, model in models.items():
        for field in ("W", "s2", "p"):
            np.testing.assert_array_equal(getattr(model, field), getattr(models["npz"], field), err_msg=f"{name} {field}")


def test_parquet_ids_keep_their_type_and_bad_parquet_is_named(sim, tmp_path):
    fio.write_pool(tmp_path / "t.parquet", sim["X"], sim["y"], np.array([f"g{t}" for t in sim["task"]]))
    pool = fio.read_pool(tmp_path / "t.parquet", allow_query=True)
    assert pool.tasks.dtype.kind == "U" and pool.named and pool.features == ["x1", "x2", "x3"]
    assert fio.read_pool(tmp_path / "t.parquet", allow_query=True, features=["x3", "x1"]).features == ["x3", "x1"]
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match=r"junk\.parquet: not a readable \.parquet file"):
        fio.read_pool(tmp_path / "junk.parquet")
    with pytest.raises(ValueError, match=r"t\.parquet: target column 'y' has a missing value at row 5 \(120 rows in all\); "
                                         r"fitting needs a target on every row$"):
        fio.read_pool(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t\.parquet has no task column 'id'"):
        fio.read_pool(tmp_path / "t.parquet", task_col="id")
    X = sim["X"].copy()
    X[7, 2] = np.nan
    fio.write_pool(tmp_path / "nan.parquet", X, sim["y"], sim["task"])
    with pytest.raises(ValueError, match=r"nan\.parquet: feature column 'x3' has a missing value at row 7"):
        fio.read_pool(tmp_path / "nan.parquet", allow_query=True)
    pq.write_table(pa.table({"task": [1, 1], "y": [1.0, 2.0]}), tmp_path / "nofeat.parquet")
    with pytest.raises(ValueError, match=r"nofeat\.parquet has no feature columns"):
        fio.read_pool(tmp_path / "nofeat.parquet")
    pq.write_table(pa.table({"task": [1, 1], "y": [1.0, 2.0], "x": [1.0, 2.0]}).slice(0, 0), tmp_path / "e.parquet")
    with pytest.raises(ValueError, match=r"e\.parquet: the pool has no rows"):
        fio.read_pool(tmp_path / "e.parquet")


def test_cli_round_trip_on_parquet(tmp_path, capsys):
    pool, model = tmp_path / "s.parquet", tmp_path / "m.npz"
    assert main(["simulate", "--k", "2", "--d", "3", "--tasks", "150", "--queries", "2", "-o", str(pool)]) == 0
    assert main(["fit", str(pool), "--k", "2", "-o", str(model), "--skip-query-rows", "--quiet"]) == 0
    assert main(["check", str(pool), "--json"]) == 0
    for out in ("o.parquet", "o.csv", "o.npz"):
        assert main(["predict", str(model), str(pool), "-o", str(tmp_path / out)]) == 0
    capsys.readouterr()
    tab = pq.read_table(tmp_path / "o.parquet").to_pandas()
    queries = pq.read_table(tmp_path / "o.queries.parquet").to_pandas()
    ref = np.load(tmp_path / "o.npz")
    np.testing.assert_array_equal(tab["task"].to_numpy(), ref["tasks"])
    np.testing.assert_array_equal(tab[["post0", "post1"]].to_numpy(), ref["posterior"])
    np.testing.assert_array_equal(queries["yhat_bayes"].to_numpy(), ref["yhat_bayes"])
    np.testing.assert_array_equal(queries["row"].to_numpy(), ref["query_rows"])
    assert len(queries) == 300 and list(tab.columns[:2]) == ["task", "map_component"]
    bad = tmp_path / "o2.parquet"
    assert main(["predict", str(model), str(pool), "-o", str(bad), "--queries-out", str(tmp_path / "q.csv")]) == 2
    assert "expected a file ending in .parquet" in capsys.readouterr().err and not bad.exists()


def test_demo_reports_compile_time_apart_from_the_stages():
    from fastmlr.demo import format_demo, run_demo

    res = run_demo(k=2, d=4, scale=0.01, seed=0)
    assert set(res["seconds"]) >= {"compile", "sampling", "subspace", "cluster", "classify", "prediction"}
    lines = [line for line in format_demo(res).splitlines() if "compiled" in line]
    assert len(lines) == 1 and "one-time cost" in lines[0] and "not in the stage times" in lines[0]
