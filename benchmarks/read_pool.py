"""Reading a pool from .csv and .parquet: fastmlr against bare pyarrow, in one run.

    python benchmarks/read_pool.py                 # a >= 1 GB .csv (task, y, 32 features)
    python benchmarks/read_pool.py --gb 0.2 --repeat 2
    python benchmarks/read_pool.py --memory        # also: fit from open_parquet, peak RSS

Writes the pool under a temporary directory (``--dir``, default /tmp), then times, best
of ``--repeat`` runs taken in turn, each read in a fresh process (the file in the page
cache, the modules imported before the clock starts, and for fastmlr its compiled
kernels loaded from Numba's cache, a one-time cost of a process that is printed
apart), as a job that reads its pool once does:

* ``pyarrow.csv.read_csv`` of the file (every column, types inferred) against
  ``fastmlr.io.read_pool`` of the same file (a pool grouped by task: ids as text,
  every value checked); the target is a ratio of at most 1.5;
* ``pyarrow.parquet.read_table`` against ``read_pool`` of the same pool as .parquet;
  the target is at most 1.2.

The same readers are also timed in a loop inside one process (``in one process``):
there a reader's second run reuses the pages its allocator kept from the first, which
favours ``read_table`` (it returns the memory it read into to its allocator; a pool
keeps its arrays in the same allocator, but also copies the columns into rows).

With ``--memory``: ``fastmlr.fit`` from ``fastmlr.open_parquet`` of the .parquet in a
fresh process, its peak resident memory beside the size of the pool's arrays.  The
files are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_files(folder, gb, d, seed=0):
    """A pool of about ``gb`` GB as .csv, and the same rows as .parquet."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from fastmlr.io import ROW_GROUP_ROWS

    rng = np.random.default_rng(seed)
    csv_path = os.path.join(folder, "pool.csv")
    pq_path = os.path.join(folder, "pool.parquet")
    block = 200_000
    target = gb * 1e9
    first_task = 0
    writer = pqw = None
    rows = 0
    while writer is None or os.path.getsize(csv_path) < target:
        sizes = rng.integers(4, 33, size=block // 18)
        task = np.repeat(np.arange(first_task, first_task + sizes.size), sizes)
        first_task += sizes.size
        X = rng.standard_normal((task.size, d))
        y = X[:, 0] - 0.5 * X[:, 1] + rng.standard_normal(task.size)
        cols = {"task": task, "y": y, **{f"x{j + 1}": X[:, j] for j in range(d)}}
        table = pa.table(cols)
        if writer is None:
            writer = pcsv.CSVWriter(csv_path, table.schema)
            pqw = pq.ParquetWriter(pq_path, table.schema)
        writer.write_table(table)
        pqw.write_table(table, row_group_size=ROW_GROUP_ROWS)
        rows += task.size
        if os.path.getsize(csv_path) >= target:
            break
    writer.close()
    pqw.close()
    return csv_path, pq_path, rows, first_task


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return min(times)


ONE_READ = """
import sys, time
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.dataset  # noqa: F401 -- read_table imports it (and pandas) on its first call
import pyarrow.parquet as pq
from fastmlr.io import read_pool

reader, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if reader.startswith("fastmlr"):  # the process's one-time start: kernels imported, loaded from Numba's cache
    from fastmlr.backend import kernels
    kernels().columns_into_rows(np.zeros((1, 1)), np.array([np.zeros(1).ctypes.data]))
start = time.perf_counter() - t0
read = {"pyarrow.csv.read_csv": pcsv.read_csv, "pyarrow.parquet.read_table": pq.read_table}.get(reader, read_pool)
t0 = time.perf_counter()
out = read(path)
print(time.perf_counter() - t0, start)
"""


def fresh(reader, path, folder):
    """Seconds for ``reader`` to read ``path`` once in a new process."""
    p = subprocess.run([sys.executable, "-c", ONE_READ, reader, path], capture_output=True, text=True, cwd=folder)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    seconds, start = map(float, p.stdout.split())
    STARTS.append(start)
    return seconds


#: fastmlr's one-time start in each fresh process (kernels imported and loaded), kept
#: out of the read times as the imports are, and reported once
STARTS: list = []


MEMORY = """
import sys, time
import fastmlr

def peak():  # VmHWM: this process's high-water mark (ru_maxrss would keep the forked parent's)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))

path, rows = sys.argv[1], int(sys.argv[2])
fastmlr.fit(fastmlr.open_parquet(sys.argv[4], max_rows=rows), 2, seed=0, max_iter=1)  # imports, kernels
before = peak()
t0 = time.perf_counter()
model = fastmlr.fit(fastmlr.open_parquet(path, max_rows=rows), 2, seed=0, max_iter=int(sys.argv[3]))
print(before, peak(), time.perf_counter() - t0)
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.05, help="size of the .csv in GB (default 1.05)")
    ap.add_argument("--d", type=int, default=32, help="features (default 32)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each reader; the best is kept (default 3)")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the files go (deleted at the end)")
    ap.add_argument("--memory", action="store_true", help="also fit from open_parquet and report peak memory")
    ap.add_argument("--max-iter", type=int, default=3, help="EM iterations of the --memory fit (default 3)")
    args = ap.parse_args(argv)

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from fastmlr.io import read_pool

    folder = tempfile.mkdtemp(prefix="fastmlr-read-", dir=args.dir)
    try:
        t0 = time.perf_counter()
        csv_path, pq_path, rows, tasks = write_files(folder, args.gb, args.d)
        os.sync()  # written back before the clocks start: the readers find clean pages in the page cache
        size_csv, size_pq = os.path.getsize(csv_path), os.path.getsize(pq_path)
        print(f"pool: {rows} rows, {tasks} tasks, d = {args.d}; .csv {size_csv / 1e9:.2f} GB, "
              f".parquet {size_pq / 1e9:.2f} GB (written in {time.perf_counter() - t0:.1f} s)")
        print(f"load average {os.getloadavg()[0]:.2f}; best of {args.repeat}, readers taken in turn")
        paths = {"pyarrow.csv.read_csv": csv_path, "fastmlr read_pool .csv": csv_path,
                 "pyarrow.parquet.read_table": pq_path, "fastmlr read_pool .parquet": pq_path}
        readers = {"pyarrow.csv.read_csv": lambda: pcsv.read_csv(csv_path),
                   "fastmlr read_pool .csv": lambda: read_pool(csv_path),
                   "pyarrow.parquet.read_table": lambda: pq.read_table(pq_path),
                   "fastmlr read_pool .parquet": lambda: read_pool(pq_path)}
        for how in ("fresh process", "in one process"):
            results = {name: [] for name in readers}
            for _ in range(args.repeat):  # in turn, so that a busy moment hits every reader alike
                for name, fn in readers.items():
                    results[name].append(fresh(name, paths[name], folder) if how == "fresh process" else best(fn, 1))
            print(f"{how}:")
            for name, ts in results.items():
                print(f"  {name:<28}{min(ts):8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in ts)})")
            r_csv = min(results["fastmlr read_pool .csv"]) / min(results["pyarrow.csv.read_csv"])
            r_pq = min(results["fastmlr read_pool .parquet"]) / min(results["pyarrow.parquet.read_table"])
            if how == "fresh process" and STARTS:
                fm = [t for t in STARTS if t > 0]
                print(f"  (before each fastmlr read, not timed: the kernels' one-time import and load from the "
                      f"cache, median {np.median(fm):.2f} s)")
            print(f"  ratio .csv     fastmlr / pyarrow = {r_csv:.2f}  (target <= 1.5: {'ok' if r_csv <= 1.5 else 'MISSED'})")
            print(f"  ratio .parquet fastmlr / pyarrow = {r_pq:.2f}  (target <= 1.2: {'ok' if r_pq <= 1.2 else 'MISSED'})")
        if args.memory:
            arrays = rows * (args.d + 1) * 8
            small = os.path.join(folder, "small.parquet")
            pq.write_table(pq.read_table(pq_path).slice(0, 20000), small)
            p = subprocess.run([sys.executable, "-c", MEMORY, pq_path, "65536", str(args.max_iter), small],
                               capture_output=True, text=True, cwd=folder)
            if p.returncode != 0:
                print(p.stderr)
                return 1
            before, peak, secs = p.stdout.split()
            grew = int(peak) - int(before)
            print(f"fit from open_parquet ({args.max_iter} EM iterations at most, batches of 65536 rows): peak RSS "
                  f"{int(peak) / 1e9:.2f} GB, {grew / 1e9:.2f} GB above the process after imports and a warm-up "
                  f"({int(before) / 1e9:.2f} GB), for a pool of {arrays / 1e9:.2f} GB of X and y "
                  f"(growth {grew / arrays:.2f}x the pool), {float(secs):.1f} s")

    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
