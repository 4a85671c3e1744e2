"""Stage 1: ``teacher-train``. Trains ``model_t`` with the hard-label loss and writes
``OUT/teacher.pt`` - everything ``dump-targets`` needs to rebuild the teacher and its inputs.
:func:`load_teacher` loads it back for inference; :func:`open_teacher` opens what a command's
``--teacher`` names: a teacher.pt or a factory ``package.module:function``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
from torch import nn

from ..cache.format import TEACHER_OUTPUTS
from ..config import Config
from ..data.transforms import TransformSpec
from ..distributed import as_device
from ..errors import ConfigError
from ..fileio import file_sha256
from ..models.factory import FactoryTeacher, build_factory_teacher, is_factory_spec, weights_sha256
from .checkpoint import load_checkpoint
from .evaluate import model_from_checkpoint
from .train import Trainer

# What a teacher.pt holds for dump-targets and the online baselines (besides transform, config, ...)
TEACHER_KEYS = ("model", "arch", "num_classes", "class_names", "embed_dim", "feature_dim", "img_size", "normalisation")

TeacherSpec = Union[str, Path]  # a teacher.pt, or a factory "package.module:function"


def teacher_outputs(card: Dict[str, Any]) -> Tuple[str, ...]:
    """The outputs a teacher gives (TEACHER_OUTPUTS names): a factory teacher.pt records them,
    every other teacher (ML-Decoder head) gives all."""
    return tuple(card.get("outputs") or TEACHER_OUTPUTS)


def factory_card(teacher: FactoryTeacher) -> Dict[str, Any]:
    """What a factory teacher is, as a teacher.pt records a teacher: ``arch``, ``factory``, its
    classes, ``outputs`` and sizes (0 for an output it does not give)."""
    return {
        "arch": f"factory:{teacher.spec}",
        "factory": teacher.spec,
        "num_classes": teacher.num_classes,
        "class_names": list(teacher.class_names),
        "outputs": list(teacher.outputs),
        "embed_dim": teacher.embed_dim,
        "feature_dim": teacher.feature_dim,
    }


def teacher_sha256(path: Path, ckpt: Dict[str, Any], model: nn.Module) -> str:
    """What a cache records as its teacher: the sha256 of the teacher.pt, or for a factory
    teacher that of its weights (:func:`weights_sha256`), the same whether it was dumped from the
    factory or from the teacher.pt that pins it (``import-teacher --format factory``)."""
    return weights_sha256(model) if ckpt.get("factory") else file_sha256(path)


def open_teacher(teacher: TeacherSpec, cfg: Config) -> Tuple[Dict[str, Any], nn.Module, str]:
    """``(card, model, sha256)`` of what ``--teacher`` names. ``card`` holds :data:`TEACHER_KEYS`
    but the weights, plus ``outputs``; ``model`` is on CPU in eval mode, gradients off; ``sha256``
    identifies the teacher (:func:`teacher_sha256`).

    A factory teacher is called here; its input pipeline is the config's (img_size, transform).
    """
    if is_factory_spec(str(teacher)) and not isinstance(teacher, Path):
        factory = build_factory_teacher(str(teacher), cfg.img_size)
        spec = TransformSpec.from_config(cfg)
        card = {
            **factory_card(factory),
            "img_size": cfg.img_size,
            "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
        }
        return card, factory, weights_sha256(factory)
    path = Path(teacher)
    ckpt = load_checkpoint(path, require=TEACHER_KEYS)
    model = model_from_checkpoint(ckpt).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    card = {k: v for k, v in ckpt.items() if k != "model"}
    card["outputs"] = list(teacher_outputs(card))
    return card, model, teacher_sha256(path, ckpt, model)


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
    sha256: str  # as a cache records its teacher (teacher_sha256)
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
        sha256=teacher_sha256(path, ckpt, model),
        path=path,
        card={k: v for k, v in ckpt.items() if k != "model"},
    )
