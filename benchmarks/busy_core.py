"""fit and meta_learn while another process keeps one core busy, against the idle machine.

For each call, the best of ``--repeat`` warm runs is taken with fastmlr's default
thread count, with the machine idle and then while a second process spins on one
core; the idle figure is the best over thread counts 1 and 2 (the best setting a
user could have picked).  Printed: the ratios busy (default threads) / idle (best
setting); fastmlr's threads should give way to the other process without stalling
(a target of at most 1.3).  Also printed: busy against the idle machine on one thread,
the floor when only one core is free.

    python benchmarks/busy_core.py
    python benchmarks/busy_core.py --k 16 --d 64 --tasks 8000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import fastmlr  # noqa: I001 (first, as a user would not have to)
import numpy as np
from fastmlr.synthetic import simulate_pool


def _spin(stop):
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def best(fn, repeat):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--tasks", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    k, d = args.k, args.d
    sim = simulate_pool(k, d, args.tasks, low=4, high=32, seed=0)
    pool = fastmlr.group_tasks(sim["X"], sim["y"], sim["task"])
    W, s2, p = fastmlr.make_mixture(k, d, seed=1)
    sets = (fastmlr.sample_tasks(W, s2, p, 4, n_tasks=50 * args.tasks, seed=2),
            fastmlr.sample_tasks(W, s2, p, 64, n_tasks=max(256, 16 * k), seed=3),
            fastmlr.sample_tasks(W, s2, p, 32, n_tasks=args.tasks, seed=4))
    calls = {"fit": lambda: fastmlr.fit(pool, k), "meta_learn": lambda: fastmlr.meta_learn(*sets, k)}
    for fn in calls.values():
        fn()  # compilation
    idle, one = {}, {}
    for name, fn in calls.items():
        times = []
        for t in (1, 2):
            with fastmlr.n_threads(t):
                times.append(best(fn, args.repeat))
        idle[name], one[name] = min(times), times[0]
    stop = mp.Event()
    spinner = mp.Process(target=_spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.5)
        busy = {name: best(fn, args.repeat) for name, fn in calls.items()}
    finally:
        stop.set()
        spinner.join()
    print(f"k = {k}, d = {d}: best of {args.repeat}; idle at the best of 1 and 2 threads")
    for name in calls:
        print(f"{name:<11} idle {idle[name] * 1e3:8.1f} ms (one thread {one[name] * 1e3:8.1f} ms)   one core busy "
              f"{busy[name] * 1e3:8.1f} ms   busy / idle {busy[name] / idle[name]:.2f}, "
              f"busy / idle on one thread {busy[name] / one[name]:.2f}")


if __name__ == "__main__":
    main()
