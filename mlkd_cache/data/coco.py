"""MS-COCO (80 classes): 2014 or 2017, in the official layout or L2D's, found from the root alone.

::

    <root>/train2014/COCO_train2014_*.jpg     <root>/train_anno.json   (L2D's files, 2014)
    <root>/val2014/COCO_val2014_*.jpg         <root>/val_anno.json
    <root>/annotations/instances_{train,val}2014.json                  (official 2014)

    <root>/train2017/*.jpg  <root>/val2017/*.jpg
    <root>/annotations/instances_{train,val}2017.json                  (official 2017)

``train`` is trainYYYY, ``test`` is valYYYY. L2D's files are a JSON list of
``{"file_name": ..., "labels": [class indices]}``; the official files give ``images``,
``annotations`` (``image_id``, ``category_id``) and ``categories`` (``id``, ``name``).
``year="auto"`` takes L2D's files, else the 2014 instances files, else the 2017 ones; a root
holding both years' instances files must name one (``dataset_para=dict(year=2017)``).

Class order: the 80 official category names sorted alphabetically (``sorted`` of the names
with their spaces: airplane, apple, backpack, ..., person = 49, ..., zebra = 79), in every
layout and year (2014 and 2017 share the 80 categories and their ids). That is the order L2D's
annotation files use; category ids of the official file are mapped through the same sorted
names, never through their numeric order (the silent class-order bug of L2D issue #4).

Image sets differ: official val2014 has 40,504 images, L2D's ``val_anno.json`` 40,137 -- L2D
dropped the images without any annotation. From the instances file those images are kept with an
all-zero label row.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, DataError
from .base import (
    DATASETS,
    MultiLabelDataset,
    check_images_exist,
    check_split,
    require_root,
    unknown_class_error,
)
from .planning import PublishedSplit

# The 80 official COCO category names, in official id order (ids 1..90 with gaps).
COCO_OFFICIAL_NAMES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
# The official category ids of the names above.
COCO_OFFICIAL_IDS = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
)
# The class order of this tool and of L2D's annotation files.
COCO_CLASSES = tuple(sorted(COCO_OFFICIAL_NAMES))
assert len(COCO_CLASSES) == 80 and COCO_CLASSES[49] == "person"

YEARS = (2014, 2017)  # the official releases, both with the 80 categories
SPLIT_FOLDERS = {"train": "train", "test": "val"}  # split -> image folder prefix (train2017/, val2017/)
L2D_FILES = {"train": "train_anno.json", "test": "val_anno.json"}  # L2D's annotation files (2014 images)
L2D_YEAR = 2014


def image_folder(split: str, year: int) -> str:
    """``train2017``, ``val2014``, ...: the image folder of ``split`` in the release ``year``."""
    return f"{SPLIT_FOLDERS[split]}{year}"


def instances_file(split: str, year: int) -> str:
    """``annotations/instances_val2017.json``, ...: the official annotation file, relative to the root."""
    return os.path.join("annotations", f"instances_{image_folder(split, year)}.json")


ANNOTATION_FORMATS = ("auto", "l2d", "instances")


def _load_json(path: str):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON in {path}: {e}; re-download the annotation file") from None
    except OSError as e:
        raise DataError(f"cannot read annotation file {path}: {e}") from None


def parse_l2d_annotations(path: str, data=None) -> Tuple[List[str], np.ndarray]:
    """``(file_names, labels uint8 [N, 80])`` from an L2D ``*_anno.json`` file (label = index
    into :data:`COCO_CLASSES`). ``data`` skips the file read when the JSON is already loaded."""
    if data is None:
        data = _load_json(path)
    bad = f"malformed L2D annotation file {path}"
    if not isinstance(data, list):
        raise DataError(f'{bad}: expected a JSON list of {{"file_name", "labels"}} objects')
    try:
        names = [e["file_name"] for e in data]
        lists = [e["labels"] for e in data]
    except (TypeError, KeyError) as e:
        raise DataError(f'{bad}: every entry needs "file_name" and "labels" ({e!r})') from None
    try:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        flat = [c for x in lists for c in x]
        if not all(type(c) is int for c in flat):
            raise TypeError
        cols = np.asarray(flat, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{bad}: labels must be lists of integer class indices") from None
    if cols.size and (cols.min() < 0 or cols.max() >= len(COCO_CLASSES)):
        v = int(cols[(cols < 0) | (cols >= len(COCO_CLASSES))][0])
        raise DataError(f"{bad}: class index {v} is outside 0..{len(COCO_CLASSES) - 1}")
    if len(set(names)) != len(names):
        raise DataError(f"{bad}: some file_name appears twice")
    labels = np.zeros((len(names), len(COCO_CLASSES)), dtype=np.uint8)
    rows = np.repeat(np.arange(len(names), dtype=np.int64), lengths)
    labels[rows, cols] = 1
    return names, labels


def parse_instances_annotations(path: str, data=None) -> Tuple[List[str], np.ndarray]:
    """``(file_names, labels uint8 [N, 80])`` from an official ``instances_*.json``. Rows
    follow the file's ``images`` order; images without annotations get an all-zero row.
    Category ids are mapped to indices by sorting the categories by *name*."""
    if data is None:
        data = _load_json(path)
    bad = f"malformed COCO instances file {path}"
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DataError(f'{bad}: expected an object with "images", "annotations", "categories"')
    try:
        cats = {int(c["id"]): str(c["name"]).strip() for c in data["categories"]}
        names = [im["file_name"] for im in data["images"]]
        image_ids = np.asarray([int(im["id"]) for im in data["images"]], dtype=np.int64)
        ann_img = np.asarray([a["image_id"] for a in data["annotations"]], dtype=np.int64)
        ann_cat = np.asarray([a["category_id"] for a in data["annotations"]], dtype=np.int64)
    except (TypeError, KeyError, ValueError) as e:
        raise DataError(f"{bad}: missing or non-integer field ({e!r})") from None
    for name in cats.values():
        if name not in COCO_CLASSES:
            raise unknown_class_error(name, f"the categories of {path}", COCO_CLASSES)
    if sorted(cats.values()) != list(COCO_CLASSES):
        missing = sorted(set(COCO_CLASSES) - set(cats.values()))
        raise DataError(
            f"{bad}: categories must be the 80 COCO classes, each once "
            f"(missing: {', '.join(missing) or 'none'}; some name repeated otherwise)"
        )
    class_index = {c: k for k, c in enumerate(COCO_CLASSES)}
    max_id = max(cats)
    cat_to_col = np.full(max(max_id, int(ann_cat.max(initial=0))) + 1, -1, dtype=np.int64)
    for cid, name in cats.items():
        cat_to_col[cid] = class_index[name]
    if ann_cat.size and (ann_cat.min() < 0 or (cat_to_col[ann_cat] < 0).any()):
        v = int(ann_cat[(ann_cat < 0) | (cat_to_col[np.clip(ann_cat, 0, None)] < 0)][0])
        raise DataError(f"{bad}: an annotation has category_id {v}, which is not in categories")
    order = np.argsort(image_ids, kind="stable")
    sorted_ids = image_ids[order]
    if sorted_ids.size > 1 and (np.diff(sorted_ids) == 0).any():
        raise DataError(f"{bad}: some image id appears twice")
    pos = np.searchsorted(sorted_ids, ann_img)
    pos_c = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    if ann_img.size and (len(sorted_ids) == 0 or (sorted_ids[pos_c] != ann_img).any()):
        raise DataError(f"{bad}: an annotation refers to an image_id not listed in images")
    labels = np.zeros((len(names), len(COCO_CLASSES)), dtype=np.uint8)
    if ann_img.size:
        labels[order[pos_c], cat_to_col[ann_cat]] = 1
    return names, labels


def find_layout(root: str, split: str, annotation: str = "auto", year="auto") -> Tuple[str, int, str]:
    """``(annotation format, year, annotation path)`` of the COCO tree at ``root`` for ``split``:
    ``annotation`` ``"auto"`` / ``"l2d"`` / ``"instances"``, ``year`` ``"auto"`` / 2014 / 2017.
    Auto: L2D's file, else the official 2014 file, else the 2017 one; both official years
    present is ambiguous and names the fix."""
    if annotation not in ANNOTATION_FORMATS:
        raise ConfigError(f"coco: unknown annotation format {annotation!r}; valid: {', '.join(ANNOTATION_FORMATS)}")
    if year != "auto" and year not in YEARS:
        raise ConfigError(f"coco: unknown year {year!r}; valid: auto, {', '.join(map(str, YEARS))}")
    l2d_path = os.path.join(root, L2D_FILES[split])
    years = YEARS if year == "auto" else (year,)
    official = {y: os.path.join(root, instances_file(split, y)) for y in years}
    if annotation == "l2d" or (annotation == "auto" and year in ("auto", L2D_YEAR) and os.path.isfile(l2d_path)):
        if year not in ("auto", L2D_YEAR):
            raise ConfigError(f"coco: L2D's annotation files cover COCO {L2D_YEAR} only, not {year}")
        if not os.path.isfile(l2d_path):
            raise DataError(f"COCO annotations not found: {l2d_path} is missing (annotation='l2d')")
        return "l2d", L2D_YEAR, l2d_path
    present = [y for y, path in official.items() if os.path.isfile(path)]
    if len(present) > 1:
        raise DataError(
            f"{root} holds COCO {' and '.join(map(str, present))} ({', '.join(official[y] for y in present)}); "
            f'choose one with --set "dataset_para=dict(year={present[-1]})"'
        )
    if not present:
        expected = " or ".join(
            [f"{L2D_FILES[split]} (L2D)"] * (annotation == "auto" and year in ("auto", L2D_YEAR))
            + [instances_file(split, y) for y in years]
        )
        raise DataError(
            f"COCO annotations not found in {root}: expected {expected}, "
            f"with the images in {' or '.join(image_folder(split, y) + '/' for y in years)}"
        )
    return "instances", present[0], official[present[0]]


@DATASETS.register("coco")
class COCODataset(MultiLabelDataset):
    """COCO 2014 or 2017. ``annotation``: ``"auto"`` (L2D's file if present, else the official
    instances file), ``"l2d"`` or ``"instances"``; ``year``: ``"auto"``, 2014 or 2017 (see
    :func:`find_layout`). Keys: ``<image folder>/<file_name>`` (``train2017/000000005802.jpg``).
    ``check_images=False`` skips the image-existence check (annotation-only use)."""

    name = "coco"
    planned_class_names = COCO_CLASSES

    @classmethod
    def published_train_split(cls, annotation: str = "auto", year="auto", **_: object) -> PublishedSplit:
        """train2014 as in L2D's ``train_anno.json`` (the default layout), or the official train2014 /
        train2017 instances file (every image, the unannotated ones included)."""
        # P: measured on L2D's val2014 file (../shared/data/coco2014_val_anno.json: 40,137 images,
        # 2.905 labels each); the train splits draw from the same photographs
        if year == 2017:
            return PublishedSplit(
                118287,
                80,
                2.880,
                "COCO 2017 train: 118,287 images in instances_train2017.json "
                "(1,021 without labels); P 2.88 from L2D's val2014 file, scaled for those",
            )
        if annotation == "instances":
            return PublishedSplit(
                82783,
                80,
                2.880,
                "COCO 2014 train: 82,783 images in instances_train2014.json "
                "(702 without labels); P 2.88 from L2D's val2014 file, scaled for those",
            )
        return PublishedSplit(
            82081,
            80,
            2.905,
            "COCO 2014 train as in L2D's train_anno.json: 82,081 images; "
            "P 2.905 measured on L2D's val2014 file (add dataset_para=dict(year=2017) for COCO 2017)",
        )

    def __init__(
        self,
        split: str = "train",
        root: Optional[str] = None,
        *,
        annotation: str = "auto",
        year="auto",
        check_images: bool = True,
    ) -> None:
        check_split(split)
        root = require_root(
            root,
            "coco",
            "a folder holding train2017/, val2017/ and annotations/instances_{train,val}2017.json "
            "(or the 2014 ones, or L2D's train_anno.json/val_anno.json with train2014/, val2014/)",
        )
        annotation, year, ann_path = find_layout(root, split, annotation, year)
        parse = parse_l2d_annotations if annotation == "l2d" else parse_instances_annotations
        file_names, labels = parse(ann_path)
        if not file_names:
            raise DataError(f"empty split: {ann_path} lists no images")
        self.annotation_file = ann_path
        self.annotation_format = annotation
        self.year = year

        img_folder = image_folder(split, year)
        img_dir = os.path.join(root, img_folder)
        keys = [f"{img_folder}/{n}" for n in file_names]
        paths = [os.path.join(img_dir, n) for n in file_names]
        if check_images:
            if not os.path.isdir(img_dir):
                raise DataError(f"COCO images not found: {img_dir} is missing (annotations: {ann_path})")
            check_images_exist(paths, "coco")
        super().__init__(split=split, class_names=COCO_CLASSES, keys=keys, labels=labels, image_paths=paths, root=root)
