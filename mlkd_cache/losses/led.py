"""LED: label-wise embedding distillation (L2D), CD (class-aware) + ID (instance-aware).

Both parts are one relational distance loss :func:`rd` applied to groups of positive-label
embeddings: CD has one group per class (the batch images that carry it), ID one group per
image (its positive labels). One ``[P, P]`` distance matrix of the batch's positive tokens per
side serves both, masked by "same class" (CD) or "same image" (ID), so nothing loops over classes
or images and nothing is padded to the largest group.

Differences from L2D's ``cd.py`` / ``id.py`` / ``huber_dist.py`` (same math otherwise: distances
``sqrt(max(d², 1e-12))``, each matrix divided by the mean of its positive entries, teacher side
without gradient, smooth-L1 summed over the matrix and divided by its number of rows, groups
with < 2 members skipped, summed over groups):

- L2D finds a group's members as the rows that are not all zero after masking by the labels,
  so a positive embedding that is exactly zero is dropped (and student and teacher could then
  disagree on the member count). Here members are exactly the positive labels.
- L2D's pairwise matrix includes the (zero) diagonal in the smooth-L1 sum; it contributes 0,
  so excluding it, as here, gives the same value.
- L2D computes ``d²`` as ``|a|² + |b|² - 2a·b``; here from ``a - b`` (:func:`token_distances`):
  the same value in exact arithmetic, without the cancellation for close tokens.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["rd", "class_distance", "instance_distance", "led", "LED"]

EPS = 1e-12  # floor of a squared distance before sqrt (as L2D): keeps sqrt's gradient finite


def token_distances(e: Tensor) -> Tensor:
    """Euclidean distances among all tokens: ``e [P, E]`` -> ``[P, P]`` (``sqrt(max(d², 1e-12))``).

    Computed from the differences ``a - b`` themselves (``cdist`` without its matrix-product
    shortcut), not as ``|a|² + |b|² - 2a·b``, which cancels for close tokens: tokens of one class
    often lie close together, and a relative error of the tokens (a float16 or int8 cache) then
    grew by ``(|a|² + |b|²) / d²`` (up to 79,000 on the digits teacher) in the distance."""
    d = torch.cdist(e[None], e[None], compute_mode="donot_use_mm_for_euclid_dist")[0]  # [P, P]
    return d.clamp(min=EPS**0.5)  # = sqrt(max(d², EPS)), with the same zero gradient below it


def rd(d_s: Tensor, d_t: Tensor, group: Tensor) -> Tensor:
    """Relational distance loss summed over groups, from token distance matrices.

    ``d_s, d_t [P, P]`` (student / teacher token distances), ``group [P]`` int (the group of
    each token: its class for CD, its image for ID). Per group: the distances among its members,
    each matrix divided by the mean of its entries (teacher side without grad); smooth-L1 (β=1)
    between them summed over the member pairs, divided by the number of members; groups with
    fewer than 2 members add 0; summed over groups. Masks over one ``[P, P]`` matrix replace
    padded per-group tensors: no loop and no padding to the largest group.
    """
    _, inv = torch.unique(group, return_inverse=True)  # [P] compact group ids
    g = int(inv.max()) + 1
    eye = torch.eye(len(inv), dtype=torch.bool, device=inv.device)
    pair = (inv[:, None] == inv[None, :]) & ~eye  # [P, P] same group, off-diagonal
    members = torch.bincount(inv, minlength=g).to(d_s.dtype)  # [G]
    pairs = members * (members - 1)  # [G] ordered member pairs

    def normalised(d: Tensor) -> Tensor:
        d = d * pair
        total = d.new_zeros(g).index_add(0, inv, d.sum(dim=1))  # [G] sum of the group's distances
        mean = torch.where(pairs > 0, total / pairs.clamp(min=1), torch.ones_like(total))
        return d / mean[inv][:, None]

    n_s = normalised(d_s)
    with torch.no_grad():
        n_t = normalised(d_t.to(d_s.dtype))
    err = F.smooth_l1_loss(n_s, n_t, reduction="none", beta=1.0) * pair  # [P, P]
    per_group = d_s.new_zeros(g).index_add(0, inv, err.sum(dim=1)) / members  # [G]
    return (per_group * (members >= 2)).sum()


def _distances(s_tokens: Tensor, t_tokens: Tensor) -> Tuple[Tensor, Tensor]:
    with torch.no_grad():
        d_t = token_distances(t_tokens.to(s_tokens.dtype))
    return token_distances(s_tokens), d_t


def class_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """CD: :func:`rd` with one group per class over the images carrying it (tokens ``[P, E]``)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()  # 0, still connected to the student graph
    return rd(*_distances(s_tokens, t_tokens), token_class)


def instance_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """ID: :func:`rd` with one group per image over its positive labels (tokens ``[P, E]``)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()
    return rd(*_distances(s_tokens, t_tokens), token_sample)


def led(
    s_tokens: Tensor,
    t_tokens: Tensor,
    token_sample: Tensor,
    token_class: Tensor,
    lambda_cd: float = 100.0,
    lambda_id: float = 1000.0,
) -> Tensor:
    """``λ_cd·CD + λ_id·ID`` over the positive tokens (defaults as L2D's config)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()
    d_s, d_t = _distances(s_tokens, t_tokens)  # shared by CD and ID
    return lambda_cd * rd(d_s, d_t, token_class) + lambda_id * rd(d_s, d_t, token_sample)


@register_loss("LED", slot="le")
class LED(DistillLoss):
    """``{"led_cd": λ_cd·CD, "led_id": λ_id·ID}`` (label-embedding slot); either cache form."""

    terms = ("led_cd", "led_id")

    def __init__(self, lambda_cd: float = 100.0, lambda_id: float = 1000.0) -> None:
        super().__init__()
        self.lambda_cd, self.lambda_id = lambda_cd, lambda_id

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        s_tokens, t_tokens, token_sample, token_class = batch.positive_tokens()
        if s_tokens.shape[0] == 0:
            zero = s_tokens.sum()
            return {"led_cd": zero, "led_id": zero}
        d_s, d_t = _distances(s_tokens, t_tokens)  # one [P, P] matrix per side for CD and ID
        return {
            "led_cd": self.lambda_cd * rd(d_s, d_t, token_class),
            "led_id": self.lambda_id * rd(d_s, d_t, token_sample),
        }
