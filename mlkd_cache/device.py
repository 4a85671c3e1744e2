"""Where a model runs, set up once: the device, its memory format and mixed precision.

Every stage that runs a model on a batch (training, evaluation, the dump, verify, the online
teacher) places it with :func:`place_model` and runs its forward under :func:`autocast_for`, so
CUDA gets channels-last weights and fp16 autocast (when the config's ``amp`` asks for it) in every
stage alike, and the CPU gets neither.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["as_device", "pick_device", "place_model", "amp_enabled", "autocast_for"]


def as_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` (``"cpu"``, ``"cuda:1"``, ``1``); a bad name is one line."""
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device; give a torch.device or a name such as 'cpu' or 'cuda:0'") from None


def pick_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` moved to ``device`` (in place, returned), channels-last on CUDA: the layout
    :func:`~mlkd_cache.data.transforms.model_input` gives its inputs there."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def amp_enabled(wanted: bool, device: torch.device) -> bool:
    """Mixed precision runs when the config asks for it (``amp``) and the device is CUDA."""
    return bool(wanted) and device.type == "cuda"


def autocast_for(device: torch.device, enabled: bool) -> ContextManager[Any]:
    """fp16 autocast on CUDA when ``enabled``; a no-op context on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()
