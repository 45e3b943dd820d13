"""Task sets given as streams of chunks: the same answers as the arrays, in bounded memory."""

import numpy as np
import pytest

import fastmlr
from fastmlr.stream import TaskStream, collect, open_npy_chunks


def chunked(X, y, off, cuts):
    """A list of (X, y, offsets) chunks cutting the tasks at the given task indices."""
    out = []
    bounds = [0, *cuts, off.size - 1]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        a, b = off[lo], off[hi]
        out.append((X[a:b], y[a:b], off[lo : hi + 1] - a))
    return out


@pytest.fixture(scope="module")
def pool():
    W, s2, p = fastmlr.make_mixture(3, 10, seed=0)
    light = fastmlr.sample_tasks(W, s2, p, np.arange(4000) % 5 + 2, seed=1)
    heavy = fastmlr.sample_tasks(W, s2, p, 64, n_tasks=90, seed=2)
    light2 = fastmlr.sample_tasks(W, s2, p, 12, n_tasks=1500, seed=3)
    return W, light[:3], heavy[:3], light2[:3]


def test_stream_equals_arrays_stage_by_stage(pool):
    W, light, heavy, light2 = pool
    stream = TaskStream(chunked(*light, [1000, 1001, 2500]))
    np.testing.assert_allclose(fastmlr.subspace.second_moment(stream), fastmlr.subspace.second_moment(light), rtol=1e-12, atol=1e-15)
    U = fastmlr.estimate_subspace(light, 3)
    np.testing.assert_allclose(fastmlr.estimate_subspace(stream, k=3), U, atol=1e-10)
    c = fastmlr.cluster_tasks(heavy, U, 3)
    cs = fastmlr.cluster_tasks(TaskStream(chunked(*heavy, [30, 60])), U=U, k=3)
    np.testing.assert_array_equal(cs.labels, c.labels)
    r = fastmlr.classify_tasks(light2, c.W, c.s2)
    rs = fastmlr.classify_tasks(TaskStream(chunked(*light2, [7, 700])), W=c.W, s2=c.s2)
    np.testing.assert_array_equal(rs.labels, r.labels)
    np.testing.assert_allclose(rs.W, r.W, rtol=1e-10, atol=1e-12)
    post = fastmlr.posterior(light2, r.W, r.s2, r.p)
    ps = fastmlr.posterior(TaskStream(chunked(*light2, [100])), W=r.W, s2=r.s2, p=r.p)
    np.testing.assert_allclose(ps, post, rtol=1e-12)


def test_meta_learn_on_streams(pool):
    W, light, heavy, light2 = pool
    m = fastmlr.meta_learn(light, heavy, light2, 3)
    ms = fastmlr.meta_learn(TaskStream(lambda: iter(chunked(*light, [2000]))), heavy,
                            TaskStream(chunked(*light2, [500, 1000])), 3)
    np.testing.assert_array_equal(ms.classify.labels, m.classify.labels)
    np.testing.assert_allclose(ms.W, m.W, rtol=1e-9, atol=1e-12)
    assert fastmlr.parameter_error(ms.W, W).max < 0.2


def test_npy_chunks_round_trip(tmp_path, pool):
    W, light, heavy, light2 = pool
    X, y, off = light
    for name, arr in (("X", X.astype(np.float32)), ("y", y.astype(np.float32)), ("off", off)):
        np.save(tmp_path / f"{name}.npy", arr)
    stream = open_npy_chunks(tmp_path / "X.npy", tmp_path / "y.npy", tmp_path / "off.npy", max_rows=3000)
    chunks = list(stream)
    assert len(chunks) > 3 and chunks[0][0].dtype == np.float32
    whole = collect(stream)
    np.testing.assert_array_equal(whole.X, X.astype(np.float32))
    np.testing.assert_array_equal(whole.offsets, off)
    M32 = fastmlr.subspace.second_moment(stream)  # re-iterable: a second pass over the files
    np.testing.assert_allclose(M32, fastmlr.subspace.second_moment(light), atol=2e-5)


def test_stream_errors(tmp_path, pool):
    W, light, heavy, light2 = pool
    X, y, off = light
    with pytest.raises(TypeError, match="leave y and offsets out"):
        fastmlr.subspace.second_moment((TaskStream([light]), y, off))
    with pytest.raises(ValueError, match="yielded no chunk"):
        fastmlr.subspace.second_moment(TaskStream([]))
    with pytest.raises(ValueError, match="chunk 1 has d = 4 columns"):
        fastmlr.subspace.second_moment(TaskStream([light, (X[:10, :4], y[:10], np.array([0, 10]))]))
    with pytest.raises(ValueError, match=r"subspace tasks \(chunk 0\)"):
        fastmlr.subspace.second_moment(TaskStream([(X[:3], y[:3], np.array([0, 1, 3]))]))
    once = TaskStream(iter([light]))
    fastmlr.subspace.second_moment(once)
    with pytest.raises(ValueError, match="one-shot iterator"):
        fastmlr.subspace.second_moment(once)
    with pytest.raises(TypeError, match="a chunk must be an"):
        fastmlr.subspace.second_moment(TaskStream([X]))
    with pytest.raises(ValueError, match="is not a file"):
        open_npy_chunks(tmp_path / "nope.npy", tmp_path / "y.npy", tmp_path / "o.npy")
    np.save(tmp_path / "X3.npy", np.zeros((1, 6, 2)))  # a 3-D X: its shape is the error, not the offsets
    np.save(tmp_path / "y1.npy", np.zeros(1))
    np.save(tmp_path / "o1.npy", np.array([0, 6]))
    with pytest.raises(ValueError, match=r"must be \(N, d\) and \(N,\)"):
        fastmlr.subspace.second_moment(open_npy_chunks(tmp_path / "X3.npy", tmp_path / "y1.npy", tmp_path / "o1.npy"))
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'k'"):
        fastmlr.estimate_subspace(TaskStream([light]))


def test_fit_accepts_a_stream(pool):
    W, light, heavy, light2 = pool
    m = fastmlr.fit(light2, 3, em_path="passes")  # a stream is fitted by the passes
    ms = fastmlr.fit(TaskStream(chunked(*light2, [300, 900])), k=3)
    np.testing.assert_allclose(ms.W, m.W, rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'k'"):
        fastmlr.fit(TaskStream(chunked(*light2, [300])))
