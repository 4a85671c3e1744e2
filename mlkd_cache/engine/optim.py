"""Optimiser and schedule as L2D trains: Adam (or AdamW) with weight decay on weights only,
OneCycle over the planned epochs."""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn


def weight_decay_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """L2D's two parameter groups: biases and 1-D parameters (norm scales) without decay,
    everything else with ``weight_decay``. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}

# How the update runs: "fused" (one kernel over all parameters; CPU and CUDA since torch 2.4),
# "foreach" (batched tensor ops) or "for-loop" (torch's per-parameter loop, its CPU default).
# The three compute the same update; fused is the fastest (benchmarks/distill_throughput.py).
IMPLEMENTATIONS = ("fused", "foreach", "for-loop")


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, implementation: str = "fused"
) -> torch.optim.Optimizer:
    """``adam`` (L2D: Adam whose per-group weight decay is an L2 term) or ``adamw``, with the
    update ``implementation`` of :data:`IMPLEMENTATIONS` (fused by default)."""
    groups = weight_decay_groups(model, weight_decay)
    cls = OPTIMIZERS[name]
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[implementation]
    return cls(groups, lr=lr, **flags)


def build_one_cycle(
    optimizer: torch.optim.Optimizer, lr: float, steps_per_epoch: int, epochs: int, pct_start: float
) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle planned for ``epochs`` x ``steps_per_epoch`` steps (L2D: pct_start 0.2)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, steps_per_epoch=steps_per_epoch, epochs=epochs, pct_start=pct_start
    )
