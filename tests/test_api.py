"""The public API: `mlkd_cache.__all__`, its page (docs/api.md), and the examples that use it."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
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


def api_sections() -> dict:
    """``{name: text}`` of each ``### name`` section of docs/api.md."""
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    parts = re.split(r"^### (\S+)$", page, flags=re.M)
    return {name.replace("\\_", "_"): re.split(r"^## ", text, flags=re.M)[0] for name, text in zip(parts[1::2], parts[2::2])}


def documented_parameters(obj) -> dict:
    """``{callable: [parameter names]}`` a user can pass: a function's; a class's constructor (a
    named tuple's fields) and the public methods and classmethods it defines itself."""
    import inspect

    def params(fn) -> list:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return []
        return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls") and p.kind is not p.VAR_POSITIONAL]

    if not inspect.isclass(obj):
        return {obj.__name__: params(obj)}
    if issubclass(obj, BaseException):
        return {}
    found = {obj.__name__: list(getattr(obj, "_fields", ())) or params(obj.__init__)}
    for name in vars(obj):
        if name.startswith("_") or not callable(getattr(obj, name)):
            continue
        found[f"{obj.__name__}.{name}"] = params(getattr(obj, name))
    return found


def test_every_parameter_of_every_public_name_is_documented():
    """Each parameter of each public function, constructor and method (and each field of a named
    tuple) is named in code (`...`) in that name's section of docs/api.md."""
    sections = api_sections()
    missing = []
    for name in mlkd_cache.__all__:
        if name == "__version__":
            continue
        code = " ".join(re.findall(r"`([^`]+)`", sections[name]))  # every code span of the section
        for where, names in documented_parameters(getattr(mlkd_cache, name)).items():
            missing += [f"{where}({p})" for p in names if p != "kwargs" and not re.search(rf"\b{p}\b", code)]
    assert not missing, missing
    from mlkd_cache.losses.distiller import CONTEXT_KEYS

    assert all(f"`{key}`" in sections["Distiller"] for key in CONTEXT_KEYS)  # what **context may hold


def test_the_exports_are_the_library_objects():
    from mlkd_cache.cache.replay import CachedViews
    from mlkd_cache.losses.distiller import Distiller

    assert mlkd_cache.CachedViews is CachedViews and mlkd_cache.Distiller is Distiller
    assert issubclass(mlkd_cache.CacheMismatchError, mlkd_cache.MlkdError)


