"""dump-targets end to end: the cache equals the teacher's own outputs, survives SIGKILL, is the
same under torchrun, refuses mismatches; inspect and verify read it."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mlkd_cache.cache.format import EVAL_PREFIX, MANIFEST_NAME, part_glob
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config
from mlkd_cache.data import build_dataset
from mlkd_cache.data.planning import planning_labels
from mlkd_cache.data.transforms import TransformSpec, fingerprint, model_input
from mlkd_cache.data.views import ViewDataset
from mlkd_cache.runtime.checkpoint import load_model

from ..bounds import target_tolerance
from ..conftest import ONE_THREAD, assert_one_line_error, run_cli, run_cli_in_process, tiny_config, torch_threads

pytestmark = pytest.mark.slow

DUMP = dict(img_size="64", dataset_para="dict(train_size=192, test_size=32)", max_epoch_t="1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config path, teacher.pt) of a 1-epoch test_resnet teacher at 64 px."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg_path = tiny_config(tmp, **DUMP)
    teacher.run(load_config(cfg_path), tmp / "run", progress=False)
    return cfg_path, tmp / "run" / "teacher.pt"


def dump_cfg(cfg_path, **cache):
    overrides = {
        "cache.views": 3,
        "cache.shard_size": 40,
        "cache.fields": ("logits", "features", "label_emb"),  # every output, each compared with the teacher's
        **{f"cache.{k}": v for k, v in cache.items()},
    }
    return load_config(cfg_path, overrides)


def shard_contents(directory: Path):
    """{file: {dataset: array}} plus attrs without the creation time."""
    out = {}
    for path in sorted([*directory.glob(part_glob()), *directory.glob(part_glob(EVAL_PREFIX))]):
        with h5py.File(path, "r") as fh:
            attrs = {k: v for k, v in fh.attrs.items() if k != "created"}
            out[path.name] = ({name: fh[name][()] for name in fh}, attrs)
    return out


def assert_same_cache(a: Path, b: Path):
    ca, cb = shard_contents(a), shard_contents(b)
    assert sorted(ca) == sorted(cb)
    for name in ca:
        (da, attrs_a), (db, attrs_b) = ca[name], cb[name]
        assert sorted(da) == sorted(db), name
        for key in da:
            assert np.array_equal(da[key], db[key]), (name, key)
        assert {k: str(v) for k, v in attrs_a.items()} == {k: str(v) for k, v in attrs_b.items()}, name


@pytest.mark.numeric
def test_round_trip_equals_the_teachers_own_outputs(tmp_path, trained):
    cfg_path, teacher_pt = trained
    cfg = dump_cfg(cfg_path, dtype="float32")
    result = dump.run(cfg, teacher_pt, tmp_path / "cache", progress=False)
    assert result["shards_written"] == 5 and (tmp_path / "cache" / MANIFEST_NAME).is_file()

    cache = TargetCache(tmp_path / "cache")
    data = build_dataset("digits", "train", None, train_size=192, test_size=32)
    views = ViewDataset(
        data, TransformSpec.from_config(cfg), cfg.seed, train=True, views=3, with_fingerprint=True, image_dtype="uint8"
    )
    model = load_model(teacher_pt).model
    rng = np.random.default_rng(1)
    idx = rng.choice(192, size=24, replace=False)
    vw = rng.integers(0, 3, size=24)
    items = [views.get(int(i), int(v)) for i, v in zip(idx, vw)]
    with torch.no_grad():
        out = model(model_input(torch.stack([it[0] for it in items]), views.spec, torch.device("cpu")))
    got = cache.get(idx, vw)
    # the dump ran other batches: each output within float32 rounding plus the recompute bound
    for name, live in (
        ("logits", out.logits),
        ("features", out.features),
        ("tokens", out.label_emb[got["token_sample"], got["token_class"]]),
    ):
        assert got[name].dtype == torch.float32, name
        assert ((got[name] - live).abs() <= target_tolerance("float32", live)).all(), name
    labels = torch.as_tensor(data.labels[idx])
    assert torch.equal(
        torch.sort(got["token_sample"] * 10 + got["token_class"]).values, torch.nonzero(labels).mul(torch.tensor([10, 1])).sum(1)
    )
    fps = np.array([fingerprint(it[0]) for it in items], dtype=np.uint64)
    assert np.array_equal(got["fingerprint"].numpy().view(np.uint64), fps)
    seeds = np.array([views.seed_of(int(i), int(v)) for i, v in zip(idx, vw)], dtype=np.uint64)
    assert np.array_equal(got["view_seed"].numpy().view(np.uint64), seeds)
    assert cache.keys == data.keys and np.array_equal(cache.labels, data.labels)

    # fp16 cache: the same values rounded to fp16
    dump.run(dump_cfg(cfg_path), teacher_pt, tmp_path / "cache16", progress=False)
    got16 = TargetCache(tmp_path / "cache16").get(idx, vw)
    assert got16["logits"].dtype == torch.float16
    torch.testing.assert_close(got16["logits"].float(), out.logits.half().float(), rtol=2e-3, atol=2e-3)


def test_positive_and_dense_agree_and_dry_run_plans_the_real_size(tmp_path, trained):
    cfg_path, teacher_pt = trained
    plan = dump.plan(dump_cfg(cfg_path), teacher_pt)["plan"]
    assert not (tmp_path / "pos").exists()  # a dry run writes nothing
    dump.run(dump_cfg(cfg_path), teacher_pt, tmp_path / "pos", progress=False)
    dump.run(dump_cfg(cfg_path, embedding="dense"), teacher_pt, tmp_path / "dense", progress=False)
    pos, dense = TargetCache(tmp_path / "pos"), TargetCache(tmp_path / "dense")
    idx = np.arange(192)
    vw = np.arange(192) % 3
    a, b = pos.get(idx, vw), dense.get(idx, vw)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["features"], b["features"])
    assert torch.equal(a["tokens"], b["label_emb"][a["token_sample"], a["token_class"]])
    payload = sum(
        arr.nbytes
        for datasets, _ in shard_contents(tmp_path / "pos").values()
        for name, arr in datasets.items()
        if name != "keys"
    )
    assert plan["payload_bytes"] == pytest.approx(payload, rel=0.01)
    assert plan["dense_payload_bytes"] > plan["payload_bytes"]

    # before the teacher exists: sizes from the config's model_t, the same plan
    assert dump.plan(dump_cfg(cfg_path))["plan"] == plan
    # a dataset one does not have, as (N, C, positives per image): the payload depends on the
    # labels only through their count of positives, so spread labels plan the same bytes
    labels = pos.labels
    spread = planning_labels(len(labels), labels.shape[1], labels.sum() / len(labels))
    assert spread.sum() == labels.sum() and not np.array_equal(spread, labels)
    assert pos.spec.plan(spread)["payload_bytes"] == pos.spec.plan(labels)["payload_bytes"] == plan["payload_bytes"]


def test_rerun_skips_complete_shards_and_refuses_another_dump(tmp_path, trained):
    cfg_path, teacher_pt = trained
    out = tmp_path / "cache"
    dump.run(dump_cfg(cfg_path), teacher_pt, out, progress=False)
    again = dump.run(dump_cfg(cfg_path), teacher_pt, out, progress=False)
    assert again["shards_written"] == 0 and again["shards_skipped"] == 5
    before = {p.name: p.read_bytes() for p in out.glob(part_glob())}
    proc = run_cli_in_process(
        [
            "dump-targets",
            "-c",
            str(cfg_path),
            "--teacher",
            str(teacher_pt),
            "-o",
            str(out),
            "--set",
            "cache.shard_size=40",
            "--views",
            "2",
            "--no-progress",
        ]
    )
    assert_one_line_error(proc, r"holds shards of another dump .*--overwrite")
    assert {p.name: p.read_bytes() for p in out.glob(part_glob())} == before


def test_teacher_for_other_settings_is_refused(tmp_path, trained):
    cfg_path, teacher_pt = trained
    proc = run_cli_in_process(
        ["dump-targets", "-c", str(cfg_path), "--teacher", str(teacher_pt), "-o", str(tmp_path / "c"), "--set", "img_size=32"]
    )
    assert_one_line_error(proc, r"trained at img_size 64, config asks for 32")
    assert not (tmp_path / "c").exists()


def _wait_for_shards(out: Path, proc, count: int, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(out.glob(part_glob()))) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the dump ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError(f"{count} shards never appeared")


KILLS = 3  # SIGKILLs landed on one dump before it is allowed to finish


def test_sigkill_at_random_moments_then_rerun_gives_the_uninterrupted_cache(tmp_path, trained):
    """Kill the same dump three times at seeded random moments (after a random number of new
    shards, plus a random delay that lands in a teacher pass or a shard write). After every kill:
    no manifest, no file named .h5 that differs from the uninterrupted dump's; each re-run keeps
    the shards already done; the last re-run ends with the uninterrupted cache."""
    cfg_path, teacher_pt = trained
    reference = tmp_path / "reference"
    with torch_threads(1):  # as the killed processes: the same sums in the same order, the same fp16 bits
        dump.run(dump_cfg(cfg_path, shard_size=16, fields="auto"), teacher_pt, reference, progress=False)  # as the CLI's
    ref_shards = shard_contents(reference)
    one_thread = {**os.environ, **ONE_THREAD}

    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "mlkd_cache",
        "dump-targets",
        "-c",
        str(cfg_path),
        "--teacher",
        str(teacher_pt),
        "-o",
        str(out),
        "--views",
        "3",
        "--set",
        "cache.shard_size=16",
        "--no-progress",
    ]
    rng = random.Random(6)
    done = 0
    for kill in range(KILLS):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=one_thread)
        _wait_for_shards(out, proc, done + rng.randint(1, 3))
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert not (out / MANIFEST_NAME).exists(), f"kill {kill}: the dump finished before it was killed"
        written = shard_contents(out)
        assert done <= len(written) < 12, (kill, done, len(written))
        for name, (data, attrs) in written.items():  # every file named .h5 is complete and right
            ref_data, ref_attrs = ref_shards[name]
            assert all(np.array_equal(data[key], ref_data[key]) for key in ref_data), (kill, name)
            assert {k: str(v) for k, v in attrs.items()} == {k: str(v) for k, v in ref_attrs.items()}
        done = len(written)

    proc = subprocess.run(args, capture_output=True, text=True, env=one_thread)
    assert proc.returncode == 0, proc.stderr
    assert f"{12 - done} shard(s) written, {done} already complete" in proc.stdout
    assert not list(out.glob("*.tmp"))
    assert_same_cache(out, reference)


def test_torchrun_two_ranks_equals_one_process(tmp_path, trained):
    """Two gloo ranks write the cache one process writes, an image store included (shards and
    stored eval parts split over the ranks)."""
    cfg_path, teacher_pt = trained
    # both runs with one thread per process: CPU kernels then sum in the same order, so the
    # fp16-rounded outputs are bit-identical (with 2 threads vs 1 an ulp may flip)
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    common = ["--teacher", str(teacher_pt), "--views", "3", "--set", "cache.shard_size=24", "--images", "raw", "--no-progress"]
    proc = run_cli(["dump-targets", "-c", str(cfg_path), "-o", str(single), *common], env=one_thread)
    assert proc.returncode == 0, proc.stderr
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mlkd_cache",
            "dump-targets",
            "-c",
            str(cfg_path),
            "--teacher",
            str(teacher_pt),
            "-o",
            str(tmp_path / "ddp"),
            "--views",
            "3",
            "--set",
            "cache.shard_size=24",
            "--images",
            "raw",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=one_thread,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("cache ") == 1  # rank 0 alone reports
    ddp = tmp_path / "ddp"
    assert_same_cache(ddp, single)
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())  # one manifest, no .tmp
    # the manifests agree but for the shards' sha256 (each file holds its creation time)
    manifests = [json.loads((d / MANIFEST_NAME).read_text()) for d in (ddp, single)]
    for manifest in manifests:
        for entry in manifest["shards"] + manifest["eval"]["shards"]:
            entry.pop("sha256")
    assert manifests[0] == manifests[1] and len(manifests[0]["eval"]["shards"]) > 1


def test_inspect_and_verify(tmp_path, trained):
    cfg_path, teacher_pt = trained
    out = tmp_path / "cache"
    dump.run(dump_cfg(cfg_path), teacher_pt, out, progress=False)
    proc = run_cli_in_process(["inspect", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "192 samples x 3 views" in proc.stdout and "cached mAP" in proc.stdout and "test_resnet" in proc.stdout
    proc = run_cli_in_process(["verify", str(out), "--teacher", str(teacher_pt), "--samples", "16"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "16/16 equal" in proc.stdout and "verify passed" in proc.stdout

    # drift: change cached logits in place (same size, same attributes) -> verify exits 1
    shard = out / "shard-00000.h5"
    with h5py.File(shard, "r+") as fh:
        fh["logits"][...] = fh["logits"][()] + np.float16(0.5)
    proc = run_cli_in_process(["verify", str(out), "--teacher", str(teacher_pt), "--samples", "192"])
    assert_one_line_error(proc, r"shard-00000.h5 in .* fails its sha256 check")  # the checksum sees it first
    proc = run_cli_in_process(["verify", str(out), "--teacher", str(teacher_pt), "--samples", "192", "--no-verify-checksums"])
    assert proc.returncode == 1 and "verify FAILED" in proc.stderr  # and the teacher comparison too


@pytest.mark.parametrize(
    "config, para, samples, source",
    [
        ("coco/resnet101_to_resnet34_l2d.py", {}, 82081, "COCO 2014 train as in L2D's train_anno.json"),
        ("coco/resnet101_to_resnet34_l2d.py", {"year": 2017}, 118287, "COCO 2017 train: 118,287 images"),
        ("voc/resnet50_to_resnet18_mpscd.py", {}, 5011, "VOC 2007 trainval: 5,011 images"),
        ("nus/resnet101_to_resnet34_l2d.py", {}, 161789, "NUS-WIDE train: 161,789 images"),
    ],
)
def test_dry_run_plans_a_public_dataset_before_the_download(config, para, samples, source):
    """No data root: the published train split stands in for the labels, and says so; less the
    tenth the shipped config's val_split holds out."""
    cfg = load_config(config, {"dataset_para": para} if para else {})
    assert not cfg.data_root and cfg.val_split["fraction"] == 0.1
    plan = dump.plan(cfg, views=8)["plan"]
    assert plan["source"].startswith(source) and plan["source"].endswith(" left for training by val_split")
    kept = samples - round(samples * 0.1)
    assert plan["samples"] == kept and plan["views"] == 8
    assert dump.plan(cfg.replace(val_split={"fraction": 0.0}), views=8)["plan"]["samples"] == samples
    samples = kept
    per_image = {"coco": 2.9, "voc": 1.46, "nus": 2.4}[cfg.dataset]
    assert plan["positive_tokens"] / samples == pytest.approx(per_image, abs=0.03)
    assert 0 < plan["payload_bytes"] < plan["dense_payload_bytes"]


