"""The paper's Figure 3 and Table 3: how many examples per heavy task clustering needs.

For each k: d = 8k, orthonormal W, s = 1, uniform p, ``n_H = max(k^1.5, 256)`` heavy
tasks, and a subspace U of error exactly 0.1 **constructed** by tilting the true span
(:func:`~fastmlr.experiments.sampling.perturbed_subspace`), the paper's "estimated
subspace with estimation error ~0.1".  For an increasing grid of t_H, each trial
samples fresh heavy tasks and clusters them with :func:`fastmlr.cluster_tasks` under
both linkages (the same tasks for both).  ``t_min(1 - delta)`` is the smallest t_H on
the grid at which the clustering accuracy is above 99% in at least 1 - delta of the
trials; the grid is scanned upwards, each linkage until it reaches 90%.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..cluster import cluster_tasks
from ..metrics import clustering_accuracy
from ..synthetic import make_mixture, sample_tasks
from .runner import Result, Table, format_table, loglog_slope, say
from .sampling import perturbed_subspace

__all__ = ["run", "plot", "T_GRID", "LINKAGES"]

LINKAGES = ("average", "single")
#: t_H grid: 2^(j/4) rounded, from 4 to 1024 (about 19% apart)
T_GRID = tuple(sorted({int(round(2 ** (j / 4))) for j in range(8, 41)}))
SUBSPACE_ERROR = 0.1
ACCURACY = 0.99

SETTINGS = {
    "full": dict(ks=(4, 8, 16, 32, 64), trials=10),
    "quick": dict(ks=(4, 8, 16), trials=3),
}


def n_heavy(k: int) -> int:
    """The paper's n_H = max(k^1.5, 256)."""
    return max(int(math.ceil(k**1.5)), 256)


def run(*, quick=False, trials=None, seed=0, progress=None, ks=None) -> Result:
    """Measure t_min(0.5) and t_min(0.9) for every k and both linkages.

    Parameters
    ----------
    quick : bool -- k in {4, 8, 16} with 3 trials (full: {4, 8, 16, 32, 64}, 10 trials)
    trials : int or None -- trials per (k, t_H)
    seed : int
    progress : callable(str) or None
    ks : sequence of int, optional -- override the list of k (used by the tests)

    Returns
    -------
    Result -- main table: one row per (linkage, k, t_H) with the fraction of trials
    above 99% accuracy; table ``tmin``: Table 3; ``numbers``: the log-log slopes.
    """
    st = SETTINGS["quick" if quick else "full"]
    ks = tuple(ks) if ks is not None else st["ks"]
    trials = st["trials"] if trials is None else trials
    t_start = time.perf_counter()
    rows = []
    tmin = []
    for ki, (k, ss) in enumerate(zip(ks, np.random.SeedSequence(seed).spawn(len(ks)))):
        d, nH = 8 * k, n_heavy(k)
        trial_seeds = ss.spawn(trials)
        # one mixture and one U per trial, reused across t_H: each t_H gets fresh tasks
        setups = []
        for ts in trial_seeds:
            s_mix, s_u, s_tasks = ts.spawn(3)
            W, s2, p = make_mixture(k, d, kind="orthonormal", s2=1.0, seed=s_mix)
            setups.append((W, s2, p, perturbed_subspace(W, SUBSPACE_ERROR, seed=s_u), s_tasks))
        found = {lk: {} for lk in LINKAGES}
        for ti, t in enumerate(T_GRID):
            say(progress, f"k={k} ({ki + 1}/{len(ks)}), t_H={t}")
            todo = [lk for lk in LINKAGES if 0.9 not in found[lk]]
            acc = {lk: [] for lk in todo}
            for W, s2, p, U, s_tasks in setups:
                heavy = sample_tasks(W, s2, p, t, n_tasks=nH, seed=s_tasks.spawn(1)[0])
                for lk in todo:
                    c = cluster_tasks((heavy.X, heavy.y, heavy.offsets), U, k, linkage=lk)
                    acc[lk].append(clustering_accuracy(c.labels, heavy.z))
            for lk in todo:
                a = np.asarray(acc[lk])
                frac = float(np.mean(a > ACCURACY))
                rows.append({"linkage": lk, "k": k, "d": d, "n_H": nH, "t_H": t, "trials": trials,
                             "success_fraction": frac, "mean_accuracy": float(a.mean()),
                             "min_accuracy": float(a.min())})
                for q in (0.5, 0.9):
                    if frac >= q and q not in found[lk]:
                        found[lk][q] = t
            if all(0.9 in found[lk] for lk in LINKAGES):
                break
        else:
            say(progress, f"k={k}: the t_H grid ended before every linkage reached 90%")
        for lk in LINKAGES:
            tmin.append({"linkage": lk, "k": k, "d": d, "n_H": nH,
                         "t_min_0.5": found[lk].get(0.5), "t_min_0.9": found[lk].get(0.9)})
    numbers = {"seconds": time.perf_counter() - t_start, "slopes": {}}
    for lk in LINKAGES:
        sel = [r for r in tmin if r["linkage"] == lk]
        kk = [r["k"] for r in sel]
        numbers["slopes"][lk] = {
            q: loglog_slope(kk, [r[f"t_min_{q}"] or np.nan for r in sel]) for q in ("0.5", "0.9")
        }
    summary = [
        f"clustering (Figure 3, Table 3): d=8k, n_H=max(k^1.5,256), subspace error {SUBSPACE_ERROR} "
        f"(constructed), {trials} trials; t_min(q) = smallest t_H with accuracy > 99% in >= q of trials",
        *format_table(["linkage", "k", "d", "n_H", "t_min_0.5", "t_min_0.9"], tmin),
        *(f"{lk:>7} linkage: log-log slope of t_min against k: {numbers['slopes'][lk]['0.5']:.2f} (0.5), "
          f"{numbers['slopes'][lk]['0.9']:.2f} (0.9); the paper: 1/2" for lk in LINKAGES),
    ]
    cols = ["linkage", "k", "d", "n_H", "t_H", "trials", "success_fraction", "mean_accuracy", "min_accuracy"]
    setting = dict(ks=list(ks), trials=trials, seed=seed, subspace_error=SUBSPACE_ERROR,
                   accuracy_threshold=ACCURACY, t_grid=list(T_GRID))
    tables = {"": Table(cols, rows), "tmin": Table(["linkage", "k", "d", "n_H", "t_min_0.5", "t_min_0.9"], tmin)}
    return Result("clustering", tables, summary, numbers, setting)


