"""Scoring a model on a split: logits for every sample (gathered across ranks), then metrics;
and per-class decision thresholds tuned on them (:func:`tune_model`; :mod:`mlkd_cache.thresholds`
holds the rule, the objectives and the fallback)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data import dataset_from_config
from ..data.transforms import TransformSpec, model_input
from ..data.views import ViewDataset, eval_inputs
from ..device import amp_enabled, autocast_for
from ..distributed import DistInfo, agree, all_gather_cat, broadcast_object, init_distributed
from ..errors import CheckpointError, DataError
from ..metrics import average_precision, evaluate_logits, sigmoid
from ..thresholds import DEFAULT_OBJECTIVE, tune_thresholds
from .checkpoint import LoadedModel, load_model
from .ranks import check_same_split, load_on_every_rank

log = logging.getLogger("mlkd_cache")


def eval_loader(dataset: ViewDataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
    """This rank's slice (``rank::world``) of ``dataset`` in order; no padding, no duplicates.

    Scoring draws nothing from the training's random streams: each pass over a DataLoader draws
    its workers' base seed from its generator, here one of its own (the eval views use no seed),
    not from the global torch RNG that draws the training's dropout masks; the eval transform
    and the metrics use no RNG at all. So how often a run is scored (``eval_every``) never
    changes what it trains."""
    indices = list(range(info.rank, len(dataset), info.world_size))
    return DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        generator=torch.Generator(),
    )


def forward(model: nn.Module, pixels: torch.Tensor, spec: TransformSpec, device: torch.device, amp: bool) -> Any:
    """``model``'s :class:`~mlkd_cache.models.Outputs` of uint8 ``pixels`` ``[N, 3, S, S]``,
    made its input on ``device`` by ``spec`` (:func:`model_input`), under AMP when ``amp``:
    how every command runs a model on a batch of eval inputs."""
    with autocast_for(device, amp):
        return model(model_input(pixels, spec, device))


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, info: DistInfo, amp: bool, total: int, spec: TransformSpec
) -> Tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, C]`` (float32) and labels ``[N, C]`` (uint8) of every sample, in dataset
    order, on every rank; ``spec`` converts uint8 batches on the device (:func:`model_input`)."""
    was_training = model.training
    model.eval()
    logits, labels, indices = [], [], []
    for batch in loader:  # ViewItem batches
        out, label, index = forward(model, batch.image, spec, info.device, amp), batch.labels, batch.sample
        logits.append(out.logits.float())
        labels.append(label.to(info.device))
        indices.append(index.to(info.device))
    model.train(was_training)
    bare: Any = getattr(model, "module", model)  # DDP wraps the model in .module
    num_classes: int = bare.num_classes
    z = torch.cat(logits) if logits else torch.zeros((0, num_classes), device=info.device)
    y = torch.cat(labels) if labels else torch.zeros((0, num_classes), device=info.device)
    i = torch.cat(indices) if indices else torch.zeros((0,), dtype=torch.long, device=info.device)
    z, y, i = all_gather_cat(z, info), all_gather_cat(y, info), all_gather_cat(i, info)
    order = torch.argsort(i)
    assert int(i.numel()) == total, (int(i.numel()), total)
    return z[order].cpu().numpy(), y[order].cpu().numpy().astype(np.uint8)


class Scored(NamedTuple):
    """A model scored on a split (:func:`evaluate_model`), the same on every rank."""

    metrics: Dict[str, float]  # percent
    logits: np.ndarray  # float32 [N, C], in dataset order
    labels: np.ndarray  # uint8 [N, C]


def evaluate_model(model: nn.Module, dataset: ViewDataset, batch_size: int, workers: int, info: DistInfo, amp: bool) -> Scored:
    """Metrics (percent), logits and labels of ``model`` on ``dataset``; identical on every rank."""
    z, y = predict(model, eval_loader(dataset, batch_size, workers, info), info, amp, len(dataset), dataset.spec)
    metrics = evaluate_logits(z, y) if info.is_main else None
    return Scored(broadcast_object(metrics, info), z, y)


def load_model_on_ranks(checkpoint: Path, info: DistInfo) -> LoadedModel:
    """:func:`~mlkd_cache.runtime.checkpoint.load_model` on every rank, each from its own
    storage, onto its device: a rank that cannot stops every rank, and every rank must read the
    same file (sha256, compared under torchrun only)."""
    return load_on_every_rank(lambda: load_model(checkpoint, info.device), f"checkpoint {checkpoint}", info)


def score(
    loaded: LoadedModel,
    data_root: Optional[str] = None,
    batch_size: Optional[int] = None,
    workers: Optional[int] = None,
    split: str = "test",
    keep_logits: bool = False,
) -> Dict:
    """Score a model already loaded (on this rank's device) on ``split`` of the dataset it was
    trained for: its card says which dataset, classes and input pipeline.

    Returns ``{"metrics": {...}, "per_class_ap": {class: AP%}, "checkpoint": ..., "samples": N}``,
    with ``keep_logits`` also ``"logits"`` float32 and ``"labels"`` uint8, ``[N, C]`` in dataset order.
    A checkpoint that stores per-class thresholds is also scored at them (metric keys
    ``...@tuned``) and its ``"thresholds"`` are returned."""
    info = init_distributed()
    card, checkpoint = loaded.card, loaded.path
    cfg = card.config_with(data_root=data_root, batch_size=batch_size, workers=workers)
    dataset = agree(info, lambda: dataset_from_config(cfg, split))
    check_same_split(dataset, f"{cfg.dataset} {split} split", info)
    if list(dataset.class_names) != list(card.class_names):
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained for {card.num_classes} classes "
            f"({', '.join(card.class_names[:4])}, ...), the {cfg.dataset}/{split} data has "
            f"{len(dataset.class_names)} ({', '.join(dataset.class_names[:4])}, ...); evaluate it on its own dataset"
        )
    view_data = eval_inputs(dataset, card.transform)
    amp = amp_enabled(cfg.amp, info.device)
    z, y = predict(
        loaded.model, eval_loader(view_data, cfg.batch_size, cfg.workers, info), info, amp, len(view_data), card.transform
    )
    ap = average_precision(z, y)
    kept = {"logits": z, "labels": y} if keep_logits else {}
    tuned = {} if card.thresholds is None else {"thresholds": card.thresholds}
    return {
        **kept,
        **tuned,
        "checkpoint": str(checkpoint),
        "split": split,
        "samples": len(view_data),
        "metrics": evaluate_logits(z, y, None if card.thresholds is None else np.asarray(card.thresholds["values"])),
        "per_class_ap": {name: float(v * 100.0) for name, v in zip(dataset.class_names, ap)},
        "is_main": info.is_main,
    }


def tune_model(
    model: nn.Module,
    data: ViewDataset,
    batch_size: int,
    workers: int,
    info: DistInfo,
    amp: bool,
    split: str,
    objective: str = DEFAULT_OBJECTIVE,
    scored: Optional[Scored] = None,
) -> Optional[Dict[str, Any]]:
    """Thresholds of ``model`` tuned for ``objective`` on ``data`` (the eval inputs of ``split``),
    as ``ModelCard.thresholds`` holds them, identical on every rank; None, said in a warning,
    where the split has no positive label. ``scored``: the model's logits on ``data`` when they
    are at hand, else every rank must call it (the logits are gathered across ranks). The model
    is left as it was, and the scoring draws from no global RNG (:func:`eval_loader`)."""
    if scored is None:
        scored = evaluate_model(model, data, batch_size, workers, info, amp)
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
