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


def loop_mpscd(u: Tensor, v: Tensor, classes: Tensor, prototypes: Tensor, tau: float = 0.1, tau_s: float = 0.1):
    """(PCRD, PCSD) with one Python iteration per positive token (vector ops within a token).

    ``u [P, E]`` projected student tokens and ``v [P, E]`` teacher tokens (unit rows),
    ``classes [P]``, ``prototypes [C, E]`` unit rows (zero rows are not keys).
    """
    P = len(u)
    protos = prototypes[prototypes.norm(dim=1) > 0]
    valid = prototypes.norm(dim=1) > 0
    pcrd_total, pcsd_total = u.new_zeros(()), u.new_zeros(())
    for p in range(P):
        keys = torch.cat([v, protos])
        scores = keys @ u[p] / tau
        positive = [u[p] @ v[p] / tau]
        if valid[classes[p]]:
            positive.append(u[p] @ prototypes[classes[p]] / tau)
        pcrd_total = pcrd_total + torch.logsumexp(scores, 0) - torch.logsumexp(torch.stack(positive), 0)
        others = torch.cat([torch.arange(p), torch.arange(p + 1, P)])
        for t_scores, s_scores in ((v[others] @ v[p], u[others] @ u[p]), (protos @ v[p], protos @ u[p])):
            log_t = torch.log_softmax(t_scores / tau_s, 0)
            log_s = torch.log_softmax(s_scores / tau_s, 0)
            pcsd_total = pcsd_total + (log_t.exp() * (log_t - log_s)).sum()
    return pcrd_total / P, pcsd_total / P
