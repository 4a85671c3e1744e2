"""Datasets: ``voc``, ``coco``, ``nus``, ``csv`` and the embedded ``digits``.

``build_dataset(name, split, root, bad_images=..., workers=..., **params)`` is the one entry
point (``dataset_from_config(cfg, split)`` calls it with a config's keys); every dataset is a :class:`MultiLabelDataset` (string ``keys``, ``uint8 [N, C]``
``labels``, ``load_image``).
Importing this package registers all datasets in :data:`DATASETS`.
"""

from __future__ import annotations

import inspect
from typing import Optional, Tuple, Type, cast

from ..config import Config
from ..errors import ConfigError
from ..registry import did_you_mean
from . import coco, csv_folder, digits, nus, voc  # noqa: F401  (registration side effects)
from .bad_images import BAD_IMAGE_POLICIES, apply_bad_images
from .base import DATASETS, SPLITS, MultiLabelDataset, check_split

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
    name: str, split: str, root: Optional[str] = None, *, bad_images: str = "error", workers: int = 0, **params
) -> MultiLabelDataset:
    """Construct dataset ``name`` for ``split`` (``"train"``, ``"test"``, or another split the
    dataset class lists in ``splits``, such as digits' ``"val"``).

    ``bad_images`` (config key of the same name): ``"error"`` leaves undecodable image files to
    stop the run when they are read; ``"skip"`` decodes every image now, in ``workers``
    processes, and leaves out the samples that fail (see :mod:`.bad_images`).

    Unknown name, split or param -> :class:`~mlkd_cache.errors.ConfigError`; missing or
    malformed data -> :class:`~mlkd_cache.errors.DataError`.
    """
    factory = DATASETS.get(name)
    check_split(split, getattr(factory, "splits", SPLITS))
    valid = dataset_params(name)
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"unknown param {key!r} for dataset {name!r}{did_you_mean(key, valid)}; valid: {', '.join(sorted(valid)) or 'none'}"
            )
    return apply_bad_images(factory(split=split, root=root, **params), bad_images, workers)


def dataset_from_config(cfg: Config, split: str, role: str = "s") -> MultiLabelDataset:
    """``split`` of ``cfg.dataset`` under ``cfg.data_root``, with the config's ``bad_images`` and
    ``workers`` and the params of ``role``: ``"s"`` (``dataset_para``: the data students train
    on and a cache covers) or ``"t"`` (``dataset_para_t`` over it: teacher-train's train split)."""
    return build_dataset(
        cfg.dataset, split, cfg.data_root, bad_images=cfg.bad_images, workers=cfg.workers, **cfg.dataset_params(role)
    )


def check_eval_split(cfg: Config) -> None:
    """``eval_split`` must be a split of the config's dataset (digits, and csv with a val_file,
    have a val split); :class:`~mlkd_cache.errors.ConfigError` naming the splits it has."""
    splits = getattr(DATASETS.get(cfg.dataset), "splits", SPLITS)
    if cfg.eval_split not in splits:
        raise ConfigError(
            f"config key eval_split={cfg.eval_split!r}: dataset {cfg.dataset} has no {cfg.eval_split} split "
            f"(it has {', '.join(splits)}); set eval_split='test'"
        )


def available_splits(cfg: Config) -> Tuple[str, ...]:
    """The splits ``cfg``'s dataset can build with its params (``dataset_para``)."""
    factory = cast(Type[MultiLabelDataset], DATASETS.get(cfg.dataset))  # every dataset is one
    return factory.available_splits(**cfg.dataset_params("s"))


def has_split(cfg: Config, split: str) -> bool:
    """Whether ``cfg``'s dataset can build ``split`` (:func:`available_splits`)."""
    return split in available_splits(cfg)
