"""A training run's folder and its checkpoint policy: what a new run refuses to write over, how
the folder is made ready, and what a resumed run must share with the run it resumes (the config
keys of :data:`RESUME_KEYS`, the global batch, the planned steps). Rank 0 alone reads and writes
the folder; every rank gets its verdict (:func:`~mlkd_cache.distributed.agree`)."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping

from ..config import FIELDS
from ..distributed import DistInfo, agree, broadcast_object
from ..errors import CheckpointError, ConfigError
from .checkpoint import load_checkpoint
from .runlog import RunFiles

__all__ = ["RESUME_KEYS", "check_out_dir", "prepare_out_dir", "read_resume_checkpoint", "check_config_kept", "check_global_batch"]

log = logging.getLogger("mlkd_cache")

# Config keys that must be the same when a run is resumed (the rest may change: data_root,
# workers, eval_every, stop_epoch_*). batch_size may change with the number of processes as long
# as the global batch (batch_size x processes) stays: a torchrun run can resume in 1 process.
RESUME_KEYS = (
    "dataset",
    "dataset_para",
    "eval_split",
    "img_size",
    "embed_dim",
    "seed",
    "transform",
    "optimizer",
    "weight_decay",
    "pct_start",
    "asl_para",
)


def check_out_dir(files: RunFiles, resume: bool, info: DistInfo) -> None:
    """Rank 0 judges the output folder (only rank 0 writes there, and only its disk need hold it):
    a new run refuses a folder that holds a run, ``--resume`` needs its checkpoint; the refusal
    stops every rank alike."""

    def judge() -> None:
        out = files.out
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a folder")
        existing = [p.name for p in (files.checkpoint, files.final) if p.exists()]
        if existing and not resume:
            raise ConfigError(
                f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it or choose another --out"
            )
        if resume and not files.checkpoint.exists():
            raise CheckpointError(f"--resume: no {files.checkpoint} to resume from; drop --resume to start")

    agree(info, judge if info.is_main else lambda: None)


def prepare_out_dir(files: RunFiles, info: DistInfo) -> None:
    """Rank 0 creates the output folder and proves it writable (every rank fails alike when it is
    not); called after every input check passed, so a bad input leaves nothing behind."""
    out = files.out

    def prepare() -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--out {out} is not writable ({exc.strerror}); choose another folder") from None

    agree(info, prepare if info.is_main else lambda: None)
    if info.enabled and info.is_main:  # which machine holds the outputs (a node-local --out)
        log.info("%s writes the run's files to %s", info.where, out)


def read_resume_checkpoint(files: RunFiles, info: DistInfo) -> Dict[str, Any]:
    """The run's ``checkpoint.pt`` with its training state: rank 0 reads it (onto the CPU, so
    NCCL sends no CUDA tensor) and sends it to every rank, so only its disk need hold it."""
    read = agree(
        info,
        lambda: load_checkpoint(files.checkpoint, require=("model", "optimizer", "scheduler", "epoch")) if info.is_main else None,
    )
    return broadcast_object(read, info)


def check_config_kept(files: RunFiles, old: Mapping[str, Any], now: Mapping[str, Any], keys: Iterable[str]) -> None:
    """The config values of ``keys`` must be the checkpoint's (``old``; a key newer than the
    checkpoint compares as its default): one line naming the first three that changed."""
    changed = [k for k in keys if old.get(k, FIELDS[k].default) != now[k]]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k, FIELDS[k].default)!r} -> {now[k]!r}" for k in changed[:3])
        raise CheckpointError(
            f"cannot resume {files.checkpoint}: the config changed ({detail}); restore those values or start a new run in another --out"
        )


def check_global_batch(
    files: RunFiles, ckpt: Mapping[str, Any], old: Mapping[str, Any], batch: int, world: int, steps: int
) -> None:
    """The global batch and so the steps per epoch (the schedule) must stay; how it is split over
    processes may change (each global batch holds the same samples either way). ``old``: the
    checkpoint's config; ``batch`` x ``world``: this run's batch per process and processes;
    ``steps``: the steps this run's schedule plans."""
    old_batch, old_world = int(old["batch_size"]), int(ckpt.get("world_size", 1))
    if old_batch * old_world != batch * world:
        hint = (
            f"--batch-size {old_batch * old_world // world}"
            if (old_batch * old_world) % world == 0
            else f"{old_world} process(es) with --batch-size {old_batch}"
        )
        raise CheckpointError(
            f"cannot resume {files.checkpoint}: its global batch was {old_batch} x {old_world} process(es), "
            f"this run has {batch} x {world}; use {hint}"
        )
    planned = int(ckpt["scheduler"].get("total_steps", steps))
    if planned != steps:
        raise CheckpointError(
            f"cannot resume {files.checkpoint}: it planned {planned} steps, this run {steps}; "
            f"restore the dataset and epochs it was started with"
        )
