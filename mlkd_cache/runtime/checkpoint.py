"""Atomic checkpoints that load with ``torch.load(weights_only=True)``, and the one writer and
the one loader of a model's checkpoint.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts: the model's
``card`` (:class:`~mlkd_cache.models.card.ModelCard`: everything a later stage needs to rebuild
the model and its inputs), its weights under ``model``, ``epoch`` and ``metrics``, and in a
run's ``checkpoint.pt`` the state ``--resume`` needs. It is written to a temporary file, flushed,
fsynced and renamed (:func:`~mlkd_cache.fileio.atomic_write_bytes`), so a file named ``NAME`` is
always complete.

:func:`save_model` writes every checkpoint (teacher-train, distill-student, import-teacher);
:func:`load_model` reads one back as a model in eval mode with its card (evaluate, dump-targets,
verify, the online teacher, the Python API). Format 1 (the card's entries at the top level of
the file) is still read.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .._version import __version__
from ..data.transforms import TransformSpec
from ..device import as_device, place_model
from ..errors import CheckpointError, reason_of
from ..fileio import atomic_write_bytes, file_sha256
from ..models.card import LEGACY_ENTRIES, ModelCard, model_from_card
from ..models.factory import weights_sha256

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIX",
    "CHECKPOINT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "save_model",
    "update_card",
    "model_entries",
    "read_card",
    "LoadedModel",
    "load_model",
]

CHECKPOINT_FORMAT = "mlkd-cache-checkpoint"
CHECKPOINT_SUFFIX = ".pt"  # what a checkpoint is named (teacher.pt, student.pt); exports: deploy.MODEL_FORMATS
CHECKPOINT_VERSION = 2  # 2: the model card under "card"; 1: its entries at the top level (still read)


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Serialise ``payload`` (plus format tags) and write it atomically to ``path``."""
    full = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "tool_version": __version__}
    full.update(payload)
    buffer = io.BytesIO()
    torch.save(full, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, require: Iterable[str] = ("model",)) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU); a
    file that is not one is a :class:`~mlkd_cache.errors.CheckpointError` line (an exported
    ``.onnx`` or ``.pt2`` file named as such)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch would explain this with a paragraph on weights_only
        raise _unreadable(path, "not a complete zip archive, as torch checkpoints are")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, an export, ... : one line, no traceback
        raise _unreadable(path, reason_of(exc)) from None
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


def _unreadable(path: Path, reason: str) -> CheckpointError:
    """The one line for a file torch cannot read as a checkpoint: an export (ONNX, torch.export)
    is named as one, by its content (:func:`~mlkd_cache.runtime.deploy.exported_file_error`);
    anything else with ``reason``, torch's own."""
    from .deploy import exported_file_error  # deploy imports this module: imported when first needed

    exported = exported_file_error(path)
    if exported is not None:
        return exported
    return CheckpointError(f"cannot read checkpoint {path} ({reason}); is it a complete mlkd-cache checkpoint?")


def save_model(path: Path, card: ModelCard, weights: Mapping[str, Tensor], **entries: Any) -> None:
    """Write a model's checkpoint to ``path`` atomically: its ``card``, its ``weights`` (a state
    dict) and ``entries`` (``epoch``, ``metrics``, and a run's resume state)."""
    reserved = sorted({"card", "model", "format", "format_version"} & set(entries))
    if reserved:
        raise ValueError(f"save_model: {reserved[0]!r} is not an entry of its own")
    save_checkpoint(path, {"card": card.to_dict(), "model": dict(weights), **entries})


def update_card(path: Union[str, Path], card: ModelCard) -> None:
    """Rewrite the checkpoint at ``path`` with ``card`` as its model card (thresholds chosen
    later, say), its weights and every other entry unchanged, atomically: the file is the old
    one or the new one, never a mix. It is written in the current format."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    old = read_card(ckpt, path)
    if (old.class_names, old.arch) != (card.class_names, card.arch):
        raise CheckpointError(f"{path} holds a model of other classes or architecture than the card written to it")
    rest = model_entries(ckpt)
    save_model(path, card, rest.pop("model"), **rest)


def model_entries(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of a loaded checkpoint of any format besides its card and format tags: the
    weights (``model``), ``epoch``, ``metrics`` and a run's resume state."""
    return {k: v for k, v in ckpt.items() if k not in ("card", "format", "format_version", "tool_version", *LEGACY_ENTRIES)}


def read_card(ckpt: Mapping[str, Any], path: Union[str, Path]) -> ModelCard:
    """The model card of the loaded checkpoint ``ckpt`` read from ``path`` (any format version)."""
    return ModelCard.from_checkpoint(ckpt, f"checkpoint {path}")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run (:func:`load_model`), with what its checkpoint says about it."""

    # eval mode, no gradients: model(image [N, 3, S, S]) -> Outputs(features [N, D], label_emb [N, C, E], logits [N, C])
    model: nn.Module
    card: ModelCard  # classes, sizes, outputs, input pipeline (card.transform), config, provenance, thresholds
    path: Optional[Path] = None  # the checkpoint it came from (None: a teacher factory called directly)
    epoch: int = 0  # epochs trained
    metrics: Dict[str, Any] = field(default_factory=dict)  # its scores after the last epoch (percent)

    @property
    def class_names(self) -> List[str]:
        """The C classes, in the order of the logits."""
        return list(self.card.class_names)

    @property
    def transform(self) -> TransformSpec:
        """The input pipeline it was trained with (img_size, normalisation, augmentation)."""
        return self.card.transform

    @property
    def arch(self) -> str:
        return self.card.arch

    @cached_property
    def sha256(self) -> str:
        """What a cache records as its teacher: the checkpoint file's sha256, or for a factory
        teacher that of its weights (the same whether the cache was dumped from the factory or
        from the teacher.pt that pins it, ``import-teacher --format factory``)."""
        if self.card.factory is not None or self.path is None:
            return weights_sha256(self.model)
        return file_sha256(self.path)


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """The model of the checkpoint at ``path`` (teacher.pt, student.pt, a run's checkpoint.pt) on
    ``device`` (channels-last on CUDA), in eval mode with gradients off, and its card. A file
    that is not such a checkpoint raises :class:`~mlkd_cache.errors.CheckpointError` in one line."""
    path = Path(path)
    ckpt = load_checkpoint(path, require=("model",))
    card = read_card(ckpt, path)
    model = model_from_card(card, ckpt["model"]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model = place_model(model, as_device(device))
    return LoadedModel(
        model=model, card=card, path=path, epoch=int(ckpt.get("epoch", 0)), metrics=dict(ckpt.get("metrics") or {})
    )
