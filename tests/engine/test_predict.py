"""``predict``: labels for new images, on real photographs (../shared/data/coco2017-tiny): the same
probabilities as ``evaluate``'s logits of the same files, labels at the model's stored thresholds,
unreadable files named and the rest predicted, and every bad input in one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlkd_cache.commands import predict as predict_engine
from mlkd_cache.commands.evaluate import run as evaluate
from mlkd_cache.config import Config
from mlkd_cache.data.image_files import ImageFiles, collect_images
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.data.views import eval_inputs
from mlkd_cache.errors import ConfigError, DataError, MissingDependencyError
from mlkd_cache.metrics import sigmoid
from mlkd_cache.models import build_model
from mlkd_cache.models.card import ModelCard
from mlkd_cache.runtime.checkpoint import load_model, save_model, update_card

from ..bounds import recompute_bound
from ..conftest import assert_one_line_error, calibrate_batchnorm, run_cli_in_process, shared_data


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A test_resnet + ML-Decoder for the 80 COCO classes (its own random weights, seed 0) whose
    card's config points at the 100 COCO 2017 photographs; its val2017 folder is what is predicted."""
    root = shared_data("coco2017-tiny")
    tmp = tmp_path_factory.mktemp("predict")
    cfg = Config.from_dict(
        dict(dataset="coco", data_root=str(root), model_s="test_resnet", img_size=64, embed_dim=16, workers=0, batch_size=8)
    )
    torch.manual_seed(0)
    from mlkd_cache.data import dataset_from_config

    classes = dataset_from_config(cfg, "test").class_names
    model = build_model("test_resnet", len(classes), embed_dim=16, img_size=64)
    card = ModelCard.of(model, "student", classes, TransformSpec.from_config(cfg), cfg.to_dict())
    save_model(tmp / "student.pt", card, model.state_dict(), epoch=1, metrics={})
    return tmp, root


def test_probabilities_are_evaluates_and_labels_follow_the_stored_thresholds(coco):
    tmp, root = coco
    ckpt = tmp / "student.pt"
    scored = evaluate(ckpt, split="test", keep_logits=True)  # val2017, in the dataset's order
    from mlkd_cache.data import dataset_from_config

    split = dataset_from_config(Config.from_dict(load_model(ckpt).card.config), "test")
    expected = dict(zip(split.image_paths, sigmoid(scored["logits"])))
    # thresholds at each class's median probability: about half the images positive per class
    values = np.median(np.stack(list(expected.values())), axis=0)
    card = load_model(ckpt).card.replace(thresholds={"values": values.tolist(), "objective": "f1", "split": "val", "samples": 9})
    update_card(ckpt, card)

    preds = predict_engine.predict(ckpt, [root / "val2017"], batch_size=7)
    assert preds.paths == sorted(str(p) for p in (root / "val2017").glob("*.jpg")) and len(preds.paths) == 50
    assert all(e is None for e in preds.errors)
    got = preds.probabilities
    want = np.stack([expected[p] for p in preds.paths])
    # float32 logits of the same pixels in other batches (7 here, 8 in evaluate): within the
    # recompute bound, which the sigmoid (slope <= 1/4) shrinks, plus the probability's rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=recompute_bound(scored["logits"]) / 4 + 2**-24)
    assert np.array_equal(preds.labels, got >= values[None, :])
    assert 0.3 < preds.labels.mean() < 0.7 and "per-class thresholds stored in the model" in preds.threshold_source
    # --threshold replaces them for every class; --top-k keeps the most probable of the predicted
    one = predict_engine.predict(ckpt, [root / "val2017"], threshold=0.0, top_k=3, batch_size=50)
    assert (one.labels.sum(axis=1) == 3).all()
    top3 = np.argsort(-one.probabilities, axis=1, kind="stable")[:, :3]
    assert all(set(np.flatnonzero(row)) == set(t) for row, t in zip(one.labels, top3))


