"""The demo under two backends at the same seed: same labels, same estimates?

Usage: python benchmarks/backend_parity.py [--scale 0.1] [--k 32] [--d 256] [--seed 0]
                                           [--backends numba cython] [--dtype float64]

Runs ``fastmlr.demo.run_demo`` once per backend in this process (``--scale 1`` is the
full default demo, ~30 s per backend).  The result of Algorithm 1 inside each run is
recorded, and the script compares, between the backends: the cluster labels of the
heavy tasks and the class labels of the second light set (must be equal), the
estimates W, s2, p, U and the first estimates of the clustering stage, and every
number of the demo's JSON output except the timings.  It prints the largest relative
difference, ``|a - b| / max(|a|, |b|)`` over all entries, and exits 1 if labels differ
or that difference exceeds ``--rtol`` (default 1e-10).
"""

import argparse
import sys

import numpy as np

import fastmlr
from fastmlr import demo


def _run(backend, args):
    """The demo's JSON dict and the MetaLearnResult behind it, under ``backend``."""
    seen = []
    original = demo.meta_learn

    def recording(*a, **kw):
        m = original(*a, **kw)
        seen.append(m)
        return m

    demo.meta_learn = recording
    try:
        with fastmlr.use_backend(backend):
            res = demo.run_demo(k=args.k, d=args.d, seed=args.seed, scale=args.scale, dtype=args.dtype)
    finally:
        demo.meta_learn = original
    (m,) = seen
    return res, m


def _leaves(obj, prefix=""):
    """Numeric leaves of a nested JSON-like object, by path (timings excluded)."""
    if isinstance(obj, dict):
        for key, val in obj.items():
            if key != "seconds":
                yield from _leaves(val, f"{prefix}/{key}")
    elif isinstance(obj, list):
        for i, val in enumerate(obj):
            yield from _leaves(val, f"{prefix}[{i}]")
    elif isinstance(obj, (bool, np.bool_)):
        yield prefix, float(obj)
    elif isinstance(obj, (int, float, np.number)):
        yield prefix, float(obj)


def rel_diff(a, b):
    """max over entries of |a - b| / max(|a|, |b|) (0 where both are 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    diff = np.abs(a - b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(scale > 0, diff / scale, 0.0)
    return float(r.max(initial=0.0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--backends", nargs=2, default=["numba", "cython"])
    ap.add_argument("--rtol", type=float, default=1e-10)
    args = ap.parse_args(argv)

    a_name, b_name = args.backends
    (ra, ma), (rb, mb) = _run(a_name, args), _run(b_name, args)
    print(f"demo k={args.k} d={args.d} scale={args.scale} seed={args.seed} dtype={args.dtype}: "
          f"{a_name} vs {b_name}")

    labels = {
        "cluster.labels (heavy tasks)": (ma.cluster.labels, mb.cluster.labels),
        "classify.labels (second light set)": (ma.classify.labels, mb.classify.labels),
    }
    ok = True
    for name, (x, z) in labels.items():
        same = np.array_equal(x, z)
        ok &= same
        print(f"  {name:<36} {'equal' if same else 'DIFFER'} ({x.size} labels, {int((x != z).sum())} differ)")

    arrays = {
        "W": (ma.W, mb.W), "s2": (ma.s2, mb.s2), "p": (ma.p, mb.p), "U": (ma.U, mb.U),
        "cluster.W": (ma.cluster.W, mb.cluster.W), "cluster.s2": (ma.cluster.s2, mb.cluster.s2),
    }
    worst = 0.0
    for name, (x, z) in arrays.items():
        r = rel_diff(x, z)
        worst = max(worst, r)
        print(f"  {name:<36} max rel diff {r:.3g}{'  (bitwise equal)' if np.array_equal(x, z) else ''}")

    la, lb = dict(_leaves(ra)), dict(_leaves(rb))
    la.pop("/setting/backend", None), lb.pop("/setting/backend", None)
    if la.keys() != lb.keys():
        print("  JSON outputs have different fields")
        ok = False
    json_worst = max((rel_diff(la[key], lb[key]) for key in la), default=0.0)
    worst = max(worst, json_worst)
    print(f"  {'demo JSON (' + str(len(la)) + ' numbers, no timings)':<36} max rel diff {json_worst:.3g}")
    print(f"  max relative difference overall: {worst:.3g} (tolerance {args.rtol:g})")
    print(f"  seconds {a_name}: {sum(ra['seconds'].values()):.2f}   {b_name}: {sum(rb['seconds'].values()):.2f}")
    ok &= worst <= args.rtol
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
