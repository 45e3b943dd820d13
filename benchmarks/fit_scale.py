"""fit at the paper's scale: Figure 2's pool, pooled, against meta_learn on the same data.

The pool is Figure 2's setting (k = 32, d = 256, orthonormal W, unit noise, uniform p):
``scale * 2^19`` light tasks of 4 rows, 256 heavy tasks of 256, 2^13 tasks of 32,
written once to .npy files in a temporary directory.  Each measurement runs in a fresh
process that loads them:

* ``meta_learn`` on the three batches and ``fit`` on the pool with k given, in one
  process, alternating (``--repeat``), so their time ratio is measured under the same
  load;
* ``fit`` alone, for its peak resident memory beyond the data's size;
* with ``--exact``, exact EM (``em_path="rows"``: k weighted Gram matrices per
  iteration) from fit's own start, for the gap in log-likelihood and error;
* with ``--stream``, the same pool as float32 chunks on disk through
  ``open_npy_chunks``: peak memory, and the difference to the in-memory float32 fit.

Errors are matched max ||w_hat - w||; the oracle is least squares on the true labels
over all rows.

    python benchmarks/fit_scale.py --scale 0.25 --exact
    python benchmarks/fit_scale.py --scale 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_pool(directory, scale, seed=0, k=32, d=256):
    import fastmlr

    W, s2, p = fastmlr.make_mixture(k=k, d=d, seed=seed)
    batches = [fastmlr.sample_tasks(W, s2, p, 4, n_tasks=int(round((1 << 19) * scale)), seed=seed + 1),
               fastmlr.sample_tasks(W, s2, p, 256, n_tasks=256, seed=seed + 2),
               fastmlr.sample_tasks(W, s2, p, 32, n_tasks=1 << 13, seed=seed + 3)]
    sizes = np.concatenate([np.diff(b.offsets) for b in batches])
    np.save(f"{directory}/offsets.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    np.save(f"{directory}/batch_tasks.npy", np.array([b.offsets.size - 1 for b in batches]))
    np.save(f"{directory}/z.npy", np.concatenate([b.z for b in batches]))
    np.save(f"{directory}/W.npy", W)
    for name in ("X", "y"):
        arr = np.concatenate([getattr(b, name) for b in batches])
        np.save(f"{directory}/{name}.npy", arr)
        np.save(f"{directory}/{name}32.npy", arr.astype(np.float32))
        del arr


def _load(directory, f32=False):
    suffix = "32" if f32 else ""
    X = np.load(f"{directory}/X{suffix}.npy")
    y = np.load(f"{directory}/y{suffix}.npy")
    return X, y, np.load(f"{directory}/offsets.npy")


def _peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(mode, directory, repeat):
    import fastmlr  # noqa: F401 (before the timings: first-call compilation is not timed)
    from fastmlr.tasks import TaskSet

    W = np.load(f"{directory}/W.npy")
    k = W.shape[0]
    out: dict = {}
    if mode == "stream":
        stream = fastmlr.open_npy_chunks(f"{directory}/X32.npy", f"{directory}/y32.npy", f"{directory}/offsets.npy")
        base = _peak_gib()
        t0 = time.perf_counter()
        m = fastmlr.fit(stream, k=k)
        out.update(seconds=time.perf_counter() - t0, peak_gib=_peak_gib(), base_gib=base, W=m.W.tolist(),
                   loglik=m.diagnostics["loglik"])
        print(json.dumps(out))
        return
    X, y, off = _load(directory, f32=(mode == "float32"))
    data_gib = (X.nbytes + y.nbytes + off.nbytes) / 2**30
    nb = np.load(f"{directory}/batch_tasks.npy")
    cut = np.cumsum(nb)
    sizes = np.diff(off)

    def batch(a, b):
        lo, hi = int(off[a]), int(off[b])
        return X[lo:hi], y[lo:hi], off[a:b + 1] - off[a]

    light, heavy, light2 = batch(0, cut[0]), batch(cut[0], cut[1]), batch(cut[1], cut[2])
    if mode in ("time", "float32"):
        fastmlr.meta_learn(light, heavy, light2, k)  # warm-up (compilation)
        tm, tf = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            ml = fastmlr.meta_learn(light, heavy, light2, k)
            tm.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m = fastmlr.fit((X, y, off), k=k)
            tf.append(time.perf_counter() - t0)
        out.update(meta_learn_seconds=min(tm), fit_seconds=min(tf),
                   meta_learn_err=float(fastmlr.parameter_error(ml.W, W).max),
                   fit_err=float(fastmlr.parameter_error(m.W, W).max), loglik=m.diagnostics["loglik"],
                   em_iterations=m.diagnostics["em_iterations"], em_path=m.diagnostics["em_path"],
                   fit_stage_seconds=m.diagnostics["seconds"], W=m.W.tolist(),
                   split_moves=[(mv["split"], mv["kept"]) for mv in m.diagnostics["split_moves"]])
        if mode == "time":
            z = np.repeat(np.load(f"{directory}/z.npy"), sizes)
            Wo = np.stack([np.linalg.lstsq(X[z == l], y[z == l], rcond=None)[0] for l in range(k)])
            out["oracle_err"] = float(fastmlr.parameter_error(Wo, W).max)
    elif mode == "memory":
        base = _peak_gib()
        t0 = time.perf_counter()
        fastmlr.fit((X, y, off), k=k)
        out.update(seconds=time.perf_counter() - t0, peak_gib=_peak_gib(), data_gib=data_gib, base_gib=base)
    elif mode == "exact":
        t0 = time.perf_counter()
        m_fast = fastmlr.fit((X, y, off), k=k, em_path="passes")
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        m_exact = fastmlr.fit((X, y, off), k=k, em_path="rows")
        t_exact = time.perf_counter() - t0
        out.update(passes_seconds=t_fast, exact_seconds=t_exact,
                   passes_loglik=m_fast.diagnostics["loglik"], exact_loglik=m_exact.diagnostics["loglik"],
                   passes_err=float(fastmlr.parameter_error(m_fast.W, W).max),
                   exact_err=float(fastmlr.parameter_error(m_exact.W, W).max),
                   passes_iterations=m_fast.diagnostics["em_iterations"],
                   exact_iterations=m_exact.diagnostics["em_iterations"], rows=int(off[-1]))
    elif mode == "truth":
        from fastmlr import em as _em
        from fastmlr import em_passes

        ts = TaskSet(X, y, off)
        S_inv = np.linalg.inv(X.T @ X / X.shape[0])
        t0 = time.perf_counter()
        res = em_passes.run_gem(em_passes.array_pool(ts), W, np.ones(k), np.full(k, 1.0 / k), S_inv,
                                floor=_em.s2_floor(ts))
        t_truth = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = fastmlr.fit(ts, k)
        out.update(truth_seconds=t_truth, fit_seconds=time.perf_counter() - t0,
                   truth_loglik=float(res.loglik[-1]), fit_loglik=m.diagnostics["loglik"],
                   truth_err=float(fastmlr.parameter_error(res.W, W).max),
                   fit_err=float(fastmlr.parameter_error(m.W, W).max), rows=int(off[-1]))
    elif mode == "choose_k":
        t0 = time.perf_counter()
        m = fastmlr.fit((X, y, off), k=k)
        t_given = time.perf_counter() - t0
        t0 = time.perf_counter()
        m_none = fastmlr.fit((X, y, off), k=None)
        t_none = time.perf_counter() - t0
        sel = m_none.diagnostics["k_selection"]
        out.update(given_seconds=t_given, none_seconds=t_none, chosen_k=int(m_none.W.shape[0]),
                   candidates=[(c["k"], c["bic"], c.get("em_iterations")) for c in sel["candidates"]],
                   k_spectrum=sel["k_spectrum"], given_err=float(fastmlr.parameter_error(m.W, W).max),
                   none_err=float(fastmlr.parameter_error(m_none.W, W).max) if m_none.W.shape[0] == k else None)
    print(json.dumps(out))


def run(mode, directory, repeat=1):
    r = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", directory, "--repeat", str(repeat)],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{mode} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Figure 2's 2^19 light tasks")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--exact", action="store_true", help="also exact EM (slow: k N d^2 per iteration)")
    ap.add_argument("--stream", action="store_true", help="also the float32 pool streamed from disk")
    ap.add_argument("--truth", action="store_true", help="also EM started at the true parameters")
    ap.add_argument("--choose-k", action="store_true", help="also fit with k=None, against k given")
    ap.add_argument("--skip-time", action="store_true", help="skip the timing and memory runs")
    ap.add_argument("--dir", help="reuse (or write) the pool in this directory")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.dir, args.repeat)
    directory = args.dir or tempfile.mkdtemp(prefix="fit_scale-")
    os.makedirs(directory, exist_ok=True)
    if not os.path.exists(f"{directory}/X.npy"):
        # in a process of its own: a child forked from a process that once held the pool
        # would start with that process's peak resident memory (ru_maxrss is inherited)
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                        f"import fit_scale; fit_scale.make_pool({directory!r}, {args.scale!r})"], check=True)
    N = int(np.load(f"{directory}/offsets.npy")[-1])
    print(f"pool: scale {args.scale}, {N:,} rows, k = 32, d = 256 (in {directory})")
    if not args.skip_time:
        t = run("time", directory, args.repeat)
        print(f"meta_learn {t['meta_learn_seconds']:.1f} s, max err {t['meta_learn_err']:.3f}")
        print(f"fit        {t['fit_seconds']:.1f} s, max err {t['fit_err']:.3f}  ({t['em_iterations']} EM iterations, "
              f"{t['em_path']}, split moves {t['split_moves']}); stages {json.dumps({k: round(v, 2) for k, v in t['fit_stage_seconds'].items()})}")
        print(f"fit / meta_learn: {t['fit_seconds'] / t['meta_learn_seconds']:.1f}x;  oracle err {t['oracle_err']:.3f}, "
              f"fit / oracle {t['fit_err'] / t['oracle_err']:.2f}x")
        m = run("memory", directory)
        print(f"memory: data {m['data_gib']:.2f} GiB, fit's peak {m['peak_gib']:.2f} GiB "
              f"(+{m['peak_gib'] - m['data_gib']:.2f} GiB beyond the data)")
    if args.exact:
        e = run("exact", directory)
        print(f"exact EM: {e['exact_seconds']:.1f} s, {e['exact_iterations']} it., loglik {e['exact_loglik']:.3f}, "
              f"err {e['exact_err']:.4f}")
        print(f"passes:   {e['passes_seconds']:.1f} s, {e['passes_iterations']} it., loglik {e['passes_loglik']:.3f}, "
              f"err {e['passes_err']:.4f}  (gap {(e['exact_loglik'] - e['passes_loglik']) / e['rows']:.2e} per row, "
              f"err ratio {e['passes_err'] / e['exact_err']:.4f})")
    if args.truth:
        e = run("truth", directory)
        print(f"EM from the truth: loglik {e['truth_loglik']:.3f}, err {e['truth_err']:.4f};  fit: loglik "
              f"{e['fit_loglik']:.3f}, err {e['fit_err']:.4f}  (gap {(e['truth_loglik'] - e['fit_loglik']) / e['rows']:.2e} "
              f"per row, err ratio {e['fit_err'] / e['truth_err']:.3f})")
    if args.choose_k:
        c = run("choose_k", directory)
        print(f"k=None: chose k = {c['chosen_k']} (spectrum {c['k_spectrum']}) in {c['none_seconds']:.1f} s, "
              f"{c['none_seconds'] / c['given_seconds']:.2f}x the fit with k given ({c['given_seconds']:.1f} s); "
              f"candidates (k, BIC, EM iterations) {c['candidates']}")
    if args.stream:
        f = run("float32", directory)
        s = run("stream", directory)
        diff = np.abs(np.array(s["W"]) - np.array(f["W"])).max() / np.abs(np.array(f["W"])).max()
        print(f"stream (float32 .npy chunks): {s['seconds']:.1f} s, peak {s['peak_gib']:.2f} GiB; "
              f"max relative difference of W to the in-memory float32 fit {diff:.2e}")


if __name__ == "__main__":
    main()
