"""Scoring never changes what trains: a run scored every epoch ends with the very weights of the
same run scored only after its last epoch, bit for bit, for every stage that trains (one thread:
the same sums in the same order). The ML-Decoder's dropout draws from the global RNG, so a
scoring pass that drew from it would shift every later mask."""

from __future__ import annotations

import pytest
import torch

from mlkd_cache.commands import distill_student as distill
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config
from mlkd_cache.runtime.checkpoint import load_checkpoint

from ..conftest import tiny_config, torch_threads

pytestmark = pytest.mark.slow

EPOCHS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scoring")
    cfg_path = tiny_config(tmp, max_epoch_t=str(EPOCHS), max_epoch_s=str(EPOCHS), cache="dict(views=2)", log_every="0")
    cfg = load_config(cfg_path)
    with torch_threads(1):
        teacher.run(cfg, tmp / "teacher", progress=False)
        dump.run(cfg, tmp / "teacher" / "teacher.pt", tmp / "cache", progress=False)
    return tmp, cfg


def weights(path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("stage", ["teacher-train", "offline", "online", "online-fresh", "no-kd"])
def test_scoring_every_epoch_trains_the_same_weights(setup, stage):
    tmp, cfg = setup
    finals = []
    for every in (1, EPOCHS):
        run_cfg = cfg.replace(eval_every=every)
        out = tmp / f"{stage}-every{every}"
        with torch_threads(1):
            if stage == "teacher-train":
                teacher.run(run_cfg, out, progress=False)
            elif stage == "no-kd":
                distill.run(run_cfg, out, no_kd=True, progress=False)
            elif stage == "offline":
                distill.run(run_cfg, out, cache=tmp / "cache", progress=False)
            else:
                fresh = stage == "online-fresh"
                distill.run(run_cfg, out, teacher=tmp / "teacher" / "teacher.pt", fresh_views=fresh, progress=False)
        finals.append(out / ("teacher.pt" if stage == "teacher-train" else "student.pt"))
    rows = [len(load_checkpoint(f)["metrics"]) for f in finals]
    assert all(rows)  # both runs were scored after their last epoch
    assert_same(weights(finals[0]), weights(finals[1]))
