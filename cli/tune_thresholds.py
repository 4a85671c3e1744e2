"""``mlkd-cache tune-thresholds``: choose per-class decision thresholds on a labelled split and
store them in the model's checkpoint, or in a copy of it (``-o``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..thresholds import DEFAULT_OBJECTIVE, OBJECTIVES, TUNING_SPLIT, UNTUNED, objective_forms, parse_objective
from .common import CONTEXT_SETTINGS, output_options

OBJECTIVE_LINES = "\n".join(
    f"  {kind if o.target is None else f'{kind}={o.target}':<12} {o.means}" for kind, o in OBJECTIVES.items()
)

EPILOG = f"""\b
Examples:
  mlkd-cache tune-thresholds runs/digits/student.pt
  mlkd-cache tune-thresholds runs/digits/student.pt --objective precision=0.9 -o runs/digits/student-p90.pt
  mlkd-cache tune-thresholds runs/voc/student.pt --split train --data-root /data/voc --json

\b
Objectives:
{OBJECTIVE_LINES}
A class that reaches a precision target at no threshold gets the threshold of its highest
precision; a class without a positive in the split gets the threshold that maximises OF1 over
all classes, kept at or above {UNTUNED:g} for a precision target and at or below it for a recall target.
Tune on a split of its own ({TUNING_SPLIT}): thresholds tuned on test leak it into the scores
you report, and on train they are optimistic.
"""


@click.command("tune-thresholds", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--split",
    default=None,
    help=f"labelled split to tune on  [default: {TUNING_SPLIT}, where the dataset has one]",
)
@click.option("--objective", default=DEFAULT_OBJECTIVE, help=f"what each threshold maximises: {objective_forms()}")
@output_options(
    "write a copy of MODEL with the thresholds in its card to this file (weights unchanged)",
    required=False,
    default_text="update MODEL in place",
)
@click.option("--data-root", default=None, help="dataset folder, if not where the model was trained")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="batch size  [default: the model's]")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers  [default: the model's]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def tune_thresholds(model, split, objective, out, overwrite, data_root, batch_size, workers, as_json) -> None:
    """Choose a decision threshold per class of MODEL (a student.pt or teacher.pt) on a labelled
    split and store them in MODEL, or in a copy of it with -o; predict and evaluate then use them."""
    from ..commands import tune_thresholds as thresholds_cmd  # imported on use: --help and --version stay free of torch

    result = thresholds_cmd.tune(
        model,
        split=split,
        objective=objective,
        data_root=data_root,
        batch_size=batch_size,
        workers=workers,
        out=out,
        overwrite=overwrite,
    )
    if not result.pop("is_main"):
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    stored, before, after = result["thresholds"], result["at_0.5"], result["at_tuned"]
    fallback = stored["fallback"]
    click.echo(
        f"stored {stored['objective']} thresholds tuned on {result['split']} ({result['samples']} images) in {result['out']}"
    )
    listed = ", ".join(f"{name} ({why})" for name, why in fallback.items())
    click.echo(f"{len(fallback)} of {len(stored['values'])} classes fell back" + (f": {listed}" if fallback else ""))
    kind = parse_objective(stored["objective"]).kind  # the scores before and after: what it targets, OF1, CF1
    shown = ", ".join(f"{key} {before[key]:.1f} -> {after[key]:.1f}" for key in (*OBJECTIVES[kind].shows, "OF1", "CF1"))
    click.echo(f"{result['split']} {shown} (at {UNTUNED:g} -> at the new thresholds)")
