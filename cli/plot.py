"""``mlkd-cache plot``: training curves of one or several runs in one PNG."""

from __future__ import annotations

from pathlib import Path

import click

from ..commands import plot as plot_cmd
from .common import CONTEXT_SETTINGS

EPILOG = """\b
Examples:
  mlkd-cache plot runs/demo/teacher
  mlkd-cache plot runs/demo/student-* -o students.png --title "digits students"
"""


def _png_path(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    if value.suffix.lower() != ".png":
        raise click.BadParameter(f"{value} does not end in .png (the figure is always a PNG)")
    return value


@click.command("plot", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(plot_cmd.DEFAULT_NAME),
    callback=_png_path,
    help="PNG file to write (in the current folder unless a path is given)",
)
@click.option("--title", default=None, help="title above the panels  [default: none]")
def plot(run_dirs, out, title) -> None:
    """Draw the training curves of RUN_DIR... (the --out folders of teacher-train or
    distill-student) into one PNG: (a) total loss per logged step (per epoch when the run has no
    steps.jsonl), (b) each loss term per epoch, (c) test mAP per evaluated epoch. Runs are
    labelled by folder name. Needs matplotlib: pip install 'mlkd-cache[plot]'."""
    written = plot_cmd.plot_runs(list(run_dirs), out, title=title)
    click.echo(f"wrote {written}")
