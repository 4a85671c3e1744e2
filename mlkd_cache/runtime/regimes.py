"""How a student is taught: the regimes ``distill-student`` runs and ``sweep`` tunes.

A :class:`Regime` names where the teacher's side of every loss comes from: the cache(s)
(offline), a live teacher on the cached views' replay or on fresh views (online), or nothing
(``no_kd``: the hard-label loss alone, a fresh view every epoch). :func:`train_student` builds
the trainer of a regime and runs it; both commands call it, so a sweep's trial is the very run
``distill-student`` makes of the same config and regime.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from ..config import Config
from ..errors import ConfigError
from .students import DistillTrainer, NoKDTrainer, cache_list, check_sources, images_of
from .targets import FRESH
from .teachers import TeacherSpec
from .train import Trainer

__all__ = ["Regime", "train_student"]


@dataclass(frozen=True)
class Regime:
    """One way to train a student. ``caches``: cache folders (offline; with ``no_kd`` or a live
    ``teacher``, the first one's image store is the data); ``teacher``: a live teacher (online),
    on ``fresh_views`` or on the replay of ``views`` views; ``no_kd``: no distillation."""

    caches: Tuple[Path, ...] = ()
    teacher: Optional[TeacherSpec] = None
    fresh_views: bool = False
    no_kd: bool = False
    views: Optional[int] = None

    @classmethod
    def of(
        cls,
        cache: Union[Path, str, Sequence[Path], None] = None,
        teacher: Optional[TeacherSpec] = None,
        fresh_views: bool = False,
        no_kd: bool = False,
        views: Optional[int] = None,
    ) -> "Regime":
        """The regime of ``distill-student``'s options; :class:`ConfigError` (one line) for a
        combination it cannot run."""
        caches = tuple(cache_list(cache))
        if len(caches) > 1 and (no_kd or teacher is not None):
            given = "--no-kd" if no_kd else "--teacher"
            raise ConfigError(
                f"several --cache folders distil from their teachers offline; with {given} give one --cache (its images are read)"
            )
        if no_kd and (teacher is not None or fresh_views or views is not None):
            given = "--teacher" if teacher is not None else "--fresh-views" if fresh_views else "--views"
            raise ConfigError(f"--no-kd trains without a teacher; drop {given} or drop --no-kd")
        if not no_kd:  # what the trainer will be given (train_student): with a teacher, the caches are only its images
            check_sources(() if teacher is not None else caches, teacher, fresh_views, views)
        return cls(caches, teacher, fresh_views, no_kd, views)

    @property
    def mode(self) -> str:
        """``"no-kd"``, ``"online"`` or ``"offline"``."""
        return "no-kd" if self.no_kd else "online" if self.teacher is not None else "offline"

    def options(self) -> str:
        """The ``distill-student`` options that run this regime (``--cache A --fresh-views``)."""
        words = [f"--cache {shlex.quote(str(c))}" for c in self.caches]
        if self.teacher is not None:
            words.append(f"--teacher {shlex.quote(str(self.teacher))}")
        if self.fresh_views:
            words.append("--fresh-views")
        if self.views is not None:
            words.append(f"--views {self.views}")
        if self.no_kd:
            words.append("--no-kd")
        return " ".join(words)

    def record(self) -> Dict[str, Any]:
        """A JSON-able record of the regime (what a sweep's study is of)."""
        return {
            "mode": self.mode,
            "caches": [str(c) for c in self.caches],
            "teacher": None if self.teacher is None else str(self.teacher),
            "fresh_views": self.fresh_views,
            "views": self.views,
        }


def train_student(
    cfg: Config,
    out: Path,
    regime: Regime,
    *,
    resume: bool = False,
    progress: bool = True,
    verify_checksums: bool = True,
    on_scored: Optional[Callable[[int, Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Train ``model_s`` of ``cfg`` into ``out`` under ``regime``; ``on_scored(epochs, metrics)``
    is called after each scoring of ``eval_split`` (:attr:`Trainer.on_scored`). Returns the
    trainer's result with ``mode``, ``views`` (:data:`FRESH` or the number replayed), ``terms``
    (the loss terms), ``images`` and ``steps_log``."""
    replayed: Union[str, int]
    store = regime.caches[0] if regime.caches else None
    trainer: Trainer
    mode = regime.mode
    if regime.no_kd:
        trainer = NoKDTrainer(cfg, out, resume=resume, progress=progress, images=store, verify_checksums=verify_checksums)
        replayed, terms = FRESH, [trainer.hard_loss.name]
    else:
        online_store = (
            store if regime.teacher is not None else None
        )  # --teacher with --cache: the live teacher on the store's images
        trainer = DistillTrainer(
            cfg,
            out,
            cache=None if online_store is not None else list(regime.caches),
            teacher=regime.teacher,
            resume=resume,
            progress=progress,
            verify_checksums=verify_checksums,
            fresh_views=regime.fresh_views,
            images=online_store,
            views=regime.views,
        )
        source_views = trainer.source.views
        terms = [trainer.hard_loss.name, *trainer.term_names()]
        replayed = FRESH if source_views is None else source_views
        mode = trainer.source.mode
    trainer.on_scored = on_scored
    result = trainer.fit()
    images = images_of(getattr(trainer, "image_cache", None))
    result.update(
        mode=mode, views=replayed, terms=terms, images=images, steps_log=str(trainer.files.steps) if cfg.log_every else None
    )
    return result
