"""Loop references for the vectorised losses: one Python iteration per class / image.

The same math as :mod:`mlkd_cache.losses.led`, written group by group (the way L2D computes
LED), for the speed comparison in ``benchmarks/losses.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _normalised_distance(e: Tensor) -> Tensor:
    """[M, M] distances (diagonal 0) divided by the mean of the off-diagonal entries."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=1e-12).sqrt()
    d = d * (1 - torch.eye(len(e), dtype=e.dtype, device=e.device))
    return d / d[d > 0].mean()


def loop_rd(s: Tensor, t: Tensor) -> Tensor:
    """Relational distance loss of one group: ``s [M, E_s]``, ``t [M, E_t]`` (M >= 2)."""
    with torch.no_grad():
        d_t = _normalised_distance(t)
    return F.smooth_l1_loss(_normalised_distance(s), d_t, reduction="sum") / len(s)


def loop_led(e_s: Tensor, e_t: Tensor, y: Tensor, lambda_cd: float = 100.0, lambda_id: float = 1000.0):
    """``(λ_cd·CD, λ_id·ID)`` from dense ``e_s [N, C, E_s]``, ``e_t [N, C, E_t]``, ``y [N, C]``."""
    pos = y > 0.5
    cd = e_s.new_zeros(())
    for c in range(y.shape[1]):
        if pos[:, c].sum() > 1:
            cd = cd + loop_rd(e_s[pos[:, c], c], e_t[pos[:, c], c])
    id_ = e_s.new_zeros(())
    for n in range(y.shape[0]):
        if pos[n].sum() > 1:
            id_ = id_ + loop_rd(e_s[n, pos[n]], e_t[n, pos[n]])
    return lambda_cd * cd, lambda_id * id_
