"""MPSCD: multi-label prototype-aware structured contrastive distillation (this project's formulation).

Works on the batch's positive label-wise embeddings ("tokens"): student tokens ``s [P, E_s]``,
teacher tokens ``t [P, E_t]`` and their classes ``c [P]``. A learned linear head maps student
tokens into teacher space, ``u = norm(W s + b)``; teacher tokens are normalised, ``v = norm(t)``.
Class prototypes ``Pr [C, E_t]`` (unit rows, from :mod:`mlkd_cache.cache.prototypes`) are a
buffer, corrected after every training step by a momentum update with the batch's teacher tokens.

- PCRD (contrastive representation distillation), per token p, temperature ``tau``:
  keys K = {v_1..v_P} ∪ {Pr_k : k valid}, positives {v_p, Pr_{c_p}},
  ``loss_p = log Σ_{k∈K} exp(u_p·k/τ) − log Σ_{k∈pos(p)} exp(u_p·k/τ)``; PCRD = mean_p loss_p.
- PCSD (contrastive structure distillation), temperature ``tau_s``:
  ``KL(T_p ‖ S_p)`` of sample-to-sample distributions over q ≠ p (``softmax_q v_p·v_q/τ_s`` vs
  ``softmax_q u_p·u_q/τ_s``) plus of sample-to-prototype distributions over valid classes
  (``softmax_k v_p·Pr_k/τ_s`` vs ``softmax_k u_p·Pr_k/τ_s``); PCSD = mean_p (KL_ss + KL_sp).

A prototype row that is all zero (a class with no positive in the cache) is left out of every
key set and distribution. The full derivation and the differences from the public MPSCD code
are in ``docs/losses.md``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import DistillLoss, KDBatch, register_loss

__all__ = ["pcrd", "pcsd", "corrected_prototypes", "MPSCD"]


def _off_diagonal(x: Tensor) -> Tensor:
    """``[P, P] -> [P, P-1]``: every row without its diagonal entry, order kept."""
    P = x.shape[0]
    return x.flatten()[1:].view(P - 1, P + 1)[:, :-1].reshape(P, P - 1)


def pcrd(u: Tensor, v: Tensor, classes: Tensor, prototypes: Tensor, tau: float = 0.1) -> Tensor:
    """Prototype-aware contrastive representation distillation (InfoNCE), mean over tokens.

    ``u [P, E]`` projected student tokens and ``v [P, E]`` teacher tokens, both unit rows;
    ``classes [P]``; ``prototypes [C, E]`` unit rows (zero rows = absent classes, not keys).
    """
    valid = prototypes.norm(dim=1) > 0  # [C]
    keys = torch.cat([v, prototypes[valid]])  # [P + C', E]
    logits = u @ keys.T / tau  # [P, P + C']
    own = (u * v).sum(dim=1) / tau  # [P]: u_p·v_p / τ
    proto = ((u * prototypes[classes]).sum(dim=1) / tau).masked_fill(~valid[classes], float("-inf"))  # u_p·Pr_{c_p} / τ
    positive = torch.logsumexp(torch.stack([own, proto], dim=1), dim=1)  # [P]
    return (torch.logsumexp(logits, dim=1) - positive).mean()


def _kl_rows(logits_t: Tensor, logits_s: Tensor) -> Tensor:
    """``[P]``: KL(softmax(logits_t) ‖ softmax(logits_s)) per row."""
    log_t, log_s = F.log_softmax(logits_t, dim=1), F.log_softmax(logits_s, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1)


def pcsd(u: Tensor, v: Tensor, prototypes: Tensor, tau_s: float = 0.1) -> Tensor:
    """Prototype-aware contrastive structure distillation, mean over tokens (needs P >= 2).

    KL(teacher ‖ student) of the sample-to-sample similarity distributions (over the other
    tokens) plus that of the sample-to-prototype distributions (over the valid classes).
    """
    sample_t = _off_diagonal(v @ v.T) / tau_s  # [P, P-1]
    sample_s = _off_diagonal(u @ u.T) / tau_s
    kl = _kl_rows(sample_t, sample_s)  # [P]
    valid_prototypes = prototypes[prototypes.norm(dim=1) > 0]  # [C', E]
    if len(valid_prototypes):
        kl = kl + _kl_rows(v @ valid_prototypes.T / tau_s, u @ valid_prototypes.T / tau_s)
    return kl.mean()


@torch.no_grad()
def corrected_prototypes(prototypes: Tensor, v: Tensor, classes: Tensor, momentum: float = 0.9) -> Tensor:
    """``[C, E]`` after the batch-wise correction: for every class c present in ``classes``,
    ``Pr_c <- norm(m·Pr_c + (1-m)·mean_{p: c_p = c} v_p)``; other rows are returned unchanged.

    Under ``torch.distributed`` the per-class sums and counts are all-reduced first, so every
    rank applies the same update.
    """
    C = prototypes.shape[0]
    sums = torch.zeros_like(prototypes).index_add_(0, classes, v.to(prototypes.dtype))  # [C, E]
    counts = torch.zeros(C, dtype=prototypes.dtype, device=prototypes.device)
    counts.index_add_(0, classes, torch.ones(len(classes), dtype=prototypes.dtype, device=prototypes.device))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    present = (counts > 0).unsqueeze(1)  # [C, 1]
    mixed = momentum * prototypes + (1 - momentum) * sums / counts.clamp(min=1).unsqueeze(1)
    return torch.where(present, F.normalize(mixed, dim=1), prototypes)


@register_loss("MPSCD", slot="le")
class MPSCD(DistillLoss):
    """``{"mpscd_pcrd": λ_pcrd·PCRD, "mpscd_pcsd": λ_pcsd·PCSD}`` over the batch's positive tokens.

    ``proj`` (``Linear(E_s, E_t)``) is trained with the student. ``prototypes`` ``[C, E_t]``
    is a buffer: pass it here or call :meth:`set_prototypes` before the first forward. In
    training mode the loss uses the prototypes as they were before this batch, then applies
    :func:`corrected_prototypes` with the batch's teacher tokens.
    """

    terms = ("mpscd_pcrd", "mpscd_pcsd")
    prototypes: Tensor  # a registered buffer [C, E_t]

    def __init__(
        self,
        student_embed_dim: int,
        teacher_embed_dim: int,
        num_classes: int,
        prototypes: Optional[Tensor] = None,
        lambda_pcrd: float = 1.0,
        lambda_pcsd: float = 1.0,
        tau: float = 0.1,
        tau_s: float = 0.1,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if tau <= 0 or tau_s <= 0:
            raise ConfigError(f"MPSCD temperatures must be > 0, got tau={tau}, tau_s={tau_s}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"MPSCD momentum must lie in [0, 1], got {momentum}")
        self.lambda_pcrd, self.lambda_pcsd = float(lambda_pcrd), float(lambda_pcsd)
        self.tau, self.tau_s, self.momentum = float(tau), float(tau_s), float(momentum)
        self.proj = nn.Linear(student_embed_dim, teacher_embed_dim)
        self.register_buffer("prototypes", torch.zeros(num_classes, teacher_embed_dim))
        self.has_prototypes = False
        if prototypes is not None:
            self.set_prototypes(prototypes)

    def set_prototypes(self, prototypes: Tensor) -> None:
        """Copy ``prototypes [C, E_t]`` (rows are normalised; zero rows stay zero) into the buffer."""
        expected = tuple(self.prototypes.shape)
        if tuple(prototypes.shape) != expected:
            raise ConfigError(
                f"MPSCD prototypes have shape {list(prototypes.shape)}, expected [num_classes, teacher_embed_dim] = "
                f"{list(expected)}; rebuild them from the cache this student trains on"
            )
        with torch.no_grad():
            self.prototypes.copy_(F.normalize(prototypes.to(self.prototypes), dim=1))
        self.has_prototypes = True

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "prototypes" in state_dict:
            self.has_prototypes = True

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        if not self.has_prototypes:
            raise ConfigError(
                "MPSCD has no class prototypes; build them with load_or_compute_prototypes(cache) and call set_prototypes"
            )
        s, t, _, classes = batch.positive_tokens()  # [P, E_s], [P, E_t], [P], [P]
        (e_s, e_t), (C, E_t) = (s.shape[1], t.shape[1]), self.prototypes.shape
        if e_s != self.proj.in_features or e_t != E_t or batch.z_s.shape[1] != C:
            raise ConfigError(
                f"MPSCD was built for num_classes={C}, student_embed_dim={self.proj.in_features}, "
                f"teacher_embed_dim={E_t}; this batch has {batch.z_s.shape[1]} classes, student embeddings of "
                f"{e_s} and teacher embeddings of {e_t}: build the Distiller with the student's and the cache's sizes"
            )
        projected = self.proj(s.to(self.proj.weight.dtype))  # [P, E_t]
        u = F.normalize(projected, dim=1)
        v = F.normalize(t.to(u.dtype), dim=1)
        classes = classes.long()
        prototypes = self.prototypes.to(u.dtype)
        if len(u) < 2:  # zero terms that still reach the projection head
            zero = projected.sum() * 0.0
            loss_pcrd, loss_pcsd = zero, zero.clone()
        else:
            loss_pcrd = pcrd(u, v, classes, prototypes, self.tau)
            loss_pcsd = pcsd(u, v, prototypes, self.tau_s)
        if self.training:  # every rank, even one without tokens: the update may all-reduce
            self.prototypes.copy_(corrected_prototypes(self.prototypes, v.detach(), classes, self.momentum))
        return {"mpscd_pcrd": self.lambda_pcrd * loss_pcrd, "mpscd_pcsd": self.lambda_pcsd * loss_pcsd}
