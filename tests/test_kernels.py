"""Every kernel of every compiled backend against the NumPy oracle, and against each other.

Each kernel runs on seeded cases (ragged task sizes, size-1 and empty groups and
tasks, ties, the smallest legal inputs) under every compiled backend, in float64 and
float32 where the kernel takes task data, with 1 and 2 threads.

Tolerances against the oracle: the compiled kernels accumulate in float64 in a
different order from the oracle's BLAS/reduceat, so group means and distances agree
to 1e-12 relative in float64 and to float32 rounding (2e-6) when the output is
float32; residual sums to 1e-10 relative (atol 1e-9); gathered rows are one
correctly rounded product each, so they are equal.  Labels must be equal (or, where
the case has tied distances, a valid single-linkage cut, or k average-linkage
clusters).  Every call gets its own copy of the array arguments, since a kernel may
use one as scratch (average_linkage overwrites H).

Between the Numba and the Cython backend the summation order is the same everywhere,
so every output must be equal to the last bit, and so must the outputs of one
backend at 1 and 2 threads.
"""

import numpy as np
import pytest

import fastmlr
from fastmlr import _reference as ref
from fastmlr.backend import _load
from fastmlr.cluster import median_distance_matrix
from fastmlr.residuals import class_sse, task_sse

from helpers import COMPILED, THREADS, is_single_linkage_partition, ragged_tasks, tasks_of_sizes

pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled backend importable here")

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 2e-6}
BOTH = "numba" in COMPILED and "cython" in COMPILED


def K(name):
    return _load(name)


@pytest.fixture(params=THREADS, ids=lambda t: f"threads{t}")
def threads(request):
    """Run the test body with the kernel thread count set, restored afterwards."""
    with fastmlr.n_threads(request.param):
        yield request.param


# ------------------------------------------------------------------ the cases
# Each builder takes (rng, dtype) and returns the kernel's positional arguments.

def _gm_ragged(G):
    return lambda rng, dt: (*ragged_tasks(rng, 150, 7, 0, 20, dt), G)  # 3 task blocks


def _gm_short(rng, dt):  # tasks of 0..3 rows, 4 groups: empty and size-1 groups
    return (*tasks_of_sizes(rng, rng.integers(0, 4, size=90), 3, dt), 4)


def _gm_smallest(rng, dt):
    return (*tasks_of_sizes(rng, [1], 1, dt), 1)


def _gm_empty_task(rng, dt):
    return (*tasks_of_sizes(rng, [0], 3, dt), 2)


def _mc_random(n, L, m, row0):
    """A block of rows [row0, row0 + m) of an n x n distance matrix, L layers."""
    def build(rng, dt):
        S = rng.standard_normal((L, m, n - row0))
        s = rng.standard_normal((L, n))
        return S, s, row0, np.full((n, n), np.nan)
    return build


def _mc_ties(rng, dt):  # small integers: tied layer values and tied medians
    n, L = 40, 3
    S = rng.integers(-1, 2, size=(L, 10, n - 5)).astype(np.float64)
    s = rng.integers(-1, 2, size=(L, n)).astype(np.float64)
    return S, s, 5, np.full((n, n), np.nan)


def _sl_random(n, k):
    def build(rng, dt):
        pts = rng.standard_normal((n, 3))
        H = ((pts[:, None] - pts[None]) ** 2).sum(-1) - 0.5  # negative entries on purpose
        np.fill_diagonal(H, 0.0)
        return H, k
    return build


def _sl_ties(k):
    def build(rng, dt):  # points on a small grid: many equal distances
        pts = rng.integers(0, 4, size=(40, 2)).astype(np.float64)
        pts[:, 0] += 5.0 * (np.arange(40) % 3)
        H = np.abs(pts[:, None] - pts[None]).sum(-1)
        np.fill_diagonal(H, 0.0)
        return H, k
    return build


