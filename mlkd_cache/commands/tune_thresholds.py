"""``tune-thresholds``: per-class decision thresholds chosen on a labelled split, stored in the
model's card (:mod:`mlkd_cache.thresholds` holds the rule, the objectives and the fallback).

:func:`tune` scores a checkpoint on a split of its own dataset through the one eval pipeline
(:func:`~mlkd_cache.runtime.scoring.score`), chooses the thresholds and writes them into a
checkpoint's card atomically, weights and every other entry unchanged: into a copy at ``out``
(``-o``; an existing file only with ``overwrite``, the rule of ``predict`` and ``export``:
:func:`~mlkd_cache.runtime.deploy.check_output`), or into the checkpoint itself
(:func:`~mlkd_cache.runtime.checkpoint.update_card`). :func:`~mlkd_cache.runtime.scoring.tune_model` does the same for a model in
memory (distill-student stores thresholds tuned on ``val`` in ``student.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ..config import VAL_SPLIT_HINT
from ..data import available_splits, has_split
from ..distributed import barrier, init_distributed
from ..errors import ConfigError
from ..metrics import sigmoid, threshold_f1
from ..models.card import ModelCard
from ..runtime.checkpoint import load_checkpoint, model_entries, save_model, update_card
from ..runtime.deploy import check_output, make_output_folder
from ..runtime.scoring import load_model_on_ranks, score
from ..thresholds import DEFAULT_OBJECTIVE, TUNING_SPLIT, UNTUNED, parse_objective, tune_thresholds

__all__ = ["tune"]


def tune(
    checkpoint: Union[str, Path],
    split: Optional[str] = None,
    objective: str = DEFAULT_OBJECTIVE,
    data_root: Optional[str] = None,
    batch_size: Optional[int] = None,
    workers: Optional[int] = None,
    out: Optional[Union[str, Path]] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Tune per-class thresholds of ``checkpoint`` for ``objective`` on ``split`` (default
    ``val``, which the dataset must have) and store them in the card of a copy written to ``out``
    (which must not exist unless ``overwrite``; the folders above it are made), or without
    ``out`` in the checkpoint's own card; under torchrun rank 0 writes.

    Returns ``{"checkpoint", "out" (the file written), "split", "samples", "thresholds" (as
    stored), "at_0.5", "at_tuned" (threshold-protocol metrics in percent on the split), "is_main"}``."""
    goal = parse_objective(objective)  # a bad objective or -o stops before any work
    path = Path(checkpoint)
    target = path if out is None else check_output(out, overwrite)
    loaded = load_model_on_ranks(path, init_distributed())  # read once here; update_card rewrites rank 0's file
    card = loaded.card
    cfg = card.config_with(data_root=data_root)
    why = "tuning on the test split leaks it into the scores you report, on train is optimistic"
    held_out = (
        f"it was trained without val_split: train it with {VAL_SPLIT_HINT} in the config, which "
        f"holds a {TUNING_SPLIT} split out of the train split"
    )
    if split is None:
        if not has_split(cfg, TUNING_SPLIT):
            raise ConfigError(
                f"dataset {cfg.dataset} of {path} has no {TUNING_SPLIT} split; {held_out}, or choose a split with --split ({why})"
            )
        split = TUNING_SPLIT
    elif not has_split(cfg, split):
        hint = f" ({held_out})" if split == TUNING_SPLIT else ""
        raise ConfigError(
            f"dataset {cfg.dataset} of {path} has no {split!r} split; choose --split among {', '.join(available_splits(cfg))}{hint}"
        )
    scored = score(loaded, data_root, batch_size, workers, split, keep_logits=True)
    z, y = scored["logits"], scored["labels"]
    thresholds = {**tune_thresholds(sigmoid(z), y, goal, card.class_names), "split": split, "samples": int(scored["samples"])}
    if scored["is_main"]:
        if out is None:
            update_card(path, card.replace(thresholds=thresholds))
        else:
            _save_copy(path, card.replace(thresholds=thresholds), target)
    barrier(init_distributed())  # every rank returns once the file holds them
    return {
        "checkpoint": str(path),
        "out": str(target),
        "split": split,
        "samples": int(scored["samples"]),
        "thresholds": thresholds,
        "at_0.5": threshold_f1(z, y, UNTUNED),
        "at_tuned": threshold_f1(z, y, np.asarray(thresholds["values"])),
        "is_main": scored["is_main"],
    }


def _save_copy(source: Path, card: ModelCard, out: Path) -> None:
    """The checkpoint at ``source`` with ``card`` as its card, written to ``out`` atomically (the
    folders above it made): its weights and every other entry unchanged."""
    entries = model_entries(load_checkpoint(source))
    make_output_folder(out)
    save_model(out, card, entries.pop("model"), **entries)
