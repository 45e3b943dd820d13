"""fastmlr.dask.fit on a Parquet pool larger than a worker's memory limit, against fit in memory.

Writes a pool of ``--gb`` GB (as float64 arrays; k = 8, d = 32, tasks of 8 rows and
every 20th of 64, ids increasing, one file per partition) under a temporary directory,
then measures in one run, each fit in its own process or cluster:

* in memory: ``pyarrow.parquet.read_table`` -> ``tasks_from_frame`` -> ``fastmlr.fit``
  (EM in passes, as ``fit`` chooses for this pool), on one core (the process pinned to
  it) and on every core;
* ``fastmlr.dask.fit`` on a LocalCluster of 1 worker pinned to one core and of 2
  workers on two cores (processes, one thread each; a worker's kernels get its share
  of the cores), from ``dask.dataframe.read_parquet`` (with the options of ``--read``):
  time, each worker's peak resident memory, and the largest difference in W to the
  in-memory fit.

Every configuration runs ``--repeat`` times, in alternating order, and the best run
counts: on a virtual machine whose host takes back the memory a process frees, a run
that writes the pool into pages new to the machine pays for them (its system CPU time,
printed beside each run), and which runs do depends on what ran just before.

The speedup is measured with memory to spare (each worker's limit 3 times the pool);
a third run gives each of 2 workers a memory limit of 0.9 of the pool's size (the
partitions are persisted across the two; a worker spills them to disk when its process
memory reaches 85% of its limit): a pool larger than any one worker's limit, and what
that pressure costs.
The directory is deleted at the end.

``--plain`` adds the machine's ceiling for this work: the workers' own work (the lean
read of ``fastmlr.dask``, the conversion and scan statistic of every partition, then 5
E-passes over the partitions, as the fit runs) done by plain processes, with no client,
scheduler or Dask worker: 1 process on one core over the 32 partitions against 2
processes on two cores over 16 each.  Dask's 2 vs 1 workers is this ceiling less what
the coordination costs: the client and the scheduler share the same cores, and the
driver's serial steps (the graph, the starts) leave the workers waiting.

``--warm`` has every process (the in-memory one, the client, each worker) fit a small
pool before the clock starts, as a process or a cluster that has fitted before: the
times then leave out the loading of the compiled kernels and Numba's first calls.

    python benchmarks/dask_fit.py            # 2 GB
    python benchmarks/dask_fit.py --gb 0.2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

K, D = 8, 32


def write_pool(directory: str, gb: float, files: int, seed: int = 0) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import fastmlr

    W, s2, p = fastmlr.make_mixture(K, D, seed=seed)
    row_bytes = 8 * (D + 1)
    rows_total = int(gb * 1e9 / row_bytes)
    per_file = rows_total // files
    mean_t = (19 * 8 + 64) / 20
    first, rows = 0, 0
    for f in range(files):
        n = int(per_file / mean_t)
        sizes = np.full(n, 8)
        sizes[::20] = 64
        S = fastmlr.sample_tasks(W, s2, p, sizes, seed=seed + 1 + f)
        cols = {f"x{j}": S.X[:, j] for j in range(D)}
        cols["y"] = S.y
        cols["task"] = np.repeat(np.arange(first, first + n, dtype=np.int64), sizes)
        pq.write_table(pa.table(cols), os.path.join(directory, f"part-{f:04d}.parquet"), row_group_size=1 << 20)
        first += n
        rows += int(sizes.sum())
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    return {"tasks": first, "rows": rows, "array_bytes": rows * row_bytes, "file_bytes": size, "W": W.tolist()}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu() -> list:
    """User and system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return [r.ru_utime, r.ru_stime]


#: ``dask.dataframe.read_parquet`` options of ``--read``: "default" none (fastmlr.dask
#: then reads each column as a view of the buffer Arrow decoded it into, from the files
#: memory-mapped); "consolidated" pandas' own conversion, which copies the float columns
#: into one block (the files still mapped).
READS = {"default": {}, "consolidated": {"arrow_to_pandas": {"split_blocks": False}}}