@pytest.mark.slow  # a fresh interpreter
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
    from mlkd_cache.commands import dump_targets as dump
    from mlkd_cache.commands import teacher_train as teacher
    from mlkd_cache.config import load_config

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
def test_example_distils_from_a_cache(example, tiny_cache, tmp_path):
    cfg_path, cache = tiny_cache
    given = ["--out", str(tmp_path / "factory")] if example.name == "factory_teacher.py" else ["--cache", str(cache)]
    proc = subprocess.run(
        [sys.executable, str(example), "-c", str(cfg_path), *given, "--epochs", "2"],
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
    if example.name == "factory_teacher.py":  # its own teacher's logits-only cache, then an MLD student
        out = tmp_path / "factory"
        manifest = json.loads((out / "cache" / "manifest.json").read_text())
        assert manifest["spec"]["outputs"] == ["logits"]
        assert manifest["spec"]["teacher_arch"] == "factory:factory_teacher:bce_classifier"
        assert "loss bce + mld" in proc.stdout and (out / "student" / "student.pt").is_file(), proc.stdout
        assert re.search(r"^test mAP \d+\.\d+", proc.stdout, re.M), proc.stdout


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
    assert set(targets) == {"z_t", "t_tokens", "token_sample", "token_class"}  # cache.fields auto: what L2D reads
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


# -- the traps of a loop of one's own (issue: the public API never trains silently on one view) --


@pytest.fixture(scope="module")
def opened(tiny_cache):
    """(config, train split, opened cache, teacher.pt) of the tiny cache."""
    mc = mlkd_cache
    cfg_path, cache_dir = tiny_cache
    cfg = mc.load_config(cfg_path)
    train_set = mc.dataset_from_config(cfg, "train")
    cache = mc.open_cache(cache_dir, train_set, mc.TransformSpec.from_config(cfg))
    return cfg, train_set, cache, cache_dir.parent / "teacher" / "teacher.pt"


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


@pytest.mark.slow
def test_an_epoch_that_does_not_advance_is_refused(opened):
    """A loop that never calls set_epoch replays one view per sample in every pass: the first
    batch of the second pass is refused in one line naming both fixes."""
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    _, train_set, cache, _ = opened
    views = mc.CachedViews(train_set, cache)
    loader = DataLoader(views, 16, shuffle=True, collate_fn=views.collate)
    for batch in loader:  # the first pass is epoch 0, as it should be
        views.targets(batch, "cpu")  # a device given by name
    with pytest.raises(mc.ConfigError) as info:
        for batch in loader:
            views.targets(batch, "cpu")
    assert re.match(r"CachedViews: 112 samples drawn under epoch 0 and set_epoch never called, more than the 96", one_line(info))
    assert "sampler=views.sampler()" in str(info.value) and "views.set_epoch(epoch)" in str(info.value)


@pytest.mark.slow
def test_the_sampler_carries_each_epoch_to_persistent_workers(opened):
    """views.sampler() with 2 persistent workers and no set_epoch: each pass is the next epoch,
    every sample replays the view of that epoch (its fingerprint checked against the cache), and
    with V=2 each sample alternates between its two cached views."""
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    _, train_set, cache, _ = opened
    views = mc.CachedViews(train_set, cache, replay_check=1.0)
    loader = DataLoader(
        views, 16, sampler=views.sampler(seed=3), num_workers=2, persistent_workers=True, collate_fn=views.collate
    )
    seen: dict = {}
    for epoch in range(3):
        for batch in loader:
            views.targets(batch, "cpu")
            assert batch.epoch.eq(epoch).all() and batch.epoch_from_index.all()
            for i, v in zip(batch.sample.tolist(), batch.view.tolist()):
                seen.setdefault(i, []).append(v)
    assert views.checked == 3 * 96  # every input of every epoch matched its cached fingerprint
    assert sorted(seen) == list(range(96))
    assert all(v == [views.view_data.view_of(i, e) for e in range(3)] for i, v in seen.items())
    assert all(v[0] != v[1] and v[0] == v[2] for v in seen.values())


@pytest.mark.slow
def test_a_pass_that_does_not_train_is_refused(opened):
    """A loop that also iterates its training loader for metrics: each such pass takes an epoch
    (with V=2, training would see one view); the jump is refused in one line."""
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    _, train_set, cache, _ = opened
    views = mc.CachedViews(train_set, cache)
    loader = DataLoader(views, 32, sampler=views.sampler(), collate_fn=views.collate)
    for batch in loader:  # epoch 0 trains
        views.targets(batch, "cpu")
    for _batch in loader:  # "train-set metrics": epoch 1, no targets
        pass
    with pytest.raises(mc.ConfigError) as info:
        for batch in loader:  # epoch 2 trains
            views.targets(batch, "cpu")
    assert re.match(r"CachedViews: batches jumped from epoch 0 to 2: a pass over the loader that did not train", one_line(info))


@pytest.mark.slow
def test_persistent_workers_with_set_epoch_are_refused(opened):
    """set_epoch with persistent workers: the workers keep epoch 0, and the first batch after
    set_epoch(1) is refused in one line naming the fix."""
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    _, train_set, cache, _ = opened
    views = mc.CachedViews(train_set, cache)
    loader = DataLoader(views, 16, shuffle=True, num_workers=2, persistent_workers=True, collate_fn=views.collate)
    views.set_epoch(0)
    for batch in loader:
        views.targets(batch, "cpu")
    views.set_epoch(1)
    with pytest.raises(mc.ConfigError) as info:
        for batch in loader:
            views.targets(batch, "cpu")
    assert re.match(r"CachedViews: a batch drawn for epoch 0 arrived after set_epoch\(1\): .*persistent_workers", one_line(info))
    assert "sampler=views.sampler()" in str(info.value)


@pytest.mark.slow
def test_mistakes_of_a_loop_of_ones_own_end_in_one_line(opened):
    """A student for 20 classes against a cache of 10, embeddings of another size than the
    distiller was built for, a device name that is not one: each one line naming the fix. A
    device given by name and a cache's transform given as its dict are accepted."""
    import torch
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    cfg, train_set, cache, _ = opened
    assert mc.open_cache(cache.directory, train_set, cache.spec.transform) is not None  # the dict form
    views = mc.CachedViews(train_set, cache)
    batch = next(iter(DataLoader(views, 16, collate_fn=views.collate)))
    targets = views.targets(batch, "cpu")
    mld = mc.Distiller.from_config(dict(name="MLD", para=dict(lambda_logits=1.0, logits_dis=dict(name="MLD", para={}))))
    with pytest.raises(mc.ConfigError) as info:
        mld(mc.KDBatch(y=batch.labels, z_s=torch.zeros(16, 20), **targets))
    assert re.match(r"KDBatch: the student's logits z_s have 20 classes, the teacher's z_t 10: build the student", one_line(info))

    mpscd = mc.Distiller.from_config(
        dict(name="MPSCD", para=dict(lambda_le=1.0, le_dis=dict(name="MPSCD", para={}))),
        num_classes=10,
        student_embed_dim=16,
        teacher_embed_dim=cache.spec.embed_dim,
    )
    mpscd.set_prototypes(mc.load_or_compute_prototypes(cache))
    with pytest.raises(mc.ConfigError) as info:
        mpscd(mc.KDBatch(y=batch.labels, z_s=torch.zeros(16, 10), e_s=torch.zeros(16, 10, 8), **targets))
    assert re.match(
        r"MPSCD was built for num_classes=10, student_embed_dim=16, teacher_embed_dim=32; .* student embeddings of 8",
        one_line(info),
    )

    with pytest.raises(mc.ConfigError) as info:
        views.targets(batch, "gpu0")
    assert re.match(r"device 'gpu0' is not a device; give a torch.device or a name such as 'cpu'", one_line(info))


@pytest.mark.slow
def test_load_teacher_runs_the_teacher_of_the_cache(opened):
    """load_teacher gives the model, classes and input pipeline of teacher.pt; run on a replayed
    batch it computes the cached logits (float16 cache: within half a float16 ulp plus the
    float32 recompute allowance of the equivalence test)."""
    import torch
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    _, train_set, cache, teacher_pt = opened
    teacher = mc.load_teacher(teacher_pt, device="cpu")
    assert teacher.class_names == list(cache.spec.class_names) and teacher.sha256 == cache.spec.teacher_sha256
    assert teacher.transform.spec_hash() == cache.spec.transform_hash and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    views = mc.CachedViews(train_set, cache)
    batch = next(iter(DataLoader(views, 16, collate_fn=views.collate)))
    with torch.no_grad():
        live = teacher.model(batch.image).logits
    cached = views.targets(batch, "cpu")["z_t"]
    from .bounds import target_tolerance  # the equivalence test's bound, one place

    assert cache.spec.dtype == "float16"
    assert ((cached - live).abs() <= target_tolerance(cache.spec.dtype, live)).all()
    with pytest.raises(mc.MlkdError) as info:
        mc.load_teacher(cache.directory / "manifest.json")
    one_line(info)


@pytest.mark.slow
def test_a_script_reopens_a_cache_from_the_cache_alone(opened, tmp_path):
    """CachedViews.from_cache rebuilds the dumped train split and transform from what the
    manifest records (every fingerprint equal); a config is checked against it; a cache that
    does not record it says so in one line."""
    from torch.utils.data import DataLoader

    mc = mlkd_cache
    cfg, train_set, cache, _ = opened
    made = json.loads((cache.directory / "manifest.json").read_text())["made_with"]
    assert made["dataset"] == "digits" and made["dataset_para"] == {"train_size": 96, "test_size": 48}
    assert made["config"] == cfg.source and made["data_root"] is None
    views = mc.CachedViews.from_cache(cache.directory, replay_check=1.0)
    assert len(views) == 96 and views.transform.spec_hash() == mc.TransformSpec.from_config(cfg).spec_hash()
    assert views.cache.spec.transform_spec == views.transform
    for batch in DataLoader(views, 32, sampler=views.sampler(), collate_fn=views.collate):
        views.targets(batch, "cpu")
    assert views.checked == 96
    assert len(mc.CachedViews.from_cache(cache.directory, config=cfg)) == 96

    spelled_out = mc.load_config(cfg.source, {"dataset_para": {"train_size": 96, "test_size": 48, "seed": 0}})
    assert len(mc.CachedViews.from_cache(cache.directory, config=spelled_out)) == 96  # a default written out: the same split
    other = mc.load_config(cfg.source, {"dataset_para": {"train_size": 80, "test_size": 48}})
    with pytest.raises(mc.CacheMismatchError) as info:
        mc.CachedViews.from_cache(cache.directory, config=other)
    assert re.search(r"cache built for labels of shape \(96, 10\), the dataset has \(80, 10\)", one_line(info))

    old = tmp_path / "old-cache"
    shutil.copytree(cache.directory, old, ignore=shutil.ignore_patterns("prototypes.pt"))
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["made_with"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(mc.CacheMismatchError) as info:
        mc.CachedViews.from_cache(old)
    assert "does not record how its train split was built" in one_line(info)
