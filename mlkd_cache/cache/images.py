"""A cache's image store: every train and eval image after the deterministic first step that all
its views share (decode, RGB, resize to ``img_size`` square), so that a student needs neither
the photographs nor their decoding.

* ``raw``: uint8 ``[S, S, 3]`` per image, memory-mapped when read (no decoding at all);
* ``jpeg``: re-encoded at the cache's ``jpeg_quality`` (4:2:0 chroma), several times smaller.
  ``dump-targets`` makes the teacher's views from the *decoded stored bytes*, so a student that
  decodes the same bytes replays the same pictures by construction.

:func:`encode_image` is the writer's side; :class:`ImageStore` reads one split's images from its
part files (the target shards for train, ``eval-*.h5`` for the eval split), opening its memory
maps lazily in each process (never inherited across a fork); :class:`StoredSplit` is a
:class:`~mlkd_cache.data.base.MultiLabelDataset` whose images come from a store.
"""

from __future__ import annotations

import io
import mmap
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..data.base import MultiLabelDataset
from ..errors import CacheCorruptError
from .h5 import open_read

__all__ = ["JPEG_SUBSAMPLING", "stored_jpeg_bytes", "encode_image", "decode_jpeg", "ImageStore", "StoredSplit"]

JPEG_SUBSAMPLING = "4:2:0"  # chroma subsampling of images="jpeg" (Pillow's default, stated once)

Encoded = np.ndarray  # uint8 [S, S, 3] (raw) or uint8 [bytes] (jpeg)


def stored_jpeg_bytes(f: Any) -> int:
    """The JPEG bytes an open shard or eval part holds (0 without a JPEG store)."""
    return int(f["jpeg_offsets"][-1]) if "jpeg_offsets" in f else 0


def decode_jpeg(data: Union[bytes, np.ndarray]) -> Image.Image:
    """The RGB image of stored JPEG bytes."""
    with Image.open(io.BytesIO(bytes(data))) as im:
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")


def encode_image(img: Image.Image, mode: str, quality: int = 0) -> Tuple[Encoded, Image.Image]:
    """``(what the store keeps, the image the views are made from)`` for a prepared RGB image:
    raw, its pixels ``[S, S, 3]`` and ``img`` itself; jpeg, the encoded bytes and their decoding
    (so the teacher sees exactly what a student will decode)."""
    if mode == "raw":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)), img
    if mode == "jpeg":
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=int(quality), subsampling=JPEG_SUBSAMPLING)
        data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        return data, decode_jpeg(data)
    raise ValueError(f"no image store of mode {mode!r}")


class ImageStore:
    """The stored images of one split, image ``i`` in the part file whose ``[start, stop)`` holds it.

    ``parts``: ``(path, start, stop)`` in order, covering ``0..N``. Validated by the cache at open
    (shapes); here only read: raw pixels through a memory map, JPEG bytes through a memory map
    plus the part's offsets."""

    def __init__(self, parts: Sequence[Tuple[Path, int, int]], mode: str, img_size: int) -> None:
        if mode not in ("raw", "jpeg"):
            raise ValueError(f"ImageStore mode must be raw or jpeg, got {mode!r}")
        self.parts = [(Path(p), int(a), int(b)) for p, a, b in parts]
        self.mode, self.img_size = mode, int(img_size)
        self._starts = np.array([a for _, a, _ in self.parts], dtype=np.int64)
        self._pid: Optional[int] = None
        self._maps: Dict[int, Dict[str, Any]] = {}

    def __len__(self) -> int:
        return self.parts[-1][2] if self.parts else 0

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_maps={}, _pid=None)  # no memory map crosses processes
        return state

    def _open(self, k: int) -> Dict[str, Any]:
        pid = os.getpid()
        if pid != self._pid:  # first use, or a forked DataLoader worker: open again
            self._maps, self._pid = {}, pid
        part = self._maps.get(k)
        if part is None:
            part = self._maps[k] = self._map(self.parts[k][0])
        return part

    def _map(self, path: Path) -> Dict[str, Any]:
        names = ("images",) if self.mode == "raw" else ("jpeg_offsets", "jpeg")
        part: Dict[str, Any] = {}
        try:
            with open_read(path) as f:
                layout = {
                    name: (f[name].id.get_offset() if f[name].size else None, f[name].shape, f[name].dtype) for name in names
                }
                if self.mode == "jpeg":
                    part["jpeg_offsets"] = np.asarray(f["jpeg_offsets"][()], dtype=np.int64)
        except (KeyError, OSError) as exc:
            raise CacheCorruptError(f"cannot read the images of {path} ({exc}); re-run dump-targets to rewrite it") from None
        with open(path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        name = "images" if self.mode == "raw" else "jpeg"
        offset, shape, dtype = layout[name]
        count = int(np.prod(shape, dtype=np.int64))
        if offset is None and count:  # chunked (written by another tool): read it whole
            with open_read(path) as f:
                part[name] = np.asarray(f[name][()])
        else:
            part[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=offset or 0).reshape(shape)
        return part

    def _locate(self, index: int) -> Tuple[int, int]:
        i = int(index)
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} out of range for {len(self)} stored images")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, i - self.parts[k][1]

    def encoded(self, index: int) -> np.ndarray:
        """What the store keeps for image ``index``: uint8 ``[S, S, 3]`` or its JPEG bytes (read-only views)."""
        k, row = self._locate(index)
        part = self._open(k)
        if self.mode == "raw":
            return part["images"][row]
        offsets = part["jpeg_offsets"]
        return part["jpeg"][offsets[row] : offsets[row + 1]]

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as an RGB ``img_size`` square (decoded, for jpeg)."""
        data = self.encoded(index)
        if self.mode == "raw":
            return Image.fromarray(data, "RGB")  # Pillow copies RGB pixels out of the (read-only) map
        return decode_jpeg(data)

    def __repr__(self) -> str:
        return f"ImageStore({self.mode}, {len(self)} images of {self.img_size}px in {len(self.parts)} file(s))"


class StoredSplit(MultiLabelDataset):
    """A split whose keys, labels, class names and images all come from a cache's store."""

    splits = ("train", "val", "test")

    def __init__(
        self, name: str, split: str, class_names: Sequence[str], keys: List[str], labels: np.ndarray, store: ImageStore
    ) -> None:
        super().__init__(split=split, class_names=class_names, keys=keys, labels=labels)
        if len(store) != len(keys):
            raise CacheCorruptError(f"the {split} store holds {len(store)} images for {len(keys)} samples; re-run dump-targets")
        self.name = name
        self.store = store

    def load_image(self, index: int, decode_size: Optional[int] = None) -> Image.Image:
        """The stored image (already ``img_size`` square: ``decode_size`` has nothing left to do)."""
        return self.store.image(index)