def _sl_smallest(rng, dt):
    return np.zeros((1, 1)), 1


def _al_diagonal(rng, dt):  # the diagonal is ignored, whatever it holds
    H, k = _sl_random(40, 4)(rng, dt)
    np.fill_diagonal(H, rng.standard_normal(40) * 10.0)
    return H, k


def _rs_ragged(k):
    def build(rng, dt):
        X, y, off = ragged_tasks(rng, 300, 9, 0, 12, dt)
        return X @ rng.standard_normal((9, k)).astype(dt), y, off
    return build


def _rs_smallest(rng, dt):
    X, y, off = tasks_of_sizes(rng, [1], 1, dt)
    return X * dt(0.5), y, off


def _wr_ragged(k):
    def build(rng, dt):
        X, y, off = ragged_tasks(rng, 300, 9, 0, 12, dt)
        return X @ rng.standard_normal((9, k)).astype(dt), y, off, rng.random((300, k))
    return build


def _wr_smallest(rng, dt):
    X, y, off = tasks_of_sizes(rng, [1], 1, dt)
    return X * dt(0.5), y, off, np.ones((1, 1))


def _ls_ragged(d):  # d below, at and above the lane count, and with a remainder
    def build(rng, dt):
        X, y, off = ragged_tasks(rng, 200, d, 0, 10, dt)
        k = 5
        return X, y, off, rng.integers(0, k, size=200).astype(np.int64), rng.standard_normal((k, d))
    return build


def _ls_smallest(rng, dt):
    X, y, off = tasks_of_sizes(rng, [1], 1, dt)
    return X, y, off, np.zeros(1, dtype=np.int64), np.full((1, 1), 0.5)


def _ls_empty_tasks(rng, dt):
    X, y, off = tasks_of_sizes(rng, [0, 3, 0, 2], 9, dt)
    return X, y, off, np.array([1, 0, 1, 1], dtype=np.int64), rng.standard_normal((2, 9))


def _gr_ragged(rng, dt):
    X, y, off = ragged_tasks(rng, 80, 6, 0, 9, dt)
    tasks = rng.choice(80, size=30, replace=False).astype(np.int64)
    weights = rng.random(30)
    weights[:3] = 0.0
    return X, y, off, tasks, weights


def _gr_repeats(rng, dt):  # a task listed twice, empty tasks listed too
    X, y, off = tasks_of_sizes(rng, [3, 0, 1, 5, 0, 2], 4, dt)
    return X, y, off, np.array([3, 1, 3, 0, 4, 5], dtype=np.int64), rng.random(6) * 3


def _gr_none(rng, dt):
    X, y, off = ragged_tasks(rng, 5, 6, 0, 4, dt)
    return X, y, off, np.zeros(0, np.int64), np.zeros(0)


def _gr_smallest(rng, dt):
    X, y, off = tasks_of_sizes(rng, [1], 1, dt)
    return X, y, off, np.zeros(1, np.int64), np.ones(1)


def _tg_ragged(d):
    def build(rng, dt):
        return ragged_tasks(rng, 150, d, 0, 11, dt)
    return build


def _tg_smallest(rng, dt):
    return tasks_of_sizes(rng, [1], 1, dt)


def _tg_long_tasks(rng, dt):  # tasks of several row slabs, and slab-sized ones
    return tasks_of_sizes(rng, [300, 129, 128, 1, 0, 257], 5, dt)


def _tg_empty_tasks(rng, dt):
    return tasks_of_sizes(rng, [0, 4, 0, 0, 1, 0], 3, dt)


# kernel -> case id -> (builder, takes task data of either dtype, tied distances)
#: columns_into_rows reads its columns by address: the arrays live here for the test run
_COLUMNS_HELD: list = []


