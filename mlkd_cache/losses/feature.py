"""Relation-based feature distillation baselines on pooled features: RKD and PKT.

Both compare relations among the N samples of a batch, so the student and teacher feature
widths may differ (``f_s [N, D_s]``, ``f_t [N, D_t]``). Reductions follow L2D's ``rkd.py`` and
``pkt.py``; the only change is RKD's default weights, see :func:`rkd`.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["rkd_distance", "rkd_angle", "rkd", "pkt", "RKD", "PKT"]

EPS = 1e-12  # floor of a squared distance before sqrt (as L2D)


def _normalised_distance(f: Tensor) -> Tensor:
    """``[N, N]`` Euclidean distances (diagonal 0) divided by the mean of the positive entries."""
    sq = f.pow(2).sum(dim=1)  # [N]
    d2 = sq[:, None] + sq[None, :] - 2 * f @ f.t()  # [N, N]
    eye = torch.eye(f.shape[0], dtype=torch.bool, device=f.device)
    d = torch.where(eye, torch.zeros_like(d2), d2.clamp(min=EPS).sqrt())
    positive = d > 0
    mean = d.sum() / positive.sum().clamp(min=1) if bool(positive.any()) else d.new_ones(())
    return d / mean


def _angles(f: Tensor) -> Tensor:
    """``[N, N, N]``: entry ``[a, b, c]`` is the cosine between ``f_b − f_a`` and ``f_c − f_a`` (0 if either is 0)."""
    diff = F.normalize(f[None, :, :] - f[:, None, :], p=2, dim=2)  # [a, b, D]: unit (f_b - f_a)
    return diff @ diff.transpose(1, 2)  # [a, b, c]


def rkd_distance(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Distance term: smooth-L1 between normalised distance matrices, summed, divided by N."""
    with torch.no_grad():
        d_t = _normalised_distance(f_t.to(f_s.dtype))
    d_s = _normalised_distance(f_s)
    return F.smooth_l1_loss(d_s, d_t, reduction="sum") / f_s.shape[0]


def rkd_angle(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Angle term: smooth-L1 between the ``[N, N, N]`` cosine tensors, averaged over entries."""
    with torch.no_grad():
        a_t = _angles(f_t.to(f_s.dtype))
    return F.smooth_l1_loss(_angles(f_s), a_t, reduction="mean")


def rkd(f_s: Tensor, f_t: Tensor, w_dist: float = 25.0, w_angle: float = 50.0) -> Tensor:
    """RKD (Park et al. 2019): ``w_dist·distance + w_angle·angle``.

    Default weights are the paper's (25, 50); L2D's ``RKD(x=10, y=10)`` uses 10 and 10, so pass
    ``w_dist=10, w_angle=10`` to reproduce its runs. Exactly 0 when ``f_s == f_t``.
    """
    return w_dist * rkd_distance(f_s, f_t) + w_angle * rkd_angle(f_s, f_t)


def _similarity_distribution(f: Tensor, eps: float) -> Tensor:
    """Rows of cosine similarities shifted to ``[0, 1]`` and normalised to sum 1: ``[N, N]``."""
    f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    sim = (f @ f.t() + 1.0) / 2.0  # [N, N]
    return sim / sim.sum(dim=1, keepdim=True)


def pkt(f_s: Tensor, f_t: Tensor, eps: float = 1e-7) -> Tensor:
    """PKT (Passalis & Tefas 2018): ``mean over [N, N] of q_t·log((q_t + eps) / (q_s + eps))``.

    ``q`` are the row-normalised similarity distributions; L2D's reduction (mean over all N²
    entries, i.e. KL(teacher ‖ student) per row summed, divided by N²). Exactly 0 when ``f_s == f_t``.
    """
    q_s = _similarity_distribution(f_s, eps)
    with torch.no_grad():
        q_t = _similarity_distribution(f_t.to(f_s.dtype), eps)
    return (q_t * torch.log((q_t + eps) / (q_s + eps))).mean()


@register_loss("RKD", slot="ft")
class RKD(DistillLoss):
    """``{"rkd": rkd(f_s, f_t)}`` (feature slot)."""

    terms = ("rkd",)

    def __init__(self, w_dist: float = 25.0, w_angle: float = 50.0) -> None:
        super().__init__()
        self.w_dist, self.w_angle = w_dist, w_angle

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        return {"rkd": rkd(batch.need("RKD", "f_s"), batch.need("RKD", "f_t"), self.w_dist, self.w_angle)}


@register_loss("PKT", slot="ft")
class PKT(DistillLoss):
    """``{"pkt": pkt(f_s, f_t)}`` (feature slot)."""

    terms = ("pkt",)

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        return {"pkt": pkt(batch.need("PKT", "f_s"), batch.need("PKT", "f_t"))}
