"""PASCAL VOC 2007 in the L2D layout.

::

    <root>/VOCtrainval2007/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/trainval.txt}
    <root>/VOCtest2007/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/test.txt}

``train`` is trainval (5,011 images), ``test`` is test (4,952). Every top-level ``<object>``
makes its class positive, ``difficult`` ones included (L2D's convention); the ``<part>``
children of person objects (head, hand, foot) are not objects and never become labels.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import List, Optional

import numpy as np

from ..errors import DataError
from .base import (
    DATASETS,
    MultiLabelDataset,
    check_images_exist,
    check_split,
    require_dir,
    require_file,
    require_root,
    unknown_class_error,
)
from .planning import PublishedSplit

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# split -> (top folder under root, image-set file name)
_SPLIT_DIRS = {"train": ("VOCtrainval2007", "trainval"), "test": ("VOCtest2007", "test")}
_DEVKIT = os.path.join("VOCdevkit", "VOC2007")


def _expected(top: str, imageset: str) -> str:
    return f"<root>/{top}/VOCdevkit/VOC2007/{{JPEGImages,Annotations,ImageSets/Main/{imageset}.txt}} (the L2D layout)"


def parse_voc_xml(path: str) -> List[str]:
    """Class names of the top-level objects of one VOC annotation file, in file order
    (whitespace stripped; parts ignored; difficult objects included)."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise DataError(f"malformed VOC annotation {path}: {e}; re-extract the VOC archive") from None
    except OSError as e:
        raise DataError(f"cannot read VOC annotation {path}: {e}") from None
    root = tree.getroot()
    if root.tag != "annotation":
        raise DataError(f"malformed VOC annotation {path}: root element is <{root.tag}>, expected <annotation>")
    names = []
    for obj in root.findall("object"):  # direct children only: <part> lives inside <object>
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise DataError(f"malformed VOC annotation {path}: an <object> has no <name>")
        names.append(name.strip())
    return names


def read_image_set(path: str) -> List[str]:
    """Image ids of an ``ImageSets/Main/*.txt`` file (first column, blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return ids


@DATASETS.register("voc")
class VOCDataset(MultiLabelDataset):
    """VOC 2007 (20 classes in the standard order). Keys are paths relative to the root, e.g.
    ``VOCtrainval2007/VOCdevkit/VOC2007/JPEGImages/000005.jpg``."""

    name = "voc"
    planned_class_names = VOC_CLASSES

    @classmethod
    def published_train_split(cls, **_: object) -> PublishedSplit:
        return PublishedSplit(
            5011,
            20,
            1.46,
            "VOC 2007 trainval: 5,011 images (the devkit's ImageSets/Main/trainval.txt); "
            "P 1.46 approximate (distinct classes per image, difficult objects included)",
        )

    def __init__(self, split: str = "train", root: Optional[str] = None, *, check_images: bool = True) -> None:
        check_split(split)
        top, imageset = _SPLIT_DIRS[split]
        expected = _expected(top, imageset)
        root = require_root(root, "voc", "a folder holding " + expected.replace("<root>/", ""))
        base = os.path.join(root, top, _DEVKIT)
        set_file = os.path.join(base, "ImageSets", "Main", imageset + ".txt")
        ann_dir = os.path.join(base, "Annotations")
        img_dir = os.path.join(base, "JPEGImages")
        for d in (ann_dir, img_dir):
            require_dir(d, "VOC layout", expected)
        require_file(set_file, "VOC layout", expected)

        ids = read_image_set(set_file)
        if not ids:
            raise DataError(f"empty split: {set_file} lists no images; re-extract the VOC archive")
        if len(set(ids)) != len(ids):
            raise DataError(f"{set_file} lists some image ids twice; re-extract the VOC archive")

        ann_files = set(os.listdir(ann_dir))
        missing = [i for i in ids if i + ".xml" not in ann_files]
        if missing:
            raise DataError(
                f"voc: {len(missing)} of {len(ids)} annotation files are missing, first: "
                f"{os.path.join(ann_dir, missing[0] + '.xml')}; re-extract the VOC archive"
            )

        class_index = {c: k for k, c in enumerate(VOC_CLASSES)}
        labels = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.uint8)
        for row, image_id in enumerate(ids):
            xml_path = os.path.join(ann_dir, image_id + ".xml")
            for cls in parse_voc_xml(xml_path):
                k = class_index.get(cls)
                if k is None:
                    raise unknown_class_error(cls, xml_path, VOC_CLASSES)
                labels[row, k] = 1

        rel_dir = "/".join((top, "VOCdevkit", "VOC2007", "JPEGImages"))
        keys = [f"{rel_dir}/{i}.jpg" for i in ids]
        paths = [os.path.join(img_dir, i + ".jpg") for i in ids]
        if check_images:
            check_images_exist(paths, "voc")
        super().__init__(split=split, class_names=VOC_CLASSES, keys=keys, labels=labels, image_paths=paths, root=root)
