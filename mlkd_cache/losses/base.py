"""Distillation-loss building blocks: the registry, the per-batch record and the base module.

Every distillation loss is a pure function plus a thin :class:`DistillLoss` that reads what it
needs from a :class:`KDBatch` and returns ``{term name: value}``. Losses receive cached teacher
tensors, never a teacher model. A loss is built as ``DISTILL_LOSSES.get(name)(**para)``; a
factory registered with :func:`register_loss` rejects unknown or missing parameters with a
:class:`ConfigError` that lists the valid ones.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type, TypeVar

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "ModelOutput",
    "MODEL_OUTPUTS",
    "SIZE_DIMS",
    "OUTPUT_SIZES",
    "DISTILL_LOSSES",
    "SLOTS",
    "SLOT_TEACHER_OUTPUT",
    "KDBatch",
    "DistillLoss",
    "register_loss",
    "slot_of",
    "losses_by_slot",
    "check_para",
]


@dataclass(frozen=True)
class ModelOutput:
    """One output a model gives (a field of ``models.Outputs``): what it holds and its shape.

    ``dims`` names the shape's axes: ``N`` the batch, ``C`` the classes, and the sizes of
    :data:`SIZE_DIMS` (each recorded by a model card and a cache spec)."""

    words: str  # what it holds, as messages name it: "pooled features"
    dims: Tuple[str, ...]  # ("N", "D") -> [N, D]

    def shape(self, sizes: Optional[Mapping[str, Any]] = None) -> str:
        """``[N, D]``, each axis named in ``sizes`` replaced by its value (``{"C": 80}``: ``[N, 80, E]``)."""
        sizes = sizes or {}
        return "[" + ", ".join(str(sizes.get(d, d)) for d in self.dims) + "]"

    @property
    def description(self) -> str:
        """``pooled features [N, D]``: how messages name the output."""
        return f"{self.words} {self.shape()}"


# The one table of what a model gives, in the order of the fields of models.Outputs (a test
# checks both): the model's Outputs, a factory teacher's checks, the sizes a model card and a
# cache spec record, and every message naming an output derive from it. It lives in this layer,
# below models and cache, so that they and the losses all read it.
MODEL_OUTPUTS: Dict[str, ModelOutput] = {
    "features": ModelOutput("pooled features", ("N", "D")),
    "label_emb": ModelOutput("label-wise embeddings", ("N", "C", "E")),
    "logits": ModelOutput("logits", ("N", "C")),
}
# The sizes of an output's own axes, as ModelCard and CacheSpec attributes (0: the output is absent).
SIZE_DIMS: Dict[str, str] = {"D": "feature_dim", "E": "embed_dim"}
# The size attribute of each output that has one: {"features": "feature_dim", "label_emb": "embed_dim"}.
OUTPUT_SIZES: Dict[str, str] = {o: SIZE_DIMS[d] for o, out in MODEL_OUTPUTS.items() for d in out.dims if d in SIZE_DIMS}

DISTILL_LOSSES = Registry("distillation loss")

# The seed format's slots (``<slot>_dis`` / ``lambda_<slot>``) and the kind of loss each takes;
# every loss names its slot when it registers (:func:`register_loss`).
SLOTS: Dict[str, str] = {"ft": "feature", "le": "label-embedding", "logits": "logits"}
# The teacher output (a models.Outputs field) each slot's losses read: a teacher that gives only
# some outputs (a factory teacher's cache) can feed the slots of those.
SLOT_TEACHER_OUTPUT: Dict[str, str] = {"ft": "features", "le": "label_emb", "logits": "logits"}
_SLOT_OF: Dict[str, str] = {}

L = TypeVar("L", bound=Type[nn.Module])


def _meaning(output: str, who: str, note: str = "") -> str:
    """``the student's pooled features [N, D_s]``: a KDBatch field filled from ``output``."""
    out = MODEL_OUTPUTS[output]
    return f"the {who}'s {out.words} {out.shape({d: f'{d}_{who[0]}' for d in SIZE_DIMS})}{note}"


