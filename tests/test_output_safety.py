"""Outputs never destroy inputs; the files of one run appear together; closed pipes.

* an output that is an input (same path, ``./x``, ``../dir/x``, a symbolic or hard
  link) or another output of the run is refused before any work, naming both;
* a run writing several files publishes all of them or none, and the temporary files
  of a killed run are removed by the next successful one;
* ``fastmlr ... | head -1`` ends quietly;
* ``predict --csv-escape-formulas``.
"""

import csv
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fastmlr import _atomic
from fastmlr._atomic import TEMP_PREFIX, atomic_files, atomic_open, remove_stale_temporaries
from fastmlr._paths import check_paths, same_file
from fastmlr.cli import main
from fastmlr.pool_io import write_pool

HERE = os.path.dirname(os.path.abspath(__file__))


def run(*args, **kw):
    # cwd outside the source tree, so that `-m fastmlr` runs the installed package
    return subprocess.run([sys.executable, "-m", "fastmlr", *args], text=True, cwd=HERE, **kw)


def refused(capsys, argv, *words):
    """main(argv) fails with status 2 and one line on stderr holding every word."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def dead_pid():
    """The id of a process that has ended."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def temporaries(directory):
    return sorted(f for f in os.listdir(directory) if f.startswith(TEMP_PREFIX) or f.startswith(".tmp"))


def snapshot(*paths):
    return {str(p): open(p, "rb").read() for p in paths}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small pool with query rows (.csv and .npz) and a model fitted on the .csv."""
    d = tmp_path_factory.mktemp("safety")
    args = ["--k", "2", "--d", "3", "--tasks", "80", "--min-size", "4", "--max-size", "12", "--seed", "1",
            "--queries", "1"]
    assert main(["simulate", *args, "-o", str(d / "pool.csv")]) == 0
    assert main(["simulate", *args, "-o", str(d / "pool.npz")]) == 0
    assert main(["fit", str(d / "pool.csv"), "--k", "2", "-o", str(d / "model.npz"), "--skip-query-rows",
                 "--quiet"]) == 0
    return d


@pytest.fixture
def here(work, tmp_path, monkeypatch):
    """tmp_path as the working directory, holding copies of the pool and the model, a
    directory ``sub`` and a directory ``other``."""
    for name in ("pool.csv", "pool.npz", "model.npz"):
        shutil.copy(work / name, tmp_path / name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def no_work(monkeypatch):
    """Reading a pool or a model, or fitting, fails the test: refusals come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(sys.modules["fastmlr.io"], "read_pool", forbidden)
    monkeypatch.setattr(sys.modules["fastmlr.model"], "load_model", forbidden)
    monkeypatch.setattr(sys.modules["fastmlr.fit"], "fit", forbidden)


# ---------------------------------------------------------------------------------
# class 1: an output that is an input (library)


def test_same_file_sees_every_second_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "a.csv").write_text("a")
    (tmp_path / "b.csv").write_text("a")
    os.symlink("a.csv", tmp_path / "s.csv")
    os.link(tmp_path / "a.csv", tmp_path / "h.csv")
    os.symlink(".", tmp_path / "loop")
    for alias in ["a.csv", "./a.csv", f"../{tmp_path.name}/a.csv", str(tmp_path / "a.csv"), "d/../a.csv",
                  "s.csv", "h.csv", "loop/a.csv", "loop/loop/h.csv"]:
        assert same_file(alias, "a.csv"), alias
        assert same_file("a.csv", alias), alias
    assert not same_file("b.csv", "a.csv")  # equal bytes, another file
    # files that do not exist: by their resolved paths
    assert same_file("new.csv", "./d/../new.csv")
    os.symlink("new.csv", tmp_path / "dangling.csv")
    assert same_file("dangling.csv", "new.csv")
    assert not same_file("new.csv", "new2.csv")


