"""Writing target-cache shards: an in-memory :class:`ShardBuffer`, atomic :func:`write_shard`,
a background :class:`ShardWriter`, :func:`shard_is_complete` for resuming, and the manifest.

A file named ``shard-NNNNN.h5`` is always complete: it is written as ``shard-NNNNN.h5.tmp``,
flushed, fsynced and renamed; ``manifest.json`` is written last, the same way.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import torch

from .._version import __version__
from ..errors import CacheCorruptError, MlkdError
from ..fileio import atomic_write_bytes, file_sha256, fsync_dir
from .codec import SCALE_DTYPE, Encoded, ErrorSum, encode, logits_dtype
from .format import (
    EMB_SCALE,
    MANIFEST_NAME,
    QUANTISATION_ATTR,
    CacheSpec,
    dataset_shapes,
    eval_name,
    eval_shapes,
    image_shapes,
    index_array,
    shard_name,
)
from .h5 import open_read
from .images import stored_jpeg_bytes

__all__ = [
    "ImageRows",
    "ShardBuffer",
    "EvalBuffer",
    "write_shard",
    "ShardWriter",
    "shard_is_complete",
    "eval_is_complete",
    "shard_entry",
    "write_manifest",
]


def _uint64_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):  # int64 tensors carry uint64 bits (to_signed)
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.int64:
        return x.view(np.uint64).reshape(-1)
    return x.astype(np.uint64).reshape(-1)


def _check_shape(name: str, x: Any, expected: tuple) -> None:
    if tuple(x.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {expected}")


class ImageRows:
    """The stored images of ``n`` rows (``spec.images``: raw pixels ``[n, S, S, 3]``, or JPEG
    bytes joined with offsets ``[n + 1]`` when written); nothing to hold without a store."""

    def __init__(self, spec: CacheSpec, n: int, where: str) -> None:
        self.mode, self.size, self.where = spec.images, spec.img_size, where
        self.raw = np.zeros((n, self.size, self.size, 3), np.uint8) if self.mode == "raw" else None
        self.jpeg: List[Optional[np.ndarray]] = [None] * n if self.mode == "jpeg" else []
        self._filled = np.zeros(n if self.mode != "none" else 0, dtype=bool)

    @property
    def complete(self) -> bool:
        return bool(self._filled.all())

    @property
    def missing(self) -> int:
        return int((~self._filled).sum())

    def put(self, rows: Any, encoded: Sequence[np.ndarray]) -> None:
        """Store ``encoded[b]`` (what :func:`~mlkd_cache.cache.images.encode_image` returns) as
        row ``rows[b]``'s image; each row once."""
        rows = index_array(rows)
        if self.mode == "none":
            raise ValueError(f"{self.where} has no image store (images='none')")
        if len(encoded) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(encoded)} images")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self._filled)):
            raise ValueError(f"rows must lie in [0, {len(self._filled)}), got {rows.min()}..{rows.max()}")
        if self._filled[rows].any() or len(np.unique(rows)) != len(rows):
            raise ValueError(f"an image of {self.where} was already put; each goes in exactly once")
        for row, data in zip(rows, encoded):
            data = np.asarray(data, dtype=np.uint8)
            if self.raw is not None:
                _check_shape("image", data, (self.size, self.size, 3))
                self.raw[row] = data
            else:
                self.jpeg[row] = data.reshape(-1)
        self._filled[rows] = True

    def arrays(self) -> Dict[str, np.ndarray]:
        """The store's datasets (:func:`~mlkd_cache.cache.format.image_shapes`)."""
        if self.raw is not None:
            return {"images": self.raw}
        if self.mode == "jpeg":
            parts = [np.zeros(0, np.uint8) if d is None else d for d in self.jpeg]
            offsets = np.zeros(len(parts) + 1, np.int64)
            offsets[1:] = np.cumsum([len(d) for d in parts])
            return {"jpeg_offsets": offsets, "jpeg": np.concatenate(parts) if parts else np.zeros(0, np.uint8)}
        return {}

    @property
    def nbytes(self) -> int:
        if self.raw is not None:
            return self.raw.nbytes
        return sum(0 if d is None else len(d) for d in self.jpeg) + 8 * (len(self.jpeg) + 1) if self.mode == "jpeg" else 0


