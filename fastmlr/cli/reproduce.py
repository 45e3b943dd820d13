"""``fastmlr reproduce NAME --out DIR``: run one of the paper's experiments (or all)."""

from __future__ import annotations

import argparse
import time

from ..experiments import EXPERIMENTS
from ._args import int_at_least, progress_printer

__all__ = ["add_commands"]


_positive_int = int_at_least(1)
_seed = int_at_least(0)


def add_commands(sub, parents):
    """Register ``fastmlr reproduce`` (see :mod:`fastmlr.cli`)."""
    p = sub.add_parser(
        "reproduce", parents=parents, help="run one of the paper's experiments: CSV, figure and table",
        description="Run one of the paper's experiments; write NAME.csv (and NAME.png with "
                    "matplotlib) into DIR and print a short table.",
    )
    p.add_argument("name", choices=EXPERIMENTS + ("all",), metavar="NAME",
                   help=f"one of {', '.join(EXPERIMENTS)}, or all")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--quick", action="store_true", help="the small version (under a minute each)")
    p.add_argument("--trials", type=_positive_int, default=None, metavar="N",
                   help="trials per point (default: the experiment's own)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--no-figure", action="store_true", help="write the CSV files only")
    p.set_defaults(func=_command)


def _command(args) -> int:
    from ..experiments import run_experiment

    names = EXPERIMENTS if args.name == "all" else (args.name,)
    show = progress_printer()
    for i, name in enumerate(names):
        if i:
            print()
        progress = None if show is None else (lambda msg, name=name: show(f"{name}: {msg}"))
        t0 = time.perf_counter()
        result, written = run_experiment(name, args.out, quick=args.quick, trials=args.trials,
                                         seed=args.seed, progress=progress, figure=not args.no_figure)
        print("\n".join(result.summary))
        print("\n".join(written))
        print(f"{name}: {time.perf_counter() - t0:.1f} s{' (quick)' if args.quick else ''}")
    return 0
