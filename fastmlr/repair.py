"""Split moves after EM, in the full dimension: a component that covers two regimes.

The starts are found in a k-dimensional subspace from the heavy tasks.  Where the
subspace is poor (tasks much smaller than d, k = 32 and more), EM from the best start
can end in an optimum where one component covers two regimes while another has drifted
off, and EM cannot leave it.  Such a component shows in the residuals of its own tasks:
for a task i, the half-means ``b_h(l) = X_{i,h}^T (y_{i,h} - X_{i,h} w_l) / t_{i,h}`` of
its two halves h = 1, 2 are independent given the task's regime m, with mean
``w_m - w_l``, so

    C_l = sum_i omega_i R_il b_1(l) b_2(l)^T / sum_i omega_i R_il

estimates ``sum_m q_lm (w_m - w_l)(w_m - w_l)^T`` without bias (Algorithm 2's moment, in
the residuals of one component).  For a component that covers one regime it is noise,
roughly symmetric about zero; for one that covers two, its top eigenvalue stands out
and its eigenvector points from one regime to the other.  The statistic is taken over
the heavy tasks (the largest, a few thousand), weighted by ``omega(t) = 1 / ((2/t)^2 +
2/(t d))`` -- the inverse of the variance of an entry of ``b_1 b_2^T`` for x of unit
second moment -- so that the large tasks, whose half-means are precise, dominate.

:func:`repair` splits the component whose ratio ``lambda_max / |lambda_min|`` of C_l is
largest, when it exceeds ``SPLIT_RATIO``, along that eigenvector, taking the place of a
component that holds no more than d rows or else of the pair of least merge cost
(:func:`fastmlr.select_k.merge_closest`); EM runs on from there and the move is kept
only if the log-likelihood rises.

Measured on a pool of 60,000 tasks of 4 rows and 1,280 of 32 (k = 32, d = 128): the
component covering two regimes had ratio 2.4 (its eigenvector at cosine 0.89 to the
difference of their regression vectors), the 31 others 0.9-1.2; the same ratios
without the weights were all 0.8-1.2.
"""

from __future__ import annotations

import numpy as np

from . import em as _em
from .backend import kernels
from .select_k import merge_closest
from .tasks import TaskSet

__all__ = ["SPLIT_RATIO", "heterogeneity", "repair"]

#: A component is split when the top eigenvalue of its residual moment exceeds this
#: multiple of the magnitude of the bottom one.
SPLIT_RATIO = 1.6


def _weights(t: np.ndarray, d: int) -> np.ndarray:
    return 1.0 / ((2.0 / t) ** 2 + 2.0 / (t * d))


def heterogeneity(heavy: TaskSet, W, s2, p):
    """Residual moment of every component over the heavy tasks.

    Parameters
    ----------
    heavy : TaskSet -- tasks with at least 2 rows, in the coordinates of ``W``
    W : (k, d), s2 : (k,), p : (k,) -- the mixture

    Returns
    -------
    ratio : (k,) -- ``lambda_max / |lambda_min|`` of each ``C_l`` (0 for a component with less
        weight among the heavy tasks than two of the largest of them)
    lam : (k,) -- the top eigenvalue
    u : (k, d) -- its unit eigenvector
    """
    k, d = W.shape
    X = np.ascontiguousarray(heavy.X, dtype=np.float64)
    y = np.ascontiguousarray(heavy.y, dtype=np.float64)
    t = np.diff(heavy.offsets).astype(np.float64)
    _, RT = _em._e_step(TaskSet(X, y, heavy.offsets), t, W, s2, p)  # (k, n_H)
    omega = _weights(t, d)
    P = X @ W.T  # (N_H, k)
    kern = kernels()
    ratio, lam, u = np.empty(k), np.empty(k), np.empty((k, d))
    for l in range(k):
        B = kern.group_means(X, y - P[:, l], heavy.offsets, 2)  # (n_H, 2, d)
        wl = omega * RT[l]
        C = (B[:, 0, :] * wl[:, None]).T @ B[:, 1, :] / max(float(wl.sum()), 1e-300)
        vals, vecs = np.linalg.eigh(0.5 * (C + C.T))
        lam[l], u[l] = vals[-1], vecs[:, -1]
        # a component with (almost) none of the heavy tasks is room, not a candidate
        ratio[l] = vals[-1] / -vals[0] if vals[0] < 0 and wl.sum() > 2.0 * omega.max() else 0.0
    return ratio, lam, u


