"""The common multi-label dataset type, the dataset registry and shared loading helpers.

A dataset is constructed from annotations only (images are never decoded at construction, but
their files are checked to exist, with one ``listdir`` per image folder, so a missing image is
reported at start-up rather than in epoch 3). Every sample has a stable string ``key`` and a
``uint8`` label row; :meth:`MultiLabelDataset.load_image` returns an RGB ``PIL.Image``.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data
from PIL import Image, ImageOps

from ..config import DATASET_NAMES
from ..errors import ConfigError, DataError
from ..registry import Registry, did_you_mean

DATASETS = Registry("dataset", DATASET_NAMES, declared_in="mlkd_cache.config.DATASET_NAMES")  # config checks names against it

SPLITS = ("train", "test")


class MultiLabelDataset(torch.utils.data.Dataset):
    """``N`` samples, ``C`` classes; ``labels[i, c] == 1`` when class ``c`` is in sample ``i``.

    File-backed datasets pass ``image_paths`` (absolute paths, parallel to ``keys``); datasets
    that hold their pixels in memory (``digits``) override :meth:`load_image` instead.
    """

    name: str = "base"
    splits: Tuple[str, ...] = SPLITS  # the splits this dataset can build

    def __init__(
        self,
        *,
        split: str,
        class_names: Sequence[str],
        keys: Sequence[str],
        labels: np.ndarray,
        image_paths: Optional[Sequence[str]] = None,
        root: Optional[str] = None,
    ) -> None:
        check_split(split, self.splits)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        if labels.ndim != 2 or labels.shape != (len(keys), len(class_names)):
            raise ValueError(f"labels shape {labels.shape} != ({len(keys)}, {len(class_names)})")
        if image_paths is not None and len(image_paths) != len(keys):
            raise ValueError("image_paths and keys differ in length")
        self.split = split
        self.class_names: List[str] = list(class_names)
        self.keys: List[str] = list(keys)
        self.labels: np.ndarray = labels
        self.image_paths: Optional[List[str]] = list(image_paths) if image_paths is not None else None
        self.root = root
        # the val split held out of the train split this split comes from (data/holdout.py's
        # record: {} when none; set by build_dataset): the train split lacks it, val is it
        self.val_split: Dict[str, Any] = {}

    @classmethod
    def available_splits(cls, **params: Any) -> Tuple[str, ...]:
        """The splits this dataset can build with ``params`` (its ``dataset_para``): all of
        :attr:`splits`, unless a dataset needs a param for one (csv's ``val_file``)."""
        return cls.splits

    # -- sizes ---------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.keys)

    # -- samples -------------------------------------------------------------------------
    def load_image(self, index: int, decode_size: Optional[int] = None) -> Image.Image:
        """The decoded image of sample ``index`` in mode ``"RGB"``; :class:`DataError` when the
        file is missing, truncated or not an image. ``decode_size``: see :func:`load_rgb`."""
        if self.image_paths is None:
            raise TypeError(f"{type(self).__name__} has no image files and must override load_image")
        return load_rgb(self.image_paths[index], decode_size)

    def __getitem__(self, index: int) -> Tuple[Image.Image, np.ndarray]:
        return self.load_image(index), self.labels[index].copy()

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the samples where ``mask`` (bool ``[N]``) is true, in order (in place)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask shape {mask.shape} != ({len(self)},)")
        self.keys = [k for k, m in zip(self.keys, mask) if m]
        self.labels = np.ascontiguousarray(self.labels[mask])
        if self.image_paths is not None:
            self.image_paths = [p for p, m in zip(self.image_paths, mask) if m]

    # -- summaries -----------------------------------------------------------------------
    @property
    def label_counts(self) -> np.ndarray:
        """Positives per class, ``int64 [C]``."""
        return self.labels.sum(axis=0, dtype=np.int64)

    @property
    def labels_per_image(self) -> float:
        return float(self.labels.sum(dtype=np.int64)) / max(len(self), 1)

    def describe(self) -> str:
        return (
            f"{self.name}/{self.split}: {len(self)} images, {self.num_classes} classes, {self.labels_per_image:.1f} labels/image"
        )

    def fingerprint(self) -> str:
        """A hex digest of class names, keys and labels: equal when two constructions hold the
        same samples in the same order with the same labels."""
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.name}\0{self.split}\0".encode())
        h.update("\0".join(self.class_names).encode())
        h.update(b"\1")
        h.update("\0".join(self.keys).encode())
        h.update(b"\1")
        h.update(np.asarray(self.labels.shape, dtype=np.int64).tobytes())
        h.update(self.labels.tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


# --------------------------------------------------------------------------------------------
# Helpers shared by the dataset modules
# --------------------------------------------------------------------------------------------


def check_split(split: str, splits: Sequence[str] = SPLITS) -> str:
    if split not in splits:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(splits)}")
    return split


def require_root(root, dataset: str, expected: str) -> str:
    """The data root as an absolute path; :class:`DataError` mentioning ``--data-root`` when it
    is ``None`` or not a folder. ``expected`` describes the layout for the message."""
    if root is None or str(root) == "":
        raise DataError(f"dataset {dataset!r} needs a data root: pass --data-root (config data_root) pointing at {expected}")
    path = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(path):
        raise DataError(f"data root not found: {path} is not a folder; pass --data-root pointing at {expected}")
    return path


