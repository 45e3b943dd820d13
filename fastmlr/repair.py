"""Moves after EM, in the full dimension: a component that covers two regimes, a regime
without a component.

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
the largest tasks (:func:`repair_set`), weighted by ``omega(t) = 1 / ((2/t)^2 +
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

A regime can also have no component at all, its tasks spread over several (no single
one then shows two regimes), and components can lose every task.  A task that no
component explains stands out by its smallest residual sum: in standard deviations of
the noise's chi-square, ``z_i = (min_l SSE_il / s2 - t_i) / sqrt(2 t_i)`` with s2 a
typical component's variance (:func:`unexplained`), above ``sqrt(2 log n)``, the level
the largest of n standard normal draws reaches.  Two more moves use those tasks: the
empty components (two or more) are refitted to them together (:func:`fastmlr.fit` on
them, as many components as their rows support), or 1, 2 or 4 components are fitted
to them in place of as many others (the emptiest, or the cheapest merges).  Once a
few such tasks are left, too few to fit a component, the next worst explained ones
join them (:func:`_enough_rows`).

A component that covers two regimes also shows in its variance: each of their tasks
is fitted by the average of the two regression vectors, which adds ``|w_a - w_b|^2 / 4``
per row (0.5 for orthonormal W).  When the residual moment is too noisy to show it
(k = 32, d = 256, 8,000 tasks of 4-32 rows), the component of widest variance, above
``WIDE_RATIO`` times the median, is refitted as two to the heavy tasks it holds
(:func:`_refit_wide`).

As for splits, EM runs on and a move is kept only if the log-likelihood rises; the
moves are tried in the order refit, split, wide, new components (:func:`_moves`), and
after a move is kept the next round begins, up to ``max(8, k)`` moves tried.

The moves look at more tasks than the heavy set of the starts: every task with at
least half the rows of the smallest heavy task (:func:`repair_set`).
"""

from __future__ import annotations

import numpy as np

from . import em as _em
from .backend import kernels
from .select_k import merge_closest
from .residuals import task_sse
from .tasks import TaskSet, select_tasks

__all__ = ["SPLIT_RATIO", "heterogeneity", "unexplained", "repair", "repair_set"]

#: A component is split when the top eigenvalue of its residual moment exceeds this
#: multiple of the magnitude of the bottom one.
SPLIT_RATIO = 1.6

#: Responsibilities below this are left out of a component's residual moment.
_NEGLIGIBLE = 1e-8


