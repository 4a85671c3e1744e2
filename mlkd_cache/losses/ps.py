"""PS: partial-softmax logit distillation, the L2D baseline (``PartialSoftmaxDistiller``).

For each sample and each of its positive labels ``j``, a softmax over ``{j} ∪ negatives`` of
the sample, for student and teacher; KL(teacher ‖ student) of each such distribution, summed
over all (sample, positive label) pairs and divided by N. Samples without positives add 0.
Same math as L2D's per-sample loop, computed for all pairs at once on ``[N, C, C]`` tensors.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["ps", "PS"]


def _partial_log_softmax(z: Tensor, member: Tensor) -> Tensor:
    """``[N, C, C]`` log-probabilities over ``member[n, j, :]`` (0 outside the member set)."""
    n, c = z.shape
    logits = z[:, None, :].expand(n, c, c).masked_fill(~member, float("-inf"))  # [N, j, k]
    return logits.log_softmax(dim=-1).masked_fill(~member, 0.0)


def ps(z_s: Tensor, z_t: Tensor, y: Tensor) -> Tensor:
    """Partial-softmax KL summed over (sample, positive label) pairs, divided by N.

    ``z_s, z_t, y``: ``[N, C]``. Memory is O(N·C²): fine for C in the hundreds.
    """
    pos = y > 0.5  # [N, C]
    eye = torch.eye(z_s.shape[1], dtype=torch.bool, device=z_s.device)
    member = (~pos)[:, None, :] | eye[None]  # [N, j, k]: k in the softmax of label j of sample n
    log_p_s = _partial_log_softmax(z_s, member)
    with torch.no_grad():
        log_p_t = _partial_log_softmax(z_t.to(z_s.dtype), member)
        p_t = log_p_t.exp().masked_fill(~member, 0.0)
    kl = (p_t * (log_p_t - log_p_s)).sum(dim=-1)  # [N, j]
    return (kl * pos).sum() / z_s.shape[0]


@register_loss("PS", slot="logits")
class PS(DistillLoss):
    """``{"ps": ps(z_s, z_t, y)}`` (logits slot)."""

    terms = ("ps",)

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        return {"ps": ps(batch.z_s, batch.z_t, batch.y)}
