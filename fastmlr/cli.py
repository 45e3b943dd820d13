"""The ``fastmlr`` command line.

Every error that comes from the input (bad arguments, bad data, a backend that is not
available) is printed as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]

USER_ERRORS = (ValueError, TypeError, ImportError, MemoryError, OSError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2, like every other input error
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(text):
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


def _add_backend(p):
    p.add_argument("--backend", choices=("numba", "cython", "numpy"), help="kernel backend (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: every core)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastmlr", description="Meta-learning a mixture of linear regressions from many small tasks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="the paper's Figure 2 setting end to end, with oracles")
    demo.add_argument("--k", type=int, default=32, help="components (default 32)")
    demo.add_argument("--d", type=int, default=256, help="dimension (default 256)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--scale", type=_positive_float, default=1.0, help="multiply the number of tasks (default 1)")
    demo.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    _add_backend(demo)
    return parser


def _run_demo(args) -> int:
    from .demo import format_demo, run_demo

    progress = None
    if sys.stderr.isatty() and not args.json:
        progress = lambda msg: print(f"  {msg} ...", file=sys.stderr, flush=True)  # noqa: E731
    res = run_demo(k=args.k, d=args.d, seed=args.seed, scale=args.scale, dtype=args.dtype, progress=progress)
    res["setting"]["backend"] = _backend_name()
    print(json.dumps(res, indent=2) if args.json else format_demo(res))
    return 0


def _backend_name():
    from .backend import get_backend

    return get_backend()


COMMANDS = {"demo": _run_demo}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .backend import n_threads, set_backend

        if getattr(args, "backend", None):
            set_backend(args.backend)
        with n_threads(getattr(args, "threads", None)):
            return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        print(f"fastmlr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastmlr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
