"""``sweep``: tune a student from one cache. Each trial is the ``distill-student`` run of the
config with the trial's values (:mod:`~mlkd_cache.runtime.search_space`), in the regime given
(the cache, ``--no-kd``, or a live teacher), with the config's budget, scored on val; optuna's
TPE proposes, its median pruner stops the hopeless, and the study lives in a storage that
several workers, processes or machines share (:mod:`~mlkd_cache.runtime.sweep`).

:func:`run` checks everything a trial needs before the first one (the val split, the space, the
caches' checksums, the output folder), runs the workers and returns the summary
(:func:`~mlkd_cache.runtime.sweep.summary`); OUT then holds ``sweep.db`` (the default storage),
``trials/NNNN/`` (each trial's run folder), ``sweep.json``, ``best.py`` and the plots.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from ..config import VAL_SPLIT_HINT, Config
from ..data import has_split
from ..distributed import init_distributed
from ..errors import ConfigError, MlkdError, require_module
from ..fileio import file_sha256
from ..runtime.regimes import Regime
from ..runtime.search_space import build_space
from ..runtime.sweep import (
    STUDY_MARKER,
    SweepPlan,
    forget_if_empty,
    open_study,
    run_workers,
    save_plots,
    short_names,
    storage_url,
    summary,
)
from ..runtime.targets import open_cache_on_ranks
from ..thresholds import TUNING_SPLIT

__all__ = ["run", "default_study_name"]


def default_study_name(cfg: Config, regime: Regime) -> str:
    """``<config file stem>-<mode>`` (``resnet10t_to_test_resnet_l2d-offline``)."""
    stem = Path(cfg.source).stem if cfg.source else "config"
    return f"{stem}-{regime.mode}"


def _claim_out(plan: SweepPlan) -> None:
    """OUT is new, empty, or the folder of this very study (``study.json``: its name and storage);
    a folder of other files or of another study is refused in one line. Claims a new one."""
    out, marker = plan.out, plan.out / STUDY_MARKER
    mine = {"study": plan.study_name, "storage": plan.storage}
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out} is a file; give a folder for the sweep")
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get("study") != plan.study_name:
            raise ConfigError(
                f"-o {out} holds the sweep of study {recorded.get('study')!r}, not {plan.study_name!r}; give another -o "
                f"(each study keeps its own trials/, best.py and plots)"
            )
        return
    held = sorted(p.name for p in out.iterdir() if not p.name.endswith(".tmp")) if out.is_dir() else []
    if held:  # (a .tmp file: another worker of the array writing its marker)
        raise ConfigError(f"-o {out} holds {held[0]!r} and no sweep; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{STUDY_MARKER}.{os.getpid()}.tmp"  # workers of an array may start at once: whole or absent
    tmp.write_text(json.dumps(mine) + "\n")
    os.replace(tmp, marker)


def _sources(regime: Regime) -> Tuple[str, ...]:
    """What the trials learn from, by content: each cache's manifest sha256 (every file's checksum
    checked here once; the trials skip it) and a live teacher's file sha256 (a factory: its name)."""
    info = init_distributed()
    sources = [open_cache_on_ranks(directory, True, info).manifest_sha256 for directory in regime.caches]
    if regime.teacher is not None:
        path = Path(str(regime.teacher))
        sources.append(file_sha256(path) if path.is_file() else str(regime.teacher))
    return tuple(sources)


def run(
    cfg: Config,
    out: Path,
    regime: Regime,
    trials: int = 20,
    jobs: int = 1,
    storage: Optional[str] = None,
    study_name: Optional[str] = None,
    space: Sequence[Tuple[str, str]] = (),
    metric: str = "mAP",
    pruner: str = "median",
    plots: bool = True,
) -> Dict[str, Any]:
    """Run (or go on with) the sweep of ``cfg`` under ``regime`` in ``out`` until the study holds
    ``trials`` counted trials; ``jobs`` local workers. Returns :func:`~mlkd_cache.runtime.sweep.summary`
    with ``plots`` (the PNG files written). A sweep whose first trials all stopped on an error
    leaves no study behind: fix the cause and run it again."""
    require_module("optuna", "mlkd-cache sweep")
    if trials < 1 or jobs < 1:
        raise ConfigError(f"--trials and --jobs must be >= 1, got {trials} and {jobs}")
    if init_distributed().enabled:
        raise ConfigError("sweep starts its own workers (--jobs); run it without torchrun")
    if not has_split(cfg, TUNING_SPLIT):
        raise ConfigError(
            f"sweep scores its trials on the {TUNING_SPLIT} split, which dataset {cfg.dataset} has not here; "
            f"carve one from train with {VAL_SPLIT_HINT} in the config"
        )
    cfg = cfg.replace(eval_split=TUNING_SPLIT)  # trials are scored on val; test is never scored
    plan = SweepPlan(
        cfg=cfg,
        regime=regime,
        space=build_space(cfg, space, no_kd=regime.no_kd),
        metric=metric,
        trials=trials,
        pruner=pruner,
        out=Path(out),
        storage=storage_url(Path(out), storage),
        study_name=study_name or default_study_name(cfg, regime),
        sources=_sources(regime),
    )
    _claim_out(plan)
    try:
        run_workers(plan, jobs)
    except MlkdError:
        forget_if_empty(plan)
        raise
    study = open_study(plan)
    result = summary(plan, study)
    result["plots"] = [str(p) for p in save_plots(plan, study)] if plots else []
    return result


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render(result: Dict[str, Any]) -> str:
    """The summary as text: a header, the trials best first, the best trial's config and the
    command that trains it again, the importances and the plots."""
    states = ", ".join(f"{n} {s}" for s, n in result["states"].items() if n)
    lines = [f"study {result['study']} ({result['storage']}): {result['trials_asked']} trials asked; {states}"]
    keys = list(result["space"])
    names = short_names(keys)
    header = ["rank", "trial", "state", result["metric"], "epochs", *(names[k] for k in keys), "time"]
    rows = [header]
    for rank, r in enumerate(result["trials"], 1):
        value = "" if r["value"] is None else f"{r['value']:.2f}"
        time_s = "" if r["wall_s"] is None else f"{r['wall_s']:.0f}s"
        state = r["state"] + (f" (retry of {r['retry_of']})" if r["retry_of"] is not None else "")
        rows.append(
            [
                str(rank),
                str(r["number"]),
                state,
                value,
                str(r["epochs"]),
                *(_number(r["params"].get(k, "")) for k in keys),
                time_s,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    failures = [r for r in result["trials"] if r["failure"]]
    lines += [f"trial {r['number']} failed: {r['failure']}" for r in failures]
    best = result["best"]
    if best is None:
        lines.append("no trial is complete yet: run the same command again to go on")
    else:
        lines.append(
            f"best: trial {best['number']}, {result['metric']} {best['value']:.2f} -> {best['config']} (its header has the command that trains it again)"
        )
    if result["importances"]:
        lines.append("importance (fANOVA): " + ", ".join(f"{names.get(k, k)} {v:.2f}" for k, v in result["importances"].items()))
    if result.get("plots"):
        lines.append("plots: " + ", ".join(result["plots"]))
    return "\n".join(lines)