def _cr_columns(n, d, bad=None):
    """n rows of d columns, each a strided-free slice of a larger array (an offset
    address), with a NaN or an infinity at one place when ``bad`` names it."""
    def build(rng, dt):
        cols = [rng.standard_normal(n + 3).astype(dt)[3:] for _ in range(d)]
        if bad is not None and n:
            cols[d // 2][n // 2] = {"nan": np.nan, "inf": -np.inf}[bad]
        if n:
            cols[0][0] = np.finfo(dt).max  # finite values whose sum overflows are still finite
            cols[-1][0] = np.finfo(dt).max
        _COLUMNS_HELD.append(cols)
        X = np.full((n, d), 7.0, dtype=dt)
        return X, np.array([c.ctypes.data for c in cols], dtype=np.int64)
    return build


CASES = {
    "group_means": {
        **{f"ragged-G{G}": (_gm_ragged(G), True, False) for G in (1, 2, 3, 8)},
        "short-tasks-G4": (_gm_short, True, False),
        "smallest": (_gm_smallest, True, False),
        "one-empty-task": (_gm_empty_task, True, False),
    },
    "median_combine": {
        **{f"n{n}-L{L}-m{m}-row{r}": (_mc_random(n, L, m, r), False, False)
           for n, L, m, r in [(1, 1, 1, 0), (2, 2, 2, 0), (5, 3, 2, 3), (64, 1, 64, 0), (129, 4, 17, 100), (200, 2, 50, 0)]},
        "ties": (_mc_ties, False, True),
    },
    "single_linkage": {
        **{f"n{n}-k{k}": (_sl_random(n, k), False, False)
           for n, k in [(2, 1), (2, 2), (10, 3), (60, 5), (200, 12), (50, 50)]},
        **{f"ties-k{k}": (_sl_ties(k), False, True) for k in (1, 3, 7)},
        "smallest": (_sl_smallest, False, False),
    },
    "average_linkage": {  # the same matrices; n = 300 spans several scan blocks of 128
        **{f"n{n}-k{k}": (_sl_random(n, k), False, False)
           for n, k in [(2, 1), (2, 2), (10, 3), (60, 1), (60, 5), (200, 12), (50, 50), (300, 7)]},
        **{f"ties-k{k}": (_sl_ties(k), False, True) for k in (1, 3, 7)},
        "nonzero-diagonal": (_al_diagonal, False, False),
        "smallest": (_sl_smallest, False, False),
    },
    "residual_sums": {
        **{f"ragged-k{k}": (_rs_ragged(k), True, False) for k in (1, 3, 17)},
        "smallest": (_rs_smallest, True, False),
    },
    "weighted_residuals": {
        **{f"ragged-k{k}": (_wr_ragged(k), True, False) for k in (1, 3, 17)},
        "smallest": (_wr_smallest, True, False),
    },
    "labeled_sse": {
        **{f"ragged-d{d}": (_ls_ragged(d), True, False) for d in (3, 8, 21, 64)},
        "empty-tasks": (_ls_empty_tasks, True, False),
        "smallest": (_ls_smallest, True, False),
    },
    "gather_rows": {
        "ragged-zero-weights": (_gr_ragged, True, False),
        "repeats-and-empty": (_gr_repeats, True, False),
        "no-tasks": (_gr_none, True, False),
        "smallest": (_gr_smallest, True, False),
    },
    "columns_into_rows": {  # n = 2500 spans three parallel blocks of 1024 rows
        **{f"n{n}-d{d}": (_cr_columns(n, d), True, False) for n, d in [(1, 1), (2500, 3), (2500, 8), (1025, 33)]},
        **{f"{bad}": (_cr_columns(2500, 9, bad), True, False) for bad in ("nan", "inf")},
        "no-rows": (_cr_columns(0, 4), True, False),
    },
    "task_gram": {
        **{f"ragged-d{d}": (_tg_ragged(d), True, False) for d in (1, 2, 7, 33)},
        "empty-tasks": (_tg_empty_tasks, True, False),
        "long-tasks": (_tg_long_tasks, True, False),
        "smallest": (_tg_smallest, True, False),
    },
}


def _params():
    out = []
    for seed, (kernel, cases) in enumerate(CASES.items()):
        for case, (build, typed, ties) in cases.items():
            for dtype in DTYPES if typed else [np.float64]:
                dname = np.dtype(dtype).name
                out.append(pytest.param(kernel, build, dtype, ties, 1000 * seed + len(out),
                                        id=f"{kernel}-{case}-{dname}"))
    return out


PARAMS = _params()
ARGNAMES = "kernel,build,dtype,ties,seed"


#: kernels that fill one of their arguments instead of returning a result: its position
IN_PLACE = {"median_combine": -1, "weighted_residuals": 0}
#: kernels that fill one of their arguments and return a result: its position
FILLS = {"columns_into_rows": 0}


def _call(module, kernel, args):
    """Run a kernel on fresh copies of its array arguments (a kernel may use one as
    scratch); an in-place kernel returns its filled output."""
    args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    result = getattr(module, kernel)(*args)
    if kernel in IN_PLACE:
        assert result is None
        return args[IN_PLACE[kernel]]
    if kernel in FILLS:  # (the filled argument, the result as an array)
        return args[FILLS[kernel]], np.asarray(result)
    return result


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _inputs(build, dtype, seed):
    return build(np.random.default_rng(seed), dtype)


def _check_against_oracle(kernel, args, got, want, dtype, ties):
    for g, w in zip(_outputs(got), _outputs(want)):
        assert g.shape == w.shape
    if kernel == "group_means":
        assert got.dtype == args[0].dtype
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])
    elif kernel == "median_combine":
        S, s, row0, _ = args
        m = S.shape[1]
        written = np.zeros(got.shape, dtype=bool)
        written[row0 : row0 + m, row0:] = True
        assert np.all(np.isnan(got[~written]))  # nothing outside the block is touched
        idx = np.arange(row0, row0 + m)
        np.testing.assert_array_equal(got[idx, idx], 0.0)
        # same arithmetic on both sides ((s_i + s_j) - S, then a median): equal bits
        np.testing.assert_array_equal(got[written], want[written])
    elif kernel in ("single_linkage", "average_linkage"):
        assert got.dtype == np.int64
        assert got[0] == 0 and np.all(np.diff(np.maximum.accumulate(got)) <= 1)  # first appearance
        assert np.unique(got).size == args[1]
        if not ties:
            np.testing.assert_array_equal(got, want)
        elif kernel == "single_linkage":
            assert is_single_linkage_partition(args[0], got, args[1])
    elif kernel == "residual_sums":
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert np.all(got[np.diff(args[2]) == 0] == 0)
    elif kernel == "weighted_residuals":
        # one float64 subtraction and product per entry, rounded once to P's dtype: equal bits
        assert got.dtype == args[0].dtype
        np.testing.assert_array_equal(got, want)
    elif kernel == "labeled_sse":
        assert got.dtype == np.float64
        # float64 products of the inputs: the kernels' lanes and NumPy's sum differ only by
        # the order of summation
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(want).max(initial=0.0)))
        assert np.all(got[np.diff(args[2]) == 0] == 0)
    elif kernel == "gather_rows":
        for g, w in zip(got, want):
            assert g.dtype == args[0].dtype
            np.testing.assert_array_equal(g, w)
    elif kernel == "task_gram":
        A, b, c = got
        for g in got:
            assert g.dtype == np.float64
        empty = np.diff(args[2]) == 0
        assert not A[empty].any() and not b[empty].any() and not c[empty].any()
        # float64 sums of products of the inputs (exact in float64 for float32 input up to
        # the order of summation): BLAS and the kernels differ only by that order
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(w).max(initial=0.0)))
    elif kernel == "columns_into_rows":
        X, ok = got
        assert X.dtype == args[0].dtype and ok.dtype == bool
        np.testing.assert_array_equal(X, want[0])  # copies: equal bits
        assert ok == want[1] == bool(np.isfinite(want[0]).all())
    else:  # pragma: no cover - a kernel added without a check
        raise AssertionError(f"no oracle check for {kernel}")


