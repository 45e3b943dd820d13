"""Do the intervals cover?  Coverage of standard errors and predictive intervals.

For each setting, seeded pools are simulated from the paper's model (orthonormal W,
noise scale 1 unless a setting says otherwise, uniform p, task sizes log-uniform in
[4, 32]) and fitted with fastmlr.fit at the true k.  Per pool:

* nominal 95% intervals ``estimate +- 1.96 SE`` of every coefficient of W (and of s2
  and p), the estimated components matched to the true ones with
  fastmlr.metrics.match_components, each way of computing the standard errors:
  Louis' observed information (full matrix), the same in per-component blocks, and
  the empirical information;
* nominal 90% central predictive intervals of one query row of each of
  ``--new-tasks`` new tasks (support of 4-32 rows from the same mixture), with the
  fitted mixture plugged in and with the parameter uncertainty ``x^T Cov(w_l) x``
  added.

The third default setting has noise 2: components overlap more, which is where the
per-component blocks of the information lose coverage.

    python benchmarks/interval_coverage.py                    # 200 pools per setting, 1 thread
    python benchmarks/interval_coverage.py --pools 20         # quicker
    python benchmarks/interval_coverage.py --bootstrap 200    # and bootstrap against Louis SEs on pool 0
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import fastmlr  # noqa: E402  (first, so that the thread settings reach BLAS)
import numpy as np  # noqa: E402

from fastmlr.inference import standard_errors  # noqa: E402
from fastmlr.metrics import match_components  # noqa: E402
from fastmlr.synthetic import pool_sizes, simulate_pool  # noqa: E402
from fastmlr.predictive import predictive  # noqa: E402

DEFAULT_SETTINGS = ["4,8,1500", "8,16,3000", "8,16,3000,2"]
Z95 = 1.959963984540054
SE_WAYS = (("louis", False), ("louis", True), ("empirical", False))


def one_pool(k, d, n_tasks, seed, new_tasks, level=0.9, noise=1.0):
    """Coverage counts of one seeded pool: {name: (covered, total)}."""
    sim = simulate_pool(k=k, d=d, n_tasks=n_tasks, seed=seed, s2=noise ** 2)
    tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    model = fastmlr.fit(tasks, k=k)
    perm = match_components(model.W, sim["W"])
    out = {}
    ses = {}
    for method, blocks in SE_WAYS:
        se = standard_errors(tasks, model, method=method, blocks=blocks)
        name = method + (" blocks" if blocks else "")
        ses[name] = se
        for par, est, truth, err in (("W", model.W, sim["W"], se.W), ("s2", model.s2, sim["s2"], se.s2),
                                     ("p", model.p, sim["p"], se.p)):
            hit = np.abs(est[perm] - truth) <= Z95 * err[perm]
            out[f"{par} {name}"] = (int(hit.sum()), hit.size)
    # new tasks: support rows and one query row each
    sizes = pool_sizes(new_tasks, 4, 32, seed=10**6 + seed)
    S = fastmlr.sample_tasks(sim["W"], sim["s2"], sim["p"], sizes + 1, seed=2 * 10**6 + seed)
    last = S.offsets[1:] - 1
    support_rows = np.setdiff1d(np.arange(S.X.shape[0]), last)
    support = (S.X[support_rows], S.y[support_rows], np.concatenate([[0], np.cumsum(sizes)]))
    qt = np.arange(new_tasks)
    for name, se in (("plug-in", None), ("+ Cov(w)", ses["louis"])):
        pred = predictive(support, S.X[last], qt, model, se=se)
        lo, hi = pred.interval(level)
        hit = (S.y[last] >= lo) & (S.y[last] <= hi)
        out[f"pred {name}"] = (int(hit.sum()), hit.size)
        small = sizes <= 6
        out[f"pred {name}, support 4-6"] = (int(hit[small].sum()), int(small.sum()))
    return out


def bootstrap_agreement(k, d, n_tasks, seed, n_boot, noise=1.0):
    sim = simulate_pool(k=k, d=d, n_tasks=n_tasks, seed=seed, s2=noise ** 2)
    tasks = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    model = fastmlr.fit(tasks, k=k)
    lo = standard_errors(tasks, model)
    bs = standard_errors(tasks, model, method="bootstrap", n_boot=n_boot, seed=seed)
    rows = []
    for par in ("W", "s2", "p"):
        r = getattr(lo, par).ravel() / getattr(bs, par).ravel()
        rows.append((par, r.size, float(np.sqrt(np.mean(getattr(lo, par) ** 2) / np.mean(getattr(bs, par) ** 2))),
                     float(np.median(r)), float(np.min(r)), float(np.max(r))))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS,
                    help="k,d,tasks triples, or k,d,tasks,noise (noise scale, default 1)")
    ap.add_argument("--pools", type=int, default=200, help="seeded pools 0 .. POOLS-1 per setting")
    ap.add_argument("--new-tasks", type=int, default=200, help="new tasks (one query row each) per pool")
    ap.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates for the agreement table (0: skip)")
    args = ap.parse_args(argv)
    with fastmlr.n_threads(1):
        for spec in args.settings:
            parts = spec.split(",")
            k, d, n = (int(v) for v in parts[:3])
            noise = float(parts[3]) if len(parts) > 3 else 1.0
            t0 = time.perf_counter()
            tot: dict = {}
            for seed in range(args.pools):
                for key, (h, m) in one_pool(k, d, n, seed, args.new_tasks, noise=noise).items():
                    a, b = tot.get(key, (0, 0))
                    tot[key] = (a + h, b + m)
            secs = time.perf_counter() - t0
            print(f"\nk = {k}, d = {d}, noise {noise:g}, {n} tasks of 4-32 rows, {args.pools} pools ({secs:.0f} s)\n")
            print("| interval | nominal | covered | intervals |")
            print("|---|---:|---:|---:|")
            for key, (h, m) in tot.items():
                nominal = "90%" if key.startswith("pred") else "95%"
                print(f"| {key} | {nominal} | {100.0 * h / m:.1f}% | {m:,} |")
            if args.bootstrap:
                print(f"\nLouis SE / bootstrap SE ({args.bootstrap} refits), pool 0:\n")
                print("| parameter | count | ratio of RMS | median ratio | min | max |")
                print("|---|---:|---:|---:|---:|---:|")
                for par, cnt, rms, med, mn, mx in bootstrap_agreement(k, d, n, 0, args.bootstrap, noise):
                    print(f"| {par} | {cnt} | {rms:.3f} | {med:.3f} | {mn:.3f} | {mx:.3f} |")


if __name__ == "__main__":
    main()
