"""Stage 2: ``distill-student``. Trains ``model_s`` with the hard-label loss plus the distiller
of ``criterion_t2s_para``, the teacher's side of every loss coming from one of two sources:

* :class:`CacheTargets` (offline, the point of this tool): a cache written by ``dump-targets``.
  The student sees sample i in epoch e under view ``(e + offset_i) % V``, rebuilt from the
  cache's base seed; :class:`CachedTargetsCollate` fetches the teacher targets of exactly those
  (sample, view) pairs, batched, inside the DataLoader workers. No teacher is in memory.
* :class:`LiveTeacher` (online baseline, what the L2D code does every step): ``teacher.pt`` is
  run on every batch, either on the very same replayed views as a cache of ``cache.views``
  views (to prove that offline distillation teaches what online distillation teaches) or, with
  ``fresh_views``, on a fresh augmentation every epoch (L2D's own regime: view = epoch, seeded
  from the student's ``seed``, exactly the views the no-KD student sees).

:func:`run` with ``no_kd`` trains the same student in the same loop, schedule and augmentation
(a fresh view every epoch) with the hard-label loss alone: the first row of every KD table.

Before the first step the cache is checked against the dataset and config (classes, labels,
img_size, transform); during training the fingerprints of a share ``replay_check`` of every
epoch's inputs are compared with the cached ones, and a divergence stops the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from .._version import __version__
from ..cache.prototypes import PrototypeAccumulator, load_or_compute_prototypes
from ..cache.reader import TargetCache
from ..config import Config
from ..data.transforms import TransformSpec, to_unsigned
from ..data.views import ViewDataset
from ..distributed import DistInfo, all_gather_objects, broadcast_object, init_distributed
from ..errors import CacheCorruptError, CacheMismatchError, CheckpointError, ConfigError
from ..fileio import file_sha256
from ..losses.base import KDBatch
from ..losses.distiller import Distiller
from .checkpoint import load_checkpoint
from .dump import TEACHER_KEYS, PairDataset, check_teacher_fits, shard_pairs
from .evaluate import autocast_for, model_from_checkpoint
from .train import Trainer

log = logging.getLogger("mlkd_cache")

FRESH = "fresh"  # how records name "a fresh view every epoch" (model card, results, resume checks)

__all__ = ["FRESH", "CachedTargetsCollate", "CacheTargets", "LiveTeacher", "NoKDTrainer", "DistillTrainer", "run"]


class CachedTargetsCollate:
    """DataLoader ``collate_fn``: the default collation of ``(image, labels, index, view,
    fingerprint)`` items plus, as a sixth element, ``cache.get(index, view)`` (the teacher
    targets of exactly those pairs). Runs in the worker processes; the cache opens its memory
    maps lazily in each of them."""

    def __init__(self, cache: TargetCache) -> None:
        self.cache = cache

    def __call__(self, items):
        image, labels, index, view, fp = default_collate(items)
        return image, labels, index, view, fp, self.cache.get(index, view)


def _to(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device, non_blocking=device.type == "cuda").float()


class CacheTargets:
    """Teacher targets read from a ``dump-targets`` cache (offline distillation)."""

    mode = "offline"

    def __init__(self, directory: Path, verify_checksums: bool = True) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(f"--cache {self.directory} is not a folder; give the --out folder of dump-targets")
        self.cache = TargetCache(self.directory)  # manifest, sizes, attributes and shapes of every shard
        if verify_checksums:
            self._verify_checksums(init_distributed())
        spec = self.cache.spec
        self.views, self.base_seed, self.embed_dim = spec.views, spec.base_seed, spec.embed_dim
        self.checked = 0  # fingerprints compared in the current epoch (this rank)

    def _verify_checksums(self, info: DistInfo) -> None:
        """sha256 of every shard against the manifest, each rank hashing shards ``k % world ==
        rank``; every rank raises the first failure found by any rank."""
        mine = [k for k in range(len(self.cache.manifest["shards"])) if k % info.world_size == info.rank]
        try:
            self.cache.verify_checksums(mine)
            failure = None
        except CacheCorruptError as exc:
            failure = str(exc)
        failures = [f for f in all_gather_objects(failure, info) if f is not None]
        if failures:
            raise CacheCorruptError(failures[0])

    def check_fits(self, cfg: Config, train_set, transform: TransformSpec) -> None:
        """The cache must be the dump of this train split under this config's input pipeline."""
        spec = self.cache.spec
        if spec.dataset != cfg.dataset or spec.split != "train":
            raise CacheMismatchError(
                f"{self.directory}: cache built for {spec.dataset}/{spec.split}, config trains on {cfg.dataset}/train; "
                f"pass the cache of this dataset"
            )
        self.cache.check_request(
            class_names=train_set.class_names,
            labels=train_set.labels,
            img_size=cfg.img_size,
            transform_hash=transform.spec_hash(),
        )

    def collate(self) -> CachedTargetsCollate:
        return CachedTargetsCollate(self.cache)

    def prototypes(self, info: DistInfo) -> Tensor:
        """``[C, E_t]`` class prototypes of the cache (rank 0 computes or reads them, all get them)."""
        prototypes = load_or_compute_prototypes(self.cache) if info.is_main else None
        return broadcast_object(prototypes, info)

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

    def _check_replay(self, batch: tuple, cached: Dict[str, Tensor], keys) -> None:
        fp = batch[4]
        checked = fp != 0  # items the ViewDataset fingerprinted this epoch
        n = int(checked.sum())
        if not n:
            return
        self.checked += n
        bad = checked & (fp != cached["fingerprint"])
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            i, v = int(batch[2][j]), int(batch[3][j])
            raise CacheMismatchError(
                f"replay diverged: sample {i} ({keys[i]}) view {v} is not the image the teacher saw when the cache "
                f"{self.directory} was dumped (input fingerprint {to_unsigned(int(fp[j])):016x}, cached "
                f"{to_unsigned(int(cached['fingerprint'][j])):016x}); the augmentation code or a library changed "
                f"(cache written by mlkd-cache {self.cache.spec.tool_version}, this is {__version__}); "
                f"re-run dump-targets in this environment"
            )

    def _check_finite(self, batch: tuple, cached: Dict[str, Tensor], position: str) -> None:
        for name in ("logits", "features", "tokens", "label_emb"):
            t = cached.get(name)
            if t is None or bool(torch.isfinite(t).all()):
                continue
            rows = ~torch.isfinite(t).reshape(len(t), -1).all(dim=1)
            where = cached["token_sample"][rows] if name == "tokens" else rows.nonzero()[:, 0]
            samples = sorted({int(batch[2][int(b)]) for b in where[:8]})
            raise CacheCorruptError(
                f"{self.directory}: cached teacher {name} are not finite for samples {samples} (at {position}); the teacher "
                f"diverged or the shard is damaged: run `mlkd-cache verify` and re-run dump-targets"
            )

    def targets(self, batch: tuple, device: torch.device, keys, position: str = "") -> Dict[str, Tensor]:
        """KDBatch teacher fields for the batch the collate function built (``batch[5]``);
        ``position`` ("epoch E step S") is named by the errors."""
        cached = batch[5]
        self._check_replay(batch, cached, keys)
        self._check_finite(batch, cached, position)
        out = {"z_t": _to(cached["logits"], device), "f_t": _to(cached["features"], device)}
        if "tokens" in cached:
            out["t_tokens"] = _to(cached["tokens"], device)
            out["token_sample"] = cached["token_sample"].to(device, non_blocking=device.type == "cuda")
            out["token_class"] = cached["token_class"].to(device, non_blocking=device.type == "cuda")
        else:
            out["e_t"] = _to(cached["label_emb"], device)
        return out


