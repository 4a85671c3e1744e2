"""``mlkd-cache inspect``: summarise a target cache."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import CONTEXT_SETTINGS, human_size

EPILOG = """\b
Examples:
  mlkd-cache inspect runs/digits/cache
  mlkd-cache inspect runs/digits/cache --json
"""


@click.command("inspect", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("cache_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--verify-checksums/--no-verify-checksums",
    default=True,
    help="compare every shard's sha256 with the manifest first (reads the whole cache once)",
)
def inspect_command(cache_dir, as_json, verify_checksums) -> None:
    """Samples, views, sizes, dtypes, teacher, classes, the image store and the mAP of each
    view's cached logits."""
    from ..commands import inspect_cache  # imported on use: --help and --version stay free of torch
    from ..data.base import format_label_summary

    r = inspect_cache.run(cache_dir, verify_checksums=verify_checksums)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"cache      {r['cache']}")
    click.echo(f"data       {r['dataset']}: {r['samples']} samples x {r['views']} views, {r['shards']} shard(s)")
    if r["val_split"]:
        held = r["val_split"]
        click.echo(
            f"val split  {held['fraction']:g} of the train split held out (val_split seed {held['seed']}): in no shard, "
            "read by eval_split='val' and tune-thresholds"
        )
    click.echo(
        f"size       {human_size(r['total_bytes'])} total, {human_size(r['bytes_per_sample'])}/sample, {human_size(r['bytes_per_view'])}/view"
    )
    embeddings = (
        f"{r['embedding']} embeddings ({r['positive_tokens']} positive tokens)"
        if "label_emb" in r["teacher_outputs"]
        else "no embeddings"
    )
    click.echo(f"layout     {embeddings}, {r['dtype']}; C={r['num_classes']} D={r['feature_dim']} E={r['embed_dim']}")
    click.echo(
        f"teacher    {r['teacher_arch']} sha256 {r['teacher_sha256'][:16]}…  img_size {r['img_size']}  transform {r['transform_hash']}"
    )
    if r["absent_outputs"]:
        click.echo(f"absent     no {', '.join(r['absent_outputs'])} stored: losses that need them are refused")
    errors = r["quantisation_error"]
    if errors:
        parts = "; ".join(f"{k} max {e['max_abs']:.2e}, mean rel {e['mean_rel']:.2e}" for k, e in errors.items())
        click.echo(f"precision  {r['dtype']} against float32: {parts}")
    names = r["class_names"]
    click.echo(f"classes    {len(names)}: {', '.join(names[:10])}{', …' if len(names) > 10 else ''}")
    click.echo(f"labels     {format_label_summary(r['labels'])}")
    store = r["image_store"]
    if store["mode"] == "none":
        click.echo("images     not stored (a student reads the dataset folder)")
    else:
        quality = f" quality {store['jpeg_quality']}" if store["jpeg_quality"] else ""
        click.echo(
            f"images     {store['mode']}{quality} at {store['img_size']} px: {store['train_images']} train + "
            f"{store['eval_images']} {store['eval_split']}, {human_size(store['image_bytes'])} "
            f"({human_size(store['image_bytes'] / max(store['train_images'] + store['eval_images'], 1))}/image)"
        )
    maps = "  ".join(f"v{v}: {m:.2f}" for v, m in enumerate(r["cached_logit_map_per_view"]))
    click.echo(f"cached mAP {maps}")
    click.echo(
        f"checksums  {'every shard matches its sha256 in manifest.json' if r['checksums_verified'] else 'not checked (--no-verify-checksums)'}"
    )
