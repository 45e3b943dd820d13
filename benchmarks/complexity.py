"""How each benchmark's time grows with its size parameter, against what its algorithm predicts.

Reads asv's results (``.asv/results``, the newest file of every machine) and, for every
timing benchmark with a size parameter (``tasks``, ``n_heavy``, ``scale``), fits the
exponent b of ``time ~ size^b`` by least squares on the logs, for each setting of the
other parameters, and prints the median exponent beside the predicted one:

* subspace, classification, the kernels over rows, sampling, meta_learn, fit: linear
  in the rows (N d^2, N d k, N d, ...; fit: a fixed number of passes of N d k),
* clustering and the linkage kernels: quadratic in the heavy tasks (n_H^2 k).

A change of complexity then shows as a number.  Sizes too small to leave fixed costs
behind bend the exponent down; run with ``FASTMLR_ASV_LARGE=1`` for the demo scale.

    asv run --python=same
    python benchmarks/complexity.py
"""

from __future__ import annotations

import ast
import glob
import itertools
import json
import os
import sys

import numpy as np

SIZE_PARAMS = ("tasks", "n_heavy", "scale")
#: Predicted exponent by (benchmark name fragment, size parameter); first match wins.
PREDICTED = [("cluster", "n_heavy", 2.0), ("linkage", "n_heavy", 2.0), ("median", "n_heavy", 2.0),
             ("", "tasks", 1.0), ("", "scale", 1.0), ("", "n_heavy", 2.0)]


def _newest(results_dir):
    files = []
    for machine in sorted(glob.glob(os.path.join(results_dir, "*", ""))):
        runs = [f for f in glob.glob(os.path.join(machine, "*.json")) if not f.endswith("machine.json")]
        if runs:
            files.append(max(runs, key=os.path.getmtime))
    return files


def _entries(path, names):
    """(name, param_names, params, values) of every timing benchmark in one results file."""
    with open(path) as fh:
        data = json.load(fh)
    columns = data.get("result_columns", ["result", "params"])
    for name, row in data.get("results", {}).items():
        if not name.split(".")[-1].startswith("time_"):
            continue
        rec = dict(zip(columns, row)) if isinstance(row, list) else row
        values, params = rec.get("result"), rec.get("params") or []
        if values is None or name not in names:
            continue
        yield name, names[name], params, values


def exponents(results_dir=".asv/results"):
    """Rows (benchmark, size parameter, fitted exponent, predicted, settings fitted)."""
    bench = os.path.join(results_dir, "benchmarks.json")
    if not os.path.exists(bench):
        raise SystemExit(f"no asv results in {results_dir}: run `asv run --python=same` first")
    with open(bench) as fh:
        names = {k: v.get("param_names", []) for k, v in json.load(fh).items() if isinstance(v, dict)}
    rows = []
    for path in _newest(results_dir):
        for name, pnames, params, values in _entries(path, names):
            sized = [i for i, p in enumerate(pnames) if p in SIZE_PARAMS]
            if not sized or len(params) != len(pnames):
                continue
            i = sized[0]
            combos = list(itertools.product(*params))
            by_rest: dict = {}
            for combo, v in zip(combos, values):
                if v is None or not np.isfinite(v) or v <= 0:
                    continue
                rest = combo[:i] + combo[i + 1:]
                by_rest.setdefault(rest, []).append((float(ast.literal_eval(str(combo[i]))), float(v)))
            slopes = []
            for pts in by_rest.values():
                if len({s for s, _ in pts}) >= 2:
                    s, t = np.log(np.array(pts)).T
                    slopes.append(np.polyfit(s, t, 1)[0])
            if slopes:
                pred = next(e for frag, p, e in PREDICTED if frag in name.lower() and p == pnames[i])
                rows.append((name, pnames[i], float(np.median(slopes)), pred, len(slopes)))
    return rows


def main(argv=None):
    results_dir = (argv or sys.argv[1:] or [".asv/results"])[0]
    rows = exponents(results_dir)
    if not rows:
        raise SystemExit("no timing benchmark with two or more sizes in the results")
    print(f"{'benchmark':<58} {'size':>8} {'fitted':>7} {'predicted':>9} {'settings':>8}")
    for name, p, b, e, m in sorted(rows):
        flag = "  <-- grows faster than predicted" if b > e + 0.3 else ""
        print(f"{name:<58} {p:>8} {b:>7.2f} {e:>9.1f} {m:>8}{flag}")


if __name__ == "__main__":
    main()
