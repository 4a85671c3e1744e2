"""benchmarks/kd_study.py --quick: every row of the KD study runs, and the table's arithmetic
(paired differences, dump cost per student) is what the runs recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("kd-study")
    every_row = "no-kd,l2d-online,l2d-offline,l2d-compact,mld-offline,mpscd-offline,mld-online,l2d-ensemble"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "kd_study.py"),
        "--quick",
        "--json",
        "--work",
        str(work),
        "--rows",
        every_row,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), work, cmd


def test_every_row_ran_with_every_seed(study):
    result, work, _ = study
    names = [r["name"] for r in result["rows"]]
    assert names == [
        "no KD",
        "L2D online fresh",
        "L2D offline V=1",
        "L2D offline V=2",
        "L2D offline V=2 int8",
        "MLD offline V=2",
        "MPSCD offline V=2",
        "MLD online fresh",
        "L2D offline V=2 teacher B",
        "L2D offline V=2 teachers A+B",
    ]
    assert result["seeds"] == [0, 1]
    for row in result["rows"]:
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        for run in row["runs"]:
            assert 0.0 < run["test"]["mAP"] <= 100.0 and 0.0 < run["val_mAP"] <= 100.0
            assert run["seconds"] > 0
    assert 0.0 < result["teacher"]["test"]["mAP"] <= 100.0
    terms = {r["name"]: set(r["loss_terms"]["last_epoch"]) for r in result["rows"]}
    assert terms["no KD"] == {"bce"} and terms["MLD online fresh"] == {"bce", "mld"}
    assert terms["L2D offline V=1"] == terms["L2D online fresh"] == {"bce", "mld", "led_cd", "led_id"}
    assert terms["MPSCD offline V=2"] == {"bce", "mld", "mpscd_pcrd", "mpscd_pcsd"}
    assert terms["L2D offline V=2 teacher B"] == terms["L2D offline V=1"]
    assert terms["L2D offline V=2 teachers A+B"] == {"bce", *(f"t{k}/{t}" for k in (1, 2) for t in ("mld", "led_cd", "led_id"))}


def test_ensemble_rows_compare_with_the_better_single_teacher_chosen_on_val(study):
    """Teacher B is the config with seed + 1 (its own folder and cache of the same views); the
    student of both is paired with the single-teacher student of higher val mAP."""
    result, work, _ = study
    assert result["teacher_b"]["changes"] == {"seed": 1} and result["teacher_b"]["arch"] == result["teacher"]["arch"]
    assert result["teacher_b"]["test"]["mAP"] != result["teacher"]["test"]["mAP"]  # another teacher
    assert 0.0 < result["ensemble_teacher"]["test"]["mAP"] <= 100.0
    assert (work / "teacher-b" / "teacher.pt").is_file() and (work / "cache-b-v2" / "manifest.json").is_file()
    rows = {r["name"]: r for r in result["rows"]}
    (c,) = result["ensembles"]
    singles = [rows["L2D offline V=2"], rows["L2D offline V=2 teacher B"]]
    better = max(singles, key=lambda r: r["val_mAP"]["mean"])
    assert c["better_single"] == better["name"] and c["ensemble_row"] == "L2D offline V=2 teachers A+B"
    both = [r["test"]["mAP"] for r in rows[c["ensemble_row"]]["runs"]]
    assert c["vs_better_single"]["per_seed"] == pytest.approx([a - r["test"]["mAP"] for a, r in zip(both, better["runs"])])
    assert rows["L2D offline V=2 teacher B"]["vs_online_fresh"] is None  # the online row is teacher A's


def test_paired_differences_and_dump_cost_are_the_runs_arithmetic(study):
    result, _, _ = study
    rows = {r["name"]: r for r in result["rows"]}
    base = [r["test"]["mAP"] for r in rows["no KD"]["runs"]]
    assert rows["no KD"]["vs_no_kd"] is None and rows["no KD"]["vs_online_fresh"] is None
    l2d = rows["L2D offline V=2"]
    mine = [r["test"]["mAP"] for r in l2d["runs"]]
    online = [r["test"]["mAP"] for r in rows["L2D online fresh"]["runs"]]
    assert l2d["vs_no_kd"]["per_seed"] == pytest.approx([a - b for a, b in zip(mine, base)])
    assert l2d["vs_online_fresh"]["per_seed"] == pytest.approx([a - b for a, b in zip(mine, online)])
    assert rows["MLD offline V=2"]["vs_online_fresh"]["per_seed"] == pytest.approx(
        [a["test"]["mAP"] - b["test"]["mAP"] for a, b in zip(rows["MLD offline V=2"]["runs"], rows["MLD online fresh"]["runs"])]
    )
    assert rows["MPSCD offline V=2"]["vs_online_fresh"] is None  # no online MPSCD row
    # V=2 serves L2D, MLD, MPSCD and the ensemble with 2 seeds each; V=1 only L2D
    assert l2d["dump"]["students"] == 8 and rows["L2D offline V=1"]["dump"]["students"] == 2
    assert l2d["dump"]["seconds_per_student"] == pytest.approx(l2d["dump"]["seconds"] / 8)
    assert result["dumps"]["2"]["bytes"] > result["dumps"]["1"]["bytes"]
    # the compact row: its own int8 cache, per-view figures, paired with the float16 row of its V
    compact = rows["L2D offline V=2 int8"]
    assert compact["dump"]["students"] == 2 and result["dumps"]["2int8"]["bytes"] < result["dumps"]["2"]["bytes"]
    assert compact["dump"]["bytes_per_view"] == pytest.approx(result["dumps"]["2int8"]["bytes"] / (96 * 2))
    assert compact["dump"]["ms_per_view"] == pytest.approx(1000 * result["dumps"]["2int8"]["seconds"] / (96 * 2))
    assert compact["vs_config_precision"]["row"] == "L2D offline V=2"
    assert compact["vs_config_precision"]["per_seed"] == pytest.approx(
        [a["test"]["mAP"] - b["test"]["mAP"] for a, b in zip(compact["runs"], l2d["runs"])]
    )


def test_another_teacher_b_is_refused_in_a_folder_of_the_first(study):
    _, work, cmd = study
    proc = subprocess.run([*cmd, "--teacher-b", "seed=2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "holds ensemble runs of another teacher B" in proc.stderr, proc.stderr
    proc = subprocess.run([*cmd, "--rows", "l2d-offline", "--teacher-b", "seed=2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "add l2d-ensemble to --rows" in proc.stderr, proc.stderr


def test_rerun_reuses_finished_runs(study):
    result, _, cmd = study
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout)
    assert "training" not in proc.stderr and "seed 0 ..." not in proc.stderr
    assert [r["runs"] for r in again["rows"]] == [r["runs"] for r in result["rows"]]


def test_the_voc_benchmark_runs_every_row_on_real_photographs(tmp_path):
    """--benchmark voc-rf144 --quick: the same rows on the first rows of the VOC 2007 rf144 files
    (real photographs, the shipped voc-rf144 config), read by the csv loader with its val file."""
    from ..conftest import shared_data

    shared_data("voc2007-rf144")
    cmd = [sys.executable, str(REPO / "benchmarks" / "kd_study.py"), "--quick", "--json", "--benchmark", "voc-rf144"]
    proc = subprocess.run(
        [*cmd, "--work", str(tmp_path)], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["config"] == "voc-rf144/resnet10t_to_test_resnet_l2d.py"
    assert (result["train_size_students"], result["train_size_teacher"]) == (96, 96)
    assert [r["name"] for r in result["rows"]][:3] == ["no KD", "L2D online fresh", "L2D offline V=1"]
    for row in result["rows"]:
        assert all(0.0 < run["test"]["mAP"] <= 100.0 and 0.0 < run["val_mAP"] <= 100.0 for run in row["runs"])
    # every run records its per-class test AP, whose mean over the classes with test positives is its mAP
    for row in result["rows"]:
        for run in row["runs"]:
            aps = [ap for ap in run["test_per_class_ap"].values() if ap == ap]  # NaN: no positive in the test rows
            assert len(run["test_per_class_ap"]) == 20
            assert sum(aps) / len(aps) == pytest.approx(run["test"]["mAP"], rel=1e-9)
    assert sum(c["positives"] for c in result["classes"].values()) >= 96
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from kd_study import render
    finally:
        sys.path.pop(0)
    table = render(result)
    assert "test AP by class group" in table and "Δ L2D online fresh" in table and "person" in table


def _study_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import kd_study
    finally:
        sys.path.pop(0)
    return kd_study


def test_rows_filter_keeps_no_kd_and_the_families_asked_for():
    kd = _study_module()
    rows = kd.study_rows([1, 4], [4], kinds=("l2d-offline", "mld-online"))
    assert [r.name for r in rows] == ["no KD", "L2D offline V=1", "L2D offline V=4", "MLD online fresh"]
    assert [r.name for r in kd.study_rows([1], [4])][-3:] == [
        "L2D offline V=4",
        "L2D offline V=4 teacher B",
        "L2D offline V=4 teachers A+B",
    ]
    assert len(kd.study_rows([1], [4])) == 9  # L2D offline V=4 joins as the ensemble's single-teacher pair
    only = kd.study_rows([4, 16], [16], kinds=("l2d-ensemble",))
    assert [r.name for r in only] == ["no KD", "L2D offline V=16", "L2D offline V=16 teacher B", "L2D offline V=16 teachers A+B"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kd_study.py"), "--rows", "l2d-ofline"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown l2d-ofline" in proc.stderr


def test_class_profile_and_groups():
    kd = _study_module()
    labels = [[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 1, 0]]  # a: 3 images, 2 with others; b: 2, 1; c: 1, 1
    profile = kd.class_profile(["a", "b", "c"], labels)
    assert profile == {
        "a": {"positives": 3, "with_others": 2 / 3},
        "b": {"positives": 2, "with_others": 0.5},
        "c": {"positives": 1, "with_others": 1.0},
    }
    groups = kd.class_groups(profile)
    assert groups == {"rare": ["c"], "frequent": ["a"], "co-occurring": ["c"], "mostly alone": ["b"]}
    run = {"test_per_class_ap": {"a": 10.0, "b": float("nan"), "c": 30.0}}
    assert kd.group_ap(run, ["a", "b", "c"]) == 20.0
