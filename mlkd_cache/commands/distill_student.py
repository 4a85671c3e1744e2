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
from ..runtime.regimes import Regime, train_student
from ..runtime.teachers import TeacherSpec

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
    regime = Regime.of(cache, teacher, fresh_views=fresh_views, no_kd=no_kd, views=views)
    return train_student(cfg, out, regime, resume=resume, progress=progress, verify_checksums=verify_checksums)
