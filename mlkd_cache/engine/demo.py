"""``mlkd-cache demo``: all three stages end to end on the embedded digits data.

Trains the teacher, dumps its targets once, then trains students of one recipe from the cache:
without distillation (the baseline every KD result is measured against), with MLD, with L2D
(MLD + LED) and with MLD + MPSCD. Returns one row per model. Finished runs in ``out`` are
reused and interrupted ones resumed, so the demo can be run again cheaply; ``seeds > 1``
repeats the students with student seeds ``seed, seed+1, ...`` (same teacher and cache).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..cache.format import MANIFEST_NAME
from ..config import Config
from ..errors import ConfigError
from . import dump, plot
from .checkpoint import load_checkpoint
from .distill import DistillTrainer, NoKDTrainer
from .recipes import RECIPES, student_config
from .runlog import MetricsLog
from .train import Trainer

DEFAULT_CONFIG = "digits/resnet10t_to_test_resnet_l2d.py"

DEFAULT_STUDENTS = tuple(RECIPES)  # every recipe, in the order of the table


def _train_or_reuse(make: Callable[[bool], Trainer], out: Path, final_name: str, cfg: Config) -> Dict[str, Any]:
    final = out / final_name
    if final.is_file():
        ckpt = load_checkpoint(final)
        if ckpt.get("config") != cfg.to_dict():
            raise ConfigError(
                f"{out} holds a finished run of another config (or of an older version); delete it or choose another --out"
            )
        metrics, reused = dict(ckpt.get("metrics") or {}), True
    else:
        metrics, reused = make((out / "checkpoint.pt").is_file()).fit()["metrics"], False
    rows = MetricsLog(out / "metrics.jsonl").read()
    seconds = sum(r.get("train_time_s", 0.0) + r.get("eval_time_s", 0.0) for r in rows)  # survives resumes and reuse
    return {"metrics": metrics, "wall_time_s": seconds, "checkpoint": str(final), "reused": reused, "epochs": len(rows)}


def _dump_or_reuse(cfg: Config, teacher: Path, out: Path, progress: bool) -> Dict[str, Any]:
    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        return {"out": str(out), "seconds": 0.0, "reused": True}
    started = time.perf_counter()
    result = dump.run(cfg, teacher, out, progress=progress)  # skips shards a killed run completed
    return {"out": str(out), "seconds": time.perf_counter() - started, "reused": False, "bytes": result.get("total_bytes")}


def write_curves(out: Path, run_dirs: Sequence[Path], title: Optional[str] = None) -> Optional[Path]:
    """Draw the training curves of ``run_dirs`` into ``out/plot.png``; ``None`` (nothing drawn)
    when matplotlib is not installed: the demo does not need it."""
    if not plot.matplotlib_available():
        return None
    return plot.plot_runs(run_dirs, Path(out) / plot.DEFAULT_NAME, title=title)


def run(
    cfg: Config,
    out: Path,
    progress: bool = True,
    seeds: int = 1,
    students: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Teacher in ``out/teacher``, cache in ``out/cache``, students in ``out/student-<recipe>``
    (``out/seed<k>/student-<recipe>`` for the extra seeds). Returns ``{"teacher", "cache",
    "rows", "plot"}``; rows carry model, loss, recipe, seed, metrics, wall_time_s, checkpoint,
    reused; ``plot`` is ``out/plot.png`` with the curves of every run, or ``None`` without matplotlib."""
    out = Path(out)
    recipes = list(DEFAULT_STUDENTS if students is None else students)
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ConfigError(f"--students: unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    teacher_out = out / "teacher"
    teacher = _train_or_reuse(
        lambda resume: Trainer(cfg, "t", teacher_out, resume=resume, progress=progress), teacher_out, "teacher.pt", cfg
    )
    teacher_file = Path(teacher["checkpoint"])
    cache = _dump_or_reuse(cfg, teacher_file, out / "cache", progress)
    rows = [{"model": f"teacher {cfg.model_t}", "loss": cfg.loss_t.upper(), "recipe": "teacher", "seed": cfg.seed, **teacher}]
    for k in range(seeds):
        seed = cfg.seed + k
        home = out if k == 0 else out / f"seed{seed}"
        for recipe in recipes:
            scfg = student_config(cfg, recipe, seed)
            run_out = home / f"student-{recipe}"
            make: Callable[..., Trainer]
            if not RECIPES[recipe].distils:  # what distill-student --no-kd runs
                make = lambda resume, c=scfg, o=run_out: NoKDTrainer(c, o, resume=resume, progress=progress)  # noqa: E731
            else:
                make = lambda resume, c=scfg, o=run_out: DistillTrainer(  # noqa: E731
                    c, o, cache=out / "cache", resume=resume, progress=progress
                )
            result = _train_or_reuse(make, run_out, "student.pt", scfg)
            rows.append(
                {"model": f"student {cfg.model_s}", "loss": RECIPES[recipe].label, "recipe": recipe, "seed": seed, **result}
            )
    title = f"{cfg.dataset} demo: teacher {cfg.model_t}, students {cfg.model_s}"
    curves = write_curves(out, [Path(row["checkpoint"]).parent for row in rows], title)
    return {"teacher": teacher, "cache": cache, "rows": rows, "plot": None if curves is None else str(curves)}
