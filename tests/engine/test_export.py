"""``export``: a checkpoint's model as an ONNX (dynamo exporter, run by onnxruntime) or pt2
(torch.export) file taking uint8 pixels, checked against PyTorch at batch 1 and 7 before it is
written; ``load_onnx`` reads an ONNX export back with its model card."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from mlkd_cache._version import __version__
from mlkd_cache.cli.common import human_size
from mlkd_cache.commands.export import CHECK_BATCHES, TOLERANCE, check_pixels, export, format_of
from mlkd_cache.config import Config, load_config
from mlkd_cache.data import dataset_from_config
from mlkd_cache.data.digits import DIGIT_CLASSES
from mlkd_cache.data.transforms import TransformSpec, model_input, to_float
from mlkd_cache.data.views import eval_inputs
from mlkd_cache.errors import CheckpointError, ConfigError, DataError, MissingDependencyError
from mlkd_cache.fileio import file_sha256
from mlkd_cache.metrics import sigmoid
from mlkd_cache.models import build_model
from mlkd_cache.models.card import ModelCard
from mlkd_cache.runtime import deploy
from mlkd_cache.runtime.checkpoint import load_model, save_model
from mlkd_cache.runtime.deploy import KEY_CARD, METADATA_KEYS, card_from_metadata, export_metadata, load_onnx

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config

onnx = pytest.importorskip("onnx")  # the deploy extra (part of the test extra)

# The two models: the tiny digits student of the suite (timm test_resnet, 32 px, E = 32, the
# default normalisation mean 0 std 1, per-class thresholds in its card) and resnet18 + ML-Decoder
# (64 px, E = 768, ImageNet's mean and std, bicubic resize), random weights.
MODELS = {
    "digits": dict(model_s="'test_resnet'", img_size="32", embed_dim="32"),
    "resnet18": dict(
        model_s="'resnet18'",
        img_size="64",
        embed_dim="768",
        transform="dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation='bicubic')",
    ),
}
THRESHOLDS = {"values": [0.3 + 0.04 * c for c in range(10)], "objective": "f1", "split": "val", "samples": 48}
# float32 sigmoid (onnxruntime's, torch's) against the exact one in float64: a few units of 2^-24
SIGMOID_ATOL = 8 * 2.0**-24


def _checkpoint(folder: Path, name: str) -> Path:
    """A student.pt of ``MODELS[name]`` for the digits dataset, written by save_model."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_config(tiny_config(folder, **MODELS[name]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(cfg.model_s, 10, embed_dim=cfg.embed_dim, img_size=cfg.img_size)
    card = ModelCard.of(model, "student", DIGIT_CLASSES, TransformSpec.from_config(cfg), cfg.to_dict())
    if name == "digits":
        card = card.replace(thresholds=THRESHOLDS)
    path = folder / "student.pt"
    save_model(path, card, model.state_dict(), epoch=1)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {name: _checkpoint(root / name, name) for name in MODELS}


@pytest.fixture(scope="module")
def exported(checkpoints) -> Dict[str, dict]:
    """Each checkpoint exported to ONNX through the API (checked at export)."""
    return {name: export(path, path.with_name("student.onnx")) for name, path in checkpoints.items()}


def _test_pixels(card: ModelCard) -> torch.Tensor:
    """uint8 [7, 3, S, S]: test images 7..13 of the card's digits config (not those the export
    was checked on)."""
    inputs = eval_inputs(dataset_from_config(Config.from_dict(card.config), "test"), card.transform)
    return torch.stack([inputs[i].image for i in range(7, 14)])


@torch.no_grad()
def _torch_logits(path: Path, pixels: torch.Tensor) -> np.ndarray:
    loaded = load_model(path)
    return loaded.model(model_input(pixels, loaded.card.transform, torch.device("cpu"))).logits.numpy()


