"""Every config under ``configs/`` (discovered, so a new one is tested without edits): it loads,
resolves by its short name, and drives the real engine on fixture data at 32 px - one teacher
training step, one dump batch written as a real cache, one student step with its distiller."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch
from torch import Tensor

from mlkd_cache.cache.writer import ShardWriter, write_manifest
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.config import Config, load_config, resolve_config_path
from mlkd_cache.data import has_split
from mlkd_cache.data.views import ViewDataset
from mlkd_cache.models.model import MultiLabelModel
from mlkd_cache.runtime.students import DistillTrainer
from mlkd_cache.runtime.train import Trainer
from tests.data.fixtures import make_coco_tree, make_nus_tree, make_voc_tree, write_jpeg

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.py"))
IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]

# Two training images per dataset, sharing one class and one holding two, so that every label
# loss (LED's class- and image-wise terms, MPSCD's token contrasts) has something to compare.
VOC_TRAIN = {
    "000005": [dict(name="chair"), dict(name="person")],
    "000009": [dict(name="horse"), dict(name="person")],
}
COCO_TRAIN = {
    "COCO_train2014_000000000009.jpg": ["bowl", "broccoli"],
    "COCO_train2014_000000000025.jpg": ["giraffe", "bowl"],
}
CSV_TRAIN = {"images/a.jpg": "chair;person", "images/b.jpg": "horse;person"}
NUS_TRAIN = [
    (("actor", "0001_2124494179.jpg"), {"animal"}),
    (("bear", "0005_3099811321.jpg"), {"bear", "animal"}),
]


def fixture_root(dataset: str, tmp: Path) -> Optional[Path]:
    """A tiny tree of ``dataset`` in its real layout (None for the embedded digits)."""
    if dataset == "voc":
        return make_voc_tree(tmp / "voc", train=VOC_TRAIN)
    if dataset == "coco":
        return make_coco_tree(tmp / "coco", fmt="l2d", train=COCO_TRAIN)
    if dataset == "nus":
        return make_nus_tree(tmp / "nus", train=NUS_TRAIN)
    if dataset == "csv":  # the files a csv config names (voc-rf144's: train.csv, val.csv, test.csv)
        root = tmp / "csv"
        for k, image in enumerate(CSV_TRAIN):
            write_jpeg(root / image, seed=k)
        rows = "image,labels\n" + "".join(f"{image},{labels}\n" for image, labels in CSV_TRAIN.items())
        for name in ("train.csv", "val.csv", "test.csv"):
            (root / name).write_text(rows)
        return root
    if dataset == "digits":
        return None
    raise AssertionError(f"no fixture data for dataset {dataset!r}; add one to this test")


def small_config(path: Path, tmp: Path) -> Config:
    """The shipped config at 32 px, batch 2, no workers, on fixture data, one cached view."""
    cfg = load_config(path)
    overrides = {
        "img_size": 32,  # the smallest input every shipped backbone takes (Swin-T included)
        "batch_size": 2,
        "workers": 0,
        "cache.views": 1,
        "replay_check": 1.0,  # compare every student input with the cached fingerprint
        "log_every": 0,
    }
    if cfg.val_split["fraction"] > 0:  # two training images spare none (test_shipped_config_has_a_val_split checks it)
        overrides["val_split.fraction"] = 0.0
        if cfg.eval_split == "val":
            overrides["eval_split"] = "test"
    root = fixture_root(cfg.dataset, tmp)
    if root is None:
        overrides["dataset_para"] = {**cfg.dataset_para, "train_size": 2, "test_size": 2}
        overrides["dataset_para_t"] = {**cfg.dataset_para_t, "train_size": 2} if cfg.dataset_para_t else {}
    else:
        overrides["data_root"] = str(root)
        if "train_size" in cfg.dataset_para:  # students on a prefix of the train file: here, all of it
            overrides["dataset_para"] = {**cfg.dataset_para, "train_size": len(CSV_TRAIN)}
    return load_config(path, overrides)


def ends(model: MultiLabelModel) -> Dict[str, Tensor]:
    """Copies of the stem (first backbone parameter) and of the classifier weight: both move
    only when the loss's gradient crossed the whole network."""
    stem_name, stem = next(iter(model.backbone.named_parameters()))
    return {f"backbone.{stem_name}": stem.detach().clone(), "head.weight": model.head.weight.detach().clone()}


