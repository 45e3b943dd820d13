"""fastmlr: meta-learning a mixture of linear regressions from many small tasks.

A compiled implementation of the spectral algorithm of Kong, Somani, Song, Kakade and
Oh, *Meta-learning for Mixed Linear Regression* (ICML 2020), over plain arrays.
"""

from ._validation import FallbackWarning
from .backend import n_threads, use_backend
from .classify import classify_tasks
from .cluster import cluster_tasks
from .feasibility import feasibility
from .fit import fit
from .inference import standard_errors
from .io import tasks_from_frame
from .metrics import clustering_accuracy, parameter_error, subspace_error
from .model import Model, load_model, save_model
from .parquet import open_parquet
from .pipeline import meta_learn
from .predict import posterior, predict_params
from .stream import open_npy_chunks
from .subspace import estimate_subspace
from .synthetic import make_mixture, sample_tasks
from .tasks import TaskSet, TaskStream, group_tasks, pack_tasks

__version__ = "0.1.0"

__all__ = [
    # the stages of Algorithm 1 and prediction
    "estimate_subspace", "cluster_tasks", "classify_tasks", "posterior", "predict_params",
    # the estimators and their model
    "meta_learn", "fit", "Model", "save_model", "load_model", "FallbackWarning", "standard_errors",
    # task sets
    "TaskSet", "TaskStream", "open_npy_chunks", "pack_tasks", "group_tasks", "tasks_from_frame",
    "open_parquet",
    # the generative model, metrics and the pool check
    "make_mixture", "sample_tasks", "parameter_error", "subspace_error", "clustering_accuracy", "feasibility",
    # kernel backend and threads, for a block of code
    "use_backend", "n_threads",
]

#: Names that were at the top level before and the module that holds them now.
_MOVED = {
    "available_backends": "backend", "get_backend": "backend", "set_backend": "backend",
    "ClassifyResult": "classify", "ClusterResult": "cluster", "distance_matrix": "cluster",
    "Feasibility": "feasibility", "match_components": "metrics", "MetaLearnResult": "pipeline",
    "log_likelihoods": "predict", "moment_stats": "subspace", "second_moment": "subspace",
    "check_tasks": "tasks",
}


def __getattr__(name):
    """A name that moved to a submodule, with a ``DeprecationWarning`` saying where."""
    if name in _MOVED:
        import importlib
        import warnings

        module = _MOVED[name]
        warnings.warn(f"fastmlr.{name} is deprecated at the top level; use fastmlr.{module}.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
