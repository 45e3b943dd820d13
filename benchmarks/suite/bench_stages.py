"""Each stage, Algorithm 1 end to end and fit(), per backend and dtype, over sizes."""

import numpy as np

import fastmlr

from .common import BACKENDS, DTYPES, grid, head, long_tailed, pool, sizes


class Subspace:
    params = (BACKENDS, DTYPES, sizes([1 << 14, 1 << 16], [1 << 19]), grid([64, 256]))
    param_names = ["backend", "dtype", "tasks", "d"]

    def setup(self, backend, dtype, tasks, d):
        fastmlr.backend.set_backend(backend)
        _, (self.X, self.y, self.off, _) = pool(8, d, long_tailed(tasks, 2, 64), dtype)
        fastmlr.estimate_subspace(head(self.X, self.y, self.off, 20), 8)

    def time_estimate_subspace(self, backend, dtype, tasks, d):
        fastmlr.estimate_subspace((self.X, self.y, self.off), 8)

    def peakmem_estimate_subspace(self, backend, dtype, tasks, d):
        fastmlr.estimate_subspace((self.X, self.y, self.off), 8)


class Cluster:
    params = (BACKENDS, sizes([256, 1024], [4096]), grid([16, 64]), grid([1, 4]))
    param_names = ["backend", "n_heavy", "k", "L"]

    def setup(self, backend, n, k, L):
        fastmlr.backend.set_backend(backend)
        (W, _, _), (self.X, self.y, self.off, _) = pool(k, 4 * k, np.full(n, 16), "float64")
        self.U = np.linalg.qr(W.T)[0]
        fastmlr.cluster_tasks((self.X, self.y, self.off), self.U, k, L=L)

    def time_cluster_tasks(self, backend, n, k, L):
        fastmlr.cluster_tasks((self.X, self.y, self.off), self.U, k, L=L)

    def peakmem_cluster_tasks(self, backend, n, k, L):
        fastmlr.cluster_tasks((self.X, self.y, self.off), self.U, k, L=L)


class Classify:
    params = (BACKENDS, DTYPES, sizes([1 << 11], [1 << 13]), grid([8, 32]))
    param_names = ["backend", "dtype", "tasks", "k"]

    def setup(self, backend, dtype, tasks, k):
        fastmlr.backend.set_backend(backend)
        (self.W, s2, _), (self.X, self.y, self.off, _) = pool(k, 128, long_tailed(tasks, 24, 128), dtype)
        self.s2 = 2 * s2
        fastmlr.classify_tasks((self.X, self.y, self.off), self.W, self.s2)

    def time_classify_tasks(self, backend, dtype, tasks, k):
        fastmlr.classify_tasks((self.X, self.y, self.off), self.W, self.s2)

    def peakmem_classify_tasks(self, backend, dtype, tasks, k):
        fastmlr.classify_tasks((self.X, self.y, self.off), self.W, self.s2)


class EndToEnd:
    """Algorithm 1 on a heterogeneous pool (the demo's shape, scaled)."""

    params = (BACKENDS, DTYPES, sizes([1 / 64], [1 / 4, 1.0]))
    param_names = ["backend", "dtype", "scale"]
    timeout = 600

    def setup(self, backend, dtype, scale):
        fastmlr.backend.set_backend(backend)
        k, d = 32, 256
        (W, s2, p), light = pool(k, d, long_tailed(int((1 << 19) * scale), 2, 64), dtype)
        heavy = fastmlr.sample_tasks(W, s2, p, 256, n_tasks=256, seed=5, dtype=dtype)
        light2 = fastmlr.sample_tasks(W, s2, p, long_tailed(max(1 << 10, int((1 << 13) * scale)), 24, 128, 1),
                                      seed=6, dtype=dtype)
        self.sets = (light[:3], heavy[:3], light2[:3])
        fastmlr.meta_learn(*self.sets, k)

    def time_meta_learn(self, backend, dtype, scale):
        fastmlr.meta_learn(*self.sets, 32)

    def peakmem_meta_learn(self, backend, dtype, scale):
        fastmlr.meta_learn(*self.sets, 32)


class Sampling:
    params = (grid([1, 2]), sizes([1 << 16], [1 << 19]))
    param_names = ["threads", "tasks"]

    def setup(self, threads, tasks):
        self.mix = fastmlr.make_mixture(32, 256, seed=0)

    def time_sample_tasks(self, threads, tasks):
        with fastmlr.n_threads(threads):
            fastmlr.sample_tasks(*self.mix, 4, n_tasks=tasks, seed=1)


class Fit:
    """fit() on one pool of tiny tasks (4-32 rows), as in benchmarks/flexmix_compare.py."""

    params = (BACKENDS, sizes([3000], [24000]), grid(["8,32", "16,16", "4,64"]))
    param_names = ["backend", "tasks", "k,d"]

    def setup(self, backend, tasks, kd):
        from fastmlr.synthetic import simulate_pool

        self.k, d = (int(v) for v in kd.split(","))
        sim = simulate_pool(self.k, d, tasks, low=4, high=32, seed=0)
        self.ts = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
        self.backend = backend
        with fastmlr.use_backend(backend):
            fastmlr.fit(self.ts, self.k)

    def time_fit(self, backend, tasks, kd):
        with fastmlr.use_backend(self.backend):
            fastmlr.fit(self.ts, self.k)

    def peakmem_fit(self, backend, tasks, kd):
        with fastmlr.use_backend(self.backend):
            fastmlr.fit(self.ts, self.k)


class FitScale:
    """fit() on Figure 2's pool shape (k = 32, d = 256): ``scale * 2^19`` tasks of 4 rows,
    256 of 256 and ``scale * 2^13`` of 32, pooled.  Its EM reads the rows in passes
    (``em_path="passes"``): the time should grow like N, the rows
    (``benchmarks/complexity.py`` fits the exponent)."""

    params = (sizes([1 / 64, 1 / 16], [1 / 4, 1.0]),)
    param_names = ["scale"]
    timeout = 900

    def setup(self, scale):
        k, d = 32, 256
        (W, s2, p), light = pool(k, d, np.full(int((1 << 19) * scale), 4), "float64")
        heavy = fastmlr.sample_tasks(W, s2, p, 256, n_tasks=256, seed=5)
        light2 = fastmlr.sample_tasks(W, s2, p, 32, n_tasks=max(64, int((1 << 13) * scale)), seed=6)
        parts = (light, heavy, light2)
        sizes_ = np.concatenate([np.diff(b.offsets) for b in parts])
        self.ts = (np.concatenate([b.X for b in parts]), np.concatenate([b.y for b in parts]),
                   np.concatenate([[0], np.cumsum(sizes_)]).astype(np.int64))
        fastmlr.fit(self.ts, k, max_iter=1)  # compilation

    def time_fit(self, scale):
        fastmlr.fit(self.ts, 32)

    def peakmem_fit(self, scale):
        fastmlr.fit(self.ts, 32)
