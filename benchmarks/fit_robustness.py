"""Does fit() find the best optimum?  fit against EM started at the true parameters.

On each seeded pool (task sizes log-uniform in [4, 32]) the script fits the pool with
fastmlr.fit and runs task-level EM from the truth (W, s^2, p), and reports both
log-likelihoods and matched max errors.  A pool counts as missed when fit's
log-likelihood is below the truth-started one (by more than 1e-6 relative) and its error
is over 1.5 times the truth-started error: fit ended in another, worse optimum.

    python benchmarks/fit_robustness.py                          # 7 settings x 16 seeds
    python benchmarks/fit_robustness.py --kind gaussian --seeds 10
    python benchmarks/fit_robustness.py --settings 16,16,4000 --n-seeds 4
    python benchmarks/fit_robustness.py --settings 32,128,20000 32,256,20000 64,128,40000 --seeds 3
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import fastmlr  # noqa: E402  (first, so that the thread settings reach BLAS)
import numpy as np  # noqa: E402

from fastmlr import em_passes  # noqa: E402
from fastmlr.em import STATS_MAX_BYTES, run_em, s2_floor, task_stats  # noqa: E402
from fastmlr.synthetic import simulate_pool  # noqa: E402
from fastmlr.tasks import check_tasks  # noqa: E402

DEFAULT_SETTINGS = ["16,16,4000", "16,32,6000", "16,64,8000", "12,24,3000", "8,32,3000", "16,16,2000", "8,16,1500"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="k,d,tasks triples")
    ap.add_argument("--seeds", type=int, default=16, help="pool seeds 0 .. SEEDS-1 per setting")
    ap.add_argument("--kind", default="orthonormal", choices=["orthonormal", "gaussian"], help="how W is drawn")
    ap.add_argument("--n-seeds", type=int, default=None, help="fit's n_seeds (default: its own)")
    args = ap.parse_args(argv)
    missed = total = 0
    for spec in args.settings:
        k, d, n = (int(v) for v in spec.split(","))
        for seed in range(args.seeds):
            sim = simulate_pool(k, d, n, low=4, high=32, seed=seed, kind=args.kind)
            X, y, off = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
            m = fastmlr.fit((X, y, off), k, n_seeds=args.n_seeds)
            ts = check_tasks(X, y, off)
            s2 = np.broadcast_to(np.asarray(sim["s2"], dtype=float), (k,)).copy()
            p0 = np.asarray(sim["p"], dtype=float)
            if 4 * (off.size - 1) * d * (d + 1) <= STATS_MAX_BYTES:
                ref = run_em(ts, sim["W"], s2, p0, stats=task_stats(*ts))
            else:  # per-task statistics too large: the passes, which reach exact EM's optimum
                S_inv = np.linalg.inv(ts.X.T @ ts.X / ts.X.shape[0])
                ref = em_passes.run_gem(em_passes.array_pool(ts), sim["W"], s2, p0, S_inv, floor=s2_floor(ts))
            ll, ll_ref = m.diagnostics["loglik"], float(ref.loglik[-1])
            err = fastmlr.parameter_error(m.W, sim["W"]).max
            err_ref = fastmlr.parameter_error(ref.W, sim["W"]).max
            miss = ll < ll_ref - 1e-6 * abs(ll_ref) and err > 1.5 * err_ref
            missed += miss
            total += 1
            print(f"{spec:>11} seed {seed:2d}: fit loglik {ll:12.1f} error {err:.3f} | from the truth "
                  f"{ll_ref:12.1f} {err_ref:.3f} {'MISSED' if miss else ''}", flush=True)
    print(f"missed {missed} of {total} pools")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
