"""A damaged cache is caught by inspect, verify and distill-student, which name the file and say
what to do; dump-targets, re-run with the same arguments, rewrites exactly the damaged shard.

The four kinds of damage: a truncated shard, flipped bytes inside a data block (only the sha256
in manifest.json can tell), a shard of another cache copied over ours, and a shard the manifest
lists but that is gone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from mlkd_cache.cache.format import MANIFEST_NAME
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.cli.main import app
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.config import load_config

from ..conftest import ONE_THREAD, assert_one_line_error, run_cli
from ..engine.test_dump import assert_same_cache

VICTIM = "shard-00001.h5"


def truncate(cache: Path, other: Path) -> None:
    path = cache / VICTIM
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size * 2 // 3)


def flip_data_bytes(cache: Path, other: Path) -> None:
    """XOR 8 bytes in the middle of the logits block: size, attributes and shapes stay valid."""
    path = cache / VICTIM
    with h5py.File(path, "r") as f:
        dset = f["logits"]
        offset = dset.id.get_offset() + dset.id.get_storage_size() // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        block = bytearray(fh.read(8))
        fh.seek(offset)
        fh.write(bytes(b ^ 0x5A for b in block))


def foreign_shard(cache: Path, other: Path) -> None:
    """Shard 1 of a dump with another seed (other views), with the manifest's size made to fit."""
    shutil.copy(other / VICTIM, cache / VICTIM)
    manifest = json.loads((cache / MANIFEST_NAME).read_text())
    manifest["shards"][1]["bytes"] = (cache / VICTIM).stat().st_size
    (cache / MANIFEST_NAME).write_text(json.dumps(manifest))


def remove(cache: Path, other: Path) -> None:
    (cache / VICTIM).unlink()


DAMAGE = {
    "truncated shard": (truncate, rf"{VICTIM} in .* has \d+ bytes, manifest.json lists \d+ \(truncated\?\)"),
    "flipped bytes in a data block": (flip_data_bytes, rf"{VICTIM} in .* fails its sha256 check"),
    "shard of another cache": (foreign_shard, rf"{VICTIM} in .* belongs to another cache \(base_seed 1 vs 0\)"),
    "manifest lists a missing shard": (remove, rf"{VICTIM} listed in .*manifest.json is missing"),
}
FIX = "re-run dump-targets with the same config and teacher to rewrite it"


@pytest.fixture(scope="module")
def other_cache(built, tmp_path_factory) -> Path:
    """A cache of the same teacher and data dumped with base seed 1: same sizes, other views."""
    out = tmp_path_factory.mktemp("other") / "cache"
    dump.run(load_config(built.cfg_path, {"seed": 1}), built.teacher_pt, out, progress=False)
    return out


def invoke(args) -> "object":
    """The CLI in-process (the same click app as the console script): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    result.returncode = result.exit_code  # the fields assert_one_line_error reads
    return result


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_named_by_every_reader_and_dump_targets_repairs_it(built, other_cache, tmp_path, damage):
    make_damage, match = DAMAGE[damage]
    cache = Path(shutil.copytree(built.cache, tmp_path / "cache"))
    make_damage(cache, other_cache)
    student = tmp_path / "student"
    readers = {
        "inspect": ["inspect", cache],
        "verify": ["verify", cache, "--teacher", built.teacher_pt, "--samples", "4"],
        "distill-student": ["distill-student", "-c", built.cfg_path, "--cache", cache, "-o", student, "--no-progress"],
    }
    for name, args in readers.items():
        result = invoke(args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (name, result.exception)
        line = assert_one_line_error(result, match)
        assert line.endswith(FIX), (name, line)
    assert not student.exists()  # refused before anything was written

    proc = run_cli(built.dump_args(cache), env=ONE_THREAD)  # the advice, followed in a real process
    assert proc.returncode == 0, proc.stderr
    assert "1 shard(s) written, 2 already complete" in proc.stdout, proc.stdout
    assert_same_cache(cache, built.cache)
    TargetCache(cache, verify_checksums=True)
    result = invoke(["inspect", cache])
    assert result.exit_code == 0 and "every shard matches its sha256" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_checksums_can_be_skipped_and_then_the_flip_goes_unseen(built, other_cache, tmp_path):
    """What --no-verify-checksums costs: attributes and sizes alone pass a flipped data block."""
    cache = Path(shutil.copytree(built.cache, tmp_path / "cache"))
    flip_data_bytes(cache, other_cache)
    result = invoke(["inspect", cache, "--no-verify-checksums"])
    assert result.exit_code == 0, result.stderr
    assert "not checked (--no-verify-checksums)" in result.stdout


@pytest.mark.slow
def test_a_dump_without_a_manifest_still_refuses_a_foreign_shard(built, other_cache, tmp_path):
    """Without this dump's manifest the folder may hold someone else's cache: never overwritten."""
    cache = Path(shutil.copytree(built.cache, tmp_path / "cache"))
    foreign_shard(cache, other_cache)
    (cache / MANIFEST_NAME).unlink()
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    result = invoke(built.dump_args(cache))
    assert_one_line_error(result, rf"holds shards of another dump \({VICTIM}.*pass --overwrite")
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before


def test_not_a_cache_folder(tmp_path):
    result = invoke(["inspect", tmp_path / "nowhere"])
    assert_one_line_error(result, r"cache folder not found: .*nowhere is not a folder")