def repair_set(sizes: np.ndarray, heavy_idx: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the tasks the moves look at: the largest tasks, every one with at
    least half the rows of the smallest heavy task (at least 2), at most ``cap`` of them
    and never fewer than the heavy set.  More tasks than the heavy set: at k = 32,
    d = 128 and 5,000 tasks of 4-32 rows, the 321 heavy tasks (29-32 rows) showed too
    few of the tasks of a missing regime; those of 15 rows and more showed them."""
    half = max(2, int(np.ceil(0.5 * sizes[heavy_idx].min()))) if heavy_idx.size else 2
    order = np.argsort(-sizes, kind="stable")
    count = max(int(min((sizes >= half).sum(), cap)), heavy_idx.size)
    return order[:count]


def _weights(t: np.ndarray, d: int) -> np.ndarray:
    return 1.0 / ((2.0 / t) ** 2 + 2.0 / (t * d))


def heterogeneity(heavy: TaskSet, W, s2, p, RT=None):
    """Residual moment of every component over the given (large) tasks.

    Parameters
    ----------
    heavy : TaskSet -- tasks with at least 2 rows, in the coordinates of ``W``
    W : (k, d), s2 : (k,), p : (k,) -- the mixture
    RT : (k, n_H), optional -- the heavy tasks' responsibilities under it (computed if not given)

    Returns
    -------
    ratio : (k,) -- ``lambda_max / |lambda_min|`` of each ``C_l`` (0 for a component with less
        weight among the heavy tasks than two of the largest of them)
    lam : (k,) -- the top eigenvalue
    u : (k, d) -- its unit eigenvector
    """
    k, d = W.shape
    # in the data's precision: a float64 copy of a float32 pool's tasks was 0.67 GB at
    # Figure 2's scale, the largest array of a fit streamed from disk
    X, y = heavy.X, heavy.y
    t = np.diff(heavy.offsets).astype(np.float64)
    if RT is None:
        _, RT = _em._e_step(heavy, t, W, s2, p)  # (k, n_H)
    omega = _weights(t, d)
    P = X @ W.T.astype(X.dtype)  # (N_H, k)
    kern = kernels()
    ratio, lam, u = np.empty(k), np.empty(k), np.empty((k, d))
    for l in range(k):
        wl = omega * RT[l]
        on = np.flatnonzero(RT[l] > _NEGLIGIBLE)  # each task's weight sits on few components
        B = kern.group_means(X, y - P[:, l], heavy.offsets, 2).astype(np.float64, copy=False)  # (n_H, 2, d)
        C = (B[on, 0, :] * wl[on, None]).T @ B[on, 1, :] / max(float(wl.sum()), 1e-300)
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


def unexplained(heavy: TaskSet, W, noise: float):
    """How badly the best component explains each heavy task: ``z_i = (min_l SSE_il /
    noise - t_i) / sqrt(2 t_i)``, the excess of its smallest residual sum over what noise
    of variance ``noise`` gives, in standard deviations of a chi-square with t_i degrees
    of freedom.  ``noise`` is a typical component's variance (the median): a component
    that absorbed stray tasks by growing its own variance does not explain them.

    Returns (n_H,) float64 (about N(0, 1) or below for a task its component fits)."""
    t = np.diff(heavy.offsets).astype(np.float64)
    sse = task_sse(*heavy, W)  # (n_H, k)
    return (sse.min(axis=1) / noise - t) / np.sqrt(2.0 * t)


#: Fewest heavy tasks above :func:`_z_level` that count as a regime no component
#: explains (one or two are what chance gives now and then).
_MIN_UNEXPLAINED = 3


def _z_level(n: int) -> float:
    """The level the largest of n standard normal draws reaches: ``sqrt(2 log n)``."""
    return float(np.sqrt(2.0 * np.log(max(n, 2))))


def _refit_unexplained(heavy: TaskSet, z, m: int, d: int):
    """Up to m regression vectors (m', d) fitted, by :func:`fastmlr.fit`, to the heavy
    tasks no component explains (``z`` above :func:`_z_level`), as many as their rows
    support; None when they hold no more than d rows."""
    from .fit import inner_fit

    bad = np.flatnonzero(z > _z_level(z.size))
    if bad.size < _MIN_UNEXPLAINED:
        return None
    bad = _enough_rows(bad, z, np.diff(heavy.offsets), m, d)
    part = select_tasks(heavy, bad)
    if part.X.shape[0] <= d:
        return None
    mm = int(min(m, (part.X.shape[0] - 1) // d, bad.size))
    if mm < 1:
        return None
    if mm == 1:
        return np.linalg.lstsq(part.X.astype(np.float64), part.y.astype(np.float64), rcond=None)[0][None, :]
    return inner_fit(part, mm, seed=1, whiten=False).W


def _enough_rows(bad, z, t, m: int, d: int):
    """The tasks ``bad`` (sorted), with the next worst explained ones (by ``z``) added
    until they hold ``2 m d`` rows: once most of a missing regime's tasks are taken by a
    new component, those left are too few to fit another, though they still stand out
    (measured at k = 32, d = 256, 8,000 tasks: 21 tasks above the level, 3 regimes
    still missing)."""
    if t[bad].sum() >= 2 * m * d:
        return bad
    order = np.argsort(-z, kind="stable")
    count = int(np.searchsorted(np.cumsum(t[order]), 2 * m * d)) + 1
    return np.sort(order[:max(count, bad.size)])


#: A component whose noise variance is this multiple of the median one is refitted as
#: two (:func:`_refit_wide`): the average of two orthonormal regression vectors leaves
#: each of their tasks ``|w_a - w_b|^2 / 4 = 0.5`` of extra variance per row.
WIDE_RATIO = 1.25


def _refit_wide(heavy: TaskSet, Wh, res, rows, noise: float, d: int, RT):
    """The component of widest noise refitted as two to the heavy tasks it holds (their
    most likely component), when its variance is ``WIDE_RATIO`` times ``noise`` and its
    tasks hold more than 2 d rows (``RT`` (k, n_H): the heavy tasks' responsibilities):
    ``(l, W (2, d), variance ratio)`` or None.  A
    component that covers two regimes fits neither, and its variance shows it, though
    its residual moment (:func:`heterogeneity`) may not stand out."""
    from .fit import inner_fit

    ratio = res.s2 / noise
    ratio[rows <= d] = 0.0
    l = int(np.argmax(ratio))
    if ratio[l] < WIDE_RATIO or Wh.shape[0] < 3:
        return None
    t = np.diff(heavy.offsets)
    own = np.flatnonzero(np.argmax(RT, axis=0) == l)
    if own.size < 4 or t[own].sum() <= 2 * d:
        return None
    return l, inner_fit(select_tasks(heavy, own), 2, seed=1, whiten=False).W, float(ratio[l])


def _room(W, s2, p, rows, d, m: int):
    """The mixture with m components fewer, one at a time: the emptiest if it holds no
    more than d rows, else the pair of least merge cost merged.  Returns W, s2, p and
    what made the room."""
    rows = np.asarray(rows, dtype=np.float64).copy()
    what = []
    for _ in range(m):
        j = int(np.argmin(rows))
        if rows[j] <= d:
            what.append(f"a component of {rows[j]:.0f} rows")
            keep = np.arange(W.shape[0]) != j
            W, s2, p, rows = W[keep], s2[keep], p[keep], rows[keep]
            continue
        W, s2, p, (i, j) = merge_closest(W, s2, p, np.eye(W.shape[1]))
        rows[i] += rows[j]
        rows = np.delete(rows, j)
        what.append("a merge")
    return W, s2, p, ", ".join(what)


def _moves(heavy: TaskSet, Wh, res, rows, noise: float, k: int, d: int):
    """The moves to try from an optimum, in order, each as ``(move, (W, s2, p))``:
    refit the empty components (two or more) to the heavy tasks no component explains;
    split the components that show two regimes; refit the component of widest noise as
    two; fit 1, 2 or 4 components to the tasks no component explains in place of as
    many others (the emptiest, or the cheapest merges)."""
    z = unexplained(heavy, Wh, noise)
    empty = np.flatnonzero(rows <= d)
    if empty.size >= 2:
        new_W = _refit_unexplained(heavy, z, empty.size, d)
        if new_W is not None:
            m = new_W.shape[0]
            keep = np.setdiff1d(np.arange(k), empty[np.argsort(rows[empty], kind="stable")][:m])
            pn = np.append(res.p[keep], np.full(m, 1.0 / k))
            yield ({"refit_empty": m, "unexplained_tasks": int((z > _z_level(z.size)).sum()),
                    "say": f"EM from {m} empty components refitted to the heavy tasks no component explains"},
                   (np.vstack([Wh[keep], new_W]), np.append(res.s2[keep], np.full(m, noise)), pn / pn.sum()))
    _, RT = _em._e_step(heavy, np.diff(heavy.offsets).astype(np.float64), Wh, res.s2, res.p)  # once a round
    ratio, lam, u = heterogeneity(heavy, Wh, res.s2, res.p, RT=RT)
    split = [int(l) for l in np.argsort(-ratio, kind="stable") if ratio[l] > SPLIT_RATIO]
    if split:
        Wn, s2n, pn, split = _split(Wh, res.s2, res.p, split, lam, u, rows, d)
        if Wn.shape[0] == k and split:
            yield ({"split": split, "ratios": [float(ratio[l]) for l in split],
                    "say": (f"EM from components {split} split (residual moment ratios "
                            f"{', '.join(f'{ratio[l]:.2f}' for l in split)})")}, (Wn, s2n, pn))
    wide = _refit_wide(heavy, Wh, res, rows, noise, d, RT)
    if wide is not None:
        l, new_W, ratio_l = wide
        Wk, s2k, pk, room = _room(np.delete(Wh, l, axis=0), np.delete(res.s2, l), np.delete(res.p, l),
                                  np.delete(rows, l), d, 1)
        pn = np.append(pk, [0.5 * res.p[l], 0.5 * res.p[l]])
        yield ({"refit_wide": l, "variance_ratio": ratio_l,
                "say": f"EM from component {l} (variance {ratio_l:.2f} times the median) refitted as two "
                       f"(in place of {room})"},
               (np.vstack([Wk, new_W]), np.append(s2k, [noise, noise]), pn / pn.sum()))
    used = int((z > _z_level(z.size)).sum())
    for m in (1, 2, 4):  # components fitted to the tasks no component explains, in place of m others
        if m >= k:
            break
        new_W = _refit_unexplained(heavy, z, m, d)
        if new_W is None or new_W.shape[0] < m:
            break
        Wk, s2k, pk, room = _room(Wh, res.s2, res.p, rows, d, m)
        pn = np.append(pk, np.full(m, 1.0 / k))
        yield ({"reseed": m, "unexplained_tasks": used,
                "say": f"EM from {m} component(s) fitted to the {used} heavy tasks no component explains "
                       f"(in place of {room})"},
               (np.vstack([Wk, new_W]), np.append(s2k, np.full(m, noise)), pn / pn.sum()))


def repair(res, heavy: TaskSet, em_from, *, T=None, max_rounds=None, progress=None):
    """Moves after EM while one raises the likelihood (see the module doc): refit empty
    components, split a component that covers two regimes or refit the widest one as
    two, fit new ones to the heavy tasks no component explains (:func:`_moves`, tried
    in that order).

    Parameters
    ----------
    res : EMResult -- EM's optimum, W in the pool's coordinates
    heavy : TaskSet -- the heavy tasks, in the coordinates ``x T`` (``T`` None: the pool's)
    em_from : callable(W (k, d), s2 (k,), p (k,)) -> EMResult -- EM on the pool from a start
    T : (d, d) symmetric or None -- the whitening of the heavy tasks' coordinates
    max_rounds : int, optional -- most moves tried (default ``max(8, k)``: at k = 32, d = 256 and
        8,000 tasks of 4-32 rows, 8 moves left 4 regimes without a component)
    progress : callable(str) or None

    Returns
    -------
    EMResult -- ``res`` or a better optimum; moves : list of dict (each move tried)
    """
    moves = []
    k, d = res.W.shape
    max_rounds = max(8, k) if max_rounds is None else max_rounds
    while len(moves) < max_rounds:
        Wh = res.W if T is None else np.linalg.solve(T, res.W.T).T
        rows = res.rows
        noise = float(np.median(res.s2[rows > d])) if (rows > d).any() else float(np.median(res.s2))
        kept = False
        for move, start in _moves(heavy, Wh, res, rows, noise, k, d):
            say = move.pop("say")
            if progress is not None:
                progress(say)
            new = em_from(start[0] if T is None else start[0] @ T, start[1], start[2])
            kept = bool(new.loglik[-1] > res.loglik[-1])
            move.update({"loglik_before": float(res.loglik[-1]), "loglik_after": float(new.loglik[-1]), "kept": kept})
            moves.append(move)
            if kept or len(moves) >= max_rounds:
                break
        if not kept:
            break
        res = new
    return res, moves
