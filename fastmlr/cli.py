"""The ``fastmlr`` command line.

Every error that comes from the input (bad arguments, bad data, a backend that is not
available) is printed as one line on stderr with exit status 2, never a traceback.  A
closed pipe on stdout (``fastmlr check pool.csv | head -1``) ends the run quietly with
status 141, as a Unix tool ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import json
import os
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
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # --help into a closed pipe
        return _closed_pipe()
    try:
        from .backend import n_threads, set_backend

        if getattr(args, "backend", None):
            set_backend(args.backend)
        with n_threads(getattr(args, "threads", None)):
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except USER_ERRORS as exc:
        return _report(f"fastmlr: error: {exc}", 2)
    except KeyboardInterrupt:
        return _report("fastmlr: interrupted", 130)


#: Exit status after the reader of stdout went away: that of a process ended by
#: SIGPIPE, as ``yes | head -1`` reports it in a shell.
EXIT_CLOSED_PIPE = 141


def _closed_pipe() -> int:
    """The reader of stdout went away (``fastmlr check pool.csv | head -1``): stop
    quietly, as Unix tools do.  Files already written stay.  stdout is pointed at
    the null device so that the interpreter's final flush does not fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, sys.stdout.fileno())
        finally:
            os.close(fd)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass
    return EXIT_CLOSED_PIPE


def _report(line: str, code: int) -> int:
    try:
        print(line, file=sys.stderr)
    except (BrokenPipeError, ValueError):  # stderr closed too: the status says it
        pass
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
