"""``mlkd-cache tune-thresholds``: choose per-class decision thresholds on a labelled split and
store them in the model's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..commands import tune_thresholds as thresholds_cmd
from ..thresholds import DEFAULT_OBJECTIVE, OBJECTIVES, objective_forms
from .common import CONTEXT_SETTINGS

OBJECTIVE_LINES = "\n".join(
    f"  {kind if o.target is None else f'{kind}={o.target}':<12} {o.means}" for kind, o in OBJECTIVES.items()
)

EPILOG = f"""\b
Examples:
  mlkd-cache tune-thresholds runs/digits/student.pt
  mlkd-cache tune-thresholds runs/digits/student.pt --objective precision=0.9
  mlkd-cache tune-thresholds runs/voc/student.pt --split train --data-root /data/voc --json

\b
Objectives:
{OBJECTIVE_LINES}
A class the split cannot tune (no positive in it, or a target no threshold reaches) gets one
global threshold, the one that maximises OF1 over all classes on the same split.
Tune on a split of its own ({thresholds_cmd.TUNING_SPLIT}): thresholds tuned on test leak it into the scores
you report, and on train they are optimistic.
"""


@click.command("tune-thresholds", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--split",
    default=None,
    help=f"labelled split to tune on  [default: {thresholds_cmd.TUNING_SPLIT}, where the dataset has one]",
)
@click.option("--objective", default=DEFAULT_OBJECTIVE, help=f"what each threshold maximises: {objective_forms()}")
@click.option("--data-root", default=None, help="dataset folder, if not where the model was trained")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="batch size  [default: the model's]")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers  [default: the model's]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def tune_thresholds(model, split, objective, data_root, batch_size, workers, as_json) -> None:
    """Choose a decision threshold per class of MODEL (a student.pt or teacher.pt) on a labelled
    split and store them in MODEL; predict and evaluate then use them."""
    result = thresholds_cmd.tune(
        model, split=split, objective=objective, data_root=data_root, batch_size=batch_size, workers=workers
    )
    if not result.pop("is_main"):
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    stored, before, after = result["thresholds"], result["at_0.5"], result["at_tuned"]
    fallback = stored["fallback"]
    click.echo(f"stored {stored['objective']} thresholds tuned on {result['split']} ({result['samples']} images) in {model}")
    listed = ", ".join(f"{name} ({why})" for name, why in fallback.items())
    click.echo(
        f"{len(fallback)} of {len(stored['values'])} classes fell back to the global threshold {stored['global']:.4f}"
        + (f": {listed}" if fallback else "")
    )
    click.echo(
        f"{result['split']} OF1 {before['OF1']:.1f} -> {after['OF1']:.1f}, CF1 {before['CF1']:.1f} -> {after['CF1']:.1f} "
        f"(at 0.5 -> at the new thresholds)"
    )