class EvalBuffer:
    """Part ``k`` of the stored eval split (``eval-NNNNN.h5``): the keys, labels and images of
    eval samples ``start..stop-1`` of ``total`` (``labels`` uint8 ``[n, C]``)."""

    def __init__(
        self,
        spec: CacheSpec,
        split: str,
        k: int,
        start: int,
        stop: int,
        total: int,
        keys: Sequence[str],
        labels: np.ndarray,
        digest: str,
    ) -> None:
        n = stop - start
        self.total, self.digest = int(total), str(digest)
        if len(keys) != n or np.asarray(labels).shape != (n, spec.num_classes):
            raise ValueError(f"eval part {k} holds {n} samples, got {len(keys)} keys and labels {np.asarray(labels).shape}")
        if not spec.stores_images:
            raise ValueError("a cache without an image store has no eval parts")
        self.spec, self.split, self.index, self.start, self.stop = spec, split, int(k), int(start), int(stop)
        self.keys = [str(key) for key in keys]
        self.labels = np.ascontiguousarray(labels, dtype=np.uint8)
        self.images = ImageRows(spec, n, f"eval part {k}")

    @property
    def complete(self) -> bool:
        return self.images.complete

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + self.images.nbytes

    def datasets(self) -> Dict[str, np.ndarray]:
        return self.images.arrays()

    def missing(self) -> str:
        return f"{self.images.missing} images"

    @property
    def file_name(self) -> str:
        return eval_name(self.index)

    def attrs(self) -> Dict[str, Any]:
        return eval_attrs(self.spec, self.split, self.index, self.start, self.stop, self.total, self.digest)


def eval_attrs(spec: CacheSpec, split: str, k: int, start: int, stop: int, total: int, digest: str) -> Dict[str, Any]:
    """The attributes of eval part ``k`` (``created`` aside); ``digest``: :func:`~mlkd_cache.cache.format.split_digest`
    of the whole eval split, so that a part of another version of the split is never kept."""
    return {
        **spec.to_attrs(),
        "eval_split": split,
        "eval_digest": digest,
        "part_index": int(k),
        "sample_start": start,
        "sample_stop": stop,
        "eval_samples": total,
    }


