"""One tiny teacher and its reference cache for the fault tests, built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config

from ..conftest import tiny_config, torch_threads

# 96 train samples x 2 views in shards of 32: three shards, so one can be damaged and the rest kept
FAULT_CONFIG = dict(max_epoch_t="1", max_epoch_s="1", cache="dict(views=2, shard_size=32)")


@dataclass(frozen=True)
class Built:
    cfg_path: Path  # the tiny digits config (also the student's)
    teacher_pt: Path
    cache: Path  # the reference cache; tests copy it before damaging anything

    def dump_args(self, out: Path) -> list:
        return ["dump-targets", "-c", str(self.cfg_path), "--teacher", str(self.teacher_pt), "-o", str(out), "--no-progress"]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    tmp = tmp_path_factory.mktemp("faults")
    cfg_path = tiny_config(tmp, **FAULT_CONFIG)
    cfg = load_config(cfg_path)
    with torch_threads(1):  # as the processes that repair it (ONE_THREAD): the same fp16 bits
        teacher.run(cfg, tmp / "teacher", progress=False)
        dump.run(cfg, tmp / "teacher" / "teacher.pt", tmp / "cache", progress=False)
    return Built(cfg_path, tmp / "teacher" / "teacher.pt", tmp / "cache")
