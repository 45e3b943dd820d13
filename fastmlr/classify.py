"""Stage 3 -- classification of light tasks and the refined estimates (Algorithm 4).

Each task goes to ``argmin_l SSE_il / (2 r_l^2) + t_i log r_l`` (the likelihood of the
task under component l, the paper's rule); then each class is refit by least squares
over all of its rows, with ``s_l^2 = RSS_l / (rows_l - d)`` and ``p_l = |C_l| / n``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import _config
from ._validation import check_sums, check_work, quiet, user_stacklevel
from ._parallel import run_each
from .backend import kernels
from .residuals import class_sse, task_sse
from .stream import is_stream, task_chunks
from .tasks import check_finite, check_tasks, chunk_bounds, slice_tasks

__all__ = ["ClassifyResult", "classify_tasks", "refit", "normal_equations", "NormalEquations", "solve_classes", "FallbackWarning", "check_params"]


class FallbackWarning(RuntimeWarning):
    """A component could not be estimated from its data and kept its previous value."""


class ClassifyResult(NamedTuple):
    """Output of :func:`classify_tasks`.

    Attributes
    ----------
    labels : (n,) int64 -- class of each task
    W : (k, d) float64 -- least-squares regression vector of each class
    s2 : (k,) float64 -- noise variance of each class
    p : (k,) float64 -- fraction of tasks in each class
    """

    labels: np.ndarray
    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray


def check_params(W, s2, p, d: int, *, s2_name: str = "s2"):
    """Validate mixture parameters: W (k, d), s2 (k,) > 0, p (k,) >= 0 (or None)."""
    W = np.asarray(W)
    if W.dtype.kind not in "fiu" or W.ndim != 2 or W.shape[1] != d or W.shape[0] < 1:
        raise ValueError(f"W has shape {W.shape} and dtype {W.dtype}; expected a real (k, d) = (k, {d}) array")
    W = np.ascontiguousarray(W, dtype=np.float64)
    check_finite(W, "W")
    k = W.shape[0]
    s2 = np.asarray(s2, dtype=np.float64) if np.asarray(s2).dtype.kind in "fiu" else None
    if s2 is None or s2.shape != (k,):
        raise ValueError(f"{s2_name} must be a real array of shape ({k},), one variance per row of W")
    if not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
        raise ValueError(f"{s2_name} must hold finite positive variances, got {s2}")
    if p is not None:
        p = np.asarray(p, dtype=np.float64) if np.asarray(p).dtype.kind in "fiu" else None
        if p is None or p.shape != (k,):
            raise ValueError(f"p must be a real array of shape ({k},), one weight per row of W")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"p must hold finite non-negative weights with a positive sum, got {p}")
        p = p / p.sum()
    return W, s2, p


class NormalEquations(NamedTuple):
    """Additive statistics of weighted least squares per class.

    ``XtX`` (k, d, d), ``Xty`` (k, d), ``yty`` (k,) and ``rows`` (k,), all float64:
    statistics of disjoint task sets add termwise (``a + b``).
    """

    XtX: np.ndarray
    Xty: np.ndarray
    yty: np.ndarray
    rows: np.ndarray

    def __add__(self, other):  # type: ignore[override]
        return NormalEquations(*(a + b for a, b in zip(self, other)))

    @classmethod
    def zeros(cls, k: int, d: int) -> "NormalEquations":
        check_work(8.0 * k * d * (d + 1), f"the normal equations of k = {k} classes in d = {d} dimensions",
                   "use fewer components or fewer features (e.g. project X onto a subspace first)")
        return cls(np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k), np.zeros(k))


def _accumulate(stats: NormalEquations, part, l: int, tasks: np.ndarray, weights: np.ndarray) -> None:
    """Add the rows of ``tasks`` of one validated chunk, weighted, to class l (in place).

    The rows are gathered in pieces of about ``_config.CACHE_BLOCK_BYTES``, each reduced
    by BLAS while it is still in cache.
    """
    if tasks.size == 0:
        return
    sizes = np.diff(part.offsets)[tasks]
    stats.rows[l] += float(weights @ sizes)
    step = max(1, _config.CACHE_BLOCK_BYTES // (part.X.shape[1] * part.X.itemsize))
    cuts = chunk_bounds(np.concatenate([[0], np.cumsum(sizes)]), step)
    gather = kernels().gather_rows
    for a, b in zip(cuts[:-1], cuts[1:]):
        Xg, yg = gather(part.X, part.y, part.offsets, tasks[a:b], weights[a:b])
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by the caller's check
            stats.XtX[l] += Xg.T @ Xg  # one BLAS product (syrk) per piece
            stats.Xty[l] += Xg.T @ yg
            stats.yty[l] += float(yg @ yg)


def normal_equations(X, y, offsets, R):
    """Weighted per-class normal equations, streamed over chunks of tasks.

    Class l sums every task i with ``R[i, l] > 0``, each row weighted by ``R[i, l]``.
    Per chunk and class the rows are gathered (scaled by the root of their weight) by
    the ``gather_rows`` kernel and reduced by one BLAS product; only nonzero weights
    are visited, so hard labels read every row once.

    Parameters
    ----------
    X : (N, d), y : (N,), offsets : (n + 1,) -- a validated task set
    R : (n, k) float64 >= 0 -- task-to-class weights (one-hot for hard labels)

    Returns
    -------
    NormalEquations
        ``XtX`` (k, d, d) = ``sum_i R[i,l] X_i^T X_i``, ``Xty`` (k, d), ``yty`` (k,),
        ``rows`` (k,) = ``sum_i R[i,l] t_i``.
    """
    n, k = R.shape
    stats = NormalEquations.zeros(k, X.shape[1])
    bounds = chunk_bounds(offsets, _config.CHUNK_ROWS)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = slice_tasks(X, y, offsets, lo, hi)
        Rc = R[lo:hi]

        def add(l):  # each class into its own normal equations: several at once
            idx = np.flatnonzero(Rc[:, l])
            _accumulate(stats, part, l, idx, np.ascontiguousarray(Rc[idx, l]))

        run_each(add, range(k))
    check_sums(stats.XtX, "the normal equations X^T X", X.dtype)
    return stats


#: The residual sum ``y'y - 2 w.X'y + w'X'X w`` of a class is recomputed from its rows
#: when it is below this many roundings of its terms (``eps * (y'y + |2 w.X'y| +
#: w'X'X w)``, eps of the dtype the sums were formed in): its relative error could
#: then exceed about 1e-4.  This happens for float32 data whose noise is small beside
#: its signal (at noise 1e-2 of the signal the variances were 1% off, at 1e-3 86%), and
#: for (nearly) noise-free data in float64.
CANCELLATION = 1e4


def solve_classes(stats: NormalEquations, W_prev, s2_prev, dtype=np.float64, exact_rss=None):
    """Least squares per class from its normal equations.

    A class with no more rows than d cannot be refit; it keeps ``W_prev``/``s2_prev``
    and a :class:`FallbackWarning` names it.  A singular system (constant features)
    gets the minimum-norm solution.

    The residual sum comes from the normal equations, ``y'y - 2 w.X'y + w'X'X w``.
    Where that difference cancelled too far to be accurate (see :data:`CANCELLATION`)
    and ``exact_rss`` is given, it is recomputed from the rows.

    Parameters
    ----------
    stats : NormalEquations -- ``XtX`` (k, d, d), ``Xty`` (k, d), ``yty`` (k,), ``rows`` (k,)
    W_prev : (k, d), s2_prev : (k,) -- kept by classes that cannot be refit
    dtype : the dtype the sums were formed in (float32 data: float32 BLAS)
    exact_rss : callable(W (k, d)) -> (k,) float64, optional -- every class's residual
        sum under ``W``, summed over its rows in float64

    Returns
    -------
    W (k, d), s2 (k,)
    """
    XtX, Xty, yty, rows = stats
    k, d = Xty.shape
    W = np.array(W_prev, dtype=np.float64, copy=True)
    s2 = np.array(s2_prev, dtype=np.float64, copy=True)
    kept = []
    inexact = []

    def solve(l):  # one small system of size d, on a worker thread (which has its own errstate)
        with np.errstate(all="ignore"):  # an overflow was refused by the caller's check_sums
            _solve(l)

    def _solve(l):
        if rows[l] <= d:
            kept.append(l)
            return
        try:
            c = scipy.linalg.cho_factor(XtX[l], check_finite=False)
            w = scipy.linalg.cho_solve(c, Xty[l], check_finite=False)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(XtX[l], Xty[l], rcond=None)[0]
        cross, quad = w @ Xty[l], w @ XtX[l] @ w
        rss = yty[l] - 2.0 * cross + quad
        W[l] = w
        if exact_rss is not None and rss < CANCELLATION * np.finfo(dtype).eps * (yty[l] + 2.0 * abs(cross) + abs(quad)):
            inexact.append(l)
        # rss from the normal equations is exact only to about eps * y'y: a noise-free
        # class gets that as its variance, not 0 or a denormal, so that its likelihoods
        # stay comparable with the other classes' (and a new task is not misclassified)
        floor = max(np.finfo(dtype).eps * yty[l] / rows[l], np.finfo(np.float64).tiny)
        s2[l] = max(max(rss, 0.0) / (rows[l] - d), floor)

    run_each(solve, range(k))  # the classes on several threads at once
    if inexact:
        inexact.sort()
        rss = exact_rss(W)
        for l in inexact:  # exact to about eps64 * y'y: the float64 floor applies
            floor = max(np.finfo(np.float64).eps * yty[l] / rows[l], np.finfo(np.float64).tiny)
            s2[l] = max(rss[l] / (rows[l] - d), floor)
    kept.sort()
    if kept:
        warnings.warn(
            f"components {kept} have no more rows than d = {d} ({rows[kept].round(1).tolist()}); "
            f"they keep their previous estimates",
            FallbackWarning,
            stacklevel=user_stacklevel(),
        )
    return W, s2


def refit(X, y, offsets, R, W_prev, s2_prev):
    """Weighted least squares per class: :func:`normal_equations` then :func:`solve_classes`.

    Returns
    -------
    W (k, d), s2 (k,), rows (k,) -- the weighted row count of each class
    """
    stats = normal_equations(X, y, offsets, R)

    def exact_rss(W):  # sum_i R_il ||y_i - X_i w_l||^2, in float64 over the rows
        return np.einsum("il,il->l", R, task_sse(X, y, offsets, W))

    W, s2 = solve_classes(stats, W_prev, s2_prev, X.dtype, exact_rss)
    return W, s2, stats.rows


@quiet
def classify_tasks(X, y=None, offsets=None, W=None, r2=None, p=None) -> ClassifyResult:
    """Classify tasks by likelihood and refit every class by least squares (Algorithm 4).

    One pass over the data: each chunk of tasks is classified and added to the normal
    equations of its classes at once.  A class whose residual sum from the normal
    equations lost too much to cancellation (float32 data with small noise, or
    noise-free data; see :data:`CANCELLATION`) has it recomputed from its rows, a
    second pass (not possible for a one-shot stream, which keeps the first value).

    Parameters
    ----------
    X : (N, d) float array, or a :class:`TaskStream` (then omit y and offsets and pass
        the rest by keyword)
    y : (N,) float array
    offsets : (n + 1,) int array -- tasks of any size >= 1
    W : (k, d) float array -- initial regression vectors (e.g. ``cluster_tasks(...).W``)
    r2 : (k,) float array, > 0 -- initial residual variances
    p : (k,) float array, optional
        Initial weights.  If given, ``-log p_l`` is added to the score (the MAP class);
        if None, the paper's rule (no prior term) is used.

    Returns
    -------
    ClassifyResult
        ``labels`` (n,), ``W`` (k, d), ``s2`` (k,), ``p`` (k,).

    Warns
    -----
    FallbackWarning
        A class with no more rows than d keeps its initial ``W`` and ``r2``.
    """
    if W is None or r2 is None:
        raise TypeError("classify_tasks() needs W and r2, the initial components and their variances")
    labels, stats, dtype = [], None, np.float64
    role = "classification tasks"
    if is_stream(X):  # every chunk is checked as it is read
        whole, chunks = None, task_chunks(X, y, offsets, min_size=1, role=role)
    else:  # values checked through the output: see _recheck
        whole = check_tasks(X, y, offsets, min_size=1, role=role, finite=False)
        chunks = task_chunks(*whole, min_size=1, role=role, finite=False)
    for ts in chunks:
        if stats is None:
            Wc, r2c, pc = check_params(W, r2, p, ts.X.shape[1], s2_name="r2")
            stats = NormalEquations.zeros(Wc.shape[0], ts.X.shape[1])
            dtype = ts.X.dtype
        lab = _classify_chunk(ts, Wc, r2c, pc, offset=sum(a.size for a in labels), whole=whole)
        members = np.split(np.argsort(lab, kind="stable"), np.cumsum(np.bincount(lab, minlength=Wc.shape[0]))[:-1])
        # classes on several threads at once: each adds to its own normal equations
        run_each(lambda l: _accumulate(stats, ts, l, members[l], np.ones(members[l].size)),
                 [l for l in range(len(members)) if members[l].size])
        labels.append(lab)
    if not (np.isfinite(stats.XtX).all() and np.isfinite(stats.yty).all()):
        _recheck(whole)
    check_sums(stats.XtX, "the normal equations X^T X", dtype)
    labels = np.concatenate(labels)
    k = Wc.shape[0]
    exact_rss = None
    if whole is not None:
        def exact_rss(W):
            return class_sse(whole.X, whole.y, whole.offsets, labels, W)
    elif not X.one_shot:  # a stream that can be read again
        def exact_rss(W):
            out, lo = np.zeros(k), 0
            for ts in task_chunks(X, min_size=1, role=role):
                hi = lo + ts.offsets.size - 1
                out += class_sse(ts.X, ts.y, ts.offsets, labels[lo:hi], W)
                lo = hi
            return out
    W_new, s2 = solve_classes(stats, Wc, r2c, dtype, exact_rss)
    p_new = np.bincount(labels, minlength=k) / labels.size
    return ClassifyResult(labels, W_new, s2, p_new)


def _recheck(whole) -> None:
    """Find a NaN or inf in arrays whose values were not checked up front.

    Classification reads X once: every row of every task is added to the normal
    equations of its class, and the diagonal of ``X^T X`` and ``y^T y`` are sums of
    squares, which no BLAS skips for a NaN or inf (only zeros may be skipped), so any
    bad value leaves them non-finite.  Then (or when the residual sums are non-finite
    first) X and y are checked exactly, and the error names the first bad index.
    """
    if whole is not None:
        check_finite(whole.X, "X")
        check_finite(whole.y, "y")


def _classify_chunk(ts, W, r2, p, offset: int, whole=None) -> np.ndarray:
    """Labels (n_chunk,) of one validated chunk: argmin of the paper's score."""
    with np.errstate(invalid="ignore", over="ignore"):  # a NaN or inf is reported below
        sse = task_sse(ts.X, ts.y, ts.offsets, W)
    if not np.isfinite(sse).all():
        _recheck(whole)
    check_sums(sse, "the residual sums of squares")
    t = np.diff(ts.offsets).astype(np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        score = sse / (2.0 * r2) + 0.5 * t[:, None] * np.log(r2)
        if p is not None:
            score -= np.log(p)
    dead = ~np.isfinite(score.min(axis=1))
    if dead.any():  # every component infinitely unlikely: no class to choose
        i = int(np.argmax(dead)) + offset
        raise ValueError(
            f"task {i} has zero likelihood under every component (SSE / (2 r2) overflows); "
            f"r2 = {r2.min():.3g} is too small for the residuals: expected larger variances"
        )
    return np.argmin(score, axis=1).astype(np.int64)