class ShardBuffer:
    """In-memory arrays of one shard, filled batch by batch in any (sample, view) order.

    ``labels`` is uint8 ``[n, C]`` for the shard's samples (``n = stop - start``) and ``keys``
    their string keys. The arrays follow :func:`~mlkd_cache.cache.format.dataset_shapes`.
    """

    def __init__(self, spec: CacheSpec, k: int, keys: Sequence[str], labels: np.ndarray) -> None:
        self.spec = spec
        self.index = int(k)
        self.start, self.stop = spec.shard_range(self.index)
        n, V, C = self.stop - self.start, spec.views, spec.num_classes
        keys = [str(key) for key in keys]
        if len(keys) != n:
            raise ValueError(f"shard {k} holds {n} samples, got {len(keys)} keys")
        labels = np.asarray(labels)
        if labels.shape != (n, C):
            raise ValueError(f"labels of shard {k} have shape {labels.shape}, expected ({n}, {C})")
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise ValueError(f"labels of shard {k} must be 0/1")
        self.keys = keys
        self.labels = np.ascontiguousarray(labels, dtype=np.uint8)
        positives = int(np.count_nonzero(self.labels))
        dtypes = {f.name: f.np_dtype(spec) for f in spec.view_fields}
        dtypes.update(emb_offsets=np.dtype(np.int64), emb_class=np.dtype(np.int16), emb=spec.storage_dtype)
        dtypes.update({name: SCALE_DTYPE for name in (*(f.scale_name for f in spec.view_fields), EMB_SCALE)})
        arrays: Dict[str, np.ndarray] = {}
        stored = image_shapes(spec, n)
        for name, (shape, _) in dataset_shapes(spec, n, positives).items():
            if name in ("keys", "labels") or name in stored:  # the image store fills self.images
                continue
            arrays[name] = np.zeros(shape, dtype=dtypes[name])
        if spec.has_embeddings and spec.layout.positive:
            token_sample, token_class = np.nonzero(self.labels)  # row-major: classes ascend within a sample
            arrays["emb_offsets"][1:] = np.cumsum(np.count_nonzero(self.labels, axis=1))
            arrays["emb_class"][:] = token_class
            self._token_row = np.full((n, C), -1, dtype=np.int64)  # [n, C] -> row of emb, -1 if negative
            self._token_row[token_sample, token_class] = np.arange(positives)
        self.arrays = arrays
        self.images = ImageRows(spec, n, f"shard {k}")
        self._filled = np.zeros((n, V), dtype=bool)
        # the error of storing each teacher output in the cache's precision, against the float32 outputs in hand
        self.errors = {output: ErrorSum() for output in spec.outputs}

    @property
    def num_samples(self) -> int:
        return self.stop - self.start

    @property
    def complete(self) -> bool:
        """True when every (row, view) pair has been put exactly once (and, with an image
        store, every row's image)."""
        return bool(self._filled.all()) and self.images.complete

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values()) + self.labels.nbytes + self.images.nbytes

    def datasets(self) -> Dict[str, np.ndarray]:
        """Every dataset but keys and labels, in file order."""
        return {**self.arrays, **self.images.arrays()}

    @property
    def file_name(self) -> str:
        return shard_name(self.index)

    def attrs(self) -> Dict[str, Any]:
        """The shard's HDF5 attributes (``created`` aside); unless the cache is float32, also
        ``quantisation``: JSON ``{output: {"max_abs", "mean_rel", "vectors"}}``, the error of
        storing each teacher output against its float32 value (codec.ErrorSum)."""
        attrs = {**self.spec.to_attrs(), "shard_index": self.index, "sample_start": self.start, "sample_stop": self.stop}
        if self.spec.dtype != "float32":
            attrs[QUANTISATION_ATTR] = json.dumps({k: e.as_dict() for k, e in self.errors.items()}, sort_keys=True)
        return attrs

    def missing(self) -> str:
        """What was never put, in words."""
        pairs = int((~self._filled).sum())
        return f"{pairs} (sample, view) pairs" + (f" and {self.images.missing} images" if self.images.missing else "")

    def put(self, rows: Any, views: Any, label_emb: Any, **fields: Any) -> None:
        """Store one batch: ``rows`` int [B] local sample indices, ``views`` int [B],
        ``label_emb`` [B, C, E] (``None`` when the cache holds no embeddings), and one keyword per
        field of ``spec.view_fields``, ``[B, *dims]`` (here ``view_seed`` / ``fingerprint`` uint64
        [B], ``logits`` [B, C], ``features`` [B, D] when the teacher gives them); torch tensors on
        any device, or numpy.

        Float values are stored in the cache's precision (:func:`~mlkd_cache.cache.codec.encode`;
        logits float16, float32 in a float32 cache); the positive layout keeps ``label_emb[b, c]``
        only where ``labels[rows[b], c] == 1``. Each (row, view) pair may be put once.
        """
        spec = self.spec
        rows, views = index_array(rows), index_array(views)
        B = len(rows)
        n, V, C, E = self.num_samples, spec.views, spec.num_classes, spec.embed_dim
        _check_shape("views", views, (B,))
        if B and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"rows must lie in [0, {n}), got {rows.min()}..{rows.max()}")
        if B and (views.min() < 0 or views.max() >= V):
            raise ValueError(f"views must lie in [0, {V}), got {views.min()}..{views.max()}")
        names = [f.name for f in spec.view_fields]
        if sorted(fields) != sorted(names):
            raise TypeError(f"put() takes the fields {', '.join(names)}; got {', '.join(sorted(fields)) or 'none'}")
        values: Dict[str, Any] = {}
        for field in spec.view_fields:
            value = fields[field.name]
            values[field.name] = _uint64_array(value) if field.dtype == "uint64" else value
            _check_shape(field.name, values[field.name], (B, *field.shape(spec, 0)[2:]))
        if (label_emb is None) == spec.has_embeddings:
            raise TypeError(
                f"put() takes label_emb {'[B, C, E]' if spec.has_embeddings else 'None: the cache holds no embeddings'}"
            )
        if label_emb is not None:
            _check_shape("label_emb", label_emb, (B, C, E))
        pairs = rows * V + views
        seen = self._filled[rows, views]
        if seen.any() or len(np.unique(pairs)) != B:
            if seen.any():
                b = int(np.argmax(seen))
            else:
                _, first = np.unique(pairs, return_index=True)
                b = int(np.setdiff1d(np.arange(B), first)[0])
            raise ValueError(f"(row {rows[b]}, view {views[b]}) of shard {self.index} was already put; each goes in exactly once")

        a = self.arrays
        for field in spec.view_fields:
            value = values[field.name]
            if field.dtype is not None:
                a[field.name][rows, views] = value
                continue
            enc = encode(value, spec.dtype if field.coded else logits_dtype(spec.dtype))
            self._store(field.name, field.scale_name, (rows, views), enc, field.output)
        if label_emb is not None and not spec.layout.positive:
            self._store("emb", EMB_SCALE, (rows, views), encode(label_emb, spec.dtype), "label_emb")
        elif label_emb is not None:
            b_idx, c_idx = np.nonzero(self.labels[rows])  # the batch's positive (b, c) pairs
            e_t: Union[torch.Tensor, np.ndarray]
            if isinstance(label_emb, torch.Tensor):  # gather on the device: only P of B*C rows move
                dev = label_emb.device
                e_t = label_emb[torch.from_numpy(b_idx).to(dev), torch.from_numpy(c_idx).to(dev)]  # [T, E]
            else:
                e_t = np.asarray(label_emb)[b_idx, c_idx]  # [T, E]
            where = (self._token_row[rows[b_idx], c_idx], views[b_idx])
            self._store("emb", EMB_SCALE, where, encode(e_t, spec.dtype), "label_emb")
        self._filled[rows, views] = True

    def _store(self, name: str, scale_name: str, where: Tuple[np.ndarray, ...], enc: Encoded, output: Optional[str]) -> None:
        """Put encoded vectors (and their scales) at index ``where`` of dataset ``name``; count their error."""
        self.arrays[name][where] = enc.values
        if enc.scales is not None:
            self.arrays[scale_name][where] = enc.scales
        if output is not None:
            self.errors[output].add(enc)


