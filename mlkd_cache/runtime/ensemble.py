"""Several teachers, one student: :class:`EnsembleTargets`, the teacher targets of K caches
(``distill-student --cache A --cache B ...``).

The caches must hold targets of the very same inputs: same dataset, classes and labels, input
transform, base seed, number of views and image-store pixels
(:data:`~mlkd_cache.cache.format.SAME_INPUTS`); their teachers, and so their output sizes,
embedding layouts and dtypes, may differ. The student replays each view once;
:class:`EnsembleCollate` reads every cache's targets of the batch's (sample, view) pairs in the
DataLoader workers, and the trainer computes one distiller per teacher (each with its own
embedding size and class prototypes), averaging the terms over teachers (docs/losses.md,
"Several teachers").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import default_collate

from ..cache.format import OUTPUT_WORDS, inputs_difference
from ..cache.reader import TargetCache
from ..cache.replay import CachedBatch
from ..config import Config
from ..data.transforms import TransformSpec
from ..data.views import ViewItem
from ..distributed import DistInfo, init_distributed
from ..errors import CacheMismatchError, ConfigError
from .targets import CacheTargets, TeacherTargets, verify_on_ranks

log = logging.getLogger("mlkd_cache")

__all__ = ["EnsembleBatch", "EnsembleCollate", "EnsembleTargets", "check_agree", "ensemble_term", "teacher_names"]


def teacher_names(count: int) -> Tuple[str, ...]:
    """How logs and records name the teachers of ``--cache`` given in order: ``t1``, ``t2``, ..."""
    return tuple(f"t{k + 1}" for k in range(count))


def ensemble_term(teacher: str, term: str) -> str:
    """The logged name of one teacher's term: ``t1/mld``."""
    return f"{teacher}/{term}"


_EnsembleBatchFields: Any = ViewItem.with_targets("EnsembleBatch", __name__)


class EnsembleBatch(_EnsembleBatchFields):
    """A named tuple: the fields of a batch of :class:`~mlkd_cache.data.views.ViewItem`, then
    ``cached``, per teacher, the cached targets of exactly its (sample, view) pairs
    (``cached[k]``: ``TargetCache.get`` of cache k)."""

    __slots__ = ()
    cached: Sequence[Dict[str, Tensor]]  # one TargetCache.get(sample, view) per teacher

    def member(self, k: int) -> CachedBatch:
        """Teacher ``k``'s view of the batch (the same image and labels, its cached targets)."""
        fields = {name: getattr(self, name) for name in ViewItem._fields}
        return CachedBatch(**fields, cached=self.cached[k])


class EnsembleCollate:
    """DataLoader ``collate_fn``: the default collation of :class:`ViewItem` items plus every
    cache's targets of the batch, as an :class:`EnsembleBatch` (runs in the workers)."""

    def __init__(self, members: Sequence[CacheTargets]) -> None:
        self.caches = [m.cache for m in members]

    def __call__(self, items: List[ViewItem]) -> EnsembleBatch:
        batch = default_collate(items)
        cached = tuple(cache.get(batch.sample, batch.view) for cache in self.caches)
        return EnsembleBatch(**batch._asdict(), cached=cached)


