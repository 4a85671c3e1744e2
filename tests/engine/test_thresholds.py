"""Per-class thresholds end to end: distill-student stores f1 thresholds tuned on val in
student.pt without moving a weight, tune-thresholds writes a copy (-o) or rewrites a checkpoint
with another card and nothing else, evaluate reports the tuned scores, and bad input leaves the
file as it was."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mlkd_cache.commands import distill_student as distill
from mlkd_cache.commands.evaluate import run as evaluate_run
from mlkd_cache.config import load_config
from mlkd_cache.data import has_split
from mlkd_cache.metrics import sigmoid
from mlkd_cache.runtime.checkpoint import load_checkpoint, read_card, update_card
from mlkd_cache.runtime.runlog import MetricsLog
from mlkd_cache.runtime.students import StudentTrainer
from mlkd_cache.runtime.train import Trainer
from mlkd_cache.thresholds import tune_thresholds

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config, torch_threads

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMINGS = ("train_time_s", "train_samples_per_s", "eval_time_s")  # the only entries of a row that vary between runs


def train_student(tmp, name: str, **extra: str) -> dict:
    """A 2-epoch no-KD digits student with a val split of 48 images; the global RNG after it."""
    cfg_path = tiny_config(tmp, dataset_para="dict(train_size=96, val_size=48, test_size=48)", **extra)
    out = tmp / name
    with torch_threads(1):
        distill.run(load_config(cfg_path), out, no_kd=True, progress=False)
    return {"out": out, "rng": torch.get_rng_state(), "config": cfg_path}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return train_student(tmp_path_factory.mktemp("thresholds"), "student")


@pytest.mark.parametrize(
    "dataset, params, splits",
    [
        ("digits", {}, ["train", "val", "test"]),
        ("csv", {"train_file": "t.csv", "test_file": "s.csv"}, ["train", "test"]),
        ("csv", {"train_file": "t.csv", "test_file": "s.csv", "val_file": "v.csv"}, ["train", "val", "test"]),
        ("voc", {}, ["train", "test"]),
    ],
)
def test_has_split(tmp_path, dataset, params, splits):
    path = tmp_path / "c.py"
    path.write_text(f"dataset = {dataset!r}\ndataset_para = {params!r}\n")
    cfg = load_config(path)
    assert [s for s in ("train", "val", "test", "holdout") if has_split(cfg, s)] == splits


def val_logits(path, split: str = "val"):
    scored = evaluate_run(path, split=split, keep_logits=True)
    return scored["logits"], scored["labels"]


def entries(path):
    """A checkpoint's entries with its card apart: (card dict, weights, everything else)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return raw.pop("card"), raw.pop("model"), raw


@pytest.mark.slow
def test_distill_stores_val_thresholds_without_moving_a_weight(student, tmp_path, monkeypatch):
    final = student["out"] / "student.pt"
    card = read_card(load_checkpoint(final), final)
    stored = card.thresholds
    assert stored is not None and stored["split"] == "val" and stored["samples"] == 48 and stored["objective"] == "f1"
    assert len(stored["values"]) == card.num_classes == 10
    # the thresholds are those the checkpoint's own model gets on val through the eval pipeline
    z, y = val_logits(final)
    again = tune_thresholds(sigmoid(z), y, "f1", card.class_names)
    assert stored["values"] == again["values"] and stored["fallback"] == again["fallback"]

    # the same run without the hook: the same weights, logs and RNG, bit for bit; only the card's thresholds differ
    monkeypatch.setattr(StudentTrainer, "final_card", Trainer.final_card)
    plain = train_student(tmp_path, "plain")
    assert torch.equal(plain["rng"], student["rng"])
    card_a, weights_a, rest_a = entries(final)
    card_b, weights_b, rest_b = entries(plain["out"] / "student.pt")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert rest_a == rest_b  # epoch, metrics (of the scored split), format tags
    assert card_b["thresholds"] is None
    assert {**card_a, "thresholds": None} == card_b
    rows_a, rows_b = (MetricsLog(out / "metrics.jsonl").read() for out in (student["out"], plain["out"]))
    assert [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows_a] == [
        {k: v for k, v in r.items() if k not in TIMINGS} for r in rows_b
    ]
    assert "mAP" in rows_a[-1]
    _, last_a, _ = entries(student["out"] / "checkpoint.pt")
    _, last_b, _ = entries(plain["out"] / "checkpoint.pt")
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def assert_only_the_thresholds_differ(a, b) -> None:
    """Checkpoints ``a`` and ``b`` hold the same weights and entries, and cards that differ in
    their thresholds alone."""
    card_a, weights_a, rest_a = entries(a)
    card_b, weights_b, rest_b = entries(b)
    assert weights_a.keys() == weights_b.keys() and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert rest_a == rest_b  # epoch, metrics and the rest kept
    assert {**card_a, "thresholds": None} == {**card_b, "thresholds": None}


