"""mlkd_cache.fileio: atomic writes leave a complete file or the old one, and no litter."""

from __future__ import annotations

import errno
import hashlib

import pytest

from mlkd_cache import fileio
from mlkd_cache.errors import MlkdError


def test_atomic_write_replaces_a_leftover_tmp_and_leaves_none(tmp_path):
    path = tmp_path / "checkpoint.pt"
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a file from a killed run")
    fileio.atomic_write_bytes(path, b"complete")
    assert path.read_bytes() == b"complete" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    fileio.atomic_write_bytes(path, b"again", unique=True)
    assert path.read_bytes() == b"again" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_refused_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    fileio.atomic_write_bytes(path, b"old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(MlkdError, match=r"cannot write .*manifest\.json: No space left on device; check free space"):
        fileio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_file_sha256_reads_in_blocks(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert fileio.file_sha256(tmp_path / "f", chunk=1000, fsync=True) == hashlib.sha256(data).hexdigest()
