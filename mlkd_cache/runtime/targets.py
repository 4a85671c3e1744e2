"""Where a student's teacher targets come from: the :class:`TeacherTargets` protocol and its two
sources.

* :class:`CacheTargets` (offline, the point of this tool): a cache written by ``dump-targets``.
  :class:`CachedTargetsCollate` fetches the teacher targets of exactly the batch's (sample,
  view) pairs inside the DataLoader workers, as a :class:`CachedBatch`; during training the
  fingerprints of a share of the inputs are compared with the cached ones. No teacher is in
  memory.
* :class:`LiveTeacher` (online baseline, what the L2D code does every step): ``teacher.pt`` is
  run on every batch, on the very same replayed views as a cache of V views (V and the base
  seed those of the cache whose images the run reads, else ``cache.views`` and ``seed`` of the
  config), or with ``fresh_views`` on a fresh augmentation every epoch.

An ensemble of caches (:class:`~mlkd_cache.runtime.ensemble.EnsembleTargets`) is a third source
of the same protocol: every source lists its teachers as ``members`` and returns one dict of
targets per member, so the trainer builds one distiller per member and never asks which source
it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..cache.format import LAYOUTS, MANIFEST_NAME, OUTPUT_WORDS, TEACHER_OUTPUTS, VIEW_FIELDS
from ..cache.prototypes import PrototypeAccumulator, load_or_compute_prototypes
from ..cache.reader import TargetCache, check_fits, open_cache
from ..cache.replay import CachedBatch, CachedTargetsCollate, check_finite, check_replay
from ..config import Config
from ..data.holdout import val_split_record
from ..data.transforms import TransformSpec
from ..data.views import PairViews, ViewDataset, ViewItem, view_pairs
from ..device import autocast_for, place_model
from ..distributed import DistInfo, agree, all_gather_objects, broadcast_object, init_distributed, same_on_every_rank
from ..errors import CacheCorruptError, CacheMismatchError, ConfigError
from ..losses.base import SLOT_TEACHER_OUTPUT, losses_by_slot
from ..losses.distiller import plan
from .scoring import forward
from .teachers import TeacherSpec, check_teacher_fits, open_teacher_on_ranks

FRESH = "fresh"  # how records name "a fresh view every epoch" (model card, results, resume checks)

__all__ = ["FRESH", "Batch", "TeacherTargets", "CacheTargets", "LiveTeacher", "check_outputs_serve", "outputs_needed"]


Batch = Union[ViewItem, CachedBatch]


class TeacherTargets(Protocol):
    """Where a student's teacher targets come from: a cache (:class:`CacheTargets`, offline) or
    a teacher run on every batch (:class:`LiveTeacher`, online). The trainer talks to this
    protocol only, never to a concrete source."""

    mode: str  # "offline" or "online": recorded in the model card and checked on resume
    views: Optional[int]  # the cycle of replayed views; None = a fresh view every epoch
    base_seed: int  # the seed the replayed views derive from
    embed_dim: int  # E_t, the teacher's label-wise embedding size (0: it gives none)
    outputs: Tuple[str, ...]  # what the teacher gives (cache.format.TEACHER_OUTPUTS names)
    name: str  # the cache folder or teacher named in messages
    fingerprint_of: str  # what the replayed views' fingerprints hash (ViewDataset.fingerprint_of)
    checks_replay: bool  # whether the replayed inputs are compared with the source's fingerprints

    @property
    def members(self) -> Sequence["TeacherTargets"]:
        """The teachers, one distiller each: ``(self,)`` for one teacher."""

    @property
    def store(self) -> Optional[TargetCache]:
        """The cache whose image store the run reads (None: the dataset folder)."""

    def verify(self, info: DistInfo) -> None:
        """Check every stored file against its checksum (split over ranks); nothing to check online."""

    def check_fits(self, cfg: Config, train_set: Any, transform: TransformSpec) -> None:
        """Raise when the source does not belong to this train split and input pipeline."""

    def collate(self) -> Optional[Callable[[List[ViewItem]], Any]]:
        """The DataLoader ``collate_fn`` (None: torch's default)."""

    def to(self, device: torch.device, amp: bool) -> None:
        """Move what runs per batch to ``device`` (AMP on CUDA when ``amp``)."""

    def prototypes(self, info: DistInfo, view_data: ViewDataset, batch_size: int, workers: int) -> Tensor:
        """``[C, E_t]`` class prototypes (MPSCD), the same on every rank."""

    def identity(self) -> Dict[str, Any]:
        """What a resumed run must share with the one it resumes (model card ``distill``)."""

    def start_epoch(self) -> None:
        """Called before each training epoch."""

    def epoch_stats(self) -> Dict[str, Any]:
        """Extra entries of the epoch's metrics row."""

    def targets(self, batch: Any, device: torch.device, keys: Sequence[str], position: str = "") -> List[Dict[str, Tensor]]:
        """Per member, the teacher fields of :class:`~mlkd_cache.losses.base.KDBatch` for
        ``batch`` (image already on ``device``); ``position`` ("epoch E step S") is named by errors."""


def outputs_needed(criterion_t2s_para: Any) -> Tuple[str, ...]:
    """The teacher outputs (:data:`~mlkd_cache.cache.format.TEACHER_OUTPUTS` names, in their
    order) the distiller of ``criterion_t2s_para`` reads, logits always: what ``cache.fields =
    "auto"`` stores."""
    needed = {"logits", *(SLOT_TEACHER_OUTPUT[slot] for slot, *_ in plan(criterion_t2s_para))}
    return tuple(o for o in TEACHER_OUTPUTS if o in needed)


def check_outputs_serve(criterion_t2s_para: Any, source: "TeacherTargets") -> None:
    """Refuse, before any training, a distiller with a loss whose teacher output ``source`` does
    not give (a logits-only factory teacher and LED, say): one line naming the loss, the missing
    output and the losses that work from what the teacher gives."""
    given = set(source.outputs)
    for slot, _lam, name, _factory, _para in plan(criterion_t2s_para):
        need = SLOT_TEACHER_OUTPUT[slot]
        if need in given:
            continue
        works = [n for s, names in losses_by_slot().items() if SLOT_TEACHER_OUTPUT[s] in given for n in names]
        redump = (
            f", or dump a cache whose cache.fields holds {need} (its teacher must give it)" if source.mode == "offline" else ""
        )
        raise ConfigError(
            f"{name} ({slot}_dis) needs the teacher's {OUTPUT_WORDS[need]}, and {source.name} gives only "
            f"{', '.join(OUTPUT_WORDS[o] for o in source.outputs)}; set {slot}_dis=None in criterion_t2s_para "
            f"(the losses that work from what it gives: {', '.join(works)}){redump}"
        )


def open_cache_on_ranks(directory: Path, verify_checksums: bool, info: DistInfo) -> TargetCache:
    """Open the cache in ``directory`` on every rank: a shared folder or each node's own copy at
    the same path. Every rank must open it (else every rank stops, naming the one that could
    not), the copies must be the same cache (the sha256 of ``manifest.json``, compared with rank
    0's), and with ``verify_checksums`` every node checks every file of its copy
    (:func:`verify_on_ranks`)."""
    cache = agree(info, lambda: open_cache(Path(directory)))
    same_on_every_rank(
        lambda: cache.manifest_sha256,
        info,
        f"copy of the cache in {directory} ({MANIFEST_NAME})",
        "copy rank 0's cache to that node again and check it with mlkd-cache inspect",
    )
    if verify_checksums:
        verify_on_ranks(cache, info)
    return cache


def verify_on_ranks(cache: TargetCache, info: DistInfo) -> None:
    """sha256 of every file of ``cache`` (shards, stored eval parts) against the manifest, each
    file of each folder read once: the ranks that read one folder split its files (file k by the
    ``k % n``-th of its n readers). Ranks read one folder when its ``manifest.json`` has the same
    inode, change time and size for them: every rank on a shared file system, the ranks of a node
    on its own copy. Every rank raises the first failure any rank found, naming where."""
    manifest = (cache.directory / MANIFEST_NAME).stat()
    folder = (manifest.st_ino, manifest.st_ctime_ns, manifest.st_size)
    readers = [rank for rank, other in enumerate(all_gather_objects(folder, info)) if other == folder]
    mine = [k for k in range(cache.num_files) if k % len(readers) == readers.index(info.rank)]
    try:
        cache.verify_checksums(mine)
        failure = None
    except CacheCorruptError as exc:
        failure = f"{info.where}: {exc}" if info.enabled else str(exc)
    failures = [f for f in all_gather_objects(failure, info) if f is not None]
    if failures:
        raise CacheCorruptError(failures[0])


class CacheTargets:
    """Teacher targets read from a ``dump-targets`` cache (offline distillation)."""

    mode = "offline"
    checks_replay = True

    def __init__(self, directory: Path, verify_checksums: bool = True) -> None:
        self.directory = Path(directory)
        # manifest, sizes, attributes and shapes of every shard, the same on every rank
        self.cache = open_cache_on_ranks(self.directory, verify_checksums, init_distributed())
        spec = self.cache.spec
        self.views: Optional[int] = spec.views
        self.base_seed, self.embed_dim, self.outputs = spec.base_seed, spec.embed_dim, spec.outputs
        self.name = f"the cache in {self.directory}"
        self.fingerprint_of = self.cache.fingerprint_of  # what the cache's fingerprints hash
        self.checked = 0  # fingerprints compared in the current epoch (this rank)
        self.members = (self,)
        self.store: Optional[TargetCache] = self.cache if spec.stores_images else None

    def verify(self, info: DistInfo) -> None:
        verify_on_ranks(self.cache, info)

    def check_fits(self, cfg: Config, train_set: Any, transform: TransformSpec) -> None:
        """The cache must be the dump of this train split, with the config's val split held out
        of it, under this config's input pipeline."""
        check_fits(self.cache, train_set, transform, name=cfg.dataset, val_split=val_split_record(cfg.val_split))

    def collate(self) -> CachedTargetsCollate:
        return CachedTargetsCollate(self.cache)

    def to(self, device: torch.device, amp: bool) -> None:
        """Nothing runs per batch: the targets are read in the DataLoader workers."""

    def prototypes(self, info: DistInfo, view_data: ViewDataset, batch_size: int, workers: int) -> Tensor:
        """``[C, E_t]`` class prototypes of the cache (rank 0 computes them from the cached
        embeddings or reads them, every rank gets them); no image is read."""
        prototypes = agree(info, lambda: load_or_compute_prototypes(self.cache) if info.is_main else None)
        return broadcast_object(prototypes, info)

    def start_epoch(self) -> None:
        self.checked = 0

    def epoch_stats(self) -> Dict[str, Any]:
        return {"replay_checked": self.checked}

    def identity(self) -> Dict[str, Any]:
        spec = self.cache.spec
        return {
            "mode": self.mode,
            "source": str(self.directory),
            "teacher_arch": spec.teacher_arch,
            "teacher_sha256": spec.teacher_sha256,
            "views": spec.views,
            "base_seed": spec.base_seed,
            "cache_sha256": self.cache.content_sha256(),
            "cache_dtype": spec.dtype,
        }

    def targets(self, batch: Any, device: torch.device, keys: Sequence[str], position: str = "") -> List[Dict[str, Tensor]]:
        """KDBatch teacher fields of the targets :class:`CachedTargetsCollate` fetched, after the
        replay and finiteness checks; ``position`` ("epoch E step S") is named by the errors."""
        if not isinstance(batch, CachedBatch):
            raise TypeError("CacheTargets needs the batches of its collate(): CachedBatch")
        self.checked += check_replay(batch, self.cache, keys)
        check_finite(batch, self.cache, position)
        return [batch.teacher_targets(device, self.cache.spec.layout.batch_keys)]


class LiveTeacher:
    """Teacher targets computed by running ``teacher.pt`` on the batch (the online baseline).

    The views: with ``fresh_views`` a fresh one every epoch, seeded from the config's ``seed``;
    else the replay of a cache of ``views`` views from ``base_seed`` (default: the config's
    ``cache.views`` and ``seed``; a run that reads a cache's images passes that cache's, so that
    online replays exactly the views offline reads). ``store`` is that cache, if any."""

    mode = "online"
    checks_replay = False  # nothing is fingerprinted online

    def __init__(
        self,
        teacher: TeacherSpec,
        cfg: Config,
        fresh_views: bool = False,
        views: Optional[int] = None,
        base_seed: Optional[int] = None,
        store: Optional[TargetCache] = None,
    ) -> None:
        self.teacher = open_teacher_on_ranks(teacher, cfg, init_distributed())  # eval mode, gradients off
        self.model, self.card = self.teacher.model, self.teacher.card
        self.path = teacher
        self.outputs = self.card.outputs
        self.name = f"teacher {teacher}"
        # views: the cycle length of the replayed views, None for a fresh view every epoch;
        # prototypes (MPSCD) are averaged over V views either way, as a cache's are.
        self.prototype_views = int(cfg.cache["views"] if views is None else views)
        if self.prototype_views < 1:
            raise ConfigError(f"--views must be >= 1, got {self.prototype_views}")
        self.base_seed = int(cfg.seed if base_seed is None or fresh_views else base_seed)
        self.views: Optional[int] = None if fresh_views else self.prototype_views
        self.embed_dim = self.card.embed_dim
        self.fingerprint_of = "uint8"  # nothing is fingerprinted online
        self.amp = False
        self.members = (self,)
        self.store = store

    def verify(self, info: DistInfo) -> None:
        """A live teacher stores nothing: the files of the image store it reads, if any."""
        if self.store is not None:
            verify_on_ranks(self.store, info)

    def check_fits(self, cfg: Config, train_set, transform: TransformSpec) -> None:
        check_teacher_fits(cfg, self.card, train_set, transform, str(self.path))

    def collate(self) -> None:
        return None

    def start_epoch(self) -> None:
        pass

    def epoch_stats(self) -> Dict[str, Any]:
        return {}

    def to(self, device: torch.device, amp: bool) -> None:
        self.model = place_model(self.model, device)
        self.amp = amp

    @torch.no_grad()
    def prototypes(self, info: DistInfo, view_data: ViewDataset, batch_size: int, workers: int) -> Tensor:
        """``[C, E_t]`` prototypes by the cache's definition (normalised mean of the teacher's
        embeddings of every positive label over all V views), computed by running the teacher
        over every (sample, view) pair once; ranks split the pairs and sum."""
        if "label_emb" not in self.outputs:
            raise CacheMismatchError(f"class prototypes (MPSCD) need the teacher's label-wise embeddings; {self.name} gives none")
        device = next(self.model.parameters()).device
        pairs = view_pairs(0, len(view_data), self.prototype_views)[info.rank :: info.world_size]
        acc = PrototypeAccumulator(len(view_data.class_names), self.embed_dim)
        loader = DataLoader(PairViews(view_data, pairs), batch_size=batch_size, num_workers=workers)
        with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global RNG
            for batch in loader:  # ViewItem batches of (sample, view) pairs
                labels = batch.labels
                emb = forward(self.model, batch.image, view_data.spec, device, self.amp).label_emb.float()
                sample, cls = labels.to(device).nonzero(as_tuple=True)
                acc.add(emb[sample, cls], cls)
        if info.enabled:
            sums, counts = acc.sums.to(device), acc.counts.to(device)
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(counts)
            acc.sums, acc.counts = sums.cpu(), counts.cpu()
        return acc.prototypes()

    def identity(self) -> Dict[str, Any]:
        return {
            "mode": self.mode,
            "source": str(self.path),
            "teacher_arch": self.card.arch,
            "teacher_sha256": self.teacher.sha256,
            "views": FRESH if self.views is None else self.views,
            "base_seed": self.base_seed,
        }

    @torch.no_grad()
    def targets(self, batch: Any, device: torch.device, keys: Sequence[str], position: str = "") -> List[Dict[str, Tensor]]:
        with autocast_for(device, self.amp):
            out = self.model(batch.image)
        targets = {
            f.kd: getattr(out, f.output).float()
            for f in VIEW_FIELDS
            if f.output in self.outputs and f.kd is not None  # what the teacher gives
        }
        for key, kd in LAYOUTS["dense"].batch_keys:  # every class: the dense layout's fields (label_emb -> e_t)
            if key in self.outputs:
                targets[kd] = getattr(out, key).float()
        return [targets]