def assert_moved(model: MultiLabelModel, before: Dict[str, Tensor]) -> None:
    after = ends(model)
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name])]
    assert not unchanged, f"{model.arch}: one optimiser step left {unchanged} unchanged"


def assert_finite_terms(row: Dict[str, float], role: str) -> Dict[str, float]:
    terms = {k[len("loss/") :]: v for k, v in row.items() if k.startswith("loss/")}
    assert terms, row
    bad = {k: v for k, v in terms.items() if not torch.isfinite(torch.tensor(v))}
    assert not bad, f"{role}: non-finite loss terms {bad}"
    return terms


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_config_resolves_and_downloads_nothing(path):
    """``-c <dataset>/<file>`` finds it (as installed) from any folder; no data path or weights
    file is baked in."""
    assert resolve_config_path(path.relative_to(REPO / "configs")).read_bytes() == path.read_bytes()
    cfg = load_config(path)
    assert (cfg.data_root, cfg.pretrained_t, cfg.pretrained_s) == (None, None, None)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_config_has_a_val_split(path):
    """Every shipped config can tune decision thresholds: its dataset has a val split of its own
    (digits, csv with a val_file) or the config holds a tenth of the train split out."""
    cfg = load_config(path)
    assert has_split(cfg, "val")
    own = cfg.dataset == "digits" or cfg.dataset_para.get("val_file") is not None
    assert cfg.val_split == ({"fraction": 0.0, "seed": 0} if own else {"fraction": 0.1, "seed": 0})


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_config_trains_dumps_and_distills(path, tmp_path):
    """Its teacher and student, built by the engine, each take a finite step that moves the
    whole network, and the student trains from a real cache of the teacher's outputs."""
    cfg = small_config(path, tmp_path)

    # stage 1: the teacher-train loop, one step (2 training images, batch 2)
    teacher = Trainer(cfg, "t", tmp_path / "teacher", progress=False)
    assert len(teacher.loader) == 1
    before = ends(teacher.model)
    teacher_terms = assert_finite_terms(teacher.train_one_epoch(0), "teacher")
    assert teacher_terms["bce"] > 0
    assert_moved(teacher.model, before)

    # stage 1b: one dump batch (2 samples x 1 view) through dump-targets' own shard code
    model = teacher.model.eval()
    train_set = teacher.train_data.dataset
    view_data = ViewDataset(train_set, teacher.spec, cfg.seed, train=True, views=1, with_fingerprint=True)
    sha = hashlib.sha256(f"{cfg.model_t} stand-in for teacher.pt".encode()).hexdigest()
    spec = dump.build_spec(cfg, teacher.card(), sha, train_set, 1, teacher.spec)
    assert spec.num_shards() == 1 and spec.num_samples == 2
    buffer = dump.dump_shard(model, view_data, spec, 0, cfg.batch_size, 0, teacher.info, amp=False)
    assert buffer.complete
    with ShardWriter(tmp_path / "cache") as writer:
        writer.submit(buffer)
    write_manifest(tmp_path / "cache", spec, writer.close())
    del teacher, model, buffer  # the student stage never needs the teacher

    # stage 2: the distill-student loop from that cache, one step with the config's distiller
    student = DistillTrainer(cfg, tmp_path / "student", cache=tmp_path / "cache", progress=False)
    before = ends(student.model)
    extra_before = [p.detach().clone() for p in student.extra_params]
    row = student.train_one_epoch(0)
    terms = assert_finite_terms(row, "student")
    assert row["replay_checked"] == 2  # the student saw exactly the views the teacher saw
    distill = {k: v for k, v in terms.items() if k not in ("bce", "asl")}
    assert set(distill) == set(student.distiller.names()), terms
    assert sum(distill.values()) > 0, terms
    assert_moved(student.model, before)
    for p, old in zip(student.extra_params, extra_before):  # e.g. MPSCD's projection head
        assert not torch.equal(p.detach(), old), "a distiller parameter did not move"