def test_unreadable_files_are_named_and_the_rest_predicted(coco, tmp_path):
    """A folder with a truncated JPEG and a text file: both named (row and summary), every other
    image predicted as it is on its own; csv, jsonl and the CLI summary agree."""
    tmp, root = coco
    photos = sorted((root / "val2017").glob("*.jpg"))[:5]
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for p in photos[:3]:
        shutil.copy(p, folder / p.name)
    shutil.copy(photos[3], folder / "sub" / photos[3].name)
    (folder / "broken.jpg").write_bytes(photos[4].read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".hidden.jpg").write_bytes(b"")  # hidden: not read
    proc = run_cli_in_process(
        ["predict", str(tmp / "student.pt"), str(folder), "-o", str(tmp_path / "out.csv"), "--workers", "2"]
    )
    assert proc.returncode == 0, proc.stderr
    assert "predicted 4 of 6 images" in proc.stdout and "2 file(s) could not be read" in proc.stdout
    assert "broken.jpg: cannot decode image" in proc.stdout and "notes.txt: cannot decode image" in proc.stdout
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    listed = [
        *(folder / p.name for p in photos[:3]),
        folder / "broken.jpg",
        folder / "notes.txt",
        folder / "sub" / photos[3].name,
    ]
    assert [r["path"] for r in rows] == sorted(str(p) for p in listed)  # every file below the folder, by path
    bad = {Path(r["path"]).name: r for r in rows if r["error"]}
    assert set(bad) == {"broken.jpg", "notes.txt"} and all(r["labels"] == "" and r["p:person"] == "" for r in bad.values())
    alone = predict_engine.predict(tmp / "student.pt", [str(p) for p in photos[:4]])
    for r in rows:
        if not r["error"]:
            i = [p.name for p in photos[:4]].index(Path(r["path"]).name)
            np.testing.assert_allclose(
                float(r["p:person"]), alone.probabilities[i, alone.class_names.index("person")], atol=2**-16
            )
    run_cli_in_process(["predict", str(tmp / "student.pt"), str(folder), "-o", str(tmp_path / "out.jsonl")])
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["path"] for line in lines] == [r["path"] for r in rows]
    assert all((line["error"] is None) == (not r["error"]) for line, r in zip(lines, rows))
    assert all(line["probabilities"]["person"] is None for line in lines if line["error"])


def test_lists_of_paths_and_the_order_of_inputs(coco, tmp_path):
    _, root = coco
    photos = sorted((root / "val2017").glob("*.jpg"))[:3]
    (tmp_path / "list.txt").write_text(f"# photos\n{photos[2]}\n\n{photos[0]}\n")
    shutil.copy(photos[1], tmp_path / photos[1].name)
    (tmp_path / "list.csv").write_text(f"id,image\n1,{photos[1].name}\n")  # relative to the list's folder
    found = collect_images([tmp_path / "list.txt", tmp_path / "list.csv", photos[0]])
    assert found == [str(photos[2]), str(photos[0]), str(tmp_path / photos[1].name)]  # photos[0] named twice: once


def test_bad_input_is_one_line_and_writes_nothing(coco, tmp_path, monkeypatch):
    tmp, root = coco
    model = str(tmp / "student.pt")
    out = tmp_path / "out.csv"
    (tmp_path / "empty").mkdir()
    cases = [
        ([model, str(tmp_path / "nowhere"), "-o", str(out)], "nowhere does not exist; give image files, folders"),
        ([model, str(tmp_path / "empty"), "-o", str(out)], "holds no file; give a folder of images"),
        (
            [str(root / "val2017" / "000000006818.jpg"), str(root / "val2017"), "-o", str(out)],
            "is it a complete mlkd-cache checkpoint",
        ),
        ([str(tmp_path / "missing.pt"), str(root / "val2017"), "-o", str(out)], "not found; give a student.pt"),
        ([model, str(root / "val2017"), "-o", str(tmp_path)], "is a directory"),
        (
            [model, str(root / "val2017"), "-o", str(tmp_path / "labels.csv"), "--format", "jsonl"],
            r"--format jsonl but -o .*labels\.csv names a csv file",
        ),
    ]
    for args, message in cases:
        assert_one_line_error(run_cli_in_process(["predict", *args]), message)
    assert not out.exists()
    with pytest.raises(DataError, match="names no image"):
        (tmp_path / "blank.txt").write_text("# nothing\n")
        collect_images([tmp_path / "blank.txt"])
    # parquet needs pyarrow: without it, one line and no file
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    preds = predict_engine.predict(model, [root / "val2017" / "000000006818.jpg"])
    with pytest.raises(MissingDependencyError, match="parquet output needs pyarrow"):
        predict_engine.write_predictions(preds, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, img_size, suffix", [("test_resnet", 64, ".onnx"), ("resnet18", 64, ".onnx"), ("test_resnet", 64, ".pt2")]
)
def test_an_export_predicts_what_its_checkpoint_predicts(coco, tmp_path, arch, img_size, suffix):
    """export -> predict on the ONNX or torch.export file: the same label sets as the checkpoint
    at batch 1 and 7 (but for a probability within the export's tolerance of its threshold),
    probabilities within that tolerance; the thresholds travel in the file."""
    from mlkd_cache.commands.export import TOLERANCE, export

    _, root = coco
    cfg = Config.from_dict(dict(dataset="coco", data_root=str(root), img_size=img_size, embed_dim=32, workers=0))
    from mlkd_cache.data import dataset_from_config

    classes = dataset_from_config(cfg, "test").class_names
    torch.manual_seed(1)
    model = build_model(arch, len(classes), embed_dim=32, img_size=img_size)
    card = ModelCard.of(model, "student", classes, TransformSpec.from_config(cfg), cfg.to_dict())
    photos = sorted((root / "val2017").glob("*.jpg"))[:14]
    calibrate_batchnorm(model, eval_inputs(ImageFiles(photos), card.transform), card.transform)
    save_model(tmp_path / "model.pt", card, model.state_dict(), epoch=0, metrics={})
    reference = predict_engine.predict(tmp_path / "model.pt", photos, batch_size=7)
    # each class's threshold in the widest gap between its images' probabilities: labels on both sides
    ordered = np.sort(reference.probabilities, axis=0)
    widest = np.argmax(np.diff(ordered, axis=0), axis=0)[None, :]
    values = ((np.take_along_axis(ordered, widest, 0) + np.take_along_axis(ordered, widest + 1, 0)) / 2)[0]
    update_card(tmp_path / "model.pt", load_model(tmp_path / "model.pt").card.replace(thresholds={"values": values.tolist()}))
    exported = tmp_path / f"model{suffix}"
    export(tmp_path / "model.pt", exported)
    for batch in (1, 7):
        onnx = predict_engine.predict(exported, photos, batch_size=batch)
        assert "per-class thresholds stored in the model" in onnx.threshold_source and onnx.model == str(exported)
        tol = TOLERANCE * max(1.0, float(np.abs(np.log(reference.probabilities / (1 - reference.probabilities))).max()))
        assert np.abs(onnx.probabilities - reference.probabilities).max() <= tol / 4 + 2**-20
        near = np.abs(reference.probabilities - values[None, :]) <= tol / 4 + 2**-20
        assert np.array_equal(onnx.labels[~near], (reference.probabilities >= values[None, :])[~near])
        assert not near.any()  # every label set is compared, none skipped


