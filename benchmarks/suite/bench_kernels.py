"""Each kernel alone, per backend and dtype, over sizes (JIT warm-up in setup)."""

import numpy as np

import fastmlr
from fastmlr.residuals import task_sse
from fastmlr.backend import _load

from .common import BACKENDS, DTYPES, grid, head, long_tailed, pool, sizes


class GroupMeans:
    params = (BACKENDS, DTYPES, sizes([1 << 14, 1 << 16], [1 << 19]))
    param_names = ["backend", "dtype", "tasks"]

    def setup(self, backend, dtype, tasks):
        _, (self.X, self.y, self.off, _) = pool(8, 256, long_tailed(tasks, 2, 64), dtype)
        self.k = _load(backend)
        self.k.group_means(*head(self.X, self.y, self.off), 2)

    def time_group_means(self, backend, dtype, tasks):
        self.k.group_means(self.X, self.y, self.off, 2)

    def peakmem_group_means(self, backend, dtype, tasks):
        self.k.group_means(self.X, self.y, self.off, 2)


class TaskSSE:
    params = (BACKENDS, DTYPES, sizes([1 << 10, 1 << 12], [1 << 14]), grid([8, 32]))
    param_names = ["backend", "dtype", "tasks", "k"]

    def setup(self, backend, dtype, tasks, k):
        (self.W, _, _), (self.X, self.y, self.off, _) = pool(k, 256, long_tailed(tasks, 24, 128), dtype)
        self.backend = backend
        with fastmlr.use_backend(backend):
            task_sse(*head(self.X, self.y, self.off), self.W)

    def time_task_sse(self, backend, dtype, tasks, k):
        with fastmlr.use_backend(self.backend):
            task_sse(self.X, self.y, self.off, self.W)


class LabeledSSE:
    params = (BACKENDS, DTYPES, sizes([1 << 10, 1 << 12], [1 << 14]), grid([8, 32]))
    param_names = ["backend", "dtype", "tasks", "k"]

    def setup(self, backend, dtype, tasks, k):
        (W, _, _), (self.X, self.y, self.off, z) = pool(k, 256, long_tailed(tasks, 24, 128), dtype)
        self.W = np.ascontiguousarray(W, dtype=np.float64)
        self.labels = np.ascontiguousarray(z, dtype=np.int64)
        self.k = _load(backend)
        Xh, yh, oh = head(self.X, self.y, self.off)
        self.k.labeled_sse(Xh, yh, oh, self.labels[: oh.size - 1], self.W)

    def time_labeled_sse(self, backend, dtype, tasks, k):
        self.k.labeled_sse(self.X, self.y, self.off, self.labels, self.W)


class GatherRows:
    params = (BACKENDS, DTYPES, sizes([1 << 12], [1 << 14]))
    param_names = ["backend", "dtype", "tasks"]

    def setup(self, backend, dtype, tasks):
        _, (self.X, self.y, self.off, _) = pool(8, 256, long_tailed(tasks, 24, 128), dtype)
        self.idx = np.arange(0, tasks, 3, dtype=np.int64)
        self.w = np.ones(self.idx.size)
        self.k = _load(backend)
        self.k.gather_rows(self.X, self.y, self.off, self.idx[:2], self.w[:2])

    def time_gather_rows(self, backend, dtype, tasks):
        self.k.gather_rows(self.X, self.y, self.off, self.idx, self.w)


class Linkage:
    """The O(n_H^2) steps: the median-of-L distance matrix, single and average linkage."""

    params = (BACKENDS, sizes([512, 2048], [4096]), grid([1, 4]))
    param_names = ["backend", "n_heavy", "L"]

    def setup(self, backend, n, L):
        rng = np.random.default_rng(0)
        self.P = rng.standard_normal((n, 2 * L, 32))
        with fastmlr.use_backend(backend):
            self.H = fastmlr.cluster.median_distance_matrix(self.P, L)
        self.k = _load(backend)
        self.k.single_linkage(self.H[:4, :4].copy(), 2)
        self.k.average_linkage(self.H[:4, :4].copy(), 2)

    def time_median_distance_matrix(self, backend, n, L):
        with fastmlr.use_backend(backend):
            fastmlr.cluster.median_distance_matrix(self.P, L)

    def peakmem_median_distance_matrix(self, backend, n, L):
        with fastmlr.use_backend(backend):
            fastmlr.cluster.median_distance_matrix(self.P, L)

    def time_single_linkage(self, backend, n, L):
        self.k.single_linkage(self.H, 32)

    def time_average_linkage(self, backend, n, L):
        self.k.average_linkage(self.H, 32)  # overwrites H (the NumPy backend's SciPy does not)

    time_average_linkage.number = 1  # one call per sample, each on the H of a fresh setup


class TaskGram:
    """Per-task X^T X, X^T y, y^T y (the statistics of fit's EM), tiny tasks."""

    params = (BACKENDS, DTYPES, sizes([1 << 12], [1 << 15]), grid([16, 64]))
    param_names = ["backend", "dtype", "tasks", "d"]

    def setup(self, backend, dtype, tasks, d):
        _, (self.X, self.y, self.off, _) = pool(8, d, long_tailed(tasks, 4, 32), dtype)
        self.k = _load(backend)
        self.k.task_gram(*head(self.X, self.y, self.off))

    def time_task_gram(self, backend, dtype, tasks, d):
        self.k.task_gram(self.X, self.y, self.off)

    def peakmem_task_gram(self, backend, dtype, tasks, d):
        self.k.task_gram(self.X, self.y, self.off)


class ColumnsIntoRows:
    """Columns (as a frame or a Parquet row group holds them) copied into the rows of X."""

    params = (BACKENDS, DTYPES, sizes([1 << 16], [1 << 20]))
    param_names = ["backend", "dtype", "rows"]

    def setup(self, backend, dtype, rows):
        rng = np.random.default_rng(0)
        self.cols = [rng.standard_normal(rows).astype(dtype) for _ in range(32)]
        self.addresses = np.array([c.ctypes.data for c in self.cols], dtype=np.int64)
        self.X = np.empty((rows, 32), dtype=dtype)
        self.k = _load(backend)
        self.k.columns_into_rows(self.X[:2], self.addresses)

    def time_columns_into_rows(self, backend, dtype, rows):
        self.k.columns_into_rows(self.X, self.addresses)
