"""``mlkd-cache dump-targets``: run the teacher once over the train split and cache its outputs."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import CACHE_FIELDS, IMAGE_STORES, JPEG_QUALITIES
from .common import CONTEXT_SETTINGS, TEACHER, build_config, human_size

EPILOG = """\b
Examples:
  mlkd-cache dump-targets -c configs/digits/resnet10t_to_test_resnet_l2d.py \\
      --teacher runs/digits/teacher/teacher.pt -o runs/digits/cache
  mlkd-cache dump-targets -c CONFIG --views 8 --dry-run     # size before the teacher exists
  mlkd-cache dump-targets -c CONFIG -t teacher.pt -o CACHE --images raw   # students need only CACHE
  torchrun --nproc_per_node=2 -m mlkd_cache dump-targets -c CONFIG --teacher teacher.pt -o CACHE
  (a re-run after an interruption skips the complete shards and redoes the rest)
"""


@click.command(
    "dump-targets",
    context_settings=CONTEXT_SETTINGS,
    epilog=EPILOG,
    help="Write the teacher's outputs for every training sample under V replayable views into the cache folder OUT "
    "(HDF5 shards and a manifest; docs/cache.md): its logits and what the config's distiller reads (cache.fields; "
    "label-wise embeddings for LED and MPSCD, pooled features for RKD and PKT), in the precision of cache.dtype (with "
    "--images, the train and eval images too).",
)
@click.option("--config", "-c", "config_path", required=True, help="config file (.py) or a shipped name")
@click.option(
    "--teacher",
    "-t",
    type=TEACHER,
    default=None,
    help="teacher.pt (teacher-train, import-teacher), or a factory package.module:function returning (model, class_names); required, except with --dry-run (sizes from the config's model_t)",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="cache folder (required, except with --dry-run)",
)
@click.option(
    "--views", type=click.IntRange(min=1), default=None, help="augmented views per sample  [default: config cache.views]"
)
@click.option("--data-root", default=None, help="dataset folder (overrides data_root)")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="teacher batch size per process")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers per process")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="any config key (repeatable; cache.dtype=float32)")
@click.option(
    "--images",
    type=click.Choice(IMAGE_STORES),
    default=None,
    help=f"store the train and eval images, decoded and resized, in the cache: raw uint8 pixels or jpeg (smaller); a student then needs no dataset folder  [default: config cache.images, {CACHE_FIELDS['images'].default}]",
)
@click.option(
    "--jpeg-quality",
    type=click.IntRange(*JPEG_QUALITIES),
    default=None,
    help=f"JPEG quality of --images jpeg  [default: config cache.jpeg_quality, {CACHE_FIELDS['jpeg_quality'].default}]",
)
@click.option("--overwrite", is_flag=True, help="delete the shards already in --out and start over")
@click.option("--dry-run", is_flag=True, help="print the planned size and exit")
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
def dump_targets(
    config_path,
    teacher,
    out,
    views,
    data_root,
    batch_size,
    workers,
    settings,
    images,
    jpeg_quality,
    overwrite,
    dry_run,
    no_progress,
) -> None:
    from ..commands import dump_targets as dump  # imported on use: --help and --version stay free of torch
    from ..data.base import format_label_summary

    stored = [
        f"cache.{key}={value!r}" for key, value in (("images", images), ("jpeg_quality", jpeg_quality)) if value is not None
    ]
    cfg = build_config("t", config_path, (*settings, *stored), data_root=data_root, batch_size=batch_size, workers=workers)
    if dry_run:
        result = dump.plan(cfg, teacher, views=views)
    else:
        result = dump.run(cfg, teacher, out, views=views, overwrite=overwrite, progress=not no_progress)
    if not result["is_main"]:
        return
    if result["dry_run"]:
        p = result["plan"]
        click.echo(
            f"planned cache: {p['samples']} samples x {p['views']} views in {p['shards']} shard(s), "
            f"{p['embedding']} embeddings, {p['dtype']}"
        )
        parts = " + ".join(f"{part} {human_size(nbytes)}" for part, nbytes in p["bytes_per_view_by_part"].items())
        click.echo(f"  per view   {human_size(p['bytes_per_view'])} = {parts}")
        click.echo(f"  per sample {human_size(p['bytes_per_sample'])}")
        click.echo(
            f"  total      {human_size(p['payload_bytes'])} (dense embeddings would need {human_size(p['dense_payload_bytes'])})"
        )
        sizes = p["image_bytes"]
        count = f"{p['samples']} train" + (
            f" + {p['eval_samples']} eval" if p["eval_samples"] is not None else " (eval split not counted)"
        )
        jpeg = (
            f"jpeg q{p['jpeg_quality']} about {human_size(sizes['jpeg'])} ({human_size(p['jpeg_bytes_per_image'])}/image, measured on {p['jpeg_images']} images)"
            if sizes["jpeg"] is not None
            else "jpeg: needs the images to estimate (pass --data-root)"
        )
        click.echo(f"  images     {count}: raw {human_size(sizes['raw'])}, {jpeg}; this dump stores {p['images']}")
        if p["understood"] is not None:
            click.echo(f"  labels     {format_label_summary(p['understood'])}")
        if p["ignored_columns"]:
            click.echo(f"  not used   columns {', '.join(p['ignored_columns'])}")
        click.echo(f"  from       {p['source']}")
        return
    click.echo(
        f"cache {result['out']}: {result['samples']} samples x {result['views']} views, "
        f"{human_size(result['total_bytes'])}; {result['shards_written']} shard(s) written, "
        f"{result['shards_skipped']} already complete, {result['seconds']:.1f} s"
    )
