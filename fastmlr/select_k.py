"""Choosing the number of components k of a pool.

Two pieces of evidence:

1. **The spectrum of M.**  M estimates ``sum_l p_l w_l w_l^T`` without bias, so its
   eigenvalues are k positive values plus noise that is roughly symmetric about zero.
   The most negative eigenvalue measures the noise; ``k_spec`` counts the eigenvalues
   above ``SPECTRUM_FACTOR`` times its magnitude.  It only proposes where to start:
   components whose regression vectors are linearly dependent, or k > d, are not
   counted, and where the tasks are small and d large the signal eigenvalues sink into
   the noise (Figure 2's pool with a quarter of its light tasks: k = 32, d = 256, no
   eigenvalue above the threshold).
2. **BIC** ``= -2 loglik + (k d + 2k - 1) log N``, with N the number of rows (as R's
   flexmix counts observations), over a path of fits:

   * the top of the path, ``k_spec + WINDOW`` (``k_max`` when the spectrum shows no
     component), is fitted from its own starts, as ``fit`` with that k would be;
   * from the top the path descends one component at a time: the two components whose
     merge loses the least between-component variance, ``p_i p_j / (p_i + p_j)
     ||w_i - w_j||_S^2`` in the metric S of x, are merged and EM runs on from there
     (:func:`merge_closest`).  The descent stops one step below the best k;
   * while the best k is the top, the top rises by one (a new fit from its own starts)
     up to ``k_max``.

   The statistics, the moment matrix and its eigenvectors are computed once, and each
   step down starts next to an optimum: at Figure 2's quarter pool one fit at k = 32
   and one EM from its merge cost about twice the fit with k given (the earlier window
   of five fits from their own starts, 30 to 34, cost five).  ``k_max`` defaults to
   ``min(n // 10, 32, (N - 1) // d)``.

The model returned for the chosen k is the fit from its own starts when the chosen k is
the top of the path (then it equals ``fit`` with that k), and otherwise the EM optimum
reached from the merge.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_int

__all__ = ["spectral_count", "choose_k", "merge_closest", "n_parameters", "SPECTRUM_FACTOR", "WINDOW"]

#: An eigenvalue of M counts as signal above this multiple of the noise level.
SPECTRUM_FACTOR = 2.0
#: Candidates are k_spec - WINDOW .. k_spec + WINDOW.
WINDOW = 2


def spectral_count(eigenvalues) -> tuple[int, float]:
    """Number of eigenvalues of M above the noise, and the threshold used.

    Parameters
    ----------
    eigenvalues : (d,) float -- eigenvalues of M, any order

    Returns
    -------
    k_spec : int, threshold : float
    """
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    noise = max(-float(ev[-1]), 0.0)
    thr = SPECTRUM_FACTOR * noise
    return int((ev > thr).sum()), thr


def n_parameters(k: int, d: int) -> int:
    """Free parameters of a k-component mixture in d dimensions: W, s2 and p."""
    return k * d + k + (k - 1)


def merge_closest(W, s2, p, S):
    """The mixture with the two components of least merge cost merged into one.

    The cost of merging i and j is the between-component variance they lose,
    ``p_i p_j / (p_i + p_j) ||w_i - w_j||_S^2`` with ``||v||_S^2 = v^T S v``; the merged
    component has weight ``p_i + p_j``, the weighted mean of the two regression vectors,
    and the weighted mean of their noise variances plus that lost variance.

    Parameters
    ----------
    W : (k, d), s2 : (k,), p : (k,) -- a mixture with k >= 2
    S : (d, d) -- second moment of x (the identity for isotropic x)

    Returns
    -------
    W : (k - 1, d), s2 : (k - 1,), p : (k - 1,), pair : (i, j) -- the merged components
    (the new one takes i's place, j is removed)
    """
    W = np.asarray(W, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    k = W.shape[0]
    if k < 2:
        raise ValueError(f"W has {k} component(s); merging needs at least 2")
    G = W @ np.asarray(S, dtype=np.float64) @ W.T
    g = np.diag(G)
    dist = np.maximum(g[:, None] + g[None, :] - 2.0 * G, 0.0)
    psum = p[:, None] + p[None, :]
    cost = p[:, None] * p[None, :] / np.where(psum > 0, psum, 1.0) * dist
    iu, ju = np.triu_indices(k, 1)
    q = int(np.argmin(cost[iu, ju]))
    i, j = int(iu[q]), int(ju[q])
    pij = p[i] + p[j]
    a = p[i] / pij if pij > 0 else 0.5
    W2, s22, p2 = W.copy(), s2.copy(), p.copy()
    W2[i] = a * W[i] + (1.0 - a) * W[j]
    s22[i] = a * s2[i] + (1.0 - a) * s2[j] + a * (1.0 - a) * dist[i, j]
    p2[i] = pij
    keep = np.arange(k) != j
    return W2[keep], s22[keep], p2[keep], (i, j)


def choose_k(fit_k, merged, eigenvalues, *, n: int, d: int, rows: int, k_max=None, progress=None):
    """Choose k by the spectrum of M and BIC along a path of fits (see the module doc).

    Parameters
    ----------
    fit_k : callable(int) -> (EMResult, info) -- fits the pool with a given k from its
        own starts
    merged : callable((EMResult, info)) -> (EMResult, info) -- EM from a fitted mixture
        with two components merged (:func:`merge_closest`)
    eigenvalues : (d,) -- of M
    n : int -- non-empty tasks; d : int -- dimension; rows : int -- N
    k_max : int, optional -- largest k tried (default ``min(n // 10, 32, (rows - 1) // d)``,
        at least 1: ten tasks per component, and more than d rows per component; not
        capped at d, since BIC can find more components than dimensions)
    progress : callable(str) or None

    Returns
    -------
    k : int, fitted : the ``(EMResult, info)`` of the chosen k, info : dict (the evidence)
    """
    if k_max is None:
        k_max = max(1, min(n // 10, 32, (rows - 1) // d))
    k_max = min(check_int(k_max, "k_max", low=1), n)
    k_spec, thr = spectral_count(eigenvalues)
    top = min(k_spec + WINDOW, k_max) if k_spec >= 1 else k_max
    table = []
    best = None

    def record(kk, fitted, how):
        nonlocal best
        ll = float(fitted[0].loglik[-1])
        npar = n_parameters(kk, d)
        bic = -2.0 * ll + npar * float(np.log(rows))
        table.append({"k": kk, "loglik": ll, "n_parameters": npar, "bic": bic, "from": how,
                      "em_iterations": int(fitted[0].loglik.size - 1)})
        if best is None or bic < best[1]:
            best = (kk, bic, fitted)

    def fit_new(kk):
        if progress is not None:
            progress(f"k=None: trying k={kk}")
        fitted = fit_k(kk)
        record(kk, fitted, "starts")
        return fitted

    current, kk = fit_new(top), top
    # down the path by merges, until one step below the best k
    while kk > 1 and kk >= best[0]:
        if progress is not None:
            progress(f"k=None: trying k={kk - 1}")
        current = merged(current)
        kk -= 1
        record(kk, current, "merge")
    # the spectrum can miss weak components: while the best k is the top, go up
    while best[0] == top and top < k_max:
        top += 1
        fit_new(top)
    table.sort(key=lambda row: row["k"])
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    info = {
        "method": "spectrum of M, then BIC with log(N rows) along a path of merges",
        "eigenvalues": [float(v) for v in ev[: min(ev.size, k_max + WINDOW + 2)]],
        "noise_threshold": thr,
        "k_spectrum": k_spec,
        "k_max": k_max,
        "candidates": table,
        "chosen": best[0],
    }
    return best[0], best[2], info