class LiveTeacher:
    """Teacher targets computed by running ``teacher.pt`` on the batch (the online baseline)."""

    mode = "online"

    def __init__(self, path: Path, cfg: Config, fresh_views: bool = False) -> None:
        self.path = Path(path)
        self.ckpt = load_checkpoint(self.path, require=TEACHER_KEYS)
        self.sha256 = file_sha256(self.path)
        # views: the cycle length of the replayed views, None for a fresh view every epoch;
        # prototypes (MPSCD) are averaged over cache.views views either way, as a cache's are.
        self.prototype_views, self.base_seed = int(cfg.cache["views"]), int(cfg.seed)
        self.views: Optional[int] = None if fresh_views else self.prototype_views
        self.embed_dim = int(self.ckpt["embed_dim"])
        self.model = model_from_checkpoint(self.ckpt).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.amp = False

    def check_fits(self, cfg: Config, train_set, transform: TransformSpec) -> None:
        check_teacher_fits(cfg, self.ckpt, train_set, transform, self.path)

    def collate(self) -> None:
        return None

    def to(self, device: torch.device, amp: bool) -> None:
        self.model.to(device)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.amp = amp

    @torch.no_grad()
    def prototypes(self, info: DistInfo, view_data: ViewDataset, batch_size: int, workers: int) -> Tensor:
        """``[C, E_t]`` prototypes by the cache's definition (normalised mean of the teacher's
        embeddings of every positive label over all V views), computed by running the teacher
        over every (sample, view) pair once; ranks split the pairs and sum."""
        device = next(self.model.parameters()).device
        pairs = shard_pairs(0, len(view_data), self.prototype_views)[info.rank :: info.world_size]
        acc = PrototypeAccumulator(len(view_data.class_names), self.embed_dim)
        loader = DataLoader(PairDataset(view_data, pairs), batch_size=batch_size, num_workers=workers)
        with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from the global RNG
            for image, labels, *_ in loader:
                with autocast_for(device, self.amp):
                    emb = self.model(image.to(device)).label_emb.float()
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
            "teacher_arch": str(self.ckpt["arch"]),
            "teacher_sha256": self.sha256,
            "views": FRESH if self.views is None else self.views,
            "base_seed": self.base_seed,
        }

    @torch.no_grad()
    def targets(self, batch: tuple, device: torch.device, keys, position: str = "") -> Dict[str, Tensor]:
        with autocast_for(device, self.amp):
            out = self.model(batch[0])
        return {"z_t": out.logits.float(), "f_t": out.features.float(), "e_t": out.label_emb.float()}


