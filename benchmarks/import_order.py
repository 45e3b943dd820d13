"""fit with NumPy imported first against fastmlr imported first.

Usage::

    python benchmarks/import_order.py                   # k=8, d=32
    python benchmarks/import_order.py --k 16 --d 64 --rounds 5

``import fastmlr`` sets no environment variable, so the order of imports should not
matter; this checks it.  Each order runs in its own process (OpenBLAS and OpenMP read
their settings when they load), the orders alternate, each process reports the best
of ``--repeat`` warm fits, and the figure per order is the best over ``--rounds``
processes.  A third process type, ``preset``, exports OMP_WAIT_POLICY=PASSIVE and
OPENBLAS_THREAD_TIMEOUT=12 before anything loads (what the import once did): its
time shows what the variables would still buy.  Printed: milliseconds per order and
the ratios numpy-first / fastmlr-first (the target is at most 1.1) and
numpy-first / preset.  ``--busy`` runs the same while another process keeps one core
busy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

CHILD = r"""
import sys, time, json
order = sys.argv[1]
if order == "numpy":
    import numpy as np
    import fastmlr
else:
    import fastmlr
    import numpy as np
from fastmlr.backend import set_backend

k, d, n, repeat = (int(a) for a in sys.argv[2:6])
set_backend(sys.argv[6])
W, s2, p = fastmlr.make_mixture(k, d, seed=0)
rng = np.random.default_rng(1)
sizes = np.minimum(2 + np.floor(np.exp(rng.normal(0.0, 1.0, size=n))).astype(np.int64), 64)
sizes[: n // 50] = 4 * d  # some heavy tasks
tasks = fastmlr.sample_tasks(W, s2, p, sizes, seed=2)[:3]
fastmlr.fit(tasks, k, seed=0)  # compile and warm up
best = float("inf")
for _ in range(repeat):
    t0 = time.perf_counter()
    fastmlr.fit(tasks, k, seed=0)
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"seconds": best}))
"""

_VARS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")


def run(order: str, args) -> float:
    env = {k: v for k, v in os.environ.items() if k not in _VARS}
    if order == "preset":
        env.update(OMP_WAIT_POLICY="PASSIVE", OPENBLAS_THREAD_TIMEOUT="12")
    first = "numpy" if order in ("numpy", "preset") else "fastmlr"
    out = subprocess.run([sys.executable, "-c", CHILD, first, str(args.k), str(args.d), str(args.n),
                          str(args.repeat), args.backend], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def _spin(stop):
    while not stop.is_set():
        sum(range(10000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--n", type=int, default=30000, help="tasks in the pool")
    ap.add_argument("--repeat", type=int, default=3, help="warm fits per process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per order, alternating")
    ap.add_argument("--backend", default="numba", choices=["numba", "cython", "numpy"])
    ap.add_argument("--busy", action="store_true", help="another process keeps one core busy meanwhile")
    args = ap.parse_args()
    stop = busy = None
    if args.busy:
        stop = mp.Event()
        busy = mp.Process(target=_spin, args=(stop,), daemon=True)
        busy.start()
        time.sleep(0.2)
    try:
        times = {"numpy": [], "fastmlr": [], "preset": []}
        for _ in range(args.rounds):
            for order in times:
                times[order].append(run(order, args))
    finally:
        if busy is not None:
            stop.set()
            busy.join()
    best = {order: min(t) for order, t in times.items()}
    labels = {"numpy": "numpy first", "fastmlr": "fastmlr first", "preset": "numpy first, variables exported"}
    for order, t in best.items():
        print(f"{labels[order]:34s} fit {t * 1e3:8.1f} ms")
    print(f"numpy first / fastmlr first = {best['numpy'] / best['fastmlr']:.2f}   "
          f"numpy first / preset = {best['numpy'] / best['preset']:.2f}   "
          f"(backend {args.backend}, k={args.k}, d={args.d}, {args.n} tasks, {os.cpu_count()} cores"
          f"{', one busy' if args.busy else ''})")


if __name__ == "__main__":
    main()
