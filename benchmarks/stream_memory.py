"""Peak resident memory of the subspace stage over a pool larger than memory.

Usage::

    python benchmarks/stream_memory.py DIR [--tasks 4194304] [--rows 2] [--d 256]

Writes a pool of ``--tasks`` light tasks (float32) to ``.npy`` files in DIR, chunk by
chunk, then, in a fresh process, runs ``estimate_subspace`` over
``open_npy_chunks(...)`` and prints the file size, the time, the peak resident
memory of that process (``VmHWM``) and the subspace error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def write_pool(out, tasks, rows, d, seed=0):
    import fastmlr

    W, s2, p = fastmlr.make_mixture(8, d, seed=seed)
    N = tasks * rows
    X = np.lib.format.open_memmap(os.path.join(out, "X.npy"), mode="w+", dtype=np.float32, shape=(N, d))
    y = np.lib.format.open_memmap(os.path.join(out, "y.npy"), mode="w+", dtype=np.float32, shape=(N,))
    np.save(os.path.join(out, "offsets.npy"), np.arange(tasks + 1, dtype=np.int64) * rows)
    step = 1 << 16  # tasks sampled at a time
    for c, lo in enumerate(range(0, tasks, step)):
        n = min(step, tasks - lo)
        part = fastmlr.sample_tasks(W, s2, p, rows, n_tasks=n, seed=seed * 100003 + c + 1, dtype="float32")
        X[lo * rows : (lo + n) * rows] = part.X
        y[lo * rows : (lo + n) * rows] = part.y
    X.flush()
    y.flush()
    del X, y
    np.save(os.path.join(out, "W.npy"), W)


def measure(out):
    import fastmlr

    stream = fastmlr.open_npy_chunks(*(os.path.join(out, f) for f in ("X.npy", "y.npy", "offsets.npy")))
    t0 = time.perf_counter()
    U = fastmlr.estimate_subspace(stream, k=8)
    seconds = time.perf_counter() - t0
    W = np.load(os.path.join(out, "W.npy"))
    # VmHWM: this process's own peak (ru_maxrss would include the parent's, which
    # survives fork and exec on Linux)
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "subspace_error": fastmlr.subspace_error(U, W)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--tasks", type=int, default=1 << 22)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--measure-only", action="store_true")
    args = ap.parse_args()
    if args.measure_only:
        measure(args.dir)
        return
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    write_pool(args.dir, args.tasks, args.rows, args.d)
    size = sum(os.path.getsize(os.path.join(args.dir, f)) for f in ("X.npy", "y.npy", "offsets.npy"))
    print(f"wrote {args.tasks} tasks x {args.rows} rows, d = {args.d}, float32: {size / 2**30:.2f} GiB "
          f"in {time.perf_counter() - t0:.1f} s")
    res = subprocess.run([sys.executable, __file__, args.dir, "--measure-only"], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"estimate_subspace over the files: {r['seconds']:.1f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, "
          f"subspace error {r['subspace_error']:.3f}")


if __name__ == "__main__":
    main()
