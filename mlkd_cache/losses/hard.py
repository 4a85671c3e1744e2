"""Hard-label losses: sum-reduced BCE (as L2D) and ASL (asymmetric loss, Ridnik et al. 2021).

Both take logits ``z [N, C]`` and 0/1 labels ``y [N, C]`` and return a scalar summed over N·C,
so L2D's learning rates and distillation weights carry over unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry, did_you_mean

HARD_LOSSES = Registry("hard-label loss")
# The parameters of asl() a config sets (config key asl_para); eps is numerical, not a choice.
ASL_PARA: Tuple[str, ...] = ("gamma_neg", "gamma_pos", "clip")


def bce(z: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy summed over all N·C entries (logsigmoid form, no clamping)."""
    return F.binary_cross_entropy_with_logits(z, y.to(z.dtype), reduction="sum")


def asl(z: Tensor, y: Tensor, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> Tensor:
    """Asymmetric loss, summed over N·C.

    ``p = sigmoid(z)``; negatives use the shifted probability ``p_m = max(p - clip, 0)``;
    ``L = -Σ [ y (1-p)^γ+ log p + (1-y) p_m^γ- log(1-p_m) ]``. The focusing weights are
    treated as constants (no gradient), as in the reference implementation.
    """
    y = y.to(z.dtype)
    p = torch.sigmoid(z)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p
    log_pos = F.logsigmoid(z)
    log_neg = torch.log((1 - p_neg).clamp(min=eps))
    with torch.no_grad():
        w_pos = (1 - p).pow(gamma_pos)
        w_neg = p_neg.pow(gamma_neg)
    return -(y * w_pos * log_pos + (1 - y) * w_neg * log_neg).sum()


class HardLabelLoss(nn.Module):
    """``{name: value}`` for the hard-label term, built from a registry name and parameters."""

    def __init__(self, name: str, fn: Callable[..., Tensor], **para) -> None:
        super().__init__()
        self.name, self.fn, self.para = name, fn, para

    def forward(self, z: Tensor, y: Tensor) -> Dict[str, Tensor]:
        return {self.name: self.fn(z.float(), y, **self.para)}


@HARD_LOSSES.register("bce")
def _build_bce(**para) -> HardLabelLoss:
    return HardLabelLoss("bce", bce, **para)


@HARD_LOSSES.register("asl")
def _build_asl(**para) -> HardLabelLoss:
    return HardLabelLoss("asl", asl, **para)


def check_asl_para(para: Mapping[str, Any], where: str = "asl_para") -> None:
    """Every key of ``para`` is one of :data:`ASL_PARA`; else a :class:`ConfigError` naming ``where``."""
    for key in para:
        if key not in ASL_PARA:
            raise ConfigError(f"{where} has unknown entry {key!r}{did_you_mean(key, ASL_PARA)}; valid: {', '.join(ASL_PARA)}")


def build_hard_loss(name: str, asl_para: Dict[str, float]) -> HardLabelLoss:
    """The hard-label loss ``name`` (``bce`` or ``asl``); ``asl_para`` (checked) applies to ASL only."""
    check_asl_para(asl_para)
    return HARD_LOSSES.get(name)(**(asl_para if name == "asl" else {}))