def test_every_kernel_has_cases():
    assert set(CASES) == set(ref.__all__) - {"median_distances"}  # that one is the oracle of H
    for name in COMPILED:
        assert set(K(name).__all__) == set(CASES)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize(ARGNAMES, PARAMS)
def test_kernel_against_oracle(name, kernel, build, dtype, ties, seed, threads):
    args = _inputs(build, dtype, seed)
    got = _call(K(name), kernel, args)
    want = _call(ref, kernel, args)
    assert type(got) is type(want)
    _check_against_oracle(kernel, args, got, want, dtype, ties)


@pytest.mark.skipif(not BOTH, reason="needs both the numba and the cython backend")
@pytest.mark.parametrize(ARGNAMES, PARAMS)
def test_numba_and_cython_bitwise_equal(kernel, build, dtype, ties, seed, threads):
    args = _inputs(build, dtype, seed)
    a = _call(K("numba"), kernel, args)
    b = _call(K("cython"), kernel, args)
    assert type(a) is type(b)
    for x, z in zip(_outputs(a), _outputs(b)):
        assert isinstance(z, np.ndarray) and x.dtype == z.dtype and x.shape == z.shape
        np.testing.assert_array_equal(x, z, strict=True)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize(ARGNAMES, PARAMS)
def test_result_independent_of_threads(name, kernel, build, dtype, ties, seed):
    args = _inputs(build, dtype, seed)
    runs = []
    for t in THREADS:
        with fastmlr.n_threads(t):
            runs.append(_outputs(_call(K(name), kernel, args)))
    for x, z in zip(*runs):
        np.testing.assert_array_equal(x, z, strict=True)


