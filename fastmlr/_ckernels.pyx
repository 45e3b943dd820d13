# cython: language_level=3, cdivision=True
# (boundscheck, wraparound, initializedcheck and nonecheck are off, set by setup.py, so
# that FASTMLR_CYTHON_BOUNDSCHECK=1 can build a checked copy for the tests)
"""fastmlr's hot loops in Cython: a mirror of ``kernels.py``.

Name for name, argument for argument and loop for loop the same kernels as
``kernels.py`` (Numba), whose docstring names this module in turn; ``_reference.py``
is the NumPy oracle of both.  The kernels see only validated, C-contiguous arrays and
scalars, and return NumPy arrays.

The summation order is the one of ``kernels.py``: every sum runs over rows in
increasing order into a float64 accumulator, and the innermost loops run over
independent accumulators.  The build turns off floating-point contraction
(``-ffp-contract=off``) and never uses fast-math, so the two compiled backends give
the same bits.  Parallel loops (OpenMP, ``prange``) split work only over independent
outputs, each thread with its own scratch row, so results do not depend on the number
of threads, which is read from ``fastmlr._threads.omp_threads()`` at every call.
"""

import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, sqrt
from libc.stdint cimport int64_t, intptr_t
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm

from . import _threads

__all__ = ["group_means", "median_combine", "single_linkage", "average_linkage", "residual_sums",
           "weighted_residuals", "labeled_sse",
           "gather_rows", "task_gram", "columns_into_rows"]

cdef extern from *:
    """
    #ifdef _OPENMP
    #define FASTMLR_HAVE_OPENMP 1
    #else
    #define FASTMLR_HAVE_OPENMP 0
    #endif
    """
    const int FASTMLR_HAVE_OPENMP

#: Whether the extension was compiled with OpenMP (without it, every kernel runs on one thread).
OPENMP = bool(FASTMLR_HAVE_OPENMP)

# Tasks handed to one parallel iteration (as in kernels.py); fixed, so results never
# depend on the thread count.
cdef enum:
    _TASK_BLOCK = 64
    _ROW_SLAB = 128   # rows of a task per BLAS product in task_gram (as in kernels.py)
    _LANES = 8        # partial sums of a row's dot product in labeled_sse (as in kernels.py)
    _SCAN_BLOCK = 128  # average_linkage: slots per block of the nearest-neighbour scan
    _GATHER_RATIO = 8  # average_linkage: backlog above m / _GATHER_RATIO merges is gathered
    _FILL_ROWS = 1024  # columns_into_rows: rows per parallel iteration
    _FILL_COLS = 4     # columns_into_rows: columns read together

# float64 bits as int64, xored with this where negative: integers in the order of the
# values; _OWN, the NaN whose key is _KEY_MASK, marks a row's own slot in
# average_linkage's working matrix (as in kernels.py)
cdef int64_t _KEY_MASK = 0x7FFFFFFFFFFFFFFF
cdef double _OWN
memcpy(&_OWN, &_KEY_MASK, sizeof(double))


cdef inline int _nthreads(Py_ssize_t work) except -1:
    """Threads for a parallel region with ``work`` independent iterations (>= 1; 1 in
    a process forked after OpenMP threads started, see ``_threads.omp_threads``)."""
    return <int>_threads.omp_threads(work)


def _parallel_threads():
    """Number of threads an OpenMP region of these kernels runs with now (1 without OpenMP).

    Lets the tests check that the thread setting reaches the Cython backend.
    """
    cdef int nt = _threads.omp_threads(_threads.get())
    seen = np.zeros(max(nt, 1), dtype=np.int8)
    cdef signed char[::1] s = seen
    cdef Py_ssize_t i
    with nogil, parallel(num_threads=nt):
        for i in prange(nt, schedule="static", chunksize=1):
            s[threadid()] = 1
    return int(seen.sum())


# ---------------------------------------------------------------- group_means

