"""NUS-WIDE (81 concepts) in the L2D layout.

::

    <root>/Flickr/<concept folder>/<file>.jpg
    <root>/ImageList/{Imagelist.txt,TrainImagelist.txt,TestImagelist.txt}
    <root>/TrainTestLabels/Labels_<concept>_{Train,Test}.txt
    <root>/Concepts81.txt

Class order is the order of ``Concepts81.txt``. Line ``i`` of ``Labels_<concept>_Train.txt`` is
the 0/1 label of image ``i`` of ``TrainImagelist.txt`` (likewise for Test). Image-list lines use
Windows separators (``actor\\0001_2124494179.jpg``); keys are ``Flickr/actor/0001_2124494179.jpg``.
"""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from ..errors import DataError
from .base import (
    DATASETS,
    MultiLabelDataset,
    check_images_exist,
    check_split,
    require_file,
    require_root,
)
from .planning import PublishedSplit

_SPLIT_FILES = {"train": ("TrainImagelist.txt", "Train"), "test": ("TestImagelist.txt", "Test")}
_EXPECTED = (
    "<root>/{Flickr/<concept>/*.jpg, ImageList/TrainImagelist.txt, ImageList/TestImagelist.txt, "
    "TrainTestLabels/Labels_<concept>_{Train,Test}.txt, Concepts81.txt} (the L2D layout)"
)


def read_concepts(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        concepts = [line.strip() for line in f if line.strip()]
    if not concepts:
        raise DataError(f"{path} lists no concepts; re-download NUS-WIDE's Concepts81.txt")
    if len(set(concepts)) != len(concepts):
        raise DataError(f"{path} lists some concept twice")
    return concepts


def normalise_image_path(line: str) -> str:
    """``actor\\0001.jpg`` -> ``Flickr/actor/0001.jpg``; a full ``C:\\...\\Flickr\\actor\\0001.jpg``
    line (as in ``Imagelist.txt``) gives the same key."""
    p = line.strip().replace("\\", "/")
    marker = p.rfind("Flickr/")
    if marker >= 0:
        p = p[marker + len("Flickr/") :]
    return "Flickr/" + p.lstrip("/")


def read_image_list(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [normalise_image_path(line) for line in f if line.strip()]


def read_label_file(path: str, expected_count: int, list_path: str) -> np.ndarray:
    """``uint8 [n]`` of one ``Labels_<concept>_<Split>.txt``; :class:`DataError` when the line
    count differs from the image list or a value is not 0/1."""
    with open(path, "rb") as f:
        tokens = f.read().split()
    if len(tokens) != expected_count:
        raise DataError(
            f"NUS-WIDE label file {path} has {len(tokens)} lines but {list_path} lists "
            f"{expected_count} images; the files must match line for line (re-download them)"
        )
    joined = b"".join(tokens)  # tokens are non-empty, so equal length <=> all single chars
    vals = np.frombuffer(joined, dtype=np.uint8) - np.uint8(ord("0"))
    if len(joined) != len(tokens) or (vals > 1).any():
        raise DataError(f"NUS-WIDE label file {path}: every line must be 0 or 1")
    return vals


@DATASETS.register("nus")
class NUSWideDataset(MultiLabelDataset):
    """NUS-WIDE with the 81 concepts of ``Concepts81.txt`` (in file order)."""

    name = "nus"

    @classmethod
    def published_train_split(cls, **_: object) -> PublishedSplit:
        return PublishedSplit(
            161789,
            81,
            2.4,
            "NUS-WIDE train: 161,789 images (ImageList/TrainImagelist.txt), 81 concepts; "
            "P 2.4 approximate (images whose Flickr files are lost still count)",
        )

    def __init__(self, split: str = "train", root: Optional[str] = None, *, check_images: bool = True) -> None:
        check_split(split)
        root = require_root(root, "nus", "a folder holding Flickr/, ImageList/, TrainTestLabels/ and Concepts81.txt")
        list_name, tag = _SPLIT_FILES[split]
        concepts_path = require_file(os.path.join(root, "Concepts81.txt"), "NUS-WIDE layout", _EXPECTED)
        list_path = require_file(os.path.join(root, "ImageList", list_name), "NUS-WIDE layout", _EXPECTED)
        concepts = read_concepts(concepts_path)
        keys = read_image_list(list_path)
        if not keys:
            raise DataError(f"empty split: {list_path} lists no images")
        if len(set(keys)) != len(keys):
            raise DataError(f"{list_path} lists some image twice; re-download the image lists")

        labels = np.empty((len(keys), len(concepts)), dtype=np.uint8)
        label_dir = os.path.join(root, "TrainTestLabels")
        for k, concept in enumerate(concepts):
            path = require_file(os.path.join(label_dir, f"Labels_{concept}_{tag}.txt"), "NUS-WIDE label file", _EXPECTED)
            labels[:, k] = read_label_file(path, len(keys), list_path)

        paths = [os.path.join(root, *key.split("/")) for key in keys]
        if check_images:
            check_images_exist(paths, "nus")
        super().__init__(split=split, class_names=concepts, keys=keys, labels=labels, image_paths=paths, root=root)
