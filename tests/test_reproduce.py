"""``fastmlr reproduce``: every quick experiment runs and shows the paper's trend.

The checks are on trends with wide margins (fixed seeds), never on exact numbers.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlr
from fastmlr.cli import main
from fastmlr.experiments import (EXPERIMENTS, classification, clustering, prediction, run_experiment, runner, sine,
                                 subspace)
from fastmlr.experiments.runner import PLOT_HINT, Table, write_csv
from fastmlr.experiments.sampling import perturbed_subspace


def test_prediction_bayes_beats_map_at_small_tau():
    res = prediction.run(quick=True, seed=1)
    m = res.numbers["test_at_tau"]
    for tau in (1, 2, 3, 4):  # the posterior mean wins clearly when the task is ambiguous
        assert m[tau]["bayes"] < 0.95 * m[tau]["map"]
        assert m[tau]["oracle_bayes"] < 0.95 * m[tau]["oracle_map"]
    assert res.numbers["bayes_le_map_test_small_tau"]
    floor = res.tables[""].rows[0]["noise_floor"]
    assert m[32]["bayes"] < 1.1 * floor  # enough examples: down to the noise floor
    assert m[1]["bayes"] > 1.4 * floor
    for tau in (8, 16, 32):  # the learnt mixture predicts as well as the true one
        assert m[tau]["bayes"] < 1.05 * m[tau]["oracle_bayes"]
    tests = [m[t]["bayes"] for t in prediction.TAUS]
    assert all(a > b for a, b in zip(tests, tests[1:]))


def test_clustering_tmin_grows_with_k_like_a_power_below_one():
    res = clustering.run(ks=(4, 16), trials=3, seed=0)
    rows = {(r["linkage"], r["k"]): r for r in res.tables["tmin"].rows}
    for lk in clustering.LINKAGES:
        for q in ("0.5", "0.9"):
            small, large = rows[(lk, 4)][f"t_min_{q}"], rows[(lk, 16)][f"t_min_{q}"]
            assert small is not None and large is not None
            assert large > small
            assert large < 4 * small  # far slower than linear in k
        assert rows[(lk, 4)]["t_min_0.5"] <= rows[(lk, 4)]["t_min_0.9"]
    assert 0.1 < res.numbers["slopes"]["average"]["0.5"] < 0.9
    # single linkage (the paper's) needs more examples than average linkage (the default)
    assert rows[("single", 16)]["t_min_0.9"] >= rows[("average", 16)]["t_min_0.9"]
    assert {r["n_H"] for r in res.tables["tmin"].rows} == {256}


def test_perturbed_subspace_has_the_asked_error():
    W, _, _ = fastmlr.make_mixture(5, 40, seed=3)
    U = perturbed_subspace(W, 0.1, seed=4)
    assert np.allclose(U.T @ U, np.eye(5), atol=1e-12)
    assert abs(fastmlr.subspace_error(U, W) - 0.1) < 1e-12
    with pytest.raises(ValueError, match="d >= 2k"):
        perturbed_subspace(*fastmlr.make_mixture(5, 8, seed=0)[:1], 0.1, seed=0)


def test_subspace_error_is_a_function_of_n_times_t():
    res = subspace.run(quick=True, seed=0)
    nb = res.numbers
    for t, slope in nb["slope_vs_N"].items():  # every t: error ~ (n t)^(-1/2)
        assert -0.65 < slope < -0.35, (t, slope)
    # at equal n*t the curves for different t stay within a small factor, while at
    # equal n they are far apart
    assert nb["median_spread_across_t"] < 0.5 * nb["median_spread_at_fixed_n"]
    assert nb["ratio_first_to_last_N"] > 3  # 16x more examples: about 4x less error


def test_classification_needs_log_k_examples():
    res = classification.run(quick=True, seed=0)
    tmin = {r["k"]: r for r in res.tables["tmin"].rows}
    for a in classification.TARGETS:
        seq = [tmin[k][f"t_min_{a}"] for k in sorted(tmin)]
        assert all(v is not None for v in seq)
        assert all(x < y for x, y in zip(seq, seq[1:]))  # grows with k ...
        assert tmin[128][f"t_min_{a}"] < 2.5 * tmin[8][f"t_min_{a}"]  # ... far slower than sqrt(k): 4x
        assert 1.5 < res.numbers["per_ln_k"][a] < 8


def test_prefix_log_likelihoods_match_the_public_function():
    W, s2, p = fastmlr.make_mixture(4, 32, seed=0)
    smp = fastmlr.sample_tasks(W, s2, p, 10, n_tasks=50, seed=1)
    ll = classification.prefix_log_likelihoods(smp.X, smp.y, 50, 10, W, s2, p)
    for t in (1, 5, 10):
        ref = fastmlr.predict.log_likelihoods(classification.prefix(smp.X, smp.y, 50, 10, t), W, s2, p)
        np.testing.assert_allclose(ll[t - 1], ref, rtol=1e-12, atol=1e-9)


def test_sine_meta_learning_beats_per_task_ridge():
    res = sine.run(quick=True, trials=1, seed=0)
    at4 = res.numbers["tau4"]
    assert at4["bayes_white"] < 0.7 * at4["ridge_best"]
    assert at4["bayes_fit"] < 0.7 * at4["ridge_best"]
    assert at4["bayes_white"] < 1.1 * at4["bayes_true"]  # near the Bayes error of the true mixture
    assert at4["bayes_white"] < at4["map_white"]
    assert at4["oracle"] < at4["bayes_true"]
    rows = [r for r in res.tables[""].rows if r["trial"] == 0]
    errs = [r["bayes_white"] for r in rows]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_cli_writes_csv_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "prediction", "--quick", "--out", str(out), "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "bayes_test" in text and "wrote" in text
    with open(out / "prediction.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["tau"]) for r in rows] == list(prediction.TAUS) and float(rows[0]["noise_floor"]) == 1.0
    pytest.importorskip("matplotlib")
    with open(out / "prediction.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_without_matplotlib_the_csv_is_still_written(tmp_path, monkeypatch):
    def missing():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(runner, "_matplotlib", missing)
    res, lines = run_experiment("prediction", str(tmp_path), quick=True)
    assert (tmp_path / "prediction.csv").exists() and not (tmp_path / "prediction.png").exists()
    assert PLOT_HINT in lines and 'pip install "fastmlr[plot]"' in PLOT_HINT


def test_csv_write_replaces_atomically(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(str(path), Table(["a", "b"], [{"a": 1, "b": 0.5}]))
    write_csv(str(path), Table(["a", "b"], [{"a": 2, "b": float("nan")}]))
    assert path.read_text().splitlines() == ["a,b", "2,"]
    assert os.listdir(tmp_path) == ["t.csv"]


def test_experiment_names_and_bad_arguments(tmp_path):
    assert set(EXPERIMENTS) == {"prediction", "clustering", "subspace", "classification", "sine"}
    with pytest.raises(ValueError, match="experiment is 'nope'"):
        run_experiment("nope", str(tmp_path))
    with pytest.raises(ValueError, match="trials is 0"):
        run_experiment("sine", str(tmp_path), trials=0)


@pytest.mark.parametrize(
    "args, words",
    [
        (["reproduce", "nosuch", "--out", "x"], "invalid choice"),
        (["reproduce", "sine", "--out", "x", "--trials", "0"], "expected a positive integer"),
        (["reproduce", "sine", "--out", "x", "--seed", "-3"], "expected a non-negative integer"),
        (["reproduce", "sine"], "required: --out"),
        (["reproduce", "sine", "--quick", "--out", "FILE"], "which is a file"),
    ],
)
def test_bad_input_one_line_status_2(args, words, tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    args = [str(f) if a == "FILE" else a for a in args]
    p = subprocess.run([sys.executable, "-m", "fastmlr", *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    assert words in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
