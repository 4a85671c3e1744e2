"""cache/h5.py: what a failed HDF5 open means (real h5py errors), and the digest of a shard whose
"open for writing" flag another process left set."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mlkd_cache.cache.h5 import open_failure, open_read, read_locking, sha256_as_closed
from mlkd_cache.fileio import file_sha256


def failure_of(path) -> tuple:
    with pytest.raises(OSError) as info:
        open_read(path)
    return open_failure(info.value)


def test_damage_is_damage(tmp_path):
    """Not HDF5, truncated, or a damaged block: each is damage (a message about a "block" is not a lock)."""
    (tmp_path / "text.h5").write_text("not hdf5")
    assert failure_of(tmp_path / "text.h5")[0] == "damage"
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["x"] = np.arange(10_000)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[:600])
    assert failure_of(cut)[0] == "damage"
    assert open_failure(OSError("Unable to read object header (bad object header block checksum)"))[0] == "damage"


def test_lock_and_permission_are_named():
    held = OSError(
        11,
        "Unable to synchronously open file (unable to lock file, errno = 11, error message = 'Resource temporarily unavailable')",
    )
    assert open_failure(held) == ("lock", "unable to lock file: Resource temporarily unavailable")
    nfs = OSError("Unable to open file (unable to lock file, errno = 37, error message = 'No locks available')")
    assert open_failure(nfs)[0] == "lock"
    denied = OSError(
        13,
        "Unable to synchronously open file (unable to open file: name = 'x', errno = 13, error message = 'Permission denied', flags = 0, o_flags = 0)",
    )
    assert open_failure(denied) == ("permission", "Permission denied")


def test_the_users_locking_variable_is_respected(monkeypatch):
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    assert read_locking() is False
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "TRUE")
    assert read_locking() is None  # HDF5 decides, from the variable


def test_sha256_as_closed_clears_only_the_write_flag(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(100)
    closed = file_sha256(path)
    assert sha256_as_closed(path) is None  # the flags are clear: nothing to undo
    data = bytearray(path.read_bytes())
    assert data[8] == 0 and data[20:24] == bytes(4)  # superblock version 0, flags clear
    data[20] = 1  # what HDF5 writes while a process holds the file open for writing
    path.write_bytes(bytes(data))
    assert file_sha256(path) != closed and sha256_as_closed(path) == closed
    data[-1] ^= 0xFF  # and a changed data byte is still a change
    path.write_bytes(bytes(data))
    assert sha256_as_closed(path) != closed
