"""Lemma 5.1: the subspace error depends on the light tasks only through n * t.

For several task sizes t >= 2 and a grid of totals N = n * t, each trial estimates the
subspace from n = N / t fresh tasks (streamed in chunks through the public
:func:`fastmlr.subspace.second_moment`) and records ``max_l ||(I - U U^T) w_l||``.  If only the
total matters, the curves for different t fall onto one curve of N; the *spread* at
each N (largest over smallest mean error across t) measures how close they come.
"""

from __future__ import annotations

import time

import numpy as np

from ..metrics import subspace_error
from ..synthetic import make_mixture
from .runner import Result, Table, format_table, loglog_slope, say
from .sampling import streamed_subspace

__all__ = ["run", "plot", "noise_term_fit", "SETTINGS"]

SETTINGS = {
    "full": dict(k=8, d=64, ts=(2, 4, 8, 16, 32), totals=tuple(1 << j for j in range(14, 22)), trials=4),
    "quick": dict(k=4, d=32, ts=(2, 4, 8, 16), totals=tuple(1 << j for j in range(12, 17)), trials=3),
}


def noise_term_fit(rows, *, below=0.5):
    """Fit ``error^2 * n t = A + B / t`` over the rows with mean error below ``below``.

    The estimate ``b1 b2^T`` of a task has two error terms: signal times noise, whose
    variance over n tasks goes as 1/(n t), and noise times noise, as 1/(n t^2).  Their
    ratio at t is (B/A)/t, so the curves of different t coincide only for t >> B/A.

    Returns
    -------
    (A, B) floats
    """
    sel = [r for r in rows if r["mean_error"] < below]
    t = np.array([r["t"] for r in sel], dtype=np.float64)
    v = np.array([r["mean_error"] ** 2 * r["n_times_t"] for r in sel])
    A, B = np.linalg.lstsq(np.column_stack([np.ones_like(t), 1.0 / t]), v, rcond=None)[0]
    return float(A), float(B)


def run(*, quick=False, trials=None, seed=0, progress=None) -> Result:
    """Measure the subspace error on a grid of (t, n * t).

    Parameters
    ----------
    quick : bool -- k = 4, d = 32 (full: k = 8, d = 64)
    trials : int or None -- trials per grid point (a fresh mixture each)
    seed : int
    progress : callable(str) or None

    Returns
    -------
    Result -- main table: one row per (t, N) with the mean and spread of the error over
    trials; ``numbers``: the spread across t at one N (and, for contrast, at one n),
    and the log-log slope
    of error against N for every t (about -1/2 if the error goes as 1/sqrt(N)).
    """
    st = SETTINGS["quick" if quick else "full"]
    k, d, ts, totals = st["k"], st["d"], st["ts"], st["totals"]
    trials = st["trials"] if trials is None else trials
    t_start = time.perf_counter()
    rows = []
    seeds = np.random.SeedSequence(seed).spawn(trials)
    mixtures = [make_mixture(k, d, kind="orthonormal", s2=1.0, seed=ss.spawn(1)[0]) for ss in seeds]
    for ni, N in enumerate(totals):
        say(progress, f"n*t = {N} ({ni + 1}/{len(totals)})")
        for t in ts:
            errs = []
            for ss, (W, s2, p) in zip(seeds, mixtures):
                U = streamed_subspace(W, s2, p, t, N // t, k, seed=ss.spawn(1)[0])
                errs.append(subspace_error(U, W))
            errs = np.asarray(errs)
            rows.append({"t": t, "n": N // t, "n_times_t": N, "trials": trials,
                         "mean_error": float(errs.mean()), "std_error": float(errs.std(ddof=1)) if trials > 1 else 0.0})
    spread = []
    for N in totals:
        m = [r["mean_error"] for r in rows if r["n_times_t"] == N]
        spread.append({"n_times_t": N, "spread": max(m) / min(m),
                       **{f"t={t}": r["mean_error"] for t, r in zip(ts, [r for r in rows if r["n_times_t"] == N])}})
    # the spread across t beside the change along N: how much N matters, for comparison
    along_N = float(np.mean([r["mean_error"] for r in rows if r["n_times_t"] == totals[0]]) /
                    np.mean([r["mean_error"] for r in rows if r["n_times_t"] == totals[-1]]))
    # the same runs grouped by n instead: if only n mattered these would collapse
    ns = sorted({r["n"] for r in rows})
    by_n = []
    for n in ns:
        m = [r["mean_error"] for r in rows if r["n"] == n]
        if len(m) == len(ts):
            by_n.append(max(m) / min(m))
    numbers = {
        "max_spread_across_t": max(s["spread"] for s in spread),
        "median_spread_at_fixed_n": float(np.median(by_n)) if by_n else float("nan"),
        "median_spread_across_t": float(np.median([s["spread"] for s in spread])),
        "ratio_first_to_last_N": along_N,
        "slope_vs_N": {t: loglog_slope([r["n_times_t"] for r in rows if r["t"] == t],
                                        [r["mean_error"] for r in rows if r["t"] == t]) for t in ts},
        "seconds": time.perf_counter() - t_start,
    }
    A, B = noise_term_fit(rows)
    numbers["noise_term_ratio"] = B / A
    summary = [
        f"subspace (Lemma 5.1): k={k} d={d}, orthonormal W, s=1, {trials} trials; mean subspace error "
        f"max_l ||(I-UU^T)w_l|| by total examples n*t (columns: t)",
        *format_table(["n_times_t"] + [f"t={t}" for t in ts] + ["spread"], spread,
                      {**{f"t={t}": ".4f" for t in ts}, "spread": ".3f"}),
        f"spread across t (largest/smallest error at one n*t): median {numbers['median_spread_across_t']:.3f}, "
        f"max {numbers['max_spread_across_t']:.3f}; at one n instead: median "
        f"{numbers['median_spread_at_fixed_n']:.3f}; along n*t the error falls {along_N:.1f}x "
        f"over a {totals[-1] // totals[0]}x range",
        "log-log slope of error against n*t: "
        + ", ".join(f"t={t}: {v:.2f}" for t, v in numbers["slope_vs_N"].items()),
        f"fit error^2 * n*t = A + B/t: B/A = {B / A:.1f} (k = {k}); the curves of different t "
        f"coincide only for t >> B/A",
    ]
    setting = dict(k=k, d=d, ts=list(ts), totals=list(totals), trials=trials, seed=seed)
    cols = ["t", "n", "n_times_t", "trials", "mean_error", "std_error"]
    return Result("subspace", {"": Table(cols, rows)}, summary, numbers, setting)


def plot(result: Result, fig) -> None:
    """(a) error against n*t, one line per t; (b) error against n, the same data."""
    ax, bx = fig.subplots(1, 2, sharey=True)
    rows = result.tables[""].rows
    for i, t in enumerate(result.setting["ts"]):
        sel = [r for r in rows if r["t"] == t]
        for axis, key in ((ax, "n_times_t"), (bx, "n")):
            axis.errorbar([r[key] for r in sel], [r["mean_error"] for r in sel],
                          yerr=[r["std_error"] for r in sel], marker="o", ms=3, capsize=2,
                          color=f"C{i}", label=f"t={t}")
    for axis, label, title in ((ax, "n*t (total light examples)", "(a) against n*t"),
                               (bx, "n (light tasks)", "(b) the same runs against n")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel(label)
        axis.set_title(title)
    ax.set_ylabel("subspace error max ||(I-UU^T) w||")
    ax.legend(fontsize=8)
    st = result.setting
    fig.suptitle(f"Lemma 5.1: k={st['k']}, d={st['d']}, {st['trials']} trials per point")
