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

from .backend import available_backends, get_backend, n_threads, set_backend, use_backend
from .classify import ClassifyResult, FallbackWarning, classify_tasks
from .cluster import ClusterResult, cluster_tasks, distance_matrix
from .feasibility import Feasibility, feasibility
from .fit import Model, fit
from .metrics import clustering_accuracy, match_components, parameter_error, subspace_error
from .model import load_model, save_model
from .pipeline import MetaLearnResult, meta_learn
from .predict import log_likelihoods, posterior, predict_params
from .stream import TaskStream, open_npy_chunks
from .subspace import estimate_subspace, moment_stats, second_moment
from .synthetic import make_mixture, sample_tasks
from .tasks import TaskSet, check_tasks, group_tasks, pack_tasks

__version__ = "0.1.0"

__all__ = [
    "available_backends", "get_backend", "n_threads", "set_backend", "use_backend",
    "ClassifyResult", "FallbackWarning", "classify_tasks",
    "ClusterResult", "cluster_tasks", "distance_matrix",
    "Feasibility", "feasibility", "Model", "fit", "load_model", "save_model",
    "clustering_accuracy", "match_components", "parameter_error", "subspace_error",
    "MetaLearnResult", "meta_learn",
    "log_likelihoods", "posterior", "predict_params",
    "TaskStream", "open_npy_chunks",
    "estimate_subspace", "moment_stats", "second_moment",
    "make_mixture", "sample_tasks",
    "TaskSet", "check_tasks", "group_tasks", "pack_tasks",
]
