"""Standard errors of a fitted mixture: observed information and parametric bootstrap.

The likelihood is the task-level one that :func:`fastmlr.fit` maximizes: task i (rows
``X_i``, ``y_i``, ``t_i`` of them) has ``L_i = sum_l p_l N(y_i | X_i w_l, s2_l I)``.
The parameters are ``theta = (w_1, ..., w_k, s2_1, ..., s2_k, p_1, ..., p_{k-1})``,
``P = k d + 2k - 1`` of them: the weights sum to one, so ``p_k = 1 - p_1 - ... - p_{k-1}``
is not free (its standard error follows by the delta method).

Everything is computed from additive per-task quantities, one chunk of whole tasks at
a time: for task i and component l the residual sum ``SSE_il``, the vector
``u_il = X_i^T (y_i - X_i w_l)``, the size ``t_i`` and the responsibility ``r_il``.
The complete-data score of (task i, component l) is

    g_il = ( u_il / s2_l  [w_l],   SSE_il / (2 s2_l^2) - t_i / (2 s2_l)  [s2_l],
             e_l / p_l - [l = k] 1 / p_k  [p] ),

the task's score is ``s_i = sum_l r_il g_il``, and by Louis' identity, applied task by
task, the observed information (minus the Hessian of the log-likelihood) is

    I_obs = sum_i sum_l r_il B_il  -  sum_i ( sum_l r_il g_il g_il^T - s_i s_i^T ),

the complete-data information given the responsibilities minus the information the
hidden labels carry.  ``B_il`` is block-diagonal: ``X_i^T X_i / s2_l`` for w_l,
``u_il / s2_l^2`` between w_l and s2_l, ``SSE_il / s2_l^3 - t_i / (2 s2_l^2)`` for s2_l,
and the outer product of the p part of g_il for p.  This is the exact Hessian of the
task-level likelihood, not an approximation.

Which information?  ``method="louis"`` (the default) inverts I_obs, the exact
curvature of the likelihood the estimate maximizes: the complete-data part is exact
given the responsibilities, and only the information the hidden labels carry is a sum
of outer products.  ``method="empirical"`` inverts ``sum_i s_i s_i^T``, the outer
products of the task scores: the same limit, but every entry is estimated from n
rank-one terms, so it is noisier.  Over 200 seeded pools per setting
(``benchmarks/interval_coverage.py``), Louis' 95% intervals of the coefficients covered 94.8%
(k = 4, d = 8) and 95.1% (k = 8, d = 16) of the time, the empirical ones 95.2% and
95.8%.

**Size.**  The full information is a P x P matrix built from ``n P^2`` multiply-adds
(the outer products of the task scores).  Up to :data:`FULL_MAX_PARAMETERS`
parameters (k = 8, d = 16 has 143) it is built and inverted whole.  Beyond that,
``blocks=True`` is the default: only the blocks of each component's (w_l, s2_l)
(``d + 1`` parameters; their missing information is ``sum_i r_il (1 - r_il) g_il
g_il^T``), of the weights (k - 1) and between each component and the weights are
built, at a cost of ``n k (d + k)^2``, and this arrowhead matrix is inverted exactly
through the Schur complement of the weights.  What is dropped is the information
between two components, carried by tasks whose responsibilities are split between
them.  Measured by ``benchmarks/interval_coverage.py``: with well-separated components (noise
1) the block intervals of the coefficients covered 95.0% against 95.1% for the full
matrix (k = 8, d = 16); with overlapping ones (noise variance 4) 93.7% against
94.3% (s2: 93.5% against 94.2%; p: 93.1% against 93.0%).

``method="bootstrap"`` refits ``n_boot`` pools simulated from the fitted model
(same features and task sizes; each task draws its component from p, then its
responses) with :func:`fastmlr.fit` and reports the standard deviation over the
refits, each matched to the model's components with
:func:`fastmlr.match_components`.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from ._validation import quiet
from .likelihood import log_joint

__all__ = ["StandardErrors", "standard_errors", "information", "METHODS", "FULL_MAX_PARAMETERS"]

METHODS = ("louis", "empirical", "bootstrap")

#: Largest number of parameters k d + 2k - 1 for which the full information matrix is
#: built by default; above it the default is per-component blocks.
FULL_MAX_PARAMETERS = 2000

#: Rows of a chunk of whole tasks (bounds the (rows, k) residual temporaries).
_CHUNK_ROWS = 1 << 16


class StandardErrors(NamedTuple):
    """Standard errors of a fitted mixture, in the model's component order.

    Attributes
    ----------
    W : (k, d) float64 -- standard errors of the regression coefficients
    s2 : (k,) float64 -- of the noise variances
    p : (k,) float64 -- of the weights (the last one by the delta method)
    cov_W : (k, d, d) float64 -- covariance of each component's regression vector
    cov : (P, P) float64 or None -- covariance of all ``P = k d + 2k - 1`` parameters,
        ordered ``vec(W)`` (row by row), ``s2``, ``p[:-1]``; None when only blocks
        were computed
    method : str -- "louis", "empirical" or "bootstrap"
    """

    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray
    cov_W: np.ndarray
    cov: np.ndarray | None
    method: str


class _Params(NamedTuple):
    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray


def _model_params(model) -> _Params:
    try:
        W, s2, p = model.W, model.s2, model.p
    except AttributeError:
        raise TypeError(f"model must be a fitted fastmlr Model (with W, s2 and p), got {type(model).__name__}") from None
    W = np.asarray(W, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] < 1 or s2.shape != (W.shape[0],) or p.shape != (W.shape[0],):
        raise ValueError(f"model has W {W.shape}, s2 {s2.shape}, p {p.shape}; expected (k, d), (k,), (k,)")
    if not (np.all(np.isfinite(W)) and np.all(s2 > 0) and np.all(np.isfinite(s2)) and np.all(p > 0)):
        raise ValueError("model has a non-finite coefficient, a variance s2 <= 0 or a weight p <= 0; "
                         "standard errors need an interior point")
    from .model import _check_p_sum

    _check_p_sum(p, "model.p")
    return _Params(W, s2, p)


def _task_set(tasks):
    """(X, y, offsets) of a task set given as a triple or a TaskSet, validated."""
    from .tasks import check_tasks

    if not isinstance(tasks, (tuple, list)) or len(tasks) != 3:
        raise TypeError(f"tasks must be an (X, y, offsets) triple or a TaskSet, got {type(tasks).__name__}")
    return check_tasks(*tasks, role="tasks")


def _chunks(tasks, max_rows=_CHUNK_ROWS):
    """Chunks of whole tasks ``(X float64, y float64, offsets)`` of a triple, a TaskSet
    or a TaskStream."""
    from .stream import TaskStream
    from .tasks import check_tasks

    if isinstance(tasks, TaskStream):
        for chunk in tasks:
            ts = check_tasks(*chunk[:3], role="tasks")
            yield from _chunks(ts, max_rows)
        return
    X, y, off = _task_set(tasks)
    n = off.size - 1
    lo = 0
    while lo < n:
        # as many whole tasks as fit in max_rows rows (at least one)
        hi = int(np.searchsorted(off, off[lo] + max_rows, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        a, b = int(off[lo]), int(off[hi])
        yield (np.asarray(X[a:b], dtype=np.float64), np.asarray(y[a:b], dtype=np.float64), off[lo:hi + 1] - a)
        lo = hi


class _TaskTerms(NamedTuple):
    t: np.ndarray    # (n,) task sizes (non-empty tasks only)
    sse: np.ndarray  # (n, k)
    u: np.ndarray    # (n, k, d)  X_i^T (y_i - X_i w_l)
    r: np.ndarray    # (n, k)     responsibilities
    loglik: float
    rows: np.ndarray  # (N',) index of each row's task among the non-empty ones


def _task_terms(X, y, off, W, s2, p, *, need_u=True) -> _TaskTerms:
    """Per-task residual sums, score vectors and responsibilities of one chunk (empty
    tasks dropped: their likelihood is 1 and their score 0)."""
    sizes = np.diff(off)
    keep = sizes > 0
    t = sizes[keep].astype(np.float64)
    starts = off[:-1][keep]
    k, d = W.shape
    E = y[:, None] - X @ W.T  # (N, k)
    sse = np.add.reduceat(E * E, starts, axis=0) if t.size else np.zeros((0, k))
    if need_u and t.size:
        u = np.empty((t.size, k, d))
        for l in range(k):
            u[:, l, :] = np.add.reduceat(X * E[:, l:l + 1], starts, axis=0)
    else:
        u = np.zeros((t.size, k, d))
    lj = log_joint(sse, t, s2, p)  # the one task log-likelihood (fastmlr.likelihood)
    m = lj.max(axis=1, keepdims=True)
    r = np.exp(lj - m)
    tot = r.sum(axis=1, keepdims=True)
    r /= tot
    ll = float(np.sum(np.log(tot[:, 0]) + m[:, 0]))
    rows = np.repeat(np.arange(t.size), sizes[keep])
    return _TaskTerms(t, sse, u, r, ll, rows)


def _p_scores(p) -> np.ndarray:
    """(k, k-1): the p part of the complete-data score of each component."""
    k = p.size
    G = np.zeros((k, k - 1))
    G[np.arange(k - 1), np.arange(k - 1)] = 1.0 / p[:-1]
    G[k - 1, :] = -1.0 / p[-1]
    return G


class _Info(NamedTuple):
    """Information of the whole pool, full or in blocks."""

    full: np.ndarray | None   # (P, P)
    comp: np.ndarray          # (k, d+1, d+1)  per-component (w_l, s2_l) blocks
    pp: np.ndarray            # (k-1, k-1)
    cross: np.ndarray         # (k, d+1, k-1)  between (w_l, s2_l) and the weights
    loglik: float


def information(tasks, model, *, method="louis", blocks=None) -> _Info:
    """Observed (Louis) or empirical information of the task-level likelihood.

    Parameters
    ----------
    tasks : (X, y, offsets) triple, TaskSet or TaskStream -- the pool the model was
        fitted to
    model : Model -- ``W`` (k, d), ``s2`` (k,), ``p`` (k,)
    method : {"louis", "empirical"}
    blocks : bool or None -- only the per-component blocks, the weights' block and the
        blocks between each component and the weights (default: when
        ``P > FULL_MAX_PARAMETERS``)

    Returns
    -------
    NamedTuple with ``full`` (P, P) or None, ``comp`` (k, d + 1, d + 1) (the
    (w_l, s2_l) blocks, computed on their own in the block mode, cut from ``full``
    otherwise), ``pp`` (k - 1, k - 1), ``cross`` (k, d + 1, k - 1) (between each
    component and the free weights) and ``loglik`` (float).

    Examples
    --------
    >>> import fastmlr
    >>> from fastmlr.inference import information
    >>> from fastmlr.synthetic import simulate_pool
    >>> sim = simulate_pool(k=2, d=3, n_tasks=300, seed=0)
    >>> tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    >>> info = information(tasks, fastmlr.fit(tasks, k=2))
    >>> info.full.shape
    (9, 9)
    """
    if method not in ("louis", "empirical"):
        raise ValueError(f"method is {method!r}; expected 'louis' or 'empirical'")
    W, s2, p = _model_params(model)
    k, d = W.shape
    P = k * d + 2 * k - 1
    if blocks is None:
        blocks = P > FULL_MAX_PARAMETERS
    Gp = _p_scores(p)
    q = d + 1  # (w_l, s2_l)
    Hc = np.zeros((k, q, q))         # complete-data information blocks, sum_i r_il B_il
    Mc = np.zeros((k, q, q))         # per-block outer products (meaning depends on the path)
    Xc = np.zeros((k, q, k - 1))     # between (w_l, s2_l) and p
    RtR = np.zeros((k, k))
    Ssum = np.zeros((P, P)) if not blocks else None
    # the per-component local score (w_l, s2_l, p) embedded in theta
    w_idx = [np.arange(l * d, (l + 1) * d) for l in range(k)]
    loc_idx = [np.concatenate([w_idx[l], [k * d + l], k * d + k + np.arange(k - 1)]) for l in range(k)]
    Cloc = np.zeros((k, q + k - 1, q + k - 1)) if not blocks else None  # sum_i r_il h_il h_il^T
    n_rows = 0
    loglik = 0.0
    for X, y, off in _chunks(tasks):
        if X.shape[1] != d:
            raise ValueError(f"the tasks have d = {X.shape[1]} features but the model has d = {d}")
        tt = _task_terms(X, y, off, W, s2, p)
        if tt.t.size == 0:
            continue
        n_rows += int(tt.t.sum())
        loglik += tt.loglik
        r = tt.r
        # g_il restricted to (w_l, s2_l): (n, k, d + 1)
        g = np.empty((tt.t.size, k, q))
        g[:, :, :d] = tt.u / s2[None, :, None]
        g[:, :, d] = tt.sse / (2.0 * s2 ** 2) - tt.t[:, None] / (2.0 * s2)
        Rrow = r[tt.rows]  # (N, k) responsibilities of each row's task
        for l in range(k):
            Hc[l, :d, :d] += (X * Rrow[:, l:l + 1]).T @ X / s2[l]
            cross = r[:, l] @ tt.u[:, l, :] / s2[l] ** 2
            Hc[l, :d, d] += cross
            Hc[l, d, :d] += cross
            Hc[l, d, d] += r[:, l] @ (tt.sse[:, l] / s2[l] ** 3 - tt.t / (2.0 * s2[l] ** 2))
        RtR += r.T @ r
        if blocks:
            # missing information of block l: sum_i r_il (1 - r_il) g g^T (Louis);
            # empirical: sum_i (r_il g_il)(r_il g_il)^T
            wgt = r * (1.0 - r) if method == "louis" else r * r
            for l in range(k):
                gl = g[:, l, :]
                Mc[l] += (gl * wgt[:, l:l + 1]).T @ gl
            # (w_l, s2_l) against p: sum_i r_il g_il (Gp^T r_i - [louis] Gp[l])^T
            rp = r @ Gp
            for l in range(k):
                Xc[l] += (g[:, l, :] * r[:, l:l + 1]).T @ (rp - Gp[l] if method == "louis" else rp)
        else:
            # task scores s_i (n, P)
            S = np.empty((tt.t.size, P))
            S[:, :k * d] = (r[:, :, None] * g[:, :, :d]).reshape(tt.t.size, k * d)
            S[:, k * d:k * d + k] = r * g[:, :, d]
            S[:, k * d + k:] = r @ Gp
            Ssum += S.T @ S
            if method == "louis":
                for l in range(k):
                    h = np.concatenate([g[:, l, :], np.broadcast_to(Gp[l], (tt.t.size, k - 1))], axis=1)
                    Cloc[l] += (h * r[:, l:l + 1]).T @ h
    if n_rows == 0:
        raise ValueError("the tasks have no rows; standard errors need the pool the model was fitted to")
    # p block: complete-data information Gp^T diag(n_l) Gp, missing Gp^T (diag(n_l) - R^T R) Gp
    pp_obs = Gp.T @ RtR @ Gp
    if blocks:
        comp = Hc - Mc if method == "louis" else Mc
        return _Info(None, comp, pp_obs, Xc, loglik)
    if method == "empirical":
        full = Ssum
    else:
        full = Ssum.copy()
        for l in range(k):
            ix = loc_idx[l]
            Bloc = np.zeros((q + k - 1, q + k - 1))
            Bloc[:q, :q] = Hc[l]
            Bloc[q:, q:] = RtR[l].sum() * np.outer(Gp[l], Gp[l])  # sum_i r_il = sum_j (R^T R)_lj
            full[np.ix_(ix, ix)] += Bloc - Cloc[l]
    own = [np.r_[w_idx[l], k * d + l] for l in range(k)]
    comp = np.stack([full[np.ix_(ix, ix)] for ix in own])
    pix = k * d + k + np.arange(k - 1)
    cross = np.stack([full[np.ix_(ix, pix)] for ix in own])
    return _Info(full, comp, full[np.ix_(pix, pix)], cross, loglik)


def _inverse(A, what):
    """Inverse of a symmetric information matrix; a warning and NaN where it is not
    positive definite."""
    A = 0.5 * (A + A.T)
    if A.size == 0:
        return A.copy()
    try:
        c = np.linalg.cholesky(A)
        ci = np.linalg.inv(c)
        return ci.T @ ci
    except np.linalg.LinAlgError:
        warnings.warn(f"the information of {what} is not positive definite (a component with almost no "
                      f"tasks, or not a maximum of the likelihood); its standard errors are NaN where "
                      f"undefined", RuntimeWarning, stacklevel=3)
        vals, vecs = np.linalg.eigh(A)
        good = vals > vals.max() * 1e-12 if vals.size else vals
        inv = (vecs[:, good] / vals[good]) @ vecs[:, good].T
        bad = np.abs(vecs[:, ~good]).max(axis=1) > 1e-8 if (~good).any() else np.zeros(A.shape[0], bool)
        inv[bad, :] = np.nan
        inv[:, bad] = np.nan
        return inv


def _p_last_var(cov_pp) -> float:
    """Variance of p_k = 1 - sum of the others."""
    return float(cov_pp.sum()) if cov_pp.size else 0.0


def _from_information(info: _Info, k: int, d: int, method: str) -> StandardErrors:
    if info.full is not None:
        cov = _inverse(info.full, "the mixture")
        W_cov = np.stack([cov[l * d:(l + 1) * d, l * d:(l + 1) * d] for l in range(k)])
        v_s2 = np.array([cov[k * d + l, k * d + l] for l in range(k)])
        cov_pp = cov[k * d + k:, k * d + k:]
    else:
        # block-diagonal in the components, bordered by the weights (an arrowhead
        # matrix): with A_l the component blocks, C_l their information with p and
        # S = I_pp - sum_l C_l^T A_l^-1 C_l, Cov_pp = S^-1 and
        # Cov_ll = A_l^-1 + A_l^-1 C_l S^-1 C_l^T A_l^-1
        cov = None
        Ainv = [_inverse(info.comp[l], f"component {l}") for l in range(k)]
        AC = [np.nan_to_num(Ainv[l]) @ info.cross[l] for l in range(k)]
        schur = info.pp - sum(info.cross[l].T @ AC[l] for l in range(k))
        cov_pp = _inverse(schur, "the weights")
        blk = [Ainv[l] + AC[l] @ np.nan_to_num(cov_pp) @ AC[l].T for l in range(k)]
        W_cov = np.stack([b[:d, :d] for b in blk])
        v_s2 = np.array([b[d, d] for b in blk])
    v_p = np.append(np.diag(cov_pp), _p_last_var(cov_pp))
    se_W = np.sqrt(np.maximum(np.einsum("ldd->ld", W_cov), 0.0))
    return StandardErrors(se_W, np.sqrt(np.maximum(v_s2, 0.0)), np.sqrt(np.maximum(v_p, 0.0)), W_cov, cov, method)


def _bootstrap(tasks, model, n_boot, seed, fit_kwargs) -> StandardErrors:
    from .fit import fit
    from .metrics import match_components
    from .stream import TaskStream

    W, s2, p = _model_params(model)
    k, d = W.shape
    if isinstance(tasks, TaskStream):  # refits need the whole pool: gather the chunks
        Xs, offs, base = [], [np.zeros(1, dtype=np.int64)], 0
        for chunk in tasks:
            Xc, _, oc = _task_set(chunk[:3])
            Xs.append(Xc)
            offs.append(oc[1:] + base)
            base += int(oc[-1])
        X, off = np.concatenate(Xs), np.concatenate(offs)
    else:
        X, _, off = _task_set(tasks)
    X = np.asarray(X, dtype=np.float64)
    sizes = np.diff(off)
    mean_rows = X @ W.T  # (N, k)
    rng = np.random.default_rng(seed)
    Ws, s2s, ps = [], [], []
    for _ in range(n_boot):
        z = rng.choice(k, size=sizes.size, p=p / p.sum())
        zr = np.repeat(z, sizes)
        yb = mean_rows[np.arange(zr.size), zr] + np.sqrt(s2[zr]) * rng.standard_normal(zr.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mb = fit((X, yb, off), k, **fit_kwargs)
        perm = match_components(mb.W, W)
        Ws.append(mb.W[perm])
        s2s.append(mb.s2[perm])
        ps.append(mb.p[perm])
    Ws, s2s, ps = np.array(Ws), np.array(s2s), np.array(ps)
    Wc = Ws - Ws.mean(axis=0)
    W_cov = np.einsum("bld,ble->lde", Wc, Wc) / max(n_boot - 1, 1)
    theta = np.concatenate([Ws.reshape(n_boot, -1), s2s, ps[:, :-1]], axis=1)
    cov = np.cov(theta, rowvar=False, ddof=1).reshape(theta.shape[1], theta.shape[1])
    return StandardErrors(Ws.std(axis=0, ddof=1), s2s.std(axis=0, ddof=1), ps.std(axis=0, ddof=1), W_cov, cov,
                          "bootstrap")


@quiet
def standard_errors(tasks, model, *, method="louis", blocks=None, n_boot=200, seed=0, fit_kwargs=None) -> StandardErrors:
    """Standard errors of a fitted mixture's W, s2 and p.

    Parameters
    ----------
    tasks : (X, y, offsets) triple, TaskSet or TaskStream -- the pool the model was
        fitted to: ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,)
    model : Model -- from :func:`fastmlr.fit`: ``W`` (k, d), ``s2`` (k,), ``p`` (k,)
    method : {"louis", "empirical", "bootstrap"}
        "louis" (default): inverse of the observed information of the task-level
        likelihood, computed exactly by Louis' identity from per-task residual sums,
        score vectors and responsibilities.  "empirical": inverse of the sum of the
        outer products of the per-task scores (same limit, noisier in small pools).
        "bootstrap": standard deviation over ``n_boot`` refits of pools simulated from
        the model with the same features and task sizes.  See the module docstring
        for why Louis' information is the default.
    blocks : bool or None
        Invert only per-component (w_l, s2_l) blocks and the weights' block, ignoring
        the information shared between components (default: when ``k d + 2k - 1 >
        FULL_MAX_PARAMETERS``); ``cov`` is then None.
    n_boot : int -- bootstrap replicates (method "bootstrap")
    seed : int -- seed of the bootstrap's simulations
    fit_kwargs : dict, optional -- options for the bootstrap's :func:`fastmlr.fit`

    Returns
    -------
    StandardErrors
        ``W`` (k, d), ``s2`` (k,), ``p`` (k,) standard errors in the model's order,
        ``cov_W`` (k, d, d), ``cov`` (P, P) or None, ``method``.

    Raises
    ------
    ValueError
        Bad tasks, a model that does not match them, or an unknown method.

    See Also
    --------
    fastmlr.predictive.predictive : predictive intervals that can use ``cov_W``.

    Examples
    --------
    >>> import fastmlr
    >>> from fastmlr.inference import standard_errors
    >>> from fastmlr.synthetic import simulate_pool
    >>> sim = simulate_pool(k=2, d=3, n_tasks=400, seed=0)
    >>> tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    >>> model = fastmlr.fit(tasks, k=2)
    >>> se = standard_errors(tasks, model)
    >>> se.W.shape, se.s2.shape, se.p.shape
    ((2, 3), (2,), (2,))
    >>> bool((se.W > 0).all() and (se.W < 0.2).all())
    True
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method is {method!r}; expected one of {', '.join(map(repr, METHODS))}")
    W, _, _ = _model_params(model)
    k, d = W.shape
    with np.errstate(all="ignore"):
        if method == "bootstrap":
            if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
                raise ValueError(f"n_boot is {n_boot!r}; expected an integer >= 2")
            return _bootstrap(tasks, model, int(n_boot), seed, dict(fit_kwargs or {}))
        info = information(tasks, model, method=method, blocks=blocks)
        return _from_information(info, k, d, method)
