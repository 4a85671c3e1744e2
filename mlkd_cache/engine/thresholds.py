"""``tune-thresholds``: per-class decision thresholds chosen on a labelled split, stored in the
model's card (:mod:`mlkd_cache.thresholds` holds the rule, the objectives and the fallback).

:func:`tune` scores a checkpoint on a split of its own dataset through the one eval pipeline
(:func:`~mlkd_cache.engine.evaluate.run`), chooses the thresholds and rewrites the checkpoint's
card atomically (:func:`~mlkd_cache.engine.checkpoint.update_card`: weights and every other
entry unchanged). :func:`tune_model` does the same for a model in memory (distill-student
stores thresholds tuned on ``val`` in ``student.pt``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
from torch import nn

from ..config import Config
from ..data import available_splits, has_split
from ..data.views import ViewDataset
from ..distributed import DistInfo, barrier, init_distributed
from ..errors import ConfigError, DataError
from ..metrics import sigmoid, threshold_f1
from ..thresholds import DEFAULT_OBJECTIVE, parse_objective, tune_thresholds
from . import evaluate
from .checkpoint import update_card

__all__ = ["TUNING_SPLIT", "tune_model", "tune"]

log = logging.getLogger("mlkd_cache")

TUNING_SPLIT = "val"  # the split thresholds are tuned on unless told otherwise


def tune_model(
    model: nn.Module,
    data: ViewDataset,
    batch_size: int,
    workers: int,
    info: DistInfo,
    amp: bool,
    split: str,
    objective: str = DEFAULT_OBJECTIVE,
    scored: Optional[evaluate.Scored] = None,
) -> Optional[Dict[str, Any]]:
    """Thresholds of ``model`` tuned for ``objective`` on ``data`` (the eval inputs of ``split``),
    as ``ModelCard.thresholds`` holds them, identical on every rank; None, said in a warning,
    where the split has no positive label. ``scored``: the model's logits on ``data`` when they
    are at hand, else every rank must call it (the logits are gathered across ranks). The model
    is left as it was, and the scoring draws from no global RNG (``evaluate.eval_loader``)."""
    if scored is None:
        scored = evaluate.evaluate_model(model, data, batch_size, workers, info, amp)
    z, y = scored.logits, scored.labels
    try:
        tuned = tune_thresholds(sigmoid(z), y, objective, data.class_names)
    except DataError as exc:  # after the gather: alike on every rank
        if info.is_main:
            log.warning("no decision thresholds tuned on the %s split: %s", split, exc)
        return None
    if info.is_main:
        log.info(
            "decision thresholds: %s on the %s split (%d images), %d of %d classes at the global one",
            tuned["objective"],
            split,
            len(data),
            len(tuned["fallback"]),
            len(tuned["values"]),
        )
    return {**tuned, "split": split, "samples": len(data)}


def tune(
    checkpoint: Union[str, Path],
    split: Optional[str] = None,
    objective: str = DEFAULT_OBJECTIVE,
    data_root: Optional[str] = None,
    batch_size: Optional[int] = None,
    workers: Optional[int] = None,
) -> Dict[str, Any]:
    """Tune per-class thresholds of ``checkpoint`` for ``objective`` on ``split`` (default
    ``val``, which the dataset must have) and store them in its card; under torchrun rank 0 writes.

    Returns ``{"checkpoint", "split", "samples", "thresholds" (as stored), "at_0.5", "at_tuned"
    (threshold-protocol metrics in percent on the split), "is_main"}``."""
    goal = parse_objective(objective)  # a bad objective stops before any work
    path = Path(checkpoint)
    loaded = evaluate.load_model_on_ranks(path, init_distributed())  # read once here; update_card rewrites rank 0's file
    card = loaded.card
    cfg = Config.from_dict({**card.config, **({"data_root": data_root} if data_root is not None else {})})
    why = "tuning on the test split leaks it into the scores you report, on train is optimistic"
    if split is None:
        if not has_split(cfg, TUNING_SPLIT):
            raise ConfigError(f"dataset {cfg.dataset} of {path} has no {TUNING_SPLIT} split; choose one with --split ({why})")
        split = TUNING_SPLIT
    elif not has_split(cfg, split):
        raise ConfigError(
            f"dataset {cfg.dataset} of {path} has no {split!r} split; choose --split among {', '.join(available_splits(cfg))}"
        )
    scored = evaluate.score(loaded, data_root, batch_size, workers, split, keep_logits=True)
    z, y = scored["logits"], scored["labels"]
    thresholds = {**tune_thresholds(sigmoid(z), y, goal, card.class_names), "split": split, "samples": int(scored["samples"])}
    if scored["is_main"]:
        update_card(path, card.replace(thresholds=thresholds))
    barrier(init_distributed())  # every rank returns once the file holds them
    return {
        "checkpoint": str(path),
        "split": split,
        "samples": int(scored["samples"]),
        "thresholds": thresholds,
        "at_0.5": threshold_f1(z, y, 0.5),
        "at_tuned": threshold_f1(z, y, np.asarray(thresholds["values"])),
        "is_main": scored["is_main"],
    }
