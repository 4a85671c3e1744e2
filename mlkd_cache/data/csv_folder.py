"""A user's own multi-label data: a folder of images plus a label file per split.

Registered as ``csv``. Params: ``train_file``, ``test_file``, ``val_file`` (the ``val`` split,
for ``eval_split='val'``; all relative to the data root, or absolute), ``train_size`` (the
train split is the first ``train_size`` rows of ``train_file``; e.g. students on a part of the
images a teacher saw, ``dataset_para_t`` keeping them all), ``image_dir`` (default: the root;
relative to the root, or absolute), ``classes`` (default: the class columns of a one-hot train
file, else the sorted union of all labels in it), and the file's layout
(:class:`~mlkd_cache.data.label_files.LabelFormat`: ``image_column``, ``image_pattern``,
``labels_column``, ``label_sep``, ``label_columns``, ``negative_label``).

Default layout: a ``.csv``/``.txt`` (comma) or ``.tsv`` (tab) file with a header holding
``image`` and ``labels``, labels separated by ``;`` or whitespace (an empty cell: no positive
class), or a ``.json`` list of ``{"image": "a.jpg", "labels": ["cat", "dog"]}``.

Keys are the image paths as given in the file, after ``image_pattern`` (``/`` or ``\\`` both
resolve). Columns the layout does not use are named in the log (``ignored_columns``).

Duplicate rows, as published sets have them: an image listed again with the same label set (in
any order in the cell, or the same one-hot row; columns not used do not count) is kept once, at
its first row, and one warning per file names how many rows were merged and the lines of the
first few. An image listed again with other labels stops with both lines named. The merge comes
first, over the whole file: ``train_size`` counts distinct images, so ``train_size=N`` keeps the
first ``N`` images whatever the file repeats, and a conflicting duplicate past them still stops.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from .base import (
    DATASETS,
    MultiLabelDataset,
    check_images_exist,
    check_split,
    labels_from_index_lists,
    unknown_class_error,
)
from .label_files import ONE_HOT, LabelFormat, LabelRows, read_label_file, warn_suspect_classes

log = logging.getLogger("mlkd_cache")


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


def _label_format(
    image_column: str,
    image_pattern: Optional[str],
    labels_column: str,
    label_sep: Optional[str],
    label_columns: Union[None, str, Sequence[str]],
    negative_label: Optional[str],
) -> LabelFormat:
    """The label file layout from the layout params (a list of ``label_columns`` as a tuple)."""
    return LabelFormat(
        image_column=image_column,
        image_pattern=image_pattern,
        labels_column=labels_column,
        label_sep=label_sep,
        label_columns=label_columns if label_columns is None or isinstance(label_columns, str) else tuple(label_columns),
        negative_label=negative_label,
    )


def _check_root(root: Optional[str]) -> Optional[str]:
    """The data root as an absolute path (None stays None); DataError if it is not a folder."""
    if root is not None:
        root = os.path.abspath(os.path.expanduser(str(root)))
        if not os.path.isdir(root):
            raise DataError(
                f"data root not found: {root} is not a folder; pass --data-root pointing at "
                "the folder of your images and label files"
            )
    return root


def _check_file_params(
    split: str, train_file: Optional[str], test_file: Optional[str], val_file: Optional[str], train_size: Optional[int]
) -> str:
    """The ``train_file`` param; ConfigError if a file param the split needs is missing or ``train_size`` is bad."""
    if train_file is None:
        raise ConfigError("dataset csv needs the param train_file (dataset_para=dict(train_file=..., test_file=...))")
    if split == "test" and test_file is None:
        raise ConfigError("dataset csv: the test split needs the param test_file")
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1):
        raise ConfigError(f"dataset csv: param train_size must be a positive int or None, got {train_size!r}")
    if split == "val" and val_file is None:
        raise ConfigError("dataset csv: the val split needs the param val_file (dataset_para=dict(..., val_file=...))")
    return train_file


def _check_classes(classes: Optional[Sequence[str]]) -> Optional[List[str]]:
    """The ``classes`` param with names stripped (None stays None); ConfigError unless distinct non-empty names."""
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ConfigError("dataset csv: param classes must be a list of class names")
    names = [c.strip() for c in classes]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError("dataset csv: param classes has an empty or repeated name")
    return names


def _locate(
    split: str,
    root: Optional[str],
    train_file: str,
    test_file: Optional[str],
    val_file: Optional[str],
    image_dir: Optional[str],
    need_train_file: bool,
) -> Tuple[str, str, str]:
    """``(train label file, split label file, image folder)`` resolved; DataError if one is missing."""
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
    for p, what in ((split_path, f"{split} label file"),) + (((train_path, "train label file"),) if need_train_file else ()):
        if not os.path.isfile(p):
            raise DataError(f"csv: {what} not found: {p} is missing; fix train_file/val_file/test_file")
    if not os.path.isdir(img_dir):
        raise DataError(f"csv: image folder not found: {img_dir}; fix --data-root or image_dir")
    return train_path, split_path, img_dir


def _check_negative_label(fmt: LabelFormat, classes: Optional[Sequence[str]]) -> None:
    """ConfigError if ``negative_label`` (no class) is one of the ``classes`` param."""
    if fmt.negative_label is not None and classes is not None and fmt.negative_label in classes:
        raise ConfigError(f"dataset csv: negative_label {fmt.negative_label!r} means no class; drop it from the param classes")


def _read_split(split_path: str, train_path: str, fmt: LabelFormat) -> Tuple[LabelRows, Optional[LabelRows], LabelFormat]:
    """The split's rows, the train file's rows if read, and ``fmt`` (one-hot: the train file's class columns)."""
    train_rows = None
    if fmt.label_columns == ONE_HOT and split_path != train_path:  # the train file's class columns, by name
        train_rows = read_label_file(train_path, fmt)
        fmt = dataclasses.replace(fmt, label_columns=tuple(train_rows.class_columns or ()))
    rows = read_label_file(split_path, fmt)
    if split_path == train_path:
        train_rows = rows
    return rows, train_rows, fmt


def _classes(
    classes: Optional[List[str]], train_path: str, train_rows: Optional[LabelRows], fmt: LabelFormat
) -> Tuple[List[str], str]:
    """The class names (the param, else derived from the train file) and where they came from, for messages."""
    if classes is not None:
        return classes, "from the param classes"
    train_rows = train_rows or read_label_file(train_path, fmt)
    if fmt.one_hot:
        classes = list(train_rows.class_columns or [])
        class_source = f"the class columns of {train_path}"
    else:
        classes = sorted({c for row in train_rows.names for c in row})
        class_source = f"derived from {train_path}"
    if not classes:
        raise DataError(f"csv: {train_path} names no class at all; cannot derive classes")
    return classes, class_source


def _check_class_columns(split_path: str, rows: LabelRows, classes: List[str], class_source: str, fmt: LabelFormat) -> None:
    """DataError unless a one-hot file's class columns are exactly the classes."""
    if fmt.one_hot and rows.class_columns is not None and set(rows.class_columns) != set(classes):
        missing = sorted(set(classes) - set(rows.class_columns))
        extra = sorted(set(rows.class_columns) - set(classes))
        shown = ", ".join(rows.class_columns[:4]) + (", ..." if len(rows.class_columns) > 4 else "")
        raise DataError(
            f"csv: {split_path} has class columns {shown}, the classes are {class_source}"
            + (f"; no column for {', '.join(missing[:3])}" if missing else "")
            + (f"; columns {', '.join(extra[:3])} are no class" if extra else "")
            + "; make the columns and classes agree"
        )


def _take_train_size(
    rows: LabelRows, split: str, train_size: Optional[int], split_path: str
) -> Tuple[List[str], List[List[str]]]:
    """The split's images and label names, the first ``train_size`` for train; ConfigError if the file has fewer."""
    images, names = rows.images, rows.names
    if split == "train" and train_size is not None:  # the classes come from the whole file
        if train_size > len(images):
            raise ConfigError(
                f"dataset csv: train_size {train_size} but {split_path} lists {len(images)} images; lower train_size"
            )
        images, names = images[:train_size], names[:train_size]
    return images, names


def _merge_duplicates(rows: LabelRows, split_path: str) -> LabelRows:
    """``rows`` with each image once, at its first row: a later row of the same image with the
    same label set is dropped (one warning names them), one with other labels is a DataError
    naming both lines. One pass over the rows; ``rows`` itself when no image repeats."""
    if len(set(rows.images)) == len(rows.images):
        return rows
    noun = "entry" if split_path.lower().endswith(".json") else "line"  # a JSON file's rows are list entries
    first: Dict[str, int] = {}  # image -> its first row
    keep: List[int] = []
    merged: List[Tuple[int, int]] = []  # (line, line of the first row)
    for k, image in enumerate(rows.images):
        j = first.setdefault(image, k)
        if j == k:
            keep.append(k)
            continue
        here, there = set(rows.names[k]), set(rows.names[j])
        if here != there:
            differ = sorted(here ^ there)
            shown = ", ".join(differ[:3]) + (", ..." if len(differ) > 3 else "")
            raise DataError(
                f"{split_path}:{rows.lines[k]}: image {image!r} is listed twice with other labels (also {noun} "
                f"{rows.lines[j]}; they differ in {shown}); merge its labels in one row"
            )
        merged.append((rows.lines[k], rows.lines[j]))
    pairs = ", ".join(f"{a} = {b}" for a, b in merged[:3]) + (", ..." if len(merged) > 3 else "")
    log.warning(
        "csv: %s: %d duplicate row%s merged, the same image and labels as an earlier %s (%s %s)",
        split_path,
        len(merged),
        "" if len(merged) == 1 else "s",
        noun,
        "entries" if noun == "entry" else "lines",
        pairs,
    )
    return dataclasses.replace(
        rows,
        images=[rows.images[k] for k in keep],
        names=[rows.names[k] for k in keep],
        lines=[rows.lines[k] for k in keep],
    )


def _check_listed_images(images: List[str], split_path: str) -> None:
    """DataError if the split lists no image."""
    if not images:
        raise DataError(f"empty split: {split_path} lists no images")


def _label_matrix(
    images: List[str], names: List[List[str]], lines: List[int], classes: List[str], split_path: str, class_source: str
) -> np.ndarray:
    """``uint8 [N, C]`` labels; DataError naming the line of a class not in ``classes``."""
    index = {c: k for k, c in enumerate(classes)}
    idx_lists = []
    for image, row, line in zip(images, names, lines):
        try:
            idx_lists.append([index[c] for c in row])
        except KeyError as e:
            err = unknown_class_error(e.args[0], f"{split_path}:{line} (image {image})", classes)
            raise DataError(f"{err} ({class_source})") from None
    return labels_from_index_lists(idx_lists, len(classes))


def _image_paths(images: List[str], img_dir: str, lines: List[int], split_path: str, check_images: bool) -> List[str]:
    """Each image's path (relative ones under ``img_dir``); with ``check_images``, DataError naming a missing one's line."""
    paths = [os.path.join(img_dir, *im.replace("\\", "/").split("/")) if not os.path.isabs(im) else im for im in images]
    if check_images:
        try:
            check_images_exist(paths, "csv")
        except DataError as exc:
            first = next(k for k, p in enumerate(paths) if not os.path.isfile(p))
            raise DataError(f"{split_path}:{lines[first]}: {exc}") from None
    return paths


@DATASETS.register("csv")
class CSVDataset(MultiLabelDataset):
    """Images + labels from CSV/JSON files (see the module doc)."""

    name = "csv"
    splits = ("train", "val", "test")

    @classmethod
    def available_splits(cls, **params: Any) -> Tuple[str, ...]:
        """train, and val / test where ``val_file`` / ``test_file`` name their files."""
        return tuple(s for s in cls.splits if s == "train" or params.get(f"{s}_file") is not None)

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
        image_column: str = "image",
        image_pattern: Optional[str] = None,
        labels_column: str = "labels",
        label_sep: Optional[str] = None,
        label_columns: Union[None, str, Sequence[str]] = None,
        negative_label: Optional[str] = None,
    ) -> None:
        check_split(split, self.splits)
        fmt = _label_format(image_column, image_pattern, labels_column, label_sep, label_columns, negative_label)
        root = _check_root(root)
        train_file = _check_file_params(split, train_file, test_file, val_file, train_size)
        classes = _check_classes(classes)
        train_path, split_path, img_dir = _locate(split, root, train_file, test_file, val_file, image_dir, classes is None)
        _check_negative_label(fmt, classes)

        rows, train_rows, fmt = _read_split(split_path, train_path, fmt)
        class_names, class_source = _classes(classes, train_path, train_rows, fmt)
        _check_class_columns(split_path, rows, class_names, class_source, fmt)
        rows = _merge_duplicates(rows, split_path)
        images, names = _take_train_size(rows, split, train_size, split_path)
        _check_listed_images(images, split_path)
        labels = _label_matrix(images, names, rows.lines, class_names, split_path, class_source)
        paths = _image_paths(images, img_dir, rows.lines, split_path, check_images)
        if not fmt.one_hot and split_path == train_path:
            warn_suspect_classes(split_path, names, fmt)
        self.ignored_columns = list(rows.ignored)
        if rows.ignored:
            log.info("csv: %s: columns not used: %s", split_path, ", ".join(rows.ignored))
        self.label_file = split_path
        super().__init__(split=split, class_names=class_names, keys=images, labels=labels, image_paths=paths, root=root)
