"""Write files completely or not at all: into temporary files beside them, then rename.

:func:`atomic_open` writes one file.  Inside an :func:`atomic_files` block, every file
written with :func:`atomic_open` is kept as a temporary until the block ends, and then
all of them are renamed into place together -- or, if the block raises, none is.

Temporary files are named ``.fastmlr-tmp-<pid>-<8 hex digits>-<name of the target>``
(a hash of the name stands in for a name too long to fit) so that they can be
recognised: after a successful write, the temporaries of the same target left by a
run that was killed (its process id no longer alive on this machine, or untouched for
:data:`STALE_SECONDS`) are removed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
import secrets
import time

__all__ = ["atomic_open", "atomic_files", "check_writable", "remove_stale_temporaries", "TEMP_PREFIX",
           "STALE_SECONDS"]

#: The start of every temporary file name.
TEMP_PREFIX = ".fastmlr-tmp-"

#: A temporary file not modified for this long is stale even if its process id is
#: alive (the id may have been reused by another process).
STALE_SECONDS = 24 * 3600

#: Names longer than this (in bytes) are replaced by a hash in temporary file names,
#: so that the temporary name stays within the usual 255-byte limit.
_MAX_TAG = 160

_active = contextvars.ContextVar("fastmlr_atomic_files", default=None)


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


def _tag(path: str) -> str:
    """The part of a temporary file name that names its target ``path``."""
    name = os.path.basename(path)
    if len(name.encode("utf-8", "surrogateescape")) <= _MAX_TAG:
        return name
    return "h" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _temp_pattern(path: str):
    return re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[0-9a-f]{8}-" + re.escape(_tag(path)))


def _directory(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


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
    directory = _directory(path)
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: directory {directory} is not writable")
    fd, probe = _temp_beside(path, f"{what} {path}:")
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _temp_beside(path: str, lead: str):
    """``(fd, name)`` of a new temporary file in the directory of ``path``; the errors
    (``path`` a directory, no such directory, no file can be created there) start
    with ``lead`` and name ``path``, never the temporary file."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{lead} it is a directory; expected a file name")
    directory = _directory(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{lead} directory {directory} does not exist")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        name = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{_tag(path)}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
        except OSError as exc:
            raise _os_error(exc, f"{lead} cannot create a file in {directory} ({_reason(exc, None, path)})") from None
    raise FileExistsError(f"{lead} cannot create a temporary file in {directory}")  # pragma: no cover


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows: os.kill(pid, 0) is not a probe
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # someone else's process, or cannot tell: keep the file
    return True


def remove_stale_temporaries(path, *, now=None) -> list:
    """Remove the temporary files of target ``path`` left behind by killed runs.

    A temporary of ``path`` (see the module's docstring for its name) is stale when
    the process id in its name is not a live process on this machine, or when it has
    not been modified for :data:`STALE_SECONDS`.  Errors are ignored.

    Returns
    -------
    list of str -- the files removed
    """
    path = os.fspath(path)
    directory = _directory(path)
    pattern = _temp_pattern(path)
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        full = os.path.join(directory, name)
        try:
            old = now - os.lstat(full).st_mtime > STALE_SECONDS
            if old or not _pid_alive(int(m.group(1))):
                os.unlink(full)
                removed.append(full)
        except OSError:
            continue
    return removed


def _fsync_directory(directory: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Files:
    """The files written in one :func:`atomic_files` block: ``(temporary, target)``."""

    def __init__(self):
        self.entries = []
        self.keys = {}

    def add(self, tmp: str, path: str) -> None:
        key = os.path.join(os.path.realpath(_directory(path)), os.path.basename(path))
        if key in self.keys:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ValueError(f"{path} is written twice in one run (also as {self.keys[key]}); "
                             f"expected a different file for each output")
        self.keys[key] = path
        self.entries.append((tmp, path))

    def abort(self) -> None:
        for tmp, _ in self.entries:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.entries = []

    def commit(self) -> None:
        """Rename every temporary onto its target; on failure, put back what was there."""
        entries, self.entries = self.entries, []
        several = len(entries) > 1
        done = []  # (target, backup or None, existed before)
        backups = []
        tmp = path = None
        try:
            for tmp, path in entries:
                existed = os.path.lexists(path)
                backup = None
                if several and existed and (os.path.islink(path) or not os.path.isdir(path)):
                    backup = self._link_backup(path)
                    if backup is not None:
                        backups.append(backup)
                os.replace(tmp, path)
                done.append((path, backup, existed))
        except BaseException as exc:
            for target, backup, existed in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, target)
                    elif not existed:
                        os.unlink(target)
            for name in [t for t, _ in entries] + backups:
                with contextlib.suppress(OSError):
                    os.unlink(name)
            if isinstance(exc, OSError) and not getattr(exc, "_fastmlr_target", False):
                raise _os_error(exc, f"cannot write {path}: {_reason(exc, tmp, path)}") from None
            raise
        for backup in backups:
            with contextlib.suppress(OSError):
                os.unlink(backup)
        for directory in sorted({_directory(p) for _, p in entries}):
            _fsync_directory(directory)
        for _, target in entries:
            remove_stale_temporaries(target)

    @staticmethod
    def _link_backup(path: str):
        """A second name for the file at ``path`` (a hard link, or a link to the same
        symbolic link), or None where the file system has no hard links."""
        for _ in range(100):
            name = os.path.join(_directory(path), f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{_tag(path)}")
            try:
                os.link(path, name, follow_symlinks=False)
                return name
            except FileExistsError:
                continue
            except (OSError, NotImplementedError):
                return None
        return None  # pragma: no cover


@contextlib.contextmanager
def atomic_files():
    """Publish every file written with :func:`atomic_open` in this block together.

    Each file is written to a temporary file beside its target.  When the block ends
    without an exception, the temporaries are renamed onto their targets one after
    the other; if the block raises, every temporary is removed and no target changes.
    If a rename fails, the targets already replaced get their previous files back
    (kept as hard links until every rename has succeeded) or, if they did not exist,
    are removed, and the error is raised.  What stays possible: a process killed
    between the first and the last rename (a few system calls) leaves some targets
    new and others old; and on a file system without hard links a failed rename
    cannot restore the targets replaced before it.

    A block inside another one joins it.  Per thread (a context variable): files
    written by other threads are not part of the block.

    Raises
    ------
    ValueError
        Two files written in the block are the same target.
    OSError
        A rename failed; the message names the target.
    """
    if _active.get() is not None:
        yield _active.get()
        return
    files = _Files()
    token = _active.set(files)
    try:
        yield files
    except BaseException:
        _active.reset(token)
        files.abort()
        raise
    _active.reset(token)
    files.commit()


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file in the directory of ``path``; on success rename it to ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    Inside :func:`atomic_files`, the rename waits for the end of that block.  An
    ``OSError`` about the file being written (no space left, permission denied, a
    directory in the way) names ``path``, never the temporary file.  A ``path`` that
    is a symbolic link is replaced by the new file; the file it pointed to is not
    changed.

    Parameters
    ----------
    path : str or os.PathLike -- the file to write
    mode : str -- ``"wb"``, or ``"w"`` for text (UTF-8, line ends written as given, as the
        ``csv`` module needs)
    """
    path = os.fspath(path)
    files = _active.get()
    if files is None:
        with atomic_files(), atomic_open(path, mode) as fh:
            yield fh
        return
    fd, tmp = _temp_beside(path, f"cannot write {path}:")
    try:
        # the temporary is private (0600); give it the mode a plain open() would
        try:
            perms = os.stat(path).st_mode & 0o7777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            perms = 0o666 & ~umask
        os.chmod(tmp, perms)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # an error about another file (read inside the block) or one already naming
        # its own output passes through unchanged
        if (isinstance(exc, OSError) and not getattr(exc, "_fastmlr_target", False)
                and exc.filename in (None, tmp, path) and exc.filename2 in (None, tmp, path)):
            raise _os_error(exc, f"cannot write {path}: {_reason(exc, tmp, path)}") from None
        raise
    files.add(tmp, path)
