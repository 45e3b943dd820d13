"""Choosing the number of components k of a pool.

Two pieces of evidence, in order:

1. **The spectrum of M.**  M estimates ``sum_l p_l w_l w_l^T`` without bias, so its
   eigenvalues are k positive values plus noise that is roughly symmetric about zero.
   The most negative eigenvalue measures the noise; ``k_spec`` counts the eigenvalues
   above ``SPECTRUM_FACTOR`` times its magnitude.  (Components whose regression vectors
   are linearly dependent, or k > d, are not counted by this, which is why it only
   proposes candidates.)
2. **BIC.**  Every k from ``k_spec - 2`` to ``k_spec + 2`` (within 1..k_max; by default
   ``k_max = min(n // 10, 32, (N - 1) // d)``) is fitted,
   and the k of smallest ``BIC = -2 loglik + (k d + 2k - 1) log N`` is chosen, with N
   the number of rows (as R's flexmix counts observations).  While the best k lies at
   an edge of the window, the window widens by one on that side.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_int

__all__ = ["spectral_count", "choose_k", "n_parameters", "SPECTRUM_FACTOR", "WINDOW"]

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


def choose_k(fit_k, eigenvalues, *, n: int, d: int, rows: int, k_max=None, progress=None):
    """Choose k by the spectrum of M and BIC (see the module doc).

    Parameters
    ----------
    fit_k : callable(int) -> (EMResult, info) -- fits the pool with a given k
    eigenvalues : (d,) -- of M
    n : int -- non-empty tasks; d : int -- dimension; rows : int -- N
    k_max : int, optional -- largest k tried (default ``min(n // 10, 32, (rows - 1) // d)``,
        at least 1: ten tasks per component, and more than d rows per component; not
        capped at d, since BIC can find more components than dimensions)
    progress : callable(str) or None

    Returns
    -------
    k : int, fitted : the ``fit_k`` result of the chosen k, info : dict (the evidence)
    """
    if k_max is None:
        k_max = max(1, min(n // 10, 32, (rows - 1) // d))
    k_max = min(check_int(k_max, "k_max", low=1), n)
    k_spec, thr = spectral_count(eigenvalues)
    centre = min(max(k_spec, 1), k_max)
    candidates = list(range(max(1, centre - WINDOW), min(k_max, centre + WINDOW) + 1))
    table = []
    best = None

    def attempt(kk):
        nonlocal best
        if progress is not None:
            progress(f"k=None: trying k={kk}")
        fitted = fit_k(kk)
        ll = float(fitted[0].loglik[-1])
        npar = n_parameters(kk, d)
        bic = -2.0 * ll + npar * float(np.log(rows))
        table.append({"k": kk, "loglik": ll, "n_parameters": npar, "bic": bic})
        if best is None or bic < best[1]:
            best = (kk, bic, fitted)

    for kk in candidates:
        attempt(kk)
    # the spectrum can miss weak components: while the best k is at an edge of the
    # window, widen the window on that side
    lo, hi = candidates[0], candidates[-1]
    while best[0] == hi and hi < k_max:
        hi += 1
        attempt(hi)
    while best[0] == lo and lo > 1:
        lo -= 1
        attempt(lo)
    table.sort(key=lambda row: row["k"])
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    info = {
        "method": "spectrum of M, then BIC with log(N rows)",
        "eigenvalues": [float(v) for v in ev[: min(ev.size, k_max + WINDOW + 2)]],
        "noise_threshold": thr,
        "k_spectrum": k_spec,
        "k_max": k_max,
        "candidates": table,
        "chosen": best[0],
    }
    return best[0], best[2], info
