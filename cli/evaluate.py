"""``mlkd-cache evaluate``: score any checkpoint on its dataset's test split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..metrics import format_metrics
from .common import CONTEXT_SETTINGS

EPILOG = """\b
Examples:
  mlkd-cache evaluate runs/digits/teacher.pt
  mlkd-cache evaluate runs/voc/student.pt --data-root /data/voc --per-class
  mlkd-cache evaluate runs/digits/teacher.pt --json > scores.json
"""


@click.command("evaluate", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-root", default=None, help="dataset folder, if not where the checkpoint was trained")
@click.option("--split", default="test", help="split to score: test, train, or another split the dataset has (digits: val)")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="batch size  [default: the checkpoint's]")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers  [default: the checkpoint's]")
@click.option("--per-class", is_flag=True, help="also print the AP of every class")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def evaluate(checkpoint, data_root, split, batch_size, workers, per_class, as_json) -> None:
    """mAP, and OF1/CF1 under L2D's top-k protocol and at threshold 0.5 (and at its own per-class
    thresholds, once tune-thresholds stored some), of CHECKPOINT."""
    from ..commands import evaluate as evaluate_cmd  # imported on use: --help and --version stay free of torch

    result = evaluate_cmd.run(checkpoint, data_root=data_root, batch_size=batch_size, workers=workers, split=split)
    if not result.pop("is_main"):
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{checkpoint} on {split} ({result['samples']} images): {format_metrics(result['metrics'])}")
    tuned = result.get("thresholds")
    if tuned is not None:
        same = " (the split scored here: optimistic)" if tuned.get("split") == split else ""
        click.echo(f"  tuned: its {tuned.get('objective')} thresholds from the {tuned.get('split')} split{same}")
    if per_class:
        width = max(len(name) for name in result["per_class_ap"])
        for name, ap in result["per_class_ap"].items():
            click.echo(f"  {name:<{width}}  AP {ap:6.2f}")
