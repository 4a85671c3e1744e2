"""Stage 1: ``teacher-train``. Trains ``model_t`` with the hard-label loss and writes
``OUT/teacher.pt``: a model card and weights, everything ``dump-targets`` needs to rebuild the
teacher and its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..config import Config
from ..distributed import agree, init_distributed
from ..errors import ConfigError
from ..runtime.checkpoint import load_checkpoint
from ..runtime.runlog import RunFiles
from ..runtime.train import Trainer

__all__ = ["run"]


def run(cfg: Config, out: Path, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train the teacher into ``out``; with ``teacher_pretrained = True`` (L2D's meaning: the
    teacher is already trained) only check that ``out/teacher.pt`` is there and report it."""
    files = RunFiles(Path(out), "teacher")
    if cfg.teacher_pretrained:  # rank 0 alone reads the run folder, as it alone writes it
        info = init_distributed()

        def trained() -> Dict[str, Any]:
            if not info.is_main:
                return {}
            if not files.final.is_file():
                raise ConfigError(
                    f"config sets teacher_pretrained = True (teacher already trained) but {files.final} does not "
                    f"exist; set teacher_pretrained = False to train it"
                )
            return load_checkpoint(files.final)

        ckpt = agree(info, trained)
        return {
            "epochs": int(ckpt.get("epoch", 0)),
            "metrics": dict(ckpt.get("metrics") or {}),
            "final": str(files.final),
            "metrics_log": str(files.metrics),
            "wall_time_s": 0.0,
            "is_main": info.is_main,
            "skipped": True,
        }
    return Trainer(cfg, "t", out, resume=resume, progress=progress).fit()
