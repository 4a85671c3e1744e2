"""``mlkd-cache teacher-train``: stage 1, train the teacher."""

from __future__ import annotations

import click

from ..metrics import format_metrics
from .common import CONTEXT_SETTINGS, build_config, config_options, default_out

EPILOG = """\b
Examples:
  mlkd-cache teacher-train -c configs/digits/resnet10t_to_test_resnet_l2d.py -o runs/digits
  mlkd-cache teacher-train -c my_voc_config.py --data-root /data/voc \\
      --pretrained weights/resnet50.pth -o runs/voc-r50
  torchrun --nproc_per_node=2 -m mlkd_cache teacher-train -c CONFIG -o OUT
  mlkd-cache teacher-train -c CONFIG -o OUT --resume      # continue after an interruption
"""


@click.command("teacher-train", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@config_options("t")
def teacher_train(config_path, out, settings, resume, no_progress, **cli) -> None:
    """Train the teacher (timm backbone + ML-Decoder head) on the train split, scoring it on the
    config's eval_split; writes OUT/teacher.pt, OUT/checkpoint.pt and OUT/metrics.jsonl."""
    from ..commands import teacher_train as teacher  # imported on use: --help and --version stay free of torch

    cfg = build_config("t", config_path, settings, **cli)
    out = default_out(config_path, out)
    result = teacher.run(cfg, out, resume=resume, progress=not no_progress)
    if result["is_main"]:
        verb = "already trained" if result.get("skipped") else f"trained {result['epochs']} epochs"
        click.echo(f"teacher {cfg.model_t}: {verb} -> {result['final']}")
        if result["metrics"]:
            click.echo(f"{cfg.eval_split} {format_metrics(result['metrics'])}")
        click.echo(f"metrics per epoch: {result['metrics_log']}")
