"""fastmlr.fit beside R's flexmix and the true-label oracle, on pools of mostly tiny tasks.

For every setting a seeded pool is simulated (orthonormal W, s = 1, uniform p, task
sizes log-uniform in [4, 32], so most tasks are tiny), and three estimates are compared
by their matched max error ``max_l ||w_hat - w_l||`` (:func:`fastmlr.parameter_error`):

* ``fastmlr``: :func:`fastmlr.fit` with its defaults (median wall time of --repeat runs
  after one warm-up run), timed in a new process for every ``--threads`` setting: 1
  thread (kernels and BLAS, like R's single-threaded flexmix) and the library default
  (every core);
* ``flexmix``: R's flexmix, EM over tasks (``y ~ 0 + x | task``: the pools have no
  intercept), the best of --nrep random starts (``stepFlexmix``), timed inside R
  around the fit only (benchmarks/flexmix_fit.R).  Components that flexmix drops
  (its ``minprior``) count as zero vectors;
* ``oracle``: least squares on the true labels over all the data.

Without Rscript and flexmix the flexmix columns are left out.

    python benchmarks/flexmix_compare.py                 # the four default settings
    python benchmarks/flexmix_compare.py --settings 8,32,3000 --nrep 5 --threads 1
    python benchmarks/flexmix_compare.py --no-r --settings 4,64,3000 --stages   # where fit spends its time
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

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


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def time_fastmlr(pool, k, repeat, threads):
    """Estimate, median wall time and median seconds of each stage (``diagnostics["seconds"]``)
    of fastmlr.fit on the pool file, in a new process whose kernels and BLAS use
    ``threads`` threads (0: the library default)."""
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env.pop(var, None)
        if threads > 0:  # read when NumPy loads its BLAS: hence the new process
            env[var] = str(threads)
    code = (
        "import fastmlr, json, sys, time, numpy as np  # fastmlr first, as its README advises\n"
        "f = np.load(sys.argv[1]); X, y, off = f['X'], f['y'], f['offsets']; k, r = int(sys.argv[2]), int(sys.argv[3])\n"
        "fastmlr.fit((X, y, off), k)  # warm-up: compilation and caches are not timed\n"
        "t, parts = [], []\n"
        "for _ in range(r):\n"
        "    t0 = time.perf_counter(); m = fastmlr.fit((X, y, off), k); t.append(time.perf_counter() - t0)\n"
        "    parts.append(m.diagnostics['seconds'])\n"
        "stages = {key: float(np.median([p[key] for p in parts])) for key in parts[0]}\n"
        "print(json.dumps({'seconds': float(np.median(t)), 'W': m.W.tolist(), 'stages': stages}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, pool, str(k), str(repeat)], env=env,
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return np.asarray(res["W"]), res["seconds"], res["stages"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="k,d,tasks triples")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="pool seeds (one row each)")
    ap.add_argument("--nrep", type=int, default=5, help="flexmix random starts (default 5)")
    ap.add_argument("--repeat", type=int, default=5, help="timed fastmlr runs (median; default 5)")
    ap.add_argument("--no-r", action="store_true", help="skip flexmix even if R is here")
    ap.add_argument("--stages", action="store_true",
                    help="also print where fit spends its time, per stage and thread setting")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                    help="thread settings for fastmlr's kernels and BLAS, one column each "
                         "(default: 1, like R's flexmix, and 0 = the library default)")
    args = ap.parse_args(argv)
    global np
    import numpy as np

    import fastmlr
    from fastmlr.lstsq import refit
    from fastmlr.synthetic import simulate_pool
    use_r = not args.no_r and have_flexmix()
    if not use_r:
        print("(flexmix not run: Rscript with the flexmix package was not found or --no-r was given)")
    names = [f"{t} thr" if t > 0 else "default" for t in args.threads]
    head = f"{'k':>3} {'d':>3} {'tasks':>6} {'seed':>4} {'rows':>7} | {'oracle':>7} {'fastmlr':>8}"
    if use_r:
        head += f" {'flexmix':>8} {'fm/fast':>8}"
    head += " |" + "".join(f" {'s, ' + nm:>12}" for nm in names)
    if use_r:
        head += f" {'flexmix s':>9} |" + "".join(f" {'x, ' + nm:>11}" for nm in names)
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
                err_or = fastmlr.parameter_error(refit(fastmlr.TaskSet(X, y, off), R, W, sim["s2"])[0], W).max
                pool = os.path.join(work, "pool.npz")
                np.savez(pool, X=X, y=y, offsets=off)
                fits = [time_fastmlr(pool, k, args.repeat, t) for t in args.threads]
                errs = [fastmlr.parameter_error(Wf, W).max for Wf, _, _ in fits]
                if max(errs) - min(errs) > 1e-6 * max(errs):  # beyond the rounding of a different BLAS split
                    print(f"  (estimates differ across thread settings: {errs})")
                err_fast = max(errs)
                row = f"{k:>3} {d:>3} {n:>6} {seed:>4} {int(off[-1]):>7} | {err_or:>7.4f} {err_fast:>8.4f}"
                if use_r:
                    W_fm, t_fm = run_flexmix(sim["X"], sim["y"], sim["task"], k, args.nrep, seed + 1, work)
                    err_fm = fastmlr.parameter_error(W_fm, W).max
                    row += f" {err_fm:>8.4f} {err_fm / err_fast:>8.3f}"
                row += " |" + "".join(f" {t:>12.4f}" for _, t, _ in fits)
                if use_r:
                    row += f" {t_fm:>9.2f} |" + "".join(f" {t_fm / t:>10.0f}x" for _, t, _ in fits)
                print(row, flush=True)
                if args.stages:
                    for nm, (_, _, st) in zip(names, fits):
                        print(f"    stages, {nm}: " + ", ".join(f"{key} {1e3 * v:.1f} ms" for key, v in st.items()))
    print("flexmix: one R process (single-threaded); fastmlr: median of --repeat fits per thread setting")
    print("errors: matched max ||w_hat - w|| over components; fm/fast > 1 means fastmlr is more accurate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
