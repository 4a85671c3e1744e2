"""docs/deploy.md's onnxruntime-only program is examples/deploy/run_onnx.py, verbatim, and it runs:
with onnxruntime, Pillow and numpy alone it gives the labels and probabilities ``predict`` gives
for the same images from the same export: photographs, a 16-bit greyscale PNG and a PNG with
transparency (decoded as ``predict`` decodes them: 16-bit samples scaled to 8 bits, alpha
composited on white)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mlkd_cache.commands import predict as predict_engine
from mlkd_cache.commands.export import TOLERANCE, export
from mlkd_cache.config import Config
from mlkd_cache.data.image_files import ImageFiles
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.data.views import eval_inputs
from mlkd_cache.models import build_model
from mlkd_cache.models.card import ModelCard
from mlkd_cache.runtime.checkpoint import save_model

from .conftest import REPO, calibrate_batchnorm, shared_data

SCRIPT = REPO / "examples" / "deploy" / "run_onnx.py"


def test_the_page_shows_the_program():
    page = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    body = SCRIPT.read_text(encoding="utf-8").split('"""\n\n', 1)[1]  # after its docstring
    assert f"```python\n{body}```" in page


@pytest.mark.slow
def test_the_program_runs_an_export_without_mlkd_cache(tmp_path):
    root = shared_data("coco2017-tiny")
    photos = sorted((root / "val2017").glob("*.jpg"))[:3]
    # the same photograph as a 16-bit greyscale PNG (the low byte not zero: scaled, not cut) and
    # as an RGBA PNG of darkened colours whose alpha runs from 0 to 255 across it
    with Image.open(photos[0]) as im:
        grey = np.asarray(im.convert("L"), dtype=np.uint16)
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    Image.fromarray((grey * 257 - (grey > 0) * 100).astype(np.uint16)).save(tmp_path / "sixteen.png")
    alpha = np.broadcast_to(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), rgb.shape[:2])
    Image.fromarray(np.dstack([rgb // 4, alpha])).save(tmp_path / "alpha.png")
    with Image.open(tmp_path / "sixteen.png") as im:
        assert im.mode.startswith("I")  # read back with its 16 bits
    photos += [tmp_path / "sixteen.png", tmp_path / "alpha.png"]
    cfg = Config.from_dict(dict(img_size=64, embed_dim=16, transform=dict(decode="reduced", interpolation="bicubic")))
    torch.manual_seed(0)
    model = build_model("test_resnet", 5, embed_dim=16, img_size=64)
    card = ModelCard.of(model, "student", list("abcde"), TransformSpec.from_config(cfg), cfg.to_dict())
    calibrate_batchnorm(model, eval_inputs(ImageFiles(photos), card.transform), card.transform)  # so a wrong decode shows
    card = card.replace(thresholds={"values": [0.3, 0.4, 0.5, 0.6, 0.7], "objective": "f1", "split": "val", "samples": 1})
    save_model(tmp_path / "m.pt", card, model.state_dict(), epoch=0, metrics={})
    export(tmp_path / "m.pt", tmp_path / "m.onnx")
    code = "import sys; sys.modules['mlkd_cache'] = None; sys.argv = sys.argv[1:]; exec(open(sys.argv[0]).read())"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SCRIPT), str(tmp_path / "m.onnx"), *map(str, photos)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    preds = predict_engine.predict(tmp_path / "m.pt", photos)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(photos) == 5
    thresholds, compared = np.asarray(card.thresholds["values"]), 0
    for line, path, labels, probs in zip(lines, preds.paths, preds.label_sets, preds.probabilities):
        name, got_labels, got_probs = line.split(" ", 2)
        # the export's tolerance, plus the 6 decimals the program prints
        bound = TOLERANCE + 1e-6
        assert name == path and np.abs(np.asarray(json.loads(got_probs)) - probs).max() <= bound
        # the label sets agree on every class whose probability is not within that bound of its
        # threshold (onnxruntime's kernels may round it to the other side)
        decided = {c for c, p, t in zip(card.class_names, probs, thresholds) if abs(p - t) > bound}
        assert set(got_labels.split(";")) & decided == set(labels) & decided
        compared += len(decided)
    assert compared >= 20  # of the 25 labels: a few near their threshold at most
