"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts: the model
state plus everything a later stage needs to rebuild the model and its inputs (arch, classes,
img_size, transform spec, config snapshot). It is written to a temporary file, flushed, fsynced
and renamed (:func:`~mlkd_cache.fileio.atomic_write_bytes`), so a file named ``NAME`` is always
complete.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping

import torch

from .._version import __version__
from ..errors import CheckpointError
from ..fileio import atomic_write_bytes

CHECKPOINT_FORMAT = "mlkd-cache-checkpoint"
CHECKPOINT_VERSION = 1


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
