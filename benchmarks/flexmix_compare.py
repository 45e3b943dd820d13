"""fastmlr.fit beside R's flexmix and the true-label oracle, on pools of mostly tiny tasks.

For every setting a seeded pool is simulated (orthonormal W, s = 1, uniform p, task
sizes log-uniform in [4, 32], so most tasks are tiny), and three estimates are compared
by their matched max error ``max_l ||w_hat - w_l||`` (:func:`fastmlr.parameter_error`):

* ``fastmlr``: :func:`fastmlr.fit` with its defaults (median wall time of --repeat runs
  after one warm-up run);
* ``flexmix``: R's flexmix, EM over tasks (``y ~ 0 + x | task``: the pools have no
  intercept), the best of --nrep random starts (``stepFlexmix``), timed inside R
  around the fit only (benchmarks/flexmix_fit.R).  Components that flexmix drops
  (its ``minprior``) count as zero vectors;
* ``oracle``: least squares on the true labels over all the data.

Without Rscript and flexmix the flexmix columns are left out.

    python benchmarks/flexmix_compare.py                 # the four default settings
    python benchmarks/flexmix_compare.py --settings 8,32,3000 --nrep 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SETTINGS = ["8,32,3000", "8,32,6000", "4,64,3000", "16,16,4000"]


def have_flexmix() -> bool:
    if shutil.which("Rscript") is None:
        return False
    p = subprocess.run(["Rscript", "-e", "suppressPackageStartupMessages(library(flexmix))"],
                       capture_output=True, text=True)
    return p.returncode == 0


def run_flexmix(X, y, task, k, nrep, seed, workdir):
    pool = os.path.join(workdir, "pool.csv")
    out = os.path.join(workdir, "flexmix.csv")
    d = X.shape[1]
    with open(pool, "w") as fh:
        fh.write(",".join(["task", "y"] + [f"x{j + 1}" for j in range(d)]) + "\n")
        np.savetxt(fh, np.column_stack([task, y, X]), delimiter=",", fmt="%.17g")
    p = subprocess.run(["Rscript", os.path.join(HERE, "flexmix_fit.R"), pool, str(k), str(nrep), str(seed), out],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"flexmix failed: {p.stderr.strip().splitlines()[-1:]}")
    tab = np.genfromtxt(out, delimiter=",", skip_header=1, ndmin=2)
    W = tab[:, 2:]
    if W.shape[0] < k:  # components dropped by flexmix
        W = np.vstack([W, np.zeros((k - W.shape[0], d))])
    with open(out + ".time") as fh:
        seconds = float(fh.read().strip())
    return W, seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="k,d,tasks triples")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="pool seeds (one row each)")
    ap.add_argument("--nrep", type=int, default=5, help="flexmix random starts (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="timed fastmlr runs (median; default 3)")
    ap.add_argument("--no-r", action="store_true", help="skip flexmix even if R is here")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for fastmlr's kernels and BLAS (default 1, like R's flexmix; 0 = library default)")
    args = ap.parse_args(argv)
    if args.threads > 0:  # before NumPy loads its BLAS
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    global np
    import numpy as np

    import fastmlr
    from fastmlr.classify import refit
    from fastmlr.pool_cli import simulate_pool
    use_r = not args.no_r and have_flexmix()
    if not use_r:
        print("(flexmix not run: Rscript with the flexmix package was not found or --no-r was given)")
    head = f"{'k':>3} {'d':>3} {'tasks':>6} {'seed':>4} {'rows':>7} | {'oracle':>7} {'fastmlr':>8}"
    if use_r:
        head += f" {'flexmix':>8} {'fm/fast':>8}"
    head += f" | {'fastmlr s':>9}"
    if use_r:
        head += f" {'flexmix s':>9} {'speedup':>8}"
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as work:
        for setting in args.settings:
            k, d, n = (int(v) for v in setting.split(","))
            for seed in args.seeds:
                sim = simulate_pool(k, d, n, low=4, high=32, seed=seed)
                X, y, off = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
                W = sim["W"]
                R = np.zeros((n, k))
                R[np.arange(n), sim["z"]] = 1.0
                err_or = fastmlr.parameter_error(refit(X, y, off, R, W, sim["s"] ** 2)[0], W).max
                fastmlr.fit(X, y, off, k)  # warm-up: compilation and caches are not timed
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    m = fastmlr.fit(X, y, off, k)
                    times.append(time.perf_counter() - t0)
                t_fast = float(np.median(times))
                err_fast = fastmlr.parameter_error(m.W, W).max
                row = f"{k:>3} {d:>3} {n:>6} {seed:>4} {int(off[-1]):>7} | {err_or:>7.4f} {err_fast:>8.4f}"
                if use_r:
                    W_fm, t_fm = run_flexmix(sim["X"], sim["y"], sim["task"], k, args.nrep, seed + 1, work)
                    err_fm = fastmlr.parameter_error(W_fm, W).max
                    row += f" {err_fm:>8.4f} {err_fm / err_fast:>8.3f}"
                row += f" | {t_fast:>9.4f}"
                if use_r:
                    row += f" {t_fm:>9.2f} {t_fm / t_fast:>8.0f}x"
                print(row, flush=True)
    print(f"fastmlr threads: {args.threads or 'library default'}; flexmix: one R process")
    print("errors: matched max ||w_hat - w|| over components; fm/fast > 1 means fastmlr is more accurate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
