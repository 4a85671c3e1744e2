"""``mlkd-cache export``: a checkpoint's model as an ONNX or torch.export file, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import EXPORT_FORMATS
from .common import CONTEXT_SETTINGS, human_size, output_options

EPILOG = """\b
Examples:
  mlkd-cache export runs/digits/student-l2d/student.pt -o student.onnx
  mlkd-cache export runs/voc/teacher.pt -o teacher.pt2
  mlkd-cache export student.pt -o deploy/student.onnx --opset 18 --overwrite
The file takes uint8 pixels [N, 3, S, S] (RGB, resized to img_size square) and gives logits and
probabilities [N, C]; its metadata holds the model card (classes, thresholds, img_size, resize
filter, normalisation). Run it with `mlkd-cache predict`, an .onnx also with onnxruntime alone.
"""


@click.command("export", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@output_options("file to write")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(EXPORT_FORMATS)),
    default=None,
    help=" or ".join(f"{name} ({runs_with})" for name, runs_with in EXPORT_FORMATS.items())
    + "  [default: from the suffix of --out, onnx otherwise]",
)
@click.option(
    "--opset", type=click.IntRange(min=1), default=None, help="ONNX opset, for an older runtime  [default: torch's exporter's]"
)
@click.option("--no-check", is_flag=True, help="write the file without running it against the PyTorch model first")
def export(model, out, overwrite, fmt, opset, no_check) -> None:
    """Export MODEL (a student.pt or teacher.pt) to a file that runs without mlkd-cache, with the
    input normalisation inside and a dynamic batch axis. Unless --no-check, the file is first run
    against the PyTorch model at batch 1 and a larger batch, and written only when they agree."""
    from ..commands import export as export_cmd  # imported on use: --help and --version stay free of torch

    r = export_cmd.export(model, out, fmt=fmt, check=not no_check, opset=opset, overwrite=overwrite)
    opset_text = f" opset {r['opset']}" if r["opset"] is not None else ""
    click.echo(
        f"wrote {r['path']} ({human_size(r['bytes'])}, {r['format']}{opset_text}) from {model} in {r['export_seconds']:.1f} s"
    )
    click.echo(f"input: {r['input']}")
    if not r["checked"]:
        click.echo("not checked against the PyTorch model (--no-check)")
        return
    deltas = ", ".join(f"{c['max_abs_dlogit']:.2g} at batch {c['batch']}" for c in r["checks"])
    worst = max(r["checks"], key=lambda c: c["max_abs_dlogit"] / c["tolerance"])
    click.echo(
        f"check against PyTorch on {r['check_images']}: max |Δ logit| {deltas} "
        f"(tolerance {worst['tolerance']:.2g} = {export_cmd.TOLERANCE_TEXT} x logit scale {worst['logit_scale']:.3g}); labels at {r['check_thresholds']} agree"
    )
