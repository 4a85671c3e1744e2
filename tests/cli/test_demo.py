"""`mlkd-cache demo`: all three stages on digits, one table, artefacts where it says, reuse."""

from __future__ import annotations

import json

import pytest

from mlkd_cache.engine.checkpoint import load_checkpoint
from tests.conftest import assert_one_line_error, run_cli_in_process, tiny_config


def test_demo_runs_three_stages_prints_table_and_reuses(tmp_path):
    cfg = tiny_config(tmp_path, cache="dict(views=2)", max_epoch_t="1", max_epoch_s="1")
    out = tmp_path / "demo"
    first = run_cli_in_process(["demo", "-c", str(cfg), "-o", str(out), "--no-progress"])
    assert first.returncode == 0, first.stderr
    table = [line for line in first.stdout.splitlines() if line.startswith(("teacher ", "student "))]
    assert [line.split("  ")[0] for line in table] == ["teacher test_resnet"] + ["student test_resnet"] * 4
    for loss in ("BCE (no KD)", "BCE + MLD ", "BCE + MLD + LED", "BCE + MLD + MPSCD"):
        assert any(loss in line for line in table), (loss, table)
    # every student: its gap to the teacher; every distilled one: its paired difference to no KD
    cells = [line[44:].split() for line in table]  # after the model (24) and loss (18) columns
    teacher_map, no_kd_map = float(cells[0][0]), float(cells[1][0])
    assert len(cells[0]) == 4  # mAP, OF1, CF1, time: no gap for the teacher itself
    for row in cells[1:]:
        assert float(row[3]) == pytest.approx(float(row[0]) - teacher_map, abs=0.011), row
    assert len(cells[1]) == 5  # no KD: no difference to itself
    exact = {
        r: load_checkpoint(out / f"student-{r}" / "student.pt")["metrics"]["mAP"] for r in ("vanilla", "mld", "l2d", "mpscd")
    }
    for recipe, row in zip(("mld", "l2d", "mpscd"), cells[2:]):
        assert float(row[4].rstrip(",")) == pytest.approx(float(row[0]) - no_kd_map, abs=0.011), row
        assert row[5:7] == ["beat", "on"] and row[7] == ("1/1" if exact[recipe] > exact["vanilla"] else "0/1"), row
    assert (out / "cache" / "manifest.json").is_file() and (out / "cache" / "prototypes.pt").is_file()
    for recipe in ("vanilla", "mld", "l2d", "mpscd"):
        student = out / f"student-{recipe}" / "student.pt"
        assert student.is_file() and str(student) in first.stdout
    terms = json.loads((out / "student-l2d" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss/bce", "loss/mld", "loss/led_cd", "loss/led_id"} <= set(terms)
    assert "loss/mld" not in json.loads((out / "student-vanilla" / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"training curves: {out / 'plot.png'}" in first.stdout  # every run drawn (tests/cli/test_plot.py)
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = run_cli_in_process(["demo", "-c", str(cfg), "-o", str(out), "--no-progress"])
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(reused)") == 6  # the cache, the teacher and four students
    same = [line for line in again.stdout.splitlines() if line.startswith(("teacher ", "student "))]
    assert [line[:-9] for line in same] == [line[:-9] for line in table]  # metrics identical, times aside


def test_demo_rejects_unknown_recipe(tmp_path):
    proc = run_cli_in_process(["demo", "-o", str(tmp_path / "d"), "--students", "vanilla,l3d"])
    assert_one_line_error(proc, r"--students.*'l3d'.*vanilla, mld, l2d, mpscd")
    assert not (tmp_path / "d").exists()
