"""Stage 2: ``distill-student``. Trains ``model_s`` with the hard-label loss plus the distiller
of ``criterion_t2s_para``, the teacher's side of every loss coming from a
:class:`~mlkd_cache.runtime.targets.TeacherTargets` source:

* :class:`~mlkd_cache.runtime.targets.CacheTargets` (offline, the point of this tool): a cache
  written by ``dump-targets``. The student sees sample i in epoch e under view
  ``(e + offset_i) % V``, rebuilt from the cache's base seed, and the targets of exactly those
  (sample, view) pairs are read inside the DataLoader workers. No teacher is in memory.
* :class:`~mlkd_cache.runtime.targets.LiveTeacher` (online baseline, what the L2D code does every
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

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from ..config import Config
from ..errors import ConfigError
from ..runtime.students import DistillTrainer, NoKDTrainer, cache_list, images_of
from ..runtime.targets import FRESH
from ..runtime.teachers import TeacherSpec
from ..runtime.train import Trainer

__all__ = ["run"]


def run(
    cfg: Config,
    out: Path,
    cache: Union[Path, Sequence[Path], None] = None,
    teacher: Optional[TeacherSpec] = None,
    resume: bool = False,
    progress: bool = True,
    verify_checksums: bool = True,
    fresh_views: bool = False,
    no_kd: bool = False,
    views: Optional[int] = None,
) -> Dict[str, Any]:
    """Train ``model_s`` of ``cfg`` into ``out``: distilled from a cache (offline), from a live
    teacher on the cached views' replay or on ``fresh_views`` (online), or with ``no_kd`` from
    the labels alone (hard-label loss, a fresh view every epoch; no cache, no teacher).
    Several ``cache`` folders distil from an ensemble of their teachers (offline only). ``views``:
    how many views a live ``teacher`` replays (default: those of the ``cache`` whose images it
    reads, else the config's ``cache.views``)."""
    replayed: Union[str, int]  # FRESH, or the number of replayed views
    caches = cache_list(cache)
    if len(caches) > 1 and (no_kd or teacher is not None):
        given = "--no-kd" if no_kd else "--teacher"
        raise ConfigError(
            f"several --cache folders distil from their teachers offline; with {given} give one --cache (its images are read)"
        )
    store = caches[0] if caches else None
    if no_kd:
        if teacher is not None or fresh_views or views is not None:
            given = "--teacher" if teacher is not None else "--fresh-views" if fresh_views else "--views"
            raise ConfigError(f"--no-kd trains without a teacher; drop {given} or drop --no-kd")
        trainer: Trainer = NoKDTrainer(
            cfg, out, resume=resume, progress=progress, images=store, verify_checksums=verify_checksums
        )
        mode, replayed, terms = "no-kd", FRESH, [trainer.hard_loss.name]
    else:
        online_store = store if teacher is not None else None  # --teacher with --cache: the live teacher on the store's images
        trainer = DistillTrainer(
            cfg,
            out,
            cache=None if online_store is not None else caches,
            teacher=teacher,
            resume=resume,
            progress=progress,
            verify_checksums=verify_checksums,
            fresh_views=fresh_views,
            images=online_store,
            views=views,
        )
        source_views = trainer.source.views
        mode, terms = trainer.source.mode, [trainer.hard_loss.name, *trainer.term_names()]
        replayed = FRESH if source_views is None else source_views
    result = trainer.fit()
    images = images_of(getattr(trainer, "image_cache", None))
    result.update(
        mode=mode, views=replayed, terms=terms, images=images, steps_log=str(trainer.files.steps) if cfg.log_every else None
    )
    return result