def _strerror(exc: BaseException) -> str:
    """The OS reason inside an OSError, also when h5py wrapped it into its own text."""
    code = getattr(exc, "errno", None)
    if code:
        return os.strerror(code)
    text = str(exc)
    match = re.search(r"errno = (\d+)", text)
    if match:
        return os.strerror(int(match.group(1)))
    if "No space left" in text:
        return os.strerror(errno.ENOSPC)
    return text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # never there, or its folder is unusable: nothing to clean
        pass


def _reserve(path: Path, nbytes: int) -> None:
    """Create ``path`` holding ``nbytes`` of allocated space, so that a full disk, a quota or a
    file-size limit fails here, in plain Python I/O, with a clean ``OSError``. HDF5 does not
    survive a failed write: closing such a file crashes the process (seen with h5py 3 on
    ENOSPC), so the shard is only handed to HDF5 once its space is known to exist."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    finally:
        os.close(fd)


Buffer = Union["ShardBuffer", EvalBuffer]


def _size_bound(buffer: Buffer) -> int:
    """An upper bound of the shard's file size: the arrays, the keys (variable-length strings in
    HDF5's global heap, ~16 B of overhead each), the attributes and 16 KiB of object headers
    (measured: 10.5 KiB for a 32-sample shard, keys heap included)."""
    keys = sum(len(k.encode("utf-8")) + 32 for k in buffer.keys)
    attrs = len(json.dumps(buffer.spec.to_attrs(), default=str))
    return buffer.nbytes + keys + 2 * attrs + (16 << 10)


def _write_h5(buffer: Buffer, path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("keys", data=np.array(buffer.keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("labels", data=buffer.labels)
        for name, array in buffer.datasets().items():
            f.create_dataset(name, data=array)  # contiguous: no chunks, no filters
        attrs = buffer.attrs()
        attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for key, value in attrs.items():
            f.attrs[key] = value
        f.flush()


def write_shard(buffer: Buffer, directory: Path) -> Dict[str, Any]:
    """Write ``buffer`` atomically to ``directory/shard-NNNNN.h5`` (an :class:`EvalBuffer`: to
    ``eval-NNNNN.h5``) and return its manifest entry ``{"file", "index", "start", "stop",
    "bytes", "sha256"}``.

    Raises ``ValueError`` if the buffer is not complete and :class:`MlkdError` when the disk
    refuses the write (the ``.tmp`` file is removed).
    """
    what = "eval part" if isinstance(buffer, EvalBuffer) else "shard"
    if not buffer.complete:
        raise ValueError(f"{what} {buffer.index} is not complete: {buffer.missing()} were never put")
    directory = Path(directory)
    final = directory / buffer.file_name
    tmp = final.with_name(final.name + ".tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _reserve(tmp, _size_bound(buffer))  # h5py's "w" then truncates and rewrites the same space
        _write_h5(buffer, tmp)
        sha256 = file_sha256(tmp, fsync=True)
        size = tmp.stat().st_size
        os.replace(tmp, final)
    except OSError as exc:
        _remove(tmp)
        raise MlkdError(
            f"cannot write {final}: {_strerror(exc)}; free space in {directory} or choose another --out, "
            f"then re-run dump-targets (it resumes)"
        ) from None
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(directory)
    return {
        "file": final.name,
        "index": buffer.index,
        "start": buffer.start,
        "stop": buffer.stop,
        "bytes": size,
        "sha256": sha256,
    }


_STOP = object()


class ShardWriter:
    """Writes finished :class:`ShardBuffer` s on one background thread, so writing overlaps the
    next shard's forward passes. :meth:`submit` blocks while ``max_pending`` buffers wait.
    """

    def __init__(self, directory: Path, max_pending: int = 1) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.directory = Path(directory)
        self.bytes_written = 0
        self._entries: List[Dict[str, Any]] = []
        self._error: Optional[BaseException] = None
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_pending)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mlkd-shard-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            buffer = self._queue.get()
            if buffer is _STOP:
                return
            if self._error is None:  # after a failure keep draining so submit() never blocks forever
                try:
                    entry = write_shard(buffer, self.directory)
                    self._entries.append(entry)
                    self.bytes_written += entry["bytes"]
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc
            del buffer

    def submit(self, buffer: Buffer) -> None:
        """Queue ``buffer`` for writing; re-raises an earlier write error."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if not buffer.complete:
            raise ValueError(f"shard {buffer.index} is not complete; put every (sample, view) before submit")
        if self._error is not None:
            raise self._error
        self._queue.put(buffer)

    def close(self) -> List[Dict[str, Any]]:
        """Wait for pending writes; return the manifest entries of the shards written (submit order)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self._entries)

    def _abort(self) -> None:
        """Stop after the write in progress, dropping buffers still queued."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def _attr_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bytes):
        a = a.decode("utf-8")
    if isinstance(a, np.generic):
        a = a.item()
    return type(a) is type(b) and a == b


