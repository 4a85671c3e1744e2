"""Factory teachers: ``--teacher package.module:function`` returning ``(model, class_names)``.

A plain timm classifier (logits only) dumps a cache without features or embeddings (absent,
recorded, not zero-filled), distils with MLD, and is refused with LED in one line, offline and
online; ``import-teacher --format factory`` pins it as a teacher.pt that gives the same logits.
The factories are a module of the user's, written here into a folder on the Python path."""

from __future__ import annotations

import importlib
import json
import sys

import h5py
import numpy as np
import pytest
import torch

from mlkd_cache.cache import TargetCache
from mlkd_cache.data import dataset_from_config
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.data.views import ViewDataset

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config

pytestmark = pytest.mark.slow

FACTORIES = """
import timm
import torch
from torch import nn

CLASSES = [str(d) for d in range(10)]  # the digits dataset's classes, in its order


def logits_only():
    torch.manual_seed(0)  # the same weights on every call, as a factory that loads a file has
    return timm.create_model("test_resnet", num_classes=len(CLASSES)), CLASSES


class WithFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = timm.create_model("test_resnet", num_classes=0)
        self.fc = nn.Linear(self.net.num_features, len(CLASSES))

    def forward(self, x):
        features = self.net(x)
        return self.fc(features), None, features  # (logits, label_emb, features)


def logits_and_features():
    torch.manual_seed(1)
    return WithFeatures(), CLASSES


def three_classes():
    return timm.create_model("test_resnet", num_classes=3), ["a", "b", "c"]


def missing_weights():
    return torch.load("weights/no_such_file.pth", weights_only=True), CLASSES


class NoLogits(nn.Module):
    def forward(self, x):
        return None, None, x.mean((2, 3))


def no_logits():
    return NoLogits(), CLASSES
"""

MLD = "dict(name='MLD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict())))"
L2D = (
    "dict(name='L2D', para=dict(lambda_le=1.0, le_dis=dict(name='LED', para=dict(lambda_cd=10.0, lambda_id=100.0)), "
    "lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict())))"
)


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory):
    """The factories' module on sys.path, configs (MLD, L2D) and a cache dumped from ``logits_only``."""
    root = tmp_path_factory.mktemp("factory")
    (root / "my_teachers.py").write_text(FACTORIES)
    sys.path.insert(0, str(root))
    try:
        (root / "mld").mkdir()
        (root / "l2d").mkdir()
        mld = tiny_config(root / "mld", criterion_t2s_para=MLD, max_epoch_s="1")
        l2d = tiny_config(root / "l2d", criterion_t2s_para=L2D, max_epoch_s="1")
        proc = run_cli_in_process(
            ["dump-targets", "-c", str(mld), "--teacher", "my_teachers:logits_only", "-o", str(root / "cache")]
        )
        assert proc.returncode == 0, proc.stderr
        yield {"root": root, "mld": mld, "l2d": l2d, "cache": root / "cache", "module": importlib.import_module("my_teachers")}
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("my_teachers", None)


