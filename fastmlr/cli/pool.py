"""``fastmlr simulate | fit | predict | check``: one pool of tasks from files to a model.

* ``fastmlr simulate --k 8 --d 32 --tasks 3000 -o pool.npz`` writes a seeded pool
  (``.npz``, ``.csv`` or ``.parquet``; see :mod:`fastmlr.io`), with ``--queries Q`` extra rows
  per task whose target is left missing.
* ``fastmlr fit pool.csv --k 8 -o model.npz`` fits (``--k auto`` chooses k;
  ``--skip-query-rows`` skips rows whose target is missing, otherwise an error).  The
  model keeps the feature names (``diagnostics["features"]``; ``"features_named"`` is
  true when they are the column names of a ``.csv`` or ``.parquet``).
* ``fastmlr predict model.npz pool.csv -o out.npz`` -- for every task: the posterior
  over components given its rows with a target, the MAP and Bayes regression vectors,
  and the predictions for its **query rows** (rows whose target is missing).  A model
  fitted on a ``.csv`` or ``.parquet`` takes the columns of a ``.csv`` or ``.parquet``
  by name, in any order (a missing one is an error); otherwise columns go by
  position.  ``.npz`` output holds every array; ``.csv`` and ``.parquet`` output is
  one row per task, and the query predictions go to a second file of the same kind
  (``--queries-out``, default ``OUT`` with ``.queries.csv`` or ``.queries.parquet``),
  written on every run -- no rows when there are no query rows.  With
  ``--interval 0.9`` the query predictions get columns ``lo`` and ``hi``: the central
  90% interval of the posterior predictive (:mod:`fastmlr.predictive`).
* ``fastmlr check pool.npz --k 8`` -- which roles the pool can fill and the paper's
  sufficient conditions (:func:`fastmlr.feasibility`).

Every bad input is one line on stderr and exit status 2.  Before any work, an output
that is one of the inputs (or another output) is refused (:mod:`fastmlr._paths`).
Outputs are written to temporary files and renamed, the files of one run together
(:func:`fastmlr._atomic.atomic_files`), so nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from ..synthetic import SIZE_DISTRIBUTIONS, simulate_pool
from ._args import int_at_least, positive_float, progress_printer

__all__ = ["add_commands"]


def _k_arg(text):
    if text.lower() in ("auto", "none"):
        return None
    try:
        return _pos_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


_pos_int = int_at_least(1)
_nonneg_int = int_at_least(0)


def _level(text):
    """argparse type: a coverage level strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1 (say 0.9), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a level strictly between 0 and 1 (say 0.9), got {text}")
    return v


def _io_options(p, features_help="CSV feature columns, comma-separated (default: every other column)"):
    p.add_argument("--task-col", default="task", help="CSV task-id column (default 'task')")
    p.add_argument("--target-col", default="y", help="CSV target column (default 'y')")
    p.add_argument("--features", default=None, help=features_help)


def _read(args, allow_query=False):
    from ..io import read_pool

    feats = None
    if args.features is not None:
        feats = [f.strip() for f in args.features.split(",") if f.strip()]
        if not feats:
            raise ValueError("--features is empty; expected comma-separated column names")
    return read_pool(args.file, task_col=args.task_col, target_col=args.target_col, features=feats,
                     allow_query=allow_query)


def _check_out(path, exts, what="-o"):
    """Refuse an output path with the wrong extension: one error naming ``what`` and ``path``."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in exts:
        raise ValueError(f"{what} {path}: expected a file ending in {' or '.join(exts)}")


def _check_paths(inputs, outputs):
    """Before any work: no output is an input or another output, and every output can
    be written (a directory, a missing or unwritable directory: one error naming it)."""
    from .._paths import check_paths

    check_paths(inputs, outputs)


#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape_formulas(cells):
    """``cells`` (str array) with ``'`` put before those starting like a formula."""
    cells = np.asarray(cells, dtype=str)
    risky = np.zeros(cells.shape, dtype=bool)
    for c in FORMULA_STARTS:
        risky |= np.char.startswith(cells, c)
    return np.where(risky, np.char.add("'", cells), cells)