# --------------------------------------------------- hand-computed expectations

@pytest.mark.parametrize("name", COMPILED)
def test_group_means_single_task_single_row(name):
    X = np.array([[1.5, -2.0]])
    y = np.array([2.0])
    off = np.array([0, 1], dtype=np.int64)
    got = K(name).group_means(X, y, off, 2)
    np.testing.assert_array_equal(got, [[[0.0, 0.0], [3.0, -4.0]]])


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("G", [1, 2, 3, 8])
def test_group_means_empty_groups_are_zero(name, G):
    X, y, off = ragged_tasks(np.random.default_rng(G), 57, 7, 0, 20)
    got = K(name).group_means(X, y, off, G)
    t = np.diff(off)
    g = np.arange(G)
    empty = ((g[None, :] + 1) * t[:, None]) // G == (g[None, :] * t[:, None]) // G
    assert empty.any() and np.all(got[empty] == 0)


@pytest.mark.parametrize("name", COMPILED + ["numpy"])
def test_median_distances_by_hand(name):
    # two tasks, L = 2: H = median of (a_i - a_j).(b_i - b_j) over l = 0, 1
    P = np.zeros((2, 4, 1))
    P[0, :, 0] = [1.0, 2.0, 3.0, 5.0]  # g0, g1 | g2, g3
    with fastmlr.use_backend(name):
        H = median_distance_matrix(P, 2)
    # l=0: 1*3 = 3; l=1: 2*5 = 10; median of two = 6.5
    assert H[0, 1] == H[1, 0] == 6.5


@pytest.mark.parametrize("name", COMPILED + ["numpy"])
def test_median_distances_tied_values(name):
    # L = 3 with values (4, 4, -1) for the pair: the median of a tie is the tied value
    P = np.zeros((2, 6, 1))
    P[0, :, 0] = [2.0, 1.0, 1.0, 2.0, 4.0, -1.0]
    with fastmlr.use_backend(name):
        assert median_distance_matrix(P, 3)[0, 1] == 4.0


