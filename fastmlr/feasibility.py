"""Which roles a pool of tasks can fill, and the paper's sufficient conditions.

Theorem 1 of the paper states sufficient conditions up to constants and logarithms.
With the separation Delta and the conditioning of the components taken as order one
and the smallest weight p_min = 1/k (uniform weights), they read:

* subspace (tasks with t >= 2): rows ``sum t >= d k^2``;
* clustering (heavy tasks): ``t_H >= sqrt(k) log k`` rows per task (counted with the size
  fit uses for its heavy set, ``ceil(sqrt(k) log2(k + 1))``), ``n_H >= k log k``
  such tasks and ``n_H t_H >= k^2 log k`` rows among them;
* classification (light tasks with ``t >= log(k d)``): rows ``>= d k``;
* EM, and any estimate at all: more than ``d`` rows per component (``N > k d``) and
  at least k tasks.

The constants are unknown, so a ratio ``have / need`` near or above one means "of
the order the theory asks"; the last condition is a hard limit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._validation import check_int, quiet
from .fit import heavy_min_rows
from .tasks import check_k

__all__ = ["Feasibility", "feasibility", "format_feasibility"]


class Feasibility(NamedTuple):
    """Output of :func:`feasibility`.

    Attributes
    ----------
    ok : bool -- every condition met (up to constants)
    supported : bool -- the hard limits (k tasks, more than d rows per component) hold
    k, d : int
    roles : dict -- how many tasks (and rows) can fill each role
    conditions : list of dict -- name, have, need, ratio, met, words
    largest_k : int -- the largest k <= 64 for which every condition is met (0 if none)
    """

    ok: bool
    supported: bool
    k: int
    d: int
    roles: dict
    conditions: list
    largest_k: int


def _sizes(sizes) -> np.ndarray:
    s = np.asarray(sizes)
    if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iu" or (s < 0).any():
        raise ValueError(f"sizes must be a non-empty 1-D array of non-negative task sizes, got shape {s.shape}")
    return s.astype(np.uint64)  # every size fits, negative ones are refused above


def _total(s: np.ndarray) -> int:
    """The exact sum of non-negative sizes (uint64), as a Python int: summed in uint64
    when that cannot wrap, else as Python integers."""
    if s.size == 0:
        return 0
    if int(s.max()) <= (2**64 - 1) // s.size:
        return int(s.sum(dtype=np.uint64))
    return sum(int(v) for v in s)


def _conditions(s: np.ndarray, k: int, d: int):
    logk = max(math.log(k), 1.0)
    sub = s[s >= 2]
    t_heavy = heavy_min_rows(k)  # the size fit's heavy set asks for
    heavy = s[s >= t_heavy]
    t_light = max(1, math.ceil(math.log(k * d)))
    light = s[s >= t_light]
    rows = _total(s)
    n = int((s > 0).sum())
    conds = [
        ("subspace rows", _total(sub), d * k * k,
         f"tasks with at least 2 rows hold {_total(sub)} rows; the subspace step asks about d k^2 = {d * k * k}"),
        ("heavy tasks", int(heavy.size), math.ceil(k * logk),
         f"{heavy.size} tasks have at least ceil(sqrt(k) log2(k + 1)) = {t_heavy} rows (fit's heavy size; the paper "
         f"asks about sqrt(k) log k); clustering asks about k log k = {math.ceil(k * logk)} of them"),
        ("heavy rows", _total(heavy), math.ceil(k * k * logk),
         f"those heavy tasks hold {_total(heavy)} rows; clustering asks about k^2 log k = {math.ceil(k * k * logk)}"),
        ("classification rows", _total(light), d * k,
         f"tasks with at least log(k d) = {t_light} rows hold {_total(light)} rows; classification asks about d k = {d * k}"),
        ("rows per component", rows, k * d + 1,
         f"the pool has {rows} rows, {rows / k:.1f} per component; each component needs more than d = {d} (hard limit)"),
        ("tasks", n, k, f"the pool has {n} non-empty tasks; k = {k} components need at least k (hard limit)"),
    ]
    out = []
    for name, have, need, words in conds:
        out.append({"name": name, "have": have, "need": need, "ratio": have / need if need else math.inf,
                    "met": bool(have >= need), "words": words})
    roles = {"tasks": n, "rows": rows, "subspace_tasks": int(sub.size), "heavy_min_rows": t_heavy,
             "heavy_tasks": int(heavy.size), "classification_min_rows": t_light,
             "classification_tasks": int(light.size), "one_row_tasks": int((s == 1).sum()),
             "empty_tasks": int((s == 0).sum())}
    return out, roles


@quiet
def feasibility(sizes, k, d) -> Feasibility:
    """Which roles a pool with these task sizes can fill for k components in d dimensions.

    Parameters
    ----------
    sizes : (n,) int array -- rows of every task
    k : int >= 1 -- components
    d : int >= 1 -- dimension of x

    Returns
    -------
    Feasibility
        ``ok`` (every sufficient condition met), ``supported`` (enough rows and tasks
        to fit), the roles the sizes fill, each condition in numbers, and the largest
        k whose conditions the pool meets.

    See Also
    --------
    fit : the estimator whose roles these are.
    fastmlr.feasibility.format_feasibility : the same in words.

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> f = fastmlr.feasibility(np.full(5000, 8), 4, 10)
    >>> f.k, f.d, bool(f.supported)
    (4, 10, True)
    """
    s = _sizes(sizes)
    k = check_k(k)
    d = check_int(d, "d", low=1, expected="a positive integer dimension")
    conds, roles = _conditions(s, k, d)
    largest = 0
    for kk in range(1, 65):  # k may exceed d: EM separates more components than dimensions
        if all(c["met"] for c in _conditions(s, kk, d)[0]):
            largest = kk
    supported = all(c["met"] for c in conds if c["name"] in ("rows per component", "tasks"))
    return Feasibility(all(c["met"] for c in conds), supported, k, d, roles, conds, largest)


def format_feasibility(f: Feasibility) -> str:
    """Plain words and numbers for :class:`Feasibility`."""
    r = f.roles
    lines = [
        f"pool: {r['tasks']} tasks, {r['rows']} rows; k = {f.k}, d = {f.d}",
        f"roles: {r['subspace_tasks']} tasks can feed the subspace (>= 2 rows), "
        f"{r['heavy_tasks']} can be heavy (>= {r['heavy_min_rows']} rows), "
        f"{r['classification_tasks']} can be classified reliably (>= {r['classification_min_rows']} rows); "
        f"all {r['tasks']} enter EM",
    ]
    if r["one_row_tasks"] or r["empty_tasks"]:
        lines.append(f"note: {r['one_row_tasks']} one-row tasks only enter EM; {r['empty_tasks']} empty tasks are ignored")
    for c in f.conditions:
        lines.append(f"  [{'ok' if c['met'] else 'short'}] {c['name']}: have {c['have']}, need ~{c['need']} "
                     f"(ratio {c['ratio']:.2f}) -- {c['words']}")
    if f.ok:
        lines.append("verdict: the pool meets the paper's sufficient conditions (up to constants)")
    elif f.supported:
        lines.append("verdict: fit can run, but the pool is short of the paper's sufficient conditions "
                     "(up to constants); the estimate may be poor or a component may be lost")
    else:
        lines.append(f"verdict: the pool cannot support k = {f.k} (a hard limit fails)")
    lines.append(f"largest k meeting every condition (up to constants): {f.largest_k}")
    return "\n".join(lines)
