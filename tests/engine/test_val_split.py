"""A held-out val split end to end, on the real photographs of ../shared/data/coco2017-tiny
(50 train2017 images, official layout): the held-out images are in no train split (the cache's
keys), ``distill-student`` stores thresholds tuned on them, ``tune-thresholds`` runs as written,
the cache is replayed and verified with the same images held out, and a config of another split
is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

import mlkd_cache as mc
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.config import load_config
from mlkd_cache.data import dataset_from_config
from mlkd_cache.runtime.checkpoint import load_checkpoint, read_card

from ..conftest import assert_one_line_error, run_cli_in_process, shared_data

pytestmark = pytest.mark.slow

CONFIG = """\
dataset = 'coco'
model_t = 'test_resnet'
model_s = 'test_resnet'
img_size = 32
batch_size = 10
embed_dim = 16
workers = 0
log_every = 0
max_epoch_t = 1
max_epoch_s = 1
lr_t = 3e-3
lr_s = 3e-3
cache = dict(views=1)
val_split = dict(fraction=0.2, seed=0)
"""


def test_a_held_out_val_split_on_real_photographs(tmp_path):
    root = shared_data("coco2017-tiny")
    cfg_path = tmp_path / "coco_tiny.py"
    cfg_path.write_text(CONFIG)
    common = ["-c", str(cfg_path), "--data-root", str(root), "--no-progress"]
    teacher = str(tmp_path / "teacher" / "teacher.pt")

    def cli(*args):
        proc = run_cli_in_process(args)
        assert proc.returncode == 0, proc.stderr
        return proc

    cfg = load_config(cfg_path, {"data_root": str(root)})
    val = dataset_from_config(cfg, "val")
    train = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    every = {f"train2017/{im['file_name']}" for im in train["images"]}
    assert val.split == "val" and len(val) == 12 and set(val.keys) < every

    cli("teacher-train", *common, "-o", str(tmp_path / "teacher"))
    cli("dump-targets", *common, "-t", teacher, "-o", str(tmp_path / "cache"))
    cache = TargetCache(tmp_path / "cache")
    assert not set(cache.keys) & set(val.keys)  # no held-out image in the cache
    assert set(cache.keys) | set(val.keys) == every and cache.spec.val_split == {"fraction": 0.2, "seed": 0}
    assert cache.manifest["made_with"]["val_split"] == {"fraction": 0.2, "seed": 0}
    shown = cli("inspect", str(tmp_path / "cache")).stdout
    assert "val split  0.2 of the train split held out (val_split seed 0)" in shown

    # replayed without a config, and verified: the split rebuilt from the cache's record
    views = mc.CachedViews.from_cache(tmp_path / "cache")
    assert views.view_data.dataset.keys == cache.keys
    verified = cli("verify", str(tmp_path / "cache"), "-t", teacher, "--data-root", str(root), "-k", "4")
    assert "verify passed" in verified.stdout

    # the student stores thresholds tuned on the held-out images; tune-thresholds runs as written
    cli("distill-student", *common, "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "student"))
    student = tmp_path / "student" / "student.pt"
    card = torch.load(student, map_location="cpu", weights_only=True)["card"]
    assert card["thresholds"]["split"] == "val" and card["thresholds"]["samples"] == 12
    assert card["config"]["val_split"] == {"fraction": 0.2, "seed": 0}
    tuned = json.loads(cli("tune-thresholds", str(student), "--json").stdout)
    assert tuned["split"] == "val" and tuned["samples"] == 12

    # a config of another split is refused in one line, naming both
    refused = run_cli_in_process(
        ["distill-student", *common, "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "s2"), "--set", "val_split.seed=1"]
    )
    assert_one_line_error(
        refused,
        r"cache built with val_split fraction=0.2 seed=0, the config asks for val_split fraction=0.2 seed=1; "
        r"re-run dump-targets with this config or set val_split = dict\(fraction=0.2, seed=0\)",
    )

    # a teacher trained on another split (here: without the val images) is refused in one line
    other_split = run_cli_in_process(
        ["distill-student", *common, "-t", teacher, "-o", str(tmp_path / "o2"), "--set", "val_split.fraction=0"]
    )
    assert_one_line_error(
        other_split,
        r"teacher .*teacher\.pt was trained with val_split fraction=0.2 seed=0, the config holds no val_split: "
        r"its train split is not this one",
    )

    # a run without a val split says in one line why it stores no thresholds
    online = cli("distill-student", *common, "--no-kd", "-o", str(tmp_path / "online"), "--set", "val_split.fraction=0")
    assert "stores no decision thresholds: dataset coco has no val split to tune them on; set val_split = " in online.stderr
    card = torch.load(tmp_path / "online" / "student.pt", map_location="cpu", weights_only=True)["card"]
    assert card["thresholds"] is None
    no_val = run_cli_in_process(["tune-thresholds", str(tmp_path / "online" / "student.pt")])
    assert_one_line_error(no_val, r"has no val split; it was trained without val_split: train it with val_split = dict")

    # predict's word on untuned thresholds sends to tune-thresholds only where it would run
    untuned = read_card(load_checkpoint(tmp_path / "online" / "student.pt"), tmp_path / "online" / "student.pt")
    source = untuned.decision_rule()[1]
    assert "val_split = dict(fraction=0.1, seed=0)" in source and "tune-thresholds" not in source
    held = read_card(load_checkpoint(student), student).replace(thresholds=None)
    assert held.val_split == {"fraction": 0.2, "seed": 0}
    assert held.decision_rule()[1].endswith("; mlkd-cache tune-thresholds chooses them)")
