"""The shape of the public API: the task set first, one name per quantity, a small top level.

The older calls keep working for one release with a ``DeprecationWarning`` and give
bit for bit the results of the new ones.
"""

import inspect
import warnings

import numpy as np
import pytest

import fastmlr
from fastmlr import cluster, predict, subspace

OLD_FORM = "pass the task set as one argument"


@pytest.fixture(scope="module")
def sets():
    W, s2, p = fastmlr.make_mixture(3, 6, seed=0)
    light = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=3000, seed=1)
    heavy = fastmlr.sample_tasks(W, s2, p, 32, n_tasks=30, seed=2)
    light2 = fastmlr.sample_tasks(W, s2, p, 12, n_tasks=400, seed=3)
    return W, s2, p, light, heavy, light2


def same(a, b):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_every_form_of_a_task_set_gives_the_same_bits(sets):
    W, s2, p, light, *_ = sets
    X, y, off = light.X, light.y, light.offsets
    ref = fastmlr.estimate_subspace((X, y, off), 2)
    for form in (light, fastmlr.TaskSet(X, y, off), [X, y, off], fastmlr.TaskStream([(X, y, off)])):
        same(fastmlr.estimate_subspace(form, 2), ref)
    same(fastmlr.posterior(fastmlr.TaskSet(X, y, off), W, s2, p), fastmlr.posterior((X, y, off), W, s2, p))


@pytest.mark.parametrize("name", ["estimate_subspace", "cluster_tasks", "classify_tasks", "posterior",
                                  "predict_params", "log_likelihoods", "second_moment", "moment_stats",
                                  "distance_matrix"])
def test_the_three_array_form_warns_and_gives_the_same_result(sets, name):
    W, s2, p, light, heavy, light2 = sets
    U = fastmlr.estimate_subspace(light, 3)
    fn, tasks, rest, kw = {
        "estimate_subspace": (fastmlr.estimate_subspace, light, (3,), {}),
        "cluster_tasks": (fastmlr.cluster_tasks, heavy, (U, 3), {"linkage": "single"}),
        "classify_tasks": (fastmlr.classify_tasks, light2, (W, s2), {}),
        "posterior": (fastmlr.posterior, light2, (W, s2, p), {}),
        "predict_params": (fastmlr.predict_params, light2, (W, s2, p), {"method": "map"}),
        "log_likelihoods": (predict.log_likelihoods, light2, (W, s2, p), {}),
        "second_moment": (subspace.second_moment, light, (), {}),
        "moment_stats": (subspace.moment_stats, light, (), {}),
        "distance_matrix": (cluster.distance_matrix, heavy, (U,), {"L": 2}),
    }[name]
    new = fn(tasks[:3], *rest, **kw)
    with pytest.warns(DeprecationWarning, match=rf"{name}\(X, y, offsets, \.\.\.\) is deprecated; {OLD_FORM}"):
        old = fn(*tasks[:3], *rest, **kw)
    same(tuple(old), tuple(new)) if isinstance(new, tuple) else same(old, new)
    with pytest.warns(DeprecationWarning, match=OLD_FORM):  # y and offsets by keyword
        old_kw = fn(tasks.X, *rest, y=tasks.y, offsets=tasks.offsets, **kw)
    same(tuple(old_kw), tuple(new)) if isinstance(new, tuple) else same(old_kw, new)


def test_the_new_form_does_not_warn(sets):
    W, s2, p, light, heavy, light2 = sets
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fastmlr.meta_learn(light, heavy, light2, 3)
        fastmlr.predict_params(light2, m.W, m.s2, m.p)


def test_noise_variance_is_called_s2_everywhere(sets):
    W, s2, p, light, heavy, light2 = sets
    U = fastmlr.estimate_subspace(light, 3)
    c = fastmlr.cluster_tasks(heavy, U, 3)
    assert "s2" in c._fields and "r2" not in c._fields
    with pytest.warns(DeprecationWarning, match="ClusterResult.r2 is deprecated"):
        np.testing.assert_array_equal(c.r2, c.s2)
    r = fastmlr.classify_tasks(light2, c.W, c.s2)
    with pytest.warns(DeprecationWarning, match=r"classify_tasks\(r2=...\) is deprecated"):
        r_old = fastmlr.classify_tasks(light2, c.W, r2=c.s2)
    same(tuple(r_old), tuple(r))
    assert fastmlr.make_mixture(2, 3, seed=0)._fields == ("W", "s2", "p")


def test_classify_names_its_variance_estimator(sets):
    W, s2, p, *_, light2 = sets
    unbiased = fastmlr.classify_tasks(light2, W, s2)
    ml = fastmlr.classify_tasks(light2, W, s2, variance="ml")
    same(ml.labels, unbiased.labels)
    same(ml.W, unbiased.W)
    rows = np.bincount(unbiased.labels, weights=np.diff(light2.offsets), minlength=3)
    np.testing.assert_allclose(ml.s2 * rows, unbiased.s2 * (rows - 6), rtol=1e-12)  # d = 6
    with pytest.raises(ValueError, match="variance is 'biased'"):
        fastmlr.classify_tasks(light2, W, s2, variance="biased")


def test_generator_takes_variances_and_samples_with_their_roots():
    W, s2, p = fastmlr.make_mixture(2, 3, s2=[0.25, 4.0], seed=0)
    np.testing.assert_array_equal(s2, [0.25, 4.0])
    with pytest.warns(DeprecationWarning, match=r"noise=\.\.\.\) is deprecated"):
        W_old, s2_old, p_old = fastmlr.make_mixture(2, 3, noise=[0.5, 2.0], seed=0)
    same((W_old, s2_old, p_old), (W, s2, p))
    a = fastmlr.sample_tasks(W, s2, p, 50, n_tasks=200, seed=1)
    resid = a.y - np.einsum("ij,ij->i", a.X, W[np.repeat(a.z, 50)])
    sd = [resid[np.repeat(a.z, 50) == l].std() for l in (0, 1)]
    np.testing.assert_allclose(sd, [0.5, 2.0], rtol=0.05)


def test_top_level_is_small_and_moved_names_say_where():
    assert len(fastmlr.__all__) <= 28
    assert all(hasattr(fastmlr, name) for name in fastmlr.__all__)
    with pytest.warns(DeprecationWarning, match=r"use fastmlr\.subspace\.second_moment"):
        assert fastmlr.second_moment is subspace.second_moment
    with pytest.raises(AttributeError):
        fastmlr.no_such_name  # noqa: B018


def test_required_arguments_never_default_to_none():
    required = {"tasks", "k", "U", "W", "s2", "light", "heavy", "light2", "sizes"}
    for name in fastmlr.__all__:
        obj = getattr(fastmlr, name)
        if not inspect.isfunction(obj):
            continue
        for par in inspect.signature(obj).parameters.values():
            if par.name in required and par.kind is not inspect.Parameter.KEYWORD_ONLY:
                assert par.default is inspect.Parameter.empty, f"{name}({par.name}=...) has a default"
