"""The distiller: the seed-format ``criterion_t2s_para`` turned into weighted, named loss terms.

    criterion_t2s_para = dict(name="L2D", para=dict(
        lambda_ft=0.0, ft_dis=None,
        lambda_le=1.0, le_dis=dict(name="LED", para=dict(lambda_cd=100.0, lambda_id=1000.0)),
        lambda_logits=10.0, logits_dis=dict(name="MLD", para=dict())))
    distiller = Distiller.from_config(criterion_t2s_para, num_classes=80)
    terms = distiller(batch)          # {"mld": 10·MLD, "led_cd": ..., "led_id": ...}

The top-level ``name`` is only a label. A slot whose lambda is 0 or whose ``*_dis`` is None is
not built and not computed. The trainer sums and logs the returned dict.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import did_you_mean
from .base import DISTILL_LOSSES, SLOTS, DistillLoss, KDBatch, check_para, losses_by_slot, slot_of

__all__ = ["Distiller", "check_criterion", "plan"]

PARA_KEYS = tuple(k for slot in SLOTS for k in (f"lambda_{slot}", f"{slot}_dis"))
WHERE = "criterion_t2s_para"


# What the trainer passes to the loss factories (sizes known only once data and cache are open).
CONTEXT_KEYS = ("num_classes", "student_embed_dim", "teacher_embed_dim", "prototypes")

Part = Tuple[str, float, str, Any, Dict[str, Any]]  # slot, lambda, loss name, factory, para


def _part(slot: str, spec: Any) -> Tuple[str, Any, Dict[str, Any]]:
    """``(name, factory, para)`` of one slot's ``dict(name=..., para=dict(...))``."""
    key = f"{slot}_dis"
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"{WHERE}: {key} must be None or dict(name=..., para=dict(...)), got {spec!r}")
    extra = sorted(set(spec) - {"name", "para"})
    if extra:
        raise ConfigError(f"{WHERE}: {key} has unknown key {extra[0]!r}; valid: name, para")
    name, para = spec["name"], spec.get("para") or {}
    if not isinstance(para, Mapping):
        raise ConfigError(f"{WHERE}: {key}['para'] must be a dict, got {para!r}")
    try:
        factory = DISTILL_LOSSES.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{WHERE}: {key}: {exc}") from None
    home = slot_of(name)
    if home != slot:
        takes = "; ".join(f"{s}_dis takes {', '.join(n)}" for s, n in losses_by_slot().items())
        raise ConfigError(f"{WHERE}: {name} is a {SLOTS[home]} loss and goes in {home}_dis, not {key} ({takes})")
    return name, factory, dict(para)


def _kwargs(slot: str, name: str, factory: Any, para: Mapping[str, Any], context: Mapping[str, Any]) -> Dict[str, Any]:
    try:
        return check_para(factory, name, para, context)
    except ConfigError as exc:
        raise ConfigError(f"{WHERE}: {slot}_dis: {exc}") from None


def plan(criterion_t2s_para: Any) -> List[Part]:
    """The slots that are on, checked: shape, para keys, lambdas, loss names and their slots.
    Raises :class:`ConfigError` naming the first problem."""
    if not isinstance(criterion_t2s_para, Mapping) or not isinstance(criterion_t2s_para.get("para"), Mapping):
        raise ConfigError(f"{WHERE} must be dict(name=..., para=dict(...)), got {criterion_t2s_para!r}")
    para = criterion_t2s_para["para"]
    for key in para:
        if key not in PARA_KEYS:
            raise ConfigError(f"{WHERE}: unknown para key {key!r}{did_you_mean(key, PARA_KEYS)}; valid: {', '.join(PARA_KEYS)}")
    parts: List[Part] = []
    for slot in SLOTS:
        spec, lam_key = para.get(f"{slot}_dis"), f"lambda_{slot}"
        if lam_key in para:
            lam = para[lam_key]
            if isinstance(lam, bool) or not isinstance(lam, Real):
                raise ConfigError(f"{WHERE}: {lam_key} must be a number, got {lam!r}")
            if lam < 0:
                raise ConfigError(f"{WHERE}: {lam_key} must be >= 0, got {lam}")
        elif spec is not None:
            raise ConfigError(f"{WHERE}: {slot}_dis is set but {lam_key} is missing; give its weight")
        else:
            lam = 0.0
        if spec is None or lam == 0:
            continue
        name, factory, loss_para = _part(slot, spec)
        parts.append((slot, float(lam), name, factory, loss_para))
    return parts


def check_criterion(criterion_t2s_para: Any) -> None:
    """Everything :meth:`Distiller.from_config` checks that needs no data: :func:`plan` plus the
    parameter names of every loss. Config validation calls it, so a bad criterion stops any
    command before work starts, not a student run after the teacher was trained."""
    placeholders = dict.fromkeys(CONTEXT_KEYS)
    for slot, _lam, name, factory, para in plan(criterion_t2s_para):
        _kwargs(slot, name, factory, para, placeholders)


class Distiller(nn.Module):
    """Weighted distillation terms: ``forward(batch) -> {term: lambda · value}``.

    Built from ``(slot, lambda, loss)`` parts; use :meth:`from_config` for the seed format. Being
    an ``nn.Module``, learnable parts of a loss (a projection head) are in :meth:`extra_parameters`
    and move with ``.to(device)``.
    """

    def __init__(self, parts: Sequence[Tuple[str, float, DistillLoss]]) -> None:
        super().__init__()
        self.lambdas: Dict[str, float] = {slot: float(lam) for slot, lam, _ in parts}
        self.losses = nn.ModuleDict({slot: loss for slot, _, loss in parts})

    @classmethod
    def from_config(cls, criterion_t2s_para: Mapping[str, Any], **context: Any) -> "Distiller":
        """Build from ``dict(name=..., para=dict(lambda_ft, ft_dis, lambda_le, le_dis, lambda_logits, logits_dis))``.

        ``context`` (``num_classes``, ``student_embed_dim``, ``teacher_embed_dim``, ``prototypes``, ...)
        reaches the loss factories whose signatures name those arguments. A missing ``*_dis``
        means the slot is off; a slot that is on needs its lambda.
        """
        parts = [
            (slot, lam, factory(**_kwargs(slot, name, factory, para, context)))
            for slot, lam, name, factory, para in plan(criterion_t2s_para)
        ]
        return cls(parts)

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        terms: Dict[str, Tensor] = {}
        for slot, loss in self.losses.items():
            lam = self.lambdas[slot]
            for name, value in loss(batch).items():
                terms[name] = lam * value
        return terms

    def names(self) -> List[str]:
        """The term names :meth:`forward` returns, in order."""
        return [t for loss in self.losses.values() for t in (getattr(loss, "terms", ()) or (type(loss).__name__.lower(),))]

    @property
    def needs_prototypes(self) -> bool:
        """True when a loss starts from class prototypes (MPSCD): call :meth:`set_prototypes`."""
        return any(hasattr(m, "set_prototypes") for m in self.losses.values())

    def set_prototypes(self, prototypes: Tensor) -> None:
        """Give ``prototypes [C, E_t]`` to every loss that starts from class prototypes."""
        for loss in self.losses.values():
            setter = getattr(loss, "set_prototypes", None)
            if setter is not None:
                setter(prototypes)

    def extra_parameters(self) -> List[nn.Parameter]:
        """Learnable parameters of the losses, for the student's optimiser (often empty)."""
        return [p for p in self.parameters() if p.requires_grad]
