"""Stage 2: ``distill-student``. Trains ``model_s`` with the hard-label loss plus the distiller
of ``criterion_t2s_para``, the teacher's side of every loss coming from a
:class:`~mlkd_cache.engine.targets.TeacherTargets` source:

* :class:`~mlkd_cache.engine.targets.CacheTargets` (offline, the point of this tool): a cache
  written by ``dump-targets``. The student sees sample i in epoch e under view
  ``(e + offset_i) % V``, rebuilt from the cache's base seed, and the targets of exactly those
  (sample, view) pairs are read inside the DataLoader workers. No teacher is in memory.
* :class:`~mlkd_cache.engine.targets.LiveTeacher` (online baseline, what the L2D code does every
  step): ``teacher.pt`` is run on every batch, either on the very same replayed views as a cache
  of ``cache.views`` views (to prove that offline distillation teaches what online distillation
  teaches) or, with ``fresh_views``, on a fresh augmentation every epoch (L2D's own regime:
  view = epoch, seeded from the student's ``seed``, exactly the views the no-KD student sees).

:func:`run` with ``no_kd`` trains the same student in the same loop, schedule and augmentation
(a fresh view every epoch) with the hard-label loss alone: the first row of every KD table.

Before the first step the cache is checked against the dataset and config (classes, labels,
img_size, transform); during training the fingerprints of a share ``replay_check`` of every
epoch's inputs are compared with the cached ones, and a divergence stops the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import Tensor, nn

from ..cache.reader import TargetCache
from ..cache.replay import check_store_fits, open_cache
from ..config import Config
from ..data import MultiLabelDataset, dataset_from_config
from ..data.transforms import TransformSpec
from ..data.views import ViewDataset
from ..distributed import init_distributed
from ..errors import CacheMismatchError, CheckpointError, ConfigError, MlkdError
from ..losses.base import KDBatch
from ..losses.distiller import Distiller
from .targets import FRESH, Batch, CacheTargets, LiveTeacher, TeacherTargets, check_outputs_serve, verify_on_ranks
from .teacher import TeacherSpec
from .train import Trainer, check_eval_split

log = logging.getLogger("mlkd_cache")

__all__ = ["FRESH", "NoKDTrainer", "DistillTrainer", "run"]


def image_cache(directory: Optional[Path], verify_checksums: bool = True) -> Optional[TargetCache]:
    """The cache whose image store a run reads (``--cache`` with ``--no-kd`` or ``--teacher``),
    every file's sha256 checked first (split over ranks) with ``verify_checksums``;
    :class:`CacheMismatchError` when it holds no images."""
    if directory is None:
        return None
    cache = open_cache(Path(directory))
    if not cache.spec.stores_images:
        raise CacheMismatchError(
            f"--cache {directory} holds no images (dumped with images='none'), and --no-kd or --teacher read only a "
            f"cache's images; drop --cache, or re-run dump-targets with --images raw or jpeg"
        )
    if verify_checksums:
        verify_on_ranks(cache, init_distributed())
    return cache


def splits_from_store(cache: TargetCache, cfg: Config) -> Tuple[MultiLabelDataset, MultiLabelDataset]:
    """The train split and the scored split read from ``cache``'s image store: no dataset folder.
    A scored split other than the stored one comes from the dataset folder, when there is one."""
    check_store_fits(cache, cfg.dataset, cfg.dataset_params("s"), cfg.bad_images, TransformSpec.from_config(cfg))
    train = cache.stored_split("train")
    if cfg.eval_split == cache.eval_split:
        return train, cache.stored_split("eval")
    try:
        check_eval_split(cfg)
        return train, dataset_from_config(cfg, cfg.eval_split)
    except MlkdError as exc:
        raise ConfigError(
            f"{cache.directory} stores the {cache.eval_split} split, the config scores eval_split={cfg.eval_split!r} and its "
            f"data is not here ({exc}); set eval_split={cache.eval_split!r} or give the dataset folder"
        ) from None


class NoKDTrainer(Trainer):
    """The no-KD student (``distill-student --no-kd``): :class:`Trainer` on ``model_s`` with the
    hard-label loss alone, a fresh view every epoch; it refuses to resume a distilled run. With
    ``images`` (a cache with an image store) its data comes from that store."""

    def __init__(
        self,
        cfg: Config,
        out: Path,
        resume: bool = False,
        progress: bool = True,
        images: Optional[Path] = None,
        verify_checksums: bool = True,
    ) -> None:
        self.image_cache = image_cache(images, verify_checksums)
        super().__init__(cfg, "s", out, resume=resume, progress=progress)

    def load_splits(self) -> Tuple[Any, Any]:
        return super().load_splits() if self.image_cache is None else splits_from_store(self.image_cache, self.cfg)

    def check_resume(self, ckpt: Dict[str, Any]) -> None:
        if "distill" in ckpt:
            raise CheckpointError(
                f"cannot resume {self.files.checkpoint}: it was distilled ({ckpt['distill'].get('mode')}); "
                f"drop --no-kd to resume it or start a new run in another --out"
            )


def images_of(cache: Optional[TargetCache]) -> str:
    """Where a run's images come from, as its model card records it."""
    return "dataset" if cache is None else f"{cache.spec.images} store of {cache.directory}"


