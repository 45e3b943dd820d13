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
runs on to convergence there, and is the start of the full-dimensional EM.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import em as _em
from .tasks import TaskSet

__all__ = ["kmeans_pp", "ProjectedStart", "projected_em", "projected_em_batch"]


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
        D = (C @ G.T) * -2.0
        D += np.einsum("skj,skj->sk", C, C)[:, :, None]
        lab = D.argmin(axis=1)  # (S, m)
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
    ``tol`` (relative) or after ``max_iter`` iterations.

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
        done = np.all(ll_new - ll <= tol * np.abs(ll_new))
        ll = ll_new
        if done:
            break
    return [ProjectedStart(W[j * k:(j + 1) * k], s2[j * k:(j + 1) * k], p[j * k:(j + 1) * k], float(ll[j]), it,
                           starts[j][3]) for j in range(S)]
