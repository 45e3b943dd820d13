"""Every kernel of every compiled backend against the NumPy oracle on the same inputs.

Tolerances: the compiled kernels accumulate in float64 in a different order from the
oracle's BLAS/reduceat, so values agree to ~1e-12 relative in float64; float32 outputs
(group means, gathered rows) to float32 rounding.  Labels must be equal.
"""

import numpy as np
import pytest

from fastmlr import _reference as ref
from fastmlr.backend import _load

from helpers import COMPILED, ragged_tasks

pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled backend importable here")

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 2e-6}


def K(name):
    return _load(name)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("G", [1, 2, 3, 8])
def test_group_means(name, dtype, G):
    rng = np.random.default_rng(G)
    X, y, off = ragged_tasks(rng, 57, 7, 0, 20, dtype)  # sizes 0..20: empty and size-1 groups
    got = K(name).group_means(X, y, off, G)
    want = ref.group_means(X, y, off, G)
    assert got.shape == want.shape == (56 + 1, G, 7)
    assert got.dtype == X.dtype
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])
    # tasks shorter than G have empty groups, whose mean is defined as 0
    t = np.diff(off)
    g = np.arange(G)
    empty = ((g[None, :] + 1) * t[:, None]) // G == (g[None, :] * t[:, None]) // G
    assert np.all(got[empty] == 0)


@pytest.mark.parametrize("name", COMPILED)
def test_group_means_single_task_single_row(name):
    X = np.array([[1.5, -2.0]])
    y = np.array([2.0])
    off = np.array([0, 1], dtype=np.int64)
    got = K(name).group_means(X, y, off, 2)
    np.testing.assert_array_equal(got, [[[0.0, 0.0], [3.0, -4.0]]])


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("L", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 64, 129])
def test_median_distances(name, L, n):
    rng = np.random.default_rng(100 * L + n)
    P = rng.standard_normal((n, 2 * L, 5))
    got = K(name).median_distances(P, L)
    want = ref.median_distances(P, L)
    assert got.shape == (n, n)
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(initial=1.0))


@pytest.mark.parametrize("name", COMPILED)
def test_median_distances_by_hand(name):
    # two tasks, L = 2: H = median of (a_i - a_j).(b_i - b_j) over l = 0, 1
    P = np.zeros((2, 4, 1))
    P[0, :, 0] = [1.0, 2.0, 3.0, 5.0]  # g0, g1 | g2, g3
    H = K(name).median_distances(P, 2)
    # l=0: 1*3 = 3; l=1: 2*5 = 10; median of two = 6.5
    assert H[0, 1] == H[1, 0] == 6.5


def _same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    pairs = {(x, y) for x, y in zip(a, b)}
    return len(pairs) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (2, 2), (10, 3), (60, 5), (200, 12), (50, 50)])
def test_single_linkage(name, n, k):
    rng = np.random.default_rng(n + k)
    pts = rng.standard_normal((n, 3))
    H = ((pts[:, None] - pts[None]) ** 2).sum(-1) - 0.5  # negative entries on purpose
    np.fill_diagonal(H, 0.0)
    got = K(name).single_linkage(H, k)
    want = ref.single_linkage(H, k)
    assert got.dtype == np.int64 and got.shape == (n,)
    np.testing.assert_array_equal(got, want)  # both numbered by first appearance
    assert len(np.unique(got)) == k


def _brute_single_linkage(H, k):
    """O(n^3) agglomeration: repeatedly merge the two clusters at the smallest gap."""
    n = H.shape[0]
    lab = list(range(n))
    while len(set(lab)) > k:
        best = None
        for i in range(n):
            for j in range(n):
                if lab[i] != lab[j] and (best is None or H[i, j] < best[0]):
                    best = (H[i, j], lab[i], lab[j])
        _, a, b = best
        lab = [a if x == b else x for x in lab]
    return lab


@pytest.mark.parametrize("name", COMPILED)
def test_single_linkage_against_brute_force(name):
    rng = np.random.default_rng(7)
    for trial in range(5):
        n = 25
        H = rng.random((n, n))
        H = H + H.T
        np.fill_diagonal(H, 0)
        for k in (1, 3, 6):
            assert _same_partition(K(name).single_linkage(H, k), _brute_single_linkage(H, k))


@pytest.mark.parametrize("name", COMPILED)
def test_single_linkage_ties(name):
    # a path 0-1-2-3 with equal edges and a far point 4; all edge weights tie at 1
    H = np.full((5, 5), 10.0)
    for i in range(3):
        H[i, i + 1] = H[i + 1, i] = 1.0
    np.fill_diagonal(H, 0.0)
    np.testing.assert_array_equal(K(name).single_linkage(H, 2), [0, 0, 0, 0, 1])
    # cutting one more tied edge: the edge added to the tree last (2-3) goes first
    np.testing.assert_array_equal(K(name).single_linkage(H, 3), [0, 0, 0, 1, 2])
    # all distances equal: Prim builds the star 0-1, 0-2, ...; the last ones are cut
    E = np.ones((4, 4))
    np.fill_diagonal(E, 0.0)
    np.testing.assert_array_equal(K(name).single_linkage(E, 2), [0, 0, 0, 1])


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 17])
def test_task_sse(name, dtype, k):
    rng = np.random.default_rng(k)
    X, y, off = ragged_tasks(rng, 300, 9, 0, 12, dtype)
    W = rng.standard_normal((k, 9))
    got = K(name).task_sse(X, y, off, W)
    want = ref.task_sse(X, y, off, W)
    assert got.shape == (300, k) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10 if dtype == np.float64 else 1e-5, atol=1e-9)
    assert np.all(got[np.diff(off) == 0] == 0)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_rows(name, dtype):
    rng = np.random.default_rng(3)
    X, y, off = ragged_tasks(rng, 80, 6, 0, 9, dtype)
    tasks = rng.choice(80, size=30, replace=False).astype(np.int64)
    weights = rng.random(30)
    weights[:3] = 0.0
    Xg, yg = K(name).gather_rows(X, y, off, tasks, weights)
    Xr, yr = ref.gather_rows(X, y, off, tasks, weights)
    assert Xg.dtype == X.dtype and Xg.shape == Xr.shape
    np.testing.assert_allclose(Xg, Xr, rtol=RTOL[dtype])
    np.testing.assert_allclose(yg, yr, rtol=RTOL[dtype])
    empty = K(name).gather_rows(X, y, off, np.zeros(0, np.int64), np.zeros(0))
    assert empty[0].shape == (0, 6) and empty[1].shape == (0,)
