"""The ``fastmlr`` command line.

Every error that comes from the input (bad arguments, bad data, a backend that is not
available) is printed as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]

#: Errors that come from the input; OverflowError: a number in a file or an argument
#: beyond what the code can hold (say a 30-digit integer where a 64-bit one is needed).
USER_ERRORS = (ValueError, TypeError, ImportError, MemoryError, OSError, OverflowError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2, like every other input error
        self.exit(2, f"{self.prog}: error: {message}\n")


#: Modules that add sub-commands: each defines ``add_commands(subparsers, common)``,
#: where ``common`` is a list of parent parsers holding the shared options, and sets
#: ``func(args) -> int`` on every sub-parser it adds.
COMMAND_MODULES = ("fastmlr.demo", "fastmlr.reproduce_cli", "fastmlr.pool_cli")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="fastmlr", description="Meta-learning a mixture of linear regressions from many small tasks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--backend", choices=("numba", "cython", "numpy"), help="kernel backend (default: the best available)")
    common.add_argument("--threads", type=int, default=None, help="kernel threads (default: every core)")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub, [common])
    return parser


def int_at_least(low: int):
    """argparse type: an integer >= low ("a positive integer" for 1, "a non-negative" for 0)."""
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


def positive_float(text):
    """argparse type: a float > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


def progress_printer(quiet: bool = False):
    """A callable that prints progress lines on stderr when it is a terminal, else None."""
    if quiet or not sys.stderr.isatty():
        return None
    return lambda msg: print(f"  {msg} ...", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .backend import n_threads, set_backend

        if getattr(args, "backend", None):
            set_backend(args.backend)
        with n_threads(getattr(args, "threads", None)):
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"fastmlr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastmlr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