@pytest.mark.slow
@pytest.mark.numeric
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_export_gives_the_card_and_the_logits_back(checkpoints, exported, name):
    """The export's own check passed at batch 1 and 7 on the first 7 test images; load_onnx gives
    the checkpoint's card back, equal, and on 7 other real images the logits of the PyTorch model
    within the tolerance (2^-12 of the logits' scale) at batch 1 and 7 (one graph: the batch
    axis is dynamic), and probabilities that are the sigmoid of those logits."""
    result = exported[name]
    assert result["format"] == "onnx" and result["checked"] and result["opset"] >= 18
    assert result["check_images"] == "the first 7 images of the digits test split"
    assert [c["batch"] for c in result["checks"]] == list(CHECK_BATCHES) == [1, 7]
    for c in result["checks"]:
        assert 0.0 <= c["max_abs_dlogit"] <= c["tolerance"] == TOLERANCE * c["logit_scale"], c
        assert c["label_disagreements"] == 0
    assert result["bytes"] == os.path.getsize(result["path"]) and result["sha256"] == file_sha256(checkpoints[name])

    model = load_onnx(result["path"])
    loaded = load_model(checkpoints[name])
    assert model.card == loaded.card and model.path == Path(result["path"])
    pixels = _test_pixels(loaded.card)
    for n in CHECK_BATCHES:
        z_ref = _torch_logits(checkpoints[name], pixels[:n])
        z, p = model.run(pixels[:n].numpy())
        assert z.dtype == p.dtype == np.float32 and z.shape == p.shape == (n, 10)
        assert np.array_equal(model(pixels[:n].numpy()), z)
        tol = TOLERANCE * max(1.0, float(np.abs(z_ref).max()))
        assert float(np.abs(z - z_ref).max()) <= tol
        np.testing.assert_allclose(p, sigmoid(z), rtol=0, atol=SIGMOID_ATOL)
    # batch 7's first row is batch 1's: nothing about the batch is baked into the graph
    assert float(np.abs(model(pixels[:7].numpy())[:1] - model(pixels[:1].numpy())).max()) <= tol


@pytest.mark.slow
@pytest.mark.numeric
@pytest.mark.parametrize("name", list(MODELS))
def test_normalisation_in_the_graph_gives_the_floats_training_saw(exported, name):
    """The input of the graph's first convolution, read out of onnxruntime, is bit for bit what
    to_float (and model_input) gives the PyTorch model from the same uint8 pixels: /255 alone
    (digits), and /255, -mean, /std (resnet18)."""
    from mlkd_cache.runtime.deploy import ort_session

    path = exported[name]["path"]
    proto = onnx.load(path)
    first_conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(first_conv.input[0], onnx.TensorProto.FLOAT, None))
    session = ort_session(proto.SerializeToString())
    card = load_onnx(path).card
    pixels = _test_pixels(card)
    (x,) = session.run([first_conv.input[0]], {"pixels": pixels.numpy()})
    expected = to_float(pixels, card.transform.mean, card.transform.std)
    assert (card.transform.mean == (0.0, 0.0, 0.0)) == (name == "digits")
    assert np.array_equal(x, expected.numpy())
    assert torch.equal(model_input(pixels, card.transform, torch.device("cpu")), expected)


@pytest.mark.slow
def test_metadata_says_the_card_in_words(checkpoints, exported):
    """Every key of METADATA_KEYS, and values a deploy script reads without mlkd-cache: the class
    names, the thresholds of the card (null for a model without), img_size, mean, std, the resize
    filter, the input format, the version, the source checkpoint and its sha256."""
    for name, result in exported.items():
        meta = load_onnx(result["path"]).metadata
        card = load_model(checkpoints[name]).card
        assert set(METADATA_KEYS) <= set(meta)
        assert {k: meta[k] for k in METADATA_KEYS} == export_metadata(card, checkpoints[name], file_sha256(checkpoints[name]))
        assert json.loads(meta["mlkd_cache.class_names"]) == list(DIGIT_CLASSES)
        assert json.loads(meta["mlkd_cache.thresholds"]) == (THRESHOLDS if name == "digits" else None)
        assert int(meta["mlkd_cache.img_size"]) == card.img_size == int(MODELS[name]["img_size"])
        assert json.loads(meta["mlkd_cache.mean"]) == list(card.transform.mean)
        assert json.loads(meta["mlkd_cache.std"]) == list(card.transform.std)
        assert meta["mlkd_cache.interpolation"] == card.transform.interpolation == ("bilinear" if name == "digits" else "bicubic")
        assert meta["mlkd_cache.decode"] == "full"
        assert f"uint8 [N, 3, {card.img_size}, {card.img_size}], RGB, NCHW" in meta["mlkd_cache.input"]
        assert meta["mlkd_cache.version"] == __version__
        assert meta["mlkd_cache.source"] == str(checkpoints[name].resolve())
        assert meta["mlkd_cache.source_sha256"] == file_sha256(checkpoints[name])
        assert json.loads(meta[KEY_CARD]) == json.loads(json.dumps(card.to_dict()))  # to_dict as JSON (tuples: lists)


