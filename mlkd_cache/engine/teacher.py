"""Stage 1: ``teacher-train``. Trains ``model_t`` with the hard-label loss and writes
``OUT/teacher.pt`` - everything ``dump-targets`` needs to rebuild the teacher and its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..config import Config
from ..errors import ConfigError
from .checkpoint import load_checkpoint
from .train import Trainer


def run(cfg: Config, out: Path, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train the teacher into ``out``; with ``teacher_pretrained = True`` (L2D's meaning: the
    teacher is already trained) only check that ``out/teacher.pt`` is there and report it."""
    out = Path(out)
    if cfg.teacher_pretrained:
        final = out / "teacher.pt"
        if not final.is_file():
            raise ConfigError(
                f"config sets teacher_pretrained = True (teacher already trained) but {final} does not "
                f"exist; set teacher_pretrained = False to train it"
            )
        ckpt = load_checkpoint(final)
        return {
            "epochs": int(ckpt.get("epoch", 0)),
            "metrics": dict(ckpt.get("metrics") or {}),
            "final": str(final),
            "metrics_log": str(out / "metrics.jsonl"),
            "wall_time_s": 0.0,
            "is_main": True,
            "skipped": True,
        }
    return Trainer(cfg, "t", out, resume=resume, progress=progress).fit()
