"""Speed ratios measured in one run: fastmlr vs the numpy backend vs the machine's floor.

Usage::

    python benchmarks/compare.py                 # demo scale, float64 and float32
    python benchmarks/compare.py --scale 0.25    # a quarter of the tasks
    python benchmarks/compare.py --json out.json

For every stage the *floor* is what the stage cannot avoid on this machine, each part
timed alone on the same arrays: one read of its data (``read``: X times a vector of
ones, the fastest full read of X we know; about 3x faster than ``X.sum()``) plus the
BLAS products the stage needs (the d x d cross product for the subspace, the
projection and the n_H x n_H products for clustering, X W^T and the Gram matrix for
classification).  The pool is heterogeneous: light tasks have long-tailed sizes.
Times are the best of ``--repeat`` rounds; the compiled backend's stages and the floors'
parts are timed in alternation, one of each per round, so that a drift of a shared
machine's speed affects both alike.  Only ratios are meaningful across machines.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.linalg

import fastmlr


def best(fn, repeat):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def long_tailed_sizes(rng, n, low, cap):
    """Sizes low + floor(lognormal), capped: most tasks tiny, a few large."""
    extra = np.floor(np.exp(rng.normal(0.0, 1.0, size=n))).astype(np.int64)
    return np.minimum(low + extra, cap)


def make_pool(k, d, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    W, s2, p = fastmlr.make_mixture(k, d, seed=seed)
    n1 = int((1 << 19) * scale)
    n2 = int((1 << 13) * scale)
    light = fastmlr.sample_tasks(W, s2, p, long_tailed_sizes(rng, n1, 2, 64), seed=seed + 1, dtype=dtype)
    heavy = fastmlr.sample_tasks(W, s2, p, 256, n_tasks=256, seed=seed + 2, dtype=dtype)
    light2 = fastmlr.sample_tasks(W, s2, p, long_tailed_sizes(rng, n2, 24, 128), seed=seed + 3, dtype=dtype)
    return (W, s2, p), light[:3], heavy[:3], light2[:3]


def read(X):
    """One full read of X at the machine's bandwidth (a BLAS matrix-vector product)."""
    return X @ np.ones(X.shape[1], dtype=X.dtype)


def floor_parts(light, heavy, light2, U, W, L):
    """Per-stage floor as its parts: one read of the data plus the unavoidable BLAS
    products, each a callable timed alone."""
    X1, y1, o1 = light
    n1 = o1.size - 1
    d = X1.shape[1]
    B1 = np.ones((n1, d), dtype=X1.dtype)
    B2 = np.ones((n1, d), dtype=X1.dtype)
    M = np.eye(d)
    Xh, yh, oh = heavy
    nH = oh.size - 1
    G = np.ones((nH * 2 * L, d), dtype=np.float64)
    A = np.ones((nH, U.shape[1]))
    X2, y2, o2 = light2
    W2 = W.T.astype(X2.dtype)
    return {
        "subspace": [lambda: read(X1), lambda: B1.T @ B2,
                     lambda: scipy.linalg.eigh(M, subset_by_index=[d - U.shape[1], d - 1])],
        "cluster": [lambda: read(Xh), lambda: G @ U] + [lambda: A @ A.T] * L,
        "classify": [lambda: read(X2), lambda: X2 @ W2, lambda: X2.T @ X2],
    }


def stage_calls(light, heavy, light2, k):
    """Each stage of Algorithm 1 under the current backend, as a callable (warmed up)."""
    U = fastmlr.estimate_subspace(light, k)
    c = fastmlr.cluster_tasks(heavy, U, k)
    fastmlr.classify_tasks(light2, c.W, c.s2)
    calls = {
        "subspace": lambda: fastmlr.estimate_subspace(light, k),
        "cluster": lambda: fastmlr.cluster_tasks(heavy, U, k),
        "classify": lambda: fastmlr.classify_tasks(light2, c.W, c.s2),
        "end to end": lambda: fastmlr.meta_learn(light, heavy, light2, k),
    }
    return calls, U, c


def stage_times(light, heavy, light2, k, repeat):
    """Best time of each stage under the current backend."""
    calls, U, c = stage_calls(light, heavy, light2, k)
    return {name: best(fn, repeat) for name, fn in calls.items()}, U, c


def interleaved(calls, parts, repeat):
    """Best times of the stages and of their floors' parts, measured in alternation (one
    of each per round), so that a drift of the machine's speed affects both alike."""
    t_call = {name: [] for name in calls}
    t_part = {name: [[] for _ in fns] for name, fns in parts.items()}
    for _ in range(repeat):
        for name, fn in calls.items():
            t_call[name].append(best(fn, 1))
        for name, fns in parts.items():
            for i, fn in enumerate(fns):
                t_part[name][i].append(best(fn, 1))
    floors = {name: sum(min(ts) for ts in lists) for name, lists in t_part.items()}
    return {name: min(ts) for name, ts in t_call.items()}, floors


