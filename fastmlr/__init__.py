"""fastmlr: meta-learning a mixture of linear regressions from many small tasks.

A compiled implementation of the spectral algorithm of Kong, Somani, Song, Kakade and
Oh, *Meta-learning for Mixed Linear Regression* (ICML 2020), over plain arrays.
"""

import os as _os

# Both compiled backends run their parallel loops on OpenMP (libgomp), whose idle
# threads by default spin for a while after every parallel region.  fastmlr
# alternates short parallel kernels with BLAS calls, and OpenBLAS's own threads then
# wait for cores the spinning threads hold: on 2 cores a BLAS product followed by a
# kernel took 6x longer than on one thread.  Idle OpenMP threads therefore sleep
# unless the user chose otherwise (libgomp reads this when it is first loaded, which
# importing fastmlr does before any kernel runs).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS's idle threads spin for 2^28 cycles by default and then hold the cores the
# kernels' threads need (fit at d = 64 on 2 cores: 132 ms, against 78 ms with 2^12).
# This takes effect only if NumPy's BLAS is not loaded yet: import fastmlr first, or
# set the variable in the environment (the fastmlr command line does it first).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")

from ._validation import FallbackWarning
from .backend import n_threads, use_backend
from .classify import classify_tasks
from .cluster import cluster_tasks
from .feasibility import feasibility
from .fit import Model, fit
from .metrics import clustering_accuracy, parameter_error, subspace_error
from .model import load_model, save_model
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
    "meta_learn", "fit", "Model", "save_model", "load_model", "FallbackWarning",
    # task sets
    "TaskSet", "TaskStream", "open_npy_chunks", "pack_tasks", "group_tasks",
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