def _file_is_complete(path: Path, expected: Dict[str, Any], shapes_of: Any) -> bool:
    path = Path(path)
    try:
        if not path.is_file():
            return False
        with open_read(path) as f:
            attrs = dict(f.attrs)
            attrs.pop("created", None)
            attrs.pop(QUANTISATION_ATTR, None)  # measured while the shard was written, not part of what it must be
            if set(attrs) != set(expected) or not all(_attr_equal(attrs[key], v) for key, v in expected.items()):
                return False
            shapes = shapes_of(f)
            if set(f.keys()) != set(shapes):
                return False
            return all(f[name].shape == shape for name, (shape, _) in shapes.items())
    except Exception:  # truncated, foreign or unreadable: not complete, will be rewritten
        return False


def shard_is_complete(path: Path, spec: CacheSpec, k: int) -> bool:
    """True iff ``path`` is a readable shard ``k`` of ``spec``: same attributes (``created``
    aside), same sample range and datasets of the right shapes. Never raises for a bad file."""
    try:
        start, stop = spec.shard_range(k)
    except IndexError:
        return False
    expected = {**spec.to_attrs(), "shard_index": int(k), "sample_start": start, "sample_stop": stop}
    return _file_is_complete(
        path,
        expected,
        lambda f: dataset_shapes(spec, stop - start, int(np.count_nonzero(f["labels"][()])), stored_jpeg_bytes(f)),
    )


