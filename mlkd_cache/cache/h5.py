"""Opening HDF5 files: the one place that decides HDF5 file locking, and that tells why an open
failed.

A cache is immutable once its ``manifest.json`` exists, so a reader needs no lock. HDF5 takes
one (``flock``) on every open by default, and that lock fails where caches are often kept or
read: on NFS and Lustre mounts without lock support (errno 37, "No locks available"), and while
another process holds the file open for writing (errno 11). So every read-only open here passes
``locking=False``. Writers keep HDF5's default: each writes its own ``shard-NNNNN.h5.tmp``, which
no reader opens. HDF5 >= 1.14.4 refuses to open a file that this process already holds with
another locking setting; readers open only finished ``.h5`` files and writers only their
``.tmp``, so no file is opened both ways.

A process that opens a finished shard for writing (``r+``, ``a``) changes one thing in it until
it closes the file, or for good if it is killed first: HDF5's "open for writing" flag in the
superblock. The data is untouched, but the file's sha256 no longer matches the manifest;
:func:`sha256_as_closed` gives the digest with that flag cleared, so a checksum check can tell
this from damage.

A user's ``HDF5_USE_FILE_LOCKING`` (``TRUE``, ``FALSE``, ``BEST_EFFORT``) is respected: readers
then leave locking to HDF5, which obeys the variable.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import h5py

__all__ = ["LOCKING_ENV", "read_locking", "open_read", "open_failure", "open_failure_advice", "sha256_as_closed"]

LOCKING_ENV = "HDF5_USE_FILE_LOCKING"

_ERRNO = re.compile(r"errno = (\d+)")
_MESSAGE = re.compile(r"error message = '([^']*)'")
_LOCK_ERRNOS = {11, 37, 38}  # EAGAIN (held by a writer), ENOLCK (no lock support), ENOSYS
_PERMISSION_ERRNOS = {1, 13}  # EPERM, EACCES
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FLAGS_AT = 20  # superblock versions 0 and 1 (what h5py writes by default): 4 bytes of consistency flags


def read_locking() -> bool | None:
    """The ``locking`` argument of every read-only open: ``False``, or ``None`` (HDF5's own
    choice, which follows the variable) when the user set ``HDF5_USE_FILE_LOCKING``."""
    return None if os.environ.get(LOCKING_ENV) else False


def open_read(path: Path) -> h5py.File:
    """Open a finished HDF5 file read-only, without a file lock (see the module docstring). An
    h5py built on an HDF5 without per-file locking (< 1.10.7 / 1.12.1) refuses the argument:
    then HDF5's own rule applies (``HDF5_USE_FILE_LOCKING=FALSE`` turns it off)."""
    try:
        return h5py.File(path, "r", locking=read_locking())
    except ValueError as exc:
        if "lock" not in str(exc).lower():
            raise
        return h5py.File(path, "r")


def open_failure(exc: OSError) -> tuple[str, str]:
    """``(kind, reason)`` of a failed open: ``kind`` is ``"lock"``, ``"permission"`` or
    ``"damage"`` (anything else: not HDF5, truncated, overwritten); ``reason`` is the first line
    of HDF5's message. Only damage calls for rewriting a cache."""
    text = str(exc)
    reason = text.splitlines()[0][:160] if text else type(exc).__name__
    found = _ERRNO.search(text)
    code = int(found.group(1)) if found else exc.errno
    said = _MESSAGE.search(text)  # the system's words, e.g. 'Permission denied'
    if "don't match" in text and "lock" in text.lower():  # HDF5 >= 1.14.4: open here already, with other lock settings
        return "lock", "the file is already open in this process with other file-locking settings"
    if "unable to lock" in text.lower() or "file locking" in text.lower() or code in _LOCK_ERRNOS:  # not "block"
        return "lock", f"unable to lock file: {said.group(1) if said else reason}"
    if isinstance(exc, PermissionError) or code in _PERMISSION_ERRNOS:
        return "permission", said.group(1) if said else reason
    return "damage", reason


def open_failure_advice(kind: str) -> str:
    """What to do about a lock or permission failure (a damaged file has its own advice)."""
    if kind == "lock":
        setting = os.environ.get(LOCKING_ENV)
        return (
            f"{LOCKING_ENV}={setting} asks HDF5 for a file lock, which this filesystem or another process refuses; "
            f"unset it (a finished cache is read without locks); the cache itself is not damaged"
            if setting
            else "close other handles of it in this process, or retry when the process that locked it is done; "
            "the cache itself is not damaged"
        )
    return "give this user read access to the cache folder (or copy it); the cache itself is not damaged"


def sha256_as_closed(path: Path, chunk: int = 1 << 22) -> str | None:
    """sha256 of ``path`` with its superblock's consistency flags cleared, as its writer left it
    when it closed the file; ``None`` when the flags are already clear or the file does not start
    with a version 0 or 1 superblock. HDF5 sets the flags while a process holds the file open for
    writing (and leaves them set when that process is killed): the data is the same."""
    with open(path, "rb") as fh:
        head = fh.read(_FLAGS_AT + 4)
        if len(head) < _FLAGS_AT + 4 or head[:8] != _SIGNATURE or head[8] not in (0, 1) or not any(head[_FLAGS_AT:]):
            return None
        digest = hashlib.sha256(head[:_FLAGS_AT] + bytes(4))
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
