"""How many examples a task needs to be classified: the log k of Section 5.3 and Remark 4.6.

For each k: d = 8k, orthonormal W, s = 1, uniform p.  Tasks are classified to the
component of largest posterior under the **true** parameters, which isolates the sample size a task needs from the
error of a learnt mixture; with uniform p and equal s this is exactly the rule of
Algorithm 4.  Each task is sampled once with the largest t of the grid and classified
from its first t rows for every t, so the accuracy curves are nested: the residuals
``y - X W^T`` are computed once and their running sums of squares give the
log-likelihoods of every prefix (:func:`prefix_log_likelihoods`, the same numbers as
:func:`fastmlr.predict.log_likelihoods` on each prefix, without recomputing the products).  ``t_min(a)`` is
the smallest t at which at least a fraction a of the tasks is classified correctly.
"""

from __future__ import annotations

import time

import numpy as np

from ..likelihood import log_joint
from ..synthetic import make_mixture, sample_tasks
from .runner import Result, Table, format_table, loglog_slope, say

__all__ = ["run", "plot", "prefix", "prefix_log_likelihoods", "SETTINGS", "TARGETS"]

TARGETS = (0.9, 0.99)
T_GRID = tuple(range(1, 49))
_CHUNK_TASKS = 500  # tasks sampled at once: bounds memory at k = 128, d = 1024

SETTINGS = {
    "full": dict(ks=(2, 4, 8, 16, 32, 64, 128), n_tasks=4000, trials=3),
    "quick": dict(ks=(2, 8, 32, 128), n_tasks=2000, trials=1),
}


def prefix(X, y, n, t_max, t):
    """The task set made of the first t rows of each of n tasks of t_max rows."""
    Xp = np.ascontiguousarray(X.reshape(n, t_max, -1)[:, :t].reshape(n * t, -1))
    yp = np.ascontiguousarray(y.reshape(n, t_max)[:, :t].reshape(-1))
    return Xp, yp, np.arange(n + 1, dtype=np.int64) * t


def prefix_log_likelihoods(X, y, n, t_max, W, s2, p):
    """Log-likelihoods of every prefix of every task, as :func:`fastmlr.predict.log_likelihoods`.

    Parameters
    ----------
    X : (n * t_max, d), y : (n * t_max,) -- n tasks of t_max rows each
    W : (k, d), s2 : (k,), p : (k,) -- the mixture

    Returns
    -------
    (t_max, n, k) float64 -- entry [t - 1, i, l] is ``log p_l + log N(y_i | X_i w_l, s2_l)``
    of task i's first t rows (:func:`fastmlr.likelihood.log_joint`)
    """
    R = (y[:, None] - X @ W.T).reshape(n, t_max, -1)  # (n, t_max, k)
    sse = np.cumsum(R**2, axis=1).transpose(1, 0, 2)  # (t_max, n, k)
    return np.stack([log_joint(sse[t - 1], np.full(n, float(t)), s2, p) for t in range(1, t_max + 1)])


