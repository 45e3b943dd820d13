"""`fastmlr simulate | fit | predict | check`, pool files, and every bad-input path."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlr
from fastmlr.cli import main
from fastmlr.synthetic import pool_sizes, simulate_pool
from fastmlr.pool_io import read_pool, write_pool


def run(*args):
    # cwd outside the source tree, so that `-m fastmlr` runs the installed package
    return subprocess.run([sys.executable, "-m", "fastmlr", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))


def one_line_error(capsys, argv, words):
    """main(argv) fails with status 2 and exactly one line on stderr containing words."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert words in err, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One simulated pool with 2 query rows per task, as .npz and .csv."""
    d = tmp_path_factory.mktemp("pool")
    args = ["--k", "3", "--d", "6", "--tasks", "400", "--min-size", "4", "--max-size", "16", "--seed", "4",
            "--queries", "2"]
    assert main(["simulate", *args, "-o", str(d / "p.npz")]) == 0
    assert main(["simulate", *args, "-o", str(d / "p.csv")]) == 0
    return d


def test_simulated_files_hold_the_same_pool(files):
    a = read_pool(files / "p.npz", allow_query=True)
    b = read_pool(files / "p.csv", allow_query=True)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_allclose(a.X, b.X, rtol=1e-15)
    np.testing.assert_allclose(a.y, b.y, rtol=1e-15)
    assert a.query_X.shape == (800, 6) and np.array_equal(a.query_task, b.query_task)
    assert b.features == ["x1", "x2", "x3", "x4", "x5", "x6"]


