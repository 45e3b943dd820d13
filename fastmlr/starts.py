"""Starting points for EM, found in the estimated k-dimensional subspace.

Every regression vector lies in the span of U (the top eigenvectors of the moment
matrix M), so in the coordinates ``z = U^T x`` the mixture is a mixture of regressions
in r = k dimensions instead of d.  There EM costs O(n k r^2) per iteration instead of
O(n k d^2), so several starts can be run to convergence and compared by likelihood:

* the paper's clustering of the heavy tasks (Algorithm 3, one start per linkage);
* weighted k-means++ seeds on the projected heavy-task estimates
  ``g_i = U^T (X_i^T y_i / t_i)``, improved by a few Lloyd steps.

Each start runs a few EM iterations in the subspace, all starts at once as one stacked
mixture (:func:`projected_em_batch`); the one of highest (projected) log-likelihood
runs on to convergence there.  Then split-and-merge moves (:func:`split_merge`) repair
the local optimum EM cannot leave by itself -- one component covering two regimes while
two components share a third -- and the result is the start of the full-dimensional EM.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import em as _em
from .tasks import TaskSet

__all__ = ["kmeans_pp", "ProjectedStart", "projected_em", "projected_em_batch", "split_merge"]


def kmeans_pp(G, weights, k, rng, *, n_starts=1, lloyd_steps=5):
    """Weighted k-means++ seeding followed by Lloyd steps, for several independent starts
    at once (every step of all starts is one vectorized operation).

    Parameters
    ----------
    G : (m, r) float64 -- points
    weights : (m,) float64 > 0
    k : int <= m
    rng : numpy Generator -- start s draws its k seeds from row s of ``rng.random((n_starts, k))``
    n_starts : int -- independent starts
    lloyd_steps : int -- at most this many Lloyd steps (fewer once no label changes)

    Returns
    -------
    C : (n_starts, k, r) float64 -- the centres of every start
    """
    m, r = G.shape
    S = n_starts
    C = np.empty((S, k, r))
    u = rng.random((S, k))
    g2 = np.einsum("ij,ij->i", G, G)
    starts = np.arange(S)

    def draw(prob, q):  # (S,) indices, drawn with probability proportional to rows of prob (S, m)
        cdf = np.cumsum(prob, axis=1)
        tot = cdf[:, -1]
        idx = np.minimum((cdf <= (q * tot)[:, None]).sum(axis=1), m - 1)
        flat = ~(tot > 0)
        idx[flat] = (q[flat] * m).astype(np.int64)
        return idx

    def sqdist(c):  # (S, m) squared distances to one centre per start, clipped at 0 against round-off
        return np.maximum(g2[None, :] - 2.0 * (c @ G.T) + np.einsum("sj,sj->s", c, c)[:, None], 0.0)

    C[:, 0] = G[draw(np.broadcast_to(weights, (S, m)), u[:, 0])]
    d2 = sqdist(C[:, 0])
    for j in range(1, k):
        C[:, j] = G[draw(weights[None, :] * d2, u[:, j])]
        np.minimum(d2, sqdist(C[:, j]), out=d2)
    lab_prev = None
    onehot = np.zeros((S, k, m))
    cols = np.arange(m)[None, :]
    for _ in range(lloyd_steps):
        D = (C.reshape(S * k, r) @ G.T).reshape(S, k, m)  # one BLAS product for all starts
        D *= -2.0
        D += np.einsum("skj,skj->sk", C, C)[:, :, None]
        # argmin over the short middle axis, lowest index on ties (4x faster than argmin)
        lab = (D == D.min(axis=1, keepdims=True)).argmax(axis=1)  # (S, m)
        if lab_prev is not None and np.array_equal(lab, lab_prev):
            break  # assignments are stable: the centres are final
        lab_prev = lab
        onehot[:] = 0.0
        onehot[starts[:, None], lab, cols] = weights[None, :]
        mass = onehot.sum(axis=2)
        full = mass > 0
        C[full] = (onehot @ G)[full] / mass[full][:, None]
    return C


class ProjectedStart(NamedTuple):
    """A start found in the subspace: ``V`` (k, r) coefficients on U, ``s2`` (k,), ``p`` (k,),
    ``loglik`` of the projected EM, ``iterations``, ``label`` naming the start."""

    V: np.ndarray
    s2: np.ndarray
    p: np.ndarray
    loglik: float
    iterations: int
    label: str


def projected_em(zts: TaskSet, zstats, V0, s20, p0, label, *, tol=1e-5, max_iter=50) -> ProjectedStart:
    """EM in the subspace coordinates from one start (see :func:`fastmlr.em.run_em`)."""
    res = _em.run_em(zts, V0, s20, p0, tol=tol, max_iter=max_iter, stats=zstats)
    return ProjectedStart(res.W, res.s2, res.p, float(res.loglik[-1]), int(res.loglik.size - 1), label)


def projected_em_batch(zts: TaskSet, zstats, starts, *, tol=1e-5, max_iter=3) -> list:
    """A few EM iterations in the subspace from every start at once.

    The S starts of k components are stacked into one mixture of S k components whose
    responsibilities are normalized within each start's block (``groups=S`` in the
    E-step), so every iteration is one pass over the statistics for all starts; each
    block evolves exactly as it would alone.  Stops when every start gains less than
    ``tol`` per row or after ``max_iter`` iterations.

    Parameters
    ----------
    zts : TaskSet -- the heavy tasks in subspace coordinates
    zstats : TaskStats of ``zts``
    starts : sequence of (V0 (k, r), s2 (k,), p (k,), label)

    Returns
    -------
    list of ProjectedStart, in the order of ``starts``
    """
    S = len(starts)
    k = starts[0][0].shape[0]
    W = np.concatenate([np.asarray(s[0], dtype=np.float64) for s in starts])
    floor = _em.s2_floor(zts)
    s2 = np.maximum(np.concatenate([np.asarray(s[1], dtype=np.float64) for s in starts]), floor)
    p = np.concatenate([np.asarray(s[2], dtype=np.float64) for s in starts])
    t = np.diff(zts.offsets).astype(np.float64)
    ll, R = _em._e_step(zts, t, W, s2, p, zstats, groups=S)
    ll = np.atleast_1d(ll)
    it = 0
    for it in range(1, max_iter + 1):
        W, s2, p, _ = _em._m_step(zts, t, zstats, R, W, floor)
        ll_new, R = _em._e_step(zts, t, W, s2, p, zstats, groups=S)
        ll_new = np.atleast_1d(ll_new)
        done = np.all(ll_new - ll <= tol * float(zts.offsets[-1]))
        ll = ll_new
        if done:
            break
    return [ProjectedStart(W[j * k:(j + 1) * k], s2[j * k:(j + 1) * k], p[j * k:(j + 1) * k], float(ll[j]), it,
                           starts[j][3]) for j in range(S)]


def _split_merge_start(start: ProjectedStart, G, w, R, i, j, l):
    """The mixture of ``start`` with components i and j merged and component l split in
    two (along the main axis of its tasks' estimates ``G`` weighted by ``w R[l]``)."""
    V, s2, p = start.V.copy(), start.s2.copy(), start.p.copy()
    pij = p[i] + p[j]
    a = p[i] / pij if pij > 0 else 0.5  # two empty components: their plain mean
    V[i] = a * V[i] + (1.0 - a) * V[j]
    s2[i] = a * s2[i] + (1.0 - a) * s2[j]
    p[i] = pij
    wl = w * R[l]
    D = G - V[l]
    C = (D * wl[:, None]).T @ D / max(float(wl.sum()), 1e-300)
    lam, vec = np.linalg.eigh(C)
    step = np.sqrt(max(float(lam[-1]), 0.0)) * vec[:, -1]
    V[j], V[l] = V[l] + step, V[l] - step
    s2[j] = s2[l]
    p[j] = p[l] = 0.5 * p[l]
    return V, s2, p, f"{start.label}, merge {i}+{j}, split {l}"


def split_merge(zts: TaskSet, zstats, G, w, start: ProjectedStart, *, pairs=2, splits=2, rounds=None,
                short_run=6, tol=1e-3, gain=1e-4) -> ProjectedStart:
    """Split-and-merge moves in the subspace, kept while they raise the log-likelihood.

    EM cannot leave an optimum where one component covers two regimes while two
    components share a third, or one has lost all its tasks.  Each round tries, from the
    current mixture, merging one of the ``pairs`` closest pairs of components (or the
    lightest component with its nearest) and splitting one of the ``splits`` components
    of largest noise variance (a component covering two regimes has an inflated one)
    not in the pair.  The trials and the current mixture run ``short_run`` EM iterations
    together, as one stacked mixture; if the most likely trial then beats the current
    mixture by more than ``gain`` per row of the heavy tasks, it runs on to convergence
    and replaces it.
    Rounds stop at the first that gains nothing (at most ``rounds``, default k).  Every
    accepted move raises the log-likelihood.

    On seeded pools (k = 16) the moves that repaired such optima gained 0.02-0.65% of
    the log-likelihood (about 1.5 nats per row in magnitude there); on good optima the
    best move lost about 0.7%.

    Parameters
    ----------
    zts, zstats : the heavy tasks in subspace coordinates and their statistics
    G : (n_H, r) -- the tasks' projected estimates ``U^T X_i^T y_i / t_i``
    w : (n_H,) -- task weights (rows)
    start : ProjectedStart -- a converged projected EM

    Returns
    -------
    ProjectedStart -- ``start`` itself when no move helps
    """
    k = start.V.shape[0]
    if k < 3:
        return start
    t = np.diff(zts.offsets).astype(np.float64)
    cur = start
    for _ in range(k if rounds is None else rounds):
        _, RT = _em._e_step(zts, t, cur.V, cur.s2, cur.p, zstats)
        dist = np.linalg.norm(cur.V[:, None, :] - cur.V[None, :, :], axis=2)
        iu, ju = np.triu_indices(k, 1)
        merge = [(int(iu[q]), int(ju[q])) for q in np.argsort(dist[iu, ju], kind="stable")[:pairs]]
        # the lightest component with its nearest: merging them frees a component that
        # may have lost all its tasks
        j = int(np.argmin(cur.p))
        i = int(np.argmin(np.where(np.arange(k) == j, np.inf, dist[j])))
        if (min(i, j), max(i, j)) not in merge:
            merge.append((i, j))
        wide = np.argsort(-cur.s2, kind="stable")
        trials = []
        for i, j in merge:
            for l in [int(l) for l in wide if l != i and l != j][:splits]:
                trials.append(_split_merge_start(cur, G, w, RT, i, j, l))
        # the current mixture runs as many iterations as the trials: a fair comparison
        stay, *moved = projected_em_batch(zts, zstats, [(cur.V, cur.s2, cur.p, cur.label)] + trials,
                                          tol=0.0, max_iter=short_run)
        best = max(moved, key=lambda f: f.loglik)
        if not best.loglik > stay.loglik + gain * float(zts.offsets[-1]):
            break
        cur = projected_em(zts, zstats, best.V, best.s2, best.p, best.label, tol=tol)
    return cur
