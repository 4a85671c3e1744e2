"""Faults under torchrun (2 gloo ranks): a rank that is killed, or fails alone while the other
waits in a collective, ends the whole run within seconds with a non-zero exit and the failing
rank's message; the files left behind are complete ones only, and ``--resume`` or a re-run
finishes the work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from mlkd_cache.cache.format import MANIFEST_NAME, part_glob
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config
from mlkd_cache.data import build_dataset
from mlkd_cache.distributed import exit_process, lost_peer
from mlkd_cache.errors import CheckpointError, ConfigError, MlkdError
from mlkd_cache.runtime.checkpoint import load_checkpoint
from mlkd_cache.runtime.runlog import MetricsLog

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config, wait_for_checkpoint
from ..data.fixtures import truncate_file, write_jpeg

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
needs_torchrun = pytest.mark.skipif(
    not os.path.exists(TORCHRUN) and shutil.which("torchrun") is None, reason="torchrun not installed"
)
# torchrun notices a dead worker within 0.1 s and stops the others; measured on a 2-core box:
# under 2 s from the kill or the error to torchrun's exit (the 300 s process-group timeout is
# what a hang would cost)
FAIL_FAST_S = 30.0


def start_torchrun(args: Sequence[str]) -> subprocess.Popen:
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "mlkd_cache", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop(proc: subprocess.Popen) -> None:
    """Leave no torchrun behind when a test fails early (torchrun stops its workers on SIGTERM)."""
    if proc.poll() is None:
        proc.terminate()
        proc.communicate(timeout=60)


def rank_pid(torchrun: subprocess.Popen, rank: int, timeout: float = 120) -> int:
    """pid of torchrun's worker process of global ``rank`` (found by the RANK in its environment)."""
    deadline = time.time() + timeout
    while time.time() < deadline and torchrun.poll() is None:
        for children in Path(f"/proc/{torchrun.pid}/task").glob("*/children"):
            for pid in children.read_text().split():
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue  # gone or not ready yet
                if f"RANK={rank}".encode() in environ:
                    return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} found")


