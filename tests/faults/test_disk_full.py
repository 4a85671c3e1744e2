"""The disk refuses a write: one clear line, exit code 2, and every file already there stays valid.

Two real mechanisms. A tiny tmpfs mounted for the test gives the true ``ENOSPC`` of a full disk
mid-run; it needs the right to mount (root here and in CI) and is skipped without it. A per-process
file-size limit (``RLIMIT_FSIZE``, set on the running process with ``prlimit``) gives ``EFBIG``
with no privileges, so the same guarantees are tested everywhere.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mlkd_cache.cache.format import MANIFEST_NAME
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.cache.writer import shard_is_complete
from mlkd_cache.runtime.checkpoint import load_checkpoint

from ..conftest import assert_ends_with_error, assert_one_line_error, run_cli_in_process, tiny_config, wait_for_checkpoint
from ..engine.test_dump import assert_same_cache

pytestmark = pytest.mark.slow


def _mount(path: Path, size: str, remount: bool = False) -> subprocess.CompletedProcess:
    opts = f"remount,size={size}" if remount else f"size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)`` mounts (or resizes) a tmpfs at ``tmp_path/disk`` and returns the path."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        proc = _mount(disk, size, remount=bool(mounted))
        if proc.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); the RLIMIT_FSIZE tests cover this"
            )
        mounted.append(size)
        return disk

    yield mount
    if mounted:
        subprocess.run(["umount", str(disk)], check=True)


def in_process(args: list) -> subprocess.CompletedProcess:
    """The CLI's ``main`` in this process, on one thread as the ``built`` fixture ran (its cache
    is compared byte for byte: sums over other thread counts may round otherwise). A full disk is
    the file system's answer, not the process's: only the file-size limits below need a process
    of their own."""
    return run_cli_in_process(args, threads=1)


def _train_args(cfg_path: Path, out: Path, *extra: str) -> list:
    return [sys.executable, "-m", "mlkd_cache", "teacher-train", "-c", str(cfg_path), "-o", str(out), "--no-progress", *extra]


def test_dump_fills_the_disk_then_resumes_where_it_stopped(built, tmpfs):
    """Three shards of ~22 KiB (6 pages each) on a 60 KiB tmpfs: two are written, the third hits
    ENOSPC. The two stay complete, no .tmp and no manifest remain; with space freed the re-run
    writes one shard and the cache equals the reference."""
    out = tmpfs("60k") / "cache"
    proc = in_process(built.dump_args(out))
    assert_one_line_error(
        proc, r"cannot write .*shard-00002\.h5: No space left on device; free space in .* then re-run dump-targets \(it resumes\)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.h5", "shard-00001.h5"]
    spec = TargetCache(built.cache).spec
    assert all(shard_is_complete(out / f"shard-0000{k}.h5", spec, k) for k in (0, 1))

    tmpfs("1m")  # space freed
    proc = in_process(built.dump_args(out))
    assert proc.returncode == 0, proc.stderr
    assert "1 shard(s) written, 2 already complete" in proc.stdout
    assert_same_cache(out, built.cache)
    TargetCache(out, verify_checksums=True)


def test_checkpoint_that_does_not_fit_leaves_the_last_one(tmpfs, tmp_path):
    """A 6 MB checkpoint on a 10 MB tmpfs: epoch 1 saves; epoch 2's checkpoint.pt.tmp runs out of
    space. checkpoint.pt still holds epoch 1, nothing half-written remains, and --resume with
    space freed finishes the run."""
    cfg_path = tiny_config(tmp_path, max_epoch_t="2")
    out = tmpfs("10m") / "run"
    proc = in_process(_train_args(cfg_path, out)[3:])
    assert_ends_with_error(proc, r"cannot write .*checkpoint\.pt: No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "steps.jsonl"]
    assert load_checkpoint(out / "checkpoint.pt", require=("epoch",))["epoch"] == 1

    tmpfs("40m")
    proc = in_process(_train_args(cfg_path, out, "--resume")[3:])
    assert proc.returncode == 0, proc.stderr
    assert "resumed" in proc.stderr and "after epoch 1" in proc.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert load_checkpoint(out / "teacher.pt")["epoch"] == 2


def test_file_size_limit_mid_training_keeps_the_last_checkpoint(tmp_path):
    """RLIMIT_FSIZE lowered on the running teacher-train after its first checkpoint: the next
    checkpoint write fails with EFBIG, the previous checkpoint.pt is intact, --resume finishes."""
    cfg_path = tiny_config(tmp_path, max_epoch_t="3")
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_args(cfg_path, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(out, proc, epochs_done=1)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB: logs fit, checkpoints do not
    stdout, stderr = proc.communicate(timeout=300)
    proc.stdout.close(), proc.stderr.close()
    done = load_checkpoint(out / "checkpoint.pt", require=("epoch",))["epoch"]
    assert 1 <= done < 3
    assert_ends_with_error(
        subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), r"cannot write .*checkpoint\.pt: File too large"
    )
    assert not list(out.glob("*.tmp")) and not (out / "teacher.pt").exists()

    resumed = in_process(_train_args(cfg_path, out, "--resume")[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {done}" in resumed.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_file_size_limit_on_the_first_shard(built, tmp_path):
    """A dump whose every shard exceeds the file-size limit: one line, nothing that looks like a
    shard or a manifest; without the limit the same command writes the reference cache."""
    out = tmp_path / "cache"

    def limit():  # in the child, before exec: 16 KiB per file
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    args = [sys.executable, "-m", "mlkd_cache", *built.dump_args(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert_one_line_error(proc, r"cannot write .*shard-00000\.h5: File too large")
    assert list(out.iterdir()) == []  # no shard, no .tmp, no manifest
    proc = in_process(built.dump_args(out))
    assert proc.returncode == 0, proc.stderr
    assert "3 shard(s) written, 0 already complete" in proc.stdout
    assert_same_cache(out, built.cache)
    assert (out / MANIFEST_NAME).is_file()
