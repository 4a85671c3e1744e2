"""Reading a target cache: :class:`TargetCache`, random access by (sample, view) through numpy
memory maps of the contiguous HDF5 datasets; :func:`open_cache` opens one and checks it against
the train split and input pipeline a student trains on (:func:`check_fits`), and
:func:`check_store_fits` a config against what its image store holds.

h5py is used only to validate shards and to find each dataset's byte offset; batches are
gathered with numpy advanced indexing on read-only memory maps (h5py fancy indexing is 50-70x
slower). Maps are opened lazily per process, so a cache handed to DataLoader workers (fork or
pickle) never shares a handle across a fork.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..config import EVAL_SPLITS
from ..data.transforms import TransformSpec
from ..errors import CacheCorruptError, CacheMismatchError, ConfigError
from ..fileio import file_sha256
from . import format as fmt
from .codec import decode
from .format import FORMAT_VERSION, FORMATS, MANIFEST_NAME, CacheSpec, dataset_shapes, eval_shapes
from .h5 import open_failure, open_failure_advice, open_read, sha256_as_closed
from .images import ImageStore, StoredSplit, stored_jpeg_bytes

__all__ = ["TargetCache", "open_cache", "check_fits", "check_store_fits", "STORED_IMAGE_FIELDS"]

log = logging.getLogger("mlkd_cache")

# memory-mapped and gathered per batch
_MAPPED = (*(f.name for f in fmt.VIEW_FIELDS), *(f.scale_name for f in fmt.VIEW_FIELDS if f.coded), "emb", fmt.EMB_SCALE)


def _ranges(entries: List[Dict[str, Any]]) -> List[Tuple[int, int, int]]:
    """``(index, start, stop)`` of manifest file entries, each checked to hold a well-typed
    ``file``, ``bytes`` and ``sha256`` (KeyError, TypeError or ValueError otherwise)."""
    for e in entries:
        str(e["file"]), int(e["bytes"]), str(e["sha256"])
    return [(int(e["index"]), int(e["start"]), int(e["stop"])) for e in entries]


class _Shard:
    """What the main process learns about one shard at open time (small, picklable)."""

    def __init__(self, path: Path, entry: Dict[str, Any]) -> None:
        self.path = path
        self.file = entry["file"]
        self.index = int(entry["index"])
        self.start, self.stop = int(entry["start"]), int(entry["stop"])
        self.layout: Dict[str, Tuple[Optional[int], Tuple[int, ...], np.dtype]] = {}  # name -> (offset, shape, dtype)
        self.labels: Optional[np.ndarray] = None  # uint8 [n, C] while opening, then only in TargetCache.labels
        self.emb_offsets: Optional[np.ndarray] = None  # positive mode, int64 [n + 1]
        self.emb_class: Optional[np.ndarray] = None  # positive mode, int64 [P]
        self.emb_counts: Optional[np.ndarray] = None  # positive mode, int64 [n]: tokens per sample


def _token_layout(starts: np.ndarray, counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """CSR gather plan: for samples whose tokens are rows ``starts[b]:starts[b]+counts[b]``,
    return (token row [P], batch position [P]) in batch order, without a loop over samples."""
    ends = np.cumsum(counts)  # where sample b's tokens end in the output
    total = int(ends[-1]) if len(ends) else 0
    sample = np.repeat(np.arange(len(counts)), counts)
    rows = (starts - (ends - counts))[sample] + np.arange(total)
    return rows, sample


class TargetCache:
    """Read-only view of a cache directory written by ``dump-targets``.

    Validates ``manifest.json`` and every shard's size and attributes at construction
    (``verify_checksums=True`` also compares sha256), then serves batches with :meth:`get`.
    """

    def __init__(self, directory: Path, verify_checksums: bool = False) -> None:
        self.directory = Path(directory)
        manifest = self._read_manifest()
        self.manifest = manifest
        # the sha256 of manifest.json's canonical JSON: copies of one cache have the same
        self.manifest_sha256 = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()
        self.spec: CacheSpec = CacheSpec.from_dict(manifest["spec"])
        self.format_version = int(manifest["format_version"])
        self.num_samples = self.spec.num_samples
        self.views = self.spec.views
        self._shards = [self._open_shard(entry) for entry in manifest["shards"]]
        self._eval_parts = [self._open_shard(entry, eval_split=True) for entry in self._eval_entries()]
        self._labels = np.concatenate([s.labels for s in self._shards])
        self._eval_labels = np.concatenate([s.labels for s in self._eval_parts]) if self._eval_parts else None
        if self._eval_labels is not None and fmt.labels_digest(self._eval_labels) != manifest["eval"].get("labels_sha256"):
            raise CacheCorruptError(
                f"the stored {self.eval_split} split in {self.directory} has other labels than {MANIFEST_NAME} records; "
                f"re-run dump-targets with the same config and teacher to rewrite it"
            )
        for shard in self._shards + self._eval_parts:
            shard.labels = None  # kept once, in self._labels (pickled to every worker)
        self._keys: Optional[List[str]] = None
        self._pid: Optional[int] = None
        self._maps: Dict[int, Dict[str, Any]] = {}  # per process: shard -> {name: ndarray | h5py.Dataset}
        if verify_checksums:  # after every shard's attributes: a foreign shard is named as such
            self.verify_checksums()

    # -- validation ----------------------------------------------------------------------------

    def _read_manifest(self) -> Dict[str, Any]:
        path = self.directory / MANIFEST_NAME
        where = self.directory
        if not where.is_dir():
            raise CacheCorruptError(f"cache folder not found: {where} is not a folder; give the --out folder of dump-targets")
        if not path.is_file():
            if not any(where.glob(fmt.part_glob(fmt.SHARD_PREFIX, "*"))):
                raise CacheCorruptError(
                    f"no {MANIFEST_NAME} in {where} and no shard files: not a target cache; give the --out folder of dump-targets"
                )
            raise CacheCorruptError(f"no {MANIFEST_NAME} in {where}: the dump did not finish; re-run dump-targets (it resumes)")
        try:
            text = path.read_text(encoding="utf-8")
            manifest = json.loads(text)
        except PermissionError:
            raise CacheCorruptError(f"cannot read {MANIFEST_NAME} in {where}: {open_failure_advice('permission')}") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise CacheCorruptError(f"{MANIFEST_NAME} in {where} is unreadable ({reason}); re-run dump-targets") from None
        if not isinstance(manifest, dict) or not {"format_version", "spec", "shards"} <= set(manifest):
            raise CacheCorruptError(f"{MANIFEST_NAME} in {where} is not an mlkd-cache manifest; re-run dump-targets")
        if not isinstance(manifest["format_version"], int) or not 1 <= manifest["format_version"] <= FORMAT_VERSION:
            raise CacheMismatchError(
                f"cache in {where} has format version {manifest['format_version']}, this mlkd-cache reads up to "
                f"{FORMAT_VERSION}; upgrade mlkd-cache or re-run dump-targets"
            )
        spec = CacheSpec.from_dict(manifest["spec"])
        try:
            listed = _ranges(manifest["shards"])
        except (KeyError, TypeError, ValueError):
            raise CacheCorruptError(f"{MANIFEST_NAME} in {where} has malformed shard entries; re-run dump-targets") from None
        needed = fmt.part_ranges(spec.num_samples, spec.shard_size)
        if listed != needed:
            raise CacheCorruptError(
                f"{MANIFEST_NAME} in {where} lists {len(listed)} shards, the spec needs {len(needed)} "
                f"covering samples 0..{spec.num_samples}; re-run dump-targets"
            )
        return manifest

    def _eval_entries(self) -> List[Dict[str, Any]]:
        """The manifest's eval parts (a cache with an image store), checked to cover the split."""
        if not self.spec.stores_images:
            return []
        where = self.directory
        try:
            store = self.manifest["eval"]
            split, total = str(store["split"]), int(store["num_samples"])
            entries = [dict(e) for e in store["shards"]]
            listed = _ranges(entries)
        except (KeyError, TypeError, ValueError):
            raise CacheCorruptError(
                f"{MANIFEST_NAME} in {where} lacks a well-formed 'eval' entry for its image store; re-run dump-targets"
            ) from None
        needed = fmt.part_ranges(total, self.spec.shard_size)
        if listed != needed or split not in EVAL_SPLITS:
            raise CacheCorruptError(
                f"{MANIFEST_NAME} in {where}: the stored {split} split lists {len(listed)} parts, {total} samples need "
                f"{len(needed)}; re-run dump-targets"
            )
        return entries

    def _open_shard(self, entry: Dict[str, Any], eval_split: bool = False) -> _Shard:
        where = self.directory
        shard = _Shard(self.directory / entry["file"], entry)
        fix = "re-run dump-targets with the same config and teacher to rewrite it"
        if not shard.path.is_file():
            raise CacheCorruptError(f"{shard.file} listed in {where}/{MANIFEST_NAME} is missing; {fix}")
        size = shard.path.stat().st_size
        if size != int(entry["bytes"]):
            raise CacheCorruptError(
                f"{shard.file} in {where} has {size} bytes, {MANIFEST_NAME} lists {entry['bytes']} (truncated?); {fix}"
            )
        try:
            f = open_read(shard.path)
        except OSError as exc:  # only a damaged file calls for a rewrite: never one that is locked or unreadable to us
            kind, reason = open_failure(exc)
            advice = fix if kind == "damage" else open_failure_advice(kind)
            raise CacheCorruptError(f"cannot open {shard.file} in {where} ({reason}); {advice}") from None
        with f:
            try:
                shard_spec = CacheSpec.from_attrs(f.attrs)
            except CacheCorruptError as exc:
                raise CacheCorruptError(f"{shard.file} in {where}: {exc}") from None
            diff = fmt.spec_difference(shard_spec, self.spec)
            index_attr = "part_index" if eval_split else "shard_index"
            if diff is None:
                got = tuple(int(f.attrs.get(a, -1)) for a in (index_attr, "sample_start", "sample_stop"))
                if got != (shard.index, shard.start, shard.stop):
                    diff = f"part {got[0]} samples {got[1]}:{got[2]} vs {shard.index} {shard.start}:{shard.stop}"
            if diff is not None:
                raise CacheCorruptError(f"{shard.file} in {where} belongs to another cache ({diff}); {fix}")
            try:
                shard.labels = np.asarray(f["labels"][()], dtype=np.uint8)
                n, jpeg = shard.stop - shard.start, stored_jpeg_bytes(f)
                if eval_split:
                    shapes = eval_shapes(self.spec, n, jpeg)
                else:
                    shapes = dataset_shapes(self.spec, n, int(np.count_nonzero(shard.labels)), jpeg)
                for name, (shape, itemsize) in shapes.items():
                    dset = f[name]
                    if dset.shape != shape:
                        raise CacheCorruptError(
                            f"{shard.file} in {where}: {name} has shape {dset.shape}, expected {shape}; {fix}"
                        )
                    if name in _MAPPED and dset.dtype.itemsize != itemsize:  # decoded by the cache's precision
                        raise CacheCorruptError(
                            f"{shard.file} in {where}: {name} holds {dset.dtype}, a {self.spec.dtype} cache stores "
                            f"{itemsize}-byte values there; {fix}"
                        )
                    if name in _MAPPED:
                        offset = dset.id.get_offset() if dset.size else None
                        shard.layout[name] = (offset, shape, dset.dtype)
                if self.spec.has_embeddings and self.spec.layout.positive and not eval_split:
                    shard.emb_offsets = np.asarray(f["emb_offsets"][()], dtype=np.int64)
                    shard.emb_class = np.asarray(f["emb_class"][()], dtype=np.int64)
                    shard.emb_counts = np.diff(shard.emb_offsets)
            except (KeyError, OSError) as exc:
                raise CacheCorruptError(f"cannot read {shard.file} in {where} ({exc}); {fix}") from None
        return shard

    def quantisation_error(self) -> Optional[Dict[str, Dict[str, float]]]:
        """The error of storing each teacher output in this cache's precision, against the float32
        outputs dump-targets had in hand, over every shard: ``{output: {"max_abs": largest
        absolute error, "mean_rel": mean over vectors of |x̂ - x| / |x|, "vectors"}}``. None for a
        float32 cache, or one written by a version that did not record it."""
        totals: Dict[str, Dict[str, float]] = {}
        for shard in self._shards:
            with open_read(shard.path) as f:
                text = f.attrs.get(fmt.QUANTISATION_ATTR)
            if text is None:
                return None
            for output, err in json.loads(text.decode() if isinstance(text, bytes) else str(text)).items():
                total = totals.setdefault(output, {"max_abs": 0.0, "rel_sum": 0.0, "vectors": 0})
                total["max_abs"] = max(total["max_abs"], float(err["max_abs"]))
                total["rel_sum"] += float(err["mean_rel"]) * int(err["vectors"])
                total["vectors"] += int(err["vectors"])
        return {
            output: {"max_abs": t["max_abs"], "mean_rel": t["rel_sum"] / max(t["vectors"], 1), "vectors": int(t["vectors"])}
            for output, t in totals.items()
        }

    @property
    def num_files(self) -> int:
        """The files the manifest lists with a sha256: the shards, then the stored eval parts."""
        return len(self._shards) + len(self._eval_parts)

    def verify_checksums(self, shards: Optional[List[int]] = None) -> None:
        """Compare the sha256 of files ``shards`` (indices below :attr:`num_files`; default:
        all) with the manifest; raise :class:`CacheCorruptError` naming the first file whose bytes
        changed (a flipped bit in a data block passes every attribute and size check, only the
        digest catches it)."""
        files = self._shards + self._eval_parts
        entries = list(self.manifest["shards"]) + (list(self.manifest["eval"]["shards"]) if self._eval_parts else [])
        for k in range(len(files)) if shards is None else shards:
            shard, listed = files[k], str(entries[k]["sha256"])
            digest = file_sha256(shard.path)
            if digest != listed and sha256_as_closed(shard.path) == listed:
                log.warning(
                    "%s in %s is held open for writing by another process, or one was killed holding it (HDF5's write "
                    "flag is set); its data matches %s",
                    shard.file,
                    self.directory,
                    MANIFEST_NAME,
                )
            elif digest != listed:
                raise CacheCorruptError(
                    f"{shard.file} in {self.directory} fails its sha256 check ({digest[:8]}… vs {listed[:8]}… in "
                    f"{MANIFEST_NAME}): its bytes changed after the dump; re-run dump-targets with the same "
                    f"config and teacher to rewrite it"
                )

    # -- per-process handles -------------------------------------------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_maps={}, _pid=None, _keys=None)  # no mmap or h5py handle crosses processes
        return state

    def _arrays(self, k: int) -> Dict[str, Any]:
        pid = os.getpid()
        if pid != self._pid:  # first use, or a forked DataLoader worker: re-open everything
            self._maps, self._pid = {}, pid
        arrays = self._maps.get(k)
        if arrays is None:
            arrays = self._maps[k] = self._map_shard(self._shards[k])
        return arrays

    @staticmethod
    def _map_shard(shard: _Shard) -> Dict[str, Any]:
        arrays: Dict[str, Any] = {}
        mm = None
        h5 = None
        for name, (offset, shape, dtype) in shard.layout.items():
            count = int(np.prod(shape, dtype=np.int64))
            if count == 0:
                arrays[name] = np.zeros(shape, dtype)
            elif offset is not None:
                if mm is None:
                    with open(shard.path, "rb") as fh:
                        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                arrays[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)
            else:  # not contiguous (written by another tool): h5py row reads
                if h5 is None:
                    h5 = arrays["_h5"] = open_read(shard.path)
                arrays[name] = h5[name]
        return arrays

    # -- metadata ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_samples

    @property
    def labels(self) -> np.ndarray:
        """uint8 ``[N, C]`` label matrix of the whole cache."""
        return self._labels

    def require(self, output: str, what: str) -> None:
        """Raise :class:`CacheMismatchError` (one line) when this cache does not hold
        ``output`` (a :data:`~mlkd_cache.cache.format.TEACHER_OUTPUTS` name), which ``what`` needs."""
        if output not in self.spec.outputs:
            raise CacheMismatchError(
                f"{what} needs the teacher's {fmt.OUTPUT_WORDS[output]}, and the cache in {self.directory} has none "
                f"(it holds {', '.join(fmt.OUTPUT_WORDS[o] for o in self.spec.outputs)})"
            )

    # -- image store ---------------------------------------------------------------------------

    @property
    def fingerprint_of(self) -> str:
        """What this cache's fingerprints hash: ``"uint8"`` pixels (format 2 on) or the ``"float32"``
        input (format 1), as :data:`~mlkd_cache.cache.format.FORMATS` records it:
        :class:`~mlkd_cache.data.views.ViewDataset`'s ``fingerprint_of``."""
        return FORMATS[self.format_version].fingerprint_input

    @property
    def eval_split(self) -> Optional[str]:
        """The evaluation split the image store holds (``"test"`` or ``"val"``), else ``None``."""
        return str(self.manifest["eval"]["split"]) if self._eval_parts else None

    def stored_split(self, split: str = "train") -> StoredSplit:
        """The ``"train"`` split, or the stored eval split (``"eval"``), read from the image store:
        keys, labels, class names and images, with no dataset folder. Raises
        :class:`CacheMismatchError` for a cache without a store."""
        spec = self.spec
        if not spec.stores_images:
            raise CacheMismatchError(
                f"{self.directory} holds no images (dumped with images='none'); re-run dump-targets with --images raw "
                f"or jpeg, or give the dataset folder"
            )
        if split == "train":
            parts, keys, labels, name = self._shards, self.keys, self._labels, "train"
        elif split == "eval":
            parts, name = self._eval_parts, str(self.eval_split)
            keys = []
            for part in parts:
                with open_read(part.path) as f:
                    keys.extend(f["keys"].asstr()[()].tolist())
            labels = self._eval_labels if self._eval_labels is not None else np.zeros((0, spec.num_classes), np.uint8)
        else:
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        store = ImageStore([(p.path, p.start, p.stop) for p in parts], spec.images, spec.img_size)
        stored = StoredSplit(spec.dataset, name, spec.class_names, keys, labels, store)
        if name in ("train", "val"):  # the dump's train split, or the val split held out of it
            stored.val_split = dict(spec.val_split)
        return stored

    def content_sha256(self) -> str:
        """sha256 over the manifest's per-shard sha256 list: changes whenever any shard does."""
        digests = "\n".join(str(entry["sha256"]) for entry in self.manifest["shards"])
        return hashlib.sha256(digests.encode("utf-8")).hexdigest()

    @property
    def keys(self) -> List[str]:
        if self._keys is None:
            keys: List[str] = []
            for shard in self._shards:
                with open_read(shard.path) as f:
                    keys.extend(f["keys"].asstr()[()].tolist())
            self._keys = keys
        return self._keys

    def check_request(self, **kwargs: Any) -> None:
        """:func:`mlkd_cache.cache.format.check_request` against this cache's spec."""
        kwargs.setdefault("where", str(self.directory))
        fmt.check_request(self.spec, **kwargs)

    # -- batches -------------------------------------------------------------------------------

    def _locate(self, indices: Any, views: Any) -> Tuple[List[Tuple[int, Any]], np.ndarray, np.ndarray]:
        """(groups, local row [B], view [B]); groups are (shard, selector) pairs, the selector a
        plain slice when the whole batch lies in one shard (the common fast path)."""
        idx, view = fmt.index_array(indices), fmt.index_array(views)
        if idx.shape != view.shape:
            raise ValueError(f"indices and views differ in length ({len(idx)} vs {len(view)})")
        if len(idx) == 0:
            return [], idx, view
        # one reduction per array: a negative int64 seen as uint64 is huge
        if idx.view(np.uint64).max() >= self.num_samples:
            raise IndexError(f"sample indices must lie in [0, {self.num_samples}), got {idx.min()}..{idx.max()}")
        if view.view(np.uint64).max() >= self.views:
            raise IndexError(f"views must lie in [0, {self.views}), got {view.min()}..{view.max()}")
        if len(self._shards) == 1:
            return [(0, slice(None))], idx, view
        size = self.spec.shard_size
        shard = idx // size
        local = idx - shard * size
        first = int(shard[0])
        if (shard == first).all():
            return [(first, slice(None))], local, view
        return [(int(k), np.flatnonzero(shard == k)) for k in np.unique(shard)], local, view

    @staticmethod
    def _take(array: Any, rows: np.ndarray, cols: Optional[np.ndarray] = None) -> np.ndarray:
        """``array[rows, cols]`` (or ``array[rows]``) for a memory map or, as fallback, an h5py dataset."""
        if isinstance(array, np.ndarray):
            return array[rows] if cols is None else array[rows, cols]
        unique, inverse = np.unique(rows, return_inverse=True)
        block = np.stack([array[int(r)] for r in unique]) if len(unique) else np.zeros((0, *array.shape[1:]), array.dtype)
        return block[inverse] if cols is None else block[inverse, cols]

    def _gather_tokens(self, groups, local: np.ndarray, view: np.ndarray):
        """Positive tokens of a batch: (tokens [P, E], batch position [P], class [P])."""
        if len(groups) == 1:
            shard = self._shards[groups[0][0]]
            starts, counts = shard.emb_offsets[local], shard.emb_counts[local]
        else:
            starts = np.empty(len(local), np.int64)
            counts = np.empty(len(local), np.int64)
            for k, sel in groups:
                starts[sel] = self._shards[k].emb_offsets[local[sel]]
                counts[sel] = self._shards[k].emb_counts[local[sel]]
        rows, sample = _token_layout(starts, counts)
        token_view = view[sample]
        if len(groups) == 1:
            k = groups[0][0]
            return self._tokens(k, rows, token_view), sample, self._shards[k].emb_class[rows]
        E = self.spec.embed_dim
        tokens = np.empty((len(rows), E), self.spec.value_dtype)
        classes = np.empty(len(rows), np.int64)
        shard_of_sample = np.empty(len(local), np.int64)
        for k, sel in groups:
            shard_of_sample[sel] = k
        token_shard = shard_of_sample[sample]
        for k, _ in groups:
            m = np.flatnonzero(token_shard == k)
            tokens[m] = self._tokens(k, rows[m], token_view[m])
            classes[m] = self._shards[k].emb_class[rows[m]]
        return tokens, sample, classes

    def _tokens(self, k: int, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
        """Positive tokens ``emb[rows, views]`` of shard ``k``, decoded: ``[T, E]``."""
        arrays = self._arrays(k)
        scales = self._take(arrays[fmt.EMB_SCALE], rows, views) if self.spec.scaled else None
        return decode(self._take(arrays["emb"], rows, views), scales, self.spec.dtype)

    def _gather(self, names: Tuple[str, ...], groups, local: np.ndarray, view: np.ndarray) -> Dict[str, np.ndarray]:
        """``{name: dataset[local, view]}`` (``[B, ...]``) for (sample, view)-indexed datasets."""
        if len(groups) == 1:
            maps = self._arrays(groups[0][0])
            return {name: self._take(maps[name], local, view) for name in names}
        layout = self._shards[0].layout
        out = {name: np.empty((len(local), *layout[name][1][2:]), layout[name][2]) for name in names}
        for k, sel in groups:
            maps, rows, cols = self._arrays(k), local[sel], view[sel]
            for name in names:
                out[name][sel] = self._take(maps[name], rows, cols)
        return out

    def get(self, indices: Any, views: Any) -> Dict[str, torch.Tensor]:
        """Teacher targets of (sample ``indices[b]``, view ``views[b]``) pairs, ``b < B``.

        Returns torch tensors: ``logits`` [B, C] (float16, float32 in a float32 cache) and
        ``features`` [B, D] (the cache's float dtype; float32 for bfloat16 and int8 caches),
        ``view_seed`` and ``fingerprint`` int64 [B] (uint64 bits reinterpreted); positive mode
        adds ``tokens`` [P, E], ``token_sample`` int64 [P] (batch position) and ``token_class``
        int64 [P]; dense mode adds ``label_emb`` [B, C, E]. Any order, duplicates allowed. The
        outputs the cache does not hold (``spec.absent``) are not returned.
        """
        spec = self.spec
        groups, local, view = self._locate(indices, views)  # no groups: an empty batch, empty outputs
        dense = spec.has_embeddings and not spec.layout.positive
        names = tuple(f.name for f in spec.view_fields) + (("emb",) if dense else ())
        if spec.scaled:
            names += tuple(f.scale_name for f in spec.view_fields if f.coded) + ((fmt.EMB_SCALE,) if dense else ())
        out = self._gather(names, groups, local, view)
        for field in spec.view_fields:
            if field.dtype == "uint64":  # torch has no uint64 arithmetic: the same bits as int64
                out[field.name] = out[field.name].view(np.int64)
            elif field.coded:
                out[field.name] = decode(out[field.name], out.pop(field.scale_name, None), spec.dtype)
        if dense:
            out["label_emb"] = decode(out.pop("emb"), out.pop(fmt.EMB_SCALE, None), spec.dtype)
        elif spec.has_embeddings:
            out["tokens"], out["token_sample"], out["token_class"] = self._gather_tokens(groups, local, view)
        return {k: torch.from_numpy(v) for k, v in out.items()}  # fresh, contiguous gathers

    def dense_label_emb(self, indices: Any, views: Any) -> torch.Tensor:
        """``[B, C, E]`` label-wise embeddings in both modes (zeros for negative classes in positive mode)."""
        spec = self.spec
        self.require("label_emb", "dense_label_emb()")
        groups, local, view = self._locate(indices, views)
        B, C, E = len(local), spec.num_classes, spec.embed_dim
        if not spec.layout.positive:
            got = self._gather(("emb", fmt.EMB_SCALE) if spec.scaled else ("emb",), groups, local, view)
            return torch.from_numpy(decode(got["emb"], got.get(fmt.EMB_SCALE), spec.dtype))
        tokens, sample, classes = self._gather_tokens(groups, local, view)
        dense = np.zeros((B, C, E), spec.value_dtype)
        dense[sample, classes] = tokens
        return torch.from_numpy(dense)

    def iter_positive_tokens(self, view: Optional[int] = None, batch: int = 65536) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(tokens [P, E] float32, classes [P] int64)`` chunks of at most ``batch`` tokens
        over every positive label of the cache, for one ``view`` or all views (``None``)."""
        self.require("label_emb", "class prototypes")
        if view is not None and not 0 <= int(view) < self.views:
            raise IndexError(f"view must lie in [0, {self.views}), got {view}")
        views = range(self.views) if view is None else [int(view)]
        positive = self.spec.layout.positive

        def pick(array: Any, lo: int, r: np.ndarray, c: np.ndarray, v: int) -> np.ndarray:
            """The chunk's rows of ``array`` (``emb`` or its scales) at view ``v``."""
            if isinstance(array, np.ndarray):  # memory map: a strided slice or one gather
                return array[lo : lo + len(r), v] if positive else array[r, v, c]
            taken = self._take(array, r, np.full(len(r), v))
            return taken if positive else taken[np.arange(len(r)), c]

        for k, shard in enumerate(self._shards):
            arrays = self._arrays(k)
            emb, scale = arrays["emb"], arrays.get(fmt.EMB_SCALE)
            if self.spec.layout.positive:
                if shard.emb_class is None:  # read when the shard was opened
                    raise CacheCorruptError(f"{shard.path}: a positive-layout shard without emb_class")
                rows = np.arange(len(shard.emb_class))
                classes = shard.emb_class
            else:
                rows, classes = np.nonzero(self._labels[shard.start : shard.stop])
            for v in views:
                for lo in range(0, len(rows), batch):
                    r, c = rows[lo : lo + batch], classes[lo : lo + batch]
                    scales = pick(scale, lo, r, c, v) if self.spec.scaled else None
                    tokens = decode(pick(emb, lo, r, c, v), scales, self.spec.dtype)
                    yield torch.from_numpy(np.array(tokens, dtype=np.float32)), torch.from_numpy(np.array(c, dtype=np.int64))


def open_cache(
    directory: Path,
    dataset: Any = None,
    transform: Union[TransformSpec, Mapping[str, Any], None] = None,
    *,
    verify_checksums: bool = False,
) -> TargetCache:
    """Open the cache written by ``dump-targets`` into ``directory``.

    With ``dataset`` (a :class:`~mlkd_cache.data.base.MultiLabelDataset`: the train split a
    student learns from) the cache must be its dump: same dataset name, class list and label
    matrix. With ``transform`` (:class:`~mlkd_cache.data.transforms.TransformSpec`) the cache's
    views must come from the same input pipeline (``img_size`` and the spec's hash). With
    ``verify_checksums`` every shard's sha256 is compared with the manifest (reads every byte).
    Raises :class:`~mlkd_cache.errors.CacheMismatchError` naming the first difference, or
    :class:`~mlkd_cache.errors.CacheCorruptError`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"--cache {directory} is not a folder; give the --out folder of dump-targets")
    cache = TargetCache(directory)
    if verify_checksums:
        cache.verify_checksums()
    check_fits(cache, dataset, transform)
    return cache


def check_fits(
    cache: TargetCache,
    dataset: Any = None,
    transform: Union[TransformSpec, Mapping[str, Any], None] = None,
    name: str = "",
    val_split: Optional[Mapping[str, Any]] = None,
) -> None:
    """:class:`~mlkd_cache.errors.CacheMismatchError` unless ``cache`` is the dump of the train
    split ``dataset`` (dataset ``name``, default ``dataset.name``; the val split held out of it,
    ``val_split``, default ``dataset.val_split`` where it has one; class list; labels) under ``transform`` (a
    :class:`TransformSpec` or its dict; ``img_size`` and the spec's hash). Arguments left
    ``None`` are not checked."""
    spec = cache.spec
    if dataset is not None:
        name = name or getattr(dataset, "name", spec.dataset)
        if spec.dataset != name or spec.split != "train":
            raise CacheMismatchError(
                f"{cache.directory}: cache built for {spec.dataset}/{spec.split}, the student trains on {name}/train; "
                f"pass the cache of this dataset"
            )
    if isinstance(transform, Mapping):  # a CacheSpec.transform or a teacher card's: the spec it describes
        transform = TransformSpec.from_dict(transform)
    if transform is not None and not isinstance(transform, TransformSpec):
        raise TypeError(f"transform must be a TransformSpec (TransformSpec.from_config(cfg)), got {type(transform).__name__}")
    if val_split is None and dataset is not None:
        val_split = getattr(dataset, "val_split", None)  # a split of one's own making: its labels tell
    cache.check_request(
        val_split=val_split,
        class_names=None if dataset is None else dataset.class_names,
        labels=None if dataset is None else dataset.labels,
        img_size=None if transform is None else transform.img_size,
        transform_hash=None if transform is None else transform.spec_hash(),
    )


# the transform fields that decide a stored image (the rest decide the views made from it)
STORED_IMAGE_FIELDS = ("img_size", "interpolation", "decode")


def check_store_fits(
    cache: TargetCache, dataset: str, dataset_para: Mapping[str, Any], bad_images: str, transform: TransformSpec
) -> None:
    """:class:`~mlkd_cache.errors.CacheMismatchError` unless ``cache``'s image store holds the
    split a config describes: its ``dataset``, ``dataset_para`` and ``bad_images`` as the dump
    recorded them (``made_with``), and images prepared as ``transform`` prepares them (size,
    resize filter, decoding)."""
    spec, where = cache.spec, cache.directory
    made = cache.manifest.get("made_with") or {}
    asked = {
        "dataset": dataset,
        "dataset_para": json.loads(json.dumps(dict(dataset_para), default=repr)),
        "bad_images": bad_images,
    }
    recorded = {"dataset": spec.dataset, **{k: made[k] for k in ("dataset_para", "bad_images") if k in made}}
    for key, value in recorded.items():
        if asked[key] != value:
            raise CacheMismatchError(
                f"{where} stores the images of {key} {value!r}, the config asks for {asked[key]!r}; pass the cache of "
                f"this data or set {key} as the dump had it"
            )
    stored = spec.transform_spec
    for key in STORED_IMAGE_FIELDS:
        if getattr(stored, key) != getattr(transform, key):
            raise CacheMismatchError(
                f"{where} stores images prepared with {key} {getattr(stored, key)!r}, the config asks for "
                f"{getattr(transform, key)!r}; set transform.{key} (or img_size) as the dump had it"
            )
