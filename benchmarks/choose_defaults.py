"""Measure the clustering stage's options (linkage, L) at the demo's scale.

Usage: python benchmarks/choose_defaults.py [--trials N] [--k 32] [--d 256]

One light set (2^19 tasks of 4 rows) gives the subspace; then, for heavy sets of 256
tasks of t_H rows, every (linkage, L) is run on the same heavy tasks and scored by
clustering accuracy and the matched max error of the cluster means.
"""

import argparse

import numpy as np

import fastmlr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--light", type=int, default=1 << 19)
    args = ap.parse_args()
    W, s2, p = fastmlr.make_mixture(args.k, args.d, seed=0)
    light = fastmlr.sample_tasks(W, s2, p, 4, n_tasks=args.light, seed=1)
    U = fastmlr.estimate_subspace(light[:3], args.k)
    del light
    print(f"k={args.k} d={args.d} subspace error {fastmlr.subspace_error(U, W):.3f}; {args.trials} trials of 256 heavy tasks")
    print(f"{'t_H':>5} {'linkage':>8} {'L':>3} {'acc mean':>9} {'acc min':>8} {'perfect':>8} {'max err':>8}")
    for tH in (64, 128, 256):
        heavies = [fastmlr.sample_tasks(W, s2, p, tH, n_tasks=256, seed=100 + t) for t in range(args.trials)]
        for linkage in ("single", "average"):
            for L in (1, 2, 4, 8):
                if 2 * L > tH:
                    continue
                accs, errs = [], []
                for h in heavies:
                    c = fastmlr.cluster_tasks(h[:3], U, args.k, L=L, linkage=linkage)
                    accs.append(fastmlr.clustering_accuracy(c.labels, h.z))
                    errs.append(fastmlr.parameter_error(c.W, W).max)
                accs = np.array(accs)
                print(f"{tH:>5} {linkage:>8} {L:>3} {accs.mean():>9.3f} {accs.min():>8.3f} "
                      f"{np.mean(accs == 1.0):>8.2f} {np.median(errs):>8.3f}", flush=True)


if __name__ == "__main__":
    main()
