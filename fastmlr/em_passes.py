"""Generalized EM over the rows, in passes of additive statistics.

For pools whose per-task statistics X_i^T X_i do not fit in memory (many tasks, large
d) and for pools read from disk.  Exact EM's M-step needs k weighted Gram matrices
``X^T diag(rho_l) X`` (k N d^2 per iteration: 43 s per iteration at k = 32, d = 256 and
850,000 rows).  Here an iteration reads the rows once and costs two products of size
N x d x k instead, both formed while a block of rows is in cache:

**E-pass** at (W, s2, p): per block of whole tasks, the predictions ``P = X W^T``,
each task's residual sums, its log-joint and responsibilities ``R`` (n, k), and the
additive statistics ``G_l = X^T rho_l (y - X w_l)`` (the negative half-gradient of
component l's weighted residual sum, rho_l the responsibilities spread over rows),
``rows_l = sum_i R_il t_i``, ``rss_l = sum_i R_il SSE_il``, ``sum_i R_il`` and the
log-likelihood.

**Step** along ``D_l = S^{-1} G_l / rows_l`` (S the pooled second moment of x): if
component l's weighted Gram matrix were ``rows_l S`` (as it is on average when the
responsibilities do not depend on x), its weighted residual sum would be
``rss_l - 2 a D_l.G_l + a^2 D_l.G_l`` at ``w_l + a D_l``, lowest at ``a = 1``.  So
``w_l += omega D_l``, ``s2_l = (rss_l - (2 omega - omega^2) D_l.G_l) / rows_l`` and
``p_l = mean_i R_il``, with no pass over the rows; the next E-pass checks the step.
Should the log-likelihood fall there (the weighted Gram matrix far from ``rows_l S``
along D_l), the step is taken again with exact line search: a **curvature pass**
``c_l = D_l^T X^T diag(rho_l) X D_l`` at the kept responsibilities gives
``a_l = D_l.G_l / c_l``, the exact minimizer of the weighted residual sum along D_l,
which lowers every component's weighted residual sum, so the expected complete-data
log-likelihood rises (a generalized EM).  Either way the log-likelihood never
decreases, and the fixed points are exact EM's (there G = 0).

EM's approach to its optimum is linear and slow where components overlap (the gain per
row falls by a factor of about 0.7 per iteration on Figure 2's pool).  Every two steps,
SQUAREM (Varadhan and Roland, 2008) extrapolates along them and keeps the extrapolated
point only if its log-likelihood is no lower (:func:`run_gem`): on pools at k = 8-32,
d = 32-256 it took 15-25% fewer products of N x d x k to a log-likelihood as high or
higher than the over-relaxed steps alone (``omega = 1.8``, which, under
extrapolation, did worse than plain steps).

Every pass is a sum over blocks of whole tasks (run on several threads, each with
single-threaded BLAS, added in a fixed order: the bits do not depend on the thread
count), so the same passes run over arrays in memory or over a stream of chunks read
from disk, keeping only (n, k) responsibilities (of the last E-pass and of the last
accepted point) and k x d state.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, NamedTuple

import numpy as np

from . import _config
from ._parallel import reduce_blocks
from .backend import kernels
from .em import EMResult
from .likelihood import log_joint_T, normalize
from .tasks import TaskSet, chunk_bounds, slice_tasks

__all__ = ["OMEGA", "PassStats", "Pool", "LocalPasses", "array_pool", "e_chunk",
           "curvature_chunk", "pass_stats", "run_gem"]

#: Over-relaxation of the W step, in units of the predicted step length (0 < OMEGA < 2
#: lowers the weighted residual sums when the prediction holds).  Measured with exact
#: line search along D in every step: without
#: extrapolation, 1.8 took 17 iterations where 1.0 took 26 (k = 32, d = 256, Figure 2's
#: pool with 1/16 of its light tasks); with SQUAREM's extrapolation (the default) 1.0
#: took the fewest products: 22, 27 and 81 against 24, 31 and 86 at 1.4 and 26, 34 and
#: 133 at 1.8 (k = 8, 16, 32; d = 32, 64, 128; 20,000-60,000 tasks of 4 rows and 40 k
#: of 32).
OMEGA = 1.0

#: Rows of one block of a pass: its (rows, k) temporaries and its share of X stay in
#: cache-sized pieces, and blocks spread over the threads.
_BLOCK_BYTES = _config.CACHE_BLOCK_BYTES

class PassStats(NamedTuple):
    """Additive statistics of one E-pass over a set of whole tasks.

    Attributes
    ----------
    loglik : float -- log-likelihood of the tasks
    G : (k, d) -- ``X^T rho_l (y - X w_l)`` per component
    rows : (k,) -- ``sum_i R_il t_i``
    rss : (k,) -- ``sum_i R_il ||y_i - X_i w_l||^2``
    resp : (k,) -- ``sum_i R_il``
    """

    loglik: float
    G: np.ndarray
    rows: np.ndarray
    rss: np.ndarray
    resp: np.ndarray

    def __add__(self, other):  # type: ignore[override]
        return PassStats(*(a + b for a, b in zip(self, other)))


class Pool(NamedTuple):
    """A re-readable pool: ``chunks()`` yields ``(first_task, TaskSet)`` for consecutive
    chunks of whole tasks, the same every time; ``n`` tasks, ``N`` rows, ``t`` (n,)
    float64 task sizes.

    :func:`run_gem` takes any object with ``n``, ``N`` and ``passes(k)`` (see
    :class:`LocalPasses`); ``fastmlr.dask`` gives one whose chunks stay on the workers."""

    chunks: Callable[[], Iterable]
    n: int
    N: int
    t: np.ndarray

    def passes(self, k: int) -> "LocalPasses":
        """The two passes of :func:`run_gem` over this pool, for k components."""
        return LocalPasses(self, k)


def array_pool(ts: TaskSet) -> Pool:
    """A :class:`Pool` over validated arrays in memory (one chunk)."""
    t = np.diff(ts.offsets).astype(np.float64)
    return Pool(lambda: iter([(0, ts)]), int(t.size), int(ts.offsets[-1]), t)


def _blocks(ts: TaskSet) -> np.ndarray:
    return chunk_bounds(ts.offsets, max(1, _BLOCK_BYTES // (ts.X.shape[1] * ts.X.itemsize)))


#: Per-thread buffers of the blocks' temporaries, kept from call to call (see _buffer),
#: each up to _KEEP_BYTES (a block's (rows, k) products are 8 MB x k / d).
_local = threading.local()
_KEEP_BYTES = 16 << 20


def _buffer(name: str, shape, dtype=np.float64) -> np.ndarray:
    """A C-contiguous array of ``shape`` that the calling thread reuses for ``name`` in
    every later block and call (grown when too small; at most ``_KEEP_BYTES`` each is
    kept, a larger one is a fresh array).

    Fresh temporaries would be fresh pages where the allocator returns them to the
    system at once: Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_`` set, under
    which every array above 128 KB is a new map.  There a block's (rows, k) and (tasks,
    k) temporaries cost an E-pass 3,000 page faults per partition of 237,000 rows
    (k = 8, d = 32): 23 ms against 16 ms in a process that reuses its memory."""
    size = int(np.prod(shape))
    if size * np.dtype(dtype).itemsize > _KEEP_BYTES:  # k much larger than d: not kept
        return np.empty(shape, dtype=dtype)
    bufs = _local.__dict__.setdefault("bufs", {})
    key = (name, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(max(size, 1), dtype=dtype)
    return buf[:size].reshape(shape)


def _responsibilities(sse, t, s2, p):
    """``(R, loglik)`` of a block of nb tasks: ``R`` (nb, k) their responsibilities, a
    transposed view of a per-thread (k, nb) buffer; ``loglik`` (1, nb) their
    log-likelihoods.  :func:`~fastmlr.likelihood.log_joint_T` and
    :func:`~fastmlr.likelihood.normalize` in per-thread buffers, components by rows
    (the reductions over k then run across rows, not along rows of k values)."""
    nb, k = sse.shape
    lj = log_joint_T(sse.T, t, s2, p, out=_buffer("lj", (k, nb)), scratch=_buffer("outer", (k, nb)))
    loglik = normalize(lj, 0)
    return lj.T, loglik


def e_chunk(ts: TaskSet, W, s2, p, R_out=None):
    """The E-pass statistic of one chunk of whole (non-empty) tasks.  Each block of rows
    is read from memory once: its predictions ``X W^T`` and the product of its weighted
    residuals with X are formed while it is in cache.

    Parameters
    ----------
    ts : TaskSet -- validated, every task with at least one row
    W : (k, d), s2 : (k,), p : (k,) -- the current mixture
    R_out : (n_chunk, k) float64 array, optional -- where to write the responsibilities

    Returns
    -------
    stats : (1 + k d + 3 k,) float64 -- the chunk's :class:`PassStats`, flat
        (:func:`pass_stats` unpacks a sum of them)
    R : (n_chunk, k) float64 -- the responsibilities of the chunk's tasks
    """
    k, d = W.shape
    width = 1 + k * d + 3 * k
    kern = kernels()
    Wt = np.ascontiguousarray(W.T, dtype=ts.X.dtype)
    bounds = _blocks(ts)
    t_all = np.diff(ts.offsets).astype(np.float64)
    if R_out is None:
        R_out = np.empty((ts.offsets.size - 1, k))
    s2 = np.asarray(s2, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)

    def block(b):
        part = slice_tasks(*ts, bounds[b], bounds[b + 1])
        lo, hi = bounds[b], bounds[b + 1]
        P = np.matmul(part.X, Wt, out=_buffer("P", (part.X.shape[0], k), ts.X.dtype))  # (m, k), BLAS in X's precision
        sse = kern.residual_sums(P, part.y, part.offsets)  # (nb, k) float64
        t = t_all[lo:hi]
        R, loglik = _responsibilities(sse, t, s2, p)
        R_out[lo:hi] = R
        out = np.empty(width)
        out[0] = float(loglik.sum())
        Rc = R_out[lo:hi] if R_out.flags.c_contiguous else np.ascontiguousarray(R)
        kern.weighted_residuals(P, part.y, part.offsets, Rc)  # P: (y - P) R, in place
        out[1:1 + k * d] = (P.T @ part.X).ravel()
        out[1 + k * d:1 + k * d + k] = t @ R
        out[1 + k * d + k:1 + k * d + 2 * k] = np.einsum("ik,ik->k", R, sse)
        out[1 + k * d + 2 * k:] = R.sum(axis=0)
        return out

    return reduce_blocks(block, bounds.size - 1, (width,)), R_out


def pass_stats(total: np.ndarray, k: int, d: int) -> PassStats:
    """The :class:`PassStats` of a sum of :func:`e_chunk` statistics."""
    return PassStats(float(total[0]), total[1:1 + k * d].reshape(k, d), total[1 + k * d:1 + k * d + k],
                     total[1 + k * d + k:1 + k * d + 2 * k], total[1 + k * d + 2 * k:])


def curvature_chunk(ts: TaskSet, R, D) -> np.ndarray:
    """(k,) ``D_l^T X^T diag(rho_l) X D_l`` over one chunk of whole tasks, ``R``
    (n_chunk, k) its responsibilities from :func:`e_chunk`."""
    k = D.shape[0]
    kern = kernels()
    Dt = np.ascontiguousarray(D.T, dtype=ts.X.dtype)
    bounds = _blocks(ts)
    zero = np.zeros(int(np.diff(ts.offsets[bounds]).max(initial=0)), dtype=ts.X.dtype)

    def block(b):
        part = slice_tasks(*ts, bounds[b], bounds[b + 1])
        Q = np.matmul(part.X, Dt, out=_buffer("P", (part.X.shape[0], k), ts.X.dtype))
        qq = kern.residual_sums(Q, zero[:Q.shape[0]], part.offsets)  # per task sum of (x.d_l)^2
        return np.einsum("ik,ik->k", R[bounds[b]:bounds[b + 1]], qq)

    return reduce_blocks(block, bounds.size - 1, (k,))


class LocalPasses:
    """The passes of :func:`run_gem` over a :class:`Pool` read in this process.

    ``e_pass(W, s2, p)`` -> PassStats, its responsibilities held as the last E-pass's;
    ``keep()``: the last E-pass's point is accepted (its responsibilities become the
    kept ones); ``curvature(D)`` -> (k,) at the kept responsibilities; ``resp()`` -> the
    kept (n, k).
    """

    def __init__(self, pool: Pool, k: int):
        self.pool = pool
        self.R = np.empty((pool.n, k))
        self._last = np.empty((pool.n, k))

    def e_pass(self, W, s2, p) -> PassStats:
        k, d = W.shape
        total = np.zeros(1 + k * d + 3 * k)
        for first, ts in self.pool.chunks():
            n_j = ts.offsets.size - 1
            total += e_chunk(ts, W, s2, p, self._last[first:first + n_j])[0]
        return pass_stats(total, k, d)

    def keep(self) -> None:
        self.R, self._last = self._last, self.R

    def curvature(self, D) -> np.ndarray:
        total = np.zeros(D.shape[0])
        for first, ts in self.pool.chunks():
            total += curvature_chunk(ts, self.R[first:first + ts.offsets.size - 1], D)
        return total

    def resp(self) -> np.ndarray:
        return self.R


def _extrapolate(t0, t1, t2, alpha_max):
    """SQUAREM's step (Varadhan and Roland's SqS3) from three consecutive iterates
    ``(W, s2, p)``: on (W, log s2, log p), ``r = t1 - t0``, ``v = t2 - 2 t1 + t0``,
    ``alpha = -||r|| / ||v||`` (in ``[-alpha_max, -1]``), ``t0 - 2 alpha r + alpha^2 v``.
    Returns the point and ``-alpha`` (1 means ``t2`` itself)."""
    def flat(t):
        return np.concatenate([t[0].ravel(), np.log(t[1]), np.log(t[2])])

    f0, f1, f2 = flat(t0), flat(t1), flat(t2)
    r, v = f1 - f0, f2 - 2.0 * f1 + f0
    nv = float(np.linalg.norm(v))
    step = min(float(np.linalg.norm(r)) / nv, alpha_max) if nv > 0 else 1.0
    if not step > 1.0:
        return t2, 1.0
    f = f0 + 2.0 * step * r + step * step * v
    k, d = t0[0].shape
    pr = np.exp(f[k * d + k:] - f[k * d + k:].max())
    return (f[:k * d].reshape(k, d), np.exp(f[k * d:k * d + k]), pr / pr.sum()), step


#: Largest SQUAREM step length (in units of the two-iteration difference); a step
#: that lowers the log-likelihood is refused anyway.
ALPHA_MAX = 16.0


def run_gem(pool: Pool, W, s2, p, S_inv, *, floor, tol=2e-6, max_iter=300, omega=OMEGA, accelerate=True,
            resp=True, progress=None) -> EMResult:
    """Generalized EM from an initial mixture until the log-likelihood stops rising.

    With ``accelerate`` every two GEM steps are followed by SQUAREM's extrapolation
    (:func:`_extrapolate`) along them; the extrapolated point is kept only if its
    log-likelihood is at least that of the last iterate, else EM goes on from the second
    step's point.  Every point in ``loglik`` is an accepted iterate, so the sequence
    never decreases, and the fixed points are GEM's (those of exact EM).

    Parameters
    ----------
    pool : Pool -- validated chunks of whole tasks, every task with at least one row (or
        any object with ``n``, ``N`` and ``passes(k)`` like :class:`LocalPasses`)
    W : (k, d), s2 : (k,) > 0, p : (k,) > 0 -- the starting point
    S_inv : (d, d) -- inverse of the pooled second moment of x, ``(X^T X / N)^{-1}`` (the
        preconditioner)
    floor : float -- smallest variance
    tol : float -- stop when an iteration gains less than ``tol`` per row
    max_iter : int -- most iterations (accepted iterates after the first)
    omega : float in (0, 2) -- over-relaxation of the W step
    accelerate : bool -- SQUAREM extrapolation every two steps
    resp : bool -- return the (n, k) responsibilities (False: ``resp`` is None, and a
        pool whose passes run elsewhere keeps them there)
    progress : callable(str) or None

    Returns
    -------
    EMResult -- with ``resp`` (n, k) the responsibilities at the returned estimate,
    ``rows`` (k,) the weighted rows of its last E-pass and ``loglik`` the
    log-likelihood at every accepted iterate, non-decreasing
    """
    W = np.array(W, dtype=np.float64)
    s2 = np.maximum(np.array(s2, dtype=np.float64), floor)
    p = np.array(p, dtype=np.float64)
    k, d = W.shape
    Sinv = 0.5 * (S_inv + S_inv.T)
    history: list = []
    kept: set = set()
    passes = pool.passes(k)

    def direction(st):
        """D (k, d) and D.G (k,) at the iterate whose E-pass gave ``st``."""
        ok = st.rows > d  # as exact EM: a component with no more than d weighted rows keeps its w
        kept.update(int(l) for l in np.flatnonzero(~ok))
        D = (st.G @ Sinv) / np.maximum(st.rows, 1e-300)[:, None]
        D[~ok] = 0.0
        return D, np.einsum("ld,ld->l", D, st.G)

    def variances(rss, rows):
        return np.maximum(np.where(rows > 0, rss / np.maximum(rows, 1e-300), floor), floor)

    def quick_step(st, W):
        """The step whose length S predicts: W along D by ``omega`` (the exact line
        search's length when the weighted Gram matrix of a component is ``rows_l S``),
        the variances at the residual sums that the same assumption predicts there.  No
        pass over the rows; the next E-pass checks it."""
        D, dg = direction(st)
        rss = np.maximum(st.rss - (2.0 * omega - omega * omega) * dg, 0.0)
        return W + omega * D, variances(rss, st.rows), st.resp / pool.n

    def line_search_step(st, W):
        """The step of exact line search along D: one curvature pass at the kept
        responsibilities.  It lowers every component's weighted residual sum, so the
        log-likelihood cannot fall."""
        D, dg = direction(st)
        curv = passes.curvature(D)
        a = np.where(curv > 0, dg / np.where(curv > 0, curv, 1.0), 0.0)
        rss = np.maximum(st.rss - 2.0 * a * dg + a * a * curv, 0.0)
        return W + a[:, None] * D, variances(rss, st.rows), st.resp / pool.n

    def accept(st, note=""):
        """Record an iterate; True when EM has converged there."""
        passes.keep()
        history.append(st.loglik)
        it = len(history) - 1
        if progress is not None:
            gain = "" if it == 0 else f", gain {(st.loglik - history[-2]) / pool.N:.2e} per row"
            progress(f"EM pass {it}: log-likelihood {st.loglik:.10g}{gain}{note}")
        return it > 0 and st.loglik - history[-2] <= tol * pool.N

    theta = (W, s2, p)
    st = passes.e_pass(*theta)
    converged = accept(st)
    since = 0  # GEM steps since the last extrapolation
    while not converged and len(history) <= max_iter:
        t0 = theta
        theta = quick_step(st, theta[0])
        if accelerate and since == 1:
            t3, length = _extrapolate(t_prev, t0, theta, ALPHA_MAX)
            since = 0
            if length > 1.0:
                st3 = passes.e_pass(*t3)
                if st3.loglik >= history[-1]:
                    theta, st = t3, st3
                    converged = accept(st, f" (extrapolated, step {length:.2g})")
                    continue
        else:
            since += 1
        t_prev = t0
        st1 = passes.e_pass(*theta)
        note = ""
        if st1.loglik < history[-1]:  # the predicted length overshot: search the line instead
            theta = line_search_step(st, t0[0])
            st1 = passes.e_pass(*theta)
            note = " (line search)"
        st = st1
        converged = accept(st, note)
    return EMResult(theta[0], theta[1], theta[2], np.asarray(history), passes.resp() if resp else None, converged,
                    sorted(kept), st.rows)