def test_out_is_refused_when_it_exists_unless_overwrite_and_its_folder_is_made(coco, tmp_path):
    """-o in a folder that does not exist yet: the folder is made. -o onto an existing file: one
    line naming --overwrite, the file untouched, before the model runs; --overwrite replaces it."""
    tmp, root = coco
    photo = str(sorted((root / "val2017").glob("*.jpg"))[0])
    out = tmp_path / "new" / "deeper" / "labels.csv"
    proc = run_cli_in_process(["predict", str(tmp / "student.pt"), photo, "-o", str(out), "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    first = out.read_bytes()
    assert first.startswith(b"path,labels,error,p:") and first.count(b"\n") == 2
    out.write_bytes(b"keep me")
    proc = run_cli_in_process(["predict", str(tmp / "student.pt"), photo, "-o", str(out), "--no-progress"])
    assert_one_line_error(proc, r"-o .*labels\.csv exists; delete it, choose another file or pass --overwrite$")
    assert out.read_bytes() == b"keep me" and proc.stdout == ""
    with pytest.raises(ConfigError, match="pass --overwrite"):
        predict_engine.write_predictions(predict_engine.predict(tmp / "student.pt", [photo]), out)
    proc = run_cli_in_process(["predict", str(tmp / "student.pt"), photo, "-o", str(out), "--overwrite", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == first
    assert "--overwrite" in run_cli_in_process(["predict", "--help"]).stdout


def test_a_csv_list_without_an_image_or_path_column_is_one_line(coco, tmp_path):
    """A csv list names its column of paths 'image' or 'path'; one without either is refused in
    one line naming its columns, never read from its first column."""
    tmp, root = coco
    photo = sorted((root / "val2017").glob("*.jpg"))[0]
    (tmp_path / "list.csv").write_text(f"id,file\n7,{photo}\n")
    with pytest.raises(DataError, match=r"list\.csv has no 'image' or 'path' column \(its columns: id, file\)"):
        collect_images([tmp_path / "list.csv"])
    proc = run_cli_in_process(["predict", str(tmp / "student.pt"), str(tmp_path / "list.csv"), "-o", str(tmp_path / "o.csv")])
    assert_one_line_error(proc, r"has no 'image' or 'path' column .*name the column of paths 'image' or 'path'")
    assert not (tmp_path / "o.csv").exists()
    (tmp_path / "paths.csv").write_text(f"id,path\n7,{photo}\n")
    assert collect_images([tmp_path / "paths.csv"]) == [str(photo)]


def test_a_listed_image_that_does_not_exist_is_named_in_its_row(coco, tmp_path):
    """A list that names a file that is not there: its row says so in predict's words (the list,
    and the folder its paths are relative to), and the other images are predicted."""
    tmp, root = coco
    photo = sorted((root / "val2017").glob("*.jpg"))[0]
    (tmp_path / "list.txt").write_text(f"{photo}\ngone.jpg\n")
    preds = predict_engine.predict(tmp / "student.pt", [tmp_path / "list.txt"])
    assert preds.paths == [str(photo), str(tmp_path / "gone.jpg")]
    assert preds.errors[0] is None and not np.isnan(preds.probabilities[0]).any()
    ((path, reason),) = preds.unreadable
    assert path == str(tmp_path / "gone.jpg")
    assert reason == (
        f"{tmp_path / 'gone.jpg'} does not exist: a list of images names it; "
        "fix the list, or the folder its paths are relative to (the list's own folder)"
    )
