"""Fit one pool of tasks of any sizes: roles by size, spectral start, then EM on all tasks.

The paper's Algorithm 1 takes three separate batches.  :func:`fit` takes one pool and
gives each task its roles by its size:

1. **Subspace** -- every task with ``t >= 2`` feeds the moment matrix M (Algorithm 2);
   U spans its top k eigenvectors.
2. **Heavy set** -- the largest tasks: by default those with at least
   ``max(2, ceil(sqrt(k) * log2(k + 1)))`` rows (the paper asks ``t_H`` of order
   ``sqrt(k)`` up to logarithms), the largest first, at most ``max_heavy`` of them
   (default ``max(500, 125 k)``);
   if fewer than ``8 k`` tasks are that large, the ``8 k`` largest tasks with
   ``t >= 2`` are used, and every other task as large as the last of them (Figure 2's
   tasks of 32 rows at k = 48: all of them, not 8 k = 384 of 1,920 equal tasks).  ``n_heavy`` overrides the count.
3. **Starts in the subspace** (:mod:`fastmlr.starts`) -- the heavy tasks are clustered
   in U's coordinates: weighted k-means++ on their projected estimates (``n_seeds``
   seeds) and, if asked, the paper's linkage clustering (Algorithm 3, ``linkages``).
   Each start runs a few EM iterations there (k dimensions instead of d: cheap), and
   the most likely one runs on to convergence.  Split-and-merge moves then repair the
   optimum EM cannot leave by itself (one component over two regimes while two share a
   third, or one left empty), kept only when they raise the likelihood
   (:func:`fastmlr.starts.split_merge`).
4. **EM on every task** (:mod:`fastmlr.em`) from that start mapped back to d
   dimensions, until the log-likelihood stops rising.  Its first E-step classifies
   every task (softly: Algorithm 4's rule with the prior, as posterior weights), and
   each M-step refits every component by weighted least squares.

5. **Moves after EM** (:mod:`fastmlr.repair`) -- components that lost their tasks are
   refitted to the tasks no component explains, a component whose residuals among the
   heavy tasks show two regimes (or whose variance is far above the others') is split,
   new components are fitted to the tasks no component explains; EM runs on from each,
   and a move is kept when it ends higher.  A start that needed a move is followed by
   a second one from ``seed + 1`` (starts, EM, moves), and the more likely optimum is
   kept (``diagnostics["restart"]``).

The spectral steps are what put EM near the global optimum; EM is what makes the
estimate use every example.  Measured on pools of 3,000-6,000 tasks of 4-32 rows
(k = 8, d = 32), the linkage clusterings put nearly every heavy task in one cluster,
while the k-means++ starts reach the likelihood of the best of flexmix's random
restarts; hence the default ``linkages=()``.  Without the split-and-merge moves, 16
seeds at k = 16 still ended in a merged optimum on 1 pool in 8; with them, 4 seeds
reached the optimum of EM started at the truth on all of 162 seeded pools (k = 8-16,
d = 16-64, 1,500-8,000 tasks, orthonormal and Gaussian W;
``benchmarks/fit_robustness.py``), and the default ``n_seeds = max(4, ceil(k / 2))``,
twice that at k = 16, on all of 232.

If the pooled second moment of x is far from the identity, steps 1-2 run on whitened
features ``x T`` with ``T = S^{-1/2}``, ``S = X^T X / N`` (no centring: the model has no
intercept), and their estimates are mapped back (``W = W' T``).  EM is equivariant
under linear maps of x, so it runs on the original features.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import em as _em
from . import em_passes as _em_passes
from ._parallel import one_blas_thread
from ._validation import FallbackWarning, check_int, check_real, check_sums, quiet, user_stacklevel
from .starts import kmeans_pp, projected_em, projected_em_batch, split_merge
from .cluster import LINKAGES, cluster_tasks
from .subspace import _moment_stats, top_eigenvectors
from .model import Model
from .scan import PoolScan, moment_stride, scan_stream, second_moment_chunk
from .repair import repair, repair_set
from .select_k import choose_k, merge_closest
from .stream import collect, is_stream
from .tasks import TaskSet, as_tasks, check_k, select_tasks, takes_tasks

__all__ = ["Model", "fit", "choose_heavy", "heavy_min_rows", "whitening_transform", "select_tasks"]

_log = logging.getLogger("fastmlr")

#: Set while ``fit`` runs inside a move after EM (:mod:`fastmlr.repair`), on a few
#: hundred tasks: its steps are not logged as the user's fit's.
_INNER: contextvars.ContextVar = contextvars.ContextVar("fastmlr_inner_fit", default=False)


def inner_fit(tasks, k, **options) -> Model:
    """:func:`fit` as a step of another fit: the same, without its log lines and without
    its warnings (a component the step's own fit kept is not one of the user's)."""
    token = _INNER.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            return fit(tasks, k, **options)
    finally:
        _INNER.reset(token)

#: Whitening is switched on when an eigenvalue of the pooled second moment of x is
#: further than this from 1 (and further than 6 standard errors of its estimate).
WHITEN_TOL = 0.25

#: Mean squares of y and eigenvalues of X^T X / N below this are refused: 1e10 times the
#: smallest normal float64, so that EM's variance floor (1e-10 of the mean y^2) and
#: the whitening stay out of the subnormal range.
_UNDERFLOW = 1e10 * np.finfo(np.float64).tiny

#: EM iterations every start runs in the subspace before the most likely one goes on
#: (3 and 5 chose the same starts on the pools of benchmarks/flexmix_compare.py and at
#: k = 16, d = 64).
_SHORT_RUN = 3

#: Tolerance of the subspace EM that finishes the best start: it only has to place the
#: start in the right basin, the EM on all tasks does the rest.
_PROJECTED_TOL = 1e-3

#: Besides ``n_seeds`` seeds drawn over the whole heavy set, ``n_seeds // 2`` are drawn
#: over its ``_CORE_PER_K * k`` largest tasks alone when the heavy set is larger: at
#: k = 32, d = 256 (Figure 2's pool with 1/16 of its light tasks) the seeds over the
#: whole heavy set, most of whose tasks have 32 rows, all ended at matched error 2.5,
#: the core seeds at the optimum of EM (0.177).
_CORE_PER_K = 8


def whitening_transform(X, *, tol=WHITEN_TOL, S=None, N=None):
    """Pooled second moment S = X^T X / N and whether x needs whitening.

    ``S`` (d, d) may be given when it is already known (e.g. from per-task statistics).

    Returns
    -------
    T : (d, d) float64 -- ``S^{-1/2}`` (symmetric)
    needed : bool -- an eigenvalue of S is further than ``tol`` (and than 6 standard
        errors) from 1
    eigenvalues : (d,) float64 -- of S, decreasing
    """
    if X is not None:
        N, d = X.shape
    if S is None:
        S = (X.T @ X).astype(np.float64) / N
    check_sums(S, "the second moment X^T X / N")
    vals, vecs = scipy.linalg.eigh(S)
    if vals[-1] < _UNDERFLOW:
        if vals[-1] <= 0 and not np.any(X):
            raise ValueError("X is 0 on every row; expected features that vary")
        big = float(np.max(np.abs(X)))  # S underflowed to 0 or to the subnormal range
        raise ValueError(
            f"X is too small in magnitude (largest |x| is {big:.3g}: the largest eigenvalue of X^T X / N, "
            f"{vals[-1]:.3g}, is in float64's underflow range); rescale X (e.g. divide it by its largest "
            f"absolute value) and scale W back"
        )
    if vals[0] <= 1e-12 * vals[-1]:
        raise ValueError(
            f"X has (nearly) linearly dependent columns (smallest eigenvalue of X^T X / N is {vals[0]:.3g}); "
            f"remove all-zero or duplicated features (or ones that are combinations of others)"
        )
    dev = np.abs(vals - 1.0).max()
    needed = bool(dev > max(tol, 6.0 * math.sqrt(2.0 / N) * max(1.0, vals[-1])))
    T = (vecs / np.sqrt(vals)) @ vecs.T
    return T, needed, vals[::-1].copy()


def _second_moment(summed, N: int, d: int):
    """The pooled second moment S (d, d) from ``summed(stride)`` (``sum x x^T`` over the
    rows whose index is a multiple of ``stride``, :func:`fastmlr.scan.moment_stride`),
    and the number of rows it averages.  Should the sampled rows leave S (nearly)
    singular -- a feature seen on a few rows only -- every row is summed instead."""
    stride = moment_stride(N, d)
    used = -(-N // stride)
    S = summed(stride) / used
    if stride > 1:
        vals = scipy.linalg.eigvalsh(S)
        if not (vals[-1] >= _UNDERFLOW and vals[0] > 1e-12 * vals[-1]):
            S, used = summed(1) / N, N
    return S, used


def heavy_min_rows(k: int) -> int:
    """Rows a task needs to count as heavy by default: ``max(2, ceil(sqrt(k) log2(k + 1)))``
    (the paper asks ``t_H`` of order ``sqrt(k)`` up to logarithms)."""
    return max(2, math.ceil(math.sqrt(k) * math.log2(k + 1)))


def choose_heavy(sizes: np.ndarray, k: int, *, n_heavy=None, max_heavy=2000) -> np.ndarray:
    """Indices of the heavy tasks: the largest tasks (ties by position), see the module doc.

    Parameters
    ----------
    sizes : (n,) int -- rows per task
    k : int
    n_heavy : int, optional -- take exactly this many of the largest tasks
    max_heavy : int -- cap on the default count

    Returns
    -------
    (n_H,) int64 indices into the pool, largest tasks first
    """
    order = np.argsort(-sizes, kind="stable")
    eligible = int((sizes >= 2).sum())
    if n_heavy is not None:
        n_heavy = check_int(n_heavy, "n_heavy", low=k, expected=f"an integer >= k = {k}")
        if n_heavy > eligible:
            raise ValueError(f"n_heavy is {n_heavy} but only {eligible} tasks have at least 2 rows; expected n_heavy <= {eligible}")
        return order[: int(n_heavy)]
    if max_heavy < k:
        raise ValueError(f"max_heavy is {max_heavy} but k is {k}; the heavy set needs at least k tasks, "
                         f"so use max_heavy >= {k}")
    count = int((sizes >= heavy_min_rows(k)).sum())
    if count < 8 * k and eligible > 8 * k:  # the 8 k largest, with every task as large as the last
        count = int((sizes >= max(sizes[order[8 * k - 1]], 2)).sum())
    count = min(max(count, 8 * k), max_heavy, eligible)
    if count < k:
        raise ValueError(
            f"k is {k} but the pool has only {eligible} tasks with at least 2 rows; "
            f"the clustering step needs at least k of them"
        )
    return order[:count]


def _projected_starts(heavy, U, sizes, kk, heavy_idx, linkages, n_seeds, seed, diag_starts):
    """Run EM in the subspace from every start; return the best :class:`ProjectedStart`.
    ``heavy`` is the task set of the heavy tasks ``heavy_idx`` (whitened if x is)."""
    Z = np.ascontiguousarray(heavy.X.astype(np.float64, copy=False) @ U)
    zts = TaskSet(Z, np.ascontiguousarray(heavy.y, dtype=np.float64), heavy.offsets)
    zstats = _em.task_stats(*zts)
    th = sizes[heavy_idx].astype(np.float64)
    G = zstats.b / th[:, None]  # projected per-task estimates U^T X_i^T y_i / t_i
    ybar2 = float(zstats.c.sum() / zts.offsets[-1])
    found = []
    for linkage in linkages:
        t1 = time.perf_counter()
        c = cluster_tasks(heavy, U, kk, linkage=linkage)
        p0 = np.maximum(c.p, 1.0 / (10.0 * kk))
        found.append((c.W @ U, np.maximum(c.s2, 1e-6 * ybar2), p0 / p0.sum(), linkage))
        diag_starts.append({"start": linkage, "seconds": time.perf_counter() - t1})
    if n_seeds:
        t1 = time.perf_counter()
        rng = np.random.default_rng(seed)
        V0 = kmeans_pp(G, th, kk, rng, n_starts=n_seeds)  # (S, k, r)
        core = min(_CORE_PER_K * kk, G.shape[0])
        n_core = n_seeds // 2 if core < G.shape[0] else 0
        if n_core:  # seeds from the largest tasks alone, whose estimates are the least noisy
            V0 = np.concatenate([V0, kmeans_pp(G[:core], th[:core], kk, rng, n_starts=n_core)])
        n_full, n_seeds = n_seeds, V0.shape[0]
        # variances and weights from the heavy tasks' nearest centres, every seed at once
        Vf = V0.reshape(n_seeds * kk, -1)
        sse = _em._sse_stats(zstats, Vf).reshape(n_seeds, kk, -1)
        lab = np.argmin(sse / th[None, None, :], axis=1)  # (S, n_H)
        flat = (np.arange(n_seeds)[:, None] * kk + lab).ravel()
        rows = np.bincount(flat, weights=np.tile(th, n_seeds), minlength=n_seeds * kk)
        s2 = np.bincount(flat, weights=np.take_along_axis(sse, lab[:, None, :], axis=1).ravel(),
                         minlength=n_seeds * kk)
        s2 = np.where(rows > 0, s2 / np.maximum(rows, 1.0), ybar2).reshape(n_seeds, kk)
        p0 = (np.bincount(flat, minlength=n_seeds * kk) + 1.0).reshape(n_seeds, kk)
        each = (time.perf_counter() - t1) / n_seeds
        for j in range(n_seeds):
            name = f"kmeans++ seed {j}" if j < n_full else f"kmeans++ core seed {j}"
            found.append((V0[j], np.maximum(s2[j], 1e-6 * ybar2), p0[j] / p0[j].sum(), name))
            diag_starts.append({"start": name, "seconds": each})
    # every start has a short run, all at once
    t1 = time.perf_counter()
    found = projected_em_batch(zts, zstats, found, max_iter=_SHORT_RUN)
    for f, dg in zip(found, diag_starts):
        dg.update(projected_loglik=f.loglik, projected_iterations=f.iterations,
                  seconds=dg["seconds"] + (time.perf_counter() - t1) / len(found))
    # the most likely start runs on to convergence
    best = max(found, key=lambda f: f.loglik)
    best = projected_em(zts, zstats, best.V, best.s2, best.p, best.label, tol=_PROJECTED_TOL)
    return split_merge(zts, zstats, G, th, best, tol=_PROJECTED_TOL)


#: How ``fit`` may run EM: "stats" (exact, per-task statistics), "passes" (generalized
#: EM in two passes over the rows per iteration, :mod:`fastmlr.em_passes`), "rows"
#: (exact, k weighted Gram matrices from the rows at every iteration: k N d^2, for
#: reference), "auto" ("stats" when they fit in memory and cost less, else "passes").
EM_PATHS = ("auto", "stats", "passes", "rows")


def _stats_pay(n: int, N: int, d: int) -> bool:
    """Whether per-task statistics fit in memory (``_em.STATS_MAX_BYTES``) and an EM
    iteration over them (two products of k x n x d(d+1)/2) costs less than the
    passes' three products of k x N x d."""
    return 4 * n * d * (d + 1) <= _em.STATS_MAX_BYTES and n * (d + 1) <= 3 * N


