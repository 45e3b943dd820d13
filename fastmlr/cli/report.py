"""``fastmlr report MODEL POOL -o report.html [--png DIR]``: a fitted model, looked at.

One self-contained HTML file (:func:`fastmlr.report.write_report`; needs matplotlib,
the optional extra ``plot``) for a model and the pool it was fitted to: the
criterion over k when k was chosen, weights and noise variances with 95% intervals,
the posterior certainty of the tasks against their size, the EM log-likelihood, and,
for a pool written by ``fastmlr simulate`` as ``.npz`` (it holds the true
parameters), estimated against true coefficients.  ``--png DIR`` also writes each
figure as a PNG file.  Query rows of the pool (missing target) are skipped.
"""

from __future__ import annotations

import os

__all__ = ["add_commands"]


def add_commands(sub, parents):
    """Register ``report`` (see :mod:`fastmlr.cli`)."""
    from .pool import _io_options

    p = sub.add_parser("report", parents=parents, help="an HTML report of a fitted model (figures embedded)",
                       description="Write one self-contained HTML report of MODEL on the pool it was fitted to: "
                                   "choice of k, weights and noise with intervals, posterior certainty by task "
                                   "size, EM log-likelihood, and estimated against true coefficients for a "
                                   "simulated .npz pool.  Needs matplotlib.")
    p.add_argument("model", help="model file from `fastmlr fit`")
    p.add_argument("file", help="the pool the model was fitted to: .npz or .csv")
    p.add_argument("-o", "--output", required=True, help="output .html")
    p.add_argument("--png", default=None, metavar="DIR", help="also write every figure as DIR/NAME.png")
    _io_options(p, "CSV feature columns, comma-separated (default: every other column); a model fitted on "
                   "a .csv takes its features from them by name")
    p.set_defaults(func=_report)


def _truth(path):
    """The true parameters a ``fastmlr simulate`` .npz pool holds, or None."""
    if not path.lower().endswith(".npz"):
        return None
    from .._npz import read_members

    z = read_members(path, ("true_W", "true_s2", "true_p"))
    if "true_W" not in z:
        return None
    return {"W": z["true_W"], "s2": z.get("true_s2"), "p": z.get("true_p")}


def _report(args) -> int:
    from ..model import load_model
    from ..report import _matplotlib, write_report
    from .pool import _check_out, _check_paths, _match_features, _read

    _check_out(args.output, (".html", ".htm"))
    _check_paths([("input model", args.model), ("input pool", args.file)], [("-o", args.output)])
    if args.png is not None and os.path.exists(args.png) and not os.path.isdir(args.png):
        raise ValueError(f"--png {args.png} is a file; expected a directory (created if missing)")
    _matplotlib()  # before any work: one line naming the missing extra
    model = load_model(args.model)
    pool = _read(args, allow_query=True)
    cols, _ = _match_features(model, pool, args)
    tasks = (pool.X[:, cols], pool.y, pool.offsets)
    truth = _truth(args.file)
    if truth is not None and truth["W"].shape[1] != model.W.shape[1]:
        truth = None
    names = write_report(args.output, model, tasks, png_dir=args.png, truth=truth)
    print(f"wrote {args.output}: {len(names)} figures ({', '.join(names)})"
          + (f"; PNG files in {args.png}" if args.png else ""))
    return 0
