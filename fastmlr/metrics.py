"""Accuracy measures against a known ground truth."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from ._validation import check_work, quiet

__all__ = ["ParameterError", "parameter_error", "subspace_error", "clustering_accuracy", "match_components"]


class ParameterError(NamedTuple):
    """Matched parameter error: ``max`` and ``mean`` of ``||W_hat[perm[l]] - W[l]||`` and ``perm`` (k,)."""

    max: float
    mean: float
    perm: np.ndarray


def _real_matrix(A, name: str) -> np.ndarray:
    A = np.asarray(A)
    if A.dtype.kind not in "fiub":
        raise TypeError(f"{name} has dtype {A.dtype}; expected a real array")
    if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"{name} has shape {A.shape}; expected a non-empty 2-D array")
    A = A.astype(np.float64)
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or inf; expected finite values")
    return A


def _scale(*arrays) -> float:
    """A power of two near the largest magnitude in ``arrays`` (1 if all are zero):
    distances are computed on the arrays divided by it and scaled back, so that no
    square overflows or underflows whatever the units (and, a power of two, it
    changes no bits of data of ordinary size)."""
    m = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays)
    return math.ldexp(1.0, math.frexp(m)[1]) if m > 0 else 1.0


def _distances(W_hat, W) -> np.ndarray:
    """(k', k) Euclidean distances between the rows of two validated matrices."""
    c = _scale(W_hat, W)
    return cdist(W_hat / c, W / c) * c  # without a (k', k, d) temporary


@quiet
def match_components(W_hat, W) -> np.ndarray:
    """Hungarian matching of estimated to true components on Euclidean distance.

    Parameters
    ----------
    W_hat : (k', d) estimate, k' >= k
    W : (k, d) truth

    Returns
    -------
    perm : (k,) int64 -- ``W_hat[perm[l]]`` is matched to ``W[l]``

    See Also
    --------
    parameter_error : the distances of the matched pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlr.metrics import match_components
    >>> match_components(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[1.0, 0.1], [0.0, 0.9]]))
    array([1, 0])
    """
    W_hat = _real_matrix(W_hat, "W_hat")
    W = _real_matrix(W, "W")
    if W_hat.shape[1] != W.shape[1]:
        raise ValueError(f"W_hat {W_hat.shape} and W {W.shape} must be (k', d) and (k, d) with the same d")
    if W_hat.shape[0] < W.shape[0] or W.shape[0] < 1:
        raise ValueError(f"W_hat has {W_hat.shape[0]} rows and W {W.shape[0]}; expected 1 <= rows of W <= rows of W_hat")
    cost = _distances(W_hat, W)  # (k', k); inf where a distance exceeds float64 itself
    cost = np.minimum(cost, np.finfo(np.float64).max)  # still a matching: the assignment needs finite costs
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(W.shape[0], dtype=np.int64)
    perm[cols] = rows
    return perm


@quiet
def parameter_error(W_hat, W) -> ParameterError:
    """Max and mean of ``||w_hat - w||`` over components after Hungarian matching.

    Parameters
    ----------
    W_hat : (k', d) estimate, k' >= k
    W : (k, d) truth

    Returns
    -------
    ParameterError
        ``max`` and ``mean`` (floats) of the matched distances, and ``perm`` (k,).

    See Also
    --------
    fastmlr.metrics.match_components : the matching alone.
    subspace_error, clustering_accuracy

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> err = fastmlr.parameter_error(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 0.5]]))
    >>> err.max, err.mean, err.perm
    (0.5, 0.25, array([1, 0]))
    """
    perm = match_components(W_hat, W)
    A, B = _real_matrix(W_hat, "W_hat")[perm], _real_matrix(W, "W")
    c = _scale(A, B)
    err = np.linalg.norm(A / c - B / c, axis=1) * c
    return ParameterError(float(err.max()), float(err.mean()), perm)


@quiet
def subspace_error(U, W) -> float:
    """``max_l ||(I - U U^T) w_l||``: how much of each true component U misses.

    Parameters
    ----------
    U : (d, r) orthonormal columns
    W : (k, d) truth

    Returns
    -------
    float -- the largest norm of a component's part outside the span of U

    See Also
    --------
    estimate_subspace : the estimate of U.

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> fastmlr.subspace_error(np.array([[1.0], [0.0]]), np.array([[3.0, 4.0]]))
    4.0
    """
    U = _real_matrix(U, "U")
    W = _real_matrix(W, "W")
    if U.shape[0] != W.shape[1]:
        raise ValueError(f"U has shape {U.shape} and W {W.shape}; expected U (d, r) and W (k, d) with the same d")
    c = _scale(W)
    Wc = W / c
    resid = Wc - (Wc @ U) @ U.T
    return float(np.linalg.norm(resid, axis=1).max() * c)


@quiet
def clustering_accuracy(labels, z) -> float:
    """Fraction of tasks whose label matches their true component, after the best matching.

    Parameters
    ----------
    labels : (n,) int -- estimated cluster of each task
    z : (n,) int -- true component of each task

    Returns
    -------
    float in [0, 1]

    See Also
    --------
    cluster_tasks, classify_tasks : labels to measure.

    Examples
    --------
    >>> import fastmlr
    >>> fastmlr.clustering_accuracy([1, 1, 0, 0], [0, 0, 1, 0])    # label names do not matter
    0.75
    """
    labels, z = np.asarray(labels), np.asarray(z)
    for name, v in (("labels", labels), ("z", z)):
        if v.dtype.kind not in "iub":
            raise TypeError(f"{name} has dtype {v.dtype}; expected integer labels")
    if labels.shape != z.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and z {z.shape} must be 1-D of the same length")
    if labels.size == 0:
        raise ValueError("labels is empty; expected at least one task")
    # any integer values (negative, huge): compacted, so the table is (#labels, #z)
    labels = np.unique(labels, return_inverse=True)[1].ravel()
    z = np.unique(z, return_inverse=True)[1].ravel()
    a, b = int(labels.max()) + 1, int(z.max()) + 1
    check_work(8.0 * a * b, f"a ({a}, {b}) confusion table of labels against z", "compare fewer distinct labels")
    conf = np.zeros((a, b))
    np.add.at(conf, (labels, z), 1.0)
    r, c = linear_sum_assignment(-conf)
    return float(conf[r, c].sum() / labels.size)
