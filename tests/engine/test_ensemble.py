"""Several teachers, one student: ``distill-student --cache A --cache B``.

Two tiny teachers of different seeds and embedding sizes (E = 32 and 16) dump the same views.
The ensemble student's terms at a step are, teacher by teacher, half the terms a student of one
teacher computes from the same state and batch; steps.jsonl and metrics.jsonl log each teacher's
terms; MPSCD gets each teacher's own prototypes; caches of other views, seed or classes, a cache
given twice, an ensemble with --no-kd or --teacher, a teacher without embeddings for LED, and a
resume from another set of caches are refused in one line.
"""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest
import torch

from mlkd_cache.cache.prototypes import load_or_compute_prototypes
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config, parse_override
from mlkd_cache.data.transforms import model_input
from mlkd_cache.runtime.runlog import MetricsLog
from mlkd_cache.runtime.students import DistillTrainer

from ..conftest import assert_one_line_error, first_step_terms, run_cli_in_process, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

L2D_TERMS = ("led_cd", "led_id", "mld")
MPSCD = (
    "dict(name='MPSCD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict()), "
    "lambda_le=1.0, le_dis=dict(name='MPSCD', para=dict())))"
)
LOGITS_ONLY_FACTORY = """
import timm
import torch

def logits_only():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10), [str(d) for d in range(10)]
"""


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Teacher A (seed 0, E = 32) and teacher B (seed 1, E = 16), each trained 1 epoch and dumped
    over the same 2 views (float32); the student config logs every step."""
    tmp = tmp_path_factory.mktemp("ensemble")
    cfg_path = tiny_config(
        tmp, cache="dict(views=2, dtype='float32')", batch_size="16", max_epoch_t="1", max_epoch_s="1", log_every="1"
    )
    cfg = load_config(cfg_path)
    caches = {}
    for name, extra in (("a", {}), ("b", {"seed": 1, "embed_dim": 16})):
        teacher.run(cfg.replace(**extra), tmp / f"teacher-{name}", progress=False)
        dump.run(cfg, tmp / f"teacher-{name}" / "teacher.pt", tmp / f"cache-{name}", progress=False)
        caches[name] = tmp / f"cache-{name}"
    return SimpleNamespace(tmp=tmp, cfg_path=cfg_path, cfg=cfg, a=caches["a"], b=caches["b"])


def test_ensemble_terms_are_each_teachers_terms_halved(two):
    """One student state, one batch: the ensemble's t1/* and t2/* terms are exactly half of what a
    student of A alone and of B alone compute (the terms are averaged over teachers)."""
    ensemble = DistillTrainer(two.cfg, two.tmp / "e-terms", cache=[two.a, two.b], progress=False)
    both = first_step_terms(ensemble, world_size=1)
    for name, cache in (("t1", two.a), ("t2", two.b)):
        single = DistillTrainer(two.cfg, two.tmp / f"single-{name}", cache=cache, progress=False)
        alone = first_step_terms(single, world_size=1)
        assert set(alone) == {"bce", *L2D_TERMS}
        for term in L2D_TERMS:
            assert both[f"{name}/{term}"] == pytest.approx(0.5 * alone[term], rel=2.0**-20), (name, term)
        assert both["bce"] == alone["bce"]  # the same student state and batch
    assert set(both) == {"bce", *(f"t{k}/{t}" for k in (1, 2) for t in L2D_TERMS)}


def test_every_source_gives_one_dict_of_targets_per_teacher(two):
    """The one protocol: a cache, a live teacher (replaying --views 3 of its own) and an ensemble
    each list their teachers as members and return, for a batch of their loader, one dict of
    KDBatch teacher fields per member, the same fields for each."""
    teacher_pt = two.tmp / "teacher-a" / "teacher.pt"
    sources = {
        "cache": DistillTrainer(two.cfg, two.tmp / "p-cache", cache=two.a, progress=False),
        "live": DistillTrainer(two.cfg, two.tmp / "p-live", teacher=teacher_pt, views=3, progress=False),
        "ensemble": DistillTrainer(two.cfg, two.tmp / "p-ensemble", cache=[two.a, two.b], progress=False),
    }
    assert sources["live"].source.views == 3 and sources["live"].card().config["cache"]["views"] == 2
    for name, trainer in sources.items():
        batch = next(iter(trainer.loader))  # uint8 pixels, made the model's input as the loop makes them
        batch = batch._replace(image=model_input(batch.image, trainer.spec, torch.device("cpu")))
        per_teacher = trainer.source.targets(batch, torch.device("cpu"), trainer.train_data.keys)
        assert isinstance(per_teacher, list) and len(per_teacher) == len(trainer.source.members), name
        assert len(per_teacher) == (2 if name == "ensemble" else 1)
        assert all(set(targets) == set(per_teacher[0]) and "z_t" in targets for targets in per_teacher), name
        assert all(targets["z_t"].shape == (len(batch.labels), 10) for targets in per_teacher), name


def test_cli_logs_each_teachers_terms(two):
    out = two.tmp / "student-ab"
    proc = run_cli_in_process(
        [
            "distill-student",
            "-c",
            str(two.cfg_path),
            "--cache",
            str(two.a),
            "--cache",
            str(two.b),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "offline from 2 teachers' caches" in proc.stdout, proc.stdout
    assert "loss bce + t1/led_cd + t1/led_id + t1/mld + t2/led_cd + t2/led_id + t2/mld" in proc.stdout, proc.stdout
    steps = MetricsLog(out / "steps.jsonl").read()
    assert steps, "no step rows"
    for row in steps:
        terms = {k: v for k, v in row.items() if k not in ("epoch", "step", "loss", "lr")}
        assert set(terms) == {"bce", *(f"t{k}/{t}" for k in (1, 2) for t in L2D_TERMS)}
        assert row["loss"] == pytest.approx(sum(terms.values()), rel=1e-6)
        assert all(v > 0 for v in terms.values())
    (epoch,) = MetricsLog(out / "metrics.jsonl").read()
    assert {f"loss/t{k}/mld" for k in (1, 2)} <= set(epoch)
    card = torch.load(out / "student.pt", map_location="cpu", weights_only=True)["card"]["provenance"]["distill"]
    assert card["teachers"] == ["t1", "t2"] and card["source"] == [str(two.a), str(two.b)]
    assert card["teacher_sha256"] == [TargetCache(c).spec.teacher_sha256 for c in (two.a, two.b)]
    assert card["views"] == 2

    # resuming it from another set of caches is refused
    proc = run_cli_in_process(["distill-student", "-c", str(two.cfg_path), "--cache", str(two.a), "-o", str(out), "--resume"])
    assert_one_line_error(proc, "distilled from another teacher sha256")


def test_mpscd_prototypes_per_teacher(two):
    cfg = two.cfg.replace(criterion_t2s_para=parse_override(f"criterion_t2s_para={MPSCD}")[1])
    trainer = DistillTrainer(cfg, two.tmp / "e-mpscd", cache=[two.a, two.b], progress=False)
    for distiller, cache, size in zip(trainer.distillers, (two.a, two.b), (32, 16)):
        want = load_or_compute_prototypes(TargetCache(cache))
        got = distiller.losses["le"].prototypes
        assert tuple(got.shape) == (10, size)
        # the loss normalises the unit-length prototypes it is given once more: float32 rounding (2^-24) apart
        torch.testing.assert_close(got, want, rtol=2.0**-20, atol=2.0**-22)


def test_refusals(two, tmp_path):
    base = ["distill-student", "-c", str(two.cfg_path), "-o", str(tmp_path / "out"), "--no-progress"]

    def refused(extra, match):
        proc = run_cli_in_process(base + extra)
        assert_one_line_error(proc, re.escape(match))
        assert not (tmp_path / "out" / "student.pt").exists()

    cfg = load_config(two.cfg_path)
    pt = two.a.parent / "teacher-a" / "teacher.pt"
    for name, change, words in (
        ("views3", {"cache": {"views": 3}}, "differ in views (3 vs 2)"),
        ("seed5", {"seed": 5}, "differ in seed (5 vs 0)"),
        ("n64", {"dataset_para": {"train_size": 64, "test_size": 48}}, "differ in number of samples (64 vs 96)"),
        ("jpeg", {"cache": {"images": "jpeg", "jpeg_quality": 90}}, "differ in JPEG quality of the image store (90 vs 0)"),
    ):
        other = two.tmp / f"cache-{name}"
        if not other.exists():
            dump.run(cfg.replace(**change), pt, other, progress=False)
        refused(["--cache", str(two.a), "--cache", str(other)], words)
    refused(["--cache", str(two.a), "--cache", str(two.a)], "given twice")
    refused(["--cache", str(two.a), "--cache", str(two.b), "--no-kd"], "with --no-kd give one --cache")
    refused(["--cache", str(two.a), "--cache", str(two.b), "--teacher", str(pt)], "with --teacher give one --cache")

    # a teacher that gives only logits cannot serve LED, named by its cache
    (tmp_path / "user_teachers.py").write_text(LOGITS_ONLY_FACTORY)
    logits_cache = tmp_path / "cache-logits"
    monkey_path = str(tmp_path)
    sys.path.insert(0, monkey_path)
    try:
        dump.run(cfg, "user_teachers:logits_only", logits_cache, progress=False)
    finally:
        sys.path.remove(monkey_path)
        sys.modules.pop("user_teachers", None)
    refused(["--cache", str(two.a), "--cache", str(logits_cache)], f"the cache in {logits_cache} gives only logits")


def test_teacher_agreement_benchmark(two, capsys):
    """benchmarks/teacher_agreement.py: a cache against itself agrees fully (J = 0); two teachers do not."""
    from ..conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import teacher_agreement
    finally:
        sys.path.pop(0)
    assert teacher_agreement.main([str(two.a), str(two.a)]) == 0
    same = capsys.readouterr().out
    assert "mean |p_A - p_B|        0.0000" in same and "0.00 %" in same and "J           0.0000" in same
    teacher_agreement.main([str(two.a), str(two.b)])
    other = capsys.readouterr().out
    assert "1,920 entries (96 samples x 2 views x 10 classes)" in other and re.search(
        r"mean \|p_A - p_B\|\s+0\.(?!0000)\d{4}", other
    ), other
    assert re.search(r"Jensen term J\s+0\.(?!0000)\d{4}", other), other
