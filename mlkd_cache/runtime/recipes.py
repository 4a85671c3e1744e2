"""Named student recipes: the rows of a KD comparison, shared by ``demo`` and the KD study.

A recipe is a hard-label loss plus an optional distiller (``criterion_t2s_para``). ``no-kd``
has none (the baseline, what ``distill-student --no-kd`` trains); ``l2d`` takes the config's own
criterion (for the shipped digits config, L2D's MLD + LED); ``mld`` and ``mpscd`` are fixed
here, with L2D's logit weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from ..config import Config

_MLD = dict(name="MLD", para=dict())


@dataclass(frozen=True)
class Recipe:
    """``label``: the loss as a table shows it; ``criterion``: ``criterion_t2s_para``, ``None``
    for no distillation, or ``"config"`` for the config's own criterion."""

    label: str
    criterion: Union[None, str, Dict[str, Any]]

    @property
    def distils(self) -> bool:
        return self.criterion is not None


NO_KD = "no-kd"  # the baseline recipe: every KD recipe is measured against it
DEMO_CONFIG = "digits/resnet10t_to_test_resnet_l2d.py"  # the config `mlkd-cache demo` runs unless told otherwise

RECIPES: Dict[str, Recipe] = {
    NO_KD: Recipe("BCE (no KD)", None),
    "mld": Recipe("BCE + MLD", dict(name="MLD", para=dict(lambda_logits=10.0, logits_dis=_MLD))),
    "l2d": Recipe("BCE + MLD + LED", "config"),
    "mpscd": Recipe(
        "BCE + MLD + MPSCD",
        dict(name="MPSCD", para=dict(lambda_logits=10.0, logits_dis=_MLD, lambda_le=1.0, le_dis=dict(name="MPSCD", para=dict()))),
    ),
}


def student_config(cfg: Config, recipe: str, seed: Optional[int] = None) -> Config:
    """``cfg`` with the criterion of ``RECIPES[recipe]`` (and student seed ``seed`` if given)."""
    criterion = RECIPES[recipe].criterion
    changes: Dict[str, Any] = {} if seed is None else {"seed": seed}
    if isinstance(criterion, dict):
        changes["criterion_t2s_para"] = criterion
    return cfg.replace(**changes) if changes else cfg


def recipe_fields(cfg: Config) -> Union[str, Tuple[str, ...]]:
    """``cache.fields`` for one cache that serves every recipe of ``cfg``: with ``auto``, the
    teacher outputs any recipe's distiller reads (the config's ``auto`` keeps only its own
    distiller's); an explicit list as given."""
    if cfg.cache["fields"] != "auto":
        return tuple(cfg.cache["fields"])
    from .targets import outputs_needed  # imported here: the CLI reads this module's names without torch

    needed = {o for name, r in RECIPES.items() if r.distils for o in outputs_needed(student_config(cfg, name).criterion_t2s_para)}
    return tuple(sorted(needed))
