"""``mlkd-cache demo``: the stages that exist, end to end on the embedded digits data.

Trains the teacher and a student of the same recipe without distillation (the baseline every
KD result is measured against) from one digits config, and returns one row per model. Finished
runs in ``out`` are reused, interrupted ones resumed, so the demo can be run again cheaply.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from ..config import Config
from .checkpoint import MetricsLog, load_checkpoint
from .train import ROLES, Trainer

DEFAULT_CONFIG = "digits/resnet10t_to_test_resnet_l2d.py"


def _train_or_reuse(cfg: Config, role: str, out: Path, progress: bool) -> Dict[str, Any]:
    final = out / f"{ROLES[role]}.pt"
    if final.is_file():
        ckpt = load_checkpoint(final)
        metrics, reused = dict(ckpt.get("metrics") or {}), True
    else:
        resume = (out / "checkpoint.pt").is_file()
        metrics, reused = Trainer(cfg, role, out, resume=resume, progress=progress).fit()["metrics"], False
    rows = MetricsLog(out / "metrics.jsonl").read()
    seconds = sum(r.get("train_time_s", 0.0) + r.get("eval_time_s", 0.0) for r in rows)
    return {"metrics": metrics, "wall_time_s": seconds, "checkpoint": str(final), "reused": reused, "epochs": len(rows)}


def run(cfg: Config, out: Path, progress: bool = True) -> List[Dict[str, Any]]:
    """Teacher and vanilla student of ``cfg`` under ``out/teacher`` and ``out/student-vanilla``."""
    out = Path(out)
    teacher = _train_or_reuse(cfg, "t", out / "teacher", progress)
    student = _train_or_reuse(cfg, "s", out / "student-vanilla", progress)
    return [
        {"model": f"teacher {cfg.model_t}", "loss": cfg.loss_t.upper(), **teacher},
        {"model": f"student {cfg.model_s}", "loss": f"{cfg.loss_s.upper()} (no KD)", **student},
    ]