def _split(W, s2, p, split, lam, u, rows, d):
    """The mixture with every component in ``split`` cut in two along its ``u`` by
    ``sqrt(lam)`` either way.  The room comes from components of no more than d rows
    (not split), then from merging the cheapest pairs among the others; fewer components
    are split if the others run out.

    Returns W (k, d), s2 (k,), p (k,) and the components split."""
    k = W.shape[0]
    split = list(split)
    others = [j for j in range(k) if j not in split]
    small = [j for j in sorted(others, key=lambda j: rows[j]) if rows[j] <= d][:len(split)]
    keep = [j for j in others if j not in small]
    Wk, s2k, pk = W[keep], s2[keep], p[keep]
    eye = np.eye(W.shape[1])
    while Wk.shape[0] + 2 * len(split) > k:
        if Wk.shape[0] >= 2:
            Wk, s2k, pk, _ = merge_closest(Wk, s2k, pk, eye)
        else:  # no room left for the last one: it stays whole
            l = split.pop()
            Wk, s2k, pk = np.vstack([Wk, W[l]]), np.append(s2k, s2[l]), np.append(pk, p[l])
    parts = [Wk] + [np.vstack([W[l] + np.sqrt(max(lam[l], 0.0)) * u[l], W[l] - np.sqrt(max(lam[l], 0.0)) * u[l]])
                    for l in split]
    Wn = np.vstack(parts)
    s2n = np.concatenate([s2k] + [[s2[l], s2[l]] for l in split])
    pn = np.maximum(np.concatenate([pk] + [[0.5 * p[l], 0.5 * p[l]] for l in split]), 1e-12)
    return Wn, s2n, pn / pn.sum(), list(split)


def repair(res, heavy: TaskSet, t: np.ndarray, em_from, *, T=None, max_rounds: int = 8, progress=None):
    """Split moves after EM while a component covers two regimes (see the module doc).

    Parameters
    ----------
    res : EMResult -- EM's optimum, W in the pool's coordinates
    heavy : TaskSet -- the heavy tasks, in the coordinates ``x T`` (``T`` None: the pool's)
    t : (n,) -- rows of every task of the pool (weighs ``res.resp`` into rows per component)
    em_from : callable(W (k, d), s2 (k,), p (k,)) -> EMResult -- EM on the pool from a start
    T : (d, d) symmetric or None -- the whitening of the heavy tasks' coordinates
    max_rounds : int -- most moves tried
    progress : callable(str) or None

    Returns
    -------
    EMResult -- ``res`` or a better optimum; moves : list of dict (each move tried)
    """
    moves = []
    d = res.W.shape[1]
    for _ in range(max_rounds):
        Wh = res.W if T is None else np.linalg.solve(T, res.W.T).T
        ratio, lam, u = heterogeneity(heavy, Wh, res.s2, res.p)
        split = [int(l) for l in np.argsort(-ratio, kind="stable") if ratio[l] > SPLIT_RATIO]
        if not split:
            break
        rows = np.asarray(t, dtype=np.float64) @ res.resp
        Wn, s2n, pn, split = _split(Wh, res.s2, res.p, split, lam, u, rows, d)
        if Wn.shape[0] != res.W.shape[0] or not split:
            break
        if progress is not None:
            progress(f"EM from components {split} split (residual moment ratios "
                     f"{', '.join(f'{ratio[l]:.2f}' for l in split)})")
        new = em_from(Wn if T is None else Wn @ T, s2n, pn)
        kept = bool(new.loglik[-1] > res.loglik[-1])
        moves.append({"split": split, "ratios": [float(ratio[l]) for l in split],
                      "loglik_before": float(res.loglik[-1]), "loglik_after": float(new.loglik[-1]), "kept": kept})
        if not kept:
            break
        res = new
    return res, moves
