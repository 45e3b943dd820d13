"""The few-shot sinusoid benchmark, as a mixture of k = 8 linear regressions.

Each trial draws k = 8 sine waves ``f_l(x) = sin(2 pi omega_l x + phi_l)`` with omega_l
uniform on [1, 2] and phi_l uniform on [0, 2 pi).  A task picks one wave; its examples
have x uniform on [-1, 1], features the Chebyshev polynomials T_0..T_15 of x (d = 16)
and ``y = f_l(x) + 0.5 eps``.  Degree 15 represents the waves up to a small
truncation error, which acts as a little extra noise.

The features are neither Gaussian nor isotropic (E[T_i T_j] is not the identity), while
Algorithm 1's moment and clustering steps assume E[x x^T] = I.  The experiment
therefore **whitens**: ``S`` = the second moment of the pooled meta-training features,
every feature vector is multiplied by ``S^(-1/2)``, and Algorithm 1 runs on the result
(the same transform is applied to new tasks).  For comparison it also runs on the raw
features.  Meta-training uses small tasks only: light tasks of 4 examples for the
subspace, 256 tasks of 64 for the clustering and tasks of 16 for the classification.
Beside Algorithm 1, :func:`fastmlr.fit` is run on the same tasks pooled (it whitens
for its spectral start by itself, then runs EM on every task).

New tasks are predicted from tau examples (tau = 4 is the headline) and scored on 100
fresh examples.  The baseline is per-task ridge regression on the same tau examples
(every coefficient penalized; with tau < 16 plain least squares is underdetermined),
with the penalty chosen *in hindsight* from a grid as the one with the smallest test
error, which flatters it.  Two references: the Bayes estimator under the *true* mixture
(each wave's least-squares coefficients on the features, its variance 0.25 plus the
truncation error), and the oracle that predicts with the task's true wave.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from numpy.polynomial import chebyshev

from ..classify import FallbackWarning, classify_tasks
from ..fit import fit
from ..cluster import cluster_tasks
from ..metrics import clustering_accuracy
from ..predict import predict_params
from ..subspace import estimate_subspace
from ..tasks import pack_tasks
from .runner import Result, Table, format_table, say

__all__ = ["run", "plot", "features", "SETTINGS", "TAUS"]

K, DEGREE, NOISE = 8, 15, 0.5
TAUS = (2, 4, 8, 16, 32)
RIDGE = (1e-6, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
_TEST = 100

SETTINGS = {
    "full": dict(light=(50000, 4), heavy=(256, 64), light2=(4000, 16), new=2000, trials=10),
    "quick": dict(light=(20000, 4), heavy=(256, 64), light2=(2000, 16), new=500, trials=2),
}


def features(x):
    """Chebyshev features T_0(x)..T_15(x): (..., ) -> (..., 16)."""
    return chebyshev.chebvander(x, DEGREE)


def _tasks(rng, omega, phi, n, t):
    """n tasks of t examples: features (n, t, d), responses (n, t), x (n, t), component (n,)."""
    z = rng.integers(0, K, size=n)
    x = rng.uniform(-1.0, 1.0, size=(n, t))
    f = np.sin(2 * np.pi * omega[z, None] * x + phi[z, None])
    return features(x), f + NOISE * rng.standard_normal((n, t)), x, z


def _flat(F, y):
    n, t, d = F.shape
    return np.ascontiguousarray(F.reshape(n * t, d)), np.ascontiguousarray(y.reshape(-1)), np.arange(n + 1) * t


def _meta_learn(sets, T):
    """Algorithm 1 on feature sets transformed by T (d, d).

    Returns the classification result, the two accuracies and the number of
    components that kept their clustering estimate (a class with <= d rows).
    """
    (F1, y1, _, _), (FH, yH, _, zH), (F2, y2, _, z2) = sets
    U = estimate_subspace(_flat(F1 @ T, y1), K)
    c = cluster_tasks(_flat(FH @ T, yH), U, K)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        r = classify_tasks(_flat(F2 @ T, y2), c.W, c.s2)
    r_rows = np.bincount(r.labels, minlength=K) * F2.shape[1]
    kept = int(np.sum(r_rows <= F2.shape[2])) if caught else 0
    return r, clustering_accuracy(c.labels, zH), clustering_accuracy(r.labels, z2), kept


def true_mixture(omega, phi, rng, n_points=200_000):
    """The waves' least-squares coefficients W (k, d) and variances s2 (k,) under uniform x."""
    x = rng.uniform(-1.0, 1.0, n_points)
    F = features(x)
    f = np.sin(2 * np.pi * omega[:, None] * x + phi[:, None])  # (k, n_points)
    W = np.linalg.lstsq(F, f.T, rcond=None)[0].T
    trunc = np.mean((W @ F.T - f) ** 2, axis=1)
    return W, NOISE**2 + trunc


