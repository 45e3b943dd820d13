"""Accuracy measures against a known ground truth."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["ParameterError", "parameter_error", "subspace_error", "clustering_accuracy", "match_components"]


class ParameterError(NamedTuple):
    """Matched parameter error: ``max`` and ``mean`` of ``||W_hat[perm[l]] - W[l]||`` and ``perm`` (k,)."""

    max: float
    mean: float
    perm: np.ndarray


def match_components(W_hat, W) -> np.ndarray:
    """Hungarian matching of estimated to true components on Euclidean distance.

    Returns ``perm`` (k,) with ``W_hat[perm[l]]`` matched to ``W[l]``.
    """
    W_hat = np.asarray(W_hat, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    if W_hat.ndim != 2 or W.ndim != 2 or W_hat.shape[1] != W.shape[1]:
        raise ValueError(f"W_hat {W_hat.shape} and W {W.shape} must be (k', d) and (k, d) with the same d")
    if W_hat.shape[0] < W.shape[0]:
        raise ValueError(f"W_hat has {W_hat.shape[0]} rows, fewer than W's {W.shape[0]}")
    cost = np.linalg.norm(W_hat[:, None, :] - W[None, :, :], axis=2)  # (k', k)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(W.shape[0], dtype=np.int64)
    perm[cols] = rows
    return perm


def parameter_error(W_hat, W) -> ParameterError:
    """Max and mean of ``||w_hat - w||`` over components after Hungarian matching.

    Parameters
    ----------
    W_hat : (k', d) estimate, k' >= k
    W : (k, d) truth
    """
    perm = match_components(W_hat, W)
    err = np.linalg.norm(np.asarray(W_hat, dtype=np.float64)[perm] - W, axis=1)
    return ParameterError(float(err.max()), float(err.mean()), perm)


def subspace_error(U, W) -> float:
    """``max_l ||(I - U U^T) w_l||``: how much of each true component U misses.

    Parameters
    ----------
    U : (d, r) orthonormal columns
    W : (k, d) truth
    """
    U = np.asarray(U, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    resid = W - (W @ U) @ U.T
    return float(np.linalg.norm(resid, axis=1).max())


def clustering_accuracy(labels, z) -> float:
    """Fraction of tasks whose label matches their true component, after the best matching.

    Parameters
    ----------
    labels : (n,) int -- estimated cluster of each task
    z : (n,) int -- true component of each task
    """
    labels = np.asarray(labels, dtype=np.int64)
    z = np.asarray(z, dtype=np.int64)
    if labels.shape != z.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and z {z.shape} must be 1-D of the same length")
    if labels.size == 0:
        raise ValueError("labels is empty")
    conf = np.zeros((labels.max() + 1, z.max() + 1))
    np.add.at(conf, (labels, z), 1.0)
    r, c = linear_sum_assignment(-conf)
    return float(conf[r, c].sum() / labels.size)