@pytest.mark.slow
@pytest.mark.numeric
def test_pt2_export_reloads_with_torch_export_load(checkpoints, tmp_path):
    """--format pt2: torch.export.save with the metadata as extra files; torch.export.load gives a
    program whose logits at batch 1 and 7 are the PyTorch model's within the tolerance, and the card."""
    out = tmp_path / "student.pt2"
    result = export(checkpoints["digits"], out, fmt="pt2")
    assert result["format"] == "pt2" and result["opset"] is None and result["bytes"] == out.stat().st_size
    assert all(c["max_abs_dlogit"] <= c["tolerance"] for c in result["checks"])
    extra = {key: "" for key in METADATA_KEYS}
    program = torch.export.load(out, extra_files=extra)
    assert card_from_metadata(extra, str(out)) == load_model(checkpoints["digits"]).card
    assert json.loads(extra["mlkd_cache.thresholds"]) == THRESHOLDS
    pixels = _test_pixels(load_model(checkpoints["digits"]).card)
    for n in CHECK_BATCHES:
        with torch.no_grad():
            z, p = program.module()(pixels[:n])
        z_ref = _torch_logits(checkpoints["digits"], pixels[:n])
        assert z.shape == (n, 10)
        assert float(np.abs(z.numpy() - z_ref).max()) <= TOLERANCE * max(1.0, float(np.abs(z_ref).max()))
        np.testing.assert_allclose(p.numpy(), sigmoid(z.numpy()), rtol=0, atol=SIGMOID_ATOL)


class _Perturbed(deploy.PixelModel):
    """An exported graph that is wrong by 1e-2 in every logit (far above 2^-12 x its scale ~ 2)."""

    def forward(self, pixels):
        logits, _ = super().forward(pixels)
        return logits + 1e-2, torch.sigmoid(logits + 1e-2)


@pytest.mark.slow
def test_a_failed_check_is_one_line_and_writes_nothing(checkpoints, tmp_path, monkeypatch):
    """An export that disagrees with the PyTorch model beyond the tolerance: one line naming the
    batch and the delta, exit 2, and nothing at -o, no temporary file beside it."""
    monkeypatch.setattr(deploy, "PixelModel", _Perturbed)
    out_dir = tmp_path / "deploy"
    out_dir.mkdir()
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(out_dir / "student.onnx")])
    line = assert_one_line_error(proc, r"disagrees with the PyTorch model at batch 1: max \|Δ logit\| 0\.01 over the tolerance")
    assert "nothing written" in line and proc.stdout == ""
    assert list(out_dir.iterdir()) == []


