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

import numpy as np
from numba import njit, prange

from . import _threads

__all__ = ["group_means", "median_combine", "single_linkage", "residual_sums", "gather_rows", "task_gram"]

_JIT = dict(cache=True, nogil=True)

# Tasks handed to one parallel iteration; fixed, so results never depend on threads.
_TASK_BLOCK = 64

# Rows of a task handed to one BLAS product by task_gram; fixed, for the same reason.
_ROW_SLAB = 128

_threads.set(_threads._count)


@njit(parallel=True, **_JIT)
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
    n = offsets.shape[0] - 1
    d = X.shape[1]
    out = np.empty((n, G, d), dtype=X.dtype)
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
    return out


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
