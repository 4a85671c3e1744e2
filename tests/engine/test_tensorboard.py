"""--tensorboard: teacher-train and distill-student mirror steps.jsonl and metrics.jsonl into
TensorBoard event files in OUT/tensorboard/, without moving a trained weight; a resume continues
the curves; without the package the flag is refused before any work."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the test extra has it
from torch.utils.tensorboard import SummaryWriter

from mlkd_cache.runtime.checkpoint import load_checkpoint
from mlkd_cache.runtime.runlog import MetricsLog, RunFiles, StepLog

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

STEPS_PER_EPOCH = 6  # the tiny recipe: 96 train samples, batch 16
Points = Dict[str, List[Tuple[int, float]]]


def blocked_tensorboard(mp: pytest.MonkeyPatch) -> None:
    """Make ``import tensorboard`` and ``from torch.utils.tensorboard import ...`` fail, as
    without the package (``None`` in ``sys.modules`` stops an import)."""
    for name in ("tensorboard", "torch.utils.tensorboard"):
        mp.setitem(sys.modules, name, None)


def read_events(out: Path) -> Points:
    """Every scalar of OUT/tensorboard/ as TensorBoard reads it: tag -> [(step, value)]."""
    acc = EventAccumulator(str(RunFiles(out).tensorboard))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def from_jsonl(out: Path) -> Points:
    """What the event files must hold: every numeric entry of steps.jsonl and metrics.jsonl at
    the global step ((epoch - 1) * steps per epoch + step; an epoch's row at its last step),
    rounded to float32 as TensorBoard stores scalars."""
    points: Points = {}
    files = RunFiles(out)
    logs = (("step", StepLog(files.steps).read(), ("epoch", "step")), ("epoch", MetricsLog(files.metrics).read(), ("epoch",)))
    for prefix, rows, axis in logs:
        for row in rows:
            step = (row["epoch"] - 1) * STEPS_PER_EPOCH + row.get("step", STEPS_PER_EPOCH)
            for key, value in row.items():
                if key not in axis:
                    points.setdefault(f"{prefix}/{key}", []).append((step, float(np.float32(value))))
    return points


def train(args: List[str]) -> None:
    proc = run_cli_in_process([*args, "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny 2-epoch teacher, logging every step, trained with --tensorboard and without it
    (the latter with the package blocked: a run without the flag never imports it)."""
    tmp = tmp_path_factory.mktemp("tensorboard")
    cfg_path = tiny_config(tmp, log_every="1")
    with_tb, without = tmp / "with", tmp / "without"
    train(["teacher-train", "-c", str(cfg_path), "-o", str(with_tb), "--tensorboard"])
    with pytest.MonkeyPatch.context() as mp:
        blocked_tensorboard(mp)
        train(["teacher-train", "-c", str(cfg_path), "-o", str(without)])
    return SimpleNamespace(tmp=tmp, cfg_path=cfg_path, with_tb=with_tb, without=without)


def test_event_files_hold_the_values_of_the_jsonl_logs(runs):
    events = read_events(runs.with_tb)
    assert events == from_jsonl(runs.with_tb)
    # every step and every epoch, on one axis; the loss, its term, lr, mAP, F1s and throughput
    assert [s for s, _ in events["step/loss"]] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [s for s, _ in events["epoch/mAP"]] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    expected_tags = {"step/loss", "step/bce", "step/lr", "epoch/loss", "epoch/loss/bce", "epoch/lr", "epoch/mAP"}
    assert expected_tags | {"epoch/OF1_topk", "epoch/CF1@0.5", "epoch/train_samples_per_s"} <= set(events)
    assert 0 < events["epoch/mAP"][-1][1] <= 100 and events["step/lr"][0][1] > 0
    assert not RunFiles(runs.without).tensorboard.exists()


def test_logging_moves_no_weight(runs):
    logged = load_checkpoint(runs.with_tb / "teacher.pt")["model"]
    plain = load_checkpoint(runs.without / "teacher.pt")["model"]
    assert logged.keys() == plain.keys()
    different = [k for k in logged if not torch.equal(logged[k], plain[k])]
    assert not different, different
    assert StepLog(RunFiles(runs.with_tb).steps).read() == StepLog(RunFiles(runs.without).steps).read()


def test_resume_continues_the_curves_and_hides_a_killed_runs_extra_points(tmp_path):
    cfg_path = tiny_config(tmp_path, log_every="1")
    out = tmp_path / "run"
    train(["teacher-train", "-c", str(cfg_path), "-o", str(out), "--tensorboard", "--set", "stop_epoch_t=1"])
    # what a run killed in epoch 2 would have left behind: points past its last checkpoint
    time.sleep(1.1)  # event files are read in name order, which starts with the second they were opened in
    stale = SummaryWriter(str(RunFiles(out).tensorboard))
    for step in range(STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH + 4):
        stale.add_scalar("step/loss", -1.0, step)
    stale.close()
    time.sleep(1.1)
    train(["teacher-train", "-c", str(cfg_path), "-o", str(out), "--tensorboard", "--resume", "--set", "stop_epoch_t=2"])

    assert len(list(RunFiles(out).tensorboard.iterdir())) == 3
    events = read_events(out)
    assert events == from_jsonl(out)
    assert [s for s, _ in events["step/loss"]] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [s for s, _ in events["epoch/loss"]] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert all(v > 0 for _, v in events["step/loss"])


def test_distill_student_logs_its_distillation_terms(runs):
    out = runs.tmp / "student"
    teacher_pt = runs.with_tb / "teacher.pt"
    train(
        [
            "distill-student",
            "-c",
            str(runs.cfg_path),
            "--teacher",
            str(teacher_pt),
            "--fresh-views",
            "-o",
            str(out),
            "--tensorboard",
        ]
    )
    events = read_events(out)
    assert events == from_jsonl(out)
    terms = ("bce", "led_cd", "led_id", "mld")  # the seed format's L2D: hard labels + LED + MLD
    assert {f"step/{t}" for t in terms} | {f"epoch/loss/{t}" for t in terms} <= set(events)
    assert [s for s, _ in events["step/mld"]] == list(range(1, 2 * STEPS_PER_EPOCH + 1))


@pytest.mark.parametrize(
    "command",
    [["teacher-train"], ["distill-student", "--no-kd"]],
    ids=["teacher-train", "distill-student"],
)
def test_without_the_package_the_flag_is_one_line_and_nothing_trains(tmp_path, monkeypatch, command):
    cfg_path = tiny_config(tmp_path)
    out = tmp_path / "run"
    blocked_tensorboard(monkeypatch)
    proc = run_cli_in_process([*command, "-c", str(cfg_path), "-o", str(out), "--tensorboard", "--no-progress"])
    assert_one_line_error(proc, r"\(--tensorboard\) needs tensorboard: pip install 'mlkd-cache\[tensorboard\]'$")
    assert not out.exists()  # no checkpoint, no logs: refused before the output folder was made