cdef inline void _group_means_task(const floating[:, ::1] X, const floating[::1] y,
                                   const int64_t[::1] offsets, Py_ssize_t G, Py_ssize_t i,
                                   double* acc, floating[:, :, ::1] out) noexcept nogil:
    cdef Py_ssize_t d = X.shape[1]
    cdef int64_t start = offsets[i]
    cdef int64_t t = offsets[i + 1] - start
    cdef int64_t lo, hi, r
    cdef Py_ssize_t g, j
    cdef double yr, inv
    for g in range(G):
        lo = start + (g * t) // G
        hi = start + ((g + 1) * t) // G
        for j in range(d):
            acc[j] = 0.0
        for r in range(lo, hi):
            yr = <double>y[r]
            for j in range(d):
                acc[j] += yr * <double>X[r, j]
        inv = 1.0 / <double>(hi - lo) if hi > lo else 0.0
        for j in range(d):
            out[i, g, j] = <floating>(acc[j] * inv)


def group_means(const floating[:, ::1] X, const floating[::1] y, const int64_t[::1] offsets,
                Py_ssize_t G):
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
    cdef Py_ssize_t n = offsets.shape[0] - 1
    cdef Py_ssize_t d = X.shape[1]
    result = np.empty((n, G, d), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, ::1] out = result
    cdef Py_ssize_t nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    cdef int nt = _nthreads(nblocks)
    scratch = np.empty((nt, d + 1), dtype=np.float64)
    cdef double[:, ::1] buf = scratch
    cdef Py_ssize_t b, i, hi_task
    cdef double* acc = NULL
    with nogil, parallel(num_threads=nt):
        acc = &buf[threadid(), 0]
        for b in prange(nblocks, schedule="static"):
            hi_task = (b + 1) * _TASK_BLOCK
            if hi_task > n:
                hi_task = n
            for i in range(b * _TASK_BLOCK, hi_task):
                _group_means_task(X, y, offsets, G, i, acc, out)
    return result


# ------------------------------------------------------------- median_combine

cdef inline void _median_row(const double[:, :, ::1] S, const double[:, ::1] s, Py_ssize_t row0,
                             Py_ssize_t i, double* D, double[:, ::1] H) noexcept nogil:
    cdef Py_ssize_t L = S.shape[0]
    cdef Py_ssize_t w = S.shape[2]
    cdef Py_ssize_t gi = row0 + i
    cdef Py_ssize_t h = L // 2
    cdef Py_ssize_t l, j, rnd, p
    cdef double si, x, z
    cdef double* a
    cdef double* b
    for l in range(L):
        si = s[l, gi]
        for j in range(w):
            D[l * w + j] = (si + s[l, row0 + j]) - S[l, i, j]
    for rnd in range(L):
        p = rnd % 2
        while p + 1 < L:
            a = D + p * w
            b = D + (p + 1) * w
            for j in range(w):
                x = a[j]
                z = b[j]
                a[j] = x if x <= z else z
                b[j] = z if x <= z else x
            p += 2
    if L % 2 == 1:
        for j in range(w):
            H[gi, row0 + j] = D[h * w + j]
    else:
        for j in range(w):
            H[gi, row0 + j] = (D[(h - 1) * w + j] + D[h * w + j]) * 0.5
    H[gi, gi] = 0.0


def median_combine(const double[:, :, ::1] S, const double[:, ::1] s, Py_ssize_t row0,
                   double[:, ::1] H):
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
    cdef Py_ssize_t L = S.shape[0]
    cdef Py_ssize_t m = S.shape[1]
    cdef Py_ssize_t w = S.shape[2]
    cdef int nt = _nthreads(m)
    scratch = np.empty((nt, max(L * w, 1)), dtype=np.float64)
    cdef double[:, ::1] work = scratch
    cdef Py_ssize_t i
    cdef double* D = NULL
    if m == 0:
        return
    with nogil, parallel(num_threads=nt):
        D = &work[threadid(), 0]
        for i in prange(m, schedule="static"):
            _median_row(S, s, row0, i, D, H)


