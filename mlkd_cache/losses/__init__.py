"""Losses: hard-label losses (BCE, ASL) and distillation losses behind ``DISTILL_LOSSES``.

Importing this package registers every distillation loss: ``MLD``, ``PS`` (logits), ``LED``,
``MPSCD`` (label embeddings), ``RKD``, ``PKT`` (features).
"""

from . import feature, led, mld, mpscd, ps  # noqa: F401  (registration)
from .base import DISTILL_LOSSES, SLOTS, DistillLoss, KDBatch, check_para, losses_by_slot, register_loss, slot_of
from .distiller import Distiller
from .feature import PKT, RKD, pkt, rkd, rkd_angle, rkd_distance
from .hard import HARD_LOSSES, asl, bce, build_hard_loss
from .led import LED, class_distance, instance_distance, rd
from .led import led as led_loss
from .mld import MLD
from .mld import mld as mld_loss
from .mpscd import MPSCD
from .ps import PS
from .ps import ps as ps_loss

__all__ = [
    "DISTILL_LOSSES",
    "SLOTS",
    "losses_by_slot",
    "slot_of",
    "DistillLoss",
    "KDBatch",
    "check_para",
    "register_loss",
    "Distiller",
    "MLD",
    "PS",
    "LED",
    "MPSCD",
    "RKD",
    "PKT",
    "mld_loss",
    "ps_loss",
    "led_loss",
    "rd",
    "class_distance",
    "instance_distance",
    "rkd",
    "rkd_distance",
    "rkd_angle",
    "pkt",
    "HARD_LOSSES",
    "bce",
    "asl",
    "build_hard_loss",
]