class NoKDTrainer(Trainer):
    """The no-KD student (``distill-student --no-kd``): :class:`Trainer` on ``model_s`` with the
    hard-label loss alone, a fresh view every epoch; it refuses to resume a distilled run."""

    def __init__(self, cfg: Config, out: Path, resume: bool = False, progress: bool = True) -> None:
        super().__init__(cfg, "s", out, resume=resume, progress=progress)

    def check_resume(self, ckpt: Dict[str, Any]) -> None:
        if "distill" in ckpt:
            raise CheckpointError(
                f"cannot resume {self.files.checkpoint}: it was distilled ({ckpt['distill'].get('mode')}); "
                f"drop --no-kd to resume it or start a new run in another --out"
            )


class DistillTrainer(Trainer):
    """The student trainer: hard-label loss + distiller, teacher targets from ``source``."""

    def __init__(
        self,
        cfg: Config,
        out: Path,
        cache: Optional[Path] = None,
        teacher: Optional[Path] = None,
        resume: bool = False,
        progress: bool = True,
        verify_checksums: bool = True,
        fresh_views: bool = False,
    ) -> None:
        if (cache is None) == (teacher is None):
            raise ConfigError(
                "give either --cache DIR (offline, from dump-targets) or --teacher teacher.pt (online baseline), not "
                + ("both" if cache is not None else "neither")
            )
        if fresh_views and teacher is None:
            raise ConfigError(
                "--fresh-views needs --teacher: a cache holds a fixed set of views; drop --fresh-views or pass --teacher"
            )
        # The teacher is built before the student's seed is set, so both modes initialise alike.
        self.source = CacheTargets(cache, verify_checksums) if cache is not None else LiveTeacher(teacher, cfg, fresh_views)
        super().__init__(cfg, "s", out, resume=resume, final_name="student.pt", progress=progress)

    # ---------------------------------------------------------------- Trainer hooks
    def make_train_data(self, train_set) -> ViewDataset:
        self.source.check_fits(self.cfg, train_set, self.spec)
        share = self.cfg.replay_check if self.source.mode == "offline" else 0.0
        return ViewDataset(
            train_set, self.spec, self.source.base_seed, train=True, views=self.source.views, with_fingerprint=share
        )

    def make_collate(self):
        return self.source.collate()

    def build_extra_modules(self) -> list:
        if isinstance(self.source, LiveTeacher):
            self.source.to(self.info.device, bool(self.cfg.amp and self.info.device.type == "cuda"))
        self.distiller = Distiller.from_config(
            self.cfg.criterion_t2s_para,
            num_classes=len(self.class_names),
            student_embed_dim=self.cfg.embed_dim,
            teacher_embed_dim=self.source.embed_dim,
        )
        needs_prototypes = [m for m in self.distiller.modules() if hasattr(m, "set_prototypes")]
        if needs_prototypes:
            if isinstance(self.source, LiveTeacher):
                prototypes = self.source.prototypes(self.info, self.train_data, self.cfg.batch_size, self.cfg.workers)
            else:
                prototypes = self.source.prototypes(self.info)
            for module in needs_prototypes:
                module.set_prototypes(prototypes)
        return [self.distiller]

    def loss_terms(self, batch: tuple, outputs) -> Dict[str, Tensor]:
        device = self.info.device
        y = batch[1].to(device, non_blocking=device.type == "cuda")
        teacher = self.source.targets(batch, device, self.train_data.keys, self.position)
        kd = KDBatch(y=y, z_s=outputs.logits.float(), f_s=outputs.features.float(), e_s=outputs.label_emb.float(), **teacher)
        return {**self.hard_loss(outputs.logits, y), **self.distiller(kd)}

    def resume_keys(self) -> list:
        return [*super().resume_keys(), "criterion_t2s_para"]

    def check_resume(self, ckpt: Dict[str, Any]) -> None:
        if "distill" not in ckpt:
            raise CheckpointError(
                f"cannot resume {self.files.checkpoint}: it is a run without distillation (--no-kd); "
                f"resume it with --no-kd or start a new run in another --out"
            )
        old, now = ckpt["distill"], self.source.identity()
        if old.get("views") != now.get("views") and FRESH in (old.get("views"), now.get("views")):

            def said(views):
                return "--fresh-views" if views == FRESH else f"{views} cached views"

            raise CheckpointError(
                f"cannot resume {self.files.checkpoint}: it was trained with {said(old.get('views'))}, this run has "
                f"{said(now.get('views'))}; pass the same flags or start a new run in another --out"
            )
        for key in ("mode", "teacher_sha256", "views", "base_seed", "cache_sha256"):
            if old.get(key) != now.get(key):
                raise CheckpointError(
                    f"cannot resume {self.files.checkpoint}: it was distilled from another {key.replace('_', ' ')} "
                    f"({old.get(key)!r}, now {now.get(key)!r}); pass the same --cache/--teacher or start a new run in another --out"
                )

    def model_card(self) -> Dict[str, Any]:
        return {**super().model_card(), "distill": self.source.identity()}

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        if isinstance(self.source, CacheTargets):
            self.source.checked = 0
        row = super().train_one_epoch(epoch)
        if isinstance(self.source, CacheTargets):
            row["replay_checked"] = self.source.checked
        return row


