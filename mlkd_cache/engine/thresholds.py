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
import torch
from torch import nn

from ..config import Config
from ..data import DATASETS, SPLITS, has_split
from ..data.views import ViewDataset
from ..distributed import DistInfo, barrier, init_distributed
from ..errors import ConfigError, DataError
from ..metrics import sigmoid, threshold_f1
from ..thresholds import DEFAULT_OBJECTIVE, parse_objective, tune_thresholds
from . import evaluate
from .checkpoint import load_checkpoint, read_card, update_card

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
) -> Optional[Dict[str, Any]]:
    """Thresholds of ``model`` tuned for ``objective`` on ``data`` (the eval inputs of ``split``),
    as ``ModelCard.thresholds`` holds them, identical on every rank; None, said in a warning,
    where the split has no positive label. Every rank must call it (the logits are gathered
    across ranks); the model and the global RNG are left as they were."""
    with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global RNG
        z, y = evaluate.predict(model, evaluate.eval_loader(data, batch_size, workers, info), info, amp, len(data), data.spec)
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
    card = read_card(load_checkpoint(path), path)
    cfg = Config.from_dict({**card.config, **({"data_root": data_root} if data_root is not None else {})})
    why = "tuning on the test split leaks it into the scores you report, on train is optimistic"
    if split is None:
        if not has_split(cfg, TUNING_SPLIT):
            raise ConfigError(f"dataset {cfg.dataset} of {path} has no {TUNING_SPLIT} split; choose one with --split ({why})")
        split = TUNING_SPLIT
    elif not has_split(cfg, split):
        splits = [s for s in getattr(DATASETS.get(cfg.dataset), "splits", SPLITS) if has_split(cfg, s)]
        raise ConfigError(f"dataset {cfg.dataset} of {path} has no {split!r} split; choose --split among {', '.join(splits)}")
    scored = evaluate.run(path, data_root, batch_size, workers, split, keep_logits=True)
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