class EnsembleTargets:
    """Teacher targets of several caches of the same views (offline distillation from an
    ensemble). ``members[k]`` is the :class:`CacheTargets` of the k-th ``--cache``; :meth:`targets`
    returns one dict of :class:`~mlkd_cache.losses.base.KDBatch` teacher fields per member, as
    every :class:`~mlkd_cache.runtime.targets.TeacherTargets` source does."""

    mode = "offline"
    checks_replay = True

    def __init__(self, directories: Sequence[Path], verify_checksums: bool = True) -> None:
        directories = [Path(d) for d in directories]
        if len(directories) < 2:
            raise ConfigError("an ensemble needs two --cache folders or more; give one --cache for a single teacher")
        seen: Dict[Path, Path] = {}
        for d in directories:
            if d.resolve() in seen:
                raise ConfigError(f"--cache {d} is given twice; give each teacher's cache once")
            seen[d.resolve()] = d
        # open and compare every cache before any checksum is computed (that reads every byte)
        self.members = tuple(CacheTargets(d, verify_checksums=False) for d in directories)
        check_agree(self.members)
        info = init_distributed()
        if verify_checksums:
            self.verify(info)
        self.names = teacher_names(len(self.members))
        first = self.members[0]
        self.views: Optional[int] = first.views
        self.base_seed = first.base_seed
        self.fingerprint_of = first.fingerprint_of
        self.name = "the caches in " + ", ".join(str(d) for d in directories)
        self.embed_dim = first.embed_dim  # the first teacher's (each member has its own)
        self.outputs = tuple(o for o in first.outputs if all(o in m.outputs for m in self.members))
        by_teacher: Dict[str, str] = {}
        for name, member in zip(self.names, self.members):
            sha = member.cache.spec.teacher_sha256
            if sha in by_teacher and info.is_main:
                log.warning(
                    "%s and %s come from the same teacher (sha256 %s...): it counts twice", by_teacher[sha], name, sha[:12]
                )
            by_teacher.setdefault(sha, name)

    @property
    def store(self) -> Optional[TargetCache]:
        """The first member's cache when it stores images: the image store a run reads."""
        return self.members[0].store

    def verify(self, info: DistInfo) -> None:
        for member in self.members:
            verify_on_ranks(member.cache, info)

    def prototypes(self, info: DistInfo, view_data: Any, batch_size: int, workers: int) -> Tensor:
        """The first member's prototypes (each member's own are its distiller's)."""
        return self.members[0].prototypes(info, view_data, batch_size, workers)

    def check_fits(self, cfg: Config, train_set: Any, transform: TransformSpec) -> None:
        for member in self.members:
            member.check_fits(cfg, train_set, transform)

    def collate(self) -> EnsembleCollate:
        return EnsembleCollate(self.members)

    def to(self, device: torch.device, amp: bool) -> None:
        """Nothing runs per batch: the targets are read in the DataLoader workers."""

    def start_epoch(self) -> None:
        for member in self.members:
            member.start_epoch()

    def epoch_stats(self) -> Dict[str, Any]:
        return {"replay_checked": self.members[0].checked}  # every member compares the same inputs

    def identity(self) -> Dict[str, Any]:
        """The members' identities field by field (lists in ``--cache`` order); views and seed shared."""
        each = [m.identity() for m in self.members]
        out: Dict[str, Any] = {"mode": self.mode, "teachers": list(self.names)}
        for key in each[0]:
            values = [e[key] for e in each]
            out[key] = values[0] if key in ("mode", "views", "base_seed") else values
        return out

    def targets(self, batch: Any, device: torch.device, keys: Sequence[str], position: str = "") -> List[Dict[str, Tensor]]:
        """Per member, the KDBatch teacher fields of ``batch`` (an :class:`EnsembleBatch`), each
        after its cache's replay and finiteness checks."""
        if not isinstance(batch, EnsembleBatch):
            raise TypeError("EnsembleTargets needs the batches of its collate(): EnsembleBatch")
        return [m.targets(batch.member(k), device, keys, position)[0] for k, m in enumerate(self.members)]


def check_agree(members: Sequence[CacheTargets]) -> None:
    """:class:`CacheMismatchError`, one line, unless every cache holds targets of the same inputs
    as the first (:func:`~mlkd_cache.cache.format.inputs_difference`, and the same fingerprints)."""
    first = members[0]
    for other in members[1:]:
        difference = inputs_difference(first.cache.spec, other.cache.spec)
        if difference is not None:
            raise CacheMismatchError(
                f"--cache {other.directory} and --cache {first.directory} differ in {difference}; the caches of one "
                f"student must hold the same inputs (train split, classes, transform, seed, views, image store's "
                f"pixels): dump each teacher with the student's config"
            )
        if other.fingerprint_of != first.fingerprint_of:
            raise CacheMismatchError(
                f"--cache {other.directory} fingerprints {other.fingerprint_of} inputs and --cache {first.directory} "
                f"{first.fingerprint_of} ones (caches of different format versions); re-run dump-targets for the older one"
            )


def describe(members: Sequence[TeacherTargets]) -> str:
    """One line per teacher for logs: ``t1 <arch> (<outputs>) from <source>``."""
    return "; ".join(
        f"{name} {m.identity()['teacher_arch']} ({', '.join(OUTPUT_WORDS[o].split(' [')[0] for o in m.outputs)}) "
        f"from {m.identity()['source']}"
        for name, m in zip(teacher_names(len(members)), members)
    )
