"""Durable file operations shared by the cache and the engine: atomic writes, appends that reach
the disk, directory fsync and file hashing.

A file written by :func:`atomic_write_bytes` is either absent, its previous version, or complete:
the bytes go to ``NAME.tmp`` in the same folder, are fsynced, and the temporary file is renamed
over ``NAME`` (then the folder is fsynced so the rename survives a power cut). A write cut short
by a kill leaves ``NAME.tmp``, which the next write of ``NAME`` replaces. Files that several
processes may write at once (class prototypes beside a shared cache) take ``unique=True``: a
``NAME.<random>.tmp`` of their own, so that two writers never share a temporary file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import MlkdError

__all__ = ["fsync_dir", "atomic_write_bytes", "append_text", "file_sha256"]


def _write_failed(path: Path, exc: OSError) -> MlkdError:
    return MlkdError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions")


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, unique: bool = False) -> None:
    """Write ``data`` to ``path`` through ``path.tmp`` (``unique``: a temporary file of this
    call's own) + fsync + rename; :class:`~mlkd_cache.errors.MlkdError` naming the file when the
    disk refuses (nothing is left behind then, and an older ``path`` stays as it was)."""
    path = Path(path)
    tmp = None
    try:
        if unique:
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        else:
            tmp = str(path.with_name(path.name + ".tmp"))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # as open(tmp, "wb")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise _write_failed(path, exc) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` and fsync; :class:`~mlkd_cache.errors.MlkdError` naming the
    file when the disk refuses (full, file-size limit, read-only). Readers drop a last line cut
    short."""
    try:
        with open(path, "a") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _write_failed(Path(path), exc) from None


def file_sha256(path: Path, chunk: int = 1 << 22, fsync: bool = False) -> str:
    """Hex sha256 of the file's bytes, read in ``chunk``-byte blocks; with ``fsync`` the file is
    also flushed to disk through the same handle (a shard just written, before its rename)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
        if fsync:
            os.fsync(fh.fileno())
    return digest.hexdigest()