# ------------------------------------------------------------- single_linkage

cdef inline int64_t _find(int64_t[::1] parent, int64_t a) noexcept nogil:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


cdef _cut_merges(eu_arr, ev_arr, ew_arr, Py_ssize_t n, Py_ssize_t k):
    """Labels of n tasks after the n - k lowest of n - 1 merges.

    Merge e joins the clusters of tasks ``eu[e]`` and ``ev[e]`` at height ``ew[e]``.
    The merges are sorted by height with a stable sort (equal heights keep their
    order) and the first n - k applied by union-find.

    Returns
    -------
    labels : (n,) int64 in [0, k), numbered by first appearance (task 0 has label 0)
    """
    cdef int64_t[::1] eu = eu_arr
    cdef int64_t[::1] ev = ev_arr
    # any stable sort gives the same order; NumPy's mergesort is one
    order_arr = np.argsort(ew_arr, kind="mergesort").astype(np.int64)
    cdef int64_t[::1] order = order_arr
    uf_arr = np.arange(n, dtype=np.int64)
    cdef int64_t[::1] uf = uf_arr
    labels_arr = np.empty(n, dtype=np.int64)
    root_label_arr = np.full(n, -1, dtype=np.int64)
    cdef int64_t[::1] labels = labels_arr
    cdef int64_t[::1] root_label = root_label_arr
    cdef int64_t a, b, r, nxt_label = 0
    cdef Py_ssize_t e, i
    with nogil:
        for e in range(n - k):
            a = _find(uf, eu[order[e]])
            b = _find(uf, ev[order[e]])
            if a != b:
                if a < b:
                    uf[b] = a
                else:
                    uf[a] = b
        for i in range(n):
            r = _find(uf, i)
            if root_label[r] < 0:
                root_label[r] = nxt_label
                nxt_label += 1
            labels[i] = root_label[r]
    return labels_arr


def single_linkage(const double[:, ::1] H, Py_ssize_t k):
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
    cdef Py_ssize_t n = H.shape[0]
    cdef Py_ssize_t m = n - 1 if n > 1 else 0
    in_tree_arr = np.zeros(n, dtype=np.uint8)
    best_arr = np.full(n, np.inf)
    parent_arr = np.zeros(n, dtype=np.int64)
    eu_arr = np.empty(m, dtype=np.int64)
    ev_arr = np.empty(m, dtype=np.int64)
    ew_arr = np.empty(m, dtype=np.float64)
    cdef unsigned char[::1] in_tree = in_tree_arr
    cdef double[::1] best = best_arr
    cdef int64_t[::1] parent = parent_arr
    cdef int64_t[::1] eu = eu_arr
    cdef int64_t[::1] ev = ev_arr
    cdef double[::1] ew = ew_arr
    cdef Py_ssize_t step, j, cur = 0, nxt
    cdef double h, nxt_w
    if n == 0:
        return np.empty(0, dtype=np.int64)
    in_tree[0] = 1
    with nogil:
        for step in range(n - 1):
            nxt = -1
            nxt_w = INFINITY
            for j in range(n):
                if not in_tree[j]:
                    h = H[cur, j]
                    if h < best[j]:
                        best[j] = h
                        parent[j] = cur
                    if nxt < 0 or best[j] < nxt_w:
                        nxt_w = best[j]
                        nxt = j
            in_tree[nxt] = 1
            eu[step] = parent[nxt]
            ev[step] = nxt
            ew[step] = nxt_w
            cur = nxt
    return _cut_merges(eu_arr, ev_arr, ew_arr, n, k)


# ------------------------------------------------------------ average_linkage

