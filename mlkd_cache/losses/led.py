"""LED: label-wise embedding distillation (L2D), CD (class-aware) + ID (instance-aware).

Both parts are one relational distance loss :func:`rd` applied to groups of positive-label
embeddings: CD has one group per class (the batch images that carry it), ID one group per
image (its positive labels). Each part computes one ``[P, P]`` distance matrix of the batch's
positive tokens per side, each group centred on its own mean, and masks it by "same class" (CD)
or "same image" (ID), so nothing loops over classes or images and nothing is padded to the
largest group.

Differences from L2D's ``cd.py`` / ``id.py`` / ``huber_dist.py`` (same math otherwise: distances
``sqrt(max(d², 1e-12))``, each matrix divided by the mean of its positive entries, teacher side
without gradient, smooth-L1 summed over the matrix and divided by its number of rows, groups
with < 2 members skipped, summed over groups):

- L2D finds a group's members as the rows that are not all zero after masking by the labels,
  so a positive embedding that is exactly zero is dropped (and student and teacher could then
  disagree on the member count). Here members are exactly the positive labels.
- L2D's pairwise matrix includes the (zero) diagonal in the smooth-L1 sum; it contributes 0,
  so excluding it, as here, gives the same value.
- L2D computes ``d²`` as ``|a|² + |b|² - 2a·b`` from the tokens as they are. Tokens of one group
  (a class's tokens, an image's tokens) often lie close together far from the origin, and that
  form then cancels: its rounding grows by ``(|a|² + |b|²) / d²``. Here each group is first
  centred on its own mean (:func:`token_distances`), which leaves its distances unchanged in
  exact arithmetic and makes the norms the form subtracts about as small as the distances.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["token_distances", "rd", "class_distance", "instance_distance", "led", "LED"]

EPS = 1e-12  # floor of a squared distance before sqrt (as L2D): keeps sqrt's gradient finite


class _Groups(NamedTuple):
    """A grouping of ``P`` tokens: ``inv [P]`` compact group ids, ``pair [P, P]`` bool (two
    tokens of one group, off the diagonal), ``members [G]`` tokens per group."""

    inv: Tensor
    pair: Tensor
    members: Tensor


def _groups(group: Tensor) -> _Groups:
    _, inv = torch.unique(group, return_inverse=True)
    eye = torch.eye(len(inv), dtype=torch.bool, device=inv.device)
    return _Groups(inv, (inv[:, None] == inv[None, :]) & ~eye, torch.bincount(inv))


class _Gram(torch.autograd.Function):
    """``x @ x.T`` ``[P, P]`` whose backward is one matrix product, ``(g + gᵀ) @ x``, where
    autograd would do two (one per operand)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x @ x.T

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return (grad + grad.T) @ x


def _centred_distances(e: Tensor, groups: _Groups) -> Tensor:
    """``sqrt(max(d², 1e-12))`` ``[P, P]``, valid between tokens of one group (the rest is not a
    distance): each group centred on its mean, then one matrix product (:func:`token_distances`)."""
    with torch.autocast(e.device.type, enabled=False):
        x = e if e.dtype in (torch.float32, torch.float64) else e.float()
        with torch.no_grad():  # a constant shift per group: the gradient is the distances' own
            count = groups.members.to(x.dtype)  # [G]
            centre = x.new_zeros(len(count), x.shape[1]).index_add_(0, groups.inv, x) / count[:, None]  # [G, E]
        x = x - centre[groups.inv]  # [P, E]
        sq = x.pow(2).sum(dim=1)  # [P]
        d2 = sq[:, None] + sq[None, :] - 2.0 * _Gram.apply(x)  # [P, P]
        return d2.clamp(min=EPS).sqrt()


def token_distances(e: Tensor, group: Tensor) -> Tensor:
    """Euclidean distances among the tokens of each group: ``e [P, E]``, ``group [P]`` int ->
    ``[P, P]``, ``sqrt(max(d², 1e-12))`` between two tokens of one group, 0 across groups and on
    the diagonal.

    Each group is centred on its mean first (a shift: its distances are unchanged in exact
    arithmetic), then ``d² = |x|² + |y|² - 2x·y`` is one matrix product. Uncentred, that form
    loses ``(|a|² + |b|²) / d²`` times the rounding for tokens close together far from the
    origin (up to 67,000 among the digits teacher's tokens of one class); centred, the norms it
    subtracts are about the size of the group's spread, so it keeps nearly float32's precision at
    a matrix product's cost, with ``[P, E]`` and ``[P, P]`` buffers (not every difference,
    ``[P, P, E]``). Computed in float32 at least, outside any autocast region.
    """
    groups = _groups(group)
    d = _centred_distances(e, groups)
    return torch.where(groups.pair, d, torch.zeros_like(d))


def _relational(d_s: Tensor, d_t: Tensor, groups: _Groups) -> Tensor:
    """:func:`rd` on distances valid within each group of ``groups``."""
    inv, pair = groups.inv, groups.pair
    g = len(groups.members)
    members = groups.members.to(d_s.dtype)  # [G]
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


def rd(d_s: Tensor, d_t: Tensor, group: Tensor) -> Tensor:
    """Relational distance loss summed over groups, from token distance matrices.

    ``d_s, d_t [P, P]`` (student / teacher token distances, read between tokens of one group
    only), ``group [P]`` int (the group of each token: its class for CD, its image for ID). Per
    group: the distances among its members, each matrix divided by the mean of its entries
    (teacher side without grad); smooth-L1 (β=1) between them summed over the member pairs,
    divided by the number of members; groups with fewer than 2 members add 0; summed over groups.
    Masks over one ``[P, P]`` matrix replace padded per-group tensors: no loop and no padding to
    the largest group.
    """
    return _relational(d_s, d_t, _groups(group))


def _group_rd(s_tokens: Tensor, t_tokens: Tensor, group: Tensor) -> Tensor:
    """:func:`rd` of the student's and the teacher's token distances within each group."""
    groups = _groups(group)
    with torch.no_grad():
        d_t = _centred_distances(t_tokens.to(s_tokens.dtype), groups)
    return _relational(_centred_distances(s_tokens, groups), d_t, groups)


def class_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """CD: :func:`rd` with one group per class over the images carrying it (tokens ``[P, E]``)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()  # 0, still connected to the student graph
    return _group_rd(s_tokens, t_tokens, token_class)


def instance_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """ID: :func:`rd` with one group per image over its positive labels (tokens ``[P, E]``)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()
    return _group_rd(s_tokens, t_tokens, token_sample)


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
    cd, id_ = _group_rd(s_tokens, t_tokens, token_class), _group_rd(s_tokens, t_tokens, token_sample)
    return lambda_cd * cd + lambda_id * id_


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
        return {
            "led_cd": self.lambda_cd * class_distance(s_tokens, t_tokens, token_sample, token_class),
            "led_id": self.lambda_id * instance_distance(s_tokens, t_tokens, token_sample, token_class),
        }