# What the optional fields of KDBatch hold, for the error of a loss that needs one.
_FIELD_MEANING = {
    "f_s": _meaning("features", "student"),
    "f_t": _meaning("features", "teacher"),
    "e_s": _meaning("label_emb", "student", ", from an ML-Decoder head"),
    "e_t": _meaning("label_emb", "teacher", ", dense form"),
}


@dataclass
class KDBatch:
    """Student outputs and cached teacher targets for one batch (shapes: N samples, C classes).

    Teacher label-wise embeddings come in one of two cache forms: ``positive`` (``t_tokens``
    with ``token_sample`` / ``token_class``, one row per positive label) or ``dense`` (``e_t``).
    Only the logits are required: a student without pooled features or label-wise embeddings (a
    plain timm classifier) can use the logit losses (MLD, PS); a loss that reads a field the
    batch lacks says so in one line (:meth:`need`).
    """

    y: Tensor  # [N, C] 0/1 float
    z_s: Tensor  # [N, C] student logits
    z_t: Tensor  # [N, C] teacher logits
    f_s: Optional[Tensor] = None  # [N, D_s] pooled student features
    f_t: Optional[Tensor] = None  # [N, D_t] pooled teacher features
    e_s: Optional[Tensor] = None  # [N, C, E_s] student label-wise embeddings (all classes)
    t_tokens: Optional[Tensor] = None  # [P, E_t] teacher embeddings of the positive labels
    token_sample: Optional[Tensor] = None  # [P] int64 batch row of each token
    token_class: Optional[Tensor] = None  # [P] int64 class of each token
    e_t: Optional[Tensor] = None  # [N, C, E_t] dense teacher embeddings

    def __post_init__(self) -> None:
        """Shapes that must agree, checked before any loss runs (a one-line ConfigError naming them)."""
        if self.z_s.dim() != 2:
            raise ConfigError(
                f"KDBatch.z_s must be the student's {MODEL_OUTPUTS['logits'].description}, got shape {list(self.z_s.shape)}"
            )
        n, c = self.z_s.shape
        if self.z_t.shape[1:] != self.z_s.shape[1:]:
            raise ConfigError(
                f"KDBatch: the student's logits z_s have {c} classes, the teacher's z_t {self.z_t.shape[1] if self.z_t.dim() == 2 else list(self.z_t.shape)}: "
                f"build the student for the teacher's classes (a cache's spec.num_classes)"
            )
        if self.z_t.shape[0] != n or self.y.shape[0] != n:
            raise ConfigError(
                f"KDBatch: z_s has {n} rows, z_t {self.z_t.shape[0]} and y {self.y.shape[0]}: student outputs, labels and "
                f"teacher targets must come from the same batch (views.targets(batch, ...) of the batch the student saw)"
            )
        if tuple(self.y.shape) != (n, c):
            raise ConfigError(f"KDBatch: labels y have shape {list(self.y.shape)}, the logits {[n, c]}; give the batch's labels")
        for name in ("e_s", "e_t"):
            e = getattr(self, name)
            if e is not None and (e.dim() != 3 or tuple(e.shape[:2]) != (n, c)):
                raise ConfigError(
                    f"KDBatch.{name} has shape {list(e.shape)}, expected {MODEL_OUTPUTS['label_emb'].shape({'N': n, 'C': c})} "
                    f"({_FIELD_MEANING[name]}); "
                    f"build the model for the cache's {c} classes"
                )

    def need(self, loss: str, field: str) -> Tensor:
        """The tensor ``field`` of this batch, which ``loss`` reads; a one-line
        :class:`~mlkd_cache.errors.ConfigError` naming both when the batch does not have it."""
        value = getattr(self, field)
        if value is None:
            raise ConfigError(
                f"{loss} reads KDBatch.{field} ({_FIELD_MEANING[field]}), which this batch does not have; "
                f"give it, or use losses that need only the logits (MLD, PS)"
            )
        return value

    def positive_tokens(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(s_tokens [P, E_s], t_tokens [P, E_t], token_sample [P], token_class [P])``.

        Tokens are in (sample, class) order whichever cache form the batch holds;
        ``s_tokens = e_s[token_sample, token_class]``.
        """
        e_s = self.need("a label-embedding loss (LED, MPSCD)", "e_s")
        if self.t_tokens is not None:
            if self.token_sample is None or self.token_class is None:
                raise ValueError("KDBatch.t_tokens needs token_sample and token_class")
            num_classes = e_s.shape[1]
            order = (self.token_sample * num_classes + self.token_class).argsort()
            sample, cls, t_tokens = self.token_sample[order], self.token_class[order], self.t_tokens[order]
        elif self.e_t is not None:
            sample, cls = (self.y > 0.5).nonzero(as_tuple=True)  # row-major: already (sample, class) order
            t_tokens = self.e_t[sample, cls]
        else:
            raise ValueError("KDBatch has no teacher embeddings: set t_tokens (positive form) or e_t (dense form)")
        return e_s[sample, cls], t_tokens, sample, cls


class DistillLoss(nn.Module):
    """Base of the distillation losses: ``forward(batch) -> {term name: scalar}``.

    ``terms`` names the keys ``forward`` returns (the distiller lists them before training).
    """

    terms: Tuple[str, ...] = ()

    def __init__(self) -> None:  # an explicit empty signature: factories check parameters against it
        super().__init__()

    # subclasses define ``forward(batch: KDBatch) -> Dict[str, Tensor]`` (nn.Module refuses to
    # run a module without one)


def check_para(
    factory: Callable, name: str, para: Mapping[str, Any], context: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """The keyword arguments to call ``factory`` with: ``para`` plus the ``context`` entries
    its signature declares. Raises :class:`ConfigError` for an unknown or a missing parameter."""
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in para if k not in named]
    if unknown and not accepts_any:
        raise ConfigError(f"{name} got unknown parameter {unknown[0]!r}; valid: {', '.join(named) if named else '(none)'}")
    kwargs = dict(para)
    for key, value in (context or {}).items():
        if key in named and key not in kwargs:
            kwargs[key] = value
    missing = [k for k in named if params[k].default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ConfigError(f"{name} needs parameter {missing[0]!r}; give it in para=dict(...)")
    return kwargs


def register_loss(name: str, slot: str) -> Callable[[L], L]:
    """Class decorator: register a checked factory for the loss class under ``name``, taken by
    the seed-format slot ``slot`` (a key of :data:`SLOTS`).

    The factory has the class's signature (``inspect.signature`` follows ``__wrapped__``) and
    raises :class:`ConfigError` instead of ``TypeError`` for a bad parameter.
    """

    if slot not in SLOTS:
        raise KeyError(f"loss {name!r}: slot {slot!r} is not one of {', '.join(SLOTS)}")

    def decorator(cls: L) -> L:
        @functools.wraps(cls, updated=())
        def factory(**para: Any) -> nn.Module:
            return cls(**check_para(cls, name, para))

        DISTILL_LOSSES.register(name)(factory)
        _SLOT_OF[name] = slot
        return cls

    return decorator


def slot_of(name: str) -> str:
    """The slot a registered loss goes in (``ft``, ``le`` or ``logits``)."""
    return _SLOT_OF[name]


def losses_by_slot() -> Dict[str, Tuple[str, ...]]:
    """``{slot: registered loss names}``, every slot of :data:`SLOTS` present, names sorted."""
    return {slot: tuple(n for n in DISTILL_LOSSES.names() if _SLOT_OF[n] == slot) for slot in SLOTS}
