"""The paper's Figure 2: training and prediction error of the MAP and Bayes estimators against tau.

Setting: k = 32, d = 256, orthonormal W, s = 1, uniform p (``--quick``: k = 8, d = 64).
The mixture is meta-learnt with Algorithm 1 (the subspace from light tasks streamed in
chunks, then :func:`fastmlr.cluster_tasks` and :func:`fastmlr.classify_tasks`); new
tasks are then predicted from their first tau examples.  *Training error* is the mean
squared residual on those tau examples, *prediction error* on 100 fresh examples of
the same task.  Beside them: the same two estimators with the true parameters (the
oracle) and the noise floor ``sum_l p_l s_l^2``.
"""

from __future__ import annotations

import time

import numpy as np

from ..classify import classify_tasks
from ..cluster import cluster_tasks
from ..metrics import clustering_accuracy, parameter_error, subspace_error
from ..predict import predict_params
from ..synthetic import make_mixture, sample_tasks
from .runner import Result, Table, format_table, say
from .sampling import streamed_subspace

__all__ = ["run", "plot", "SETTINGS"]

TAUS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
_TEST_ROWS = 100

#: (k, d, light tasks x rows, heavy tasks x rows, light2 tasks x rows, new tasks)
SETTINGS = {
    "full": dict(k=32, d=256, light=(1 << 19, 4), heavy=(256, 256), light2=(1 << 13, 32), new=2000),
    "quick": dict(k=8, d=64, light=(1 << 15, 4), heavy=(128, 64), light2=(1 << 11, 16), new=1000),
}


def _errors(new, tau, W, s2, p, method):
    """Mean squared error on the tau training rows and on the test rows of every new task."""
    n = new.offsets.size - 1
    per = int(new.offsets[1] - new.offsets[0])
    Xt = new.X.reshape(n, per, -1)
    yt = new.y.reshape(n, per)
    off = np.arange(n + 1, dtype=np.int64) * tau
    Xtr = np.ascontiguousarray(Xt[:, :tau].reshape(n * tau, -1))
    ytr = np.ascontiguousarray(yt[:, :tau].reshape(-1))
    B = predict_params((Xtr, ytr, off), W, s2, p, method=method)
    train = np.einsum("itd,id->it", Xt[:, :tau], B) - yt[:, :tau]
    test = np.einsum("itd,id->it", Xt[:, per - _TEST_ROWS:], B) - yt[:, per - _TEST_ROWS:]
    return float(np.mean(train**2)), float(np.mean(test**2))