def test_check_paths_refuses_an_output_that_is_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool.csv").write_text("task,y,x\n")
    os.link(tmp_path / "pool.csv", tmp_path / "twin.csv")
    with pytest.raises(ValueError, match=r"^-o twin.csv is the input pool pool.csv \(the same file\); "
                                         r"writing it would destroy the input"):
        check_paths([("input pool", "pool.csv")], [("-o", "twin.csv")])
    with pytest.raises(ValueError, match=r"^--queries-out \./o.csv is the -o file o.csv \(the same file\); expected"):
        check_paths([("input pool", "pool.csv")], [("-o", "o.csv"), ("--queries-out", "./o.csv")])
    check_paths([("input pool", "pool.csv")], [("-o", "o.csv"), ("--queries-out", "q.csv")])
    assert sorted(os.listdir(tmp_path)) == ["pool.csv", "twin.csv"]  # checks write nothing
    with pytest.raises(IsADirectoryError, match="-o sub"):
        os.mkdir(tmp_path / "sub")
        check_paths([], [("-o", "sub")])


# ---------------------------------------------------------------------------------
# class 1: an output that is an input (command line)


def _links(here):
    os.symlink("pool.csv", here / "link.csv")
    os.symlink("model.npz", here / "mlink.npz")
    os.link(here / "pool.npz", here / "hard.npz")
    os.link(here / "pool.csv", here / "hard.csv")
    os.symlink(".", here / "same_dir")


COLLISIONS = [
    (["predict", "model.npz", "pool.csv", "-o", "pool.csv"], "-o pool.csv", "input pool pool.csv"),
    (["fit", "pool.npz", "--k", "2", "-o", "pool.npz"], "-o pool.npz", "input pool pool.npz"),
    (["predict", "model.npz", "pool.csv", "-o", "model.npz"], "-o model.npz", "input model model.npz"),
    (["predict", "model.npz", "pool.csv", "-o", "o.csv", "--queries-out", "pool.csv"],
     "--queries-out pool.csv", "input pool pool.csv"),
    (["predict", "model.npz", "pool.queries.csv", "-o", "pool.csv"],  # the default query file
     "query file pool.queries.csv", "input pool pool.queries.csv"),
    (["predict", "model.npz", "pool.csv", "-o", "./pool.csv"], "-o ./pool.csv", "input pool pool.csv"),
    (["predict", "model.npz", "pool.csv", "-o", "sub/../pool.csv"], "-o sub/../pool.csv", "input pool pool.csv"),
    (["predict", "model.npz", "pool.csv", "-o", "ABS/pool.csv"], "-o ABS/pool.csv", "input pool pool.csv"),
    (["predict", "model.npz", "../NAME/pool.csv", "-o", "pool.csv"], "-o pool.csv", "input pool ../NAME/pool.csv"),
    (["predict", "model.npz", "pool.csv", "-o", "link.csv"], "-o link.csv", "input pool pool.csv"),
    (["predict", "model.npz", "link.csv", "-o", "hard.csv"], "-o hard.csv", "input pool link.csv"),
    (["predict", "model.npz", "pool.csv", "-o", "same_dir/pool.csv"], "-o same_dir/pool.csv", "input pool pool.csv"),
    (["predict", "model.npz", "pool.csv", "-o", "mlink.npz"], "-o mlink.npz", "input model model.npz"),
    (["predict", "mlink.npz", "pool.csv", "-o", "model.npz"], "-o model.npz", "input model mlink.npz"),
    (["fit", "pool.npz", "--k", "2", "-o", "hard.npz"], "-o hard.npz", "input pool pool.npz"),
    (["fit", "hard.npz", "--k", "2", "-o", "same_dir/pool.npz"], "-o same_dir/pool.npz", "input pool hard.npz"),
    # two outputs of one run that are one file
    (["predict", "model.npz", "pool.npz", "-o", "x.csv", "--queries-out", "same_dir/x.csv"],
     "--queries-out same_dir/x.csv", "-o file x.csv"),
    (["predict", "model.npz", "pool.npz", "-o", "hard.csv", "--queries-out", "link.csv"],
     "--queries-out link.csv", "-o file hard.csv"),
]