@pytest.mark.slow
def test_tune_thresholds_writes_a_copy_or_rewrites_the_card_only(student, tmp_path):
    path = tmp_path / "copy" / "student.pt"
    path.parent.mkdir()
    shutil.copy(student["out"] / "student.pt", path)
    before = path.read_bytes()

    # -o: a copy with the thresholds in its card, the folders above it made; MODEL untouched
    copy = tmp_path / "tuned" / "p90" / "student-p90.pt"
    proc = run_cli_in_process(["tune-thresholds", str(path), "--objective", "precision=0.9", "-o", str(copy)])
    assert proc.returncode == 0, proc.stderr
    assert f"in {copy}" in proc.stdout and "precision=0.9 thresholds tuned on val (48 images)" in proc.stdout
    assert "classes fell back" in proc.stdout and all(f" {key} " in proc.stdout for key in ("OP", "CP", "OF1", "CF1"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in copy.parent.iterdir()) == [copy.name]  # renamed into place, no temporary left
    assert_only_the_thresholds_differ(path, copy)
    stored = entries(copy)[0]["thresholds"]
    assert stored["objective"] == "precision=0.9" and stored["split"] == "val" and stored["samples"] == 48

    # on val, counted here from the split's logits: every class reaches precision 0.9 or keeps at
    # least the precision it has at 0.5; a class that reaches 0.9 nowhere gets its highest
    z, y = val_logits(path)
    p, truth = sigmoid(z).astype(np.float64), y == 1

    def precision(t):
        pred = p >= t
        return np.where(pred.sum(0) > 0, (pred & truth).sum(0) / np.maximum(pred.sum(0), 1), 0.0)

    at_tuned, at_half = precision(np.array(stored["values"])), precision(0.5)
    has = truth.any(0)
    assert (at_tuned[has] >= np.minimum(0.9, at_half[has])).all(), (at_tuned, at_half, stored["fallback"])
    for j, name in enumerate(entries(copy)[0]["class_names"]):
        if name in stored["fallback"] and has[j]:
            assert stored["fallback"][name].startswith("precision=0.9 unreachable, at most")
            assert at_tuned[j] == max(precision(t)[j] for t in np.unique(p[:, j]))

    # an existing -o is refused without --overwrite, in one line, and replaced with it
    copied = copy.read_bytes()
    refused = run_cli_in_process(["tune-thresholds", str(path), "-o", str(copy)])
    assert_one_line_error(refused, rf"-o {copy} exists; .*pass --overwrite")
    assert copy.read_bytes() == copied
    proc = run_cli_in_process(["tune-thresholds", str(path), "--objective", "precision=0.9", "-o", str(copy), "--overwrite"])
    assert proc.returncode == 0, proc.stderr
    assert entries(copy)[0]["thresholds"] == stored  # nothing random

    # without -o, MODEL itself is rewritten (--json: the same thresholds, and the scores before and after)
    proc = run_cli_in_process(["tune-thresholds", str(path), "--objective", "precision=0.9", "--json"])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["out"] == out["checkpoint"] == str(path)
    assert out["thresholds"] == stored and set(out["at_0.5"]) == set(out["at_tuned"]) == {"CP", "CR", "CF1", "OP", "OR", "OF1"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["student.pt"]
    assert_only_the_thresholds_differ(path, copy)
    assert entries(path)[0]["thresholds"] == stored

    # evaluate then reports OF1/CF1 at the stored thresholds, counted here independently
    proc = run_cli_in_process(["evaluate", str(path), "--json"])
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["metrics"]
    z, y = val_logits(path, "test")
    pred, truth = sigmoid(z) >= np.array(stored["values"]), y == 1
    tp_c, pred_c, true_c = (pred & truth).sum(0), pred.sum(0), truth.sum(0)
    op, orc = tp_c.sum() / pred_c.sum(), tp_c.sum() / true_c.sum()
    cp = np.mean(np.where(pred_c > 0, tp_c / np.maximum(pred_c, 1), 0.0))
    cr = np.mean(np.where(true_c > 0, tp_c / np.maximum(true_c, 1), 0.0))
    assert metrics["OF1@tuned"] == pytest.approx(100 * 2 * op * orc / (op + orc), abs=1e-9)
    assert metrics["CF1@tuned"] == pytest.approx(100 * 2 * cp * cr / (cp + cr), abs=1e-9)
    text = run_cli_in_process(["evaluate", str(path), "--split", "val"]).stdout
    assert "tuned OF1 " in text and "precision=0.9 thresholds from the val split (the split scored here" in text


@pytest.mark.slow
def test_bad_input_is_one_line_and_leaves_the_file(student, tmp_path):
    path = tmp_path / "student.pt"
    shutil.copy(student["out"] / "student.pt", path)
    no_val = tmp_path / "voc.pt"  # a model of a dataset without a val split
    shutil.copy(path, no_val)
    card = read_card(load_checkpoint(no_val), no_val)
    update_card(no_val, card.replace(config={**card.config, "dataset": "voc"}))
    cases = [
        (path, ["--objective", "precison=0.9"], r"objective 'precison=0.9' is not valid; use one of f1, precision=P, recall=R"),
        (path, ["--objective", "precision=2"], r"\(0, 1\]"),
        (path, ["--split", "holdout"], r"no 'holdout' split; choose --split among train, val, test"),
        (
            no_val,
            [],
            r"dataset voc .* has no val split; it was trained without val_split: train it with val_split = "
            r"dict\(fraction=0.1, seed=0\) in the config, .*or choose a split with --split \(tuning on the test split leaks",
        ),
    ]
    for target, args, match in cases:
        before = target.read_bytes()
        assert_one_line_error(run_cli_in_process(["tune-thresholds", str(target), *args]), match)
        assert target.read_bytes() == before, args
    assert_one_line_error(
        run_cli_in_process(["tune-thresholds", str(tmp_path / "missing.pt")]), r"checkpoint not found: .*missing\.pt"
    )
    assert not (tmp_path / "missing.pt").exists()


@pytest.mark.slow
def test_a_run_scored_on_val_tunes_on_its_scored_split(tmp_path):
    run = train_student(tmp_path, "scored-on-val", eval_split="'val'")
    final = run["out"] / "student.pt"
    stored = read_card(load_checkpoint(final), final).thresholds
    assert stored["split"] == "val" and stored["samples"] == 48
    z, y = val_logits(final)
    assert stored["values"] == tune_thresholds(sigmoid(z), y, "f1")["values"]