def run(*, quick=False, trials=None, seed=0, progress=None) -> Result:
    """Meta-learn the Figure 2 mixture and measure both estimators for every tau.

    Parameters
    ----------
    quick : bool -- the small setting (k = 8, d = 64)
    trials : int or None -- independent repetitions, averaged (default 1)
    seed : int
    progress : callable(str) or None

    Returns
    -------
    Result -- main table: one row per (trial, tau); ``numbers`` holds the means over
    trials and the Bayes <= MAP check at small tau.
    """
    st = SETTINGS["quick" if quick else "full"]
    trials = 1 if trials is None else trials
    k, d = st["k"], st["d"]
    rows, diag = [], []
    t_start = time.perf_counter()
    for trial, ss in enumerate(np.random.SeedSequence(seed).spawn(trials)):
        s_mix, s_l1, s_h, s_l2, s_new = ss.spawn(5)
        W, s2, p = make_mixture(k, d, kind="orthonormal", s2=1.0, seed=s_mix)
        tag = f"trial {trial + 1}/{trials}: "
        say(progress, tag + f"subspace from {st['light'][0]} tasks of {st['light'][1]}")
        U = streamed_subspace(W, s2, p, st["light"][1], st["light"][0], k, seed=s_l1)
        say(progress, tag + "clustering")
        heavy = sample_tasks(W, s2, p, st["heavy"][1], n_tasks=st["heavy"][0], seed=s_h)
        c = cluster_tasks((heavy.X, heavy.y, heavy.offsets), U, k)
        acc_h = clustering_accuracy(c.labels, heavy.z)
        del heavy
        say(progress, tag + "classification")
        light2 = sample_tasks(W, s2, p, st["light2"][1], n_tasks=st["light2"][0], seed=s_l2)
        r = classify_tasks((light2.X, light2.y, light2.offsets), c.W, c.s2)
        diag.append({
            "subspace_error": subspace_error(U, W), "clustering_accuracy": acc_h,
            "classification_accuracy": clustering_accuracy(r.labels, light2.z),
            "parameter_error_max": parameter_error(r.W, W).max,
        })
        del light2
        say(progress, tag + "prediction")
        new = sample_tasks(W, s2, p, max(TAUS) + _TEST_ROWS, n_tasks=st["new"], seed=s_new)
        floor = float(p @ s2)
        for tau in TAUS:
            row = {"trial": trial, "tau": tau, "noise_floor": floor}
            for prefix, (Wm, s2m, pm) in {"": (r.W, r.s2, r.p), "oracle_": (W, s2, p)}.items():
                for method in ("map", "bayes"):
                    tr, te = _errors(new, tau, Wm, s2m, pm, method)
                    row[f"{prefix}{method}_train"] = tr
                    row[f"{prefix}{method}_test"] = te
            rows.append(row)
    seconds = time.perf_counter() - t_start
    cols = ["trial", "tau", "map_train", "bayes_train", "map_test", "bayes_test",
            "oracle_map_train", "oracle_bayes_train", "oracle_map_test", "oracle_bayes_test", "noise_floor"]
    mean = _mean_over_trials(rows, cols)
    small = [m for m in mean if m["tau"] <= 4]
    numbers = {
        "bayes_le_map_test_small_tau": all(m["bayes_test"] <= m["map_test"] for m in small),
        "bayes_le_map_train_small_tau": all(m["bayes_train"] <= m["map_train"] for m in small),
        "test_at_tau": {m["tau"]: {"map": m["map_test"], "bayes": m["bayes_test"],
                                   "oracle_map": m["oracle_map_test"], "oracle_bayes": m["oracle_bayes_test"]}
                        for m in mean},
        "subspace_error": float(np.mean([g["subspace_error"] for g in diag])),
        "clustering_accuracy": float(np.mean([g["clustering_accuracy"] for g in diag])),
        "classification_accuracy": float(np.mean([g["classification_accuracy"] for g in diag])),
        "parameter_error_max": float(np.mean([g["parameter_error_max"] for g in diag])),
        "seconds": seconds,
    }
    summary = [
        f"prediction (Figure 2): k={k} d={d}, {trials} trial(s), {st['new']} new tasks; "
        f"subspace error {numbers['subspace_error']:.3f}, clustering accuracy "
        f"{numbers['clustering_accuracy']:.3f}, classification accuracy "
        f"{numbers['classification_accuracy']:.3f}, max ||w^-w|| {numbers['parameter_error_max']:.3f}",
        *format_table(["tau", "map_train", "bayes_train", "map_test", "bayes_test", "oracle_map_test",
                       "oracle_bayes_test", "noise_floor"], mean, {c: ".3f" for c in cols}),
        f"Bayes <= MAP for tau <= 4: test {numbers['bayes_le_map_test_small_tau']}, "
        f"training {numbers['bayes_le_map_train_small_tau']}",
    ]
    setting = dict(st, trials=trials, seed=seed, taus=list(TAUS), test_rows=_TEST_ROWS)
    return Result("prediction", {"": Table(cols, rows)}, summary, numbers, setting)


def _mean_over_trials(rows, cols):
    out = []
    for tau in TAUS:
        sel = [r for r in rows if r["tau"] == tau]
        out.append({c: (tau if c == "tau" else float(np.mean([r[c] for r in sel]))) for c in cols if c != "trial"})
    return out


def plot(result: Result, fig) -> None:
    """Two panels, like the paper's Figure 2: (a) training error, (b) prediction error."""
    cols = result.tables[""].columns
    mean = _mean_over_trials(result.tables[""].rows, cols)
    tau = [m["tau"] for m in mean]
    axes = fig.subplots(1, 2, sharey=True)
    for ax, part, title in zip(axes, ("train", "test"), ("(a) training error", "(b) prediction error")):
        ax.plot(tau, [m[f"map_{part}"] for m in mean], "o-", color="C0", label="MAP")
        ax.plot(tau, [m[f"bayes_{part}"] for m in mean], "s-", color="C1", label="Bayes")
        ax.plot(tau, [m[f"oracle_map_{part}"] for m in mean], "o:", color="C0", alpha=0.6, label="MAP, true parameters")
        ax.plot(tau, [m[f"oracle_bayes_{part}"] for m in mean], "s:", color="C1", alpha=0.6, label="Bayes, true parameters")
        ax.axhline(mean[0]["noise_floor"], color="k", lw=0.8, ls="--", label="noise floor")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tau (examples of the new task)")
        ax.set_title(title)
    axes[0].set_ylabel("mean squared error")
    axes[1].legend(fontsize=8)
    st = result.setting
    fig.suptitle(f"Figure 2: k={st['k']}, d={st['d']}, orthonormal W, s=1, uniform p")
