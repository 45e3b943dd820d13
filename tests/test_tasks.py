"""The task-set layout: validation messages, packing helpers, chunking."""

import numpy as np
import pytest

import fastmlr
from fastmlr.tasks import check_tasks, chunk_bounds


def good():
    X = np.arange(12.0).reshape(6, 2)
    y = np.arange(6.0)
    off = np.array([0, 2, 5, 6])
    return X, y, off


def test_valid_set_is_coerced():
    X, y, off = good()
    ts = check_tasks(X.astype(np.int32), y.astype(bool), off.astype(np.int32))
    assert ts.X.dtype == np.float64 and ts.y.dtype == np.float64 and ts.offsets.dtype == np.int64
    assert ts.X.flags.c_contiguous


def test_float32_is_kept_and_mixed_is_promoted():
    X, y, off = good()
    assert check_tasks(X.astype(np.float32), y.astype(np.float32), off).X.dtype == np.float32
    assert check_tasks(X.astype(np.float32), y, off).X.dtype == np.float64


def test_fortran_and_strided_inputs_are_accepted():
    X, y, off = good()
    ts = check_tasks(np.asfortranarray(X), y[::-1][::-1], off)
    np.testing.assert_array_equal(ts.X, X)
    assert ts.X.flags.c_contiguous


@pytest.mark.parametrize(
    "mutate, exc, words",
    [
        (lambda X, y, o: (X[:, 0], y, o), ValueError, "X is 1-dimensional"),
        (lambda X, y, o: (X, y[:, None], o), ValueError, "y is 2-dimensional"),
        (lambda X, y, o: (X, y[:5], o), ValueError, "y has 5 rows"),
        (lambda X, y, o: (X.astype(complex), y, o), TypeError, "X has dtype complex128"),
        (lambda X, y, o: (X.astype(object), y, o), TypeError, "X has dtype object"),
        (lambda X, y, o: (X, y, o[1:]), ValueError, "offsets[0] is 2"),
        (lambda X, y, o: (X, y, o[:-1]), ValueError, "offsets[-1] is 5"),
        (lambda X, y, o: (X, y, np.array([0, 4, 2, 6])), ValueError, "offsets decreases"),
        (lambda X, y, o: (X, y, np.array([0])), ValueError, "offsets has length 1"),
        (lambda X, y, o: (X, y, o.astype(float) + 0.5), TypeError, "offsets has dtype float64"),
        (lambda X, y, o: (X, y, o[:, None]), ValueError, "offsets is 2-dimensional"),
        (lambda X, y, o: (np.where(X == 3, np.nan, X), y, o), ValueError, "X contains NaN or inf"),
        (lambda X, y, o: (X, np.where(y == 1, np.inf, y), o), ValueError, "y contains NaN or inf"),
    ],
)
def test_bad_input_names_the_argument(mutate, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        check_tasks(*mutate(*good()))


def test_min_size_message():
    with pytest.raises(ValueError, match="1 of 3 tasks have fewer than 2 rows"):
        check_tasks(*good(), min_size=2, role="subspace tasks")


def test_pack_tasks_roundtrip():
    rng = np.random.default_rng(0)
    Xs = [rng.standard_normal((t, 3)) for t in (2, 0, 5)]
    ys = [rng.standard_normal(t) for t in (2, 0, 5)]
    X, y, off = fastmlr.pack_tasks(Xs, ys)
    np.testing.assert_array_equal(off, [0, 2, 2, 7])
    np.testing.assert_array_equal(X[2:7], Xs[2])
    with pytest.raises(ValueError, match="Xs\\[1\\] has 4 columns"):
        fastmlr.pack_tasks([np.zeros((2, 3)), np.zeros((2, 4))], [np.zeros(2), np.zeros(2)])
    with pytest.raises(ValueError, match="Xs has 2 tasks but ys has 1"):
        fastmlr.pack_tasks([np.zeros((2, 3))] * 2, [np.zeros(2)])


def test_group_tasks_is_stable_and_sorted():
    X = np.arange(10.0).reshape(5, 2)
    y = np.arange(5.0)
    X2, y2, off = fastmlr.group_tasks(X, y, np.array(["b", "a", "b", "a", "c"]))
    np.testing.assert_array_equal(off, [0, 2, 4, 5])
    np.testing.assert_array_equal(y2, [1, 3, 0, 2, 4])
    with pytest.raises(ValueError, match="task_ids has 2 entries"):
        fastmlr.group_tasks(X, y, [1, 2])


def test_chunk_bounds_cover_every_task_once():
    off = np.concatenate([[0], np.cumsum([5, 1, 30, 2, 2, 2, 9])])
    b = chunk_bounds(off, 8)
    assert b[0] == 0 and b[-1] == 7 and np.all(np.diff(b) > 0)
    single = chunk_bounds(np.array([0, 3]), 1 << 20)
    np.testing.assert_array_equal(single, [0, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_finds_one_bad_entry_anywhere(dtype, order, bad):
    from fastmlr.tasks import check_finite

    rng = np.random.default_rng(0)
    base = rng.standard_normal((37, 9)).astype(dtype)
    for i, j in [(0, 0), (36, 8), (17, 4)]:
        A = base.copy()
        A[i, j] = bad
        A = np.asfortranarray(A) if order == "F" else (A[:, ::1] if order == "C" else np.repeat(A, 2, axis=1)[:, ::2])
        with pytest.raises(ValueError, match=rf"contains NaN or inf \(first at index \({i}, {j}\)\)"):
            check_finite(A, "X")
    check_finite(np.asfortranarray(base) if order == "F" else base, "X")  # a finite array passes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_finite_accepts_huge_finite_values(dtype):
    # row sums overflow to inf: the exact check must then clear the array
    from fastmlr.tasks import check_finite

    big = np.finfo(dtype).max / 2
    check_finite(np.full((5, 4), big, dtype=dtype), "X")
    check_finite(np.full((5, 4), -big, dtype=dtype), "X")