def test_a_logits_only_cache_holds_the_factory_models_logits(factory_run):
    from mlkd_cache.config import load_config

    manifest = json.loads((factory_run["cache"] / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["spec"]["outputs"] == ["logits"]
    assert manifest["spec"]["teacher_arch"] == "factory:my_teachers:logits_only"
    with h5py.File(factory_run["cache"] / "shard-00000.h5", "r") as f:
        assert set(f) == {"keys", "labels", "view_seed", "fingerprint", "logits"}  # nothing zero-filled
    cache = TargetCache(factory_run["cache"])
    cfg = load_config(str(factory_run["mld"]))
    views = ViewDataset(
        dataset_from_config(cfg, "train"), TransformSpec.from_config(cfg), cfg.seed, train=True, views=cache.views
    )
    model, _ = factory_run["module"].logits_only()
    model.eval()
    pairs = [(0, 0), (5, 1), (95, 0)]
    x = torch.stack([views.get(i, v).image for i, v in pairs])
    with torch.no_grad():
        expected = model(x)
    cached = cache.get([i for i, _ in pairs], [v for _, v in pairs])["logits"].float()
    # float16 storage: half an ulp of float16 (2^-11 relative) plus the batch's float32 rounding
    torch.testing.assert_close(cached, expected, rtol=2**-10, atol=1e-5)
    inspect = run_cli_in_process(["inspect", str(factory_run["cache"])])
    assert inspect.returncode == 0 and "no features, label_emb stored" in inspect.stdout


def test_mld_distils_from_it_and_led_is_refused_in_one_line(factory_run, tmp_path):
    ok = run_cli_in_process(
        ["distill-student", "-c", str(factory_run["mld"]), "--cache", str(factory_run["cache"]), "-o", str(tmp_path / "s")]
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "s" / "student.pt").is_file()
    refused = run_cli_in_process(
        ["distill-student", "-c", str(factory_run["l2d"]), "--cache", str(factory_run["cache"]), "-o", str(tmp_path / "l")]
    )
    line = assert_one_line_error(refused, r"LED \(le_dis\) needs the teacher's label-wise embeddings \[N, C, E\]")
    assert "gives only logits [N, C]" in line and "MLD" in line and "le_dis=None" in line
    assert not (tmp_path / "l").exists() or not any((tmp_path / "l").iterdir())
    online = run_cli_in_process(
        ["distill-student", "-c", str(factory_run["l2d"]), "--teacher", "my_teachers:logits_only", "-o", str(tmp_path / "o")]
    )
    assert_one_line_error(online, r"LED \(le_dis\) needs .* teacher my_teachers:logits_only gives only logits")
    online = run_cli_in_process(
        [
            "distill-student",
            "-c",
            str(factory_run["mld"]),
            "--teacher",
            "my_teachers:logits_only",
            "--fresh-views",
            "-o",
            str(tmp_path / "m"),
        ]
    )
    assert online.returncode == 0, online.stderr


def test_import_teacher_factory_pins_the_same_teacher(factory_run, tmp_path):
    import mlkd_cache as mc
    from mlkd_cache.models.factory import weights_sha256

    out = tmp_path / "teacher.pt"
    proc = run_cli_in_process(
        ["import-teacher", "my_teachers:logits_only", "--format", "factory", "-c", str(factory_run["mld"]), "-o", str(out)]
    )
    assert proc.returncode == 0, proc.stderr
    assert "gives logits" in proc.stdout
    loaded = mc.load_teacher(out)
    model, classes = factory_run["module"].logits_only()
    model.eval()
    assert loaded.class_names == classes
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        got, expected = loaded.model(x), model(x)
    assert got.label_emb is None and got.features is None
    assert torch.equal(got.logits, expected)  # the same weights, the same forward
    assert loaded.card.provenance["imported_from"]["sha256"] == weights_sha256(loaded.model)
    # a dump from the teacher.pt holds the very logits of the dump from the factory
    proc = run_cli_in_process(["dump-targets", "-c", str(factory_run["mld"]), "--teacher", str(out), "-o", str(tmp_path / "c2")])
    assert proc.returncode == 0, proc.stderr
    with h5py.File(factory_run["cache"] / "shard-00000.h5", "r") as a, h5py.File(tmp_path / "c2" / "shard-00000.h5", "r") as b:
        np.testing.assert_array_equal(a["logits"][()], b["logits"][()])
        # the same teacher either way: the weights' sha256, which the teacher.pt pins
        assert a.attrs["teacher_sha256"] == b.attrs["teacher_sha256"] == weights_sha256(loaded.model) == loaded.sha256
    for cache in (tmp_path / "c2", factory_run["cache"]):  # dumped from the teacher.pt, and from the factory it pins
        verify = run_cli_in_process(["verify", str(cache), "--teacher", str(out)])
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_verify_reruns_the_factory_a_cache_was_dumped_from(factory_run):
    """``verify --teacher package.module:function``: the factory is called again and its logits
    compared with the cache's; another factory is refused by its weights' sha256."""
    cache = str(factory_run["cache"])
    proc = run_cli_in_process(["verify", cache, "--teacher", "my_teachers:logits_only"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verify passed" in proc.stdout and "logits" in proc.stdout
    other = run_cli_in_process(["verify", cache, "--teacher", "my_teachers:logits_and_features"])
    assert_one_line_error(other, "pass the teacher the cache was built with")


def test_a_factory_with_logits_and_features(factory_run, tmp_path):
    proc = run_cli_in_process(
        [
            "dump-targets",
            "-c",
            str(factory_run["mld"]),
            "--teacher",
            "my_teachers:logits_and_features",
            "-o",
            str(tmp_path / "c"),
            "--set",
            "cache.fields=['logits', 'features']",  # auto would keep what MLD reads: logits alone
        ]
    )
    assert proc.returncode == 0, proc.stderr
    cache = TargetCache(tmp_path / "c")
    assert cache.spec.outputs == ("features", "logits") and cache.spec.embed_dim == 0
    got = cache.get([0, 1], [0, 0])
    assert set(got) == {"view_seed", "fingerprint", "logits", "features"}
    assert got["features"].shape == (2, cache.spec.feature_dim) and cache.spec.feature_dim > 0


def test_bad_factories_are_refused_in_one_line(factory_run, tmp_path):
    cfg = str(factory_run["mld"])
    proc = run_cli_in_process(["dump-targets", "-c", cfg, "--teacher", "no_such_module:make", "-o", str(tmp_path / "c")])
    assert_one_line_error(proc, r"cannot import no_such_module for the teacher factory no_such_module:make .*PYTHONPATH")
    proc = run_cli_in_process(["dump-targets", "-c", cfg, "--teacher", "my_teachers:nothing", "-o", str(tmp_path / "c")])
    assert_one_line_error(proc, r"my_teachers .* has no function 'nothing'")
    proc = run_cli_in_process(["dump-targets", "-c", cfg, "--teacher", "my_teachers:missing_weights", "-o", str(tmp_path / "c")])
    assert_one_line_error(proc, r"teacher factory my_teachers:missing_weights failed \(FileNotFoundError: ")
    proc = run_cli_in_process(["dump-targets", "-c", cfg, "--teacher", "my_teachers:no_logits", "-o", str(tmp_path / "c")])
    assert_one_line_error(proc, r"my_teachers:no_logits: forward returned a tuple without logits")
    proc = run_cli_in_process(["dump-targets", "-c", cfg, "--teacher", "my_teachers:three_classes", "-o", str(tmp_path / "c")])
    assert_one_line_error(proc, r"trained for 3 classes")
    assert not (tmp_path / "c").exists()
    proc = run_cli_in_process(
        ["import-teacher", "my_teachers:three_classes", "--format", "factory", "-c", cfg, "-o", str(tmp_path / "t.pt")]
    )
    assert_one_line_error(proc, r"returns 3 classes, the config's data 10")
    assert not (tmp_path / "t.pt").exists()
