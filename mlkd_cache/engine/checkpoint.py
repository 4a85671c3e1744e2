"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts: the model
state plus everything a later stage needs to rebuild the model and its inputs (arch, classes,
img_size, transform spec, config snapshot). It is written to ``NAME.tmp``, flushed, fsynced
and renamed, so a file named ``NAME`` is always complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch

from .. import __version__
from ..errors import CheckpointError, MlkdError

CHECKPOINT_FORMAT = "mlkd-cache-checkpoint"
CHECKPOINT_VERSION = 1


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``path.tmp`` + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MlkdError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions") from None
    fsync_dir(path.parent)


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` and fsync; :class:`MlkdError` naming the file when the disk
    refuses (full, file-size limit, read-only). Readers drop a last line cut short."""
    try:
        with open(path, "a") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise MlkdError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions") from None


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Serialise ``payload`` (plus format tags) and write it atomically to ``path``."""
    full = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "tool_version": __version__}
    full.update(payload)
    buffer = io.BytesIO()
    torch.save(full, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, require: Iterable[str] = ("model", "arch", "num_classes")) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch would explain this with a paragraph on weights_only
        raise CheckpointError(
            f"cannot read checkpoint {path} (not a complete zip archive, as torch checkpoints are); "
            "is it a complete mlkd-cache checkpoint?"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ... : one line, no traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({reason[:160]}); is it a complete mlkd-cache checkpoint?"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mlkd-cache checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}, this mlkd-cache reads up to "
            f"{CHECKPOINT_VERSION}; upgrade mlkd-cache"
        )
    missing = [k for k in require if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return ckpt


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch, appended and fsynced as each epoch ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is not trusted
        return rows

    def truncate_to(self, epochs_done: int) -> None:
        """Keep only the rows of epochs ``<= epochs_done`` (used on resume) - atomically."""
        rows = [r for r in self.read() if int(r.get("epoch", 0)) <= epochs_done]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def reset(self) -> None:
        atomic_write_bytes(self.path, b"")

    def append(self, row: Mapping[str, Any]) -> None:
        append_text(self.path, json.dumps(dict(row)) + "\n")


class StepLog(MetricsLog):
    """``steps.jsonl``: loss terms of every ``log_every``-th training step, one JSON object per
    line (``epoch`` is 1-based, ``step`` counts from 1 within the epoch). Rows are buffered and
    appended with one fsync per :meth:`flush` (the trainer flushes at each epoch's end), so
    after a kill the file holds whole epochs; :meth:`truncate_to` keeps it in step with a resume.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._pending: List[Dict[str, Any]] = []

    def add(self, row: Mapping[str, Any]) -> None:
        self._pending.append(dict(row))

    def flush(self) -> None:
        if not self._pending:
            return
        append_text(self.path, "".join(json.dumps(r) + "\n" for r in self._pending))
        self._pending = []


def last_metrics(path: Path) -> Optional[Dict[str, Any]]:
    rows = MetricsLog(path).read()
    return rows[-1] if rows else None
