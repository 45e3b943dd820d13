"""The numerical core: fastmlr's hot loops as Numba kernels (parallel, cached).

Mirrored name for name, argument for argument, by ``_ckernels.pyx`` (Cython) and
``_reference.py`` (plain NumPy, the test oracle).  The kernels see only validated,
C-contiguous arrays and scalars; they neither check input nor choose policy (chunk
sizes, defaults): the stage modules do.

Summation order is part of the contract.  Every sum runs over rows in increasing order
into a float64 accumulator, and the loops are arranged so that the innermost loop is
over independent accumulators (vectorizable without reassociation).  No kernel uses
fastmath, so the Numba and Cython kernels give the same bits, and parallel loops
split work only over independent outputs, so results do not depend on the thread
count.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import carray, njit, prange, types
from numba.core import config as numba_config
from numba.extending import intrinsic

__all__ = ["group_means", "median_combine", "single_linkage", "average_linkage", "residual_sums",
           "weighted_residuals", "labeled_sse", "gather_rows", "task_gram", "columns_into_rows"]

_JIT = dict(cache=True, nogil=True)

# Tasks handed to one parallel iteration; fixed, so results never depend on threads.
_TASK_BLOCK = 64

# Rows of a task handed to one BLAS product by task_gram; fixed, for the same reason.
_ROW_SLAB = 128

# labeled_sse: independent partial sums of a row's dot product (lane q takes the terms
# j = q mod _LANES of the first d - d % _LANES), added in lane order, then the rest.
_LANES = 8

# average_linkage: slots per block of its nearest-neighbour scan, and the backlog of
# merges (as a fraction 1/_GATHER_RATIO of the active slots) above which a stale row
# is brought up to date by copying entries of newer rows instead of replaying merges.
_SCAN_BLOCK = 128
_GATHER_RATIO = 8

# The bits of a float64 read as an int64 and xored with this where negative are
# integers in the order of the values (-0.0 just below +0.0; +inf above every
# finite value), so a scan for the minimum can compare integers, which vectorizes.
_KEY_MASK = np.int64(0x7FFFFFFFFFFFFFFF)

# The NaN whose key is _KEY_MASK, above every other: it marks a row's own slot in
# average_linkage's working matrix, which a scan for the minimum thus never takes.
_OWN = float(np.array([_KEY_MASK]).view(np.float64)[0])


def group_means(X, y, offsets, G):
    """Per-task means of y*x over G equal contiguous groups of rows.

    Parameters
    ----------
    X : (N, d) float32 or float64
    y : (N,) same dtype
    offsets : (n + 1,) int64
    G : int
        Groups per task.  Group g of a task with t rows is rows
        ``[g*t // G, (g+1)*t // G)``: sizes differ by at most one and every row is
        used.  An empty group (t < G) has mean 0.

    Returns
    -------
    (n, G, d) array of X's dtype
    """
    # allocated by NumPy (huge pages), like task_gram's outputs: faulting a large
    # output in 4 KiB pages from a compiled allocation cost as much as the kernel
    out = np.empty((offsets.shape[0] - 1, G, X.shape[1]), dtype=X.dtype)
    _group_means_into(X, y, offsets, G, out)
    return out


@njit(parallel=True, **_JIT)
def _group_means_into(X, y, offsets, G, out):
    """:func:`group_means` into the caller-allocated ``out`` (every entry written)."""
    n = offsets.shape[0] - 1
    d = X.shape[1]
    nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    for b in prange(nblocks):
        acc = np.empty(d, dtype=np.float64)
        for i in range(b * _TASK_BLOCK, min(n, (b + 1) * _TASK_BLOCK)):
            start = offsets[i]
            t = offsets[i + 1] - start
            for g in range(G):
                lo = start + (g * t) // G
                hi = start + ((g + 1) * t) // G
                for j in range(d):
                    acc[j] = 0.0
                for r in range(lo, hi):
                    yr = np.float64(y[r])
                    for j in range(d):
                        acc[j] += yr * X[r, j]
                inv = 1.0 / (hi - lo) if hi > lo else 0.0
                for j in range(d):
                    out[i, g, j] = acc[j] * inv


@njit(parallel=True, **_JIT)
def median_combine(S, s, row0, H):
    """One block of rows of the median-of-L distance matrix, from BLAS cross products.

    With ``a = g^(l)`` and ``b = g^(l+L)`` the projected group means of the tasks,
    ``(a_i - a_j).(b_i - b_j) = s_l[i] + s_l[j] - (a_i.b_j + b_i.a_j)``; the caller
    computes the cross term ``S`` by matrix products and this kernel takes the
    median over l.  For each row the L layers are sorted by an odd-even transposition
    network (L rounds of compare-exchanges between neighbouring layers), each
    compare-exchange a select over the whole row: no data-dependent branch, and the
    loops over the row vectorize.

    Parameters
    ----------
    S : (L, m, n - row0) float64
        ``S[l, i, j] = a_(row0+i) . b_(row0+j) + b_(row0+i) . a_(row0+j)``.
    s : (L, n) float64
        ``s[l, i] = a_i . b_i``.
    row0 : int
        First row (and first column) of the block.
    H : (n, n) float64
        Output: rows ``row0:row0+m``, columns ``row0:`` are written (the diagonal as 0).
    """
    L = S.shape[0]
    m = S.shape[1]
    w = S.shape[2]
    h = L // 2
    for i in prange(m):
        D = np.empty((L, w), dtype=np.float64)
        gi = row0 + i
        for l in range(L):
            si = s[l, gi]
            for j in range(w):
                D[l, j] = (si + s[l, row0 + j]) - S[l, i, j]
        for rnd in range(L):
            for p in range(rnd % 2, L - 1, 2):
                for j in range(w):
                    x = D[p, j]
                    z = D[p + 1, j]
                    D[p, j] = x if x <= z else z
                    D[p + 1, j] = z if x <= z else x
        if L % 2 == 1:
            for j in range(w):
                H[gi, row0 + j] = D[h, j]
        else:
            for j in range(w):
                H[gi, row0 + j] = (D[h - 1, j] + D[h, j]) * 0.5
        H[gi, gi] = 0.0


@njit(**_JIT)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(**_JIT)
def _cut_merges(eu, ev, ew, n, k):
    """Labels of n tasks after the n - k lowest of n - 1 merges.

    Merge e joins the clusters of tasks ``eu[e]`` and ``ev[e]`` at height ``ew[e]``.
    The merges are sorted by height with a stable sort (equal heights keep their
    order) and the first n - k applied by union-find.

    Returns
    -------
    labels : (n,) int64 in [0, k), numbered by first appearance (task 0 has label 0)
    """
    order = np.argsort(ew, kind="mergesort")
    uf = np.arange(n)
    for e in range(n - k):
        a = _find(uf, eu[order[e]])
        b = _find(uf, ev[order[e]])
        if a != b:
            uf[max(a, b)] = min(a, b)
    labels = np.empty(n, dtype=np.int64)
    root_label = np.full(n, -1, dtype=np.int64)
    nxt_label = 0
    for i in range(n):
        r = _find(uf, i)
        if root_label[r] < 0:
            root_label[r] = nxt_label
            nxt_label += 1
        labels[i] = root_label[r]
    return labels


@njit(**_JIT)
def single_linkage(H, k):
    """Single-linkage clustering of a dense dissimilarity matrix into k clusters.

    Prim's minimum spanning tree in O(n^2) time and O(n) extra memory, then the
    k - 1 heaviest tree edges are cut.  Ties: Prim takes the lowest index among equal
    candidates; among equal edge weights the edge added to the tree later is cut
    first (stable sort by weight).

    Parameters
    ----------
    H : (n, n) float64, symmetric; any finite values (negative ones included)
    k : int, 1 <= k <= n

    Returns
    -------
    labels : (n,) int64 in [0, k), numbered by first appearance (task 0 has label 0)
    """
    n = H.shape[0]
    in_tree = np.zeros(n, dtype=np.bool_)
    best = np.full(n, np.inf)
    parent = np.zeros(n, dtype=np.int64)
    eu = np.empty(max(n - 1, 0), dtype=np.int64)
    ev = np.empty(max(n - 1, 0), dtype=np.int64)
    ew = np.empty(max(n - 1, 0), dtype=np.float64)
    cur = 0
    in_tree[0] = True
    for step in range(n - 1):
        nxt = -1
        nxt_w = np.inf
        for j in range(n):
            if not in_tree[j]:
                h = H[cur, j]
                if h < best[j]:
                    best[j] = h
                    parent[j] = cur
                if nxt < 0 or best[j] < nxt_w:
                    nxt_w = best[j]
                    nxt = j
        in_tree[nxt] = True
        eu[step] = parent[nxt]
        ev[step] = nxt
        ew[step] = nxt_w
        cur = nxt
    return _cut_merges(eu, ev, ew, n, k)


@njit(**_JIT)
def _replay(D, a, t0, t1, slot_p, slot_q, slot_last, size_p, size_q):
    """Apply merges t0 .. t1-1 of ``average_linkage`` to row a of its working matrix.

    Merge e joined the clusters of slots ``slot_p[e] < slot_q[e]``, of sizes
    ``size_p[e]`` and ``size_q[e]``, into slot ``slot_p[e]``, and moved the cluster of
    slot ``slot_last[e]`` into slot ``slot_q[e]``; row a's cluster took no part in them.
    """
    for e in range(t0, t1):
        p = slot_p[e]
        q = slot_q[e]
        D[a, p] = (size_p[e] * D[a, p] + size_q[e] * D[a, q]) / (size_p[e] + size_q[e])
        D[a, q] = D[a, slot_last[e]]


@njit(**_JIT)
def _refresh(D, a, t0, t1, m, formed, newer, slot_p, slot_q, slot_last, size_p, size_q):
    """Bring row a of ``average_linkage``'s working matrix from t0 merges up to t1.

    A short backlog is replayed (:func:`_replay`).  A long one (more than
    m / ``_GATHER_RATIO`` merges) is not: the row's only stale entries are those of
    the slots whose row was written since (``formed[j] > t0``), and each of those rows
    holds the current distance to a's cluster (unchanged since t0), so they are copied
    from column a, first listed in ``newer`` (scratch, (n,)) so that the copy loop
    does not branch.  The working matrix stays exactly symmetric, so both ways give
    the same bits.  m is the number of active slots.
    """
    if (t1 - t0) * _GATHER_RATIO > m:
        cnt = 0
        for j in range(m):
            newer[cnt] = j
            cnt += formed[j] > t0
        for i in range(cnt):
            j = newer[i]
            D[a, j] = D[j, a]
    else:
        _replay(D, a, t0, t1, slot_p, slot_q, slot_last, size_p, size_q)


@njit(**_JIT)
def _nearest(D, a, m, prev):
    """The slot nearest to row a's cluster among the first m slots of its row.

    The first slot of minimal value, or ``prev`` if no value is below its own (prev < 0:
    no preference).  The minimum is taken over integer keys (see ``_KEY_MASK``) by
    blocks of ``_SCAN_BLOCK`` slots, then its first slot is looked up in the first
    block that holds it; -0.0 and +0.0 are equal values with different keys, so a
    minimum of zero is looked up from slot 0.  Row a's own slot holds ``_OWN``, never
    taken.  A NaN (only an overflow of the weighted means makes one) compares as not
    below, so the chain still only grows to strictly nearer clusters and ends.
    """
    keys = D[a, :m].view(np.int64)
    best = _KEY_MASK
    best_b = 0
    nb = m // _SCAN_BLOCK
    for b in range(nb):
        blk = keys[b * _SCAN_BLOCK:(b + 1) * _SCAN_BLOCK]
        low = _KEY_MASK
        for j in range(_SCAN_BLOCK):
            u = blk[j]
            low = min(low, u ^ ((u >> 63) & _KEY_MASK))
        if low < best:
            best = low
            best_b = b
    tail = keys[nb * _SCAN_BLOCK:m]
    low = _KEY_MASK
    for j in range(m - nb * _SCAN_BLOCK):
        u = tail[j]
        low = min(low, u ^ ((u >> 63) & _KEY_MASK))
    if low < best:
        best = low
        best_b = nb
    j = best_b * _SCAN_BLOCK
    while keys[j] ^ ((keys[j] >> 63) & _KEY_MASK) != best:
        j += 1
    v = D[a, j]
    if prev >= 0 and not v < D[a, prev]:
        return prev
    if v == 0.0:
        j = 0
        while D[a, j] != 0.0:
            j += 1
    return j


@njit(**_JIT)
def _merge_rows(D, p, q, last, wp, wq):
    """Write the rows of ``average_linkage``'s working matrix changed by a merge.

    Slot p gets the union of the clusters of slots p < q (sizes wp and wq); the cluster
    of slot ``last``, the last active one, moves into slot q unless q is ``last``.
    Rows p and q, and row ``last`` if it moves, must be current.
    """
    m = last + 1
    Dp = D[p, :m]
    Dq = D[q, :m]
    w = wp + wq
    for j in range(m):
        Dp[j] = (wp * Dp[j] + wq * Dq[j]) / w
    Dp[p] = _OWN
    d = Dp[last]  # the union's distance to the cluster that moves into slot q
    Dp[q] = d
    if q != last:
        Dq = D[q, :last]
        Dl = D[last, :last]
        for j in range(last):
            Dq[j] = Dl[j]
        Dq[q] = _OWN
        Dq[p] = d


@njit(**_JIT)
def _nn_chain(D, eu, ev, ew):
    """The n - 1 merges of average linkage on the working matrix D (n >= 1), by the
    nearest-neighbour chain: merge t joins the clusters of tasks eu[t] and ev[t] at
    height ew[t] (in the order made)."""
    n = D.shape[0]
    rep = np.arange(n)  # a task of each slot's cluster (its lowest)
    stamp = np.zeros(n, dtype=np.int64)  # merges each slot's row is current after
    formed = np.zeros(n, dtype=np.int64)  # merges after which it was last written whole
    chain = np.empty(n, dtype=np.int64)
    in_chain = np.zeros(n, dtype=np.bool_)
    newer = np.empty(n, dtype=np.int64)
    slot_p = np.empty(n, dtype=np.int64)
    slot_q = np.empty(n, dtype=np.int64)
    slot_last = np.empty(n, dtype=np.int64)
    size = np.ones(n, dtype=np.float64)  # size of each slot's cluster
    size_p = np.empty(n, dtype=np.float64)
    size_q = np.empty(n, dtype=np.float64)
    for i in range(n):
        D[i, i] = _OWN
    top = 0
    a = 0
    for t in range(n - 1):
        m = n - t
        c = 0
        prev = -1
        while c != prev:  # grow the chain until its two last clusters are mutual nearest
            if top == 0:
                chain[0] = 0
                in_chain[0] = True
                top = 1
            a = chain[top - 1]
            _refresh(D, a, stamp[a], t, m, formed, newer, slot_p, slot_q, slot_last, size_p, size_q)
            stamp[a] = t
            prev = chain[top - 2] if top >= 2 else -1
            c = _nearest(D, a, m, prev)
            if c != prev:
                if in_chain[c]:  # only a non-symmetric H leads back into the chain: merge
                    c = prev
                else:
                    chain[top] = c
                    in_chain[c] = True
                    top += 1
        top -= 2
        in_chain[a] = False
        in_chain[c] = False
        p = min(a, c)
        q = max(a, c)
        last = m - 1
        _refresh(D, c, stamp[c], t, m, formed, newer, slot_p, slot_q, slot_last, size_p, size_q)
        if q != last:
            _refresh(D, last, stamp[last], t, m, formed, newer, slot_p, slot_q, slot_last, size_p, size_q)
        eu[t] = rep[p]
        ev[t] = rep[q]
        ew[t] = D[a, c]
        slot_p[t] = p
        slot_q[t] = q
        slot_last[t] = last
        size_p[t] = size[p]
        size_q[t] = size[q]
        _merge_rows(D, p, q, last, size[p], size[q])
        size[p] += size[q]
        rep[p] = min(rep[p], rep[q])
        stamp[p] = t + 1
        formed[p] = t + 1
        if q != last:
            size[q] = size[last]
            rep[q] = rep[last]
            stamp[q] = t + 1
            formed[q] = t + 1
            if in_chain[last]:
                in_chain[last] = False
                in_chain[q] = True
                for i in range(top):
                    if chain[i] == last:
                        chain[i] = q


@njit(**_JIT)
def average_linkage(H, k):
    """Average-linkage (UPGMA) clustering of a dense dissimilarity matrix into k clusters.

    The nearest-neighbour chain, in O(n^2) time and O(n) extra memory, with H itself
    as the working matrix: **H is overwritten**.  The distance of a union to another
    cluster x is ``(n_a d(a, x) + n_b d(b, x)) / (n_a + n_b)`` (SciPy's arithmetic);
    the n - 1 merges are then sorted by height and the first n - k applied, as in
    :func:`single_linkage`.

    The m active clusters occupy slots (rows and columns) 0 .. m-1: merging slots p < q
    puts the union in slot p and moves the last slot's cluster into slot q, so every
    scan reads the first m entries of a row.  A merge writes the rows of slots p and q
    only; any other row is brought up to date when it is next read
    (:func:`_refresh`).  Ties: the chain's top takes its predecessor in the chain if
    that is among its nearest (which the nearest-neighbour chain needs), otherwise
    the lowest slot among them; an empty chain restarts from slot 0; among equal
    merge heights the merge made first is applied first (stable sort by height).

    Parameters
    ----------
    H : (n, n) float64, C-contiguous, symmetric; any finite values (negative ones
        included) whose weighted means do not overflow; the diagonal is ignored.
        Overwritten (the working matrix).  Outside this contract (H not symmetric,
        or an overflow) the labels mean nothing, but they are still k clusters and
        every access stays within the arrays.
    k : int, 1 <= k <= n

    Returns
    -------
    labels : (n,) int64 in [0, k), numbered by first appearance (task 0 has label 0)
    """
    n = H.shape[0]
    nm = max(n - 1, 0)
    eu = np.empty(nm, dtype=np.int64)
    ev = np.empty(nm, dtype=np.int64)
    ew = np.empty(nm, dtype=np.float64)
    if n > 0:
        _nn_chain(H, eu, ev, ew)
    return _cut_merges(eu, ev, ew, n, k)


@njit(parallel=True, **_JIT)
def residual_sums(P, y, offsets):
    """Residual sums of squares of every task under every component, from predictions.

    The caller computes the predictions ``P = X W^T`` by one BLAS product; this
    kernel subtracts them from y and sums the squares per task, in float64.

    Parameters
    ----------
    P : (N, k) float32 or float64 -- ``P[r, l] = x_r . w_l``
    y : (N,) same dtype
    offsets : (n + 1,) int64

    Returns
    -------
    (n, k) float64
        ``out[i, l] = sum over rows r of task i of (y_r - P[r, l])^2``.
    """
    n = offsets.shape[0] - 1
    k = P.shape[1]
    out = np.zeros((n, k), dtype=np.float64)
    nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    for b in prange(nblocks):
        for i in range(b * _TASK_BLOCK, min(n, (b + 1) * _TASK_BLOCK)):
            for r in range(offsets[i], offsets[i + 1]):
                yr = np.float64(y[r])
                for l in range(k):
                    e = yr - np.float64(P[r, l])
                    out[i, l] += e * e
    return out


@njit(parallel=True, **_JIT)
def weighted_residuals(P, y, offsets, R):
    """Turn predictions into residuals weighted by their task's responsibilities, in place.

    EM's E-pass then forms ``G = P^T X`` (k, d) from them by one BLAS product.

    Parameters
    ----------
    P : (N, k) float32 or float64 -- ``P[r, l] = x_r . w_l``; overwritten
    y : (N,) same dtype
    offsets : (n + 1,) int64
    R : (n, k) float64 -- responsibilities of the tasks

    Returns
    -------
    None; ``P[r, l]`` becomes ``(y_r - P[r, l]) * R[i, l]`` for the rows r of task i,
    computed in float64 and rounded once to P's dtype.
    """
    n = offsets.shape[0] - 1
    k = P.shape[1]
    nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    for b in prange(nblocks):
        for i in range(b * _TASK_BLOCK, min(n, (b + 1) * _TASK_BLOCK)):
            for r in range(offsets[i], offsets[i + 1]):
                yr = np.float64(y[r])
                for l in range(k):
                    P[r, l] = (yr - np.float64(P[r, l])) * R[i, l]


@njit(parallel=True, **_JIT)
def labeled_sse(X, y, offsets, labels, W):
    """Residual sum of squares of every task under its own component.

    One pass over the rows, no predictions stored: the k-th part of the work of
    :func:`residual_sums` over ``X W^T`` when each task needs one component.  A row's
    dot product ``x_r . w_l`` runs in ``_LANES`` independent partial sums (lane q takes
    the terms j = q mod _LANES of the first ``d - d % _LANES``), which are added in lane
    order, then the remaining terms in order: a fixed order that vectorizes.

    Parameters
    ----------
    X : (N, d) float32 or float64
    y : (N,) same dtype
    offsets : (n + 1,) int64
    labels : (n,) int64 in [0, k)
    W : (k, d) float64

    Returns
    -------
    (n,) float64 -- ``out[i] = sum over rows r of task i of (y_r - x_r . w_labels[i])^2``
    """
    n = offsets.shape[0] - 1
    d = X.shape[1]
    dl = d - d % _LANES
    out = np.zeros(n, dtype=np.float64)
    nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    for b in prange(nblocks):
        acc = np.empty(_LANES, dtype=np.float64)
        for i in range(b * _TASK_BLOCK, min(n, (b + 1) * _TASK_BLOCK)):
            l = labels[i]
            s = 0.0
            for r in range(offsets[i], offsets[i + 1]):
                for q in range(_LANES):
                    acc[q] = 0.0
                for j0 in range(0, dl, _LANES):
                    for q in range(_LANES):
                        acc[q] += np.float64(X[r, j0 + q]) * W[l, j0 + q]
                dot = 0.0
                for q in range(_LANES):
                    dot += acc[q]
                for j in range(dl, d):
                    dot += np.float64(X[r, j]) * W[l, j]
                e = np.float64(y[r]) - dot
                s += e * e
            out[i] = s
    return out


@njit(parallel=True, **_JIT)
def gather_rows(X, y, offsets, tasks, weights):
    """Rows of the listed tasks, stacked in list order, each scaled by sqrt(weight).

    The weighted normal equations of a class are then one BLAS product of the result
    with itself (``Xg^T Xg = sum_i w_i X_i^T X_i``), done by the caller.

    Parameters
    ----------
    X : (N, d) float32 or float64
    y : (N,) same dtype
    offsets : (n + 1,) int64
    tasks : (m,) int64 -- indices into the tasks, each in [0, n)
    weights : (m,) float64 >= 0

    Returns
    -------
    Xg : (sum of the tasks' sizes, d) X's dtype
    yg : (sum of the tasks' sizes,) X's dtype
    """
    m = tasks.shape[0]
    d = X.shape[1]
    starts = np.empty(m + 1, dtype=np.int64)
    starts[0] = 0
    for q in range(m):
        i = tasks[q]
        starts[q + 1] = starts[q] + offsets[i + 1] - offsets[i]
    Xg = np.empty((starts[m], d), dtype=X.dtype)
    yg = np.empty(starts[m], dtype=X.dtype)
    for q in prange(m):
        i = tasks[q]
        sw = np.sqrt(weights[q])
        o = starts[q]
        for r in range(offsets[i], offsets[i + 1]):
            for j in range(d):
                Xg[o, j] = sw * X[r, j]
            yg[o] = sw * y[r]
            o += 1
    return Xg, yg


@njit(**_JIT)
def _slab_gram(X, y, r0, m, buf, G):
    """G (e, e) = B^T B for the slab B = [X[r0:r0+m] y[r0:r0+m]] (e = d + 1 columns),
    copied to ``buf`` in float64 and multiplied by BLAS (dgemm, via np.dot)."""
    d = X.shape[1]
    for r in range(m):
        for j in range(d):
            buf[r, j] = X[r0 + r, j]
        buf[r, d] = y[r0 + r]
    bt = buf[:m]
    np.dot(bt.T, bt, G)


def task_gram(X, y, offsets):
    """Per-task sufficient statistics of least squares: X_i^T X_i, X_i^T y_i, y_i^T y_i.

    Each task's rows, with y as an extra column, are copied in slabs of at most
    ``_ROW_SLAB`` rows to a float64 buffer whose Gram matrix BLAS computes; the Gram
    matrices of a task's slabs are added in order.

    Parameters
    ----------
    X : (N, d) float32 or float64
    y : (N,) same dtype
    offsets : (n + 1,) int64

    Returns
    -------
    A : (n, d(d+1)/2) float64
        Upper triangle of ``X_i^T X_i`` packed row by row (the order of
        ``np.triu_indices(d)``): entry (a, q), q >= a, is at ``a*d - a*(a-1)/2 + q - a``.
    b : (n, d) float64 -- ``X_i^T y_i``
    c : (n,) float64 -- ``y_i^T y_i``
    """
    # The outputs are allocated by NumPy, which backs large arrays with huge pages: the
    # packed Gram matrices can be larger than X (n d^2 / 2 numbers), and faulting them in
    # 4 KiB pages from a compiled allocation cost as much as computing them.
    n = offsets.shape[0] - 1
    d = X.shape[1]
    A = np.empty((n, d * (d + 1) // 2), dtype=np.float64)
    b = np.empty((n, d), dtype=np.float64)
    c = np.empty(n, dtype=np.float64)
    _task_gram_into(X, y, offsets, A, b, c)
    return A, b, c


@njit(parallel=True, **_JIT)
def _task_gram_into(X, y, offsets, A, b, c):
    """:func:`task_gram` into caller-allocated ``A``, ``b``, ``c`` (every entry written)."""
    n = offsets.shape[0] - 1
    d = X.shape[1]
    e = d + 1
    nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    for blk in prange(nblocks):
        buf = np.empty((_ROW_SLAB, e), dtype=np.float64)
        G = np.empty((e, e), dtype=np.float64)
        S = np.empty((e, e), dtype=np.float64)
        for i in range(blk * _TASK_BLOCK, min(n, (blk + 1) * _TASK_BLOCK)):
            start = offsets[i]
            stop = offsets[i + 1]
            if stop <= start:
                A[i, :] = 0.0
                b[i, :] = 0.0
                c[i] = 0.0
                continue
            _slab_gram(X, y, start, min(_ROW_SLAB, stop - start), buf, G)
            for r0 in range(start + _ROW_SLAB, stop, _ROW_SLAB):
                _slab_gram(X, y, r0, min(_ROW_SLAB, stop - r0), buf, S)
                for a in range(e):
                    for q in range(e):
                        G[a, q] += S[a, q]
            p = 0
            for a in range(d):
                # slices, so that the copy's index starts at 0 and needs no wrap-around test
                Ai = A[i, p:p + d - a]
                Ga = G[a, a:d]
                for q in range(d - a):
                    Ai[q] = Ga[q]
                p += d - a
                b[i, a] = G[a, d]
            c[i] = G[d, d]


# ---------------------------------------------------------------- columns into rows

@intrinsic
def _column_pointer(typingctx, address, like):
    """The int64 ``address`` as a pointer to values of ``like``'s dtype."""
    sig = types.CPointer(like.dtype)(address, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


if numba_config.DISABLE_JIT:  # the kernels run as Python (NUMBA_DISABLE_JIT=1): a view through ctypes
    def _column(address, n, like):
        cell = ctypes.c_float if like.dtype == np.float32 else ctypes.c_double
        return np.ctypeslib.as_array((cell * n).from_address(int(address)))
else:
    @njit(**_JIT)
    def _column(address, n, like):
        """The n values of ``like``'s dtype at ``address``, as an array."""
        return carray(_column_pointer(address, like), (n,))


# columns_into_rows: rows per parallel iteration, and columns read together.
_FILL_ROWS = 1024
_FILL_COLS = 4


@njit(parallel=True, **_JIT)
def columns_into_rows(X, addresses):
    """Copy d columns into the rows of X, and tell whether every value is finite.

    Parameters
    ----------
    X : (n, d) float32 or float64, C-contiguous -- written
    addresses : (d,) int64 -- address of column j: n contiguous values of X's dtype,
        alive for the call (the caller holds the arrays)

    Returns
    -------
    bool -- True if no value copied is NaN or infinite
    """
    n, d = X.shape
    blocks = (n + _FILL_ROWS - 1) // _FILL_ROWS
    bad = np.zeros(blocks, dtype=np.bool_)
    full = d - d % _FILL_COLS
    for b in prange(blocks):
        s = b * _FILL_ROWS
        e = min(n, s + _FILL_ROWS)
        acc = 0.0
        for j0 in range(0, full, _FILL_COLS):
            c0 = _column(addresses[j0], n, X)
            c1 = _column(addresses[j0 + 1], n, X)
            c2 = _column(addresses[j0 + 2], n, X)
            c3 = _column(addresses[j0 + 3], n, X)
            for i in range(s, e):
                v0 = c0[i]
                v1 = c1[i]
                v2 = c2[i]
                v3 = c3[i]
                X[i, j0] = v0
                X[i, j0 + 1] = v1
                X[i, j0 + 2] = v2
                X[i, j0 + 3] = v3
                acc += ((v0 - v0) + (v1 - v1)) + ((v2 - v2) + (v3 - v3))  # NaN iff a value is not finite
        for j in range(full, d):
            c = _column(addresses[j], n, X)
            for i in range(s, e):
                v = c[i]
                X[i, j] = v
                acc += v - v
        bad[b] = acc != acc
    return not bad.any()
