"""``fastmlr demo``: the paper's Figure 2 setting end to end (:mod:`fastmlr.demo`)."""

from __future__ import annotations

from ._args import int_at_least, positive_float, progress_printer

__all__ = ["add_commands"]


def add_commands(sub, parents):
    """Register ``fastmlr demo`` (see :mod:`fastmlr.cli`)."""
    p = sub.add_parser("demo", parents=parents, help="the paper's Figure 2 setting end to end, with oracles",
                       description="Sample the paper's Figure 2 setting, run Algorithm 1, and compare with oracles.")
    p.add_argument("--k", type=int_at_least(1), default=32, help="components (default 32)")
    p.add_argument("--d", type=int_at_least(1), default=256, help="dimension (default 256)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default 0)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="multiply the number of tasks (default 1)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_command)


def _command(args) -> int:
    import json

    from ..backend import get_backend
    from ..demo import format_demo, run_demo

    res = run_demo(k=args.k, d=args.d, seed=args.seed, scale=args.scale, dtype=args.dtype,
                   progress=progress_printer(args.json))
    res["setting"]["backend"] = get_backend()
    print(json.dumps(res, indent=2) if args.json else format_demo(res))
    return 0