def kill_and_time(torchrun: subprocess.Popen, rank: int) -> Tuple[float, str]:
    """SIGKILL the worker of ``rank``; (seconds until torchrun exited, torchrun's stderr)."""
    os.kill(rank_pid(torchrun, rank), signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = torchrun.communicate(timeout=300)
    return time.monotonic() - killed, stderr


def epochs_logged(out: Path) -> List[int]:
    return [r["epoch"] for r in MetricsLog(out / "metrics.jsonl").read()]


# ------------------------------------------------------------------------------ unit level
def test_lost_peer_recognises_collective_failures_only():
    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:5")
    assert lost_peer(gloo)
    assert lost_peer(torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert not lost_peer(RuntimeError("CUDA out of memory"))
    assert not lost_peer(ValueError("gloo/transport"))


@pytest.mark.parametrize(
    "failures, expected",
    [
        ((None, "no teacher t.pt"), "rank 1 on node 1 (host b): no teacher t.pt"),  # one rank: named
        (("bad key", "bad key"), "bad key"),  # every rank alike: the message as is
        (("no data here", "bad key"), "rank 0 on node 0 (host a): no data here"),  # different: the first, named
    ],
)
def test_agree_raises_on_every_rank_naming_the_rank_when_they_differ(monkeypatch, failures, expected):
    """What every rank raises from agree() when the step failed on some of them (the 2-rank
    gather replaced by its result): the failing rank's error class and message."""
    import mlkd_cache.distributed as distributed

    reports = [
        None
        if f is None
        else (CheckpointError if f.startswith("no teacher") else ConfigError, f, f"rank {r} on node {r} (host {'ab'[r]})")
        for r, f in enumerate(failures)
    ]
    monkeypatch.setattr(distributed, "all_gather_objects", lambda obj, info: reports)
    info = distributed.DistInfo(rank=0, world_size=2)
    with pytest.raises(MlkdError) as raised:
        distributed.agree(info, lambda: None)
    assert str(raised.value) == expected
    assert type(raised.value) is next(r[0] for r in reports if r is not None)


def test_exit_process_without_process_group_is_sys_exit():
    with pytest.raises(SystemExit) as info:
        exit_process(2)
    assert info.value.code == 2


# ------------------------------------------------------------------------------ torchrun
@pytest.mark.slow
@needs_torchrun
def test_sigkill_one_rank_mid_training_fails_fast_then_resume_in_one_process(tmp_path):
    cfg_path = tiny_config(tmp_path, max_epoch_t="4", batch_size="8")
    out = tmp_path / "run"
    proc = start_torchrun(["teacher-train", "-c", cfg_path, "-o", out, "--no-progress"])
    try:
        wait_for_checkpoint(out, proc, epochs_done=1)
        elapsed, stderr = kill_and_time(proc, rank=1)
    finally:
        stop(proc)
    assert proc.returncode != 0, stderr[-2000:]
    assert elapsed < FAIL_FAST_S, (elapsed, stderr[-2000:])
    assert not (out / "teacher.pt").exists()
    done = load_checkpoint(out / "checkpoint.pt", require=("epoch", "optimizer"))["epoch"]
    assert 1 <= done < 4
    logged = epochs_logged(out)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) in (done, done + 1)  # rank 0's rows, once

    # one process resumes the 2 x 8 run with the same global batch, and only with it
    args = ["teacher-train", "-c", str(cfg_path), "-o", str(out)]
    refused = run_cli_in_process([*args, "--resume"])
    assert_one_line_error(
        refused, r"cannot resume .*global batch was 8 x 2 process\(es\), this run has 8 x 1; use --batch-size 16"
    )
    resumed = run_cli_in_process([*args, "--resume", "--batch-size", "16"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {out / 'checkpoint.pt'} after epoch {done}" in resumed.stderr
    assert epochs_logged(out) == [1, 2, 3, 4]
    assert load_checkpoint(out / "teacher.pt")["epoch"] == 4


@pytest.mark.slow
@needs_torchrun
def test_sigkill_one_rank_mid_dump_leaves_no_manifest_then_rerun_completes(tmp_path):
    cfg_path = tiny_config(tmp_path, max_epoch_t="1", dataset_para="dict(train_size=320, test_size=16)")
    small = {"dataset_para": {"train_size": 96, "test_size": 16}}  # the teacher needs no more to be dumped
    teacher.run(load_config(cfg_path, small), tmp_path / "teacher", progress=False)
    out = tmp_path / "cache"
    args = [
        "dump-targets",
        "-c",
        cfg_path,
        "--teacher",
        tmp_path / "teacher" / "teacher.pt",
        "-o",
        out,
        "--views",
        "4",
        "--set",
        "cache.shard_size=16",
        "--no-progress",
    ]  # 20 shards, 10 per rank
    proc = start_torchrun(args)
    try:
        deadline = time.time() + 240
        while not list(out.glob(part_glob())) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        elapsed, stderr = kill_and_time(proc, rank=1)
    finally:
        stop(proc)
    assert proc.returncode != 0, stderr[-2000:]
    assert elapsed < FAIL_FAST_S, (elapsed, stderr[-2000:])
    assert not (out / MANIFEST_NAME).exists()  # the cache does not look complete
    complete = len(list(out.glob(part_glob())))
    assert 1 <= complete < 20

    rerun = run_cli_in_process([str(a) for a in args])
    assert rerun.returncode == 0, rerun.stderr
    assert f"{20 - complete} shard(s) written, {complete} already complete" in rerun.stdout
    assert len(TargetCache(out)) == 320


def corrupt_csv_dataset(root: Path, rank: int, step: int) -> Tuple[Path, str]:
    """A csv dataset (64 train, 16 test images of 4 classes) whose one truncated train image is
    read by ``rank`` alone, in its ``step``-th batch (from 0) of the first epoch (2 ranks x 8)."""
    rng = np.random.default_rng(0)
    classes = np.array(["a", "b", "c", "d"])
    for split, n in (("train", 64), ("test", 16)):
        lines = ["image,labels"]
        for i in range(n):
            name = f"img/{split}-{i:03d}.jpg"
            write_jpeg(root / name, size=32, seed=1000 * (split == "test") + i)
            lines.append(f"{name},{';'.join(classes[rng.random(4) < 0.4])}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    data = build_dataset("csv", "train", str(root), train_file="train.csv", test_file="test.csv")
    sampler = DistributedSampler(range(len(data)), num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=True)
    index = list(sampler)[8 * step + 3]  # the order Trainer's sampler draws in epoch 1 (seed 0)
    truncate_file(data.image_paths[index])
    return root, data.keys[index]


@pytest.mark.slow
@needs_torchrun
def test_one_rank_failing_alone_ends_the_run_fast_with_its_message(tmp_path):
    """Rank 1 reads a truncated image in its second batch while rank 0 waits for it in DDP's
    gradient all-reduce: the run ends within seconds, the DataError in one line on stderr."""
    root, bad_key = corrupt_csv_dataset(tmp_path / "data", rank=1, step=1)
    cfg_path = tiny_config(
        tmp_path,
        dataset="'csv'",
        data_root=repr(str(root)),
        batch_size="8",
        dataset_para="dict(train_file='train.csv', test_file='test.csv')",
    )
    out = tmp_path / "run"
    proc = start_torchrun(["teacher-train", "-c", cfg_path, "-o", out, "--no-progress"])
    try:
        failed_at, lines = None, []
        for line in proc.stderr:  # timestamps of torchrun's stderr lines as they arrive
            lines.append(line)
            if failed_at is None and line.startswith("error: "):
                failed_at = time.monotonic()
        proc.wait(timeout=60)
        ended = time.monotonic()
    finally:
        stop(proc)
    stderr = "".join(lines)
    assert proc.returncode != 0, stderr[-2000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors and bad_key in errors[0] and "cannot decode image" in errors[0], stderr[-2000:]
    assert ended - failed_at < FAIL_FAST_S, (ended - failed_at, stderr[-2000:])
    assert "]: Traceback" not in stderr  # no rank printed a traceback: one line each at most
    assert not (out / "teacher.pt").exists() and not (out / "checkpoint.pt").exists()