@pytest.mark.parametrize("argv, out_words, in_words", COLLISIONS)
def test_an_output_that_is_an_input_is_refused_before_any_work(here, monkeypatch, capsys, argv, out_words,
                                                                in_words):
    _links(here)
    shutil.copy(here / "pool.csv", here / "pool.queries.csv")
    sub = {"ABS": str(here), "NAME": here.name}

    def fill(text):
        for key, value in sub.items():
            text = text.replace(key, value)
        return text

    argv, out_words, in_words = [fill(a) for a in argv], fill(out_words), fill(in_words)
    files = [here / n for n in ("pool.csv", "pool.npz", "model.npz", "pool.queries.csv")]
    before = snapshot(*files)
    listing = sorted(os.listdir(here))
    no_work(monkeypatch)
    err = refused(capsys, argv, out_words, in_words)
    assert "destroy the input" in err or "expected a different file for each output" in err
    assert snapshot(*files) == before
    assert sorted(os.listdir(here)) == listing
    assert os.path.islink(here / "link.csv") and os.path.islink(here / "mlink.npz")


def test_refused_then_written_beside_the_input(here, capsys):
    """Refused; near misses (same name in another directory, a link that leads
    elsewhere) are written."""
    os.symlink("elsewhere.csv", here / "dangling.csv")
    before = snapshot(here / "pool.csv", here / "model.npz", here / "pool.npz")
    refused(capsys, ["predict", "model.npz", "pool.csv", "-o", "pool.csv"], "-o pool.csv is the input pool pool.csv")
    refused(capsys, ["fit", "pool.npz", "--k", "2", "-o", "./pool.npz"], "-o ./pool.npz is the input pool pool.npz")
    assert main(["predict", "model.npz", "pool.csv", "-o", "other/pool.csv"]) == 0
    assert main(["predict", "model.npz", "pool.csv", "-o", "dangling.csv", "--queries-out", "other/q.csv"]) == 0
    assert main(["fit", "pool.npz", "--k", "2", "-o", "other/pool.npz", "--quiet", "--skip-query-rows"]) == 0
    assert snapshot(here / "pool.csv", here / "model.npz", here / "pool.npz") == before
    # -o through a symbolic link replaces the link, not the file it pointed to
    assert not os.path.islink(here / "dangling.csv") and not (here / "elsewhere.csv").exists()
    assert (here / "other" / "pool.csv").exists() and (here / "other" / "pool.queries.csv").exists()
    capsys.readouterr()


# ---------------------------------------------------------------------------------
# class 3: the files of one run appear together (library)


def test_atomic_files_publishes_all_or_none(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(RuntimeError, match="late failure"):
        with atomic_files():
            with atomic_open(a, "w") as fh:
                fh.write("new a")
            with atomic_open(b, "w") as fh:
                fh.write("new b")
            assert a.read_text() == "old a" and b.read_text() == "old b"  # nothing published yet
            assert len(temporaries(tmp_path)) == 2
            raise RuntimeError("late failure")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert temporaries(tmp_path) == []
    with atomic_files():
        with atomic_open(a, "w") as fh:
            fh.write("new a")
        with atomic_files():  # joins the outer block
            with atomic_open(b, "w") as fh:
                fh.write("new b")
        assert b.read_text() == "old b"
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]


def test_atomic_files_refuses_one_target_twice(tmp_path):
    with pytest.raises(ValueError, match="written twice in one run"):
        with atomic_files():
            with atomic_open(tmp_path / "a.csv", "w") as fh:
                fh.write("1")
            with atomic_open(tmp_path / "." / "a.csv", "w") as fh:
                fh.write("2")
    assert os.listdir(tmp_path) == []


def test_a_failed_rename_puts_back_the_files_already_replaced(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("old a")
    with pytest.raises(IsADirectoryError) as info:
        with atomic_files():
            for path in (a, b, c):
                with atomic_open(path, "w") as fh:
                    fh.write("new")
            c.mkdir()  # in the way of the last rename
    assert str(c) in str(info.value) and TEMP_PREFIX not in str(info.value)
    assert a.read_text() == "old a" and not b.exists() and c.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "c.csv"]


def test_a_failed_rename_restores_a_symbolic_link(tmp_path):
    (tmp_path / "target.csv").write_text("kept")
    os.symlink("target.csv", tmp_path / "link.csv")
    with pytest.raises(IsADirectoryError):
        with atomic_files():
            with atomic_open(tmp_path / "link.csv", "w") as fh:
                fh.write("new")
            with atomic_open(tmp_path / "d.csv", "w") as fh:
                fh.write("new")
            (tmp_path / "d.csv").mkdir()
    assert os.readlink(tmp_path / "link.csv") == "target.csv"
    assert (tmp_path / "target.csv").read_text() == "kept"
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "link.csv", "target.csv"]