def test_dry_run_cli_without_data_root_names_its_numbers():
    proc = run_cli_in_process(["dump-targets", "-c", "coco/resnet101_to_resnet34_l2d.py", "--dry-run", "--views", "8"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "planned cache: 73873 samples x 8 views in 19 shard(s), positive embeddings, float16"  # val_split: 0.1
    assert lines[-1].startswith("  from       COCO 2014 train as in L2D's train_anno.json: 82,081 images")


@pytest.mark.parametrize("train_size, measured", [(20, 20), (96, 32)])
def test_dry_run_prints_how_many_images_its_jpeg_estimate_measured(tmp_path, train_size, measured):
    """The JPEG size is the mean of 32 images of the split, or of every image of a smaller one;
    the plan records the count and the command prints that count."""
    cfg_path = tiny_config(tmp_path, dataset_para=f"dict(train_size={train_size}, test_size=8)")
    plan = dump.plan(load_config(cfg_path))["plan"]
    assert plan["jpeg_images"] == measured and plan["jpeg_bytes_per_image"] > 0
    proc = run_cli_in_process(["dump-targets", "-c", str(cfg_path), "--dry-run"])
    assert proc.returncode == 0, proc.stderr
    assert f"/image, measured on {measured} images); this dump stores none" in proc.stdout


def test_a_rerun_repairs_a_stored_eval_split_and_keeps_the_shards(tmp_path, trained):
    """A dump with an image store, its manifest gone (a kill before the end), one eval part
    missing and another damaged: the rerun keeps every shard, rewrites those two parts, and the
    cache equals an uninterrupted one; an eval part of an earlier, longer split is removed."""
    cfg_path, teacher_pt = trained
    cfg = dump_cfg(cfg_path, images="jpeg", shard_size=12)  # 32 test canvases: 3 eval parts
    reference, out = tmp_path / "reference", tmp_path / "cache"
    dump.run(cfg, teacher_pt, reference, progress=False)
    dump.run(cfg, teacher_pt, out, progress=False)
    (out / MANIFEST_NAME).unlink()
    (out / "eval-00001.h5").unlink()
    with open(out / "eval-00002.h5", "r+b") as fh:
        fh.truncate(500)
    (out / "eval-00003.h5").write_bytes((out / "eval-00000.h5").read_bytes())  # a leftover of a longer split
    result = dump.run(cfg, teacher_pt, out, progress=False)
    assert result["shards_written"] == 0 and result["shards_skipped"] == 16
    assert sorted(p.name for p in out.glob("eval-*")) == ["eval-00000.h5", "eval-00001.h5", "eval-00002.h5"]
    assert_same_cache(out, reference)
    TargetCache(out, verify_checksums=True).stored_split("eval")


def test_cache_fields_auto_stores_what_the_distiller_reads_and_a_student_needing_more_is_refused(tmp_path, trained):
    """cache.fields = auto (the default) keeps logits and what the config's distiller reads: L2D
    (MLD + LED) the label-wise embeddings, MLD alone the logits alone; a student whose distiller
    reads an output the cache lacks is refused before training, naming it and what works; an
    explicit list may not name an unknown output or leave out the logits."""
    cfg_path, teacher_pt = trained
    small = ["--views", "2", "--set", "cache.shard_size=64", "--no-progress"]
    mld_only = "criterion_t2s_para=dict(name='MLD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict())))"
    for name, extra, outputs in (("l2d", [], ("label_emb", "logits")), ("mld", ["--set", mld_only], ("logits",))):
        out = tmp_path / name
        proc = run_cli_in_process(
            ["dump-targets", "-c", str(cfg_path), "--teacher", str(teacher_pt), "-o", str(out), *small, *extra]
        )
        assert proc.returncode == 0, proc.stderr
        cache = TargetCache(out)
        assert cache.spec.outputs == outputs and cache.spec.feature_dim == 0
        with h5py.File(out / "shard-00000.h5", "r") as fh:
            assert "features" not in fh and ("emb" in fh) == ("label_emb" in outputs)
        plan = run_cli_in_process(
            ["dump-targets", "-c", str(cfg_path), "--teacher", str(teacher_pt), "--dry-run", *small, *extra]
        )
        assert plan.returncode == 0, plan.stderr
        parts = re.search(r"per view +(\S+ \S+) = (.*)", plan.stdout)
        assert parts and [p.rsplit(" ", 2)[0] for p in parts.group(2).split(" + ")] == [
            *(o for o in outputs if o == "logits"),
            *(o for o in outputs if o == "label_emb"),
            "seeds/fingerprints",
            "keys/labels",
        ], plan.stdout

    pkt = (
        "criterion_t2s_para=dict(name='L2D', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict()), "
        "lambda_ft=1.0, ft_dis=dict(name='PKT', para=dict())))"
    )
    refused = run_cli_in_process(
        ["distill-student", "-c", str(cfg_path), "--cache", str(tmp_path / "l2d"), "-o", str(tmp_path / "s"), "--set", pkt]
    )
    assert_one_line_error(
        refused,
        r"PKT \(ft_dis\) needs the teacher's pooled features .* \(the losses that work .*MLD.*\), or dump a cache whose cache.fields holds features",
    )
    assert not (tmp_path / "s").exists()

    args = ["dump-targets", "-c", str(cfg_path), "--teacher", str(teacher_pt), "-o", str(tmp_path / "bad"), *small]
    assert_one_line_error(
        run_cli_in_process([*args, "--set", "cache.fields=['logits', 'embeddings']"]),
        r"config key 'cache.fields' names 'embeddings'.*, not a teacher output; choose among features, label_emb, logits",
    )
    assert_one_line_error(run_cli_in_process([*args, "--set", "cache.fields=['label_emb']"]), r"'cache.fields' must hold logits")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_compact_caches_report_their_error_and_verify(tmp_path, trained, dtype):
    """A bfloat16 or int8 dump is format 4; every shard records the error of storing each output
    (inspect sums it over shards: the bound of the precision holds, logits stay float16), and
    verify passes it against the teacher."""
    cfg_path, teacher_pt = trained
    out = tmp_path / dtype
    args = ["--views", "2", "--set", "cache.shard_size=64", "--set", f"cache.dtype='{dtype}'", "--no-progress"]
    proc = run_cli_in_process(["dump-targets", "-c", str(cfg_path), "--teacher", str(teacher_pt), "-o", str(out), *args])
    assert proc.returncode == 0, proc.stderr
    cache = TargetCache(out)
    assert cache.format_version == 4 and cache.spec.outputs == ("label_emb", "logits")
    # --dry-run plans the bytes the writer wrote, scales included
    planned = dump.plan(load_config(cfg_path, {"cache.shard_size": 64, "cache.dtype": dtype}), teacher_pt, views=2)["plan"]
    written = sum(a.nbytes for datasets, _ in shard_contents(out).values() for name, a in datasets.items() if name != "keys")
    assert planned["payload_bytes"] == written + 8 * cache.num_samples  # the plan counts 8 bytes a key
    shown = run_cli_in_process(["inspect", str(out), "--json"])
    assert shown.returncode == 0, shown.stderr
    errors = json.loads(shown.stdout)["quantisation_error"]
    assert sorted(errors) == ["label_emb", "logits"]
    assert errors["label_emb"]["vectors"] == int(cache.labels.sum()) * 2  # every token of every view
    assert errors["logits"]["vectors"] == cache.num_samples * 2
    # mean relative error per vector: int8 within half a step of max|x| (at most sqrt(E) / 254 of |x|),
    # bfloat16 within 2^-8, the float16 logits within 2^-11
    E = cache.spec.embed_dim
    bound = {"int8": math.sqrt(E) / 254, "bfloat16": 2.0**-8}[dtype]
    assert 0 < errors["label_emb"]["mean_rel"] <= bound and 0 < errors["logits"]["mean_rel"] <= 2.0**-11
    assert f"precision  {dtype} against float32: label_emb max" in run_cli_in_process(["inspect", str(out)]).stdout
    checked = run_cli_in_process(["verify", str(out), "--teacher", str(teacher_pt), "--samples", "16"])
    assert checked.returncode == 0 and "verify passed" in checked.stdout, checked.stdout + checked.stderr
