"""Loose image files as a dataset: photographs to label or score that belong to no split.

:func:`collect_images` turns what a user names (image files, folders, lists of paths) into the
files to read, in a stable order; :class:`ImageFiles` is a
:class:`~mlkd_cache.data.base.MultiLabelDataset` of those files without labels (``C = 0``), whose
missing file is named as a list's mistake (a listed path that is not there), not a data root's. Its
images load through the loader every split uses (:func:`~mlkd_cache.data.base.load_rgb`, the
reduced-size JPEG decode included), so :func:`~mlkd_cache.data.views.eval_inputs` gives a model
the very pixels a split's eval view of the same file gives.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import MultiLabelDataset

__all__ = ["LIST_SUFFIXES", "collect_images", "read_path_list", "ImageFiles"]

# A file named with one of these suffixes is a list of image paths, one a line (.txt, .lst) or a
# csv whose "image" or "path" column names them; any other file is an image.
LIST_SUFFIXES = (".txt", ".lst", ".csv")
PATH_COLUMNS = ("image", "path")  # the csv columns a list is read from, in order of preference (one must be there)


def read_path_list(path: Path) -> List[str]:
    """The image paths a list file names, in its order: one a line (``.txt``, ``.lst``; blank
    lines and ``#`` comments skipped), or a ``.csv`` whose header names an ``image`` or ``path``
    column (a csv without either is refused: its first column is not guessed at). A relative
    path is relative to the list's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the list of images {path} ({exc}); give a text file of paths, one a line") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            raise DataError(f"{path} is empty; give a csv whose 'image' or 'path' column names the images")
        header = [h.strip() for h in rows[0]]
        column = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
        if column is None:
            raise DataError(
                f"{path} has no 'image' or 'path' column (its columns: {', '.join(header)}); "
                "name the column of paths 'image' or 'path', or give a .txt list (one path a line)"
            )
        entries = [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise DataError(f"{path} names no image; give one path a line")
    base = path.parent
    return [e if os.path.isabs(os.path.expanduser(e)) else str(base / e) for e in (os.path.expanduser(e) for e in entries)]


def collect_images(inputs: Sequence[Union[str, Path]]) -> List[str]:
    """The image files ``inputs`` name, in order: a file as given (an image; a ``LIST_SUFFIXES``
    file is read as a list of paths, :func:`read_path_list`), a folder as every file below it
    (recursively, sorted by path, hidden names skipped: a file that is no image is kept, to be
    named as unreadable, not silently dropped). A path that does not exist, or a folder with no
    file, is a :class:`DataError` naming it; a file named twice is read once (first place)."""
    if not inputs:
        raise DataError("no input given; name image files, folders or a text file listing images")
    found: List[str] = []
    for given in inputs:
        path = Path(os.path.expanduser(str(given)))
        if path.is_dir():
            files = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise DataError(f"{path} holds no file; give a folder of images")
            found += files
        elif path.is_file():
            found += read_path_list(path) if path.suffix.lower() in LIST_SUFFIXES else [str(path)]
        else:
            raise DataError(f"{path} does not exist; give image files, folders or a list of paths")
    return list(dict.fromkeys(found))


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

    def load_image(self, index: int, decode_size: Optional[int] = None) -> Image.Image:
        """The image of file ``index`` (:func:`~mlkd_cache.data.base.load_rgb`). A file that is not
        there is one a list of paths named (the files and folders given were there when
        :func:`collect_images` read them): a DataError naming the list, not a data root, to fix."""
        assert self.image_paths is not None  # files, always
        if not os.path.exists(self.image_paths[index]):
            raise DataError(
                f"{self.keys[index]} does not exist: a list of images names it; "
                "fix the list, or the folder its paths are relative to (the list's own folder)"
            )
        return super().load_image(index, decode_size)
