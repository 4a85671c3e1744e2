"""The model card: what a checkpoint says about its model, defined once.

A :class:`ModelCard` holds

* what rebuilds the model: ``arch`` (and its ``timm_name``) or the teacher ``factory``, the
  classes, the label-wise embedding size E and pooled feature size D, and which
  :class:`~mlkd_cache.models.model.Outputs` it gives;
* how it sees an image: ``transform``, a
  :class:`~mlkd_cache.data.transforms.TransformSpec` (``img_size``, normalisation and the eval
  resize derive from it: nothing is stored beside it);
* where it came from: the ``config`` it was trained or imported with (its ``val_split``: the
  images held out of its train split, :attr:`ModelCard.val_split`), and ``provenance`` (the
  cache or teacher a student was distilled from, the checkpoint a teacher was imported from);
* per-class decision ``thresholds``, once chosen on labelled data (``None`` until then).

:meth:`ModelCard.of` describes a model about to be saved (every writer of a checkpoint calls
it), :meth:`ModelCard.from_checkpoint` reads the card of a checkpoint of any format version, and
:func:`model_from_card` rebuilds the model a card describes. Saving and loading the file itself
is :mod:`mlkd_cache.runtime.checkpoint` (``save_model``, ``load_model``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..config import VAL_SPLIT_HINT, Config
from ..data import has_split
from ..data.holdout import val_split_record
from ..data.transforms import TransformSpec
from ..errors import CheckpointError, ConfigError, MlkdError
from ..thresholds import TUNING_SPLIT, UNTUNED
from .factory import FactoryTeacher, build_factory_teacher
from .model import MultiLabelModel, Outputs, build_model

__all__ = ["ROLES", "OUTPUTS", "LEGACY_ENTRIES", "ModelCard", "model_from_card"]

ROLES = ("teacher", "student")  # what a checkpoint's model was trained as
OUTPUTS: Tuple[str, ...] = Outputs._fields  # what a model can give: features, label_emb, logits

# The entries of a card as a checkpoint stores it (ModelCard.to_dict), with the type each holds.
_ENTRY_TYPES: Dict[str, Tuple[type, ...]] = {
    "role": (str,),
    "arch": (str,),
    "timm_name": (str, type(None)),
    "factory": (str, type(None)),
    "class_names": (list, tuple),
    "embed_dim": (int,),
    "feature_dim": (int,),
    "outputs": (list, tuple),
    "transform": (dict,),
    "config": (dict,),
    "provenance": (dict,),
    "thresholds": (dict, type(None)),
}

# Checkpoints of format 1 held the card's entries at the top level, with `num_classes`,
# `img_size`, `normalisation`, `transform_hash` and `dataset` beside them (all derived now), and
# the provenance entries below under their own names.
_LEGACY_PROVENANCE = ("imported_from", "distill", "images")
LEGACY_ENTRIES = (  # every top-level entry of a format-1 checkpoint that belongs to its card
    *_ENTRY_TYPES,
    *_LEGACY_PROVENANCE,
    "num_classes",
    "img_size",
    "normalisation",
    "transform_hash",
    "dataset",
)


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint says about its model (module docstring); ``num_classes``, ``img_size``,
    ``normalisation``, ``transform_hash`` and ``dataset`` are derived, never stored."""

    role: str  # "teacher" or "student" (ROLES)
    arch: str  # the backbone as configured (a seed or timm name), or "factory:<package.module:function>"
    class_names: Tuple[str, ...]  # the C classes, in the order of the logits
    embed_dim: int  # E of the label-wise embeddings [N, C, E] (0: the model gives none)
    feature_dim: int  # D of the pooled features [N, D] (0: the model gives none)
    transform: TransformSpec  # the input pipeline it was trained (or imported) with
    config: Dict[str, Any]  # the config snapshot (Config.to_dict()) it was trained or imported with
    outputs: Tuple[str, ...] = OUTPUTS  # the Outputs fields it gives (an ML-Decoder model: all three)
    timm_name: Optional[str] = None  # timm's name of the backbone (None for a factory teacher)
    factory: Optional[str] = None  # the teacher factory "package.module:function" that rebuilds it
    provenance: Dict[str, Any] = field(default_factory=dict)  # distill / images / imported_from records
    thresholds: Optional[Dict[str, Any]] = None  # per-class decision thresholds ("values": [C], how chosen)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise CheckpointError(f"model card role must be one of {', '.join(ROLES)}, got {self.role!r}")
        unknown = [o for o in self.outputs if o not in OUTPUTS]
        if unknown or "logits" not in self.outputs:
            raise CheckpointError(f"model card outputs must be logits and any of {', '.join(OUTPUTS)}, got {list(self.outputs)}")
        object.__setattr__(self, "outputs", tuple(o for o in OUTPUTS if o in self.outputs))  # Outputs order
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if not self.class_names:
            raise CheckpointError("model card has no classes")
        if self.thresholds is not None and len(self.thresholds.get("values", ())) != self.num_classes:
            raise CheckpointError(
                f"model card thresholds hold {len(self.thresholds.get('values', ()))} values for {self.num_classes} classes"
            )

    def config_with(self, **overrides: Any) -> Config:
        """The config this model was trained or imported with, as today's schema reads it (keys
        removed since are dropped: :meth:`Config.from_record`), with ``overrides`` that are not
        None applied: how every command that reads a model rebuilds its dataset and pipeline."""
        return Config.from_record({**self.config, **{k: v for k, v in overrides.items() if v is not None}})

    def decision_rule(self) -> Tuple[List[float], str]:
        """The decision thresholds on probabilities, ``[C]``, that this model's labels are given
        at, and where they come from in words: its stored per-class thresholds, else
        :data:`~mlkd_cache.thresholds.UNTUNED` for every class."""
        stored = self.thresholds
        if stored is None:
            try:
                tunable = has_split(self.config_with(), TUNING_SPLIT)
            except MlkdError:  # a config today's schema cannot read: no split to promise
                tunable = False
            how = (
                "mlkd-cache tune-thresholds chooses them"
                if tunable
                else f"its dataset has no {TUNING_SPLIT} split to choose them on: train it with {VAL_SPLIT_HINT} in its config"
            )
            return [UNTUNED] * self.num_classes, f"{UNTUNED:g} for every class (the model stores no thresholds; {how})"
        where = f"{stored.get('split', '?')} split, {stored.get('samples', '?')} images"
        return (
            [float(v) for v in stored["values"]],
            f"the per-class thresholds stored in the model ({stored.get('objective', '?')} on its {where})",
        )

    # ---------------------------------------------------------------- derived facts
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def img_size(self) -> int:
        """The input side in pixels (``transform.img_size``)."""
        return self.transform.img_size

    @property
    def normalisation(self) -> Dict[str, List[float]]:
        """``{"mean": [3], "std": [3]}`` of the input (``transform.mean`` / ``transform.std``)."""
        return {"mean": list(self.transform.mean), "std": list(self.transform.std)}

    @property
    def transform_hash(self) -> str:
        return self.transform.spec_hash()

    @property
    def dataset(self) -> str:
        """The dataset name of the config it was made with."""
        return str(self.config.get("dataset", ""))

    @property
    def val_split(self) -> Dict[str, Any]:
        """The val split held out of the train split it was trained on, as its config records it
        (:func:`~mlkd_cache.data.holdout.val_split_record`: ``{}`` when none)."""
        return val_split_record(self.config.get("val_split"))

    # ---------------------------------------------------------------- making one
    @classmethod
    def of(
        cls,
        model: nn.Module,
        role: str,
        class_names: Sequence[str],
        transform: TransformSpec,
        config: Mapping[str, Any],
        provenance: Optional[Mapping[str, Any]] = None,
    ) -> "ModelCard":
        """The card of ``model`` (a :class:`MultiLabelModel` or a :class:`FactoryTeacher`)
        trained or imported as ``role`` for ``class_names`` with ``transform`` and ``config``."""
        if isinstance(model, FactoryTeacher):
            if list(model.class_names) != list(class_names):
                raise CheckpointError(f"teacher factory {model.spec} gives other classes than the card is made for")
            rebuild: Dict[str, Any] = dict(
                arch=f"factory:{model.spec}", factory=model.spec, timm_name=None, outputs=tuple(model.outputs)
            )
        elif isinstance(model, MultiLabelModel):
            rebuild = dict(arch=model.arch, timm_name=model.timm_name, factory=None, outputs=OUTPUTS)
        else:
            raise TypeError(f"a model card describes a MultiLabelModel or a FactoryTeacher, got {type(model).__name__}")
        return cls(
            role=role,
            class_names=tuple(class_names),
            embed_dim=int(model.embed_dim),
            feature_dim=int(model.feature_dim),
            transform=transform,
            config=copy.deepcopy(dict(config)),
            provenance=copy.deepcopy(dict(provenance or {})),
            **rebuild,
        )

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with ``changes`` (``thresholds=...``, ...), checked again."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- as a checkpoint stores it
    def to_dict(self) -> Dict[str, Any]:
        """Plain values (``torch.load(weights_only=True)`` reads them): the ``card`` entry of a checkpoint."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, TransformSpec) else copy.deepcopy(value)
            if isinstance(value, tuple):
                out[f.name] = list(value)
        return out

    @classmethod
    def from_dict(cls, entries: Mapping[str, Any], where: str = "checkpoint") -> "ModelCard":
        """Inverse of :meth:`to_dict`; a missing or mistyped entry is one :class:`CheckpointError`
        naming ``where``."""
        if not isinstance(entries, Mapping):
            raise CheckpointError(f"{where} holds no model card; is it a checkpoint of mlkd-cache?")
        defaults = {f.name: _default(f) for f in dataclasses.fields(cls) if _default(f) is not _REQUIRED}
        values: Dict[str, Any] = {}
        for key, types in _ENTRY_TYPES.items():
            if key not in entries and key not in defaults:
                raise CheckpointError(f"{where} lacks the model card entry {key!r}; is it a complete mlkd-cache checkpoint?")
            value = entries[key] if key in entries else defaults[key]
            if not isinstance(value, types) or isinstance(value, bool):
                raise CheckpointError(
                    f"{where}: model card entry {key!r} is a {type(value).__name__}; is it a complete mlkd-cache checkpoint?"
                )
            values[key] = value
        try:
            values["transform"] = TransformSpec.from_dict(values["transform"])
        except ConfigError as exc:
            raise CheckpointError(f"{where}: its input transform is not readable ({exc}); re-create the checkpoint") from None
        try:
            return cls(**values)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from None

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], where: str = "checkpoint") -> "ModelCard":
        """The card of a loaded checkpoint: its ``card`` entry (format 2), or the entries a
        format-1 checkpoint held at its top level (its ``normalisation`` and ``img_size`` must
        agree with its transform)."""
        if "card" in ckpt:
            return cls.from_dict(ckpt["card"], where)
        if "transform" not in ckpt or not isinstance(ckpt["transform"], Mapping):
            raise CheckpointError(f"{where} lacks the model card entry 'transform'; is it a complete mlkd-cache checkpoint?")
        entries = {k: ckpt[k] for k in _ENTRY_TYPES if k in ckpt}
        entries.setdefault("role", "teacher")
        entries["provenance"] = {k: ckpt[k] for k in _LEGACY_PROVENANCE if k in ckpt}
        card = cls.from_dict(entries, where)
        norm = ckpt.get("normalisation", card.normalisation)
        said = {k: [float(x) for x in norm[k]] for k in ("mean", "std")}
        if int(ckpt.get("img_size", card.img_size)) != card.img_size or said != card.normalisation:
            raise CheckpointError(
                f"{where}: its img_size or normalisation disagrees with its transform; re-create the checkpoint"
            )
        return card


_REQUIRED = object()  # a card field without a default: a checkpoint must hold it


def _default(f: "dataclasses.Field[Any]") -> Any:
    """A card field's default (a fresh copy), or :data:`_REQUIRED`."""
    if f.default is not dataclasses.MISSING:
        return copy.deepcopy(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _REQUIRED


def model_from_card(card: ModelCard, weights: Mapping[str, Tensor]) -> nn.Module:
    """The model ``card`` describes with ``weights`` loaded (on CPU, in training mode). A factory
    teacher's factory is called again and must still give the card's classes, outputs and sizes."""
    model: nn.Module
    if card.factory is not None:
        teacher = build_factory_teacher(card.factory, card.img_size)
        now = (tuple(teacher.class_names), tuple(teacher.outputs), teacher.feature_dim, teacher.embed_dim)
        then = (card.class_names, card.outputs, card.feature_dim, card.embed_dim)
        if now != then:
            what = ("classes", "outputs", "feature size", "embedding size")[[a != b for a, b in zip(now, then)].index(True)]
            raise CheckpointError(
                f"teacher factory {card.factory} now gives other {what} than the teacher.pt made from it; "
                f"re-run import-teacher --format factory"
            )
        model = teacher
    else:
        model = build_model(card.arch, card.num_classes, pretrained=None, embed_dim=card.embed_dim, img_size=card.img_size)
    try:
        model.load_state_dict(dict(weights))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit {card.arch}: {first[:200]}") from None
    return model
