"""``mlkd-cache demo``: run the stages on the embedded digits data and print a results table."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import load_config, parse_override
from ..engine import demo as demo_engine
from .common import CONTEXT_SETTINGS

EPILOG = """\b
Examples:
  mlkd-cache demo
  mlkd-cache demo --out /tmp/demo --set max_epoch_t=3 --set max_epoch_s=3
"""


@click.command("demo", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), help="output folder (finished runs in it are reused)")
@click.option("--config", "-c", "config_path", default=demo_engine.DEFAULT_CONFIG, help="digits config (a file or a shipped name)")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="override any config key (repeatable)")
@click.option("--no-progress", is_flag=True, help="hide progress bars")
def demo(out, config_path, settings, no_progress) -> None:
    """Train the digits teacher and a same-recipe student without KD; print test mAP, OF1,
    CF1 (L2D top-k protocol) and wall time of each."""
    cfg = load_config(config_path, dict(parse_override(s) for s in settings))
    rows = demo_engine.run(cfg, out, progress=not no_progress)
    header = f"{'model':<28} {'loss':<16} {'mAP':>6} {'OF1':>6} {'CF1':>6} {'time':>8}"
    click.echo(f"\ndigits test split ({cfg.source}), metrics in %, OF1/CF1 under L2D's top-k protocol")
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        m = row["metrics"]
        click.echo(
            f"{row['model']:<28} {row['loss']:<16} {m.get('mAP', float('nan')):6.2f} "
            f"{m.get('OF1_topk', float('nan')):6.2f} {m.get('CF1_topk', float('nan')):6.2f} "
            f"{row['wall_time_s']:7.1f}s"
        )
    click.echo("\nartefacts:")
    for row in rows:
        note = " (reused)" if row["reused"] else ""
        click.echo(f"  {row['model']}: {row['checkpoint']}{note}")
    click.echo(f"  metrics per epoch: {out}/*/metrics.jsonl")
