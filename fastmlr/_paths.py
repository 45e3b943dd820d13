"""Refuse, before any work, a run whose output would overwrite one of its inputs.

Every command that writes files calls :func:`check_paths` with the files it reads and
the files it writes.  Two paths name the same file when both exist and have the same
device and inode (a symbolic link, a hard link, ``./x`` or ``../dir/x`` all count);
otherwise when their resolved real paths are equal.
"""

from __future__ import annotations

import os

__all__ = ["same_file", "check_paths"]


def _identity(path):
    try:
        st = os.stat(path)  # follows symbolic links
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _resolved(path):
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name one file (existing or not)."""
    a, b = os.fspath(a), os.fspath(b)
    ia, ib = _identity(a), _identity(b)
    if ia is not None and ib is not None:
        return ia == ib
    return _resolved(a) == _resolved(b)


def check_paths(inputs=(), outputs=(), *, writable=True) -> None:
    """Refuse outputs that are inputs, outputs that are one file, and unwritable outputs.

    Parameters
    ----------
    inputs : sequence of (label, path) -- the files the run reads, e.g.
        ``("input pool", "pool.csv")``
    outputs : sequence of (label, path) -- the files it writes, e.g. ``("-o", "out.csv")``
    writable : bool -- also check that every output can be written
        (:func:`fastmlr._atomic.check_writable`)

    Raises
    ------
    ValueError
        One line naming both paths: an output is the same file as an input, or two
        outputs are the same file.
    OSError
        An output cannot be written (see :func:`~fastmlr._atomic.check_writable`).
    """
    inputs = [(label, os.fspath(p)) for label, p in inputs]
    outputs = [(label, os.fspath(p)) for label, p in outputs]
    for i, (label, out) in enumerate(outputs):
        for in_label, src in inputs:
            if same_file(out, src):
                how = "" if out == src else " (the same file)"
                raise ValueError(f"{label} {out} is the {in_label} {src}{how}; writing it would destroy the "
                                 f"input: expected another output file")
        for other_label, other in outputs[:i]:
            if same_file(out, other):
                how = "" if out == other else " (the same file)"
                raise ValueError(f"{label} {out} is the {other_label} file {other}{how}; expected a different "
                                 f"file for each output")
    if writable:
        from ._atomic import check_writable

        for label, out in outputs:
            check_writable(out, label)
