"""The student trainers of ``distill-student`` and the demo: :class:`NoKDTrainer` (the
hard-label loss alone) and :class:`DistillTrainer` (hard-label loss plus the distiller of
``criterion_t2s_para``, the teacher's side of every loss from a
:class:`~mlkd_cache.runtime.targets.TeacherTargets` source)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch import Tensor, nn

from ..cache.format import check_request, labels_digest
from ..cache.reader import TargetCache, check_store_fits
from ..config import VAL_SPLIT_HINT, Config
from ..data import MultiLabelDataset, check_eval_split, dataset_from_config, has_split
from ..data.transforms import TransformSpec
from ..data.views import ViewDataset, eval_inputs
from ..distributed import all_gather_objects, init_distributed
from ..errors import CacheMismatchError, CheckpointError, ConfigError, MlkdError
from ..losses.base import KDBatch
from ..losses.distiller import Distiller
from ..models.card import ModelCard
from ..thresholds import TUNING_SPLIT
from .ensemble import EnsembleTargets, describe, ensemble_term, teacher_names
from .scoring import tune_model
from .targets import (
    FRESH,
    Batch,
    CacheTargets,
    LiveTeacher,
    TeacherTargets,
    check_outputs_serve,
    open_cache_on_ranks,
)
from .teachers import TeacherSpec
from .train import Trainer

log = logging.getLogger("mlkd_cache")

__all__ = ["FRESH", "StudentTrainer", "NoKDTrainer", "DistillTrainer", "cache_list", "check_sources", "images_of"]


def image_cache(directory: Optional[Path], verify_checksums: bool = True) -> Optional[TargetCache]:
    """The cache whose image store a run reads (``--cache`` with ``--no-kd`` or ``--teacher``),
    every file's sha256 checked first (split over ranks) with ``verify_checksums``;
    :class:`CacheMismatchError` when it holds no images."""
    if directory is None:
        return None
    cache = open_cache_on_ranks(Path(directory), verify_checksums, init_distributed())
    if not cache.spec.stores_images:
        raise CacheMismatchError(
            f"--cache {directory} holds no images (dumped with images='none'), and --no-kd or --teacher read only a "
            f"cache's images; drop --cache, or re-run dump-targets with --images raw or jpeg"
        )
    return cache


def splits_from_store(cache: TargetCache, cfg: Config) -> Tuple[MultiLabelDataset, MultiLabelDataset]:
    """The train split and the scored split read from ``cache``'s image store: no dataset folder.
    A scored split other than the stored one comes from the dataset folder, when there is one."""
    check_store_fits(cache, cfg.dataset, cfg.dataset_params("s"), cfg.bad_images, TransformSpec.from_config(cfg))
    check_request(cache.spec, val_split=cfg.val_split, where=str(cache.directory))  # its train split less the same val
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


class StudentTrainer(Trainer):
    """:class:`Trainer` of ``model_s``, whose splits come from ``image_cache``'s image store when
    the run reads one (set before ``Trainer.__init__``), else from the dataset folder."""

    image_cache: Optional[TargetCache] = None

    def load_splits(self) -> Tuple[Any, Any]:
        return super().load_splits() if self.image_cache is None else splits_from_store(self.image_cache, self.cfg)

    def provenance(self) -> Dict[str, Any]:
        return {"images": images_of(self.image_cache)}

    # ---------------------------------------------------------------- decision thresholds in student.pt
    def final_card(self) -> ModelCard:
        """The card of student.pt, with f1 thresholds tuned on the val split where the dataset has
        one (:func:`~mlkd_cache.runtime.scoring.tune_model`: every rank, the RNG untouched)."""
        card = super().final_card()
        data = self.tuning_data()
        if data is None:
            return card
        done = self.last_scored if data is self.test_data else None  # val scored after the last epoch: reused
        thresholds = tune_model(
            self.model, data, self.cfg.batch_size, self.cfg.workers, self.info, self.amp, TUNING_SPLIT, scored=done
        )
        return card if thresholds is None else card.replace(thresholds=thresholds)

    def tuning_data(self) -> Optional[ViewDataset]:
        """The eval inputs of the val split (the scored split when it is val), None where the
        dataset has none, or some rank cannot read it or reads other labels than rank 0 (each
        said in a warning); every rank gets the same answer."""
        cfg = self.cfg
        if cfg.eval_split == TUNING_SPLIT:
            return self.test_data
        if not has_split(cfg, TUNING_SPLIT):
            if self.info.is_main:
                log.warning(
                    "%s stores no decision thresholds: dataset %s has no %s split to tune them on; set "
                    f"{VAL_SPLIT_HINT} in the config to hold one out of the train split "
                    "(the teacher, the cache and the student then train without it)",
                    self.files.final,
                    cfg.dataset,
                    TUNING_SPLIT,
                )
            return None
        data: Optional[ViewDataset] = None
        try:
            data = eval_inputs(dataset_from_config(cfg, TUNING_SPLIT), self.spec)
            problem = ""
        except MlkdError as exc:
            where = f" on {self.info.where}" if self.info.enabled else ""
            problem = f"the {TUNING_SPLIT} split is not readable{where} ({exc})"
        seen = all_gather_objects((problem, None if data is None else labels_digest(data.labels)), self.info)
        problems = [p for p, _ in seen if p]
        if not problems and len({digest for _, digest in seen}) > 1:
            problems = [f"the ranks read different labels for the {TUNING_SPLIT} split"]
        if not problems:
            return data
        if self.info.is_main:
            log.warning(
                "%s stores no decision thresholds: %s; choose them with mlkd-cache tune-thresholds",
                self.files.final,
                problems[0],
            )
        return None


class NoKDTrainer(StudentTrainer):
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

    def check_resume(self, card: ModelCard) -> None:
        if "distill" in card.provenance:
            raise CheckpointError(
                f"cannot resume {self.files.checkpoint}: it was distilled ({card.provenance['distill'].get('mode')}); "
                f"drop --no-kd to resume it or start a new run in another --out"
            )


def cache_list(cache: Union[Path, str, Sequence[Path], None]) -> List[Path]:
    """``--cache`` as a list of folders: none, one, or several (an ensemble of teachers)."""
    if cache is None:
        return []
    if isinstance(cache, (str, Path)):
        return [Path(cache)]
    return [Path(c) for c in cache]


def images_of(cache: Optional[TargetCache]) -> str:
    """Where a run's images come from, as its model card records it."""
    return "dataset" if cache is None else f"{cache.spec.images} store of {cache.directory}"