def child(mode: str, directory: str, workers: int, limit: int, read: str, warm: bool = False) -> dict:
    cores = sorted(os.sched_getaffinity(0))
    if mode == "memory1" or workers == 1:  # one core: its kernels, BLAS, Arrow and the workers it starts
        os.sched_setaffinity(0, cores[:1])
    import fastmlr

    out: dict = {"mode": mode, "workers": workers, "cores": len(os.sched_getaffinity(0))}
    if mode.startswith("memory"):
        import pyarrow.parquet as pq

        if warm:
            _warm()
        c0 = _cpu()
        t0 = time.perf_counter()
        table = pq.read_table(directory)
        pool = fastmlr.tasks_from_frame(table)
        del table
        t1 = time.perf_counter()
        model = fastmlr.fit(pool, K)
        t2 = time.perf_counter()
        out.update(read=t1 - t0, fit=t2 - t1, total=t2 - t0, peak=_peak_rss(),
                   sys=_cpu()[1] - c0[1], user=_cpu()[0] - c0[0])
    else:
        import dask
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        import fastmlr.dask

        # the partitions are persisted on purpose: spill by process memory only near the
        # limit, instead of from 60% of it (Dask's default, meant for transient results)
        memory = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": 0.85,
                  "distributed.worker.memory.pause": 0.92, "distributed.worker.memory.terminate": 0.98}
        with dask.config.set(memory), LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=None, memory_limit=limit) as cluster, \
                Client(cluster) as client:
            client.run(_imports)  # workers started, with the modules the in-memory run imports untimed
            if warm:
                client.run(_warm)
                _warm()
            c0 = [*client.run(_cpu).values(), _cpu()]
            t0 = time.perf_counter()
            ddf = dd.read_parquet(directory, **READS[read])
            model = fastmlr.dask.fit(ddf, K)
            t1 = time.perf_counter()
            c1 = [*client.run(_cpu).values(), _cpu()]
            out.update(total=t1 - t0, worker_peaks=sorted(client.run(_peak_rss).values()), limit=limit,
                       spilled=sorted(client.run(_spilled).values()), read=read,
                       sys=sum(b[1] - a[1] for a, b in zip(c0, c1)), user=sum(b[0] - a[0] for a, b in zip(c0, c1)))
    out["warm"] = warm
    out.update(W=model.W.tolist(), iterations=model.diagnostics["em_iterations"], em_path=model.diagnostics["em_path"],
               load=os.getloadavg()[0])
    return out