def run(
    cfg: Config,
    out: Path,
    cache: Optional[Path] = None,
    teacher: Optional[Path] = None,
    resume: bool = False,
    progress: bool = True,
    verify_checksums: bool = True,
    fresh_views: bool = False,
    no_kd: bool = False,
) -> Dict[str, Any]:
    """Train ``model_s`` of ``cfg`` into ``out``: distilled from a cache (offline), from a live
    teacher on the cached views' replay or on ``fresh_views`` (online), or with ``no_kd`` from
    the labels alone (hard-label loss, a fresh view every epoch; no cache, no teacher)."""
    if no_kd:
        if cache is not None or teacher is not None or fresh_views:
            given = "--cache" if cache is not None else "--teacher" if teacher is not None else "--fresh-views"
            raise ConfigError(f"--no-kd trains without a teacher; drop {given} or drop --no-kd")
        trainer: Trainer = NoKDTrainer(cfg, out, resume=resume, progress=progress)
        mode, views, terms = "no-kd", FRESH, [trainer.hard_loss.name]
    else:
        trainer = DistillTrainer(
            cfg,
            out,
            cache=cache,
            teacher=teacher,
            resume=resume,
            progress=progress,
            verify_checksums=verify_checksums,
            fresh_views=fresh_views,
        )
        mode, views = trainer.source.mode, trainer.source.views
        views, terms = FRESH if views is None else views, [trainer.hard_loss.name, *trainer.distiller.names()]
    result = trainer.fit()
    result.update(mode=mode, views=views, terms=terms, steps_log=str(trainer.files.steps) if cfg.log_every else None)
    return result
