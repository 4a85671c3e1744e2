"""The two baselines of every KD table: the no-KD student (``distill-student --no-kd``) and the
online teacher on a fresh view every epoch (``--teacher T --fresh-views``, L2D's regime); and
the teacher's own dataset arguments (``dataset_para_t``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config
from mlkd_cache.runtime.checkpoint import load_model
from mlkd_cache.runtime.runlog import MetricsLog
from mlkd_cache.runtime.students import DistillTrainer, NoKDTrainer
from mlkd_cache.runtime.train import Trainer

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 1-epoch teacher trained on 3x the students' canvases (dataset_para_t) and its cache."""
    tmp = tmp_path_factory.mktemp("baselines")
    cfg_path = tiny_config(tmp, dataset_para_t="dict(train_size=288)", cache="dict(views=2)", max_epoch_t="1", log_every="1")
    teacher.run(load_config(cfg_path), tmp / "teacher", progress=False)
    teacher_pt = tmp / "teacher" / "teacher.pt"
    dump.run(load_config(cfg_path), teacher_pt, tmp / "cache", progress=False)
    return SimpleNamespace(tmp=tmp, cfg_path=cfg_path, teacher_pt=teacher_pt, cache=tmp / "cache")


def steps(out: Path):
    return MetricsLog(out / "steps.jsonl").read()


@pytest.fixture(scope="module")
def no_kd_steps(setup):
    """Steps of the no-KD student trained in process by the plain Trainer (the reference)."""
    out = setup.tmp / "no-kd-trainer"
    Trainer(load_config(setup.cfg_path), "s", out, progress=False).fit()
    return steps(out)


def test_teacher_trains_on_dataset_para_t_and_the_cache_on_dataset_para(setup):
    assert load_model(setup.teacher_pt).card.config["dataset_para_t"] == {"train_size": 288}
    # 288 canvases / batch 16 = 18 steps for the teacher; the cache holds the students' 96
    assert len(steps(setup.tmp / "teacher")) == 18
    assert load_config(setup.cfg_path).dataset_params("t")["train_size"] == 288
    assert load_config(setup.cfg_path).dataset_params("s")["train_size"] == 96
    from mlkd_cache.cache.reader import TargetCache

    assert TargetCache(setup.cache).spec.num_samples == 96


