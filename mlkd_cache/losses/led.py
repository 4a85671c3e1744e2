"""LED: label-wise embedding distillation (L2D), CD (class-aware) + ID (instance-aware).

Both parts are one relational distance loss :func:`rd` applied to groups of positive-label
embeddings: CD has one group per class (the batch images that carry it), ID one group per
image (its positive labels). Groups are built from the positive tokens as padded
``[G, M, E]`` tensors, so nothing loops over classes or images.

Differences from L2D's ``cd.py`` / ``id.py`` / ``huber_dist.py`` (same math otherwise: distances
``sqrt(max(d², 1e-12))``, each matrix divided by the mean of its positive entries, teacher side
without gradient, smooth-L1 summed over the matrix and divided by its number of rows, groups
with < 2 members skipped, summed over groups):

- L2D finds a group's members as the rows that are not all zero after masking by the labels,
  so a positive embedding that is exactly zero is dropped (and student and teacher could then
  disagree on the member count). Here members are exactly the positive labels.
- L2D's pairwise matrix includes the (zero) diagonal in the smooth-L1 sum; it contributes 0,
  so excluding it, as here, gives the same value.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["rd", "class_distance", "instance_distance", "led", "LED"]

EPS = 1e-12  # floor of a squared distance before sqrt (as L2D): keeps sqrt's gradient finite


def _pairwise_distance(e: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Distances among valid members, each matrix divided by the mean of its positive entries.

    ``e [G, M, E]``, ``mask [G, M]`` -> ``(d [G, M, M], pair [G, M, M])``; ``d`` is 0 outside
    ``pair`` (the valid off-diagonal entries).
    """
    m = e.shape[1]
    sq = e.pow(2).sum(dim=-1)  # [G, M]
    d2 = sq[:, :, None] + sq[:, None, :] - 2 * e @ e.transpose(1, 2)  # [G, M, M]
    eye = torch.eye(m, dtype=torch.bool, device=e.device)
    pair = mask[:, :, None] & mask[:, None, :] & ~eye  # [G, M, M]
    d = torch.where(pair, d2.clamp(min=EPS).sqrt(), torch.zeros_like(d2))
    positive = d > 0
    count = positive.sum(dim=(1, 2))  # [G]
    mean = d.sum(dim=(1, 2)) / count.clamp(min=1)
    mean = torch.where(count > 0, mean, torch.ones_like(mean))  # groups of < 2 members: d is all 0
    return d / mean[:, None, None], pair


def rd(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """Relational distance loss summed over groups.

    ``s [G, M, E_s]``, ``t [G, M, E_t]``, ``mask [G, M]`` bool (valid members). Per group:
    smooth-L1 (β=1) between the normalised distance matrices of student and teacher, summed
    over the valid off-diagonal entries, divided by the number of members; groups with fewer
    than 2 members add 0.
    """
    d_s, pair = _pairwise_distance(s, mask)
    with torch.no_grad():
        d_t, _ = _pairwise_distance(t.to(s.dtype), mask)
    err = F.smooth_l1_loss(d_s, d_t, reduction="none", beta=1.0) * pair  # [G, M, M]
    members = mask.sum(dim=1)  # [G]
    per_group = err.sum(dim=(1, 2)) / members.clamp(min=1)
    return (per_group * (members >= 2)).sum()


def _grouped(group: Tensor, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Padded groups from tokens sorted by ``group``: ``(s [G, M, E_s], t [G, M, E_t], mask [G, M])``."""
    _, slot, counts = torch.unique_consecutive(group, return_inverse=True, return_counts=True)
    starts = counts.cumsum(0) - counts  # [G] first token of each group
    rank = torch.arange(group.numel(), device=group.device) - starts[slot]  # [P] rank within group
    g, m = counts.numel(), int(counts.max())
    s_pad = s.new_zeros(g, m, s.shape[1]).index_put((slot, rank), s)
    t_pad = t.new_zeros(g, m, t.shape[1]).index_put((slot, rank), t)
    mask = torch.zeros(g, m, dtype=torch.bool, device=s.device).index_put((slot, rank), torch.ones_like(rank, dtype=torch.bool))
    return s_pad, t_pad, mask


def class_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """CD: :func:`rd` with one group per class over the images carrying it.

    Tokens ``[P, E]`` in (sample, class) order, as :meth:`KDBatch.positive_tokens` gives them.
    """
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()  # 0, still connected to the student graph
    cls, order = torch.sort(token_class, stable=True)  # class-major, images in order within a class
    return rd(*_grouped(cls, s_tokens[order], t_tokens[order]))


def instance_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """ID: :func:`rd` with one group per image over its positive labels (tokens in (sample, class) order)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()
    return rd(*_grouped(token_sample, s_tokens, t_tokens))


def led(
    s_tokens: Tensor,
    t_tokens: Tensor,
    token_sample: Tensor,
    token_class: Tensor,
    lambda_cd: float = 100.0,
    lambda_id: float = 1000.0,
) -> Tensor:
    """``λ_cd·CD + λ_id·ID`` over the positive tokens (defaults as L2D's config)."""
    tokens = (s_tokens, t_tokens, token_sample, token_class)
    return lambda_cd * class_distance(*tokens) + lambda_id * instance_distance(*tokens)


@register_loss("LED")
class LED(DistillLoss):
    """``{"led_cd": λ_cd·CD, "led_id": λ_id·ID}`` (label-embedding slot); either cache form."""

    terms = ("led_cd", "led_id")

    def __init__(self, lambda_cd: float = 100.0, lambda_id: float = 1000.0) -> None:
        super().__init__()
        self.lambda_cd, self.lambda_id = lambda_cd, lambda_id

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        tokens = batch.positive_tokens()
        return {
            "led_cd": self.lambda_cd * class_distance(*tokens),
            "led_id": self.lambda_id * instance_distance(*tokens),
        }
