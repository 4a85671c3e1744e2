"""Datasets: ``voc``, ``coco``, ``nus``, ``csv`` and the embedded ``digits``.

``build_dataset(name, split, root, bad_images=..., workers=..., val_split=..., **params)`` is the
one entry point (``dataset_from_config(cfg, split)`` calls it with a config's keys); every dataset
is a :class:`MultiLabelDataset` (string ``keys``, ``uint8 [N, C]`` ``labels``, ``load_image``).
With ``val_split`` on, the ``val`` split of any dataset is carved out of its train split
(:mod:`.holdout`), and the train split is what is left.
Importing this package registers all datasets in :data:`DATASETS`.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Tuple, Type, cast

import numpy as np

from ..config import VAL_SPLIT_HINT, Config
from ..errors import ConfigError, DataError
from ..registry import did_you_mean
from . import coco, csv_folder, digits, nus, voc  # noqa: F401  (registration side effects)
from .bad_images import BAD_IMAGE_POLICIES, apply_bad_images
from .base import DATASETS, SPLITS, MultiLabelDataset, check_split
from .holdout import describe_val_split, holdout_mask, val_split_record

__all__ = [
    "BAD_IMAGE_POLICIES",
    "DATASETS",
    "SPLITS",
    "MultiLabelDataset",
    "build_dataset",
    "check_eval_split",
    "has_split",
    "available_splits",
    "dataset_from_config",
    "dataset_params",
    "splits_with",
]


def dataset_params(name: str) -> dict:
    """The extra params ``name`` accepts, with their defaults (``split`` and ``root`` excluded)."""
    factory = DATASETS.get(name)
    out = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name in ("self", "split", "root") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def build_dataset(
    name: str,
    split: str,
    root: Optional[str] = None,
    *,
    bad_images: str = "error",
    workers: int = 0,
    val_split: Optional[Mapping[str, Any]] = None,
    **params,
) -> MultiLabelDataset:
    """Construct dataset ``name`` for ``split`` (``"train"``, ``"test"``, or another split the
    dataset class lists in ``splits``, such as digits' ``"val"``).

    ``val_split`` (config key of the same name: ``dict(fraction=..., seed=...)``; off when None or
    fraction 0): the ``val`` split is the share ``fraction`` of the dataset's whole train split
    that :func:`~mlkd_cache.data.holdout.holdout_mask` chooses, and the ``train`` split is the
    rest, in its original order; a ``train_size`` param (csv) then keeps the first
    ``train_size`` of the rest, so every ``train_size`` leaves the same val split out. A
    dataset with a val split of its own (digits, csv with ``val_file``) refuses it. Both splits
    record it in their ``val_split`` attribute (:func:`~mlkd_cache.data.holdout.val_split_record`).

    ``bad_images`` (config key of the same name): ``"error"`` leaves undecodable image files to
    stop the run when they are read; ``"skip"`` decodes every image now, in ``workers``
    processes, and leaves out the samples that fail (see :mod:`.bad_images`); after the carving,
    so a bad image never moves another between val and train.

    Unknown name, split or param -> :class:`~mlkd_cache.errors.ConfigError`; missing or
    malformed data -> :class:`~mlkd_cache.errors.DataError`.
    """
    factory = DATASETS.get(name)
    record = val_split_record(val_split)
    check_split(split, splits_with(name, params, record, own=getattr(factory, "splits", SPLITS)))
    valid = dataset_params(name)
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"unknown param {key!r} for dataset {name!r}{did_you_mean(key, valid)}; valid: {', '.join(sorted(valid)) or 'none'}"
            )
    if record and split in ("train", "val"):
        dataset = _carve(name, split, root, record, params)
    else:
        dataset = factory(split=split, root=root, **params)
    return apply_bad_images(dataset, bad_images, workers)


def splits_with(
    name: str, params: Mapping[str, Any], val_split: Optional[Mapping[str, Any]], own: Optional[Tuple[str, ...]] = None
) -> Tuple[str, ...]:
    """The splits of dataset ``name`` with ``params`` (``own``: its splits, default the ones it can
    build with them) and ``val_split``: ``val`` added, after ``train``, when ``val_split`` is on;
    :class:`~mlkd_cache.errors.ConfigError` in one line when the dataset has a val split of its own."""
    factory = cast(Type[MultiLabelDataset], DATASETS.get(name))  # every dataset is one
    splits = own if own is not None else factory.available_splits(**params)
    record = val_split_record(val_split)
    if not record:
        return splits
    if "val" in factory.available_splits(**params):
        detail, alternative = "", ""
        if params.get("val_file") is not None:
            detail, alternative = f" (val_file {params['val_file']!r})", " or val_file from dataset_para"
        raise ConfigError(
            f"config key val_split ({describe_val_split(record)}) carves a val split out of the train split, and dataset "
            f"{name} has one of its own{detail}; drop val_split (fraction=0){alternative}"
        )
    return ("train", "val") + tuple(s for s in splits if s not in ("train", "val"))


def _carve(name: str, split: str, root: Optional[str], record: Dict[str, Any], params: Dict[str, Any]) -> MultiLabelDataset:
    """``split`` (train or val) of dataset ``name`` under the val split ``record``: the whole
    train split built (``train_size`` left out), the held-out mask chosen on its labels, then
    val, or the rest cut to ``train_size``."""
    params = dict(params)
    train_size = params.get("train_size")
    if isinstance(train_size, int) and not isinstance(train_size, bool) and train_size >= 1:
        params["train_size"] = None  # the pool is the whole file; a bad value stays for the dataset's own message
    else:
        train_size = None
    dataset = DATASETS.get(name)(split="train", root=root, **params)
    held_out = holdout_mask(dataset.labels, record["fraction"], record["seed"])
    where = getattr(dataset, "label_file", None) or f"the {name} train split"
    if split == "val":
        if not held_out.any():
            raise DataError(
                f"{describe_val_split(record)} holds out none of the {len(dataset)} images of {where}; raise val_split.fraction"
            )
        dataset.keep(held_out)
        dataset.split = "val"
    else:
        dataset.keep(~held_out)
        if train_size is not None:
            if train_size > len(dataset):
                raise ConfigError(
                    f"dataset {name}: train_size {train_size} but {describe_val_split(record)} leaves {len(dataset)} of the "
                    f"{len(held_out)} images of {where} for training; lower train_size or val_split.fraction"
                )
            dataset.keep(np.arange(len(dataset)) < train_size)
    dataset.val_split = dict(record)
    return dataset


def dataset_from_config(cfg: Config, split: str, role: str = "s") -> MultiLabelDataset:
    """``split`` of ``cfg.dataset`` under ``cfg.data_root``, with the config's ``bad_images``,
    ``workers`` and ``val_split`` and the params of ``role``: ``"s"`` (``dataset_para``: the data
    students train on and a cache covers) or ``"t"`` (``dataset_para_t`` over it: teacher-train's
    train split). Teacher and students share one val split: it is carved before ``train_size``."""
    return build_dataset(
        cfg.dataset,
        split,
        cfg.data_root,
        bad_images=cfg.bad_images,
        workers=cfg.workers,
        val_split=cfg.val_split,
        **cfg.dataset_params(role),
    )


def check_eval_split(cfg: Config) -> None:
    """``eval_split`` must be a split of the config's dataset (digits, csv with a val_file, and
    every dataset with ``val_split`` on have a val split); :class:`~mlkd_cache.errors.ConfigError`
    naming the splits it has."""
    own = getattr(DATASETS.get(cfg.dataset), "splits", SPLITS)
    splits = splits_with(cfg.dataset, cfg.dataset_params("s"), cfg.val_split, own=own)
    if cfg.eval_split not in splits:
        fix = "set eval_split='test'"
        if cfg.eval_split == "val":
            fix += f", or hold out a val split: {VAL_SPLIT_HINT}"
        raise ConfigError(
            f"config key eval_split={cfg.eval_split!r}: dataset {cfg.dataset} has no {cfg.eval_split} split "
            f"(it has {', '.join(splits)}); {fix}"
        )


def available_splits(cfg: Config) -> Tuple[str, ...]:
    """The splits ``cfg``'s dataset can build with its params (``dataset_para``) and ``val_split``."""
    return splits_with(cfg.dataset, cfg.dataset_params("s"), cfg.val_split)


def has_split(cfg: Config, split: str) -> bool:
    """Whether ``cfg``'s dataset can build ``split`` (:func:`available_splits`)."""
    return split in available_splits(cfg)
