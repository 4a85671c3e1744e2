"""MLD: multi-label logit distillation (binary KL between sigmoid probabilities, as L2D).

L2D's ``MLD`` has no temperature; it clamps the probabilities to ``[1e-8, 1 - 1e-8]`` and takes
plain logs. Here the logs come from ``logsigmoid`` (``log(1 - sigmoid(z)) = logsigmoid(-z)``),
which is exact at any logit: the two agree wherever no probability is within 1e-8 of 0 or 1,
and this one stays correct (value and gradient) beyond that.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["mld", "MLD"]


def mld(z_s: Tensor, z_t: Tensor) -> Tensor:
    """Binary KL(teacher ‖ student) per (sample, label), summed over ``[N, C]``, divided by N.

    ``p·(log p − log q) + (1−p)·(log(1−p) − log(1−q))`` with ``p = σ(z_t)``, ``q = σ(z_s)``.
    The teacher side carries no gradient; the value is exactly 0 when ``z_s == z_t``.
    """
    z_t = z_t.detach().to(z_s.dtype)
    p_t, q_t = torch.sigmoid(z_t), torch.sigmoid(-z_t)  # p and 1 - p, each accurate near 0
    kl = p_t * (F.logsigmoid(z_t) - F.logsigmoid(z_s)) + q_t * (F.logsigmoid(-z_t) - F.logsigmoid(-z_s))
    return kl.sum() / z_s.shape[0]


@register_loss("MLD", slot="logits")
class MLD(DistillLoss):
    """``{"mld": mld(z_s, z_t)}`` (logits slot)."""

    terms = ("mld",)

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        return {"mld": mld(batch.z_s, batch.z_t)}