cdef inline void _replay(double[:, ::1] D, Py_ssize_t a, Py_ssize_t t0, Py_ssize_t t1,
                         const int64_t[::1] slot_p, const int64_t[::1] slot_q,
                         const int64_t[::1] slot_last, const double[::1] size_p,
                         const double[::1] size_q) noexcept nogil:
    """Apply merges t0 .. t1-1 of ``average_linkage`` to row a of its working matrix."""
    cdef Py_ssize_t e, p, q
    for e in range(t0, t1):
        p = slot_p[e]
        q = slot_q[e]
        D[a, p] = (size_p[e] * D[a, p] + size_q[e] * D[a, q]) / (size_p[e] + size_q[e])
        D[a, q] = D[a, slot_last[e]]


cdef inline void _refresh(double[:, ::1] D, Py_ssize_t a, Py_ssize_t t0, Py_ssize_t t1,
                          Py_ssize_t m, const int64_t[::1] formed, int64_t[::1] newer,
                          const int64_t[::1] slot_p, const int64_t[::1] slot_q,
                          const int64_t[::1] slot_last, const double[::1] size_p,
                          const double[::1] size_q) noexcept nogil:
    """Bring row a of ``average_linkage``'s working matrix from t0 merges up to t1
    (replayed, or copied from column a when the backlog is long; see kernels.py)."""
    cdef Py_ssize_t i, j, cnt = 0
    if (t1 - t0) * _GATHER_RATIO > m:
        for j in range(m):
            newer[cnt] = j
            cnt += formed[j] > t0
        for i in range(cnt):
            j = newer[i]
            D[a, j] = D[j, a]
    else:
        _replay(D, a, t0, t1, slot_p, slot_q, slot_last, size_p, size_q)


cdef inline int64_t _key(double v) noexcept nogil:
    """The bits of v as an int64, xored with _KEY_MASK where negative."""
    cdef int64_t u
    memcpy(&u, &v, sizeof(double))
    return u ^ ((u >> 63) & _KEY_MASK)


cdef Py_ssize_t _nearest(const double[:, ::1] D, Py_ssize_t a, Py_ssize_t m,
                         Py_ssize_t prev) noexcept nogil:
    """The slot nearest to row a's cluster among the first m slots of its row: the first
    slot of minimal value, or ``prev`` if no value is below its own (see kernels.py)."""
    cdef int64_t best = _KEY_MASK, low, u
    cdef Py_ssize_t best_b = 0, nb = m // _SCAN_BLOCK, b, j, j0
    cdef double v
    for b in range(nb):
        j0 = b * _SCAN_BLOCK
        low = _KEY_MASK
        for j in range(_SCAN_BLOCK):
            u = _key(D[a, j0 + j])
            if u < low:
                low = u
        if low < best:
            best = low
            best_b = b
    j0 = nb * _SCAN_BLOCK
    low = _KEY_MASK
    for j in range(m - j0):
        u = _key(D[a, j0 + j])
        if u < low:
            low = u
    if low < best:
        best = low
        best_b = nb
    j = best_b * _SCAN_BLOCK
    while _key(D[a, j]) != best:
        j += 1
    v = D[a, j]
    if prev >= 0 and not v < D[a, prev]:
        return prev
    if v == 0.0:
        j = 0
        while D[a, j] != 0.0:
            j += 1
    return j


cdef void _merge_rows(double[:, ::1] D, Py_ssize_t p, Py_ssize_t q, Py_ssize_t last,
                      double wp, double wq) noexcept nogil:
    """Write the rows of ``average_linkage``'s working matrix changed by a merge: the
    union of slots p < q into slot p, the last slot's cluster into slot q (see kernels.py)."""
    cdef Py_ssize_t j, m = last + 1
    cdef double w = wp + wq, d
    for j in range(m):
        D[p, j] = (wp * D[p, j] + wq * D[q, j]) / w
    D[p, p] = _OWN
    d = D[p, last]  # the union's distance to the cluster that moves into slot q
    D[p, q] = d
    if q != last:
        for j in range(last):
            D[q, j] = D[last, j]
        D[q, q] = _OWN
        D[q, p] = d