@quiet
@one_blas_thread
@takes_tasks
def fit(tasks, k, *, whiten="auto", linkages=(), n_seeds=None, seed=0, n_heavy=None,
        max_heavy=None, tol=2e-6, max_iter=300, k_max=None, em_path="auto", progress=None) -> Model:
    """Fit a mixture of k linear regressions to one pool of tasks of any sizes.

    Parameters
    ----------
    tasks : (X, y, offsets), TaskSet or TaskStream
        The pool: ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,), tasks of any sizes
        (empty tasks are ignored).  A :class:`TaskStream` is never gathered in memory:
        one pass reads what the start needs, a second its heavy tasks, and EM reads it
        once per pass (``em_path="passes"``), keeping (n, k) responsibilities and
        k x d state.  A :class:`fastmlr.scan.PoolScan` (a pool already scanned,
        e.g. on a Dask cluster by :func:`fastmlr.dask.fit`) is fitted the same way.  The
        old form ``fit(X, y, offsets, k)`` still works, with a ``DeprecationWarning``.
    k : int or None
        Number of components; None chooses it (see :func:`fastmlr.select_k.choose_k`).
    whiten : "auto", True or False
        Whiten x for the spectral start; "auto" does when the pooled second moment is far
        from the identity.
    linkages : sequence of {"average", "single"}
        Extra starts from the paper's clustering of the heavy tasks, one per linkage
        (default none).
    n_seeds : int, optional -- k-means++ starts in the subspace over the heavy set (default
        ``max(4, ceil(k / 2))``: local optima multiply with k), and ``n_seeds // 2`` more
        over its ``8 k`` largest tasks when it has more
    seed : int -- seed of the k-means++ starts (and ``seed + 1`` of a second start, run
        when the first one's optimum needed a move after EM)
    n_heavy : int, optional -- number of heavy tasks (the largest); default from the sizes
    max_heavy : int, optional -- cap on the default number of heavy tasks (default
        ``max(500, 125 k)``)
    tol : float -- EM stops when an iteration gains less than ``tol`` per row (``tol * N``
        in log-likelihood; independent of the units of y).  The default 2e-6 stops where
        1e-6 of the log-likelihood did for noise of unit scale (1.4-1.9 nats per row)
    max_iter : int -- EM iteration cap
    k_max : int, optional -- largest k tried when k is None (default
        ``min(n // 10, 32, (N - 1) // d)``, at least 1, for n tasks and N rows)
    em_path : {"auto", "stats", "passes", "rows"} -- how EM runs (``EM_PATHS``):
        "stats" exact EM over per-task statistics X_i^T X_i; "passes" generalized EM in
        two passes over the rows per iteration (:mod:`fastmlr.em_passes`; same optimum,
        no k N d^2 cost); "rows" exact EM from k weighted Gram matrices per iteration
        (for reference); "auto" takes "stats" when they fit in memory and cost less
        per iteration, else "passes"
    progress : callable(str) or None -- told what runs, and the log-likelihood after every EM
        pass; the same lines go to the ``logging`` logger ``"fastmlr"`` at level INFO

    Returns
    -------
    Model
        ``W`` (k, d), ``s2`` (k,), ``p`` (k,), ``transform`` (d, d), ``diagnostics``.

    Raises
    ------
    ValueError
        Bad arrays, no task with two rows, k larger than the pool supports.
    """
    def say(msg):
        if not _INNER.get():
            _log.info(msg)
        if progress is not None:
            progress(msg)

    t_start = time.perf_counter()
    scan = tasks if isinstance(tasks, PoolScan) else None  # a pool scanned elsewhere (fastmlr.dask)
    if scan is None:
        tasks = as_tasks(tasks)
    if scan is not None or is_stream(tasks):
        if scan is None:
            say("reading the stream")
            scan = scan_stream(tasks)
        ts = None
        sizes, d = scan.sizes, scan.d
        n, N = sizes.size, scan.N
        x_shape, n_given = (N, d), n + scan.empty
    else:
        ts0 = collect(*tasks, role="pool")
        sizes0 = np.diff(ts0.offsets)
        nonempty = np.flatnonzero(sizes0 > 0)
        ts = ts0 if nonempty.size == sizes0.size else select_tasks(ts0, nonempty)
        n, d, N = ts.offsets.size - 1, ts.X.shape[1], int(ts.offsets[-1])
        sizes = np.diff(ts.offsets)
        x_shape, n_given = ts0.X.shape, sizes0.size
    if not (isinstance(whiten, (bool, np.bool_)) or (isinstance(whiten, str) and whiten == "auto")):
        raise ValueError(f"whiten is {whiten!r}; expected 'auto', True or False")
    if em_path not in EM_PATHS:
        raise ValueError(f"em_path is {em_path!r}; expected one of {', '.join(map(repr, EM_PATHS))}")
    if not isinstance(linkages, (str, tuple, list)):
        raise TypeError(f"linkages is {linkages!r}; expected a sequence of names from {LINKAGES}")
    linkages = tuple(linkages) if not isinstance(linkages, str) else (linkages,)
    if any(l not in LINKAGES for l in linkages):
        raise ValueError(f"linkages is {linkages!r}; expected a sequence of names from {LINKAGES}")
    if n_seeds is not None:
        n_seeds = check_int(n_seeds, "n_seeds", low=0, expected="a non-negative integer or None")
    if not linkages and n_seeds == 0:
        raise ValueError("linkages is empty and n_seeds is 0; expected at least one start")
    if max_heavy is not None:
        max_heavy = check_int(max_heavy, "max_heavy", low=1)
    max_iter = check_int(max_iter, "max_iter", low=1)
    seed = check_int(seed, "seed", low=0)
    tol = check_real(tol, "tol", low=0)
    if N == 0:
        raise ValueError(f"the pool has no rows (X has shape {x_shape}; all {n_given} tasks are empty); "
                         f"expected tasks with rows that have a target (a file whose every row is a query row "
                         f"has none to fit)")
    ms = _em.mean_square(ts.y) if ts is not None else scan.yy / N  # inf if it overflowed: refused below
    if ms < _UNDERFLOW:  # EM's variances would be subnormal: its likelihoods overflow
        y_max = float(np.max(np.abs(ts.y))) if ts is not None else scan.y_max
        if y_max == 0:
            raise ValueError("y is 0 on every row; a mixture of regressions needs a target that varies")
        raise ValueError(f"y is too small in magnitude (largest |y| is {y_max:.3g}: mean y^2 = "
                         f"{ms:.3g} is in float64's underflow range); rescale y (e.g. divide it by its largest "
                         f"absolute value) and scale W and s2 back")
    sub_idx = np.flatnonzero(sizes >= 2)
    if sub_idx.size == 0:
        raise ValueError("the pool has no task with at least 2 rows; the subspace step needs some")
    diag: dict = {"n_tasks": int(n), "n_rows": N, "d": int(d), "empty_tasks_ignored": int(n_given - n)}
    seconds: dict = {}

    stats = None
    if ts is None and em_path in ("stats", "rows"):
        raise ValueError(f"em_path is {em_path!r} but X is a TaskStream; a stream is fitted by em_path='passes' "
                         f"(or 'auto'), which reads it once per pass")
    use_stats = em_path == "stats" or (em_path == "auto" and ts is not None and _stats_pay(n, N, d))
    if use_stats:
        say("per-task statistics")
        t0 = time.perf_counter()
        stats = _em.task_stats(*ts)
        seconds["task_stats"] = time.perf_counter() - t0
    path = "stats" if use_stats else ("rows" if em_path == "rows" else "passes")
    diag["em_path"] = path

    say("whitening check")
    t0 = time.perf_counter()
    # the pooled second moment is the sum of the per-task Gram matrices when we have them
    # (a product with ones: BLAS reads the (n, d(d+1)/2) array at memory speed; np.sum along
    # axis 0 took four times as long)
    if stats is not None:
        S, used = _em.unpack(np.ones(n) @ stats.A, d) / N, N
    else:
        S, used = _second_moment(scan.second_moment if ts is None else (lambda s: second_moment_chunk(ts.X, 0, s)),
                                 N, d)
    T, needed, s_eig = whitening_transform(ts.X if ts is not None else None, S=S, N=used)
    S_inv = T @ T  # (X^T X / N)^{-1}: the preconditioner of the passes' W step
    check_sums(np.array(ms), "the mean square of y")
    whitened = needed if whiten == "auto" else bool(whiten)
    if not whitened:
        T = np.eye(d)
    diag["whitening"] = {"applied": whitened, "second_moment_eigenvalues": [float(v) for v in s_eig[[0, -1]]]}

    say("moment matrix")
    if ts is None:
        # b = mean of y x over half a task is linear in x, so whitening maps M to T M T
        M = scan.moment.moment()
        if whitened:
            M = T @ M @ T

        def whitened_tasks(h):
            return TaskSet(np.ascontiguousarray(h.X @ T.astype(h.X.dtype)), h.y, h.offsets) if whitened else h

        def heavy_tasks(idx):
            return whitened_tasks(scan.gather(idx))

        def heavy_later(idx):
            fetched = scan.gather_later(idx)
            return lambda: whitened_tasks(fetched())

        pool = scan.pool()
        floor = 1e-10 * max(ms, np.finfo(np.float64).tiny)
    else:
        ts_w = TaskSet(np.ascontiguousarray(ts.X @ T.astype(ts.X.dtype)), ts.y, ts.offsets) if whitened else ts
        sub = ts_w if sub_idx.size == n else select_tasks(ts_w, sub_idx)
        M = _moment_stats(*sub).moment()

        def heavy_tasks(idx):
            return select_tasks(ts_w, idx)

        def heavy_later(idx):
            return lambda: heavy_tasks(idx)

        pool = _em_passes.array_pool(ts)
        floor = _em.s2_floor(ts)
    eig = scipy.linalg.eigh(M, eigvals_only=True)[::-1]
    seconds["subspace"] = time.perf_counter() - t0
    diag["roles"] = {"subspace_tasks": int(sub_idx.size)}

    def em_from(W0, s20, p0):
        if path == "passes":
            return _em_passes.run_gem(pool, W0, s20, p0, S_inv, floor=floor, tol=tol, max_iter=max_iter,
                                      resp=False, progress=say)
        return _em.run_em(ts, W0, s20, p0, tol=tol, max_iter=max_iter, stats=stats, progress=say)

    def merged(fitted):
        """EM from ``fitted`` with its two closest components merged (k - 1 components)."""
        res, info = fitted
        W0, s20, p0, pair = merge_closest(res.W, res.s2, res.p, S_metric)
        kk = W0.shape[0]
        say(f"k={kk}: EM from k={kk + 1} with components {pair[0]} and {pair[1]} merged")
        t1 = time.perf_counter()
        res = em_from(W0, s20, p0)
        info = dict(info, chosen_start=f"k={kk + 1}, components {pair[0]} and {pair[1]} merged",
                    em_iterations=int(res.loglik.size - 1), em_converged=bool(res.converged),
                    kept_components=res.kept, seconds={"starts": 0.0, "em": time.perf_counter() - t1})
        return res, info

    def fit_k(kk):
        kk = check_k(kk, upper=n, what="(the number of non-empty tasks in the pool)")
        if N <= kk * d:
            raise ValueError(
                f"k is {kk} but the pool has {N} rows; every component needs more than "
                f"d = {d} rows, so use k <= {max(1, (N - 1) // d)}")
        cap = max_heavy if max_heavy is not None else max(500, 125 * kk)
        heavy_idx = choose_heavy(sizes, kk, n_heavy=n_heavy, max_heavy=cap)
        seeds = n_seeds if n_seeds is not None else max(4, math.ceil(kk / 2))
        r = min(kk, d)
        U = top_eigenvectors(M, r)[1]
        rep_idx = repair_set(sizes, heavy_idx, 4 * cap) if kk >= 3 else heavy_idx
        clock = {"starts": 0.0, "em": 0.0}

        def attempt(start_seed, starts):
            """Starts from ``start_seed``, EM on all tasks, the moves after it."""
            t1 = time.perf_counter()
            say(f"k={kk}: starts in the subspace" + ("" if start_seed == seed else f" (seed {start_seed})"))
            heavy = heavy_tasks(heavy_idx)
            best = _projected_starts(heavy, U, sizes, kk, heavy_idx, linkages, seeds, start_seed, starts)
            # the moves read more tasks: asked for now, held only once EM is done (a pool
            # held by other processes sends them while EM runs)
            rep_tasks = heavy_later(rep_idx) if kk >= 3 and rep_idx.size != heavy_idx.size else None
            if rep_tasks is not None:
                heavy = None
            W0 = best.V @ U.T
            if whitened:
                W0 = W0 @ T
            t3 = time.perf_counter()
            say(f"k={kk}: EM on all tasks")
            res = em_from(W0, best.s2, best.p)
            moves: list = []
            if kk >= 3:
                rep = heavy if rep_tasks is None else rep_tasks()
                res, moves = repair(res, rep, em_from, T=T if whitened else None, progress=say)
            clock["starts"] += t3 - t1
            clock["em"] += time.perf_counter() - t3
            return res, moves, best, starts

        res, moves, best, starts = attempt(seed, [])
        restart = None
        if any(m["kept"] for m in moves) and not _INNER.get():
            # the start needed repair: its optimum may still lack a regime that no statistic
            # shows, so a second start (seed + 1) runs and the more likely optimum is kept
            # (at k = 32, d = 128 and 5,000 tasks of 4-32 rows, seed 0 ended a regime short;
            # seeds 1, 2 and 3 reached the optimum of EM started at the truth)
            second = attempt(seed + 1, [])
            kept = bool(second[0].loglik[-1] > res.loglik[-1])
            restart = {"seed": seed + 1, "loglik": float(second[0].loglik[-1]), "kept": kept,
                       "split_moves": second[1]}
            if kept:
                restart["loglik_first"] = float(res.loglik[-1])
                res, moves, best, starts = second
        info = {"heavy_tasks": int(heavy_idx.size), "heavy_min_rows": int(sizes[heavy_idx].min()), "split_moves": moves,
                "subspace_rank": r, "starts": starts, "chosen_start": best.label, "restart": restart,
                "em_iterations": int(res.loglik.size - 1),
                "em_converged": bool(res.converged), "kept_components": res.kept,
                "seconds": dict(clock)}
        return res, info

    if k is None:
        S_metric = np.linalg.inv(S_inv)  # distances between components in the metric of x
        k, (res, info), diag["k_selection"] = choose_k(fit_k, merged, eig, n=n, d=d, rows=N,
                                                       k_max=k_max, progress=say)
    else:
        res, info = fit_k(k)
    diag["k"] = int(k)
    diag["roles"].update({key: info.pop(key) for key in ("heavy_tasks", "heavy_min_rows", "subspace_rank")})
    seconds.update(info.pop("seconds"))
    diag.update(info)
    diag["loglik"] = float(res.loglik[-1])
    diag["loglik_history"] = [float(v) for v in res.loglik]
    diag["converged"] = bool(res.converged)
    diag["moment_eigenvalues"] = [float(v) for v in eig[: min(d, 2 * k + 4)]]
    seconds["total"] = time.perf_counter() - t_start
    diag["seconds"] = seconds
    order = np.argsort(-res.p, kind="stable")  # components by decreasing weight
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    diag["kept_components"] = sorted(int(rank[l]) for l in res.kept)  # numbered as in the model
    if diag["kept_components"]:
        warnings.warn(
            f"components {diag['kept_components']} (weights {res.p[order][diag['kept_components']].round(4).tolist()}) "
            f"had no more than d = {d} weighted rows during EM and kept their last estimates; "
            f"the pool may support fewer components (try k=None)",
            FallbackWarning,
            stacklevel=user_stacklevel(),
        )
    return Model(np.ascontiguousarray(res.W[order]), res.s2[order].copy(), res.p[order].copy(), T, diag)
