"""``mlkd-cache demo``: run the three stages on the embedded digits data and print a results table."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import load_config, parse_override
from ..runtime.recipes import DEMO_CONFIG, RECIPES
from .common import CONTEXT_SETTINGS, human_size

EPILOG = """\b
Examples:
  mlkd-cache demo
  mlkd-cache demo --seeds 3                      # students repeated with 3 seeds: mean ± std
  mlkd-cache demo --out /tmp/demo --students no-kd,l2d --set max_epoch_s=4
"""


@click.command("demo", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    help="output folder (finished runs in it are reused)",
)
@click.option("--config", "-c", "config_path", default=DEMO_CONFIG, help="digits config (a file or a shipped name)")
@click.option(
    "--seeds", type=click.IntRange(min=1), default=1, help="train every student with this many seeds and report mean ± std"
)
@click.option("--students", default=",".join(RECIPES), help="student recipes to train, comma-separated")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="override any config key (repeatable)")
@click.option("--no-progress", is_flag=True, help="hide progress bars")
def demo(out, config_path, seeds, students, settings, no_progress) -> None:
    """Train the digits teacher, dump its targets, train students without KD and with MLD, L2D
    (MLD + LED) and MPSCD from the cache; print test mAP, OF1, CF1 (L2D top-k protocol) and
    the wall time of each; draw every run's training curves into OUT/plot.png when matplotlib
    is installed."""
    from ..commands import demo as demo_cmd  # imported on use: --help and --version stay free of torch
    from ..commands import plot as plot_cmd

    recipes = demo_cmd.parse_students(students)
    cfg = load_config(config_path, settings=dict(parse_override(s) for s in settings))
    result = demo_cmd.run(cfg, out, progress=not no_progress, seeds=seeds, students=recipes)
    rows = result["rows"]
    per_seed = f", students over {seeds} seeds (mean ± std)" if seeds > 1 else ""
    click.echo(f"\ndigits {cfg.eval_split} split ({cfg.source}){per_seed}; metrics in %, OF1/CF1 under L2D's top-k protocol")
    for line in demo_cmd.results_table(rows, seeds, cfg.eval_split):
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
        click.echo(f"  training curves: not drawn; {plot_cmd.INSTALL_HINT}")
