"""``mlkd-cache verify``: re-run the teacher on sampled cached views and compare."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import CONTEXT_SETTINGS, TEACHER

EPILOG = """\b
Examples:
  mlkd-cache verify runs/digits/cache --teacher runs/digits/teacher/teacher.pt
  mlkd-cache verify CACHE --teacher teacher.pt --samples 256 --data-root /data/voc
  mlkd-cache verify CACHE --teacher my_teachers:asl_tresnet   # a cache dumped from a teacher factory
Exit code 0: all checks passed; 1: drift found; 2: bad input.
"""


@click.command("verify", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.argument("cache_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--teacher",
    "-t",
    type=TEACHER,
    required=True,
    help="the teacher the cache was dumped with: its teacher.pt, or the factory package.module:function dump-targets was given",
)
@click.option("--samples", "-k", type=click.IntRange(min=1), default=64, help="random (sample, view) pairs to re-run")
@click.option("--data-root", default=None, help="dataset folder, if not where the teacher was trained")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="seed of the pair sample")
@click.option(
    "--verify-checksums/--no-verify-checksums",
    default=True,
    help="compare every shard's sha256 with the manifest first (reads the whole cache once)",
)
def verify(cache_dir, teacher, samples, data_root, seed, verify_checksums) -> None:
    """Check input fingerprints and compare cached logits / features / embeddings with a fresh
    teacher pass (max abs error, cosine)."""
    from ..commands import verify as verify_cmd  # imported on use: --help and --version stay free of torch

    r = verify_cmd.run(cache_dir, teacher, samples=samples, data_root=data_root, seed=seed, verify_checksums=verify_checksums)
    if r["checksums_verified"]:
        click.echo("every shard matches its sha256 in manifest.json")
    click.echo(f"{r['pairs']} pairs, input fingerprints: {r['pairs'] - r['fingerprint_mismatches']}/{r['pairs']} equal")
    click.echo(f"{'tensor':<22} {'rows':>6} {'max abs err':>12} {'scale':>10} {'min cosine':>11}  ok")
    for t in r["tensors"]:
        click.echo(
            f"{t['tensor']:<22} {t['rows']:>6} {t['max_abs_err']:>12.3g} {t['scale']:>10.3g} {t['min_cosine']:>11.6f}  {'yes' if t['ok'] else 'NO'}"
        )
    if not r["ok"]:
        click.echo(
            f"verify FAILED: cache and teacher disagree beyond tolerance (rtol {r['rtol']}, cosine >= {r['min_cosine']})",
            err=True,
        )
        sys.exit(1)
    click.echo("verify passed")
