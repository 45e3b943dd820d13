"""Stage 3 -- classification of light tasks and the refined estimates (Algorithm 4).

Each task goes to the component of largest likelihood (:mod:`fastmlr.likelihood`;
with ``p`` omitted, the paper's rule without a prior term); then each class is refit
by least squares over all of its rows (:mod:`fastmlr.lstsq`), with
``s2_l = RSS_l / (rows_l - d)`` (or ``RSS_l / rows_l`` with ``variance="ml"``) and
``p_l = |C_l| / n``.

The three steps: per chunk of whole tasks, labels (from the chunk's log-likelihoods)
and the :class:`~fastmlr.lstsq.NormalEquations` of its classes; combine by ``+``;
finalize by :func:`~fastmlr.lstsq.solve_classes`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._parallel import one_blas_thread, run_each
from ._validation import FallbackWarning, check_params, check_sums, quiet
from .likelihood import task_log_joint
from .lstsq import NormalEquations, VARIANCES, add_class_rows, refit, solve_classes
from .lstsq import normal_equations as _normal_equations
from .residuals import class_sse
from .stream import is_stream, task_chunks
from .tasks import as_tasks, check_finite, check_tasks, renamed_keyword, takes_tasks

__all__ = ["ClassifyResult", "classify_tasks", "classify_chunk"]


def normal_equations(X, y, offsets, R):
    """:func:`fastmlr.lstsq.normal_equations` of the arrays ``X``, ``y``, ``offsets``
    (kept here for callers of its earlier location)."""
    from .tasks import TaskSet

    return _normal_equations(TaskSet(X, y, offsets), R)


class ClassifyResult(NamedTuple):
    """Output of :func:`classify_tasks`.

    Attributes
    ----------
    labels : (n,) int64 -- class of each task
    W : (k, d) float64 -- least-squares regression vector of each class
    s2 : (k,) float64 -- noise variance of each class: ``RSS_l / (rows_l - d)``
        (unbiased, the default) or ``RSS_l / rows_l`` (maximum likelihood), as
        ``classify_tasks``'s ``variance`` chose
    p : (k,) float64 -- fraction of tasks in each class
    """

    labels: np.ndarray
    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray


@quiet
@one_blas_thread
@renamed_keyword("r2", "s2")
@takes_tasks
def classify_tasks(tasks, W, s2, p=None, *, variance: str = "unbiased") -> ClassifyResult:
    """Classify tasks by likelihood and refit every class by least squares (Algorithm 4).

    One pass over the data: each chunk of tasks is classified and added to the normal
    equations of its classes at once.  A class whose residual sum from the normal
    equations lost too much to cancellation (float32 data with small noise, or
    noise-free data; see :data:`fastmlr.lstsq.CANCELLATION`) has it recomputed from
    its rows, a second pass (not possible for a one-shot stream, which keeps the
    first value).

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,); tasks of any size >= 1.
    W : (k, d) float array -- initial regression vectors (e.g. ``cluster_tasks(...).W``)
    s2 : (k,) float array, > 0 -- initial noise variances (e.g. ``cluster_tasks(...).s2``)
    p : (k,) float array, optional
        Initial weights.  If given, ``log p_l`` enters the likelihood (the MAP class);
        if omitted, the paper's rule (no prior term) is used.
    variance : {"unbiased", "ml"}
        The refit variance: ``RSS / (rows - d)`` (default, Algorithm 4) or the
        maximum-likelihood ``RSS / rows``.

    Returns
    -------
    ClassifyResult
        ``labels`` (n,), ``W`` (k, d), ``s2`` (k,), ``p`` (k,).

    Warns
    -----
    FallbackWarning
        A class with no more rows than d keeps its initial ``W`` and ``s2``.

    See Also
    --------
    cluster_tasks : the initial estimates of Algorithm 1.
    fastmlr.posterior : soft assignments under a fixed mixture.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 3, s2=0.01, seed=0)
    >>> tasks = fastmlr.sample_tasks(W, s2, p, 10, n_tasks=40, seed=1)
    >>> r = fastmlr.classify_tasks(tasks, W, s2)
    >>> r.W.shape, bool((r.labels == tasks.z).all())
    ((2, 3), True)
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance is {variance!r}; expected one of {', '.join(map(repr, VARIANCES))}")
    tasks = as_tasks(tasks)
    labels, stats, dtype = [], None, np.float64
    role = "classification tasks"
    if is_stream(tasks):  # every chunk is checked as it is read
        whole, chunks = None, task_chunks(tasks, min_size=1, role=role)
    else:  # values checked through the output: see _recheck
        whole = check_tasks(*tasks, min_size=1, role=role, finite=False)
        chunks = task_chunks(whole, min_size=1, role=role, finite=False)
    for ts in chunks:
        if stats is None:
            Wc, s2c, pc = check_params(W, s2, p, ts.X.shape[1])
            stats = NormalEquations.zeros(Wc.shape[0], ts.X.shape[1])
            dtype = ts.X.dtype
        labels.append(classify_chunk(ts, Wc, s2c, pc, stats, offset=sum(a.size for a in labels), whole=whole))
    if not (np.isfinite(stats.XtX).all() and np.isfinite(stats.yty).all()):
        _recheck(whole)
    check_sums(stats.XtX, "the normal equations X^T X", dtype)
    labels = np.concatenate(labels)
    k = Wc.shape[0]
    exact_rss = None
    if whole is not None:
        def exact_rss(W):
            return class_sse(whole.X, whole.y, whole.offsets, labels, W)
    elif not tasks.one_shot:  # a stream that can be read again
        def exact_rss(W):
            out, lo = np.zeros(k), 0
            for ts in task_chunks(tasks, min_size=1, role=role):
                hi = lo + ts.offsets.size - 1
                out += class_sse(ts.X, ts.y, ts.offsets, labels[lo:hi], W)
                lo = hi
            return out
    W_new, s2_new = solve_classes(stats, Wc, s2c, dtype, exact_rss, variance=variance)
    p_new = np.bincount(labels, minlength=k) / labels.size
    return ClassifyResult(labels, W_new, s2_new, p_new)


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


def classify_chunk(ts, W, s2, p, stats: NormalEquations, *, offset: int = 0, whole=None) -> np.ndarray:
    """The per-chunk step of :func:`classify_tasks`: the labels (n_chunk,) of one
    validated chunk of whole tasks, its rows added to their classes' normal equations
    ``stats`` (in place).  ``W``, ``s2``, ``p`` as :func:`fastmlr._validation.check_params`
    returns them; ``offset`` numbers the chunk's first task in messages."""
    lab = _classify_chunk(ts, W, s2, p, offset=offset, whole=whole)
    members = np.split(np.argsort(lab, kind="stable"), np.cumsum(np.bincount(lab, minlength=W.shape[0]))[:-1])
    # classes on several threads at once: each adds to its own normal equations
    run_each(lambda l: add_class_rows(stats, ts, l, members[l], np.ones(members[l].size)),
             [l for l in range(len(members)) if members[l].size])
    return lab


def _classify_chunk(ts, W, s2, p, offset: int, whole=None) -> np.ndarray:
    """Labels (n_chunk,) of one validated chunk: the component of largest log joint."""
    with np.errstate(invalid="ignore", over="ignore"):  # a NaN or inf is reported below
        try:
            lj = task_log_joint(ts, W, s2, p, offset=offset, guard=False)  # reduced at once to labels
        except ValueError:
            _recheck(whole)  # a NaN or inf in X or y is the cause when there is one
            raise
    return np.argmax(lj, axis=1).astype(np.int64)
