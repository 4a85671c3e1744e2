"""Datasets: ``voc``, ``coco``, ``nus``, ``csv`` and the embedded ``digits``.

``build_dataset(name, split, root, **params)`` is the one entry point; every dataset is a
:class:`MultiLabelDataset` (string ``keys``, ``uint8 [N, C]`` ``labels``, ``load_image``).
Importing this package registers all datasets in :data:`DATASETS`.
"""
from __future__ import annotations

import inspect
from typing import Optional

from ..errors import ConfigError
from ..registry import closest
from .base import DATASETS, SPLITS, MultiLabelDataset, check_split
from . import coco, csv_folder, digits, nus, voc  # noqa: F401  (registration side effects)

__all__ = ["DATASETS", "SPLITS", "MultiLabelDataset", "build_dataset", "dataset_params"]


def dataset_params(name: str) -> dict:
    """The extra params ``name`` accepts, with their defaults (``split`` and ``root`` excluded)."""
    factory = DATASETS.get(name)
    out = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name in ("self", "split", "root") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def build_dataset(name: str, split: str, root: Optional[str] = None, **params) -> MultiLabelDataset:
    """Construct dataset ``name`` for ``split`` (``"train"``, ``"test"``, or another split the
    dataset class lists in ``splits``, such as digits' ``"val"``).

    Unknown name, split or param -> :class:`~mlkd_cache.errors.ConfigError`; missing or
    malformed data -> :class:`~mlkd_cache.errors.DataError`.
    """
    factory = DATASETS.get(name)
    check_split(split, getattr(factory, "splits", SPLITS))
    valid = dataset_params(name)
    for key in params:
        if key not in valid:
            hint = closest(key, valid)
            dym = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"unknown param {key!r} for dataset {name!r}{dym}; valid: "
                f"{', '.join(sorted(valid)) or 'none'}"
            )
    return factory(split=split, root=root, **params)