def test_an_exporter_failure_is_one_line(checkpoints, tmp_path, monkeypatch):
    """The exporter's own error (a report of many lines): one line naming the model and what to
    try, no fall-back to another exporter, nothing written."""

    def fails(*args, **kwargs):
        raise RuntimeError("Failed to export the model with torch.export.\n\n## Exception summary\n...")

    monkeypatch.setattr(torch.onnx, "export", fails)
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(tmp_path / "m.onnx")])
    assert_one_line_error(
        proc, r"cannot export test_resnet to onnx with torch .* \(RuntimeError: Failed to export the model .*try --format pt2"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_prints_the_file_its_input_and_the_check_and_takes_an_opset(checkpoints, tmp_path):
    """The command's summary: the file, its size and opset, the input format, and max |Δ logit| at
    batch 1 and 7 against the tolerance. An opset the exporter cannot give is refused (it would
    keep its own), not written under another one."""
    out = tmp_path / "student.onnx"
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(out), "--opset", "18"])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    wrote, given, check = proc.stdout.splitlines()
    assert wrote.startswith(f"wrote {out} ({human_size(out.stat().st_size)}, onnx opset 18) from {checkpoints['digits']} in ")
    assert (
        given
        == "input: pixels: uint8 [N, 3, 32, 32], RGB, NCHW, values 0-255; the normalisation ((pixels / 255 - mean) / std, float32) is inside the model"
    )
    assert re.fullmatch(
        r"check against PyTorch on the first 7 images of the digits test split: max \|Δ logit\| \S+ at batch 1, \S+ at batch 7 "
        r"\(tolerance \S+ = 2\^-12 x logit scale \S+\); labels at the card's per-class thresholds agree",
        check,
    ), check
    assert (
        next(o.version for o in onnx.load(out).opset_import if o.domain == "") == 18
        and load_onnx(out).card == load_model(checkpoints["digits"]).card
    )
    refused = tmp_path / "old.onnx"
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(refused), "--opset", "5", "--no-check"])
    assert_one_line_error(proc, r"could not give test_resnet opset 5 \(it gave \d+\); choose another --opset")
    assert sorted(tmp_path.iterdir()) == [out]


def test_an_existing_out_is_refused_unless_overwrite_and_its_folder_is_made(checkpoints, tmp_path):
    """predict's rule: -o onto an existing file is one line naming --overwrite (the file
    untouched), --overwrite replaces it; a folder that does not exist yet is made."""
    out = tmp_path / "student.pt2"
    out.write_bytes(b"keep me")
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(out)])
    assert_one_line_error(proc, r"-o .*student\.pt2 exists; delete it, choose another file or pass --overwrite$")
    assert out.read_bytes() == b"keep me"
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(out), "--overwrite", "--no-check"])
    assert proc.returncode == 0, proc.stderr
    from mlkd_cache.runtime.deploy import load_export

    assert load_export(out).card == load_model(checkpoints["digits"]).card
    deeper = tmp_path / "new" / "deeper" / "student.pt2"
    assert export(checkpoints["digits"], deeper, check=False)["path"] == str(deeper) and deeper.is_file()
    assert "--overwrite" in run_cli_in_process(["export", "--help"]).stdout


