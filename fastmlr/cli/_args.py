"""Argument types and output helpers shared by the ``fastmlr`` sub-commands."""

from __future__ import annotations

import argparse
import sys

__all__ = ["Parser", "int_at_least", "positive_float", "progress_printer"]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line with exit status 2."""

    def error(self, message):  # one line, status 2, like every other input error
        self.exit(2, f"{self.prog}: error: {message}\n")


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