def require_file(path: str, what: str, expected: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"{what} not found: {path} is missing; expected {expected}")
    return path


def require_dir(path: str, what: str, expected: str) -> str:
    if not os.path.isdir(path):
        raise DataError(f"{what} not found: {path} is missing; expected {expected}")
    return path


def check_images_exist(paths: Sequence[str], dataset: str) -> None:
    """Raise :class:`DataError` naming the first missing image (in sample order) and the number
    missing. One ``listdir`` per distinct folder, so 80k images cost milliseconds."""
    by_dir = defaultdict(list)
    for i, p in enumerate(paths):
        d, base = os.path.split(p)
        by_dir[d].append((i, base))
    missing: List[int] = []
    for d, items in by_dir.items():
        try:
            present = set(os.listdir(d))
        except OSError:
            present = set()
        missing.extend(i for i, base in items if base not in present)
    if missing:
        missing.sort()
        first = paths[missing[0]]
        folder = os.path.dirname(first)
        where = "" if os.path.isdir(folder) else f" (folder {folder} does not exist)"
        raise DataError(
            f"{dataset}: {len(missing)} of {len(paths)} image files are missing, first: "
            f"{first}{where}; restore them or fix the data root"
        )


# modes whose samples are 16-bit (PNG greyscale opens as I;16, or as I in older Pillows)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
EXIF_ORIENTATION = 0x0112  # the EXIF tag of the camera's orientation (1 = upright)


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as the 8-bit RGB picture a viewer shows: EXIF orientation applied (phone photos),
    16-bit samples scaled to 8 bits (not clipped), transparency composited on white, greyscale,
    palette and CMYK converted by Pillow. Teacher and student both load through here."""
    if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(im, dtype=np.uint32)
        im = Image.fromarray(((np.minimum(wide, 65535) + 128) // 257).astype(np.uint8), "L")
    if im.mode in _ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im if im.mode == "RGB" else im.convert("RGB")


def load_rgb(path: str, decode_size: Optional[int] = None) -> Image.Image:
    """Open and decode ``path`` as RGB (:func:`to_rgb`); :class:`DataError` naming the file on
    failure. With ``decode_size`` a JPEG at least twice that size on both sides is decoded at
    1/2, 1/4 or 1/8 scale by libjpeg (both sides stay >= ``decode_size``): several times less work
    for a photograph much larger than the network's input."""
    try:
        with Image.open(path) as im:
            if decode_size is not None and im.format == "JPEG":
                im.draft(None, (decode_size, decode_size))
            im.load()  # truncation surfaces here
            return to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"image file missing: {path}; restore it or fix the data root") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot decode image {path} ({e}); the file is truncated or not an image: re-download or replace it"
        ) from None


def labels_from_index_lists(index_lists: Sequence[Iterable[int]], num_classes: int) -> np.ndarray:
    """``uint8 [N, C]`` from per-sample lists of class indices (duplicates allowed), built with
    one flat scatter instead of a per-row loop. Indices must already be validated."""
    lists = [list(x) for x in index_lists]
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    labels = np.zeros((len(lists), num_classes), dtype=np.uint8)
    total = int(lengths.sum())
    if total:
        rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
        cols = np.fromiter((c for x in lists for c in x), dtype=np.int64, count=total)
        labels[rows, cols] = 1
    return labels


def label_summary(class_names: Sequence[str], labels: np.ndarray, k: int = 5) -> Dict[str, Any]:
    """What a label matrix ``[N, C]`` holds: ``images``, ``classes``, ``labels_per_image`` and the
    ``k`` most and least frequent classes as ``(name, images)`` pairs (ties in class order)."""
    counts = np.asarray(labels, dtype=np.int64).sum(axis=0)

    def pairs(order: np.ndarray) -> List[Tuple[str, int]]:
        return [(str(class_names[c]), int(counts[c])) for c in order[:k]]

    return {
        "images": int(len(labels)),
        "classes": len(class_names),
        "labels_per_image": float(counts.sum()) / max(len(labels), 1),
        "most": pairs(np.argsort(-counts, kind="stable")),
        "least": pairs(np.argsort(counts, kind="stable")),
    }


def format_label_summary(summary: Mapping[str, Any]) -> str:
    """One line: ``N images, C classes (L labels/image); most: a 9, b 7, ...; least: ...``."""

    def pairs(items: Sequence[Tuple[str, int]]) -> str:
        return ", ".join(f"{name} {count}" for name, count in items)

    return (
        f"{summary['images']} images, {summary['classes']} classes ({summary['labels_per_image']:.2f} labels/image); "
        f"most frequent: {pairs(summary['most'])}; least frequent: {pairs(summary['least'])}"
    )


def unknown_class_error(name: str, where: str, class_names: Sequence[str]) -> DataError:
    return DataError(
        f"unknown class {name!r}{did_you_mean(name, class_names)} in {where}; valid classes: {', '.join(class_names)}"
    )
