"""The ``fastmlr`` command line.

Every error that comes from the input (bad arguments, bad data, a backend that is not
available) is printed as one line on stderr with exit status 2, never a traceback.  A
closed pipe on stdout (``fastmlr check pool.csv | head -1``) ends the run quietly with
status 141, as a Unix tool ended by SIGPIPE.

The commands are a static table (:data:`COMMANDS`): each entry names the module that
adds its sub-commands, imported by an explicit statement in :func:`build_parser`.
No command module imports this one; their shared argument types live in
:mod:`fastmlr.cli._args`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ._args import Parser as _Parser
from ._args import int_at_least, positive_float, progress_printer  # noqa: F401 (the command modules' helpers)

__all__ = ["main", "build_parser", "COMMANDS"]

#: Errors that come from the input; OverflowError: a number in a file or an argument
#: beyond what the code can hold (say a 30-digit integer where a 64-bit one is needed).
USER_ERRORS = (ValueError, TypeError, ImportError, MemoryError, OSError, OverflowError)


#: The sub-commands and the module that adds each (``add_commands(subparsers, common)``,
#: where ``common`` is a list of parent parsers holding the shared options; every
#: sub-parser it adds sets ``func(args) -> int``).
COMMANDS = {
    "demo": "fastmlr.cli.demo",
    "reproduce": "fastmlr.cli.reproduce",
    "simulate": "fastmlr.cli.pool",
    "fit": "fastmlr.cli.pool",
    "predict": "fastmlr.cli.pool",
    "check": "fastmlr.cli.pool",
    "report": "fastmlr.cli.report",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``fastmlr`` argument parser with every sub-command of :data:`COMMANDS`."""
    from . import demo, pool, report, reproduce

    parser = _Parser(prog="fastmlr", description="Meta-learning a mixture of linear regressions from many small tasks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--backend", choices=("numba", "cython", "numpy"), help="kernel backend (default: the best available)")
    common.add_argument("--threads", type=int, default=None, help="kernel threads (default: every core)")
    for module in (demo, reproduce, pool, report):
        module.add_commands(sub, [common])
    return parser


def main(argv=None) -> int:
    """Run the ``fastmlr`` command with ``argv`` (default ``sys.argv[1:]``); return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # --help into a closed pipe
        return _closed_pipe()
    try:
        from ..backend import n_threads, use_backend

        backend = getattr(args, "backend", None)  # for this command only: a caller's choice stays as it was
        with use_backend(backend) if backend else contextlib.nullcontext(), n_threads(getattr(args, "threads", None)):
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