cdef void _nn_chain(double[:, ::1] D, int64_t[::1] eu, int64_t[::1] ev, double[::1] ew,
                    int64_t[:, ::1] iwork, double[:, ::1] fwork) noexcept nogil:
    """The n - 1 merges of average linkage on the working matrix D (n >= 1), by the
    nearest-neighbour chain: merge t joins the clusters of tasks eu[t] and ev[t] at
    height ew[t] (in the order made).  ``iwork`` (9, n) and ``fwork`` (3, n) are scratch."""
    cdef Py_ssize_t n = D.shape[0]
    cdef int64_t[::1] rep = iwork[0]  # a task of each slot's cluster (its lowest)
    cdef int64_t[::1] stamp = iwork[1]  # merges each slot's row is current after
    cdef int64_t[::1] formed = iwork[2]  # merges after which it was last written whole
    cdef int64_t[::1] chain = iwork[3]
    cdef int64_t[::1] newer = iwork[4]
    cdef int64_t[::1] slot_p = iwork[5]
    cdef int64_t[::1] slot_q = iwork[6]
    cdef int64_t[::1] slot_last = iwork[7]
    cdef int64_t[::1] in_chain = iwork[8]
    cdef double[::1] size = fwork[0]  # size of each slot's cluster
    cdef double[::1] size_p = fwork[1]
    cdef double[::1] size_q = fwork[2]
    cdef Py_ssize_t i, t, m, top = 0, a = 0, c, prev, p, q, last
    for i in range(n):
        rep[i] = i
        stamp[i] = 0
        formed[i] = 0
        in_chain[i] = 0
        size[i] = 1.0
        D[i, i] = _OWN
    for t in range(n - 1):
        m = n - t
        c = 0
        prev = -1
        while c != prev:  # grow the chain until its two last clusters are mutual nearest
            if top == 0:
                chain[0] = 0
                in_chain[0] = 1
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
                    in_chain[c] = 1
                    top += 1
        top -= 2
        in_chain[a] = 0
        in_chain[c] = 0
        p = a if a < c else c
        q = c if a < c else a
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
        if rep[q] < rep[p]:
            rep[p] = rep[q]
        stamp[p] = t + 1
        formed[p] = t + 1
        if q != last:
            size[q] = size[last]
            rep[q] = rep[last]
            stamp[q] = t + 1
            formed[q] = t + 1
            if in_chain[last]:
                in_chain[last] = 0
                in_chain[q] = 1
                for i in range(top):
                    if chain[i] == last:
                        chain[i] = q


def average_linkage(double[:, ::1] H, Py_ssize_t k):
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
    cdef Py_ssize_t n = H.shape[0]
    cdef Py_ssize_t nm = n - 1 if n > 1 else 0
    eu_arr = np.empty(nm, dtype=np.int64)
    ev_arr = np.empty(nm, dtype=np.int64)
    ew_arr = np.empty(nm, dtype=np.float64)
    cdef int64_t[::1] eu = eu_arr
    cdef int64_t[::1] ev = ev_arr
    cdef double[::1] ew = ew_arr
    cdef int64_t[:, ::1] iwork = np.empty((9, n), dtype=np.int64)
    cdef double[:, ::1] fwork = np.empty((3, n), dtype=np.float64)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    with nogil:
        _nn_chain(H, eu, ev, ew, iwork, fwork)
    return _cut_merges(eu_arr, ev_arr, ew_arr, n, k)


# --------------------------------------------------------------- residual_sums