def test_a_model_that_is_not_a_checkpoint_is_one_line(tmp_path):
    model = tmp_path / "notes.pt"
    model.write_text("not a checkpoint\n")
    proc = run_cli_in_process(["export", str(model), "-o", str(tmp_path / "m.onnx")])
    assert_one_line_error(proc, "is it a complete mlkd-cache checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]


def test_a_zip_that_torch_cannot_read_is_one_line_cut_at_a_word(tmp_path):
    """torch's reason for a torch archive without data.pkl is a paragraph: the line keeps its first words
    whole (an ellipsis where it stops), never a word cut in two."""
    import zipfile

    model = tmp_path / "archive.pt"
    with zipfile.ZipFile(model, "w") as z:  # a torch archive's version record, and no data.pkl
        z.writestr("archive/version", "3\n")
    with pytest.raises(Exception) as raised:
        torch.load(model, weights_only=True)
    paragraph = str(raised.value).strip().splitlines()[0]
    with pytest.raises(CheckpointError) as err:
        load_model(model)
    line = str(err.value)
    reason = re.fullmatch(r"cannot read checkpoint .*archive\.pt \((.+)\); is it a complete mlkd-cache checkpoint\?", line).group(
        1
    )
    assert len(paragraph) > 160 and reason.endswith("…") and "\n" not in line
    kept = reason[:-1]
    assert paragraph.startswith(kept) and paragraph[len(kept)] == " " and "data.pkl" in kept


@pytest.mark.slow
def test_exported_files_are_refused_where_a_checkpoint_is_needed(checkpoints, exported, tmp_path):
    """An .onnx or .pt2 export given where a checkpoint is needed (load_model, export, evaluate,
    tune-thresholds): one line saying it is an exported file and that a checkpoint (.pt) is
    needed, naming the checkpoint it came from; recognised by its content, whatever its name."""
    from mlkd_cache.runtime.deploy import export_kind, load_pt2, open_predictor

    source = checkpoints["digits"]
    onnx_file = Path(exported["digits"]["path"])
    pt2_file = tmp_path / "student.pt2"
    export(source, pt2_file, check=False)
    renamed = tmp_path / "student.pt"  # an ONNX file under a checkpoint's name
    renamed.write_bytes(onnx_file.read_bytes())
    expected = {
        onnx_file: "an ONNX model",
        pt2_file: r"a torch\.export \(\.pt2\) program",
        renamed: "an ONNX model",
    }
    for path, kind in expected.items():
        message = (
            rf"{re.escape(str(path))} is {kind} written by mlkd-cache export, not a checkpoint; "
            rf"this needs a checkpoint \(\.pt\): give the one it was exported from, {re.escape(str(source.resolve()))}"
        )
        with pytest.raises(CheckpointError, match=f"^{message}$"):
            load_model(path)
        assert_one_line_error(run_cli_in_process(["export", str(path), "-o", str(tmp_path / "again.onnx")]), message)
    assert_one_line_error(run_cli_in_process(["evaluate", str(pt2_file)]), "is a torch.export")
    assert_one_line_error(
        run_cli_in_process(["tune-thresholds", str(onnx_file)]), "is an ONNX model written by mlkd-cache export"
    )
    assert not (tmp_path / "again.onnx").exists()
    # an export predict reads whatever its name: the content says what it is
    assert type(open_predictor(renamed)).__name__ == "OnnxPredictor"
    assert type(open_predictor(pt2_file)).__name__ == "Pt2Predictor"
    # the metadata read without onnx is what onnxruntime and torch.export.load read
    assert export_kind(onnx_file) == ("onnx", load_onnx(onnx_file).metadata)
    assert export_kind(pt2_file) == ("pt2", load_pt2(pt2_file).metadata)
    assert set(load_pt2(pt2_file).metadata) == set(METADATA_KEYS)
    assert export_kind(source) is None and export_kind(tmp_path / "absent.onnx") is None


@pytest.mark.parametrize("package", ["onnx", "onnxscript", "onnxruntime"])
def test_a_missing_deploy_package_is_one_line(checkpoints, tmp_path, monkeypatch, package):
    """Each package of the deploy extra, missing (an import that fails): one line naming the
    package and the extra to install, nothing written; load_onnx the same for onnxruntime."""
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    proc = run_cli_in_process(["export", str(checkpoints["digits"]), "-o", str(tmp_path / "m.onnx")])
    assert_one_line_error(proc, rf"^error: export to ONNX needs {package}: pip install 'mlkd-cache\[deploy\]'$")
    assert list(tmp_path.iterdir()) == []
    if package == "onnxruntime":
        (tmp_path / "m.onnx").write_bytes(b"")
        with pytest.raises(
            MissingDependencyError, match=r"^running an ONNX model needs onnxruntime: pip install 'mlkd-cache\[deploy\]'$"
        ):
            load_onnx(tmp_path / "m.onnx")


def test_install_hints_come_from_the_extras_of_setup_cfg():
    """The one table of extras (errors.EXTRAS) is setup.cfg's, package for package; a package of
    an extra is installed with it, any other by its own requirement."""
    import configparser

    from mlkd_cache.errors import EXTRAS, install_hint, require_module

    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    declared = {
        extra: {
            re.split(r"[<>=!~;\[ ]", line.strip())[0]
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        }
        for extra, text in parser["options.extras_require"].items()
        if extra != "test"
    }
    assert {extra: set(packages) for extra, packages in EXTRAS.items()} == declared
    assert install_hint("onnxscript") == "pip install 'mlkd-cache[deploy]'"
    assert install_hint("pyarrow") == "pip install pyarrow"
    assert install_hint("click>=8.2") == "pip install 'click>=8.2'"
    with pytest.raises(
        MissingDependencyError, match=r"^a test needs no_such_module_here: pip install no_such_module_here, or skip it$"
    ):
        require_module("no_such_module_here", "a test", instead="or skip it")
    assert require_module("json", "a test") is json


def test_load_onnx_refuses_what_is_not_an_export(tmp_path):
    """A file that is not ONNX, an ONNX model without the metadata, and one of a newer export
    format: one CheckpointError line each, naming the file and what to do."""
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    with pytest.raises(CheckpointError, match="cannot read .*notes.onnx as an ONNX model") as err:
        load_onnx(text)
    assert "\n" not in str(err.value)
    identity = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["pixels"], ["logits"])],
            "identity",
            [onnx.helper.make_tensor_value_info("pixels", onnx.TensorProto.UINT8, [1])],
            [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.UINT8, [1])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 18)],
        ir_version=9,
    )
    plain = tmp_path / "plain.onnx"
    onnx.save(identity, plain)
    with pytest.raises(CheckpointError, match=r"plain.onnx is not an export of mlkd-cache .*make one with mlkd-cache export"):
        load_onnx(plain)
    onnx.helper.set_model_props(
        identity, {"mlkd_cache.format": "mlkd-cache-export", "mlkd_cache.format_version": "2", KEY_CARD: "{}"}
    )
    newer = tmp_path / "newer.onnx"
    onnx.save(identity, newer)
    with pytest.raises(CheckpointError, match="has export format '2', this mlkd-cache reads up to 1; upgrade mlkd-cache"):
        load_onnx(newer)
    with pytest.raises(CheckpointError, match="ONNX model not found"):
        load_onnx(tmp_path / "absent.onnx")