def test_stale_temporaries_of_the_target_are_removed(tmp_path):
    target = tmp_path / "out.csv"
    dead, alive = dead_pid(), os.getppid()
    names = {
        "dead": f"{TEMP_PREFIX}{dead}-0123abcd-out.csv",
        "old": f"{TEMP_PREFIX}{alive}-89abcdef-out.csv",
        "alive": f"{TEMP_PREFIX}{alive}-00000000-out.csv",
        "other target": f"{TEMP_PREFIX}{dead}-0123abcd-x-out.csv",
        "not ours": f".tmp-{dead}-0123abcd-out.csv",
    }
    for name in names.values():
        (tmp_path / name).write_text("partial")
    day = time.time() - _atomic.STALE_SECONDS - 60
    os.utime(tmp_path / names["old"], (day, day))
    with atomic_open(target, "w") as fh:
        fh.write("done")
    left = set(os.listdir(tmp_path))
    assert names["dead"] not in left and names["old"] not in left
    assert {names["alive"], names["other target"], names["not ours"], "out.csv"} == left
    assert remove_stale_temporaries(tmp_path / "x-out.csv") == [str(tmp_path / names["other target"])]


def test_temporaries_are_named_after_their_target(tmp_path):
    long = "n" * 240 + ".csv"
    for name in ("out.csv", long):
        with atomic_files():
            with atomic_open(tmp_path / name, "w") as fh:
                fh.write("x")
                tmps = temporaries(tmp_path)
                assert len(tmps) == 1 and tmps[0].startswith(f"{TEMP_PREFIX}{os.getpid()}-"), tmps
                assert tmps[0].endswith("-out.csv") if name == "out.csv" else len(tmps[0]) < 255
    assert sorted(os.listdir(tmp_path)) == sorted(["out.csv", long])


def test_a_killed_writer_leaves_a_temporary_the_next_run_removes(tmp_path):
    code = ("import os, sys\nfrom fastmlr._atomic import atomic_files, atomic_open\n"
            "with atomic_files():\n"
            "    for name in sys.argv[1:]:\n"
            "        with atomic_open(name, 'w') as fh:\n"
            "            fh.write('half')\n"
            "    os._exit(9)\n")
    a, b = str(tmp_path / "o.csv"), str(tmp_path / "o.queries.csv")
    p = subprocess.run([sys.executable, "-c", code, a, b], cwd=HERE)
    assert p.returncode == 9
    assert len(temporaries(tmp_path)) == 2 and not os.path.exists(a) and not os.path.exists(b)
    with atomic_files():
        for name in (a, b):
            with atomic_open(name, "w") as fh:
                fh.write("whole")
    assert sorted(os.listdir(tmp_path)) == ["o.csv", "o.queries.csv"]


# ---------------------------------------------------------------------------------
# class 3: the files of one run appear together (command line)


def _predict_twice(here, monkeypatch, capsys, fail):
    """predict to o.csv from pool.csv, then again from another pool with ``fail``
    patched in; returns the files' bytes after the first run and after the second."""
    assert main(["predict", "model.npz", "pool.csv", "-o", "o.csv"]) == 0
    first = snapshot(here / "o.csv", here / "o.queries.csv")
    rows = list(csv.reader(open(here / "pool.csv", newline="")))
    with open(here / "pool2.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows[:1] + rows[-60:])
    capsys.readouterr()
    with monkeypatch.context() as mp:
        fail(mp)
        rc = main(["predict", "model.npz", "pool2.csv", "-o", "o.csv"])
    err = capsys.readouterr().err
    return first, snapshot(here / "o.csv", here / "o.queries.csv"), rc, err


def _failing_call(name, exc, nth):
    """Patch os.<name> so that its nth call raises ``exc``."""
    def patch(monkeypatch):
        real = getattr(os, name)
        calls = []

        def wrapper(*args, **kwargs):
            calls.append(args)
            if len(calls) == nth:
                raise exc
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, wrapper)

    return patch


