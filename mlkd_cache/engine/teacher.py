"""Stage 1: ``teacher-train``. Trains ``model_t`` with the hard-label loss and writes
``OUT/teacher.pt`` - everything ``dump-targets`` needs to rebuild the teacher and its inputs.
:func:`load_teacher` loads it back for inference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Union

import torch
from torch import nn

from ..config import Config
from ..data.transforms import TransformSpec
from ..distributed import as_device
from ..errors import ConfigError
from ..fileio import file_sha256
from .checkpoint import load_checkpoint
from .dump import TEACHER_KEYS
from .evaluate import model_from_checkpoint
from .train import Trainer


def run(cfg: Config, out: Path, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train the teacher into ``out``; with ``teacher_pretrained = True`` (L2D's meaning: the
    teacher is already trained) only check that ``out/teacher.pt`` is there and report it."""
    out = Path(out)
    if cfg.teacher_pretrained:
        final = out / "teacher.pt"
        if not final.is_file():
            raise ConfigError(
                f"config sets teacher_pretrained = True (teacher already trained) but {final} does not "
                f"exist; set teacher_pretrained = False to train it"
            )
        ckpt = load_checkpoint(final)
        return {
            "epochs": int(ckpt.get("epoch", 0)),
            "metrics": dict(ckpt.get("metrics") or {}),
            "final": str(final),
            "metrics_log": str(out / "metrics.jsonl"),
            "wall_time_s": 0.0,
            "is_main": True,
            "skipped": True,
        }
    return Trainer(cfg, "t", out, resume=resume, progress=progress).fit()


@dataclass(frozen=True)
class LoadedTeacher:
    """A teacher checkpoint, ready to run (:func:`load_teacher`)."""

    # eval mode, no gradients: model(image [N, 3, H, W]) -> Outputs(features [N, D], label_emb [N, C, E], logits [N, C])
    model: nn.Module
    class_names: List[str]  # the C classes, in the order of the logits
    transform: TransformSpec  # the input pipeline it was trained with (img_size, normalisation, augmentation)
    arch: str  # the timm model name of its backbone
    sha256: str  # of the checkpoint file, as a cache records its teacher
    path: Path
    card: Dict[str, Any]  # the checkpoint's record without its weights (embed_dim, img_size, normalisation, config, ...)


def load_teacher(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LoadedTeacher:
    """Load ``teacher.pt`` (written by ``teacher-train``) for inference on ``device``: the model
    in eval mode with gradients off, its classes and its input pipeline. A file that is not such
    a checkpoint raises :class:`~mlkd_cache.errors.CheckpointError` in one line."""
    path = Path(path)
    ckpt = load_checkpoint(path, require=(*TEACHER_KEYS, "transform"))
    model = model_from_checkpoint(ckpt).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedTeacher(
        model=model.to(as_device(device)),
        class_names=list(ckpt["class_names"]),
        transform=TransformSpec.from_dict(ckpt["transform"]),
        arch=str(ckpt["arch"]),
        sha256=file_sha256(path),
        path=path,
        card={k: v for k, v in ckpt.items() if k != "model"},
    )