@pytest.mark.slow
def test_an_onnx_model_takes_only_its_pixels(exported):
    """Float input, or pixels of another size: one DataError line naming what it takes."""
    model = load_onnx(exported["digits"]["path"])
    with pytest.raises(DataError, match=r"takes uint8 pixels \[N, 3, 32, 32\] .*got float32 \[1, 3, 32, 32\]"):
        model(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(DataError, match=r"got uint8 \[2, 3, 64, 64\]"):
        model(np.zeros((2, 3, 64, 64), dtype=np.uint8))


def test_format_comes_from_the_suffix_and_must_match_it():
    assert format_of("a/student.onnx") == "onnx" and format_of("a/student.pt2") == "pt2"
    assert format_of("student.ONNX", "onnx") == "onnx"
    with pytest.raises(ConfigError, match=r"an export to pt2 is named \*\.pt2 .*name it student\.pt2"):
        format_of("student.onnx", "pt2")
    with pytest.raises(ConfigError, match=r"an export to onnx is named \*\.onnx .*name it student\.onnx"):
        format_of("student.bin")
    with pytest.raises(ConfigError, match="--format 'tflite' is not an export format; choose one of onnx, pt2"):
        format_of("student.tflite", "tflite")


def test_check_pixels_without_the_data_are_seeded_and_leave_the_global_rng(checkpoints):
    """A card whose dataset is not at hand (a VOC root that does not exist) is checked on random
    pixels from a generator of its own: the same each time, the global RNG untouched."""
    card = load_model(checkpoints["digits"]).card
    away = card.replace(config={**card.config, "dataset": "voc", "dataset_para": {}, "data_root": "/nonexistent/voc"})
    state = torch.random.get_rng_state()
    first, what = check_pixels(away)
    again, _ = check_pixels(away)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert what == "random pixels (seed 0)" and torch.equal(first, again)
    assert first.dtype == torch.uint8 and first.shape == (7, 3, 32, 32)
    assert 100 < float(first.float().mean()) < 155  # uniform over 0..255: mean 127.5, 21504 pixels
    real, what = check_pixels(card)
    assert what == "the first 7 images of the digits test split"
    assert torch.equal(
        real,
        torch.stack(
            [eval_inputs(dataset_from_config(Config.from_dict(card.config), "test"), card.transform)[i].image for i in range(7)]
        ),
    )
