"""Reading the arrays a file format defines from an ``.npz`` archive, and nothing else.

``np.load`` of an ``.npz`` trusts every member: ``z[key]`` allocates whatever shape
the member's ``.npy`` header declares before reading a byte of data, so a small file
whose header claims 10^12 x 3 floats ends in a ``MemoryError``, and a model file that
carries a large unused member is read whole by code that touches every key.

:func:`read_members` opens the archive with :mod:`zipfile`, looks only at the members
asked for, and reads each one's header first: the data it declares (the product of
the shape times the item size) must be exactly what the member holds (its
uncompressed size in the archive), what its compressed bytes can hold, and at most
``_config.MAX_WORK_BYTES``.  Only then is the array read.  A member that fails is
reported as :class:`MemberError` (a ``ValueError``) saying what it declares and
holds; the caller adds the file's name.
"""

from __future__ import annotations

import math
import zipfile
import zlib

import numpy as np

from . import _config

__all__ = ["MemberError", "ZIP_ERRORS", "read_members"]

try:  # lzma is optional in some Python builds; zipfile then refuses such members itself
    import lzma

    _LZMA_ERRORS: tuple = (lzma.LZMAError,)
except ImportError:  # pragma: no cover
    _LZMA_ERRORS = ()

#: What reading a damaged archive can raise (a truncated or overwritten file, an
#: unsupported or encrypted member, a corrupt compressed stream).  NotImplementedError:
#: a zip feature zipfile does not read (e.g. compressed patched data).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
              ValueError, zlib.error) + _LZMA_ERRORS

#: deflate turns at most 258 bytes into 2 bits: a member cannot hold more than 1032
#: times its compressed size (plus a little for the stream's framing)
_DEFLATE_RATIO = 1032


class MemberError(ValueError):
    """A member of the archive is not what it declares (``over_limit`` False: the file
    is damaged) or declares more than the limit (``over_limit`` True)."""

    def __init__(self, message, over_limit=False):
        super().__init__(message)
        self.over_limit = over_limit


def _size(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _header(fh, key):
    """Shape, Fortran order and dtype of the ``.npy`` stream ``fh``; MemberError if it is not one."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version in ((2, 0), (3, 0)):
            return np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise MemberError(f"{key} is not a .npy array ({exc})".replace("\n", " ")) from None
    raise MemberError(f"{key} is a .npy array of format version {version}; expected 1.0, 2.0 or 3.0")


def _check_member(zf, info, key, limit):
    """Check the header of member ``info`` against what it holds, before reading data."""
    with zf.open(info) as fh:
        shape, _, dtype = _header(fh, key)
        start = fh.tell()
    if dtype.hasobject:
        raise MemberError(f"{key} holds Python objects (dtype {dtype}); expected an array of numbers or text")
    if any(n < 0 for n in shape):
        raise MemberError(f"{key} declares shape {shape}; expected non-negative dimensions")
    nbytes = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    what = f"{key} declares shape {shape} and dtype {dtype} ({_size(nbytes)})"
    held = info.file_size - start
    if nbytes != held:
        raise MemberError(f"{what} but holds {_size(max(held, 0))} of data")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise MemberError(f"{what} but its stored data is {_size(info.compress_size)}")
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _DEFLATE_RATIO * info.compress_size + 1024:
        raise MemberError(f"{what}, more than its {_size(info.compress_size)} of compressed data can hold")
    if nbytes > limit:
        raise MemberError(f"{what}, over the {_size(limit)} limit (fastmlr._config.MAX_WORK_BYTES)", over_limit=True)


def read_members(path, keys, *, limit=None) -> dict:
    """The members ``keys`` of the ``.npz`` archive ``path`` that it has, each checked
    before it is read (see the module doc); other members are not read.

    Parameters
    ----------
    path : str -- an ``.npz`` file
    keys : iterable of str -- array names (without ``.npy``)
    limit : int, optional -- largest member in bytes (default ``_config.MAX_WORK_BYTES``)

    Returns
    -------
    dict -- name -> ndarray, for the names in ``keys`` the archive holds

    Raises
    ------
    MemberError -- a member whose header does not match what it holds, or over the limit
    one of :data:`ZIP_ERRORS` -- the archive itself cannot be read
    """
    limit = _config.MAX_WORK_BYTES if limit is None else limit
    out = {}
    with zipfile.ZipFile(path) as zf:
        members = {}
        for info in zf.infolist():  # a later member of the same name wins, as in np.load
            name = info.filename
            members[name[:-4] if name.endswith(".npy") else name] = info
        for key in keys:
            info = members.get(key)
            if info is None:
                continue
            _check_member(zf, info, key, limit)
            with zf.open(info) as fh:
                try:
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False)
                except MemoryError:
                    raise MemberError(f"{key} ({_size(info.file_size)}) does not fit in memory", over_limit=True) from None
    return out
