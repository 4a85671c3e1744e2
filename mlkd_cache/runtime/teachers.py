"""Teachers as the commands that read one see them: :func:`open_teacher` opens what a command's
``--teacher`` names, a teacher.pt (:func:`~mlkd_cache.runtime.checkpoint.load_model`) or a factory
``package.module:function``, and checks that it fits a config and dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from ..config import Config
from ..data.holdout import describe_val_split, val_split_record
from ..data.transforms import TransformSpec
from ..distributed import DistInfo
from ..errors import CacheMismatchError
from ..models.card import ModelCard
from ..models.factory import build_factory_teacher, is_factory_spec
from ..models.model import feature_dim_of
from .checkpoint import LoadedModel, load_model
from .ranks import load_on_every_rank

__all__ = ["TeacherSpec", "open_teacher", "open_teacher_on_ranks", "check_teacher_fits", "planned_card", "load_teacher"]

TeacherSpec = Union[str, Path]  # a teacher.pt, or a factory "package.module:function"


def open_teacher(teacher: TeacherSpec, cfg: Config) -> LoadedModel:
    """The teacher ``--teacher`` names, on CPU in eval mode with gradients off: a teacher.pt, or
    a factory teacher called now, whose card takes its input pipeline from the config
    (``img_size``, ``transform``). ``.sha256`` identifies it as a cache records its teacher."""
    if is_factory_spec(str(teacher)) and not isinstance(teacher, Path):
        factory = build_factory_teacher(str(teacher), cfg.img_size)
        card = ModelCard.of(factory, "teacher", factory.class_names, TransformSpec.from_config(cfg), cfg.to_dict())
        return LoadedModel(model=factory, card=card)
    return load_model(teacher)


def open_teacher_on_ranks(teacher: TeacherSpec, cfg: Config, info: DistInfo) -> LoadedModel:
    """:func:`open_teacher` on every rank of a run, each from its own storage: a rank that cannot
    open it stops every rank (naming it), and every rank must read the same teacher (sha256)."""
    return load_on_every_rank(lambda: open_teacher(teacher, cfg), f"teacher {teacher}", info)


def check_teacher_fits(cfg: Config, card: ModelCard, dataset: Any, transform: TransformSpec, teacher: str) -> None:
    """The teacher of ``card`` must see this config's inputs of this data: its classes those of
    ``dataset`` (a train split), its ``img_size`` and normalisation those of ``transform`` (the
    augmentation may differ: a cache's views are the config's). ``teacher`` names it in errors."""
    if list(card.class_names) != list(dataset.class_names):
        raise CacheMismatchError(
            f"teacher {teacher} was trained for {card.num_classes} classes "
            f"({', '.join(card.class_names[:4])}, ...), the {cfg.dataset} train split has "
            f"{len(dataset.class_names)} ({', '.join(dataset.class_names[:4])}, ...); use the teacher of this dataset"
        )
    held_out = val_split_record(cfg.val_split)
    if card.val_split != held_out:  # a teacher whose train split held other images than the students' and the cache's
        fix = (
            f"val_split = dict(fraction={card.val_split['fraction']!r}, seed={card.val_split['seed']})"
            if card.val_split
            else "val_split.fraction = 0"
        )
        raise CacheMismatchError(
            f"teacher {teacher} was trained with {describe_val_split(card.val_split)}, the config holds "
            f"{describe_val_split(held_out)}: its train split is not this one (it may have seen the val images); "
            f"train the teacher with this config, or set {fix}"
        )
    if card.img_size != transform.img_size:
        raise CacheMismatchError(
            f"teacher {teacher} was trained at img_size {card.img_size}, config asks for {transform.img_size}; fix img_size"
        )
    norm = card.normalisation
    if norm != {"mean": list(transform.mean), "std": list(transform.std)}:
        raise CacheMismatchError(
            f"teacher {teacher} expects normalisation mean {norm['mean']} std {norm['std']}, config gives "
            f"mean {list(transform.mean)} std {list(transform.std)}; fix transform.mean/std"
        )


def planned_card(cfg: Config, class_names: Any) -> ModelCard:
    """The card ``teacher-train`` will write for ``model_t`` of ``cfg`` and ``class_names``, from
    the config alone (sizes of a dump planned before the teacher is trained): ``model_t``'s pooled
    feature size is read from a weightless copy."""
    return ModelCard(
        role="teacher",
        arch=cfg.model_t,
        class_names=tuple(class_names),
        embed_dim=cfg.embed_dim,
        feature_dim=feature_dim_of(cfg.model_t, cfg.img_size),
        transform=TransformSpec.from_config(cfg),
        config=cfg.to_dict(),
    )


def load_teacher(path: Union[str, Path], device: Union[str, Any] = "cpu") -> LoadedModel:
    """:func:`~mlkd_cache.runtime.checkpoint.load_model` of a ``teacher.pt``: the model in eval
    mode on ``device``, its card, classes, input pipeline and ``sha256`` (as a cache records its
    teacher)."""
    return load_model(path, device)