class DistillTrainer(Trainer):
    """The student trainer: hard-label loss + distiller, teacher targets from ``source``."""

    def __init__(
        self,
        cfg: Config,
        out: Path,
        cache: Optional[Path] = None,
        teacher: Optional[TeacherSpec] = None,
        resume: bool = False,
        progress: bool = True,
        verify_checksums: bool = True,
        fresh_views: bool = False,
        images: Optional[Path] = None,
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
        self.source: TeacherTargets
        if cache is not None:
            self.source = CacheTargets(cache, verify_checksums)
        elif teacher is not None:
            self.source = LiveTeacher(teacher, cfg, fresh_views)
        check_outputs_serve(cfg.criterion_t2s_para, self.source)  # a loss without its teacher output stops here
        # the images: the offline cache's own store when it has one, a store given for the online run, or the folder
        own = self.source.cache if isinstance(self.source, CacheTargets) and self.source.cache.spec.stores_images else None
        self.image_cache = own if images is None else image_cache(images, verify_checksums)
        super().__init__(cfg, "s", out, resume=resume, final_name="student.pt", progress=progress)

    # ---------------------------------------------------------------- Trainer hooks
    def load_splits(self) -> Tuple[Any, Any]:
        return super().load_splits() if self.image_cache is None else splits_from_store(self.image_cache, self.cfg)

    def make_train_data(self, train_set) -> ViewDataset:
        self.source.check_fits(self.cfg, train_set, self.spec)
        share = self.cfg.replay_check if self.source.mode == "offline" else 0.0
        return ViewDataset(
            train_set,
            self.spec,
            self.source.base_seed,
            train=True,
            views=self.source.views,
            with_fingerprint=share,
            image_dtype="uint8",
            fingerprint_of=self.source.fingerprint_of,
        )

    def make_collate(self):
        return self.source.collate()

    def build_extra_modules(self) -> List[nn.Module]:
        self.source.to(self.info.device, bool(self.cfg.amp and self.info.device.type == "cuda"))
        self.distiller = Distiller.from_config(
            self.cfg.criterion_t2s_para,
            num_classes=len(self.class_names),
            student_embed_dim=self.cfg.embed_dim,
            teacher_embed_dim=self.source.embed_dim,
        )
        if self.distiller.needs_prototypes:
            self.distiller.set_prototypes(
                self.source.prototypes(self.info, self.train_data, self.cfg.batch_size, self.cfg.workers)
            )
        return [self.distiller]

    def loss_terms(self, batch: Batch, outputs: Any) -> Dict[str, Tensor]:
        device = self.info.device
        y = batch.labels.to(device, non_blocking=device.type == "cuda")
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
        return {**super().model_card(), "distill": self.source.identity(), "images": images_of(self.image_cache)}

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        self.source.start_epoch()
        row = super().train_one_epoch(epoch)
        row.update(self.source.epoch_stats())
        return row


def run(
    cfg: Config,
    out: Path,
    cache: Optional[Path] = None,
    teacher: Optional[TeacherSpec] = None,
    resume: bool = False,
    progress: bool = True,
    verify_checksums: bool = True,
    fresh_views: bool = False,
    no_kd: bool = False,
) -> Dict[str, Any]:
    """Train ``model_s`` of ``cfg`` into ``out``: distilled from a cache (offline), from a live
    teacher on the cached views' replay or on ``fresh_views`` (online), or with ``no_kd`` from
    the labels alone (hard-label loss, a fresh view every epoch; no cache, no teacher)."""
    views: Union[str, int]  # FRESH, or the number of replayed views
    if no_kd:
        if teacher is not None or fresh_views:
            given = "--teacher" if teacher is not None else "--fresh-views"
            raise ConfigError(f"--no-kd trains without a teacher; drop {given} or drop --no-kd")
        trainer: Trainer = NoKDTrainer(
            cfg, out, resume=resume, progress=progress, images=cache, verify_checksums=verify_checksums
        )
        mode, views, terms = "no-kd", FRESH, [trainer.hard_loss.name]
    else:
        online_store = cache if teacher is not None else None  # --teacher with --cache: the live teacher on the store's images
        trainer = DistillTrainer(
            cfg,
            out,
            cache=None if online_store is not None else cache,
            teacher=teacher,
            resume=resume,
            progress=progress,
            verify_checksums=verify_checksums,
            fresh_views=fresh_views,
            images=online_store,
        )
        source_views = trainer.source.views
        mode, terms = trainer.source.mode, [trainer.hard_loss.name, *trainer.distiller.names()]
        views = FRESH if source_views is None else source_views
    result = trainer.fit()
    images = images_of(getattr(trainer, "image_cache", None))
    result.update(
        mode=mode, views=views, terms=terms, images=images, steps_log=str(trainer.files.steps) if cfg.log_every else None
    )
    return result