def _ridge(F, y, lam):
    """Per-task ridge in the dual form: (n, tau, d), (n, tau) -> (n, d)."""
    G = F @ F.transpose(0, 2, 1) + lam * np.eye(F.shape[1])
    return np.einsum("itd,it->id", F, np.linalg.solve(G, y[..., None])[..., 0])


def _mse(F_test, y_test, B):
    return float(np.mean((np.einsum("itd,id->it", F_test, B) - y_test) ** 2))


def run(*, quick=False, trials=None, seed=0, progress=None) -> Result:
    """Meta-learn the 8-wave mixture (whitened and raw features) and predict new tasks.

    Parameters
    ----------
    quick : bool -- fewer meta-training and new tasks, one trial
    trials : int or None -- independent draws of the 8 waves
    seed : int
    progress : callable(str) or None

    Returns
    -------
    Result -- main table: one row per (trial, tau) with the test MSE of each method;
    ``numbers``: the means over trials at tau = 4 and the clustering accuracies.
    """
    st = SETTINGS["quick" if quick else "full"]
    trials = st["trials"] if trials is None else trials
    t_start = time.perf_counter()
    rows, diag, example = [], [], None
    for trial, ss in enumerate(np.random.SeedSequence(seed).spawn(trials)):
        rng = np.random.default_rng(ss)
        omega = rng.uniform(1.0, 2.0, K)
        phi = rng.uniform(0.0, 2 * np.pi, K)
        say(progress, f"trial {trial + 1}/{trials}: meta-learning")
        sets = [_tasks(rng, omega, phi, *st[key]) for key in ("light", "heavy", "light2")]
        F1 = sets[0][0].reshape(-1, DEGREE + 1)
        S = F1.T @ F1 / F1.shape[0]
        vals, vecs = np.linalg.eigh(S)
        T_white = (vecs / np.sqrt(vals)) @ vecs.T  # S^(-1/2)
        models = {}
        for name, T in (("white", T_white), ("raw", np.eye(DEGREE + 1))):
            r, acc_h, acc_2, kept = _meta_learn(sets, T)
            models[name] = (r, T)
            diag.append({"trial": trial, "features": name, "clustering_accuracy": acc_h,
                         "classification_accuracy": acc_2, "kept": kept})
        pool = [_flat(F, y) for F, y, _, _ in sets]
        sizes = np.concatenate([np.diff(o) for _, _, o in pool])
        model = fit((np.concatenate([X for X, _, _ in pool]), np.concatenate([y for _, y, _ in pool]),
                     np.concatenate([[0], np.cumsum(sizes)])), K, seed=trial)
        W_true, s2_true = true_mixture(omega, phi, rng)
        say(progress, f"trial {trial + 1}/{trials}: predicting new tasks")
        F, y, x, z = _tasks(rng, omega, phi, st["new"], max(TAUS) + _TEST)
        Ft, yt = F[:, -_TEST:], y[:, -_TEST:]
        f_true = np.sin(2 * np.pi * omega[z, None] * x[:, -_TEST:] + phi[z, None])
        for tau in TAUS:
            row = {"trial": trial, "tau": tau, "oracle": float(np.mean((f_true - yt) ** 2))}
            B = predict_params(_flat(F[:, :tau], y[:, :tau]), W_true, s2_true, np.full(K, 1.0 / K))
            row["bayes_true"] = _mse(Ft, yt, B)
            B = predict_params(_flat(F[:, :tau], y[:, :tau]), model.W, model.s2, model.p)
            row["bayes_fit"] = _mse(Ft, yt, B)
            for name, (r, T) in models.items():
                Ftr = _flat(F[:, :tau] @ T, y[:, :tau])
                for method in ("bayes", "map"):
                    B = predict_params(Ftr, r.W, r.s2, r.p, method=method)
                    row[f"{method}_{name}"] = _mse(Ft @ T, yt, B)
            ridge = [_mse(Ft, yt, _ridge(F[:, :tau], y[:, :tau], lam)) for lam in RIDGE]
            best = int(np.argmin(ridge))
            row["ridge_best"], row["ridge_lambda"] = ridge[best], RIDGE[best]
            rows.append(row)
            if trial == 0 and tau == 4:
                r, T = models["white"]
                grid = np.linspace(-1, 1, 200)
                i = 0
                B = predict_params(_flat(F[i:i + 1, :tau] @ T, y[i:i + 1, :tau]), r.W, r.s2, r.p)
                example = {
                    "grid": grid, "truth": np.sin(2 * np.pi * omega[z[i]] * grid + phi[z[i]]),
                    "x": x[i, :tau], "y": y[i, :tau],
                    "bayes": features(grid) @ T @ B[0],
                    "ridge": features(grid) @ _ridge(F[i:i + 1, :tau], y[i:i + 1, :tau], RIDGE[best])[0],
                    "lambda": RIDGE[best],
                }
    cols = ["trial", "tau", "bayes_white", "map_white", "bayes_raw", "map_raw", "bayes_fit", "ridge_best",
            "ridge_lambda", "bayes_true", "oracle"]
    mean = _mean(rows, cols)
    at4 = next(m for m in mean if m["tau"] == 4)
    acc = {f: {key: float(np.mean([g[key] for g in diag if g["features"] == f]))
               for key in ("clustering_accuracy", "classification_accuracy")} for f in ("white", "raw")}
    for f in ("white", "raw"):
        acc[f]["components_kept"] = int(sum(g["kept"] for g in diag if g["features"] == f))
    numbers = {"tau4": {c: at4[c] for c in cols if c not in ("trial", "tau", "ridge_lambda")},
               "accuracy": acc, "seconds": time.perf_counter() - t_start}
    summary = [
        f"sine: k=8 waves, Chebyshev degree {DEGREE} (d=16), noise {NOISE}, {trials} trial(s), "
        f"{st['new']} new tasks; test MSE against tau (ridge: best penalty in hindsight)",
        *format_table([c for c in cols if c not in ("trial", "ridge_lambda")], mean, {c: ".3f" for c in cols}),
        *(f"{f} features: clustering accuracy {acc[f]['clustering_accuracy']:.3f}, classification accuracy "
          f"{acc[f]['classification_accuracy']:.3f}, components left at their clustering estimate: "
          f"{acc[f]['components_kept']}" for f in ("white", "raw")),
        "(accuracies are low where two drawn waves nearly coincide; bayes_fit: fastmlr.fit on the pooled "
        "tasks; bayes_true: Bayes under the true mixture)",
    ]
    setting = dict(st, trials=trials, seed=seed, k=K, degree=DEGREE, noise=NOISE, taus=list(TAUS), ridge=list(RIDGE))
    return Result("sine", {"": Table(cols, rows)}, summary, numbers, setting, extra={"example": example})