def plain_part(directory: str, part: int, of: int, passes: int = 5) -> dict:
    """``--plain``: partitions part, part + of, ... of the pool, read and converted as a
    Dask worker does (``fastmlr.dask``'s lean read under the sync scheduler), then
    ``passes`` E-passes over them at the true mixture, on core ``part``."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[part]})
    import dask
    import dask.dataframe as dd

    import fastmlr
    import fastmlr.dask as fdask

    ddf, spec = fdask._spec(dd.read_parquet(directory), "ddf", "task", "y", None)
    mine = ddf.to_delayed(optimize_graph=True)[part::of]
    W, s2, p = fastmlr.make_mixture(K, D, seed=0)
    point = tuple(np.asarray(a, dtype=np.float64) for a in (W, s2, p))
    c0, t0 = _cpu(), time.time()
    with dask.config.set(scheduler="sync"):
        parts = [fdask._fit_part(q.compute(), i, spec)[0] for i, q in enumerate(mine)]
    t1 = time.time()
    for _ in range(passes):
        for ts in parts:
            fdask._e_part(ts, point, spec)
    c1 = _cpu()
    return {"start": t0, "scanned": t1, "end": time.time(), "user": c1[0] - c0[0], "sys": c1[1] - c0[1]}


def plain(directory: str, processes: int) -> dict:
    """``--plain`` with 1 or 2 processes at once: the time from the first one's start to
    the last one's end (their imports before)."""
    procs = [subprocess.Popen([sys.executable, __file__, "--plain-part", directory, str(i), str(processes)],
                              stdout=subprocess.PIPE, text=True, cwd="/") for i in range(processes)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("plain run failed")
    start = min(o["start"] for o in outs)
    return {"total": max(o["end"] for o in outs) - start, "scan": max(o["scanned"] for o in outs) - start,
            "sys": sum(o["sys"] for o in outs), "user": sum(o["user"] for o in outs)}


def _imports() -> None:
    """On a worker, the imports done before the in-memory run's clock starts: fastmlr
    and Arrow's Parquet reader (here with the Dask module that calls it).  Each run,
    in memory or on the workers, loads fastmlr's compiled kernels inside its time."""
    import dask.dataframe.io.parquet.arrow  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import fastmlr.dask  # noqa: F401


def _warm() -> None:
    """With ``--warm``: a small fit in this process before the clock starts (2,000
    tasks, from a pandas frame, EM in passes), so that its compiled kernels are loaded
    and Numba's first calls made, as in a process or a cluster that has fitted before."""
    import pandas as pd

    import fastmlr

    W, s2, p = fastmlr.make_mixture(K, D, seed=1)
    sizes = np.full(2000, 8)
    sizes[::20] = 64
    S = fastmlr.sample_tasks(W, s2, p, sizes, seed=2)
    df = pd.DataFrame(S.X, columns=[f"x{j}" for j in range(D)])
    df["y"], df["task"] = S.y, np.repeat(np.arange(sizes.size), sizes)
    fastmlr.fit(fastmlr.tasks_from_frame(df), K, em_path="passes")


def _spilled(dask_worker) -> int:
    """Keys a worker holds on disk (spilled beyond its memory limit)."""
    return len(getattr(dask_worker.data, "slow", ()))


def run(mode, directory, workers=0, limit=0, read="default", warm=False) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, directory, str(workers), str(limit), read, str(int(warm))]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    if res.returncode:
        sys.stderr.write(res.stderr[-3000:])
        raise SystemExit(f"{mode} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="size of the pool as float64 arrays (default 2)")
    ap.add_argument("--files", type=int, default=32, help="Parquet files (= partitions)")
    ap.add_argument("--read", choices=sorted(READS), default="default",
                    help="read_parquet options of the Dask runs (see READS)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of every configuration, in alternating order; the best is reported (default 2)")
    ap.add_argument("--warm", action="store_true",
                    help="every process (the in-memory one, the client and each worker) fits a small pool "
                         "before the clock starts: the kernels loaded, as in a process or cluster that has "
                         "fitted before")
    ap.add_argument("--plain", action="store_true",
                    help="also measure the workers' own work in plain processes, 1 against 2 (the machine's ceiling)")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--plain-part", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_part:
        directory, part, of = args.plain_part
        print(json.dumps(plain_part(directory, int(part), int(of))))
        return
    if args.child:
        mode, directory, workers, limit, read, warm = args.child
        print(json.dumps(child(mode, directory, int(workers), int(limit), read, bool(int(warm)))))
        return
    directory = tempfile.mkdtemp(prefix="dask_fit-", dir="/tmp")
    try:
        t0 = time.perf_counter()
        info = write_pool(directory, args.gb, args.files)
        pool_bytes = info["array_bytes"]
        print(f"pool: {info['tasks']:,} tasks, {info['rows']:,} rows, k = {K}, d = {D}: "
              f"{pool_bytes / 2**30:.2f} GiB as float64 arrays, {info['file_bytes'] / 2**30:.2f} GiB of Parquet "
              f"in {args.files} files (written in {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.2f})")
        W_true = np.asarray(info["W"])
        ample = max(int(3 * pool_bytes), 2 << 30)
        w = args.warm
        configs = {"mem1": ("memory1", directory, 0, 0, args.read, w), "memall": ("memory", directory, 0, 0, args.read, w),
                   "one": ("dask", directory, 1, ample, args.read, w),
                   "two": ("dask", directory, 2, ample, args.read, w),  # the speedup, with memory to spare
                   "tight": ("dask", directory, 2, max(int(0.9 * pool_bytes), 1 << 30), args.read, w)}  # beyond each limit
        if args.plain:
            configs.update({"plain1": 1, "plain2": 2})
        runs: dict = {name: [] for name in configs}
        for r in range(max(1, args.repeat)):  # alternating order: no configuration always runs first
            for name in (list(configs) if r % 2 == 0 else list(configs)[::-1]):
                runs[name].append(plain(directory, configs[name]) if name.startswith("plain")
                                  else run(*configs[name]))
        best = {name: min(rs, key=lambda x: x["total"]) for name, rs in runs.items()}
        mem1, memall, one, two, tight = (best[n] for n in list(configs)[:5])
        import fastmlr

        print(f"best of {max(1, args.repeat)} runs of each, in alternating order; Dask reads: --read {args.read}"
              + ("; every process warmed by a small fit first (--warm)" if args.warm else ""))
        for name, rs in runs.items():
            print(f"  {name:7s} totals " + ", ".join(f"{x['total']:.1f}" for x in rs) + " s; system CPU "
                  + ", ".join(f"{x['sys']:.1f}" for x in rs) + " s; user CPU "
                  + ", ".join(f"{x['user']:.1f}" for x in rs) + " s")

        W_ref = np.asarray(mem1["W"])
        for name, r in (("in memory, 1 core", mem1), ("in memory, all cores", memall)):
            print(f"{name:22s} read {r['read']:6.1f} s + fit {r['fit']:6.1f} s = {r['total']:6.1f} s, "
                  f"peak {r['peak'] / 2**30:.2f} GiB, {r['iterations']} EM iterations ({r['em_path']}), "
                  f"load {r['load']:.2f}")
        for name, r in (("dask, 1 worker", one), ("dask, 2 workers", two), ("dask, 2 tight workers", tight)):
            dW = np.abs(np.asarray(r["W"]) - W_ref).max() / np.abs(W_ref).max()
            peaks = ", ".join(f"{v / 2**30:.2f}" for v in r["worker_peaks"])
            print(f"{name:22s} {r['total']:6.1f} s (read, scan and fit), worker peaks {peaks} GiB "
                  f"(limit {r['limit'] / 2**30:.2f} GiB, spilled keys {r['spilled']}), {r['iterations']} EM "
                  f"iterations, W vs in memory {dW:.1e} relative, load {r['load']:.2f}")
        print(f"error to the truth (max matched ||w - w*||): {fastmlr.parameter_error(W_ref, W_true).max:.3f}")
        print(f"speedup 2 workers vs 1:            {one['total'] / two['total']:.2f}x  (target >= 1.7x)")
        print(f"1 worker vs in memory (1 core):    {one['total'] / mem1['total']:.2f}x  (target <= 1.3x; "
              f"{one['total'] / mem1['fit']:.2f}x against fit alone, without reading the file)")
        print(f"2 workers vs in memory (2 cores):  {two['total'] / memall['total']:.2f}x")
        if args.plain:
            p1, p2 = best["plain1"], best["plain2"]
            print(f"the workers' work in plain processes (read and convert, 5 E-passes): 1 process {p1['total']:.1f} s "
                  f"(scan {p1['scan']:.1f} s), 2 processes {p2['total']:.1f} s (scan {p2['scan']:.1f} s): "
                  f"{p1['total'] / p2['total']:.2f}x, the ceiling of the 2 vs 1 workers speedup on this machine")
        print(f"2 workers with limits of 0.9 x pool: {tight['total'] / two['total']:.2f}x the time with memory to spare")
        print(f"largest worker peak / pool size:   {max(tight['worker_peaks']) / pool_bytes:.2f} (2 workers, "
              f"limit 0.9 x pool), {max(two['worker_peaks']) / pool_bytes:.2f} (2 workers), "
              f"{max(one['worker_peaks']) / pool_bytes:.2f} (1 worker)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
