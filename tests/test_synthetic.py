"""The generative model: shapes, seeding, and independence from the thread count."""

import numpy as np
import pytest

import fastmlr


def test_make_mixture_orthonormal():
    W, s2, p = fastmlr.make_mixture(5, 12, seed=3)
    np.testing.assert_allclose(W @ W.T, np.eye(5), atol=1e-12)
    np.testing.assert_array_equal(s2, 1.0)
    np.testing.assert_allclose(p, 0.2)


def test_make_mixture_gaussian_and_weights():
    W, s2, p = fastmlr.make_mixture(3, 400, kind="gaussian", s2=[0.25, 1, 4], weights=[1, 1, 2], seed=0)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, atol=0.15)
    np.testing.assert_array_equal(s2, [0.25, 1, 4])
    np.testing.assert_allclose(p, [0.25, 0.25, 0.5])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(k=0, d=3), "k is 0"),
        (dict(k=4, d=3), "orthonormal components need k <= d"),
        (dict(k=2, d=3, kind="x"), "kind is 'x'"),
        (dict(k=2, d=3, weights=[1, -1]), "weights must be"),
        (dict(k=2, d=0), "d is 0"),
    ],
)
def test_make_mixture_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        fastmlr.make_mixture(**kwargs)


def test_sample_is_seeded_and_thread_independent():
    W, s2, p = fastmlr.make_mixture(3, 8, seed=0)
    sizes = np.random.default_rng(0).integers(1, 50, size=5000)  # several sampling chunks
    with fastmlr.n_threads(1):
        a = fastmlr.sample_tasks(W, s2, p, sizes, seed=11)
    with fastmlr.n_threads(2):
        b = fastmlr.sample_tasks(W, s2, p, sizes, seed=11)
    c = fastmlr.sample_tasks(W, s2, p, sizes, seed=12)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.X, c.X)
    np.testing.assert_array_equal(np.diff(a.offsets), sizes)


def test_sample_follows_the_model():
    W, s2, p = fastmlr.make_mixture(2, 4, s2=[0.01, 0.01], weights=[0.3, 0.7], seed=1)
    X, y, off, z = fastmlr.sample_tasks(W, s2, p, 200, n_tasks=400, seed=2, dtype="float32")
    assert X.dtype == np.float32 and y.dtype == np.float32
    assert abs(z.mean() - 0.7) < 0.07
    rz = np.repeat(z, 200)
    resid = y - np.einsum("ij,ij->i", X.astype(float), W[rz])
    assert abs(resid.std() - 0.1) < 0.005


def test_sample_errors():
    W, s2, p = fastmlr.make_mixture(2, 4, seed=1)
    with pytest.raises(ValueError, match="pass n_tasks"):
        fastmlr.sample_tasks(W, s2, p, 5)
    with pytest.raises(ValueError, match="dtype is 'float16'"):
        fastmlr.sample_tasks(W, s2, p, 5, n_tasks=2, dtype="float16")
    with pytest.raises(ValueError, match="sizes must be non-negative"):
        fastmlr.sample_tasks(W, s2, p, [3, -1])