@pytest.mark.parametrize("name", COMPILED + ["numpy"])
@pytest.mark.parametrize("n,L", [(1, 1), (2, 2), (5, 3), (64, 1), (300, 4), (700, 2)])
def test_blocked_distance_matrix_matches_definition(monkeypatch, name, n, L):
    # small blocks, so that several blocks of rows and their mirroring are exercised
    monkeypatch.setattr(fastmlr._config, "BLOCK_BYTES", 8 * L * n * 37)
    P = np.random.default_rng(n + L).standard_normal((n, 2 * L, 5))
    with fastmlr.use_backend(name):
        H = median_distance_matrix(P, L)
    want = ref.median_distances(P, L)
    np.testing.assert_array_equal(H, H.T)
    np.testing.assert_array_equal(np.diag(H), 0.0)
    np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(initial=1.0))


def _same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    pairs = {(x, y) for x, y in zip(a, b)}
    return len(pairs) == len(set(a)) == len(set(b))


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


def _brute_average_linkage(H, k):
    """Greedy agglomeration from the definition: repeatedly merge the two clusters of
    least mean dissimilarity between their members."""
    clusters = [[i] for i in range(H.shape[0])]
    while len(clusters) > k:
        best = None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                d = H[np.ix_(clusters[x], clusters[y])].mean()
                if best is None or d < best[0]:
                    best = (d, x, y)
        _, x, y = best
        clusters[x] += clusters.pop(y)
    lab = np.empty(H.shape[0], dtype=np.int64)
    for c, members in enumerate(clusters):
        lab[members] = c
    return lab


@pytest.mark.parametrize("name", COMPILED + ["numpy"])
def test_average_linkage_against_brute_force(name):
    rng = np.random.default_rng(11)
    for trial in range(40):
        n = int(rng.integers(1, 13))
        H = rng.standard_normal((n, n))
        H = H + H.T  # negative values too
        np.fill_diagonal(H, 0.0)
        for k in range(1, n + 1):
            got = K(name).average_linkage(H.copy(), k)
            assert _same_partition(got, _brute_average_linkage(H, k)), (trial, n, k)