def add_commands(sub, parents):
    """Register ``simulate``, ``fit``, ``predict`` and ``check`` (see :mod:`fastmlr.cli`)."""

    p = sub.add_parser("simulate", parents=parents, help="write a seeded pool of tasks (.npz, .csv or .parquet)",
                       description="Sample a pool from the paper's model: most tasks tiny, sizes in [--min-size, --max-size].")
    p.add_argument("--k", type=_pos_int, default=8, help="components (default 8)")
    p.add_argument("--d", type=_pos_int, default=32, help="dimension (default 32)")
    p.add_argument("--tasks", type=_pos_int, default=3000, help="number of tasks (default 3000)")
    p.add_argument("--min-size", type=_pos_int, default=4, help="smallest task (default 4)")
    p.add_argument("--max-size", type=_pos_int, default=32, help="largest task (default 32)")
    p.add_argument("--sizes", choices=SIZE_DISTRIBUTIONS, default="loguniform", help="size distribution (default loguniform)")
    p.add_argument("--noise", type=positive_float, default=1.0,
                   help="noise standard deviation: the variance s2 is its square (default 1)")
    p.add_argument("--kind", choices=("orthonormal", "gaussian"), default="orthonormal")
    p.add_argument("--queries", type=_nonneg_int, default=0, help="extra rows per task with the target missing (default 0)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("-o", "--output", required=True, help="output .npz, .csv or .parquet")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("fit", parents=parents, help="fit a mixture to a pool of tasks",
                       description="Fit a mixture of k linear regressions to one pool (fastmlr.fit) and save the model.")
    p.add_argument("file", help="pool: .npz (X, y, task), .csv or .parquet")
    p.add_argument("--k", type=_k_arg, required=True, help="components, or 'auto' to choose k")
    p.add_argument("-o", "--output", required=True, help="model file (.npz)")
    p.add_argument("--whiten", choices=("auto", "yes", "no"), default="auto", help="whiten x for the start (default auto)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the k-means++ starts (default 0)")
    p.add_argument("--skip-query-rows", action="store_true",
                   help="skip rows whose target is missing (default: they are an error)")
    p.add_argument("--json", action="store_true", help="print the diagnostics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _io_options(p)
    p.set_defaults(func=_fit)

    p = sub.add_parser("predict", parents=parents, help="posterior, regression vectors and predictions per task",
                       description="For every task of FILE: the posterior over components given its rows with a "
                                   "target, MAP and Bayes regression vectors, and predictions for its query rows "
                                   "(rows whose target is missing).")
    p.add_argument("model", help="model file from `fastmlr fit`")
    p.add_argument("file", help="tasks: .npz (X, y, task; NaN y marks a query row), .csv (empty y marks one) "
                                "or .parquet (null or NaN y)")
    p.add_argument("-o", "--output", required=True,
                   help="output .npz (every array), .csv or .parquet (one row per task)")
    p.add_argument("--queries-out", default=None,
                   help="with a .csv or .parquet output only: file for the query predictions, of the same kind "
                        "(default OUTPUT with .queries.csv or .queries.parquet; not the output itself). Written "
                        "on every run, with its header only when FILE has no query rows")
    p.add_argument("--csv-escape-formulas", action="store_true",
                   help="with a .csv output: put ' before task ids starting with = + - @, tab or carriage return, "
                        "so that a spreadsheet does not read them as formulas (default: ids as read)")
    p.add_argument("--interval", type=_level, default=None, metavar="LEVEL",
                   help="central predictive interval of every query row at this level, e.g. 0.9: columns lo and hi "
                        "(from the posterior predictive mixture of normals; fastmlr.predictive)")
    _io_options(p, "CSV feature columns, comma-separated (default: every other column); a model fitted on "
                   "a .csv then takes its features from them by name, in any order")
    p.set_defaults(func=_predict)

    p = sub.add_parser("check", parents=parents, help="which roles a pool can fill; the paper's conditions",
                       description="From the task sizes of FILE: which roles the pool can fill and whether it meets "
                                   "the paper's sufficient conditions up to constants.")
    p.add_argument("file", help="pool: .npz, .csv or .parquet")
    p.add_argument("--k", type=_pos_int, default=None, help="components (default: the largest k the pool supports)")
    p.add_argument("--json", action="store_true")
    _io_options(p)
    p.set_defaults(func=_check)


def _simulate(args) -> int:
    from ..io import write_pool

    _check_out(args.output, (".npz", ".csv", ".parquet"))
    _check_paths((), [("-o", args.output)])
    if args.max_size < args.min_size:
        raise ValueError(f"--max-size {args.max_size} is below --min-size {args.min_size}")
    sim = simulate_pool(args.k, args.d, args.tasks, low=args.min_size, high=args.max_size,
                        distribution=args.sizes, s2=args.noise**2, kind=args.kind, queries=args.queries,
                        seed=args.seed)
    if args.output.lower().endswith(".npz"):
        from .._atomic import atomic_open

        with atomic_open(args.output, "wb") as fh:
            np.savez(fh, X=sim["X"], y=sim["y"], task=sim["task"], true_W=sim["W"], true_s2=sim["s2"],
                     true_p=sim["p"], true_z=sim["z"])
    else:
        write_pool(args.output, sim["X"], sim["y"], sim["task"])
    print(f"wrote {args.output}: {args.tasks} tasks, {int(sim['sizes'].sum())} rows with a target"
          f"{f', {args.queries * args.tasks} query rows' if args.queries else ''}, k={args.k}, d={args.d}")
    return 0


def _fit(args) -> int:
    from ..fit import fit
    from ..model import save_model

    _check_out(args.output, (".npz",))
    _check_paths([("input pool", args.file)], [("-o", args.output)])
    pool = _read(args, allow_query=args.skip_query_rows)
    whiten = {"auto": "auto", "yes": True, "no": False}[args.whiten]
    t0 = time.perf_counter()
    model = fit((pool.X, pool.y, pool.offsets), args.k, whiten=whiten, seed=args.seed,
                progress=progress_printer(args.quiet or args.json))
    elapsed = time.perf_counter() - t0
    dg = model.diagnostics
    dg["features"] = pool.features
    dg["features_named"] = pool.named  # column names of a .csv or .parquet, or x0, x1, ... of a .npz
    save_model(args.output, model)
    if args.json:
        print(json.dumps(dg, indent=2))
    else:
        print(f"fit {args.file}: {dg['n_tasks']} tasks, {dg['n_rows']} rows, d={dg['d']}, k={dg['k']}"
              f"{' (chosen)' if args.k is None else ''}; whitened: {'yes' if dg['whitening']['applied'] else 'no'}")
        print(f"  log-likelihood {dg['loglik']:.6g} after {dg['em_iterations']} EM iterations"
              f" ({'converged' if dg['em_converged'] else 'iteration cap reached'}); {elapsed:.3f} s")
        print(f"  weights p: {np.array2string(model.p, precision=3)}")
        print(f"  noise s2:  {np.array2string(model.s2, precision=3)}")
        print(f"wrote {args.output}")
    return 0


def _model_features(model, d):
    """The feature names stored with ``model`` and whether they are column names.

    Returns
    -------
    names : list of str or None -- None if the model holds no usable names (fitted from
        arrays, or an older file)
    named : bool or None -- True if the names are the columns of a ``.csv`` header,
        False if they only number the columns of a ``.npz``, None if not recorded
    """
    dg = model.diagnostics  # a dict: load_model refuses anything else
    names = dg.get("features")
    if (not isinstance(names, list) or len(names) != d or not all(isinstance(n, str) for n in names)
            or len(set(names)) != d):
        return None, None
    named = dg.get("features_named")
    return names, named if isinstance(named, bool) else None


def _match_features(model, pool, args):
    """Column indices of ``pool`` in the model's feature order, and their labels.

    When the model's features are column names and ``pool`` comes from a ``.csv``, the
    columns are taken by name (any order, other columns ignored); otherwise by position,
    and the counts must agree.
    """
    d = model.W.shape[1]
    names, named = _model_features(model, d)
    by_name = names is not None and pool.named and (
        named is True or (named is None and all(n in pool.features for n in names)))
    if by_name:
        index = {f: j for j, f in enumerate(pool.features)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(f"{args.file} has no column(s) {', '.join(missing)} of the {d} features the model "
                             f"{args.model} was fitted on ({', '.join(names)}); columns read as features: "
                             f"{', '.join(pool.features)}")
        return np.array([index[n] for n in names], dtype=np.int64), list(names)
    if pool.X.shape[1] != d:
        raise ValueError(f"{args.file} has {pool.X.shape[1]} features but the model has d = {d}")
    return np.arange(d, dtype=np.int64), list(pool.features)


def _predict(args) -> int:
    import csv

    from .._atomic import atomic_files, atomic_open
    from ..model import load_model
    from ..predict import posterior

    ext = os.path.splitext(args.output)[1].lower()
    _check_out(args.output, (".npz", ".csv", ".parquet"))
    outputs = [("-o", args.output)]
    qpath = None
    if ext in (".csv", ".parquet"):
        qpath = args.queries_out or os.path.splitext(args.output)[0] + ".queries" + ext
        qlabel = "--queries-out" if args.queries_out else "query file"
        _check_out(qpath, (ext,), qlabel)
        outputs.append((qlabel, qpath))
    elif args.queries_out is not None:
        raise ValueError(f"--queries-out {args.queries_out}: a .npz output holds the query predictions itself; "
                         f"--queries-out goes with a .csv output (or a .parquet one)")
    if args.csv_escape_formulas and ext != ".csv":
        raise ValueError(f"--csv-escape-formulas goes with a .csv output; -o {args.output} is a {ext} file")
    _check_paths([("input model", args.model), ("input pool", args.file)], outputs)
    model = load_model(args.model)
    pool = _read(args, allow_query=True)
    cols, labels = _match_features(model, pool, args)
    X, qX, qt = pool.X[:, cols], pool.query_X[:, cols], pool.query_task
    post = posterior((X, pool.y, pool.offsets), model.W, model.s2, model.p)  # (n, k)
    comp = np.argmax(post, axis=1)
    beta_bayes = post @ model.W
    beta_map = model.W[comp]
    yhat_bayes = np.einsum("qd,qd->q", qX, beta_bayes[qt]) if qt.size else np.zeros(0)
    yhat_map = np.einsum("qd,qd->q", qX, beta_map[qt]) if qt.size else np.zeros(0)
    bounds = {}
    if args.interval is not None:  # lo, hi of the posterior predictive (its mean is yhat_bayes)
        from ..predictive import predictive

        lo, hi = (predictive((X, pool.y, pool.offsets), qX, qt, model).interval(args.interval) if qt.size
                  else (np.zeros(0), np.zeros(0)))
        bounds = {"lo": lo, "hi": hi}
    if ext == ".npz":
        with atomic_open(args.output, "wb") as fh:
            np.savez(fh, tasks=pool.tasks, posterior=post, map_component=comp, beta_bayes=beta_bayes,
                     beta_map=beta_map, query_rows=pool.query_rows, query_tasks=pool.tasks[qt],
                     yhat_bayes=yhat_bayes, yhat_map=yhat_map, **bounds)
        print(f"wrote {args.output}: {pool.tasks.size} tasks, {qt.size} query predictions")
        return 0
    if ext == ".parquet":
        _write_parquet_predictions(args.output, qpath, pool, comp, post, beta_bayes, labels, qt, yhat_bayes,
                                   yhat_map, bounds)
        print(f"wrote {args.output}: {pool.tasks.size} tasks; {qpath}: {qt.size} query predictions")
        return 0
    k = model.W.shape[0]
    head = ["task", "map_component"] + [f"post{l}" for l in range(k)] + [f"bayes_{f}" for f in labels]
    ids = pool.tasks.astype(str)
    if args.csv_escape_formulas:
        ids = _escape_formulas(ids)
    body = np.column_stack([ids, comp.astype(str), np.char.mod("%.10g", post), np.char.mod("%.10g", beta_bayes)])
    qbody = np.column_stack([pool.query_rows.astype(str), ids[qt], np.char.mod("%.10g", yhat_bayes),
                             np.char.mod("%.10g", yhat_map)] + [np.char.mod("%.10g", v) for v in bounds.values()])
    # both files appear together or neither does; the query file is written even
    # without query rows (header only), so it never lags behind -o
    with atomic_files():
        with atomic_open(args.output, "w") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(head)
            writer.writerows(body.tolist())
        with atomic_open(qpath, "w") as qh:
            qwriter = csv.writer(qh, lineterminator="\n")
            qwriter.writerow(["row", "task", "yhat_bayes", "yhat_map"] + list(bounds))
            qwriter.writerows(qbody.tolist())
    print(f"wrote {args.output}: {pool.tasks.size} tasks; {qpath}: "
          + (f"{qt.size} query predictions" if qt.size else "no query rows (empty target), header only"))
    return 0


def _write_parquet_predictions(path, qpath, pool, comp, post, beta_bayes, labels, qt, yhat_bayes, yhat_map,
                               bounds):
    """The per-task table (task, map_component, post0.., bayes_<feature>..) and the
    query table (row, task, yhat_bayes, yhat_map[, lo, hi]) as two ``.parquet`` files,
    published together; task ids keep their type."""
    from .._atomic import atomic_files, atomic_open
    from ..io import _pyarrow

    pa, pq = _pyarrow(path)
    cols = {"task": pool.tasks, "map_component": comp.astype(np.int64)}
    cols.update({f"post{l}": post[:, l] for l in range(post.shape[1])})
    cols.update({f"bayes_{f}": beta_bayes[:, j] for j, f in enumerate(labels)})
    qcols = {"row": pool.query_rows, "task": pool.tasks[qt], "yhat_bayes": yhat_bayes, "yhat_map": yhat_map}
    qcols.update(bounds)
    with atomic_files():
        with atomic_open(path, "wb") as fh:
            pq.write_table(pa.table(cols), fh)
        with atomic_open(qpath, "wb") as qh:
            pq.write_table(pa.table(qcols), qh)


def _check(args) -> int:
    from ..feasibility import feasibility, format_feasibility

    _check_paths([("input pool", args.file)], ())  # writes no file
    pool = _read(args, allow_query=True)
    sizes = np.diff(pool.offsets)
    d = pool.X.shape[1] if pool.X.size else pool.query_X.shape[1]
    k = args.k
    if k is None:
        k = max(1, feasibility(sizes, 1, d).largest_k)
    f = feasibility(sizes, k, d)
    if args.json:
        print(json.dumps(f._asdict(), indent=2))
    else:
        print(format_feasibility(f))
    return 0
