"""Optimiser and schedule as L2D trains: Adam (or AdamW) with weight decay on weights only,
OneCycle over the planned epochs."""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

from ..config import OPTIMIZERS


def weight_decay_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """L2D's two parameter groups: biases and 1-D parameters (norm scales) without decay,
    everything else with ``weight_decay``. Frozen parameters are left out."""
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


# How the update runs: "fused" (one kernel over all parameters; CPU and CUDA since torch 2.4),
# "foreach" (batched tensor ops) or "for-loop" (torch's per-parameter loop, its CPU default).
# The three compute the same update; fused is the fastest (benchmarks/distill_throughput.py).
FLAGS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
IMPLEMENTATIONS = tuple(FLAGS)
DEFAULT_IMPLEMENTATION = "fused"


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, implementation: str = DEFAULT_IMPLEMENTATION
) -> torch.optim.Optimizer:
    """``adam`` (L2D: Adam whose per-group weight decay is an L2 term) or ``adamw``, with the
    update ``implementation`` of :data:`IMPLEMENTATIONS` (fused by default)."""
    groups = weight_decay_groups(model, weight_decay)
    optimizer_class = getattr(torch.optim, OPTIMIZERS[name])  # config.OPTIMIZERS: name -> torch.optim class
    return optimizer_class(groups, lr=lr, **FLAGS[implementation])


def keep_implementation(optimizer: torch.optim.Optimizer, implementation: str = DEFAULT_IMPLEMENTATION) -> None:
    """After ``load_state_dict``: the groups carry the saved flags, so a checkpoint written by for-loop
    Adam would resume unfused. Set ``implementation``'s flags again; fused Adam wants each ``step``
    as a float32 tensor on its parameter's device."""
    flags = {"fused": None, "foreach": None, **FLAGS[implementation]}
    for group in optimizer.param_groups:
        group.update(flags)
        if flags["fused"]:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if "step" in state:
                    state["step"] = torch.as_tensor(state["step"], dtype=torch.float32, device=p.device)


def build_one_cycle(
    optimizer: torch.optim.Optimizer, lr: float, steps_per_epoch: int, epochs: int, pct_start: float
) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle planned for ``epochs`` x ``steps_per_epoch`` steps (L2D: pct_start 0.2), any length
    from one step on.

    torch's warm-up ends at step ``pct_start * total - 1`` and divides by that phase's length, which
    is 0 when ``pct_start * total`` is exactly 1 (5 steps at 0.2, 10 at 0.1): ZeroDivisionError.
    There the warm-up is moved a float's width earlier, so the first step starts at the peak ``lr``
    (the schedule's limit); every other length keeps torch's schedule bit for bit. As in torch, the
    last step runs at the final rate (``lr / 25 / 1e4``)."""
    total = steps_per_epoch * epochs
    if pct_start * total == 1.0:
        pct_start = math.nextafter(pct_start, 0.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, steps_per_epoch=steps_per_epoch, epochs=epochs, pct_start=pct_start
    )
