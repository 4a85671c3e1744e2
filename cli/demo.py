"""``mlkd-cache demo``: run the three stages on the embedded digits data and print a results table."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, List

import click

from ..config import load_config, parse_override
from ..engine import demo as demo_engine
from ..engine import plot as plot_engine
from ..errors import ConfigError
from .common import CONTEXT_SETTINGS, human_size

EPILOG = """\b
Examples:
  mlkd-cache demo
  mlkd-cache demo --seeds 3                      # students repeated with 3 seeds: mean ± std
  mlkd-cache demo --out /tmp/demo --students vanilla,l2d --set max_epoch_s=4
"""

METRICS = (("mAP", "mAP"), ("OF1", "OF1_topk"), ("CF1", "CF1_topk"))


def _mean_std(values: List[float], width: int) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values):5.2f}"
    return f"{values[0]:{width}.2f}"


def _versus_no_kd(group: List[Dict[str, Any]], baseline: Dict[int, float]) -> str:
    """Paired test-mAP difference to the no-KD student of the same seed, and on how many seeds
    the recipe beat it."""
    diffs = [r["metrics"]["mAP"] - baseline[r["seed"]] for r in group if r["seed"] in baseline]
    if not diffs:
        return "—"
    wins = sum(d > 0 for d in diffs)
    spread = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
    return f"{statistics.mean(diffs):+.2f}{spread}, beat on {wins}/{len(diffs)}"


def _table(rows: List[Dict[str, Any]], seeds: int, split: str = "test") -> List[str]:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["recipe"], []).append(row)
    teacher_map = groups["teacher"][0]["metrics"].get("mAP", float("nan"))
    baseline = {r["seed"]: r["metrics"]["mAP"] for r in groups.get("vanilla", [])}
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
        versus = "" if recipe in ("teacher", "vanilla") else _versus_no_kd(group, baseline)
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


@click.command("demo", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    help="output folder (finished runs in it are reused)",
)
@click.option(
    "--config", "-c", "config_path", default=demo_engine.DEFAULT_CONFIG, help="digits config (a file or a shipped name)"
)
@click.option(
    "--seeds", type=click.IntRange(min=1), default=1, help="train every student with this many seeds and report mean ± std"
)
@click.option("--students", default=",".join(demo_engine.DEFAULT_STUDENTS), help="student recipes to train, comma-separated")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="override any config key (repeatable)")
@click.option("--no-progress", is_flag=True, help="hide progress bars")
def demo(out, config_path, seeds, students, settings, no_progress) -> None:
    """Train the digits teacher, dump its targets, train students without KD and with MLD, L2D
    (MLD + LED) and MPSCD from the cache; print test mAP, OF1, CF1 (L2D top-k protocol) and
    the wall time of each; draw every run's training curves into OUT/plot.png when matplotlib
    is installed."""
    recipes = [s.strip() for s in students.split(",") if s.strip()]
    if not recipes:
        raise ConfigError(f"--students: no recipe given; choose from {', '.join(demo_engine.DEFAULT_STUDENTS)}")
    cfg = load_config(config_path, settings=dict(parse_override(s) for s in settings))
    result = demo_engine.run(cfg, out, progress=not no_progress, seeds=seeds, students=recipes)
    rows = result["rows"]
    per_seed = f", students over {seeds} seeds (mean ± std)" if seeds > 1 else ""
    click.echo(f"\ndigits {cfg.eval_split} split ({cfg.source}){per_seed}; metrics in %, OF1/CF1 under L2D's top-k protocol")
    for line in _table(rows, seeds, cfg.eval_split):
        click.echo(line)
    click.echo(
        "vs teacher: student mAP - teacher mAP; vs no KD: mAP - the no-KD student's of the same seed "
        "(mean ± std over seeds), and on how many seeds it was higher. One seed is no verdict: seed-to-seed "
        "noise and the 3-seed study are in docs/results.md"
    )
    cache = result["cache"]
    cache_note = "reused" if cache["reused"] else f"{cache['seconds']:.1f}s, {human_size(cache['bytes'])}"
    click.echo("\nartefacts:")
    click.echo(f"  cache: {cache['out']} ({cache_note})")
    for row in rows:
        note = " (reused)" if row["reused"] else ""
        click.echo(f"  {row['model']} {row['loss']}, seed {row['seed']}: {row['checkpoint']}{note}")
    click.echo(f"  metrics per epoch: {out}/**/metrics.jsonl")
    if result["plot"] is not None:
        click.echo(f"  training curves: {result['plot']}")
    else:
        click.echo(f"  training curves: not drawn; {plot_engine.INSTALL_HINT}")