@pytest.mark.skipif(not BOTH, reason="needs both the numba and the cython backend")
def test_average_linkage_ties_same_in_both_backends():
    # small integers: many equal distances and equal merge heights, where only the
    # documented tie rules decide; both compiled backends must follow them alike
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 17, 40, 130, 300):
        for trial in range(3):
            H = rng.integers(-2, 3, size=(n, n)).astype(np.float64)
            H = H + H.T
            if trial == 2:
                H[:] = 1.0  # everything tied
            for k in sorted({1, 2, max(1, n // 3), n - 1, n} - {0}):
                a = K("numba").average_linkage(H.copy(), k)
                b = K("cython").average_linkage(H.copy(), k)
                np.testing.assert_array_equal(a, b, strict=True)
                assert a[0] == 0 and np.unique(a).size == k


@pytest.mark.parametrize("name", COMPILED)
def test_average_linkage_ties(name):
    # all distances equal: the chain from slot 0 takes slot 1 (the first of its nearest),
    # whose nearest include its predecessor 0, so {0, 1} merge first; the union, in slot
    # 0, then meets task 3, moved into slot 1, and last task 2; the heights tie, so the
    # cut keeps the order in which the merges were made
    E = np.ones((4, 4))
    np.fill_diagonal(E, 0.0)
    np.testing.assert_array_equal(K(name).average_linkage(E.copy(), 2), [0, 0, 1, 0])
    np.testing.assert_array_equal(K(name).average_linkage(E.copy(), 3), [0, 0, 1, 2])


@pytest.mark.parametrize("name", COMPILED)
def test_average_linkage_outside_contract(name):
    # a non-symmetric H, or entries so large that the weighted means overflow to +-inf
    # and NaN: meaningless labels, but the chain must end, stay in bounds (the bounds-
    # checked runs catch it) and still make k clusters
    rng = np.random.default_rng(2)
    for trial in range(40):
        n = int(rng.integers(2, 60))
        if trial % 2:
            H = rng.standard_normal((n, n))
        else:
            H = np.triu(rng.choice([-1.7e308, 1.7e308, 1e308, 1.0, -3.0], size=(n, n)), 1)
            H = H + H.T
        for k in sorted({1, 2, n // 2, n} - {0}):
            with np.errstate(over="ignore", invalid="ignore"):  # NUMBA_DISABLE_JIT=1 runs
                got = K(name).average_linkage(H.copy(), k)
            assert got[0] == 0 and np.unique(got).size == k and got.max() == k - 1


def test_average_linkage_oracle_leaves_H():
    # the compiled kernels use H as their working matrix; the NumPy oracle does not
    H = np.array([[0.0, 1.0, 4.0], [1.0, 0.0, 3.0], [4.0, 3.0, 0.0]])
    before = H.copy()
    np.testing.assert_array_equal(ref.average_linkage(H, 2), [0, 0, 1])
    np.testing.assert_array_equal(H, before)


def test_tie_checker_rejects_a_wrong_cut():
    # guards the partition check used for the tied cases: a cut through a tight pair fails
    H = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 5.0], [5.0, 5.0, 0.0]])
    assert is_single_linkage_partition(H, np.array([0, 0, 1]), 2)
    assert not is_single_linkage_partition(H, np.array([0, 1, 1]), 2)
    assert not is_single_linkage_partition(H, np.array([0, 0, 0]), 2)


@pytest.mark.parametrize("name", COMPILED + ["numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_task_sse_matches_definition(monkeypatch, name, dtype):
    # small chunks of rows, so that several BLAS products and kernel calls are made
    monkeypatch.setattr(fastmlr._config, "BLOCK_BYTES", 4 * 8 * 100)
    rng = np.random.default_rng(5)
    X, y, off = ragged_tasks(rng, 120, 6, 0, 9, dtype)
    W = rng.standard_normal((4, 6))
    with fastmlr.use_backend(name):
        got = task_sse(X, y, off, W)
    Xf, yf = X.astype(np.float64), y.astype(np.float64)
    want = np.array([[np.sum((yf[a:b] - Xf[a:b] @ w) ** 2) for w in W] for a, b in zip(off[:-1], off[1:])])
    np.testing.assert_allclose(got, want, rtol=1e-10 if dtype == np.float64 else 2e-5, atol=1e-9)


@pytest.mark.parametrize("name", COMPILED + ["numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_class_sse_matches_definition(monkeypatch, name, dtype):
    # pieces of about 30 rows, so that each class is gathered and predicted in several
    monkeypatch.setattr(fastmlr._config, "CACHE_BLOCK_BYTES", 30 * 6 * np.dtype(dtype).itemsize)
    rng = np.random.default_rng(6)
    X, y, off = ragged_tasks(rng, 150, 6, 0, 9, dtype)
    W = rng.standard_normal((5, 6))
    labels = rng.integers(0, 4, size=150)  # class 4 is empty
    runs = []
    with fastmlr.use_backend(name):
        for threads in (1, 2):
            with fastmlr.n_threads(threads):
                runs.append(class_sse(X, y, off, labels, W))
    np.testing.assert_array_equal(runs[0], runs[1])
    Xf, yf = X.astype(np.float64), y.astype(np.float64)
    want = np.zeros(5)
    for i, (a, b) in enumerate(zip(off[:-1], off[1:])):
        want[labels[i]] += np.sum((yf[a:b] - Xf[a:b] @ W[labels[i]]) ** 2)
    assert want[4] == 0.0 and runs[0][4] == 0.0
    np.testing.assert_allclose(runs[0], want, rtol=1e-10 if dtype == np.float64 else 2e-5)
