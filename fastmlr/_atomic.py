"""Write a file completely or not at all: into a temporary file beside it, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_open", "check_writable"]


def _os_error(exc, message):
    """An OSError of the same kind as ``exc`` (PermissionError, ...) with ``message``."""
    cls = type(exc) if type(exc).__module__ == "builtins" else OSError
    new = cls(message)
    new.errno = exc.errno
    new._fastmlr_target = True  # names the user's path already; an outer atomic_open keeps it
    return new


def _reason(exc, tmp, path):
    """Why ``exc`` happened, without the temporary file's name."""
    if exc.strerror:
        return exc.strerror
    return str(exc).replace(tmp, path) if tmp else str(exc)


def check_writable(path, what="cannot write"):
    """Refuse, before any work, an output ``path`` that cannot be written.

    ``path`` must not be a directory, and its directory must exist and accept a new
    file (checked with :func:`os.access` and by creating and removing an empty
    temporary file there, which also catches file systems that refuse every write).

    Parameters
    ----------
    path : str or os.PathLike -- the output file
    what : str -- put before ``path`` in the messages, e.g. ``"-o"``

    Raises
    ------
    IsADirectoryError, FileNotFoundError, PermissionError, OSError
        One line naming ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: directory {directory} is not writable")
    fd, probe = _temp_beside(path, f"{what} {path}:")
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _temp_beside(path: str, lead: str, suffix: str = ""):
    """``(fd, name)`` of a new temporary file in the directory of ``path``; the errors
    (``path`` a directory, no such directory, no file can be created there) start
    with ``lead`` and name ``path``, never the temporary file."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{lead} it is a directory; expected a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{lead} directory {directory} does not exist")
    try:
        return tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    except OSError as exc:
        raise _os_error(exc, f"{lead} cannot create a file in {directory} ({_reason(exc, None, path)})") from None


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file in the directory of ``path``; on success rename it to ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    An ``OSError`` about the file being written (no space left, permission denied, a
    directory in the way) names ``path``, never the temporary file.

    Parameters
    ----------
    path : str or os.PathLike -- the file to write
    mode : str -- ``"wb"``, or ``"w"`` for text (UTF-8, line ends written as given, as the
        ``csv`` module needs)
    """
    path = os.fspath(path)
    fd, tmp = _temp_beside(path, f"cannot write {path}:", suffix=os.path.basename(path))
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
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # an error about another file (read inside the block) or one already naming
        # its own output passes through unchanged
        if (isinstance(exc, OSError) and not getattr(exc, "_fastmlr_target", False)
                and exc.filename in (None, tmp, path) and exc.filename2 in (None, tmp, path)):
            raise _os_error(exc, f"cannot write {path}: {_reason(exc, tmp, path)}") from None
        raise
