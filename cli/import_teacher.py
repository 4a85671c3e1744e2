"""``mlkd-cache import-teacher``: a teacher trained by L2D's (or MPSCD's) code, or made by a
factory of the user's, as a teacher.pt."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import IMPORT_FORMATS
from ..metrics import format_metrics
from .common import CONTEXT_SETTINGS, build_config

EPILOG = """\b
Examples:
  mlkd-cache import-teacher pretrained_models/model_teacher_resnet101_coco_224.pth --format l2d \\
      -c coco/resnet101_to_resnet34_l2d.py -o runs/coco/teacher/teacher.pt
  mlkd-cache import-teacher model_teacher_resnet50_voc_224.pth -c voc/resnet50_to_resnet18_mpscd.py \\
      -o runs/voc/teacher/teacher.pt --data-root /data/voc     # also scores it on eval_split
  mlkd-cache import-teacher my_teachers:bce_resnet50 --format factory -c voc/resnet50_to_resnet18_mpscd.py \\
      -o runs/voc/teacher/teacher.pt         # a model of your own: (model, class_names) = my_teachers.bce_resnet50()
  (then: mlkd-cache dump-targets -c CONFIG --teacher runs/coco/teacher/teacher.pt -o CACHE)
"""


@click.command("import-teacher", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("checkpoint")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(IMPORT_FORMATS),
    default="l2d",
    show_default=True,
    help="who wrote CHECKPOINT",
)
@click.option(
    "--config", "-c", "config_path", required=True, help="config file (.py) or a shipped name: model_t, classes, img_size"
)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True, help="the teacher.pt to write")
@click.option("--data-root", default=None, help="dataset folder: score the imported teacher on the config's eval_split")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="any config key (repeatable)")
def import_teacher(checkpoint, fmt, config_path, out, data_root, settings) -> None:
    """Convert CHECKPOINT, an L2D (or MPSCD) teacher's .pth for the config's model_t (resnet18/34/50/101,
    wrn50/101), into a teacher.pt for dump-targets: every weight mapped exactly, or nothing written.
    With --format factory, CHECKPOINT is a factory package.module:function returning (model,
    class_names): the teacher.pt records it and pins the model's weights."""
    from ..commands import import_teacher as import_teacher_cmd  # imported on use: --help and --version stay free of torch

    cfg = build_config("t", config_path, settings, data_root=data_root)
    result = import_teacher_cmd.run(checkpoint, cfg, out, fmt=fmt, evaluate_split=cfg.eval_split if data_root else None)
    gives = f", gives {', '.join(result['outputs'])}" if "outputs" in result else ""
    click.echo(f"teacher {result['arch']} ({result['classes']} classes{gives}) from {checkpoint} -> {result['out']}")
    if "metrics" in result:
        click.echo(f"{result['split']} {format_metrics(result['metrics'])}")
