"""Every stage on real photographs: the 100 COCO 2017 images of ../shared/data/coco2017-tiny in
the official layout (train2017/, val2017/, annotations/instances_*2017.json), found from
``--data-root`` alone, through the CLI's ``main`` as a user runs it (in this process: the
console entry point itself is covered by the bad-input and wheel tests)."""

from __future__ import annotations

import json

import pytest
import torch

from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.data.coco import COCO_CLASSES

from ..conftest import run_cli_in_process, shared_data

pytestmark = pytest.mark.slow


def test_every_stage_on_coco2017_by_data_root_alone(tmp_path):
    root = shared_data("coco2017-tiny")
    cfg = tmp_path / "coco_tiny.py"
    cfg.write_text(
        "dataset = 'coco'\n"  # no data_root, no year, no annotation format: --data-root finds them
        "model_t = 'test_resnet'\nmodel_s = 'test_resnet'\nimg_size = 64\nbatch_size = 10\nembed_dim = 32\n"
        "workers = 0\nlog_every = 1\nmax_epoch_t = 1\nmax_epoch_s = 1\nlr_t = 3e-3\nlr_s = 3e-3\ncache = dict(views=2)\n"
    )
    common = ["-c", str(cfg), "--data-root", str(root), "--no-progress"]

    def cli(*args):
        proc = run_cli_in_process(args)
        assert proc.returncode == 0, proc.stderr
        return proc

    cli("teacher-train", *common, "-o", str(tmp_path / "teacher"))
    teacher = torch.load(tmp_path / "teacher" / "teacher.pt", map_location="cpu", weights_only=True)
    assert teacher["card"]["class_names"] == list(COCO_CLASSES)
    steps = [json.loads(line) for line in (tmp_path / "teacher" / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]  # 50 train2017 photographs at batch 10

    cli("dump-targets", *common, "-t", str(tmp_path / "teacher" / "teacher.pt"), "-o", str(tmp_path / "cache"))
    cache = TargetCache(tmp_path / "cache")
    train = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    assert sorted(cache.keys) == sorted(f"train2017/{im['file_name']}" for im in train["images"])

    verified = cli(
        "verify", str(tmp_path / "cache"), "-t", str(tmp_path / "teacher" / "teacher.pt"), "--data-root", str(root), "-k", "8"
    )
    assert "input fingerprints: 8/8 equal" in verified.stdout and "verify passed" in verified.stdout, verified.stdout

    cli("distill-student", *common, "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "offline"))
    cli("distill-student", *common, "-t", str(tmp_path / "teacher" / "teacher.pt"), "-o", str(tmp_path / "online"))
    scored = cli("evaluate", str(tmp_path / "offline" / "student.pt"), "--data-root", str(root))
    assert "mAP" in scored.stdout
