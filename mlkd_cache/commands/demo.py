"""``mlkd-cache demo``: all three stages end to end on the embedded digits data.

Trains the teacher, dumps its targets once, then trains students of one recipe from the cache:
without distillation (the baseline every KD result is measured against), with MLD, with L2D
(MLD + LED) and with MLD + MPSCD. Returns one row per model, which :func:`results_table`
lays out. Finished runs in ``out`` are reused and interrupted ones resumed, so the demo can be
run again cheaply; ``seeds > 1`` repeats the students with student seeds ``seed, seed+1, ...``
(same teacher and cache).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..cache.format import MANIFEST_NAME
from ..config import Config
from ..errors import ConfigError
from ..runtime.checkpoint import load_checkpoint, read_card
from ..runtime.recipes import DEMO_CONFIG, NO_KD, RECIPES, recipe_fields, student_config
from ..runtime.runlog import MetricsLog, RunFiles
from ..runtime.students import DistillTrainer, NoKDTrainer
from ..runtime.train import Trainer
from ..stats import paired, summarise
from . import dump_targets as dump
from . import plot

DEFAULT_CONFIG = DEMO_CONFIG

DEFAULT_STUDENTS = tuple(RECIPES)  # every recipe, in the order of the table

METRICS = (("mAP", "mAP"), ("OF1", "OF1_topk"), ("CF1", "CF1_topk"))  # (column, metrics key) of the table


def parse_students(text: str) -> List[str]:
    """``--students``: comma-separated recipe names, in order; ``ConfigError`` for none or an unknown one."""
    recipes = [s.strip() for s in text.split(",") if s.strip()]
    if not recipes:
        raise ConfigError(f"--students: no recipe given; choose from {', '.join(RECIPES)}")
    _check_recipes(recipes)
    return recipes


def _check_recipes(recipes: Sequence[str]) -> None:
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ConfigError(f"--students: unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")


def _train_or_reuse(make: Callable[[bool], Trainer], files: RunFiles, cfg: Config) -> Dict[str, Any]:
    """The run in ``files.out``: reused when finished with ``cfg``, else trained (resumed when
    it has a checkpoint)."""
    if files.final.is_file():
        ckpt = load_checkpoint(files.final)
        if read_card(ckpt, files.final).config != cfg.to_dict():
            raise ConfigError(
                f"{files.out} holds a finished run of another config (or of an older version); delete it or choose another --out"
            )
        metrics, reused = dict(ckpt.get("metrics") or {}), True
    else:
        metrics, reused = make(files.checkpoint.is_file()).fit()["metrics"], False
    rows = MetricsLog(files.metrics).read()
    seconds = sum(r.get("train_time_s", 0.0) + r.get("eval_time_s", 0.0) for r in rows)  # survives resumes and reuse
    return {"metrics": metrics, "wall_time_s": seconds, "checkpoint": str(files.final), "reused": reused, "epochs": len(rows)}


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
    _check_recipes(recipes)
    teacher_out = out / "teacher"
    teacher = _train_or_reuse(
        lambda resume: Trainer(cfg, "t", teacher_out, resume=resume, progress=progress), RunFiles(teacher_out, "teacher"), cfg
    )
    teacher_file = Path(teacher["checkpoint"])
    cache = _dump_or_reuse(cfg.replace(cache={"fields": recipe_fields(cfg)}), teacher_file, out / "cache", progress)
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
            result = _train_or_reuse(make, RunFiles(run_out, "student"), scfg)
            rows.append(
                {"model": f"student {cfg.model_s}", "loss": RECIPES[recipe].label, "recipe": recipe, "seed": seed, **result}
            )
    title = f"{cfg.dataset} demo: teacher {cfg.model_t}, students {cfg.model_s}"
    curves = write_curves(out, [Path(row["checkpoint"]).parent for row in rows], title)
    return {"teacher": teacher, "cache": cache, "rows": rows, "plot": None if curves is None else str(curves)}


def _mean_std(values: List[float], width: int) -> str:
    if len(values) > 1:
        s = summarise(values)
        return f"{s['mean']:6.2f} ± {s['std']:5.2f}"
    return f"{values[0]:{width}.2f}"


def _versus_no_kd(group: List[Dict[str, Any]], baseline: Dict[int, float]) -> str:
    """Paired test-mAP difference to the no-KD student of the same seed, and on how many seeds
    the recipe beat it."""
    mine = {r["seed"]: r["metrics"]["mAP"] for r in group if r["seed"] in baseline}
    if not mine:
        return "—"
    d = paired(mine, {seed: baseline[seed] for seed in mine})
    wins = sum(x > 0 for x in d["per_seed"])
    spread = f" ± {d['std']:.2f}" if len(mine) > 1 else ""
    return f"{d['mean']:+.2f}{spread}, beat on {wins}/{len(mine)}"


def results_table(rows: List[Dict[str, Any]], seeds: int, split: str = "test") -> List[str]:
    """The lines of the demo's table from the rows of :func:`run`: per recipe, mAP, OF1 and CF1
    (mean ± std over seeds), the mAP gap to the teacher, the paired mAP difference to the
    no-KD student and the wall time; with ``seeds > 1``, then each recipe's mAP per seed."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["recipe"], []).append(row)
    teacher_map = groups["teacher"][0]["metrics"].get("mAP", float("nan"))
    baseline = {r["seed"]: r["metrics"]["mAP"] for r in groups.get(NO_KD, [])}
    width = 14 if seeds > 1 else 6
    header = (
        f"{'model':<24} {'loss':<18} "
        + " ".join(f"{name:>{width}}" for name, _ in METRICS)
        + f" {'vs teacher':>10} {'vs no KD (paired)':>26} {'time':>8}"
    )
    lines = [header, "-" * len(header)]
    for recipe, group in groups.items():
        cells = [_mean_std([r["metrics"].get(key, float("nan")) for r in group], width) for _, key in METRICS]
        gap = statistics.mean(r["metrics"].get("mAP", float("nan")) for r in group) - teacher_map
        gap_cell = "" if recipe == "teacher" else f"{gap:+.2f}"
        versus = "" if recipe in ("teacher", NO_KD) else _versus_no_kd(group, baseline)
        seconds = statistics.mean(r["wall_time_s"] for r in group)
        lines.append(
            f"{group[0]['model']:<24} {group[0]['loss']:<18} " + " ".join(cells) + f" {gap_cell:>10} {versus:>26} {seconds:7.1f}s"
        )
    if seeds > 1:  # the values behind each mean, so that paired differences can be read off
        lines.append("")
        for group in groups.values():
            if len(group) > 1:
                per_seed = " / ".join(f"{r['metrics'].get('mAP', float('nan')):.2f}" for r in group)
                seed_list = ", ".join(str(r["seed"]) for r in group)
                lines.append(f"{split} mAP per seed ({seed_list}), {group[0]['loss']}: {per_seed}")
    return lines