cdef inline void _residual_sums_task(const floating[:, ::1] P, const floating[::1] y,
                                     const int64_t[::1] offsets, Py_ssize_t i,
                                     double[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t k = P.shape[1]
    cdef int64_t r
    cdef Py_ssize_t l
    cdef double yr, e
    for r in range(offsets[i], offsets[i + 1]):
        yr = <double>y[r]
        for l in range(k):
            e = yr - <double>P[r, l]
            out[i, l] += e * e


def residual_sums(const floating[:, ::1] P, const floating[::1] y, const int64_t[::1] offsets):
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
    cdef Py_ssize_t n = offsets.shape[0] - 1
    cdef Py_ssize_t k = P.shape[1]
    result = np.zeros((n, k), dtype=np.float64)
    cdef double[:, ::1] out = result
    cdef Py_ssize_t nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    cdef int nt = _nthreads(nblocks)
    cdef Py_ssize_t b, i, hi_task
    with nogil, parallel(num_threads=nt):
        for b in prange(nblocks, schedule="static"):
            hi_task = (b + 1) * _TASK_BLOCK
            if hi_task > n:
                hi_task = n
            for i in range(b * _TASK_BLOCK, hi_task):
                _residual_sums_task(P, y, offsets, i, out)
    return result


# ----------------------------------------------------------- weighted_residuals

def weighted_residuals(floating[:, ::1] P, const floating[::1] y, const int64_t[::1] offsets,
                       const double[:, ::1] R):
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
    cdef Py_ssize_t n = offsets.shape[0] - 1
    cdef Py_ssize_t k = P.shape[1]
    cdef Py_ssize_t nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    cdef int nt = _nthreads(nblocks)
    cdef Py_ssize_t b, i, hi_task, l
    cdef int64_t r
    cdef double yr
    with nogil, parallel(num_threads=nt):
        for b in prange(nblocks, schedule="static"):
            hi_task = (b + 1) * _TASK_BLOCK
            if hi_task > n:
                hi_task = n
            for i in range(b * _TASK_BLOCK, hi_task):
                for r in range(offsets[i], offsets[i + 1]):
                    yr = <double>y[r]
                    for l in range(k):
                        P[r, l] = <floating>((yr - <double>P[r, l]) * R[i, l])


# ----------------------------------------------------------------- labeled_sse

cdef inline double _labeled_sse_task(const floating[:, ::1] X, const floating[::1] y,
                                     const int64_t[::1] offsets, Py_ssize_t i, const double* w) noexcept nogil:
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t dl = d - d % _LANES
    cdef double acc[_LANES]
    cdef double s = 0.0
    cdef double dot, e
    cdef int64_t r
    cdef Py_ssize_t j0, j, q
    for r in range(offsets[i], offsets[i + 1]):
        for q in range(_LANES):
            acc[q] = 0.0
        j0 = 0
        while j0 < dl:
            for q in range(_LANES):
                acc[q] += <double>X[r, j0 + q] * w[j0 + q]
            j0 += _LANES
        dot = 0.0
        for q in range(_LANES):
            dot += acc[q]
        for j in range(dl, d):
            dot += <double>X[r, j] * w[j]
        e = <double>y[r] - dot
        s += e * e
    return s


def labeled_sse(const floating[:, ::1] X, const floating[::1] y, const int64_t[::1] offsets,
                const int64_t[::1] labels, const double[:, ::1] W):
    """Residual sum of squares of every task under its own component.

    One pass over the rows, no predictions stored.  A row's dot product runs in
    ``_LANES`` independent partial sums (lane q takes the terms j = q mod _LANES of the
    first ``d - d % _LANES``), added in lane order, then the remaining terms in order
    (the order of the Numba kernel).

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
    cdef Py_ssize_t n = offsets.shape[0] - 1
    result = np.zeros(n, dtype=np.float64)
    cdef double[::1] out = result
    cdef Py_ssize_t nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    cdef int nt = _nthreads(nblocks)
    cdef Py_ssize_t b, i, hi_task
    with nogil, parallel(num_threads=nt):
        for b in prange(nblocks, schedule="static"):
            hi_task = (b + 1) * _TASK_BLOCK
            if hi_task > n:
                hi_task = n
            for i in range(b * _TASK_BLOCK, hi_task):
                out[i] = _labeled_sse_task(X, y, offsets, i, &W[labels[i], 0])
    return result


# ----------------------------------------------------------------- gather_rows

cdef inline void _gather_task(const floating[:, ::1] X, const floating[::1] y,
                              const int64_t[::1] offsets, int64_t i, double sw, int64_t o,
                              floating[:, ::1] Xg, floating[::1] yg) noexcept nogil:
    cdef Py_ssize_t d = X.shape[1]
    cdef int64_t r
    cdef Py_ssize_t j
    for r in range(offsets[i], offsets[i + 1]):
        for j in range(d):
            Xg[o, j] = <floating>(sw * <double>X[r, j])
        yg[o] = <floating>(sw * <double>y[r])
        o += 1


def gather_rows(const floating[:, ::1] X, const floating[::1] y, const int64_t[::1] offsets,
                const int64_t[::1] tasks, const double[::1] weights):
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
    cdef Py_ssize_t m = tasks.shape[0]
    cdef Py_ssize_t d = X.shape[1]
    starts_arr = np.empty(m + 1, dtype=np.int64)
    cdef int64_t[::1] starts = starts_arr
    cdef Py_ssize_t q
    cdef int64_t i
    starts[0] = 0
    for q in range(m):
        i = tasks[q]
        starts[q + 1] = starts[q] + offsets[i + 1] - offsets[i]
    dtype = np.float32 if floating is float else np.float64
    Xg_arr = np.empty((starts[m], d), dtype=dtype)
    yg_arr = np.empty(starts[m], dtype=dtype)
    cdef floating[:, ::1] Xg = Xg_arr
    cdef floating[::1] yg = yg_arr
    cdef int nt = _nthreads(m)
    with nogil:
        for q in prange(m, schedule="static", num_threads=nt):
            _gather_task(X, y, offsets, tasks[q], sqrt(weights[q]), starts[q], Xg, yg)
    return Xg_arr, yg_arr


# ------------------------------------------------------------------- task_gram

cdef inline void _slab_gram(const floating[:, ::1] X, const floating[::1] y, int64_t r0, int m,
                            double* buf, double* G) noexcept nogil:
    """G (e, e) = B^T B for the slab B = [X[r0:r0+m] y[r0:r0+m]], by the same dgemm call
    as Numba's ``np.dot(B.T, B, G)`` (so the two backends agree bit for bit)."""
    cdef int d = X.shape[1]
    cdef int e = d + 1
    cdef int r, j
    cdef char transa = b'n'
    cdef char transb = b't'
    cdef double one = 1.0
    cdef double zero = 0.0
    for r in range(m):
        for j in range(d):
            buf[r * e + j] = <double>X[r0 + r, j]
        buf[r * e + d] = <double>y[r0 + r]
    dgemm(&transa, &transb, &e, &e, &m, &one, buf, &e, buf, &e, &zero, G, &e)


cdef inline void _task_gram_task(const floating[:, ::1] X, const floating[::1] y,
                                 const int64_t[::1] offsets, Py_ssize_t i, double* buf,
                                 double* G, double* S,
                                 double[:, ::1] A, double[:, ::1] b, double[::1] c) noexcept nogil:
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t e = d + 1
    cdef int64_t start = offsets[i]
    cdef int64_t stop = offsets[i + 1]
    cdef int64_t r0
    cdef Py_ssize_t a, q, p
    if stop <= start:
        return
    _slab_gram(X, y, start, <int>min(<int64_t>_ROW_SLAB, stop - start), buf, G)
    r0 = start + _ROW_SLAB
    while r0 < stop:
        _slab_gram(X, y, r0, <int>min(<int64_t>_ROW_SLAB, stop - r0), buf, S)
        for a in range(e):
            for q in range(e):
                G[a * e + q] += S[a * e + q]
        r0 += _ROW_SLAB
    p = 0
    for a in range(d):
        for q in range(a, d):
            A[i, p + q - a] = G[a * e + q]
        p += d - a
        b[i, a] = G[a * e + d]
    c[i] = G[d * e + d]


def task_gram(const floating[:, ::1] X, const floating[::1] y, const int64_t[::1] offsets):
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
    cdef Py_ssize_t n = offsets.shape[0] - 1
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t e = d + 1
    A_arr = np.zeros((n, d * (d + 1) // 2), dtype=np.float64)
    b_arr = np.zeros((n, d), dtype=np.float64)
    c_arr = np.zeros(n, dtype=np.float64)
    cdef double[:, ::1] A = A_arr
    cdef double[:, ::1] b = b_arr
    cdef double[::1] c = c_arr
    cdef Py_ssize_t nblocks = (n + _TASK_BLOCK - 1) // _TASK_BLOCK
    cdef int nt = _nthreads(nblocks)
    scratch = np.empty((nt, _ROW_SLAB * e + 2 * e * e), dtype=np.float64)
    cdef double[:, ::1] work = scratch
    cdef Py_ssize_t blk, i, hi_task
    cdef double* buf = NULL
    with nogil, parallel(num_threads=nt):
        buf = &work[threadid(), 0]
        for blk in prange(nblocks, schedule="static"):
            hi_task = (blk + 1) * _TASK_BLOCK
            if hi_task > n:
                hi_task = n
            for i in range(blk * _TASK_BLOCK, hi_task):
                _task_gram_task(X, y, offsets, i, buf, buf + _ROW_SLAB * e,
                                buf + _ROW_SLAB * e + e * e, A, b, c)
    return A_arr, b_arr, c_arr


# ---------------------------------------------------------------- columns into rows

cdef inline bint _fill_block(floating[:, ::1] X, const int64_t[::1] addresses, Py_ssize_t s,
                             Py_ssize_t e) noexcept nogil:
    """Rows s:e of every column into X; False if a value is not finite."""
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t full = d - d % _FILL_COLS
    cdef Py_ssize_t i, j, j0, t
    cdef const floating* c0
    cdef const floating* c1
    cdef const floating* c2
    cdef const floating* c3
    cdef floating v0, v1, v2, v3
    cdef double acc = 0.0
    for t in range(full // _FILL_COLS):
        j0 = t * _FILL_COLS
        c0 = <const floating*><intptr_t>addresses[j0]
        c1 = <const floating*><intptr_t>addresses[j0 + 1]
        c2 = <const floating*><intptr_t>addresses[j0 + 2]
        c3 = <const floating*><intptr_t>addresses[j0 + 3]
        for i in range(s, e):
            v0 = c0[i]
            v1 = c1[i]
            v2 = c2[i]
            v3 = c3[i]
            X[i, j0] = v0
            X[i, j0 + 1] = v1
            X[i, j0 + 2] = v2
            X[i, j0 + 3] = v3
            # NaN iff a value is not finite
            acc += (<double>(v0 - v0) + <double>(v1 - v1)) + (<double>(v2 - v2) + <double>(v3 - v3))
    for j in range(full, d):
        c0 = <const floating*><intptr_t>addresses[j]
        for i in range(s, e):
            v0 = c0[i]
            X[i, j] = v0
            acc += <double>(v0 - v0)
    return acc == acc


def columns_into_rows(floating[:, ::1] X, const int64_t[::1] addresses):
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
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t blocks = (n + _FILL_ROWS - 1) // _FILL_ROWS
    cdef int nt = _nthreads(blocks)
    ok_arr = np.ones(blocks, dtype=np.uint8)
    cdef unsigned char[::1] ok = ok_arr
    cdef Py_ssize_t b, e
    with nogil, parallel(num_threads=nt):
        for b in prange(blocks, schedule="static"):
            e = (b + 1) * _FILL_ROWS
            if e > n:
                e = n
            ok[b] = _fill_block(X, addresses, b * _FILL_ROWS, e)
    return bool(ok_arr.all())
