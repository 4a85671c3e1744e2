"""`mlkd-cache demo`: all three stages on digits, one table, artefacts where it says, reuse."""

from __future__ import annotations

import json

import pytest

from mlkd_cache.commands import demo
from mlkd_cache.errors import ConfigError
from mlkd_cache.runtime.checkpoint import load_checkpoint
from tests.conftest import assert_one_line_error, run_cli_in_process, tiny_config


@pytest.mark.slow
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
    exact = {r: load_checkpoint(out / f"student-{r}" / "student.pt")["metrics"]["mAP"] for r in ("no-kd", "mld", "l2d", "mpscd")}
    for recipe, row in zip(("mld", "l2d", "mpscd"), cells[2:]):
        assert float(row[4].rstrip(",")) == pytest.approx(float(row[0]) - no_kd_map, abs=0.011), row
        assert row[5:7] == ["beat", "on"] and row[7] == ("1/1" if exact[recipe] > exact["no-kd"] else "0/1"), row
    assert (out / "cache" / "manifest.json").is_file() and (out / "cache" / "prototypes.pt").is_file()
    for recipe in ("no-kd", "mld", "l2d", "mpscd"):
        student = out / f"student-{recipe}" / "student.pt"
        assert student.is_file() and str(student) in first.stdout
    terms = json.loads((out / "student-l2d" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss/bce", "loss/mld", "loss/led_cd", "loss/led_id"} <= set(terms)
    assert "loss/mld" not in json.loads((out / "student-no-kd" / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"training curves: {out / 'plot.png'}" in first.stdout  # every run drawn (tests/cli/test_plot.py)
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = run_cli_in_process(["demo", "-c", str(cfg), "-o", str(out), "--no-progress"])
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(reused)") == 6  # the cache, the teacher and four students
    same = [line for line in again.stdout.splitlines() if line.startswith(("teacher ", "student "))]
    assert [line[:-9] for line in same] == [line[:-9] for line in table]  # metrics identical, times aside


@pytest.mark.slow  # run_cli_in_process('demo', ...): tests/test_markers.py counts it heavy
def test_demo_rejects_unknown_recipe(tmp_path):
    proc = run_cli_in_process(["demo", "-o", str(tmp_path / "d"), "--students", "no-kd,l3d"])
    assert_one_line_error(proc, r"--students.*'l3d'.*no-kd, mld, l2d, mpscd")
    assert not (tmp_path / "d").exists()
    # the baseline's old name is no recipe any more: the same error, with the choices
    proc = run_cli_in_process(["demo", "-o", str(tmp_path / "d"), "--students", "vanilla"])
    assert_one_line_error(proc, r"--students: unknown recipe 'vanilla'; choose from no-kd, mld, l2d, mpscd")
    assert not (tmp_path / "d").exists()


def test_parse_students():
    assert demo.parse_students(" no-kd, l2d,,") == ["no-kd", "l2d"]
    assert demo.parse_students(",".join(demo.DEFAULT_STUDENTS)) == ["no-kd", "mld", "l2d", "mpscd"]
    with pytest.raises(ConfigError, match=r"^--students: no recipe given; choose from no-kd, mld, l2d, mpscd$"):
        demo.parse_students(" , ")
    with pytest.raises(ConfigError, match=r"^--students: unknown recipe 'vanilla'; choose from no-kd, mld, l2d, mpscd$"):
        demo.parse_students("mld,vanilla")


def _row(recipe, loss, seed, m_ap, seconds=1.0):
    model = "teacher resnet10t" if recipe == "teacher" else "student test_resnet"
    metrics = {"mAP": m_ap, "OF1_topk": m_ap - 1, "CF1_topk": m_ap - 2}
    return {"model": model, "loss": loss, "recipe": recipe, "seed": seed, "metrics": metrics, "wall_time_s": seconds}


def test_results_table_pairs_each_seed_with_the_no_kd_student_of_that_seed():
    rows = [_row("teacher", "BCE", 0, 80.0, 10.0)]
    rows += [_row("no-kd", "BCE (no KD)", s, m) for s, m in ((0, 50.0), (1, 52.0), (2, 51.0))]
    rows += [_row("mld", "BCE + MLD", s, m) for s, m in ((0, 51.0), (1, 54.0), (2, 50.0))]  # diffs 1, 2, -1
    lines = demo.results_table(rows, seeds=3)
    assert lines[0].split()[:5] == ["model", "loss", "mAP", "OF1", "CF1"] and set(lines[1]) == {"-"}
    teacher, no_kd, mld = lines[2:5]
    assert teacher.startswith("teacher resnet10t") and "80.00 ±   nan" not in teacher
    assert "-29.00" in no_kd and "beat" not in no_kd  # gap to the teacher; no difference to itself
    assert "51.67 ±  2.08" in mld and "-28.33" in mld
    assert "+0.67 ± 1.53, beat on 2/3" in mld  # mean and std of 1, 2, -1
    assert lines[5:] == [
        "",
        "test mAP per seed (0, 1, 2), BCE (no KD): 50.00 / 52.00 / 51.00",
        "test mAP per seed (0, 1, 2), BCE + MLD: 51.00 / 54.00 / 50.00",
    ]
    alone = demo.results_table([rows[0], rows[4]], seeds=1)  # no no-KD student: nothing to pair with
    assert alone[-1].split()[-2] == "—"