def clustering_case(repeat, seed=0, nH=4096, k=64, L=4, d=256, t=16):
    """The clustering step alone (H and linkage) at n_H = 4096, k = 64, L = 4."""
    W, s2, p = fastmlr.make_mixture(k, d, seed=seed)
    heavy = fastmlr.sample_tasks(W, s2, p, t, n_tasks=nH, seed=seed + 1)[:3]
    U = np.linalg.qr(W.T)[0]
    res = {}
    for b in ("numba", "numpy"):
        with fastmlr.use_backend(b):
            fastmlr.cluster_tasks(heavy, U, k, L=L)
            res[b] = best(lambda: fastmlr.cluster_tasks(heavy, U, k, L=L), repeat)
    return res


def sampling_case(k, d, scale, repeat):
    W, s2, p = fastmlr.make_mixture(k, d, seed=0)
    n = int((1 << 19) * scale)
    res = {}
    for threads in (1, 2):
        with fastmlr.n_threads(threads):
            res[threads] = best(lambda: fastmlr.sample_tasks(W, s2, p, 4, n_tasks=n, seed=1), repeat)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="numba", help="the compiled backend to measure")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: float32 clustering sampling")
    args = ap.parse_args(argv)

    report = {"setting": vars(args).copy(), "stages": {}}
    print(f"fastmlr {fastmlr.__version__}, backend {args.backend}, k={args.k} d={args.d} scale={args.scale}")
    dtypes = ["float64"] + ([] if "float32" in args.skip else ["float32"])
    ests = {}
    pool64 = make_pool(args.k, args.d, args.scale, "float64", seed=0)
    for dtype in dtypes:
        # float32 runs on the float64 pool cast down: the same tasks, so the estimates compare
        (W, s2, p), light, heavy, light2 = pool64 if dtype == "float64" else (
            pool64[0], *(tuple(a.astype(np.float32) if a.dtype.kind == "f" else a for a in part) for part in pool64[1:]))
        print(f"\n[{dtype}] light {light[2].size - 1} tasks / {light[0].shape[0]} rows, heavy {heavy[2].size - 1}, "
              f"light2 {light2[2].size - 1} tasks / {light2[0].shape[0]} rows")
        times = {}
        with fastmlr.use_backend("numpy"):
            times["numpy"], _, _ = stage_times(light, heavy, light2, args.k, max(1, args.repeat - 1))
        with fastmlr.use_backend(args.backend):
            calls, U, c = stage_calls(light, heavy, light2, args.k)
            times[args.backend], fl = interleaved(calls, floor_parts(light, heavy, light2, U, W, 1), args.repeat)
        fl["end to end"] = sum(fl.values())
        print(f"{'stage':<12}{'fastmlr s':>10}{'numpy s':>10}{'floor s':>10}{'/floor':>8}{'numpy/fastmlr':>15}")
        rows = {}
        for stage in ("subspace", "cluster", "classify", "end to end"):
            a, b, f = times[args.backend][stage], times["numpy"][stage], fl[stage]
            rows[stage] = {"fastmlr": a, "numpy": b, "floor": f, "vs_floor": a / f, "speedup_vs_numpy": b / a}
            print(f"{stage:<12}{a:>10.3f}{b:>10.3f}{f:>10.3f}{a / f:>8.2f}{b / a:>15.2f}")
        report["stages"][dtype] = rows
        with fastmlr.use_backend(args.backend):
            ests[dtype] = fastmlr.meta_learn(light, heavy, light2, args.k)
        del light, heavy, light2
    del pool64
    if "float32" in ests:
        a = report["stages"]["float64"]["end to end"]["fastmlr"]
        b = report["stages"]["float32"]["end to end"]["fastmlr"]
        W64 = ests["float64"].W
        W32 = ests["float32"].W[fastmlr.metrics.match_components(ests["float32"].W, W64)]  # same components, any order
        dW = np.abs(W32 - W64).max() / np.abs(W64).max()
        report["float32"] = {"speedup": a / b, "max_rel_diff_W": float(dW)}
        print(f"\nfloat32 vs float64 end to end: {a / b:.2f}x faster; estimates differ by {100 * dW:.3f}% (max, relative)")
    if "clustering" not in args.skip:
        with fastmlr.use_backend(args.backend):
            cl = clustering_case(args.repeat)
        report["clustering_4096"] = cl
        print(f"clustering n_H=4096 k=64 L=4: numba {cl['numba']:.3f}s numpy {cl['numpy']:.3f}s "
              f"-> {cl['numpy'] / cl['numba']:.1f}x")
    if "sampling" not in args.skip:
        sm = sampling_case(args.k, args.d, args.scale, args.repeat)
        report["sampling"] = sm
        print(f"sampling 2^19 x 4 rows: 1 thread {sm[1]:.2f}s, 2 threads {sm[2]:.2f}s -> {sm[1] / sm[2]:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
