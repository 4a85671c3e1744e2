"""The ``bad_images`` policy: what a dataset does with image files that cannot be decoded.

* ``error`` (default): nothing happens at construction; the first image that fails to decode
  stops the run with a :class:`~mlkd_cache.errors.DataError` naming the file
  (:func:`~mlkd_cache.data.base.load_rgb`).
* ``skip``: every image of the split is fully decoded once at construction (in ``workers``
  DataLoader processes), the samples whose file fails are left out, and one warning line counts
  them. Nothing left -> the empty-split :class:`~mlkd_cache.errors.DataError`.

Datasets that hold their pixels in memory (``digits``) have no files and are left alone.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional

import numpy as np
import torch.utils.data
from PIL import Image

from ..config import BAD_IMAGE_POLICIES
from ..errors import ConfigError, DataError
from .base import MultiLabelDataset

log = logging.getLogger("mlkd_cache")


def decode_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be fully decoded as RGB (one line), or ``None`` when it can.

    A full decode, as training does it: ``Image.verify`` reads no pixels and misses truncation.
    """
    try:
        with Image.open(path) as im:
            im.convert("RGB")
    except Exception as exc:  # any failure means the sample cannot be used
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None


class _DecodeProbe(torch.utils.data.Dataset):
    """Item ``i``: :func:`decode_problem` of ``paths[i]`` ("" when it decodes)."""

    def __init__(self, paths: List[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        return decode_problem(self.paths[i]) or ""


def _as_list(batch: List[str]) -> List[str]:
    return batch


def decode_problems(paths: List[str], workers: int = 0) -> List[str]:
    """:func:`decode_problem` of every path, in order ("" for a good file), in ``workers`` processes."""
    loader = torch.utils.data.DataLoader(
        _DecodeProbe(paths), batch_size=64, shuffle=False, num_workers=workers, collate_fn=_as_list
    )
    return [problem for batch in loader for problem in batch]


def apply_bad_images(dataset: MultiLabelDataset, policy: str, workers: int = 0) -> MultiLabelDataset:
    """``dataset`` under ``policy`` (see the module doc); ``skip`` drops undecodable samples in place."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"bad_images must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {policy!r}")
    if policy == "error" or dataset.image_paths is None:
        return dataset
    paths = list(dataset.image_paths)
    problems = decode_problems(paths, workers)
    bad = np.array([bool(p) for p in problems], dtype=bool)
    if not bad.any():
        return dataset
    first = int(np.flatnonzero(bad)[0])
    where = f"{dataset.name}/{dataset.split}"
    detail = f"first: {paths[first]}: {problems[first]}"
    if bad.all():
        raise DataError(
            f"empty split: all {len(paths)} images of {where} cannot be decoded ({detail}); "
            "restore the image files or fix the data root"
        )
    dataset.keep(~bad)
    if int(os.environ.get("RANK", "0")) == 0:  # once, not once per torchrun process
        log.warning("skipped %d of %d images of %s that cannot be decoded (%s)", int(bad.sum()), len(paths), where, detail)
    return dataset
