"""A scikit-learn estimator over :func:`fastmlr.fit`: ``MixtureRegressor``.

Rows come with a task id (``groups``, as scikit-learn's group splitters name it): a
task's rows share one regression vector, drawn from a mixture of ``k``.  The optional
extra ``fastmlr[sklearn]`` installs scikit-learn; this module imports it.

In a grid search the ids must reach ``fit`` and ``score`` as well as the splitter:
with metadata routing on (``sklearn.set_config(enable_metadata_routing=True)``), ask
for them with ``MixtureRegressor().set_fit_request(groups=True)
.set_score_request(groups=True)`` and pass ``groups=`` to ``GridSearchCV.fit``.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .fit import fit as _fit
from .predict import log_likelihoods, posterior
from .tasks import TaskSet

__all__ = ["MixtureRegressor"]


def _as_tasks(X, y, groups, *, known_only):
    """Rows grouped by id: ``(X, y, offsets)`` of the rows with a target (all rows if
    ``known_only`` is False), the distinct ids, and each row's task index."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] != X.shape[0]:
        raise ValueError(f"groups has shape {groups.shape}; expected ({X.shape[0]},), one task id per row of X")
    if groups.dtype.kind == "O" and all(isinstance(g, str) for g in groups.tolist()):
        groups = groups.astype(str)
    if groups.dtype.kind in "fc" and np.isnan(groups).any():
        raise ValueError("groups holds NaN; expected a task id on every row")
    try:
        ids, inverse = np.unique(groups, return_inverse=True)
    except TypeError:
        raise TypeError("groups must be mutually sortable task ids (all numbers or all strings)") from None
    inverse = inverse.reshape(-1)
    known = np.isfinite(y) if known_only else np.ones(X.shape[0], dtype=bool)
    rows = np.flatnonzero(known)
    order = rows[np.argsort(inverse[rows], kind="stable")]
    counts = np.bincount(inverse[order], minlength=ids.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TaskSet(np.ascontiguousarray(X[order]), np.ascontiguousarray(y[order]), offsets), ids, inverse


class MixtureRegressor(RegressorMixin, BaseEstimator):
    """A mixture of ``k`` linear regressions over tasks, as a scikit-learn estimator.

    Parameters
    ----------
    k : int or None, default None
        Number of components; ``None`` chooses k by BIC (:func:`fastmlr.fit`).
    whiten : {"auto"} or bool, default "auto"
        Whitening of x for the spectral start.
    seed : int, default 0
        Seed of the starts.
    max_iter : int, default 300
        Cap on EM iterations.
    tol : float, default 2e-6
        EM stops when the log-likelihood gains less than this per row.

    Attributes
    ----------
    coef_ : (k, d) ndarray -- the regression vectors (rows are components)
    s2_ : (k,) ndarray -- noise variances
    weights_ : (k,) ndarray -- mixing weights
    k_ : int -- number of components fitted
    n_features_in_ : int
    model_ : fastmlr.Model -- the fitted model with its diagnostics

    Notes
    -----
    ``predict`` and ``predict_proba`` take the rows of the tasks to predict and their
    targets: a task's rows with a known target are its support set, which gives the
    posterior over components of the task; every row is then predicted with the
    task's posterior-mean (Bayes) regression vector.  Rows whose target is NaN (or all
    rows, when ``y`` is not given) are predicted from the support alone; a task with
    no support gets the prior mean ``weights_ @ coef_``.

    ``score`` is the mean log-likelihood per row of the tasks given (the mixture's
    marginal likelihood of each task, with the ``2 pi`` constant): higher is better,
    so that a grid search over ``k`` compares held-out fits.  scikit-learn's R^2 is
    not used: on new tasks it would score the prior, not the model.

    See Also
    --------
    fastmlr.fit : the estimator behind ``fit``.

    Examples
    --------
    >>> import numpy as np, fastmlr
    >>> from fastmlr.sklearn import MixtureRegressor
    >>> W, s2, p = fastmlr.make_mixture(2, 4, seed=0)
    >>> S = fastmlr.sample_tasks(W, s2, p, 10, n_tasks=400, seed=1)
    >>> groups = np.repeat(np.arange(400), 10)
    >>> est = MixtureRegressor(k=2).fit(S.X, S.y, groups)
    >>> est.coef_.shape, est.predict_proba(S.X, groups, y=S.y).shape
    ((2, 4), (4000, 2))
    """

    _parameter_constraints: dict = {
        "k": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "whiten": [StrOptions({"auto"}), "boolean"],
        "seed": [Interval(numbers.Integral, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, k=None, *, whiten="auto", seed=0, max_iter=300, tol=2e-6):
        self.k = k
        self.whiten = whiten
        self.seed = seed
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, groups):
        """Fit the mixture to the rows of every task.

        Parameters
        ----------
        X : array_like, (n_samples, d)
        y : array_like, (n_samples,) -- finite targets
        groups : array_like, (n_samples,) -- the task id of each row

        Returns
        -------
        self
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True)
        tasks, _, _ = _as_tasks(X, np.asarray(y, dtype=X.dtype), groups, known_only=False)
        model = _fit(tasks, self.k, whiten=self.whiten, seed=self.seed, max_iter=self.max_iter, tol=self.tol)
        self.model_ = model
        self.coef_ = model.W
        self.s2_ = model.s2
        self.weights_ = model.p
        self.k_ = int(model.W.shape[0])
        return self

    def _support(self, X, groups, y):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        if y is None:
            y = np.full(X.shape[0], np.nan, dtype=X.dtype)
        else:
            y = np.asarray(y, dtype=np.float64).reshape(-1)
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"y has {y.shape[0]} entries but X has {X.shape[0]} rows; expected one per row "
                                 f"(NaN for a row to predict)")
            if np.isinf(y).any():
                raise ValueError("y holds an infinite value; expected finite targets, or NaN for a row to predict")
        tasks, _, inverse = _as_tasks(X, y, groups, known_only=True)
        return X, tasks, inverse

    def predict_proba(self, X, groups, y=None):
        """Posterior over components of each row's task, given the task's known targets.

        Parameters
        ----------
        X : array_like, (n_samples, d)
        groups : array_like, (n_samples,) -- task ids
        y : array_like, (n_samples,), optional -- known targets, NaN where unknown

        Returns
        -------
        (n_samples, k) ndarray -- rows sum to 1
        """
        _, tasks, inverse = self._support(X, groups, y)
        return posterior(tasks, self.coef_, self.s2_, self.weights_)[inverse]

    def predict(self, X, groups, y=None):
        """Predict every row with its task's posterior-mean regression vector.

        Parameters
        ----------
        X : array_like, (n_samples, d)
        groups : array_like, (n_samples,) -- task ids
        y : array_like, (n_samples,), optional -- known targets (the support set of
            each task), NaN for the rows to predict

        Returns
        -------
        (n_samples,) ndarray
        """
        X, tasks, inverse = self._support(X, groups, y)
        beta = posterior(tasks, self.coef_, self.s2_, self.weights_) @ self.coef_  # (n_tasks, d)
        return np.einsum("nd,nd->n", X, beta[inverse])

    def score(self, X, y, groups, sample_weight=None):
        """Mean log-likelihood per row of the tasks (higher is better).

        Parameters
        ----------
        X : array_like, (n_samples, d)
        y : array_like, (n_samples,) -- finite targets
        groups : array_like, (n_samples,) -- task ids
        sample_weight : None -- not supported (must be None)

        Returns
        -------
        float
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported; expected None")
        check_is_fitted(self)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True, reset=False)
        tasks, _, _ = _as_tasks(X, np.asarray(y, dtype=X.dtype), groups, known_only=False)
        L = log_likelihoods(tasks, self.coef_, self.s2_, self.weights_)
        top = L.max(axis=1, keepdims=True)
        total = float(np.sum(top[:, 0] + np.log(np.exp(L - top).sum(axis=1))))
        return total / X.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
