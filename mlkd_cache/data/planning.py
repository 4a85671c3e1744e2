"""Train-split sizes of the public datasets as published, to plan a cache before the download.

A cache's size depends on the labels only through the number of positives per shard
(positive-mode embeddings hold one token per positive label), so a split enters a plan as
(images N, classes C, positives per image P). ``dump-targets --dry-run`` uses these numbers when
no ``--data-root`` is given, and the real labels when it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .base import DATASETS


@dataclass(frozen=True)
class PublishedSplit:
    """A train split as published: ``images`` N, ``classes`` C, ``positives_per_image`` P and where
    each number comes from (``source``, printed with every plan built on it)."""

    images: int
    classes: int
    positives_per_image: float
    source: str


def planning_labels(num_samples: int, num_classes: int, positives_per_image: float) -> np.ndarray:
    """A uint8 ``[N, C]`` label matrix with ``round(N * positives_per_image)`` positives spread
    as evenly as rows allow, standing in for labels one does not have at hand (cache sizes depend
    on the labels only through the positives per shard)."""
    total = int(round(num_samples * positives_per_image))
    if not 0 <= total <= num_samples * num_classes:
        raise ValueError(f"{positives_per_image} positives per image do not fit {num_classes} classes")
    labels = np.zeros((num_samples, num_classes), dtype=np.uint8)
    flat = np.arange(total)  # column-major fill: positive j goes to row j % N, column j // N
    labels[flat % num_samples, flat // num_samples] = 1
    return labels


class PlannedSplit:
    """What a cache plan reads of a dataset (``class_names``, ``labels``, ``len``), built from a
    :class:`PublishedSplit`; ``source`` says where its numbers come from."""

    def __init__(self, class_names: List[str], published: PublishedSplit) -> None:
        self.class_names = list(class_names)
        self.labels = planning_labels(published.images, published.classes, published.positives_per_image)
        self.source = published.source

    def __len__(self) -> int:
        return len(self.labels)


def planned_train_split(name: str, held_out: float = 0.0, **params) -> Optional[PlannedSplit]:
    """The train split of dataset ``name`` (with its ``dataset_para``) as published, less the share
    ``held_out`` a val split takes (config ``val_split.fraction``), ``None`` for datasets without
    published numbers (``csv``: the user's own). Datasets declare theirs in a
    ``published_train_split(**params)`` classmethod and their class names in ``planned_class_names``."""
    factory = DATASETS.get(name)
    published = getattr(factory, "published_train_split", None)
    split = published(**params) if published is not None else None
    if split is None:
        return None
    if held_out:
        kept = split.images - int(round(split.images * held_out))
        split = dataclasses.replace(split, images=kept, source=f"{split.source}; {kept:,} left for training by val_split")
    names = getattr(factory, "planned_class_names", None) or [f"class{i}" for i in range(split.classes)]
    return PlannedSplit(list(names), split)