def _mean(rows, cols):
    out = []
    for tau in TAUS:
        sel = [r for r in rows if r["tau"] == tau]
        out.append({c: (tau if c == "tau" else float(np.mean([r[c] for r in sel])))
                    for c in cols if c != "trial"})
    return out


def plot(result: Result, fig) -> None:
    """(a) one new task predicted from 4 examples; (b) test MSE against tau."""
    ax, bx = fig.subplots(1, 2)
    ex = result.extra.get("example")
    if ex is not None:
        ax.plot(ex["grid"], ex["truth"], "k-", lw=1, label="true wave")
        ax.plot(ex["x"], ex["y"], "ko", label="the 4 examples")
        ax.plot(ex["grid"], ex["bayes"], "C1-", label="meta-learnt prior, Bayes")
        ax.plot(ex["grid"], ex["ridge"], "C2--", label=f"per-task ridge (lambda={ex['lambda']:g})")
        ax.set_ylim(-2.5, 2.5)
        ax.set_xlabel("x")
        ax.set_title("(a) a new task from 4 examples")
        ax.legend(fontsize=7, loc="lower left")
    mean = _mean(result.tables[""].rows, result.tables[""].columns)
    tau = [m["tau"] for m in mean]
    for key, fmt, color, label in (("bayes_white", "s-", "C1", "Bayes, whitened"),
                                   ("map_white", "o-", "C0", "MAP, whitened"),
                                   ("bayes_raw", "s:", "C1", "Bayes, raw features"),
                                   ("bayes_fit", "x-", "C4", "Bayes, fastmlr.fit (EM)"),
                                   ("ridge_best", "^--", "C2", "per-task ridge (best penalty)"),
                                   ("bayes_true", "d:", "gray", "Bayes, true mixture"),
                                   ("oracle", "-", "k", "true wave (noise floor)")):
        bx.plot(tau, [m[key] for m in mean], fmt, color=color, label=label)
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.set_xlabel("tau (examples of the new task)")
    bx.set_ylabel("test mean squared error")
    bx.set_title("(b) error against tau")
    bx.legend(fontsize=7)
    fig.suptitle("Sinusoids: 8 waves, Chebyshev features of degree 15, noise 0.5")