def run(*, quick=False, trials=None, seed=0, progress=None) -> Result:
    """Classification accuracy against t for every k, and t_min against k.

    Parameters
    ----------
    quick : bool -- k in {2, 8, 32, 128}, one trial of 2000 tasks (full: k = 2..128, 3 x 4000)
    trials : int or None -- independent repetitions (a fresh mixture and tasks each)
    seed : int
    progress : callable(str) or None

    Returns
    -------
    Result -- main table: accuracy per (k, t); table ``tmin``: t_min(0.9) and
    t_min(0.99) per k; ``numbers``: the slope of t_min against ln k and, for contrast
    with the clustering's k^(1/2), its log-log slope.
    """
    st = SETTINGS["quick" if quick else "full"]
    trials = st["trials"] if trials is None else trials
    ks, n = st["ks"], st["n_tasks"]
    t_max = max(T_GRID)
    t_start = time.perf_counter()
    rows, tmin = [], []
    for ki, (k, ss) in enumerate(zip(ks, np.random.SeedSequence(seed).spawn(len(ks)))):
        say(progress, f"k={k} ({ki + 1}/{len(ks)})")
        d = 8 * k
        acc = np.zeros((trials, len(T_GRID)))
        for tr, ts in enumerate(ss.spawn(trials)):
            s_mix, s_tasks = ts.spawn(2)
            W, s2, p = make_mixture(k, d, kind="orthonormal", s2=1.0, seed=s_mix)
            correct = np.zeros(t_max)
            for lo, cs in zip(range(0, n, _CHUNK_TASKS), s_tasks.spawn(-(-n // _CHUNK_TASKS))):
                m = min(_CHUNK_TASKS, n - lo)
                smp = sample_tasks(W, s2, p, t_max, n_tasks=m, seed=cs)
                ll = prefix_log_likelihoods(smp.X, smp.y, m, t_max, W, s2, p)
                correct += np.sum(np.argmax(ll, axis=2) == smp.z, axis=1)
            acc[tr] = (correct / n)[np.asarray(T_GRID) - 1]
        mean = acc.mean(axis=0)
        for j, t in enumerate(T_GRID):
            rows.append({"k": k, "d": d, "t": t, "tasks": n * trials, "accuracy": float(mean[j])})
        row = {"k": k, "d": d}
        for a in TARGETS:
            hit = np.flatnonzero(mean >= a)
            row[f"t_min_{a}"] = int(T_GRID[hit[0]]) if hit.size else None
        tmin.append(row)
    numbers = {"seconds": time.perf_counter() - t_start, "per_ln_k": {}, "loglog_slope": {}}
    for a in TARGETS:
        kk = np.array([r["k"] for r in tmin if r[f"t_min_{a}"]], dtype=float)
        tt = np.array([r[f"t_min_{a}"] for r in tmin if r[f"t_min_{a}"]], dtype=float)
        numbers["per_ln_k"][a] = float(np.polyfit(np.log(kk), tt, 1)[0]) if kk.size > 1 else float("nan")
        numbers["loglog_slope"][a] = loglog_slope(kk, tt)
    summary = [
        f"classification (Section 5.3, Remark 4.6): d=8k, orthonormal W, s=1, true parameters, "
        f"{trials} x {n} tasks per k; t_min(a) = smallest t with accuracy >= a",
        *format_table(["k", "d"] + [f"t_min_{a}" for a in TARGETS], tmin),
        *(f"t_min({a}) grows by {numbers['per_ln_k'][a]:.2f} examples per unit of ln k "
          f"(log-log slope {numbers['loglog_slope'][a]:.2f})" for a in TARGETS),
    ]
    setting = dict(ks=list(ks), n_tasks=n, trials=trials, seed=seed, t_grid=[1, t_max])
    tables = {"": Table(["k", "d", "t", "tasks", "accuracy"], rows),
              "tmin": Table(["k", "d"] + [f"t_min_{a}" for a in TARGETS], tmin)}
    return Result("classification", tables, summary, numbers, setting)


def plot(result: Result, fig) -> None:
    """(a) accuracy against t, one line per k; (b) t_min against k on a log axis."""
    ax, bx = fig.subplots(1, 2)
    rows = result.tables[""].rows
    ks = result.setting["ks"]
    for i, k in enumerate(ks):
        sel = [r for r in rows if r["k"] == k]
        ax.plot([r["t"] for r in sel], [1 - r["accuracy"] for r in sel], "-", color=f"C{i}", label=f"k={k}")
    for a in TARGETS:
        ax.axhline(1 - a, color="gray", lw=0.7, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("t (examples of the task)")
    ax.set_ylabel("misclassified fraction")
    ax.set_title("(a) error against t")
    ax.legend(fontsize=8)
    tmin = result.tables["tmin"].rows
    for a, marker in zip(TARGETS, ("o", "s")):
        sel = [r for r in tmin if r[f"t_min_{a}"]]
        kk = np.array([r["k"] for r in sel], dtype=float)
        tt = np.array([r[f"t_min_{a}"] for r in sel], dtype=float)
        bx.plot(kk, tt, marker, label=f"t_min({a}); {result.numbers['per_ln_k'][a]:.1f} per ln k")
        if kk.size > 1:
            b, c = np.polyfit(np.log(kk), tt, 1)
            bx.plot(kk, b * np.log(kk) + c, "-", lw=0.8, color=bx.lines[-1].get_color())
    bx.set_xscale("log", base=2)
    bx.set_xlabel("k")
    bx.set_ylabel("t_min")
    bx.set_title("(b) t_min against k: a line in log k")
    bx.legend(fontsize=8)
    fig.suptitle("Classification with the true parameters: d=8k, orthonormal W, s=1")