def check_sources(caches: Sequence[Path], teacher: Optional[TeacherSpec], fresh_views: bool, views: Optional[int]) -> None:
    """:class:`ConfigError` (one line) unless a distilled student has one source of targets:
    ``caches`` (offline) or a live ``teacher`` (online, on ``fresh_views`` or the replay of
    ``views`` views)."""
    if bool(caches) == (teacher is not None):
        raise ConfigError(
            "give either --cache DIR (offline, from dump-targets) or --teacher teacher.pt (online baseline), not "
            + ("both" if caches else "neither")
        )
    if fresh_views and teacher is None:
        raise ConfigError(
            "--fresh-views needs --teacher: a cache holds a fixed set of views; drop --fresh-views or pass --teacher"
        )
    if views is not None and (teacher is None or fresh_views):
        raise ConfigError(
            "--views sets how many views a live --teacher replays; a cache replays its own and --fresh-views none: drop --views"
        )


def live_teacher(
    cfg: Config,
    teacher: TeacherSpec,
    fresh_views: bool,
    views: Optional[int],
    store: Optional[TargetCache],
) -> LiveTeacher:
    """The online source of ``teacher``. On a cache's image store (``store``) it replays exactly
    the views that cache holds (its V and base seed; a ``views`` that differs is refused), so the
    online run is the same experiment as the offline one from that cache."""
    if store is None or fresh_views:
        return LiveTeacher(teacher, cfg, fresh_views, views=views, store=store)
    spec = store.spec
    if views is not None and views != spec.views:
        raise ConfigError(
            f"--views {views}, but the cache in {store.directory} whose images this run reads holds {spec.views} views; "
            f"drop --views (online replays the cache's own views) or give a cache of {views} views"
        )
    return LiveTeacher(teacher, cfg, views=spec.views, base_seed=spec.base_seed, store=store)