@pytest.mark.parametrize("ext", [".npz", ".csv"])
def test_round_trip_simulate_fit_predict(files, tmp_path, ext, capsys):
    src = str(files / f"p{ext}")
    model = str(tmp_path / "m.npz")
    assert main(["fit", src, "--k", "3", "-o", model, "--skip-query-rows", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "k=3" in out and "wrote" in out
    m = fastmlr.load_model(model)
    with np.load(files / "p.npz") as z:
        W, z_true, X, y, task = z["true_W"], z["true_z"], z["X"], z["y"], z["task"]
    assert fastmlr.parameter_error(m.W, W).max < 0.3

    pred = str(tmp_path / f"o{ext}")
    assert main(["predict", model, src, "-o", pred]) == 0
    capsys.readouterr()
    if ext == ".npz":
        with np.load(pred) as o:
            post, comp, bb, bm = o["posterior"], o["map_component"], o["beta_bayes"], o["beta_map"]
            qrows, yb, ym = o["query_rows"], o["yhat_bayes"], o["yhat_map"]
    else:
        tab = np.genfromtxt(pred, delimiter=",", names=True)
        post = np.column_stack([tab[f"post{l}"] for l in range(3)])
        comp = tab["map_component"].astype(int)
        bb = np.column_stack([tab[f"bayes_x{j}"] for j in range(1, 7)])
        q = np.genfromtxt(str(tmp_path / "o.queries.csv"), delimiter=",", names=True)
        qrows, yb, ym = q["row"].astype(int), q["yhat_bayes"], q["yhat_map"]
    assert post.shape == (400, 3) and np.allclose(post.sum(axis=1), 1.0, atol=1e-8)
    perm = fastmlr.metrics.match_components(m.W, W)  # model component perm[l] is true component l
    inv = np.argsort(perm)
    assert np.mean(inv[comp] == z_true) > 0.9
    assert bb.shape == (400, 6)
    # query predictions: the noiseless mean of the true component, up to the estimate's error
    assert qrows.size == 800 and np.all(np.isnan(y[qrows]))
    truth = np.einsum("qd,qd->q", X[qrows], W[z_true[task[qrows]]])
    pool = read_pool(files / "p.npz", allow_query=True)
    with np.load(files / "p.npz") as z:
        B_true = fastmlr.predict_params((pool.X, pool.y, pool.offsets), W, z["true_s2"], z["true_p"])
    assert np.array_equal(pool.query_rows, qrows)
    ideal = np.einsum("qd,qd->q", pool.query_X, B_true[pool.query_task])
    mse, mse_map = np.mean((yb - truth) ** 2), np.mean((ym - truth) ** 2)
    mse_ideal = np.mean((ideal - truth) ** 2)
    assert mse <= 1.3 * mse_ideal + 0.01, (mse, mse_ideal)  # near the Bayes predictor with the true mixture
    assert mse < 0.25 * np.mean(truth**2) and mse <= 1.02 * mse_map


def test_npz_and_csv_fit_to_the_same_model(files, tmp_path, capsys):
    for ext in ("npz", "csv"):
        assert main(["fit", str(files / f"p.{ext}"), "--k", "3", "-o", str(tmp_path / f"{ext}.npz"),
                     "--skip-query-rows", "--quiet"]) == 0
    a = fastmlr.load_model(tmp_path / "npz.npz")
    b = fastmlr.load_model(tmp_path / "csv.npz")
    np.testing.assert_allclose(a.W, b.W, atol=1e-9)


def test_fit_auto_k_and_json(files, tmp_path, capsys):
    assert main(["fit", str(files / "p.npz"), "--k", "auto", "-o", str(tmp_path / "m.npz"),
                 "--skip-query-rows", "--json"]) == 0
    dg = json.loads(capsys.readouterr().out)
    assert dg["k"] == 3 and dg["k_selection"]["chosen"] == 3
    assert dg["features"] == ["x0", "x1", "x2", "x3", "x4", "x5"]


def test_csv_with_named_columns(tmp_path, capsys):
    sim = simulate_pool(2, 3, 200, low=6, high=12, seed=1)
    path = tmp_path / "named.csv"
    with open(path, "w") as fh:
        fh.write("id,extra,out,a,b,c\n")
        for t, yy, x in zip(sim["task"], sim["y"], sim["X"]):
            fh.write(f"g{t},7,{float(yy)!r},{float(x[0])!r},{float(x[1])!r},{float(x[2])!r}\n")
    model = str(tmp_path / "m.npz")
    assert main(["fit", str(path), "--k", "2", "-o", model, "--task-col", "id", "--target-col", "out",
                 "--features", "a,b,c", "--quiet"]) == 0
    assert fastmlr.parameter_error(fastmlr.load_model(model).W, sim["W"]).max < 0.3
    pool = read_pool(path, task_col="id", target_col="out", features=["a", "b", "c"])
    assert pool.tasks.dtype.kind == "U" and pool.tasks.size == 200
    capsys.readouterr()


def test_check_command(files, capsys):
    assert main(["check", str(files / "p.npz"), "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "k = 3, d = 6" in out
    assert main(["check", str(files / "p.csv"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["k"] == res["largest_k"] and res["ok"]


def test_progress_quiet_when_piped(files, tmp_path):
    p = run("fit", str(files / "p.npz"), "--k", "3", "-o", str(tmp_path / "m.npz"), "--skip-query-rows")
    assert p.returncode == 0 and p.stderr == ""


def test_pool_sizes():
    s = pool_sizes(20000, 4, 32, seed=0)
    assert s.min() == 4 and s.max() == 32
    assert np.mean(s < 12) > 0.5  # mostly tiny
    u = pool_sizes(20000, 4, 32, distribution="uniform", seed=0)
    assert abs(np.mean(u) - 18) < 0.3
    with pytest.raises(ValueError, match="low <= high"):
        pool_sizes(10, 5, 4)


def test_write_pool_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 2))
    y = rng.standard_normal(9)
    y[3] = np.nan
    task = np.array([2, 2, 0, 0, 0, 1, 1, 2, 1])
    for ext in ("npz", "csv"):
        write_pool(tmp_path / f"w.{ext}", X, y, task)
        p = read_pool(tmp_path / f"w.{ext}", allow_query=True)
        assert list(p.offsets) == [0, 2, 5, 8] and list(p.query_rows) == [3]
        np.testing.assert_array_equal(p.X, X[p.rows])
    with pytest.raises(ValueError, match="unknown file type"):
        write_pool(tmp_path / "w.txt", X, y, task)


# ---- every bad input: one line, status 2, nothing written --------------------------------

def _csv(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


GOOD = "task,y,x1,x2\n1,0.5,1,2\n1,0.1,2,3\n2,0.3,1,1\n2,0.2,0,1\n"


@pytest.mark.parametrize(
    "text, extra, words",
    [
        ("", [], "empty"),
        ("task,y,x1\n", [], "no data rows"),
        ("id,y,x1\n1,2,3\n", [], "no task-id column 'task'"),
        ("task,target,x1\n1,2,3\n", [], "no target column 'y'"),
        ("task,y\n1,2\n", [], "no feature columns"),
        (GOOD, ["--features", "x1,x9"], "no feature column(s) x9"),
        (GOOD.replace("1,2\n1,0.1", "1,2\n1,abc"), [], "non-numeric value 'abc'"),
        (GOOD.replace("2,0.3,1,1", "2,0.3,,1"), [], "column 'x1' has a missing value on data line 3"),
        (GOOD.replace("2,0.3,1,1", "2,0.3,inf,1"), [], "non-finite"),
        (GOOD.replace("2,0.3,1,1", ",0.3,1,1"), [], "missing task id"),
        (GOOD.replace("2,0.3,1,1", "2,0.3,1"), [], "has 3 fields"),
        (GOOD.replace("2,0.3,1,1", "2,,1,1"), [], "target is missing on data row 3"),
        ("task,y,x1,x1\n1,2,3,4\n", [], "names a column twice"),
        (GOOD, ["--features", ","], "--features is empty"),
    ],
)
def test_bad_csv_inputs(tmp_path, capsys, text, extra, words):
    src = _csv(tmp_path, text)
    out = tmp_path / "m.npz"
    one_line_error(capsys, ["fit", src, "--k", "2", "-o", str(out), *extra], words)
    assert not out.exists()


def test_bad_npz_inputs(tmp_path, capsys):
    out = tmp_path / "m.npz"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    one_line_error(capsys, ["fit", str(bad), "--k", "2", "-o", str(out)], "not a readable .npz")
    np.savez(bad, X=np.ones((4, 2)), y=np.ones(4))
    one_line_error(capsys, ["fit", str(bad), "--k", "2", "-o", str(out)], "missing array(s) task")
    X = np.random.default_rng(0).standard_normal((6, 2))
    X[2, 1] = np.nan
    np.savez(bad, X=X, y=np.ones(6), task=np.array([0, 0, 0, 1, 1, 1]))
    one_line_error(capsys, ["fit", str(bad), "--k", "2", "-o", str(out)], "X has a missing or non-finite value at row 2")
    np.savez(bad, X=np.ones((6, 2)), y=np.ones(5), task=np.zeros(6))
    one_line_error(capsys, ["fit", str(bad), "--k", "2", "-o", str(out)], "y has shape (5,)")
    np.savez(bad, X=np.ones((6, 2)), y=np.ones(6), task=np.array([0.5] * 6))
    one_line_error(capsys, ["fit", str(bad), "--k", "2", "-o", str(out)], "non-integer")
    assert not out.exists()


def test_bad_pools_and_arguments(tmp_path, capsys):
    out = tmp_path / "m.npz"
    src = _csv(tmp_path, GOOD)
    one_line_error(capsys, ["fit", str(tmp_path / "none.csv"), "--k", "2", "-o", str(out)], "no such file")
    one_line_error(capsys, ["fit", _csv(tmp_path, GOOD, "p.txt"), "--k", "2", "-o", str(out)], "unknown file type")
    one_line_error(capsys, ["fit", src, "--k", "0", "-o", str(out)], "positive integer or 'auto'")
    one_line_error(capsys, ["fit", src, "--k", "2", "-o", str(tmp_path / "m.csv")], "expected a file ending in .npz")
    one_line_error(capsys, ["fit", src, "--k", "9", "-o", str(out)], "k is 9")  # more than the pool supports
    one_row = "task,y,x1\n" + "".join(f"{i},{i * 0.1},{i}\n" for i in range(10))
    one_line_error(capsys, ["fit", _csv(tmp_path, one_row, "one.csv"), "--k", "2", "-o", str(out)],
                   "no task with at least 2 rows")
    one_line_error(capsys, ["fit", src, "--k", "2", "-o", str(tmp_path / "no" / "m.npz")], "does not exist")
    one_line_error(capsys, ["simulate", "--k", "3", "--d", "2", "-o", str(tmp_path / "s.npz")], "k <= d")
    one_line_error(capsys, ["simulate", "--min-size", "9", "--max-size", "4", "-o", str(tmp_path / "s.npz")],
                   "below --min-size")
    one_line_error(capsys, ["simulate", "-o", str(tmp_path / "s.txt")], "expected a file ending in")
    one_line_error(capsys, ["simulate", "--queries", "-1", "-o", str(tmp_path / "s.npz")], "non-negative")
    assert not out.exists() and not (tmp_path / "s.npz").exists()


def test_failed_fit_leaves_existing_output_alone(files, tmp_path, capsys):
    out = tmp_path / "m.npz"
    out.write_bytes(b"previous")
    one_line_error(capsys, ["fit", str(files / "p.npz"), "--k", "3", "-o", str(out)], "target is missing")
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_bad_predict_inputs(files, tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["fit", str(files / "p.npz"), "--k", "3", "-o", str(model), "--skip-query-rows", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "o.npz"
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk")
    one_line_error(capsys, ["predict", str(junk), str(files / "p.npz"), "-o", str(out)], "not a readable fastmlr model")
    one_line_error(capsys, ["predict", str(tmp_path / "none.npz"), str(files / "p.npz"), "-o", str(out)], "does not exist")
    one_line_error(capsys, ["predict", str(model), _csv(tmp_path, GOOD), "-o", str(out)], "the model has d = 6")
    one_line_error(capsys, ["predict", str(model), str(files / "p.npz"), "-o", str(tmp_path / "o.json")],
                   "expected a file ending in")
    assert not out.exists()


def test_subprocess_error_is_one_line(tmp_path):
    p = run("fit", str(tmp_path / "none.npz"), "--k", "2", "-o", str(tmp_path / "m.npz"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "no such file" in p.stderr


# ---- feature names, task ids, quoting, output paths -------------------------------------

def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _write_rows(path, rows, **kw):
    with open(path, "w", newline="", **kw) as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def csv_model(files, tmp_path_factory):
    """A model fitted on p.csv (features x1..x6, by name)."""
    path = tmp_path_factory.mktemp("model") / "m.npz"
    assert main(["fit", str(files / "p.csv"), "--k", "3", "-o", str(path), "--skip-query-rows", "--quiet"]) == 0
    return str(path)


def test_predict_takes_csv_columns_by_name(files, csv_model, tmp_path, capsys):
    rows = _rows(files / "p.csv")
    head = rows[0]
    assert head == ["task", "y", "x1", "x2", "x3", "x4", "x5", "x6"]
    order = [0, 1, 7, 6, 5, 4, 3, 2]  # task, y, x6, ..., x1
    permuted = _write_rows(tmp_path / "perm.csv", [[r[j] for j in order] for r in rows])
    extra = _write_rows(tmp_path / "extra.csv", [r[:4] + [("note" if i == 0 else "3")] + r[4:]
                                                 for i, r in enumerate(rows)])
    runs = {"plain": [str(files / "p.csv")], "permuted": [permuted], "extra column": [extra],
            "--features reversed": [str(files / "p.csv"), "--features", "x6,x5,x4,x3,x2,x1"]}
    out = {}
    for name, args in runs.items():
        o = tmp_path / f"{name.replace(' ', '_')}.csv"
        assert main(["predict", csv_model, *args, "-o", str(o)]) == 0, name
        out[name] = (o.read_text(), (tmp_path / f"{o.stem}.queries.csv").read_text())
    capsys.readouterr()
    for name in runs:
        assert out[name] == out["plain"], name
    assert out["plain"][0].splitlines()[0].endswith(",bayes_x1,bayes_x2,bayes_x3,bayes_x4,bayes_x5,bayes_x6")
    no_x3 = _write_rows(tmp_path / "no_x3.csv", [r[:4] + r[5:] for r in rows])
    dest = tmp_path / "o.csv"
    one_line_error(capsys, ["predict", csv_model, no_x3, "-o", str(dest)], "has no column(s) x3 of the 6 features")
    one_line_error(capsys, ["predict", csv_model, str(files / "p.csv"), "--features", "x1,x2,x4,x5", "-o", str(dest)],
                   "has no column(s) x3, x6")
    assert not dest.exists()
    # a model fitted on a .npz (columns by position) still predicts a .csv of as many columns
    npz_model = str(tmp_path / "npz_model.npz")
    assert main(["fit", str(files / "p.npz"), "--k", "3", "-o", npz_model, "--skip-query-rows", "--quiet"]) == 0
    assert main(["predict", npz_model, permuted, "-o", str(dest)]) == 0
    assert _rows(dest)[0][-6:] == [f"bayes_x{j}" for j in range(6, 0, -1)]


def _id_pool(tmp_path, ids, name="ids.csv", queries=True):
    """A small .csv pool, features x1..x6: three rows and (if queries) one query row per task id."""
    rng = np.random.default_rng(5)
    rows = [["task", "y", "x1", "x2", "x3", "x4", "x5", "x6"]]
    for t in ids:
        for j in range(4 if queries else 3):
            x = rng.standard_normal(6)
            rows.append([t, "" if j == 3 else repr(float(x.sum()))] + [repr(float(v)) for v in x])
    return _write_rows(tmp_path / name, rows, encoding="utf-8")


def test_csv_task_ids_are_kept_as_text(csv_model, tmp_path, capsys):
    ids = ["g1", "99999999999999999999", "7", "007", "+7", " 8 ", "-2"]
    src = _id_pool(tmp_path, ids)
    pool = read_pool(src, allow_query=True)
    # integers by value (equal values by text), then the other ids by text
    assert list(pool.tasks) == ["-2", "+7", "007", "7", "8", "99999999999999999999", "g1"]
    assert list(np.diff(pool.offsets)) == [3] * 7
    out = tmp_path / "o.csv"
    assert main(["predict", csv_model, src, "-o", str(out)]) == 0
    capsys.readouterr()
    assert [r[0] for r in _rows(out)[1:]] == list(pool.tasks)
    queries = _rows(tmp_path / "o.queries.csv")[1:]
    assert sorted(r[1] for r in queries) == sorted(t.strip() for t in ids)
    assert main(["fit", src, "--k", "1", "-o", str(tmp_path / "m.npz"), "--skip-query-rows", "--quiet"]) == 0
    capsys.readouterr()
    # ids of a .npz stay numbers; a float id beyond 64-bit integers is refused, not wrapped
    bad = tmp_path / "big.npz"
    np.savez(bad, X=np.ones((4, 2)), y=np.ones(4), task=np.array([1e19, 1e19, 2e19, 2e19]))
    one_line_error(capsys, ["fit", str(bad), "--k", "1", "-o", str(tmp_path / "m2.npz")], "64-bit integer range")


def test_csv_outputs_quote_ids_with_commas_and_quotes(csv_model, tmp_path, capsys):
    ids = np.array(["Smith, J", 'say "hi"', "plain", "two\nlines"])
    rng = np.random.default_rng(2)
    X = rng.standard_normal((16, 6))
    y = rng.standard_normal(16)
    y[[3, 7]] = np.nan
    task = np.repeat(ids, 4)
    src = tmp_path / "quoted.csv"
    write_pool(src, X, y, task)
    pool = read_pool(src, allow_query=True)
    sizes = dict(zip(pool.tasks.tolist(), np.diff(pool.offsets).tolist()))
    assert sizes == {"Smith, J": 3, 'say "hi"': 3, "plain": 4, "two\nlines": 4}
    np.testing.assert_array_equal(pool.X, X[pool.rows])
    out = tmp_path / "o.csv"
    assert main(["predict", csv_model, str(src), "-o", str(out)]) == 0
    capsys.readouterr()
    rows = _rows(out)
    assert len({len(r) for r in rows}) == 1 and sorted(r[0] for r in rows[1:]) == sorted(ids)
    queries = _rows(tmp_path / "o.queries.csv")
    assert [r[:2] for r in queries[1:]] == [["3", "Smith, J"], ["7", 'say "hi"']]
    assert all(len(r) == 4 for r in queries)


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text(GOOD, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbftask,")
    pool = read_pool(path)
    assert pool.features == ["x1", "x2"] and list(pool.tasks) == ["1", "2"]


def test_model_file_with_malformed_fields(tmp_path, capsys):
    model = fastmlr.Model(np.eye(2, 3), np.ones(2), np.full(2, 0.5), np.eye(3), {"k": 2})
    good = tmp_path / "good.npz"
    fastmlr.save_model(good, model)
    with np.load(good) as z:
        base = {key: z[key] for key in z.files}
    cases = {
        "format_version text": ("format_version", np.array("1"), "format_version"),
        "format_version array": ("format_version", np.array([1, 1]), "format_version"),
        "format_version float": ("format_version", np.array(1.0), "format_version"),
        "transform nan": ("transform", np.where(np.eye(3) > 0, np.nan, 0.0), "transform has a non-finite value"),
        "transform text": ("transform", np.array(["a", "b"]), "transform has shape"),
        "diagnostics list": ("diagnostics", np.array("[1, 2]"), "expected a JSON object"),
        "diagnostics array": ("diagnostics", np.array(["{}", "{}"]), "not one JSON string"),
        "diagnostics number": ("diagnostics", np.array(3.0), "not one JSON string"),
        "diagnostics deep": ("diagnostics", np.array("[" * 100000), "damaged"),
    }
    for name, (key, value, words) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.npz"
        np.savez(bad, **{**base, key: value})
        with pytest.raises(ValueError, match="damaged fastmlr model file") as info:
            fastmlr.load_model(bad)
        assert str(bad) in str(info.value) and words in str(info.value), (name, info.value)
    one_line_error(capsys, ["predict", str(tmp_path / "format_version_text.npz"), _csv(tmp_path, GOOD),
                            "-o", str(tmp_path / "o.npz")], "format_version_text.npz is a damaged")
    with pytest.raises(ValueError, match="model.transform has a non-finite value"):
        fastmlr.save_model(tmp_path / "m.npz", model._replace(transform=np.full((3, 3), np.inf)))
    with pytest.raises(TypeError, match="model.diagnostics is a list; expected a dict"):
        fastmlr.save_model(tmp_path / "m.npz", model._replace(diagnostics=[1, 2]))
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        fastmlr.save_model(tmp_path / "m.npz", model._replace(diagnostics={"f": object()}))
    assert not (tmp_path / "m.npz").exists()
    fastmlr.save_model(tmp_path / "m.npz", model._replace(diagnostics=None))
    assert fastmlr.load_model(tmp_path / "m.npz").diagnostics == {}


def test_query_output_paths(files, csv_model, tmp_path, capsys, monkeypatch):
    src = str(files / "p.csv")
    o3 = tmp_path / "o3.csv"
    one_line_error(capsys, ["predict", csv_model, src, "-o", str(o3), "--queries-out", str(o3)],
                   "is the -o file")
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["predict", csv_model, src, "-o", "o3.csv", "--queries-out", f".{os.sep}o3.csv"],
                   "is the -o file")
    one_line_error(capsys, ["predict", csv_model, src, "-o", "o3.csv", "--queries-out", "q.npz"],
                   "--queries-out q.npz: expected a file ending in .csv")
    one_line_error(capsys, ["predict", csv_model, src, "-o", "o3.npz", "--queries-out", "q.csv"],
                   "goes with a .csv output")
    assert os.listdir(tmp_path) == []
    # the default query file is rewritten on every run: header only when there are no query rows
    assert main(["predict", csv_model, src, "-o", "o.csv"]) == 0
    assert len(_rows("o.queries.csv")) == 801
    no_queries = _id_pool(tmp_path, ["a", "b"], queries=False)
    capsys.readouterr()
    assert main(["predict", csv_model, no_queries, "-o", "o.csv"]) == 0
    assert "o.queries.csv: no query rows" in capsys.readouterr().out
    assert _rows("o.queries.csv") == [["row", "task", "yhat_bayes", "yhat_map"]]
    assert main(["predict", csv_model, no_queries, "-o", "o.csv", "--queries-out", "mine.csv"]) == 0
    assert _rows("mine.csv") == [["row", "task", "yhat_bayes", "yhat_map"]]
    help_text = " ".join(run("predict", "--help").stdout.split())
    assert "file for the query predictions" in help_text and "header only when FILE has no query rows" in help_text


def test_output_paths_are_checked_before_any_work(files, tmp_path, capsys, monkeypatch):
    model = fastmlr.Model(np.eye(2, 3), np.ones(2), np.full(2, 0.5), np.eye(3), {"k": 2})
    with pytest.raises(IsADirectoryError, match="it is a directory") as info:
        fastmlr.save_model(tmp_path, model)
    assert str(tmp_path) in str(info.value) and ".tmp" not in str(info.value)

    def no_fit(*args, **kwargs):
        raise AssertionError("fit ran before the output path was checked")

    monkeypatch.setattr(sys.modules["fastmlr.fit"], "fit", no_fit)
    src = str(files / "p.npz")
    (tmp_path / "d.npz").mkdir()
    one_line_error(capsys, ["fit", src, "--k", "3", "-o", str(tmp_path / "d.npz"), "--skip-query-rows"],
                   "d.npz: it is a directory")
    if os.path.isdir("/proc"):
        one_line_error(capsys, ["fit", src, "--k", "3", "-o", "/proc/m.npz", "--skip-query-rows"], "-o /proc/m.npz:")
        one_line_error(capsys, ["predict", str(tmp_path / "none.npz"), src, "-o", "/proc/o.csv"], "-o /proc/o.csv:")
    if os.geteuid() != 0:  # root writes into read-only directories
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            one_line_error(capsys, ["fit", src, "--k", "3", "-o", str(ro / "m.npz")], "is not writable")
        finally:
            ro.chmod(0o700)


def test_atomic_write_errors_name_the_target(tmp_path):
    from fastmlr._atomic import atomic_open

    target = tmp_path / "t.csv"
    with pytest.raises(IsADirectoryError) as info:
        with atomic_open(target, "w") as fh:
            fh.write("x")
            target.mkdir()  # in the way of the rename
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(OSError, match=f"cannot write {target.with_name('u.csv')}: No space left"):
        with atomic_open(tmp_path / "u.csv", "w"):
            raise OSError(28, "No space left on device")
    other = tmp_path / "other.txt"
    with pytest.raises(FileNotFoundError) as info:  # about another file: unchanged
        with atomic_open(tmp_path / "v.csv", "w"):
            open(other)
    assert info.value.filename == str(other)
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]
