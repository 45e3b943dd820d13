"""Cold start and warm time of the demo under each backend, side by side.

Usage: python benchmarks/cold_start.py [--repeats 3] [--args "--scale 0.05 --k 8 --d 32"]

Cold start is the wall time of a new process running
``python -m fastmlr demo <args> --backend B --json``: interpreter start, ``import
fastmlr``, the backend's import and the first demo call.  Numba is measured twice: with
a cold cache (an empty ``NUMBA_CACHE_DIR``, the same as deleting the ``*.nbi``/``*.nbc``
files under ``fastmlr/__pycache__``, without disturbing the package's own cache) and with
a warm one (a cache directory filled by one earlier, untimed run).  The warm time is
the second demo call inside one process (nothing left to load or compile).  The
variants run interleaved, round after round, so that they share the machine's load;
the table gives medians.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

WARM = """
import json, sys, time
import fastmlr
from fastmlr.cli import build_parser
from fastmlr.demo import run_demo
args = build_parser().parse_args(["demo", *sys.argv[1:]])
fastmlr.backend.set_backend(args.backend)
times = []
for _ in range(2):
    t0 = time.perf_counter()
    run_demo(k=args.k, d=args.d, seed=args.seed, scale=args.scale, dtype=args.dtype)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def _env(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("FASTMLR_BACKEND", "NUMBA_CACHE_DIR")}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def cold(demo_args, backend, cache_dir):
    """Wall seconds of one new process running the demo command."""
    cmd = [sys.executable, "-m", "fastmlr", "demo", *demo_args, "--backend", backend, "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache_dir))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{p.stderr}")
    json.loads(p.stdout)
    return wall


def warm(demo_args, backend, cache_dir):
    """Seconds of the first and the second demo call inside one process."""
    cmd = [sys.executable, "-c", WARM, *demo_args, "--backend", backend]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache_dir))
    if p.returncode != 0:
        raise SystemExit(f"warm run under {backend} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--args", default="--scale 0.05 --k 8 --d 32 --seed 0",
                    help="arguments of `fastmlr demo` (default: %(default)s)")
    ap.add_argument("--backends", nargs="+", default=["numba", "cython", "numpy"])
    opts = ap.parse_args(argv)
    demo_args = shlex.split(opts.args)

    with tempfile.TemporaryDirectory() as tmp:
        warm_cache = os.path.join(tmp, "warm")
        variants = []  # (label, backend, cache dir factory)
        for b in opts.backends:
            if b == "numba":
                variants.append(("numba, cold cache", b, lambda r: os.path.join(tmp, f"cold{r}")))
                variants.append(("numba, warm cache", b, lambda r: warm_cache))
            else:
                variants.append((b, b, lambda r: None))
        if "numba" in opts.backends:
            cold(demo_args, "numba", warm_cache)  # fills the warm cache; not timed
        cold_t = {v[0]: [] for v in variants}
        warm_t = {v[0]: [] for v in variants}
        for r in range(opts.repeats):
            for label, b, cache in variants:
                cold_t[label].append(cold(demo_args, b, cache(r)))
                first, second = warm(demo_args, b, cache(f"w{r}") if "cold" in label else cache(r))
                warm_t[label].append(second)

    cmd = f"python -m fastmlr demo {opts.args} --backend B --json"
    print(f"cold start = wall time of `{cmd}` in a new process; "
          f"warm = 2nd run_demo call in one process; medians of {opts.repeats} interleaved rounds")
    print(f"{'variant':<20} {'cold start s':>13} {'warm s':>8} {'cold - warm s':>14}")
    for label, _, _ in variants:
        c, w = statistics.median(cold_t[label]), statistics.median(warm_t[label])
        print(f"{label:<20} {c:>13.2f} {w:>8.2f} {c - w:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