def eval_is_complete(path: Path, spec: CacheSpec, split: str, k: int, start: int, stop: int, total: int, digest: str) -> bool:
    """True iff ``path`` is eval part ``k`` (samples ``start..stop-1`` of ``total``, split
    ``digest``) of ``spec``'s store."""
    expected = eval_attrs(spec, split, k, start, stop, total, digest)
    return _file_is_complete(path, expected, lambda f: eval_shapes(spec, stop - start, stored_jpeg_bytes(f)))


def shard_entry(
    directory: Path, spec: CacheSpec, k: int, file: Optional[str] = None, start_stop: Optional[Tuple[int, int]] = None
) -> Dict[str, Any]:
    """The manifest entry of an existing shard ``k`` (e.g. one a resumed dump skipped); ``file``
    and ``start_stop`` name another file of the cache (an eval part)."""
    path = Path(directory) / (file or shard_name(k))
    start, stop = start_stop if start_stop is not None else spec.shard_range(k)
    return {
        "file": path.name,
        "index": int(k),
        "start": start,
        "stop": stop,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def write_manifest(
    directory: Path,
    spec: CacheSpec,
    entries: Sequence[Dict[str, Any]],
    made_with: Optional[Dict[str, Any]] = None,
    eval_store: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write ``directory/manifest.json`` atomically; ``entries`` must cover every shard once.
    ``made_with`` (JSON values) records how the dumped split was built: the config file, the
    dataset parameters and data root, so that the split can be rebuilt from the cache alone.
    ``eval_store`` (a cache with an image store): ``{"split", "num_samples", "labels_sha256",
    "shards": [entries of the eval parts]}``."""
    directory = Path(directory)
    shards = sorted((dict(e) for e in entries), key=lambda e: e["index"])
    indices = [e["index"] for e in shards]
    if indices != list(range(spec.num_shards())):
        missing = sorted(set(range(spec.num_shards())) - set(indices))
        raise ValueError(f"manifest needs shards 0..{spec.num_shards() - 1} once each; missing {missing}, got {indices}")
    manifest: Dict[str, Any] = {
        "format_version": spec.format_version,
        "tool_version": __version__,
        "spec": spec.to_dict(),
        "num_samples": spec.num_samples,
        "views": spec.views,
        "shards": shards,
        "total_bytes": sum(int(e["bytes"]) for e in shards),
    }
    if made_with is not None:
        manifest["made_with"] = made_with
    if spec.stores_images != (eval_store is not None):
        raise ValueError("a cache with an image store lists its eval parts, one without lists none")
    if eval_store is not None:
        parts = sorted((dict(e) for e in eval_store["shards"]), key=lambda e: e["index"])
        manifest["eval"] = {**eval_store, "shards": parts}
        manifest["total_bytes"] += sum(int(e["bytes"]) for e in parts)
    for entry in [*shards, *(manifest["eval"]["shards"] if eval_store is not None else [])]:
        try:
            size = (directory / entry["file"]).stat().st_size
        except OSError:
            size = None
        if size != int(entry["bytes"]):  # never a manifest listing a file its folder lacks (another node's disk)
            raise CacheCorruptError(
                f"{entry['file']} is not in {directory} as it was written ({entry['bytes']} bytes); "
                f"write the cache to a folder every process sees, and re-run dump-targets (it resumes)"
            )
    path = directory / MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return path
