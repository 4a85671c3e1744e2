"""The model card: one writer (``save_model``), one loader (``load_model``), and checkpoints of
format 1, written by the code before the card (tests/fixtures/checkpoints-v1), still loaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlkd_cache.commands.evaluate import run as evaluate
from mlkd_cache.config import load_config
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.errors import CheckpointError
from mlkd_cache.metrics import mean_average_precision
from mlkd_cache.models import build_model
from mlkd_cache.models.card import OUTPUTS, ModelCard
from mlkd_cache.runtime.checkpoint import load_checkpoint, load_model, read_card, save_checkpoint, save_model

from ..bounds import logit_bound, map_range
from ..conftest import REPO, assert_one_line_error, run_cli_in_process

FIXTURE = REPO / "tests" / "fixtures" / "checkpoints-v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
CONFIG = FIXTURE / "config.py"


def test_format_1_checkpoints_load_with_their_card():
    """The fixture's cards, read from the top-level entries format 1 kept: every fact of the card
    as that code wrote it, the derived ones (img_size, normalisation, transform hash) agreeing."""
    old = torch.load(FIXTURE / "student.pt", map_location="cpu", weights_only=True)
    assert old["format_version"] == 1 and "card" not in old
    for name, role in (("teacher.pt", "teacher"), ("student.pt", "student")):
        raw = torch.load(FIXTURE / name, map_location="cpu", weights_only=True)
        loaded = load_model(FIXTURE / name)
        card = loaded.card
        assert card.role == role and card.arch == card.timm_name == "test_efficientnet" and card.factory is None
        assert list(card.class_names) == raw["class_names"] and card.num_classes == raw["num_classes"] == 10
        assert (card.embed_dim, card.feature_dim) == (raw["embed_dim"], raw["feature_dim"]) == (8, raw["feature_dim"])
        assert card.img_size == raw["img_size"] == 32 and card.transform_hash == raw["transform_hash"]
        assert card.normalisation == raw["normalisation"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
        assert card.transform == TransformSpec.from_config(load_config(CONFIG))
        assert card.config == raw["config"] and card.dataset == "digits" and card.outputs == OUTPUTS
        assert loaded.epoch == 1 and loaded.metrics["mAP"] == pytest.approx(EXPECTED[name]["test_mAP"])
        assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    student = load_model(FIXTURE / "student.pt").card
    assert student.provenance["distill"]["mode"] == "offline" and student.provenance["distill"]["views"] == 2
    assert student.provenance["images"] == "dataset"


@pytest.mark.numeric
@pytest.mark.parametrize("name", ["teacher.pt", "student.pt"])
def test_format_1_checkpoints_give_the_logits_their_code_gave(name):
    """The eval pipeline resolved from the card (img_size, normalisation mean 0.5 std 0.25) and
    the rebuilt model give the logits the old code's evaluate gave, to float32 rounding (other
    kernels may sum in another order: :func:`~tests.bounds.logit_bound`). A loader that dropped
    the normalisation or the weights would be off by far more.

    The old code's mAP is not compared exactly: these one-epoch models score the images almost
    alike (the teacher's logits of one class differ by ~1e-4 across images), so scores closer
    than the logits' bound swap between kernels and move the mAP by a quarter point. It must lie
    within the range that any logits within the bound give (:func:`~tests.bounds.map_range`);
    evaluate's own mAP is checked against the logits it returned, in this process."""
    expected = np.asarray(EXPECTED[name]["test_logits_0_3"])
    delta = logit_bound(expected)
    # evaluate loads the model and its input pipeline from the card: its first logits are the old
    # code's, its mAP is that of its own logits, and the old code's mAP is one that logits within
    # the bound of them can give
    scored = evaluate(FIXTURE / name, keep_logits=True)
    logits, labels = scored["logits"], scored["labels"]
    assert float(np.abs(logits[:4] - expected).max()) <= delta
    assert scored["metrics"]["mAP"] == mean_average_precision(logits, labels)
    low, high = map_range(logits, labels, delta)
    assert low <= EXPECTED[name]["test_mAP"] <= high, (low, EXPECTED[name]["test_mAP"], high)


def test_save_model_and_load_model_round_trip(tmp_path):
    """save_model writes format 2 (the card under "card", no derived entry beside it); load_model
    gives the same card and a model with the very weights, in eval mode, whatever the device name."""
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    model = build_model("test_efficientnet", 10, embed_dim=8, img_size=32)
    card = ModelCard.of(
        model, "student", [str(d) for d in range(10)], TransformSpec.from_config(cfg), cfg.to_dict(), {"images": "dataset"}
    )
    card = card.replace(thresholds={"values": [0.5] * 10, "split": "val", "objective": "f1"})
    save_model(tmp_path / "student.pt", card, model.state_dict(), epoch=3, metrics={"mAP": 12.5})
    raw = torch.load(tmp_path / "student.pt", map_location="cpu", weights_only=True)
    assert raw["format_version"] == 2 and set(raw) == {
        "format",
        "format_version",
        "tool_version",
        "card",
        "model",
        "epoch",
        "metrics",
    }
    loaded = load_model(tmp_path / "student.pt", device="cpu")
    assert loaded.card == card and loaded.card.to_dict() == raw["card"] and (loaded.epoch, loaded.metrics) == (3, {"mAP": 12.5})
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.sha256 == hashlib.sha256((tmp_path / "student.pt").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="not an entry of its own"):
        save_model(tmp_path / "x.pt", card, model.state_dict(), format_version=3)


def test_a_damaged_card_is_one_line(tmp_path):
    """A card that lacks an entry, holds one of the wrong type, names an unknown output, or (in
    format 1) a normalisation other than its transform's: one CheckpointError naming the file."""
    teacher = tmp_path / "teacher.pt"
    shutil.copy(FIXTURE / "teacher.pt", teacher)
    ckpt = load_checkpoint(teacher)
    card = read_card(ckpt, teacher).to_dict()
    cases = {
        "lacks": ({k: v for k, v in card.items() if k != "class_names"}, "lacks the model card entry 'class_names'"),
        "typed": ({**card, "embed_dim": "8"}, "model card entry 'embed_dim' is a str"),
        "outputs": ({**card, "outputs": ["logits", "attention"]}, "outputs must be logits and any of"),
        "thresholds": ({**card, "thresholds": {"values": [0.5] * 3}}, "thresholds hold 3 values for 10 classes"),
    }
    for name, (entries, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, {"card": entries, "model": ckpt["model"]})
        with pytest.raises(CheckpointError, match=message) as err:
            load_model(path)
        assert str(path) in str(err.value), name
    legacy = {k: v for k, v in ckpt.items() if k != "format_version"}  # format 1, normalisation changed by hand
    legacy["normalisation"] = {"mean": [0.0] * 3, "std": [1.0] * 3}
    save_checkpoint(tmp_path / "legacy.pt", {**legacy, "format_version": 1})
    with pytest.raises(CheckpointError, match="normalisation disagrees with its transform"):
        load_model(tmp_path / "legacy.pt")
    proc = run_cli_in_process(["evaluate", str(tmp_path / "lacks.pt")])
    assert_one_line_error(proc, "lacks the model card entry 'class_names'")


def test_a_card_holding_keys_removed_since_is_still_read(tmp_path):
    """A card's config is read as today's schema reads it: a key (and a cache sub-key) that the
    schema no longer has is dropped, not refused, so evaluate scores the model as before."""
    teacher = tmp_path / "teacher.pt"
    shutil.copy(FIXTURE / "teacher.pt", teacher)
    ckpt = load_checkpoint(teacher)
    card = read_card(ckpt, teacher).to_dict()
    card["config"] = {**card["config"], "removed_key": 3, "cache": {**card["config"]["cache"], "removed_field": True}}
    old = tmp_path / "old.pt"
    save_checkpoint(old, {"card": card, "model": ckpt["model"], "format_version": 2})
    loaded = load_model(old)
    assert "removed_key" in loaded.card.config  # the card itself keeps what it recorded
    cfg = loaded.card.config_with(batch_size=7, data_root=None)
    assert cfg.batch_size == 7 and cfg.img_size == loaded.card.img_size and "removed_field" not in cfg.cache
    assert evaluate(old)["metrics"] == evaluate(teacher)["metrics"]  # the same weights, data and pipeline


@pytest.mark.slow
def test_every_command_reads_a_format_1_teacher(tmp_path):
    """dump-targets, verify and an online student take the format-1 teacher.pt like a new one:
    the cache records the sha256 of that file, and verify replays it."""
    teacher = tmp_path / "teacher.pt"
    shutil.copy(FIXTURE / "teacher.pt", teacher)
    common = ["-c", str(CONFIG), "--no-progress"]
    for args in (
        ["dump-targets", *common, "-t", str(teacher), "-o", str(tmp_path / "cache")],
        ["verify", str(tmp_path / "cache"), "-t", str(teacher), "-k", "8"],
        ["distill-student", *common, "-t", str(teacher), "-o", str(tmp_path / "online")],
    ):
        proc = run_cli_in_process(args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["spec"]["teacher_sha256"] == load_model(teacher).sha256
    assert (
        load_model(tmp_path / "online" / "student.pt").card.provenance["distill"]["teacher_sha256"] == load_model(teacher).sha256
    )


def test_run_files_name_every_file_of_a_run(tmp_path):
    from mlkd_cache.runtime.runlog import RunFiles

    files = RunFiles(tmp_path, "student")
    assert (files.checkpoint.name, files.final.name, files.metrics.name, files.steps.name) == (
        "checkpoint.pt",
        "student.pt",
        "metrics.jsonl",
        "steps.jsonl",
    )
    with pytest.raises(ValueError, match="no final checkpoint"):
        _ = RunFiles(Path(tmp_path)).final