def test_no_kd_cli_is_the_plain_student_loop(setup, no_kd_steps):
    """--no-kd: hard-label loss only, a fresh view every epoch, the same steps as Trainer(cfg, 's')."""
    out = setup.tmp / "no-kd"
    proc = run_cli_in_process(["distill-student", "-c", str(setup.cfg_path), "--no-kd", "-o", str(out), "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "without distillation (a fresh view every epoch), loss bce" in proc.stdout, proc.stdout
    assert (out / "student.pt").is_file()
    cli_steps = steps(out)
    assert len(cli_steps) == 2 * 6 and all(set(r) == {"epoch", "step", "loss", "bce", "lr"} for r in cli_steps)

    assert len(no_kd_steps) == len(cli_steps)
    for a, b in zip(cli_steps, no_kd_steps):
        assert a["bce"] == pytest.approx(b["bce"], rel=1e-5), (a, b)
    card = load_model(out / "student.pt").card
    assert card.role == "student" and "distill" not in card.provenance and card.provenance["images"] == "dataset"


def test_online_fresh_views_see_what_the_no_kd_student_sees(setup, no_kd_steps):
    """Fresh views are view = epoch from the student's seed: the same init, order and inputs as
    --no-kd, so the first step's BCE (before any update) is the same; the cached-view online run
    replays the cache's cycle instead."""
    cfg = load_config(setup.cfg_path)
    fresh = DistillTrainer(cfg, setup.tmp / "online-fresh", teacher=setup.teacher_pt, fresh_views=True, progress=False)
    assert fresh.train_data.views is None and fresh.train_data.base_seed == cfg.seed
    assert [fresh.train_data.view_of(i, e) for i in (0, 5) for e in (0, 3)] == [0, 3, 0, 3]
    assert fresh.card().provenance["distill"]["views"] == "fresh"
    fresh.fit()
    cycled = DistillTrainer(cfg, setup.tmp / "online-cycled", teacher=setup.teacher_pt, progress=False)
    assert cycled.train_data.views == 2
    cycled.fit()

    no_kd = no_kd_steps
    first_fresh, first_cycled = steps(setup.tmp / "online-fresh")[0], steps(setup.tmp / "online-cycled")[0]
    assert first_fresh["bce"] == pytest.approx(no_kd[0]["bce"], rel=1e-5)
    assert first_cycled["bce"] != pytest.approx(no_kd[0]["bce"], rel=1e-5)  # other views
    assert {"mld", "led_cd", "led_id"} <= set(first_fresh)
    # later steps differ from no KD: the teacher's terms moved the weights
    assert steps(setup.tmp / "online-fresh")[-1]["bce"] != pytest.approx(no_kd[-1]["bce"], rel=1e-3)


def test_baseline_flags_refuse_sources_they_do_not_use(setup, tmp_path):
    base = ["distill-student", "-c", str(setup.cfg_path), "--no-progress"]
    proc = run_cli_in_process([*base, "--no-kd", "--cache", str(setup.cache), "-o", str(tmp_path / "a")])
    assert_one_line_error(proc, r"holds no images .* drop --cache")  # --no-kd reads only a cache's images
    proc = run_cli_in_process([*base, "--fresh-views", "--cache", str(setup.cache), "-o", str(tmp_path / "b")])
    assert_one_line_error(proc, r"--fresh-views needs --teacher")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_of_a_teacher_refuses_a_changed_dataset_para_t(setup, tmp_path):
    cfg = load_config(setup.cfg_path)
    out = tmp_path / "t"
    Trainer(cfg.replace(max_epoch_t=2, stop_epoch_t=1), "t", out, progress=False).fit()
    from mlkd_cache.errors import CheckpointError

    with pytest.raises(CheckpointError, match="dataset_para_t"):
        Trainer(cfg.replace(max_epoch_t=2, dataset_para_t={"train_size": 192}), "t", out, resume=True, progress=False)


def test_resume_refuses_to_switch_between_no_kd_and_distillation(setup):
    """A distilled run resumed with --no-kd (or the reverse) would silently change its loss."""
    from mlkd_cache.errors import CheckpointError

    cfg = load_config(setup.cfg_path)
    online = setup.tmp / "online-fresh"  # written by the fresh-views test, or here
    if not (online / "checkpoint.pt").exists():
        DistillTrainer(cfg, online, teacher=setup.teacher_pt, fresh_views=True, progress=False).fit()
    with pytest.raises(CheckpointError, match="it was distilled .online.; drop --no-kd"):
        NoKDTrainer(cfg, online, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="trained with --fresh-views, this run has 2 cached views"):
        DistillTrainer(cfg, online, teacher=setup.teacher_pt, resume=True, progress=False)
    plain = setup.tmp / "no-kd-for-resume"
    NoKDTrainer(cfg.replace(max_epoch_s=2, stop_epoch_s=1), plain, progress=False).fit()
    with pytest.raises(CheckpointError, match="a run without distillation .--no-kd."):
        DistillTrainer(cfg.replace(max_epoch_s=2), plain, cache=setup.cache, resume=True, progress=False)


def test_eval_split_val_scores_the_val_split(setup, tmp_path):
    from mlkd_cache.commands.evaluate import run as evaluate_run
    from mlkd_cache.data import build_dataset

    cfg = load_config(setup.cfg_path).replace(eval_split="val", max_epoch_s=1, log_every=0)
    trainer = NoKDTrainer(cfg, tmp_path / "val", progress=False)
    assert trainer.test_data.dataset.split == "val"
    assert len(trainer.test_data) == len(build_dataset("digits", "val", **cfg.dataset_para))
    metrics = trainer.fit()["metrics"]
    assert metrics["mAP"] == pytest.approx(evaluate_run(tmp_path / "val" / "student.pt", split="val")["metrics"]["mAP"], abs=1e-6)


def test_eval_split_val_on_a_dataset_without_one_is_one_line(tmp_path):
    cfg_path = tiny_config(tmp_path)
    proc = run_cli_in_process(
        [
            "teacher-train",
            "-c",
            str(cfg_path),
            "--set",
            "dataset='voc'",
            "--set",
            "eval_split='val'",
            "--data-root",
            str(tmp_path),
            "-o",
            str(tmp_path / "t"),
        ]
    )
    assert_one_line_error(proc, r"eval_split='val': dataset voc has no val split .it has train, test.; set eval_split='test'")
    assert not (tmp_path / "t").exists()
