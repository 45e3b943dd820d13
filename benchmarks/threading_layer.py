"""fit under Numba's threading layers: "omp" (Numba's default here) against
"workqueue" (fork-safe, but not safe for kernels called from several threads at once,
so fastmlr's block-parallel stages then run their blocks one after another).

Usage::

    python benchmarks/threading_layer.py                  # k=4, d=32
    python benchmarks/threading_layer.py --k 16 --d 64 --rounds 3

Each layer runs in its own process (a layer is chosen once per process), the
processes alternate, and each reports the best of ``--repeat`` warm fits; the figure
per layer is the best over ``--rounds`` processes.  Printed: the seconds per layer and
the ratio workqueue / omp.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import fastmlr
from fastmlr.backend import set_backend

k, d, n, repeat = (int(a) for a in sys.argv[1:5])
set_backend("numba")
W, s2, p = fastmlr.make_mixture(k, d, seed=0)
sizes = np.random.default_rng(1).integers(2, 12, size=n)
X, y, off, _ = fastmlr.sample_tasks(W, s2, p, sizes, seed=2)
fastmlr.fit((X, y, off), k, seed=0)  # compile and warm up
best = float("inf")
for _ in range(repeat):
    t0 = time.perf_counter()
    fastmlr.fit((X, y, off), k, seed=0)
    best = min(best, time.perf_counter() - t0)
import numba
print(json.dumps({"layer": numba.threading_layer(), "seconds": best}))
"""


def run(layer: str, args) -> float:
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.k), str(args.d), str(args.n), str(args.repeat)],
                         env=env, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["layer"] == layer, res
    return res["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--n", type=int, default=20000, help="tasks in the pool")
    ap.add_argument("--repeat", type=int, default=3, help="warm fits per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per layer, alternating")
    args = ap.parse_args()
    times = {"omp": [], "workqueue": []}
    for _ in range(args.rounds):
        for layer in times:
            times[layer].append(run(layer, args))
    best = {layer: min(t) for layer, t in times.items()}
    for layer, t in best.items():
        print(f"{layer:10s} fit {t * 1e3:8.1f} ms")
    print(f"workqueue / omp = {best['workqueue'] / best['omp']:.2f}  (k={args.k}, d={args.d}, {args.n} tasks, "
          f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
