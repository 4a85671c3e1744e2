"""Losses: hard-label losses (BCE, ASL) and distillation losses behind ``DISTILL_LOSSES``.

Importing this package registers every distillation loss: ``MLD``, ``PS`` (logits), ``LED``
(and ``MPSCD`` when its module is present; label embeddings), ``RKD``, ``PKT`` (features).
"""
from importlib.util import find_spec

from . import feature, led, mld, ps  # noqa: F401  (registration)
from .base import DISTILL_LOSSES, SLOT_NAMES, DistillLoss, KDBatch, check_para, register_loss
from .distiller import Distiller
from .feature import PKT, RKD, pkt, rkd, rkd_angle, rkd_distance
from .hard import HARD_LOSSES, asl, bce, build_hard_loss
from .led import LED, class_distance, instance_distance, led as led_loss, rd
from .mld import MLD, mld as mld_loss
from .ps import PS, ps as ps_loss

if find_spec(f"{__name__}.mpscd") is not None:
    from . import mpscd  # noqa: F401  (registers MPSCD)

__all__ = [
    "DISTILL_LOSSES", "SLOT_NAMES", "DistillLoss", "KDBatch", "check_para", "register_loss", "Distiller",
    "MLD", "PS", "LED", "RKD", "PKT", "mld_loss", "ps_loss", "led_loss", "rd", "class_distance",
    "instance_distance", "rkd", "rkd_distance", "rkd_angle", "pkt",
    "HARD_LOSSES", "bce", "asl", "build_hard_loss",
]
