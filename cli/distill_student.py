"""``mlkd-cache distill-student``: stage 2, train a student from the cache (or, as a baseline,
from the live teacher)."""

from __future__ import annotations

import click

from ..metrics import format_metrics
from .common import CONTEXT_SETTINGS, build_config, config_options, default_out, regime_options

EPILOG = """\b
Examples:
  mlkd-cache distill-student -c configs/digits/resnet10t_to_test_resnet_l2d.py \\
      --cache runs/digits/cache -o runs/digits/student-l2d
  mlkd-cache distill-student -c CONFIG --cache CACHE -o OUT \\
      --set "criterion_t2s_para=dict(name='MLD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict())))"
  mlkd-cache distill-student -c CONFIG --cache runs/teacher-a/cache --cache runs/teacher-b/cache -o OUT   # two teachers
  mlkd-cache distill-student -c CONFIG --no-kd -o OUT                                   # no-KD baseline
  mlkd-cache distill-student -c CONFIG --no-kd --cache CACHE -o OUT    # no-KD on the images a cache stores
  mlkd-cache distill-student -c CONFIG --teacher runs/digits/teacher/teacher.pt --fresh-views -o OUT   # online, L2D's regime
  mlkd-cache distill-student -c CONFIG --teacher runs/digits/teacher/teacher.pt -o OUT   # online, the cache's views
  mlkd-cache distill-student -c CONFIG --teacher teacher.pt --views 16 -o OUT   # online on the views of a 16-view cache
  torchrun --nproc_per_node=2 -m mlkd_cache distill-student -c CONFIG --cache CACHE -o OUT
"""


@click.command("distill-student", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@regime_options
@click.option(
    "--verify-checksums/--no-verify-checksums",
    default=True,
    help="compare every shard's sha256 with the manifest before training (each rank hashes its share of the shards)",
)
@config_options("s", out_default="runs/<config name>/student")
def distill_student(
    config_path, out, settings, resume, no_progress, cache, teacher, fresh_views, views, no_kd, verify_checksums, **cli
) -> None:
    """Train the student (model_s) with the hard-label loss plus the distiller of
    criterion_t2s_para, the teacher's logits, features and label-wise embeddings read from
    --cache (or computed by a live --teacher; or, with --no-kd, no distillation at all);
    writes OUT/student.pt, OUT/checkpoint.pt, OUT/metrics.jsonl and OUT/steps.jsonl."""
    from ..commands import distill_student as distill  # imported on use: --help and --version stay free of torch
    from ..runtime.targets import FRESH

    cfg = build_config("s", config_path, settings, **cli)
    out = out if out is not None else default_out(config_path, None) / "student"
    result = distill.run(
        cfg,
        out,
        cache=list(cache) or None,
        teacher=teacher,
        resume=resume,
        progress=not no_progress,
        verify_checksums=verify_checksums,
        fresh_views=fresh_views,
        no_kd=no_kd,
        views=views,
    )
    if result["is_main"]:
        views = "a fresh view every epoch" if result["views"] == FRESH else f"{result['views']} views"
        source = {
            "offline": f"offline from cache {cache[0]}"
            if len(cache) == 1
            else f"offline from {len(cache)} teachers' caches {', '.join(map(str, cache))}",
            "online": f"online from live teacher {teacher}",
            "no-kd": "without distillation",
        }[result["mode"]]
        click.echo(
            f"student {cfg.model_s}: trained {result['epochs']} epochs, {source} "
            f"({views}), loss {' + '.join(result['terms'])}, images from the {result['images']} -> {result['final']}"
        )
        if result["metrics"]:
            click.echo(f"{cfg.eval_split} {format_metrics(result['metrics'])}")
        click.echo(f"metrics per epoch: {result['metrics_log']}")
        if result["steps_log"]:
            click.echo(f"loss terms per step: {result['steps_log']}")
