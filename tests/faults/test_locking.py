"""A finished cache opens wherever it is stored: while another process holds a shard open for
writing (HDF5's lock taken, its write flag set), on a read-only mount, and with the user's own
HDF5_USE_FILE_LOCKING. A lock or permission failure is named as such, never as damage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from mlkd_cache.cache.format import MANIFEST_NAME
from mlkd_cache.cache.h5 import sha256_as_closed
from mlkd_cache.fileio import file_sha256

from ..conftest import ONE_THREAD, assert_one_line_error, run_cli, run_cli_in_process
from ..nodes import needs_private_mounts

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SHARD = "shard-00001.h5"
# Holds a file open for writing with HDF5's defaults (an exclusive lock) until its stdin closes.
HOLDER = "import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); print('holding', flush=True); sys.stdin.read(); f.close()"


class Holder:
    """Another process that opens ``path`` for writing (``r+``) and keeps it open."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "holding"

    def __enter__(self) -> "Holder":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.communicate(timeout=30)  # stdin closed: the holder closes the file and exits
        assert self.proc.returncode == 0


@pytest.fixture
def cache(built, tmp_path) -> Path:
    return Path(shutil.copytree(built.cache, tmp_path / "cache"))


def listed_sha256(cache: Path, name: str) -> str:
    manifest = json.loads((cache / MANIFEST_NAME).read_text())
    return next(e["sha256"] for e in manifest["shards"] if e["file"] == name)


def test_a_shard_held_open_for_writing_is_read(built, cache, tmp_path):
    """While another process holds a shard open for writing, inspect, verify and distill-student
    read the cache (every checksum checked); the shard is named in one warning. Once the holder
    has closed it, the shard is byte for byte what the dump wrote."""
    shard = cache / SHARD
    with Holder(shard):
        with pytest.raises(OSError, match="unable to lock file"):  # HDF5's default reader is refused
            h5py.File(shard, "r", locking=True)
        assert file_sha256(shard) != listed_sha256(cache, SHARD)  # HDF5's write flag is set in the file
        assert sha256_as_closed(shard) == listed_sha256(cache, SHARD)  # the data is not

        runs = {
            "inspect": ["inspect", str(cache)],
            "verify": ["verify", str(cache), "--teacher", str(built.teacher_pt), "--samples", "4"],
            "distill-student": ["distill-student", "-c", str(built.cfg_path), "--cache", str(cache), "-o", str(tmp_path / "s")],
        }
        for name, args in runs.items():
            proc = run_cli_in_process([*args, "--no-progress"] if name == "distill-student" else args)
            assert proc.returncode == 0, (name, proc.stderr)
            assert f"{SHARD} in {cache} is held open for writing by another process" in proc.stderr, (name, proc.stderr)
        assert (tmp_path / "s" / "student.pt").is_file()
    assert sha256_as_closed(shard) is None and file_sha256(shard) == listed_sha256(cache, SHARD)


def test_a_lock_the_user_asks_for_is_named_not_called_damage(cache):
    """With HDF5_USE_FILE_LOCKING=TRUE (the user's choice, respected) and a writer holding a
    shard, the open fails: one line naming the lock and the variable, and no advice to rewrite
    a cache that is not damaged."""
    with Holder(cache / SHARD):
        proc = run_cli(["inspect", str(cache)], env={**ONE_THREAD, "HDF5_USE_FILE_LOCKING": "TRUE"})
    line = assert_one_line_error(proc, rf"cannot open {SHARD} in .*unable to lock file.*HDF5_USE_FILE_LOCKING=TRUE")
    assert "not damaged" in line and "re-run dump-targets" not in line


def test_a_shard_this_user_cannot_read_is_named_not_called_damage(cache, tmp_path):
    """A shard without read permission for the user running the reader (root ignores permission
    bits, so the reader runs as ``nobody`` through setpriv): one line naming the permission, and
    no advice to rewrite the cache."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a reader as another user")
    public = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlkd-perm-{os.getpid()}"
    shutil.rmtree(public, ignore_errors=True)
    shutil.copytree(cache, public)
    try:
        public.chmod(0o755)
        for path in public.iterdir():
            path.chmod(0o644)
        (public / SHARD).chmod(0o600)  # root's alone
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "mlkd_cache",
                "inspect",
                str(public),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **ONE_THREAD},
            timeout=120,
        )
        if "error: " not in proc.stderr:  # the interpreter itself could not start as nobody
            pytest.skip(f"user nobody cannot run this interpreter: {proc.stderr.strip()[:200]}")
        line = assert_one_line_error(proc, rf"cannot open {SHARD} in .*Permission denied.*give this user read access")
        assert "re-run dump-targets" not in line
    finally:
        shutil.rmtree(public, ignore_errors=True)


@needs_private_mounts
def test_a_cache_on_a_read_only_mount_is_read(built, cache, tmp_path):
    """The cache bind-mounted read-only in a private mount namespace (unshare -m: root ignores
    permission bits, a read-only mount does not): inspect checks every checksum, and an MPSCD
    student trains from it, its prototypes computed but not stored beside the cache."""
    mount = tmp_path / "ro"
    mount.mkdir()
    out = tmp_path / "student"
    mpscd = (
        "criterion_t2s_para=dict(name='MPSCD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict()), "
        "lambda_le=1.0, le_dis=dict(name='MPSCD', para=dict())))"
    )
    py = f"{sys.executable} -m mlkd_cache"
    script = "\n".join(
        [
            "set -e",
            f"mount --bind '{cache}' '{mount}'",
            f"mount -o remount,bind,ro '{mount}'",
            f"if touch '{mount}/probe' 2>/dev/null; then echo 'mount is writable'; exit 9; fi",
            f"{py} inspect '{mount}'",
            f"{py} distill-student -c '{built.cfg_path}' --cache '{mount}' -o '{out}' --no-progress --set \"{mpscd}\"",
        ]
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every shard matches its sha256 in manifest.json" in proc.stdout
    assert "cannot store prototypes" in proc.stderr and "Read-only file system" in proc.stderr
    assert (out / "student.pt").is_file()
    assert sorted(p.name for p in cache.iterdir()) == [MANIFEST_NAME, "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
