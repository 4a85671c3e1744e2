"""A user's own multi-label data: a folder of images plus a CSV or JSON label file per split.

Registered as ``csv``. Params: ``train_file``, ``test_file``, ``val_file`` (the ``val`` split,
for ``eval_split='val'``; all relative to the data root, or absolute), ``train_size`` (the
train split is the first ``train_size`` rows of ``train_file``; e.g. students on a part of the
images a teacher saw, ``dataset_para_t`` keeping them all), ``image_dir`` (default: the root; relative to the root, or absolute), ``classes``
(default: the sorted union of all labels in the train file).

* ``.csv`` / ``.txt`` (comma-separated) or ``.tsv`` (tab-separated): a header with columns ``image`` and ``labels``; ``labels`` is a
  list of class names separated by ``;`` or whitespace (so a class name cannot contain either);
  an empty ``labels`` cell is an image with no positive class.
* ``.json``: a list of ``{"image": "a.jpg", "labels": ["cat", "dog"]}``.

Keys are the image paths exactly as given in the file (``/`` or ``\\`` both resolve).
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import List, Optional, Sequence, Tuple

from ..errors import ConfigError, DataError
from .base import (
    DATASETS,
    MultiLabelDataset,
    check_images_exist,
    check_split,
    labels_from_index_lists,
    unknown_class_error,
)

_SEP = re.compile(r"[;\s]+")
CSV_EXTENSIONS = (".csv", ".tsv", ".txt")


def _split_labels(text: str) -> List[str]:
    return [t for t in _SEP.split(text.strip()) if t]


def read_label_file(path: str) -> Tuple[List[str], List[List[str]]]:
    """``(images, label name lists)`` of one CSV or JSON label file (format by extension)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON in {path}: {e}") from None
        if not isinstance(data, list):
            raise DataError(f'{path}: expected a JSON list of {{"image": ..., "labels": [...]}}')
        images, names = [], []
        for n, entry in enumerate(data):
            if not isinstance(entry, dict) or "image" not in entry or "labels" not in entry:
                raise DataError(f'{path}: entry {n} needs "image" and "labels" keys')
            labels = entry["labels"]
            if isinstance(labels, str):
                labels = _split_labels(labels)
            elif not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise DataError(f'{path}: entry {n} "labels" must be a list of class names')
            images.append(str(entry["image"]))
            names.append([x.strip() for x in labels if x.strip()])
        return images, names
    if ext in CSV_EXTENSIONS:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter="\t" if ext == ".tsv" else ",")
            header = next(reader, None)
            if header is None:
                raise DataError(f'{path} is empty; expected a header line "image,labels"')
            header = [h.strip().lower() for h in header]
            if "image" not in header or "labels" not in header:
                raise DataError(
                    f"{path}: header {','.join(header)!r} lacks the columns image and labels; "
                    'the first line must be "image,labels"'
                )
            ii, li = header.index("image"), header.index("labels")
            images, names = [], []
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(ii, li):
                    if len(row) == li and ii < li:  # trailing empty labels column omitted
                        row = row + [""]
                    else:
                        raise DataError(f"{path}:{line_no}: expected columns image,labels")
                image = row[ii].strip()
                if not image:
                    raise DataError(f"{path}:{line_no}: empty image path")
                images.append(image)
                names.append(_split_labels(row[li]))
        return images, names
    raise DataError(f"unsupported label file {path}: use a .csv (header image,labels) or a .json list")


def _resolve(path: str, root: Optional[str], what: str) -> str:
    path = os.path.expanduser(str(path))
    if os.path.isabs(path):
        return path
    if root is None:
        raise DataError(
            f"csv: {what} {path!r} is relative but no data root was given; pass --data-root "
            "(config data_root) or use an absolute path"
        )
    return os.path.join(root, path)


