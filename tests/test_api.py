"""The public API: `mlkd_cache.__all__`, its page (docs/api.md), and the examples that use it."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys

import pytest

import mlkd_cache

from .conftest import ONE_THREAD, REPO, tiny_config

EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def documented_names() -> list:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    return [name.replace("\\_", "_") for name in re.findall(r"^### (\S+)$", page, re.M)]


def test_every_exported_name_resolves_and_is_documented_once():
    assert len(set(mlkd_cache.__all__)) == len(mlkd_cache.__all__)
    for name in mlkd_cache.__all__:
        assert getattr(mlkd_cache, name) is not None
    assert sorted(documented_names()) == sorted(mlkd_cache.__all__)
    assert set(dir(mlkd_cache)) >= set(mlkd_cache.__all__)
    with pytest.raises(AttributeError, match="no attribute 'TargetCash'"):
        mlkd_cache.TargetCash  # noqa: B018


def test_the_exports_are_the_library_objects():
    from mlkd_cache.cache.replay import CachedViews
    from mlkd_cache.losses.distiller import Distiller

    assert mlkd_cache.CachedViews is CachedViews and mlkd_cache.Distiller is Distiller
    assert issubclass(mlkd_cache.CacheMismatchError, mlkd_cache.MlkdError)


def test_importing_the_package_is_light():
    """`import mlkd_cache` loads nothing heavy; a name is imported when first used."""
    code = "import sys, mlkd_cache; print('torch' in sys.modules); mlkd_cache.TargetCache; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_use_the_public_api_only(example):
    tree = ast.parse(example.read_text(encoding="utf-8"))
    ours = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in ours:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        assert not any(n.startswith("mlkd_cache.") for n in names), f"{example.name}: private import {names}"
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "mc"}
    assert used and used <= set(mlkd_cache.__all__), used - set(mlkd_cache.__all__)
    assert len(example.read_text().splitlines()) <= 80


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A 1-epoch tiny digits teacher's 2-view cache, and the config (L2D's distiller) it belongs to."""
    from mlkd_cache.config import load_config
    from mlkd_cache.engine import dump, teacher

    from .conftest import torch_threads

    root = tmp_path_factory.mktemp("api")
    cfg_path = tiny_config(root, max_epoch_t="1", cache="dict(views=2)")
    cfg = load_config(cfg_path)
    with torch_threads(1):
        teacher.run(cfg, root / "teacher", progress=False)
        dump.run(cfg, root / "teacher" / "teacher.pt", root / "cache", progress=False)
    return cfg_path, root / "cache"


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_distils_from_a_cache(example, tiny_cache):
    cfg_path, cache = tiny_cache
    proc = subprocess.run(
        [sys.executable, str(example), "-c", str(cfg_path), "--cache", str(cache), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ONE_THREAD},
    )
    assert proc.returncode == 0, proc.stderr
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    losses = [float(x) for line in epochs for x in re.findall(r" (-?\d+\.\d+)", line)]
    assert len(epochs) == 2 and losses and all(math.isfinite(v) for v in losses), proc.stdout
    if example.name == "distill_from_cache.py":
        assert re.search(r"^test mAP \d+\.\d+$", proc.stdout, re.M), proc.stdout
        assert "led_cd" in proc.stdout  # the config's L2D distiller ran: MLD and LED terms


@pytest.mark.slow
def test_cached_views_replay_the_cache_and_refuse_what_does_not_fit(tiny_cache):
    import torch
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    cfg_path, cache_dir = tiny_cache
    cfg = mc.load_config(cfg_path)
    train_set = mc.dataset_from_config(cfg, "train")
    cache = mc.open_cache(cache_dir, train_set, mc.TransformSpec.from_config(cfg), verify_checksums=True)
    views = mc.CachedViews(train_set, cache, replay_check=1.0)
    views.set_epoch(3)
    batch = next(iter(DataLoader(views, 8, shuffle=True, collate_fn=views.collate)))
    assert isinstance(batch, mc.CachedBatch) and batch.image.shape == (8, 3, 32, 32)
    expect = cache.get(batch.sample, batch.view)
    targets = views.targets(batch, torch.device("cpu"))
    assert views.checked == 8  # every input's fingerprint equals the cached one
    torch.testing.assert_close(targets["z_t"], expect["logits"].float(), rtol=0, atol=0)
    assert set(targets) == {"z_t", "f_t", "t_tokens", "token_sample", "token_class"}
    assert set(batch.view.tolist()) <= {0, 1}  # the cache's 2 views

    tampered = batch._replace(fingerprint=batch.fingerprint + 1)
    with pytest.raises(mc.CacheMismatchError, match=r"replay diverged: sample \d+ .* view \d is not the image the teacher saw"):
        views.targets(tampered, torch.device("cpu"))
    other = mc.build_dataset("digits", "train", train_size=80)
    with pytest.raises(mc.CacheMismatchError, match=r"cache built for labels of shape \(96, 10\), the dataset has \(80, 10\)"):
        mc.open_cache(cache_dir, other)
    with pytest.raises(mc.CacheMismatchError, match=r"cache built for img_size 32, config asks for 48"):
        mc.open_cache(cache_dir, train_set, mc.TransformSpec(img_size=48, **cfg.transform))


@pytest.mark.slow
def test_a_plain_timm_classifier_distils_with_the_logit_losses(tiny_cache):
    """A student with logits only (timm's own classifier, no ML-Decoder head): MLD from the cache
    trains it; a loss that needs embeddings or features says in one line what is missing."""
    import timm
    import torch
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    cfg_path, cache_dir = tiny_cache
    cfg = mc.load_config(cfg_path)
    train_set = mc.dataset_from_config(cfg, "train")
    cache = mc.open_cache(cache_dir, train_set, mc.TransformSpec.from_config(cfg))
    views = mc.CachedViews(train_set, cache)
    batch = next(iter(DataLoader(views, 16, collate_fn=views.collate)))
    torch.manual_seed(0)
    student = timm.create_model("test_resnet", num_classes=len(train_set.class_names))
    mld = mc.Distiller.from_config(dict(name="MLD", para=dict(lambda_logits=1.0, logits_dis=dict(name="MLD", para={}))))
    logits = student(batch.image)
    terms = mld(mc.KDBatch(y=batch.labels, z_s=logits, **views.targets(batch, torch.device("cpu"))))
    assert list(terms) == ["mld"] and torch.isfinite(terms["mld"]) and terms["mld"] > 0
    terms["mld"].backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)

    led = mc.Distiller.from_config(
        dict(name="L2D", para=dict(lambda_le=1.0, le_dis=dict(name="LED", para={}))),
        num_classes=10,
        student_embed_dim=8,
        teacher_embed_dim=32,
    )
    with pytest.raises(
        mc.ConfigError, match=r"^a label-embedding loss \(LED, MPSCD\) reads KDBatch\.e_s \(the student's label-wise"
    ):
        led(mc.KDBatch(y=batch.labels, z_s=logits, **views.targets(batch, torch.device("cpu"))))
    rkd = mc.Distiller.from_config(dict(name="L2D", para=dict(lambda_ft=1.0, ft_dis=dict(name="RKD", para={}))))
    with pytest.raises(mc.ConfigError, match=r"^RKD reads KDBatch\.f_s \(the student's pooled features"):
        rkd(mc.KDBatch(y=batch.labels, z_s=logits, **views.targets(batch, torch.device("cpu"))))
