"""``mlkd-cache predict``: labels for new images from a student.pt, a teacher.pt or its export (.onnx, .pt2)."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import PREDICTION_FORMATS
from ..thresholds import UNTUNED
from .common import CONTEXT_SETTINGS, output_options

EPILOG = """\b
Examples:
  mlkd-cache predict runs/digits/student-l2d/student.pt photos/ -o labels.csv
  mlkd-cache predict student.pt a.jpg b.jpg list.txt -o labels.jsonl --top-k 3
  mlkd-cache predict student.onnx photos/ -o labels.parquet --threshold 0.7
  mlkd-cache predict student.pt2 photos/ -o out/labels.csv --overwrite
INPUT: image files, folders (every file below, recursively) or a .txt/.lst (one path a line)
or .csv (its 'image' or 'path' column; one without either is refused) list of paths, relative
to the list's folder.
"""


@click.command("predict", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@output_options("file to write, one row per image")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(PREDICTION_FORMATS),
    default=None,
    help=f"output format  [default: from the suffix of --out ({', '.join('.' + f for f in PREDICTION_FORMATS)}), "
    f"{PREDICTION_FORMATS[0]} otherwise; a --format its suffix contradicts is refused]",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help=f"one probability threshold for every class  [default: the per-class thresholds stored in the model, else {UNTUNED:g}]",
)
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="keep at most the K most probable predicted classes")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="images a batch")
@click.option("--workers", type=click.IntRange(min=0), default=2, help="DataLoader worker processes reading images")
@click.option(
    "--device", default=None, help="cpu, cuda, cuda:1  [default: CUDA when there is one; an .onnx or .pt2 runs on the CPU]"
)
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
def predict(model, inputs, out, overwrite, fmt, threshold, top_k, batch_size, workers, device, no_progress) -> None:
    """Predict the labels of INPUT images with MODEL (a student.pt, a teacher.pt or an .onnx or
    .pt2 file from export): one row per image with its path, predicted classes, any read error and every
    class's probability. Images are prepared as the model's card says (eval resize, img_size,
    normalisation); a file that cannot be read is named and the rest predicted."""
    from ..commands import predict as predict_cmd  # imported on use: --help and --version stay free of torch

    r = predict_cmd.run(
        model,
        inputs,
        out,
        fmt,
        threshold,
        top_k,
        batch_size,
        workers,
        device=device,
        progress=not no_progress,
        overwrite=overwrite,
    )
    click.echo(
        f"predicted {r['predicted']} of {r['images']} images with {r['model']} ({r['labels_per_image']:.2f} labels/image) "
        f"-> {r['out']} ({r['format']})"
    )
    click.echo(f"thresholds: {r['thresholds']}")
    if r["unreadable"]:
        click.echo(f"{len(r['unreadable'])} file(s) could not be read (named in their rows):")
        for path, reason in r["unreadable"]:
            click.echo(f"  {path}: {reason}")
