"""Loose image files as a dataset: photographs to score or label that belong to no split.

:class:`ImageFiles` is a :class:`~mlkd_cache.data.base.MultiLabelDataset` of the files given, in
their order, without labels (``C = 0``): its images load through the loader every split uses
(:func:`~mlkd_cache.data.base.load_rgb`, the reduced-size JPEG decode included), so
:func:`~mlkd_cache.data.views.eval_inputs` gives a model the very pixels a split's eval view of
the same file gives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..errors import DataError
from .base import MultiLabelDataset

__all__ = ["ImageFiles"]


class ImageFiles(MultiLabelDataset):
    """``paths`` (files) as samples: keys are the paths as given, labels ``uint8 [N, 0]``."""

    name = "files"
    splits = ("files",)

    def __init__(self, paths: Sequence[Union[str, Path]]) -> None:
        given = [str(p) for p in paths]
        if not given:
            raise DataError("no image files given; pass at least one image file")
        super().__init__(
            split="files",
            class_names=[],
            keys=given,
            labels=np.zeros((len(given), 0), dtype=np.uint8),
            image_paths=[os.path.abspath(os.path.expanduser(p)) for p in given],
        )