@DATASETS.register("csv")
class CSVDataset(MultiLabelDataset):
    """Images + labels from CSV/JSON files (see the module doc)."""

    name = "csv"
    splits = ("train", "val", "test")

    def __init__(
        self,
        split: str = "train",
        root: Optional[str] = None,
        *,
        train_file: Optional[str] = None,
        test_file: Optional[str] = None,
        val_file: Optional[str] = None,
        train_size: Optional[int] = None,
        image_dir: Optional[str] = None,
        classes: Optional[Sequence[str]] = None,
        check_images: bool = True,
    ) -> None:
        check_split(split, self.splits)
        if root is not None:
            root = os.path.abspath(os.path.expanduser(str(root)))
            if not os.path.isdir(root):
                raise DataError(
                    f"data root not found: {root} is not a folder; pass --data-root pointing at "
                    "the folder of your images and label files"
                )
        if train_file is None:
            raise ConfigError("dataset csv needs the param train_file (dataset_para=dict(train_file=..., test_file=...))")
        if split == "test" and test_file is None:
            raise ConfigError("dataset csv: the test split needs the param test_file")
        if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1):
            raise ConfigError(f"dataset csv: param train_size must be a positive int or None, got {train_size!r}")
        if split == "val" and val_file is None:
            raise ConfigError("dataset csv: the val split needs the param val_file (dataset_para=dict(..., val_file=...))")
        if classes is not None:
            if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
                raise ConfigError("dataset csv: param classes must be a list of class names")
            classes = [c.strip() for c in classes]
            if len(set(classes)) != len(classes) or not all(classes):
                raise ConfigError("dataset csv: param classes has an empty or repeated name")

        train_path = _resolve(train_file, root, "train_file")
        split_files = {"train": (train_file, "train_file"), "test": (test_file, "test_file"), "val": (val_file, "val_file")}
        chosen, key = split_files[split]
        split_path = train_path if split == "train" or chosen is None else _resolve(chosen, root, key)
        if image_dir is None:
            if root is None:
                raise DataError("csv: no image folder: pass --data-root (config data_root) or the param image_dir")
            img_dir = root
        else:
            img_dir = _resolve(image_dir, root, "image_dir")
        for p, what in ((split_path, f"{split} label file"),) + (((train_path, "train label file"),) if classes is None else ()):
            if not os.path.isfile(p):
                raise DataError(f"csv: {what} not found: {p} is missing; fix train_file/val_file/test_file")
        if not os.path.isdir(img_dir):
            raise DataError(f"csv: image folder not found: {img_dir}; fix --data-root or image_dir")

        images, names = read_label_file(split_path)
        if classes is None:
            train_names = names if split_path == train_path else read_label_file(train_path)[1]
            classes = sorted({c for row in train_names for c in row})
            if not classes:
                raise DataError(f"csv: {train_path} names no class at all; cannot derive classes")
            class_source = f"derived from {train_path}"
        else:
            class_source = "from the param classes"
        if split == "train" and train_size is not None:  # the classes above come from the whole file
            if train_size > len(images):
                raise ConfigError(
                    f"dataset csv: train_size {train_size} but {split_path} lists {len(images)} images; lower train_size"
                )
            images, names = images[:train_size], names[:train_size]
        if not images:
            raise DataError(f"empty split: {split_path} lists no images")
        if len(set(images)) != len(images):
            seen, dup = set(), None
            for im in images:
                if im in seen:
                    dup = im
                    break
                seen.add(im)
            raise DataError(f"{split_path}: image {dup!r} is listed twice; merge its labels in one row")

        index = {c: k for k, c in enumerate(classes)}
        idx_lists = []
        for image, row in zip(images, names):
            try:
                idx_lists.append([index[c] for c in row])
            except KeyError as e:
                err = unknown_class_error(e.args[0], f"{split_path} (image {image})", classes)
                raise DataError(f"{err} ({class_source})") from None
        labels = labels_from_index_lists(idx_lists, len(classes))
        paths = [os.path.join(img_dir, *im.replace("\\", "/").split("/")) if not os.path.isabs(im) else im for im in images]
        if check_images:
            check_images_exist(paths, "csv")
        self.label_file = split_path
        super().__init__(split=split, class_names=classes, keys=images, labels=labels, image_paths=paths, root=root)