def plot(result: Result, fig) -> None:
    """(a) t_min against k on log-log axes with a k^(1/2) guide; (b) success fraction against t_H."""
    ax, bx = fig.subplots(1, 2)
    tmin = result.tables["tmin"].rows
    ks = sorted({r["k"] for r in tmin})
    for lk, color in zip(LINKAGES, ("C0", "C3")):
        sel = [r for r in tmin if r["linkage"] == lk]
        for q, marker, ls in (("0.5", "o", "-"), ("0.9", "s", "--")):
            y = [r[f"t_min_{q}"] for r in sel]
            slope = result.numbers["slopes"][lk][q]
            ax.plot([r["k"] for r in sel], [np.nan if v is None else v for v in y], marker=marker, ls=ls,
                    color=color, label=f"{lk}, t_min({q}), slope {slope:.2f}")
    ref = [r for r in tmin if r["linkage"] == "average" and r["t_min_0.5"]]
    if ref:
        k0, t0 = ref[0]["k"], ref[0]["t_min_0.5"]
        ax.plot(ks, [t0 * (k / k0) ** 0.5 for k in ks], color="gray", lw=0.8, ls=":", label="k^(1/2) (the paper)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("t_min (examples per heavy task)")
    ax.set_title("(a) t_min against k")
    ax.legend(fontsize=7)
    rows = [r for r in result.tables[""].rows if r["linkage"] == "average"]
    for i, k in enumerate(ks):
        sel = [r for r in rows if r["k"] == k]
        bx.plot([r["t_H"] for r in sel], [r["success_fraction"] for r in sel], "o-", ms=3,
                color=f"C{i}", label=f"k={k}")
    bx.set_xscale("log", base=2)
    bx.set_xlabel("t_H")
    bx.set_ylabel("fraction of trials with accuracy > 99%")
    bx.set_title("(b) average linkage: success against t_H")
    bx.legend(fontsize=8)
    fig.suptitle(f"Figure 3: d=8k, n_H=max(k^1.5, 256), subspace error {result.setting['subspace_error']}, "
                 f"{result.setting['trials']} trials")
