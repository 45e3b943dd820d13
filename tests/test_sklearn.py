"""fastmlr.sklearn.MixtureRegressor: fit, predict, score, cloning, a grid search by groups."""

import numpy as np
import pytest

import fastmlr

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold  # noqa: E402
from sklearn.utils import estimator_checks  # noqa: E402

from fastmlr.sklearn import MixtureRegressor  # noqa: E402


@pytest.fixture(scope="module")
def data():
    W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    S = fastmlr.sample_tasks(W, s2, p, 12, n_tasks=600, seed=1)
    return {"X": S.X, "y": S.y, "groups": np.repeat(np.arange(600), 12), "W": W, "z": S.z, "S": S}


def test_fit_gives_the_model_of_fastmlr_fit(data):
    est = MixtureRegressor(k=2, seed=3).fit(data["X"], data["y"], data["groups"])
    model = fastmlr.fit(data["S"], 2, seed=3)
    np.testing.assert_array_equal(est.coef_, model.W)
    np.testing.assert_array_equal(est.weights_, model.p)
    assert est.k_ == 2 and est.n_features_in_ == 4
    assert fastmlr.parameter_error(est.coef_, data["W"]).max < 0.3


def test_predict_uses_the_support_set_and_predicts_the_nan_rows(data):
    X, y, g = data["X"], data["y"], data["groups"]
    est = MixtureRegressor(k=2).fit(X, y, g)
    query = np.zeros(X.shape[0], dtype=bool)
    query[::12] = True  # the first row of every task is predicted from the other eleven
    yq = np.where(query, np.nan, y)
    pred = est.predict(X, g, y=yq)
    post = fastmlr.posterior((X[~query], y[~query], np.arange(0, 601) * 11), est.coef_, est.s2_, est.weights_)
    np.testing.assert_allclose(pred[query], np.einsum("nd,nd->n", X[query], post @ est.coef_), rtol=1e-12)
    truth = np.einsum("nd,nd->n", X[query], data["W"][data["z"]])
    assert np.corrcoef(pred[query], truth)[0, 1] > 0.9
    proba = est.predict_proba(X, g, y=yq)
    assert proba.shape == (X.shape[0], 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # without targets every task gets the prior mean
    np.testing.assert_allclose(est.predict(X[:5], g[:5]), X[:5] @ (est.weights_ @ est.coef_), rtol=1e-12)


def test_score_is_the_mean_log_likelihood_per_row(data):
    X, y, g = data["X"], data["y"], data["groups"]
    est = MixtureRegressor(k=2).fit(X, y, g)
    L = fastmlr.predict.log_likelihoods(data["S"], est.coef_, est.s2_, est.weights_)
    want = np.sum(np.log(np.exp(L).sum(axis=1))) / X.shape[0]
    assert est.score(X, y, g) == pytest.approx(want, rel=1e-12)
    one = MixtureRegressor(k=1).fit(X, y, g)
    assert est.score(X, y, g) > one.score(X, y, g)


def test_clone_and_params(data):
    est = MixtureRegressor(k=3, seed=5, tol=1e-5)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin is not est
    assert twin.set_params(k=2).k == 2
    fitted = MixtureRegressor(k=2).fit(data["X"], data["y"], data["groups"])
    assert not hasattr(clone(fitted), "coef_")


def test_grid_search_with_group_kfold_finds_k(data):
    with sklearn.config_context(enable_metadata_routing=True):
        est = MixtureRegressor().set_fit_request(groups=True).set_score_request(groups=True)
        search = GridSearchCV(est, {"k": [1, 2, 3]}, cv=GroupKFold(n_splits=3))
        search.fit(data["X"], data["y"], groups=data["groups"])
    assert search.best_params_ == {"k": 2}
    assert search.best_estimator_.coef_.shape == (2, 4)


def test_bad_arguments_are_named(data):
    X, y, g = data["X"], data["y"], data["groups"]
    with pytest.raises(ValueError, match=r"The 'k' parameter of MixtureRegressor must be"):
        MixtureRegressor(k=0).fit(X, y, g)
    with pytest.raises(ValueError, match=r"groups has shape \(3,\); expected \(7200,\)"):
        MixtureRegressor(k=2).fit(X, y, g[:3])
    with pytest.raises(sklearn.exceptions.NotFittedError):
        MixtureRegressor(k=2).predict(X, g)
    est = MixtureRegressor(k=2).fit(X, y, g)
    with pytest.raises(ValueError, match=r"X has 3 features, but MixtureRegressor is expecting 4"):
        est.predict(X[:, :3], g)
    with pytest.raises(ValueError, match=r"Input y contains NaN|y contains NaN"):
        MixtureRegressor(k=2).fit(X, np.where(g == 0, np.nan, y), g)


#: scikit-learn's own checks that apply to an estimator whose fit needs ``groups``:
#: the ones about construction and parameters.  Every other check calls ``fit(X, y)``
#: without task ids (or with one row per sample as its own task), which this estimator
#: cannot be fitted on, so it does not apply.
APPLICABLE = ["check_parameters_default_constructible", "check_no_attributes_set_in_init",
              "check_get_params_invariance", "check_set_params", "check_estimator_cloneable",
              "check_estimator_repr", "check_estimator_tags_renamed", "check_valid_tag_types",
              "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order"]


@pytest.mark.parametrize("name", APPLICABLE)
def test_scikit_learn_checks_that_apply(name):
    check = getattr(estimator_checks, name)
    check(type(MixtureRegressor()).__name__, MixtureRegressor())


def _messages(exc):
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " | ".join(out)


def test_every_other_scikit_learn_check_fails_only_for_want_of_groups():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = estimator_checks.check_estimator(MixtureRegressor(k=2), on_fail=None)
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert set(APPLICABLE) <= passed
    failed = [r for r in results if r["status"] == "failed"]
    assert failed, "every check passed: the estimator no longer needs groups, so more checks apply"
    for r in failed:
        assert "groups" in _messages(r["exception"]), f"{r['check_name']}: {_messages(r['exception'])}"
