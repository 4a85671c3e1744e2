"""Bounds for comparing numbers computed by other kernels (another machine, another ATen CPU
capability, another batch shape): how far a quantity may move when its inputs move by rounding.

A metric that ranks scores (mAP, AP, top-k, a label set at a threshold) is not continuous in
them: two scores closer than their rounding may swap, and a weak model's near-tied scores then
move its mAP by far more than any float tolerance. Such a metric is compared across kernels only
through :func:`map_range`, the range it can take over every score within the logits' bound, or
not at all (compare the logits; compare the metric with the one computed from those very logits
in the same process). CONTRIBUTING.md states the rule.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from mlkd_cache.cache import codec
from mlkd_cache.metrics import mean_average_precision

__all__ = ["RECOMPUTE", "assert_map_of_recomputed", "logit_bound", "map_range", "recompute_bound", "target_tolerance"]

# A float32 model run on the same machine over other batches (another batch size, the samples in
# other positions, another rank's share): kernels whose sums depend on the batch may round each
# output differently. Allowed: 2^-16 of the tensor's largest magnitude. None was seen here
# (benchmarks/offline_online_gap.py: float32 caches bit-identical to the live teacher, natively
# and on the generic kernels).
RECOMPUTE = 2.0**-16


def recompute_bound(x) -> float:
    """:data:`RECOMPUTE` of the largest magnitude of ``x`` (logits, features): how far the same
    model's float32 outputs may move when it runs over other batches on this machine."""
    return logit_bound(x, rel=RECOMPUTE)


def target_tolerance(cache_dtype: str, live: torch.Tensor, coded: bool = True) -> torch.Tensor:
    """Elementwise bound of |cached - live| ``[..., K]``: storage rounding + the teacher's float32
    recompute (:data:`RECOMPUTE`). ``coded``: stored in the cache's precision (features,
    embeddings), else as logits are (float16 but in a float32 cache). int8 rounds each vector to
    half a step of its scale, max|row| / 127 (cache/codec.py); the IEEE floats to half an ulp."""
    dtype = cache_dtype if coded else codec.logits_dtype(cache_dtype)
    recompute = RECOMPUTE * live.abs().max()
    if dtype == "int8":
        return live.abs().amax(dim=-1, keepdim=True) * (0.5 / codec.INT8_MAX + 2.0**-20) + recompute
    u = torch.finfo(getattr(torch, dtype)).eps / 2
    return u * live.abs() + recompute


def logit_bound(logits, rel: float = 2.0**-13) -> float:
    """Elementwise bound of float32 logits from another kernel: ``rel`` of their largest magnitude.

    The default 2^-13 is 2^11 float32 ulps of the scale: room for sums taken in another order
    through a small network (each rounding is 2^-24 of its partial sum), far below what a wrong
    normalisation or weight moves (the size of the logits themselves)."""
    return rel * float(np.abs(np.asarray(logits, dtype=np.float64)).max())


def map_range(scores: np.ndarray, labels: np.ndarray, delta: float) -> Tuple[float, float]:
    """``(low, high)``: the least and the most mAP (percent) of any scores within ``delta`` of
    ``scores [N, C]`` elementwise.

    AP depends only on how each positive ranks against each negative, and moving a positive up
    or a negative down never lowers it. So the least mAP has every positive lowered by delta and
    every negative raised by delta, the most the reverse; every pair closer than 2·delta may
    swap, and no other pair can."""
    s = np.asarray(scores, dtype=np.float64)
    sign = np.where(np.asarray(labels) > 0, 1.0, -1.0)
    return mean_average_precision(s - delta * sign, labels), mean_average_precision(s + delta * sign, labels)


def assert_map_of_recomputed(value: float, logits: np.ndarray, labels: np.ndarray) -> None:
    """``value``, an mAP computed from these logits' model run over other batches (another rank's
    share, another batch size), is one that logits within :func:`recompute_bound` of ``logits``
    give: equal when no near-tied scores swap, never an exact comparison."""
    low, high = map_range(logits, labels, recompute_bound(logits))
    assert low <= value <= high, f"mAP {value} outside [{low}, {high}], what logits within the recompute bound give"
