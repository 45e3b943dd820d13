"""The paper's generative model and a pool simulator, seeded.

Task i draws a component z_i ~ p; each of its rows has x ~ N(0, I_d) and
y = w_z . x + sqrt(s2_z) * eps with eps ~ N(0, 1).  ``s2`` is the noise variance, as
everywhere in fastmlr.  :func:`simulate_pool` draws a whole pool of tasks of many
sizes (:func:`pool_sizes`), most of them tiny.

Sampling is split into fixed chunks of tasks, each with its own random stream spawned
from the seed, and the chunks are filled by a thread pool: the arrays depend on the
seed only, never on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import math
import warnings

import numpy as np

from . import _threads
from ._validation import check_int, check_params, check_sums, check_work, quiet, user_stacklevel
from .tasks import check_k, chunk_bounds

__all__ = ["Mixture", "Sample", "make_mixture", "sample_tasks", "pool_sizes", "simulate_pool", "KINDS",
           "SIZE_DISTRIBUTIONS"]

KINDS = ("orthonormal", "gaussian")
SIZE_DISTRIBUTIONS = ("loguniform", "uniform")
_SAMPLE_CHUNK_ROWS = 1 << 15
_INT64_MAX = np.iinfo(np.int64).max


class Mixture(NamedTuple):
    """Meta-parameters: ``W`` (k, d) rows are components, ``s2`` (k,) noise variances, ``p`` (k,) weights."""

    W: np.ndarray
    s2: np.ndarray
    p: np.ndarray


class Sample(NamedTuple):
    """A sampled task set with its hidden components: X (N, d), y (N,), offsets (n+1,), z (n,)."""

    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    z: np.ndarray


def _rng(seed):
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is not None:
        seed = check_int(seed, "seed", low=0, expected="a non-negative integer or None")
    return np.random.SeedSequence(seed)


def _real_vector(v, k: int, name: str) -> np.ndarray:
    """``v`` (a number or k numbers) as a (k,) float64 array, or a clear error."""
    a = np.asarray(v) if not isinstance(v, str) else np.asarray(v, dtype=object)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} has dtype {a.dtype}; expected real numbers")
    if a.ndim > 1 or (a.ndim == 1 and a.shape != (k,)):
        raise ValueError(f"{name} has shape {a.shape}; expected one number or {k} of them")
    return np.broadcast_to(a.astype(np.float64), (k,)).copy()


_UNSET = object()


@quiet
def make_mixture(k, d, *, kind="orthonormal", s2=1.0, weights=None, seed=None, noise=_UNSET) -> Mixture:
    """Meta-parameters of a mixture of k linear regressions in d dimensions.

    Parameters
    ----------
    k : int >= 1
    d : int >= 1
    kind : {"orthonormal", "gaussian"}
        "orthonormal": rows of W are orthonormal (needs k <= d), the paper's Figure 2
        setting.  "gaussian": rows drawn i.i.d. from N(0, I_d / d), so ``||w|| ~ 1``.
    s2 : float or (k,) array, >= 0 -- the noise variances
    weights : None, "random" or (k,) array
        Mixing weights p: uniform (None), drawn from a flat Dirichlet ("random"), or
        given (normalized to sum to one).
    seed : int or None
    noise : float or (k,) array, deprecated
        Noise standard deviations, the earlier way to set ``s2 = noise**2``.

    Returns
    -------
    Mixture
        ``W`` (k, d) float64, ``s2`` (k,) float64, ``p`` (k,) float64.

    See Also
    --------
    sample_tasks : tasks drawn from the mixture.
    simulate_pool : a whole pool of tasks of many sizes.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(3, 5, s2=0.25, seed=0)
    >>> W.shape, s2, float(p.sum())
    ((3, 5), array([0.25, 0.25, 0.25]), 1.0)
    """
    k = check_k(k)
    d = check_int(d, "d", low=1, expected="a positive integer dimension")
    if kind not in KINDS:
        raise ValueError(f"kind is {kind!r}; expected one of {', '.join(map(repr, KINDS))}")
    rng = np.random.default_rng(_rng(seed))
    check_work(16.0 * k * d, f"a mixture of (k, d) = ({k}, {d})", "use a smaller k or d")
    if kind == "orthonormal":
        if k > d:
            raise ValueError(f"k is {k} but d is {d}; orthonormal components need k <= d")
        Q, R = np.linalg.qr(rng.standard_normal((d, k)))
        W = (Q * np.sign(np.diag(R))).T
    else:
        W = rng.standard_normal((k, d)) / np.sqrt(d)
    if noise is not _UNSET:  # standard deviations: their squares are the variances
        warnings.warn("make_mixture(noise=...) is deprecated; pass the noise variances as s2 (s2 = noise**2)",
                      DeprecationWarning, stacklevel=user_stacklevel())
        sd = _real_vector(noise, k, "noise")
        if not np.all(np.isfinite(sd)) or np.any(sd < 0):
            raise ValueError(f"noise must be finite and non-negative, got {noise!r}")
        s2 = sd * sd
    v = _real_vector(s2, k, "s2")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"s2 must be finite and non-negative noise variances, got {s2!r}")
    if weights is None:
        p = np.full(k, 1.0 / k)
    elif isinstance(weights, str):
        if weights != "random":
            raise ValueError(f"weights is {weights!r}; expected None, 'random' or an array of k weights")
        p = rng.dirichlet(np.ones(k))
    else:
        p = _real_vector(weights, k, "weights")
        if np.ndim(weights) != 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"weights must be {k} finite non-negative numbers with a positive sum")
        p = p / p.sum()
    return Mixture(np.ascontiguousarray(W), v, p)


def _check_sizes(sizes, n_tasks):
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, (bool, np.bool_)):
        if n_tasks is None:
            raise ValueError("sizes is one integer; pass n_tasks too, or one size per task")
        n_tasks = check_int(n_tasks, "n_tasks", low=1)
        check_work(32.0 * n_tasks, f"n_tasks = {n_tasks} tasks", "sample fewer tasks (or in several calls)")
        if int(sizes) > _INT64_MAX:
            raise ValueError(f"sizes is {int(sizes)}; expected a number of rows below 2^63")
        sizes = np.full(n_tasks, int(sizes), dtype=np.int64)
    else:
        sizes = np.asarray(sizes)
        if sizes.ndim != 1 or sizes.size < 1 or sizes.dtype.kind not in "iu":
            raise ValueError(f"sizes must be one integer or a non-empty 1-D integer array, got shape {sizes.shape}")
        if sizes.dtype.kind == "u" and sizes.max() > _INT64_MAX:
            raise ValueError(f"sizes holds {sizes.max()}; expected numbers of rows below 2^63")
        if n_tasks is not None and n_tasks != sizes.size:
            raise ValueError(f"n_tasks is {n_tasks} but sizes has {sizes.size} entries; expected n_tasks=None or len(sizes)")
        sizes = sizes.astype(np.int64)
    if np.any(sizes < 0):
        raise ValueError("sizes must be non-negative")
    return sizes


@quiet
def sample_tasks(W, s2, p, sizes, *, n_tasks=None, seed=None, dtype="float64") -> Sample:
    """Sample tasks from a mixture of linear regressions.

    Parameters
    ----------
    W : (k, d) float array -- components (rows)
    s2 : (k,) float array, >= 0 -- noise variances (each row's noise is
        ``sqrt(s2_z) * eps``)
    p : (k,) float array -- mixing weights
    sizes : int or (n,) int array
        Rows per task: one size for all (then ``n_tasks`` is required) or one per task.
    n_tasks : int, optional
    seed : int or None
        Same seed, same arrays, whatever the thread count.
    dtype : "float64" or "float32"

    Returns
    -------
    Sample
        ``X`` (N, d), ``y`` (N,), ``offsets`` (n + 1,) int64, ``z`` (n,) int64: a task
        set (every function that takes tasks accepts it) with its hidden components.

    See Also
    --------
    make_mixture : the mixture to sample from.
    simulate_pool : a pool with task sizes of a given distribution.

    Examples
    --------
    >>> import fastmlr
    >>> W, s2, p = fastmlr.make_mixture(2, 3, seed=0)
    >>> S = fastmlr.sample_tasks(W, s2, p, [2, 5, 3], seed=1)
    >>> S.X.shape, S.offsets, S.z.shape
    ((10, 3), array([ 0,  2,  7, 10]), (3,))
    """
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"W has shape {W.shape}; expected a (k, d) array")
    s2 = _real_vector(s2, W.shape[0], "s2") if np.ndim(s2) == 1 else np.asarray(s2)
    if s2.shape != (W.shape[0],) or s2.dtype.kind != "f" or not np.all(np.isfinite(s2)) or np.any(s2 < 0):
        raise ValueError(f"s2 must be {W.shape[0]} finite non-negative noise variances")
    sd = np.sqrt(s2)  # the noise scale of each component
    W, _, p = check_params(W, np.ones(W.shape[0]), p, W.shape[1])
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float64), np.dtype(np.float32)):  # (None == float64 in NumPy)
        raise ValueError(f"dtype is {dtype!r}; expected 'float64' or 'float32'")
    sizes = _check_sizes(sizes, n_tasks)
    n, (k, d) = sizes.size, W.shape
    total = float(sizes.sum(dtype=np.float64))  # float: an int64 sum could wrap
    check_work(total * ((d + 1) * dt.itemsize + 16) + 24.0 * n, f"sampling {total:.0f} rows of d = {d} in {n} tasks",
               "sample fewer or smaller tasks (or in several calls), or use dtype='float32'")
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    N = int(offsets[-1])

    root = _rng(seed)
    z_seq, *_ = root.spawn(1)
    z = np.random.default_rng(z_seq).choice(k, size=n, p=p).astype(np.int64)
    bounds = chunk_bounds(offsets, _SAMPLE_CHUNK_ROWS)
    streams = root.spawn(bounds.size - 1)
    X = np.empty((N, d), dtype=dt)
    y = np.empty(N, dtype=dt)
    row_z = np.repeat(z, sizes)

    def fill(c):
        a, b = int(offsets[bounds[c]]), int(offsets[bounds[c + 1]])
        if a == b:
            return
        rng = np.random.default_rng(streams[c])
        Xc = X[a:b]
        rng.standard_normal(out=Xc, dtype=dt)
        eps = rng.standard_normal(b - a)
        zc = row_z[a:b]
        with np.errstate(all="ignore"):  # (a worker thread) an overflow is reported below
            mean = np.einsum("ij,ij->i", Xc, W[zc].astype(dt, copy=False), dtype=np.float64)
            y[a:b] = mean + sd[zc] * eps

    workers = max(1, min(_threads.get(), bounds.size - 1))
    if workers == 1:
        for c in range(bounds.size - 1):
            fill(c)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fill, range(bounds.size - 1)))
    if not np.all(np.isfinite(y)):
        raise ValueError(f"the sampled y overflowed {dt.name}: W and s2 are too large in magnitude for "
                         f"x . w + sqrt(s2) eps; rescale W and s2 (or use dtype='float64')")
    return Sample(X, y, offsets, z)


def pool_sizes(n, low, high, *, distribution="loguniform", seed=None) -> np.ndarray:
    """Task sizes of a pool: ``n`` integers in [low, high].

    "loguniform" (default) makes most tasks tiny, like the paper's Figure 1: the
    density of a size falls as 1/size.  "uniform" draws every size equally often.

    Parameters
    ----------
    n, low, high : int >= 1, with low <= high
    distribution : {"loguniform", "uniform"}
    seed : int, SeedSequence or None

    Returns
    -------
    (n,) int64

    See Also
    --------
    simulate_pool : a pool with these sizes.

    Examples
    --------
    >>> sizes = pool_sizes(1000, 4, 32, seed=0)
    >>> int(sizes.min()) >= 4, int(sizes.max()) <= 32, bool((sizes < 16).mean() > 0.5)   # most are small
    (True, True, True)
    """
    for name, v in (("n", n), ("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} is {v!r}; expected a positive integer")
    if high < low:
        raise ValueError(f"high is {high} but low is {low}; expected low <= high")
    if distribution not in SIZE_DISTRIBUTIONS:
        raise ValueError(f"distribution is {distribution!r}; expected one of {', '.join(SIZE_DISTRIBUTIONS)}")
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        return rng.integers(low, high + 1, size=n).astype(np.int64)
    u = rng.uniform(math.log(low), math.log(high + 1), size=n)
    return np.minimum(np.floor(np.exp(u)), high).astype(np.int64)


def simulate_pool(k, d, n_tasks, *, low=4, high=32, distribution="loguniform", s2=1.0,
                  kind="orthonormal", queries=0, seed=0) -> dict:
    """A seeded pool from the paper's model, with task sizes from :func:`pool_sizes`.

    Parameters
    ----------
    k, d, n_tasks : int >= 1 -- components, dimension, tasks
    low, high : int -- smallest and largest task (training rows)
    distribution : {"loguniform", "uniform"} -- of the task sizes
    s2 : float or (k,) array -- noise variances
    kind : {"orthonormal", "gaussian"} -- see :func:`make_mixture`
    queries : int >= 0 -- extra rows per task whose target is missing (NaN)
    seed : int

    Returns
    -------
    dict
        ``X`` (N, d), ``y`` (N,) (NaN on query rows), ``task`` (N,) ids, the truth
        ``W`` (k, d), ``s2`` (k,), ``p`` (k,), ``z`` (n,), and ``sizes`` (n,): the
        training rows of each task.

    See Also
    --------
    fastmlr.group_tasks : rows tagged with task ids into a task set.
    fastmlr.fit : the estimator for such a pool.

    Examples
    --------
    >>> import fastmlr
    >>> sim = simulate_pool(2, 3, 50, seed=0)
    >>> tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    >>> len(tasks.offsets) - 1, sim["s2"]
    (50, array([1., 1.]))
    """
    if isinstance(queries, bool) or not isinstance(queries, (int, np.integer)) or queries < 0:
        raise ValueError(f"queries is {queries!r}; expected a non-negative integer")
    ss = np.random.SeedSequence(seed)
    s_mix, s_sizes, s_rows = ss.spawn(3)
    W, s2, p = make_mixture(k, d, kind=kind, s2=s2, seed=s_mix)
    sizes = pool_sizes(n_tasks, low, high, distribution=distribution, seed=s_sizes)
    S = sample_tasks(W, s2, p, sizes + queries, seed=s_rows)
    task = np.repeat(np.arange(n_tasks), sizes + queries)
    y = S.y.astype(np.float64)
    if queries:
        pos = np.arange(y.size) - np.repeat(S.offsets[:-1], sizes + queries)
        y[pos >= np.repeat(sizes, sizes + queries)] = np.nan
    return {"X": S.X, "y": y, "task": task, "W": W, "s2": s2, "p": p, "z": S.z, "sizes": sizes}
