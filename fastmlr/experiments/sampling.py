"""Data helpers shared by the experiments: a streamed subspace estimate and a subspace of known error."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ..subspace import second_moment
from ..synthetic import sample_tasks

__all__ = ["streamed_subspace", "perturbed_subspace"]

_CHUNK_ROWS = 1 << 18


def streamed_subspace(W, s2, p, t, n_tasks, k, *, seed, chunk_rows=_CHUNK_ROWS):
    """Estimate the subspace (Algorithm 2) from ``n_tasks`` fresh tasks of ``t`` rows, in chunks.

    The moment matrix M is an average over tasks, so the chunks' matrices, weighted by
    their task counts, add up to the M of the whole set; only one chunk is ever in memory.

    Parameters
    ----------
    W : (k, d), s : (k,), p : (k,) -- the mixture to sample from
    t : int >= 2 -- rows per task
    n_tasks : int -- tasks in total
    k : int -- dimension of the subspace
    seed : int or SeedSequence

    Returns
    -------
    U : (d, k) float64 with orthonormal columns
    """
    d = np.asarray(W).shape[1]
    per = max(1, chunk_rows // t)
    n_chunks = -(-n_tasks // per)
    seeds = np.random.SeedSequence(seed) if not isinstance(seed, np.random.SeedSequence) else seed
    M = np.zeros((d, d))
    done = 0
    for c, ss in enumerate(seeds.spawn(n_chunks)):
        nc = min(per, n_tasks - done)
        smp = sample_tasks(W, s2, p, t, n_tasks=nc, seed=ss)
        M += nc * second_moment((smp.X, smp.y, smp.offsets))
        done += nc
    M /= n_tasks
    _, vecs = scipy.linalg.eigh(M, subset_by_index=[d - k, d - 1])
    return np.ascontiguousarray(vecs[:, ::-1])


def perturbed_subspace(W, eps, *, seed):
    """An orthonormal (d, k) basis whose subspace error against ``W`` is exactly ``eps``.

    Column l is ``sqrt(1 - eps^2) w_l + eps v_l`` with ``v_l`` orthonormal directions
    orthogonal to every w; then ``||(I - U U^T) w_l|| = eps`` for every l.  A random
    rotation inside the span hides the correspondence between columns and components.

    Parameters
    ----------
    W : (k, d) with orthonormal rows, 2k <= d
    eps : float in [0, 1)
    seed : int or SeedSequence

    Returns
    -------
    U : (d, k) float64
    """
    W = np.asarray(W, dtype=np.float64)
    k, d = W.shape
    if 2 * k > d:
        raise ValueError(f"a perturbed subspace needs d >= 2k, got k={k}, d={d}")
    if not np.allclose(W @ W.T, np.eye(k), atol=1e-8):
        raise ValueError("W must have orthonormal rows")
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((d, k))
    G -= W.T @ (W @ G)
    V, _ = np.linalg.qr(G)
    R, _ = np.linalg.qr(rng.standard_normal((k, k)))
    U = (np.sqrt(1.0 - eps**2) * W.T + eps * V) @ R
    return np.ascontiguousarray(U)