class DistillTrainer(StudentTrainer):
    """The student trainer: hard-label loss + distiller, teacher targets from ``source``.

    ``cache`` is one cache folder, or several (an ensemble: one distiller per teacher, the terms
    averaged over teachers and logged per teacher as ``t1/mld``, ``t2/mld``, ...)."""

    def __init__(
        self,
        cfg: Config,
        out: Path,
        cache: Union[Path, Sequence[Path], None] = None,
        teacher: Optional[TeacherSpec] = None,
        resume: bool = False,
        progress: bool = True,
        verify_checksums: bool = True,
        fresh_views: bool = False,
        images: Optional[Path] = None,
        views: Optional[int] = None,
    ) -> None:
        caches = cache_list(cache)
        check_sources(caches, teacher, fresh_views, views)
        # The teacher is built before the student's seed is set, so both modes initialise alike.
        # The source's checksums are checked after the outputs check: a source that cannot serve is refused at once.
        self.source: TeacherTargets
        if len(caches) > 1:
            self.source = EnsembleTargets(caches, verify_checksums=False)
        elif caches:
            self.source = CacheTargets(caches[0], verify_checksums=False)
        else:
            assert teacher is not None  # one of the two, checked above
            self.source = live_teacher(cfg, teacher, fresh_views, views, image_cache(images, verify_checksums=False))
        self.members: List[TeacherTargets] = list(self.source.members)  # the teachers, one distiller each
        for member in self.members:
            check_outputs_serve(cfg.criterion_t2s_para, member)  # a loss without its teacher output stops here
        if verify_checksums:
            self.source.verify(init_distributed())
        if len(self.members) > 1 and init_distributed().is_main:
            log.info("distilling from %d teachers: %s", len(self.members), describe(self.members))
        self.image_cache = self.source.store  # the images: a cache's own store (an ensemble's first), or the folder
        super().__init__(cfg, "s", out, resume=resume, progress=progress)

    def term_name(self, teacher: int, term: str) -> str:
        """How a teacher's term is logged: ``mld`` for one teacher, ``t1/mld``, ``t2/mld`` ... for an ensemble."""
        return term if len(self.members) == 1 else ensemble_term(teacher_names(len(self.members))[teacher], term)

    def term_names(self) -> List[str]:
        """The distillation terms :meth:`loss_terms` returns, in order."""
        return [self.term_name(k, term) for k, d in enumerate(self.distillers) for term in d.names()]

    # ---------------------------------------------------------------- Trainer hooks
    def make_train_data(self, train_set) -> ViewDataset:
        self.source.check_fits(self.cfg, train_set, self.spec)
        share = self.cfg.replay_check if self.source.checks_replay else 0.0
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
        self.distillers = [
            Distiller.from_config(
                self.cfg.criterion_t2s_para,
                num_classes=len(self.class_names),
                student_embed_dim=self.cfg.embed_dim,
                teacher_embed_dim=member.embed_dim,
            )
            for member in self.members
        ]
        self.distiller = self.distillers[0]  # the distiller of a single teacher
        if self.distiller.needs_prototypes:
            for distiller, member in zip(self.distillers, self.members):  # each teacher's own, [C, E_k]
                distiller.set_prototypes(member.prototypes(self.info, self.train_data, self.cfg.batch_size, self.cfg.workers))
        return list(self.distillers)

    def loss_terms(self, batch: Batch, outputs: Any) -> Dict[str, Tensor]:
        device = self.info.device
        y = batch.labels.to(device, non_blocking=device.type == "cuda")
        student = dict(y=y, z_s=outputs.logits.float(), f_s=outputs.features.float(), e_s=outputs.label_emb.float())
        keys, position = self.train_data.keys, self.position
        per_teacher = self.source.targets(batch, device, keys, position)
        terms = self.hard_loss(outputs.logits, y)
        share = 1.0 / len(per_teacher)  # the terms are averaged over teachers (1.0 for one: exact)
        for k, (distiller, targets) in enumerate(zip(self.distillers, per_teacher)):
            for term, value in distiller(KDBatch(**student, **targets)).items():
                terms[self.term_name(k, term)] = value * share
        return terms

    def resume_keys(self) -> list:
        return [*super().resume_keys(), "criterion_t2s_para"]

    def check_resume(self, card: ModelCard) -> None:
        if "distill" not in card.provenance:
            raise CheckpointError(
                f"cannot resume {self.files.checkpoint}: it is a run without distillation (--no-kd); "
                f"resume it with --no-kd or start a new run in another --out"
            )
        old, now = card.provenance["distill"], self.source.identity()
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

    def provenance(self) -> Dict[str, Any]:
        return {"distill": self.source.identity(), **super().provenance()}

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        self.source.start_epoch()
        row = super().train_one_epoch(epoch)
        row.update(self.source.epoch_stats())
        return row
