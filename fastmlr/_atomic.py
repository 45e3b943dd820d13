"""Write a file completely or not at all: into a temporary file beside it, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_open"]


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file in the directory of ``path``; on success rename it to ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        try:
            perms = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            perms = 0o666 & ~umask
        os.chmod(tmp, perms)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
