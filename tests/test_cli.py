"""The command line: the demo's JSON, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys

import pytest

from fastmlr.cli import main


def run(*args):
    # cwd outside the source tree, so that `-m fastmlr` runs the installed package
    return subprocess.run([sys.executable, "-m", "fastmlr", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))


def test_demo_json_small(capsys):
    assert main(["demo", "--k", "4", "--d", "16", "--scale", "0.05", "--json", "--seed", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["setting"]["k"] == 4 and res["setting"]["light"]["tasks"] == 26214
    assert res["stages"]["cluster"]["clustering_accuracy"] >= 0.95
    assert [r["tau"] for r in res["prediction"]] == [2, 4, 8, 16, 32]
    for r in res["prediction"][:2]:  # small tau: the posterior mean clearly wins
        assert r["true_bayes"] < r["true_map"] and r["bayes"] < r["map"]
    assert set(res["checks"]) >= {"clustering_accuracy>=0.99", "bayes<=map(all tau)"}
    assert res["checks_calibrated"] is False  # k = 4, d = 16 at 5% of the tasks: not the paper's setting


def test_demo_table_is_deterministic(capsys):
    args = ["demo", "--k", "3", "--d", "12", "--scale", "0.02", "--seed", "1", "--backend", "numpy"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    second = capsys.readouterr().out
    strip = lambda s: [line for line in s.splitlines() if "seconds" not in line and not line[:12].strip() in
                       ("sampling", "subspace", "cluster", "classify", "prediction")]
    assert strip(first) == strip(second)
    assert "prediction MSE on 1000 new tasks" in first
    # checks calibrated for the paper's setting are shown for information here, never as FAIL
    assert "FAIL" not in first and "at this setting, for information:" in first


def test_demo_marks_checks_ok_or_fail_at_the_paper_setting():
    from fastmlr.demo import format_demo, run_demo

    res = run_demo(k=3, d=12, scale=0.02, seed=1)
    res["checks_calibrated"] = True  # as at k = 32, d = 256, scale 1
    res["checks"] = {"a": True, "b": False}
    text = format_demo(res)
    assert "  [ok] a" in text and "  [FAIL] b" in text and "for information" not in text


def test_backend_option_holds_for_the_command_only(capsys):
    """``main`` called from Python: ``--backend`` does not change the caller's backend."""
    from fastmlr.backend import get_backend

    before = get_backend()
    other = "numpy" if before != "numpy" else "cython"
    main(["demo", "--k", "2", "--d", "6", "--scale", "0.01", "--seed", "1", "--backend", other, "--json"])
    assert json.loads(capsys.readouterr().out)["setting"]["backend"] == other
    assert get_backend() == before


@pytest.mark.parametrize(
    "args, words",
    [
        (["demo", "--k", "0"], "argument --k: expected a positive integer, got 0"),
        (["demo", "--seed", "-1"], "argument --seed: expected a non-negative integer, got -1"),
        (["demo", "--k", "40", "--d", "8"], "orthonormal components need k <= d"),
        (["demo", "--scale", "-1"], "expected a positive number"),
        (["demo", "--backend", "fortran"], "invalid choice"),
        (["nosuch"], "invalid choice"),
    ],
)
def test_bad_arguments_one_line_status_2(args, words):
    p = run(*args)
    assert p.returncode == 2
    assert words in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