@pytest.mark.parametrize("fail, words", [
    # the disk fills while the second file is written
    (_failing_call("fsync", OSError(28, "No space left on device"), 2), "No space left on device"),
    # the second rename fails
    (_failing_call("replace", PermissionError(13, "Permission denied"), 2), "Permission denied"),
])
def test_predict_writes_both_files_or_neither(here, monkeypatch, capsys, fail, words):
    first, after, rc, err = _predict_twice(here, monkeypatch, capsys, fail)
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert after == first  # no mix of two runs
    assert temporaries(here) == []


def test_predict_removes_the_temporaries_of_a_killed_predict(here, capsys):
    dead = dead_pid()
    stale = [f"{TEMP_PREFIX}{dead}-0badc0de-o.csv", f"{TEMP_PREFIX}{dead}-0badc0de-o.queries.csv"]
    for name in stale:
        (here / name).write_text("half")
    assert main(["predict", "model.npz", "pool.csv", "-o", "o.csv"]) == 0
    assert temporaries(here) == []
    capsys.readouterr()


def test_reproduce_writes_an_experiments_files_together(tmp_path, monkeypatch):
    from fastmlr.experiments import runner

    result = runner.Result("demo", {"": runner.Table(["a"], [{"a": 1}]), "more": runner.Table(["b"], [{"b": 2}])},
                           [])
    runner.write_outputs(result, None, str(tmp_path), figure=False)
    before = snapshot(tmp_path / "demo.csv", tmp_path / "demo_more.csv")

    def broken(path, plot, res):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "write_figure", broken)
    result.tables[""].rows[0]["a"] = 3
    with pytest.raises(OSError, match="No space left"):
        runner.write_outputs(result, None, str(tmp_path), figure=True)
    assert snapshot(tmp_path / "demo.csv", tmp_path / "demo_more.csv") == before
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------------------------
# class 8: a closed pipe


def _closed_stdout(*args):
    r, w = os.pipe()
    os.close(r)
    try:
        return run(*args, stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)


def test_a_closed_pipe_ends_quietly(work, tmp_path):
    p = _closed_stdout("check", str(work / "pool.csv"))
    assert (p.returncode, p.stderr) == (141, "")
    p = _closed_stdout("check", str(work / "pool.csv"), "--json")
    assert (p.returncode, p.stderr) == (141, "")
    # files written before the pipe closed stay
    out = tmp_path / "s.csv"
    p = _closed_stdout("simulate", "--k", "2", "--d", "3", "--tasks", "30", "-o", str(out))
    assert (p.returncode, p.stderr) == (141, "")
    assert len(out.read_text().splitlines()) > 30
    assert os.listdir(tmp_path) == ["s.csv"]


def test_a_closed_pipe_in_process(work, capsys, monkeypatch):
    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys.modules["fastmlr.feasibility"], "format_feasibility", closed)
    assert main(["check", str(work / "pool.csv")]) == 141
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------
# class 9: task ids that look like formulas


def _formula_pool(here):
    rng = np.random.default_rng(3)
    ids = np.repeat(np.array(["=1+1", "+7", "-2", "@SUM(A1)", "\tx", "plain", "a=b"]), 5)
    X = rng.standard_normal((ids.size, 3))
    y = X.sum(axis=1)
    y[4::5] = np.nan  # one query row per task
    write_pool(here / "f.npz", X, y, ids)  # a .csv pool would strip the tab
    return "f.npz"


def _ids(path, col):
    with open(path, newline="", encoding="utf-8") as fh:
        return sorted({row[col] for row in list(csv.reader(fh))[1:]})


def test_csv_escape_formulas(here, capsys):
    src = _formula_pool(here)
    assert main(["predict", "model.npz", src, "-o", "raw.csv"]) == 0
    assert _ids("raw.csv", 0) == sorted(["=1+1", "+7", "-2", "@SUM(A1)", "\tx", "plain", "a=b"])
    assert main(["predict", "model.npz", src, "-o", "safe.csv", "--csv-escape-formulas"]) == 0
    escaped = sorted(["'=1+1", "'+7", "'-2", "'@SUM(A1)", "'\tx", "plain", "a=b"])
    assert _ids("safe.csv", 0) == escaped
    assert _ids("safe.queries.csv", 1) == escaped
    capsys.readouterr()
    refused(capsys, ["predict", "model.npz", src, "-o", "safe.npz", "--csv-escape-formulas"],
            "--csv-escape-formulas goes with a .csv output")
