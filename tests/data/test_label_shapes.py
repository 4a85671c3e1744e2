"""Label files as they are published, read by the csv dataset from a config alone: a one-hot wide
file (ids without extension, a list-string column, a column that is no label), a ``|``-separated
file with a negative label, a TSV. Built from real VOC 2007 photographs (../shared/data)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from mlkd_cache.data import build_dataset

from ..conftest import assert_ends_with_error, run_cli_in_process, shared_data

pytestmark = pytest.mark.slow

CLASSES = ["Sci-Fi", "N/A", "Reality-TV"]  # names that look like syntax, taken verbatim


def voc_rows(count: int):
    """(image path under the root, VOC id, a label set over CLASSES) of the first photographs."""
    root = shared_data("voc2007-rf144")
    with open(root / "train.csv", newline="") as f:
        images = [row["image"] for row in csv.DictReader(f)][:count]
    rows = []
    for k, image in enumerate(images):
        labels = [c for j, c in enumerate(CLASSES) if (k >> j) & 1]  # every combination, the empty one included
        rows.append((image, image.split("/")[-1][: -len(".jpg")], labels))
    return root, rows


def write_shapes(tmp, rows):
    """The three shapes, train (first 24) and test (rest); returns {shape: dataset_para}."""
    train, test = rows[:24], rows[24:]

    def one_hot(path, part):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Id", "Genre", *CLASSES, "Rating"])
            for _, vid, labels in part:
                w.writerow([vid, repr(labels), *(int(c in labels) for c in CLASSES), "7.5"])

    def findings(path, part):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Image Index", "Finding Labels", "Patient Age"])
            for image, _, labels in part:
                w.writerow([image, "|".join(labels) or "No Finding", "58"])

    def tsv(path, part):
        with open(path, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["image", "labels"])
            for image, _, labels in part:
                w.writerow([image, ";".join(labels)])

    paras = {}
    for name, write, ext, layout in (
        ("one-hot", one_hot, "csv", dict(image_column="Id", image_pattern="images/{}.jpg", label_columns="one-hot")),
        (
            "findings",
            findings,
            "csv",
            dict(image_column="Image Index", labels_column="Finding Labels", label_sep="|", negative_label="No Finding"),
        ),
        ("tsv", tsv, "tsv", {}),
    ):
        files = {}
        for split, part in (("train", train), ("test", test)):
            files[f"{split}_file"] = str(tmp / f"{name}-{split}.{ext}")
            write(tmp / f"{name}-{split}.{ext}", part)
        paras[name] = {**files, **layout}
    return paras


def expected(part, class_names):
    return np.array([[int(c in labels) for c in class_names] for _, _, labels in part], dtype=np.uint8)


@pytest.mark.parametrize("shape", ["one-hot", "findings", "tsv"])
def test_each_shape_reads_its_labels_and_runs_every_stage(tmp_path, shape):
    root, rows = voc_rows(36)
    para = write_shapes(tmp_path, rows)[shape]
    train = build_dataset("csv", "train", str(root), **para)
    test = build_dataset("csv", "test", str(root), **para)
    names = CLASSES if shape == "one-hot" else sorted(CLASSES)  # a one-hot file's columns keep their order
    assert train.class_names == test.class_names == names
    assert np.array_equal(train.labels, expected(rows[:24], names)) and np.array_equal(test.labels, expected(rows[24:], names))
    assert train.keys == [image for image, _, _ in rows[:24]]
    if shape == "one-hot":
        assert train.ignored_columns == ["Genre", "Rating"]
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        f"dataset = 'csv'\ndataset_para = {para!r}\nmodel_t = 'test_resnet'\nmodel_s = 'test_resnet'\nimg_size = 32\n"
        "batch_size = 8\nembed_dim = 16\nworkers = 0\nmax_epoch_t = 1\nmax_epoch_s = 1\nlog_every = 0\ncache = dict(views=1)\n"
    )
    common = ["-c", str(cfg), "--data-root", str(root), "--no-progress"]
    plan = run_cli_in_process(["dump-targets", *common, "--dry-run"])
    assert plan.returncode == 0, plan.stderr
    assert "labels     24 images, 3 classes" in plan.stdout
    assert ("not used   columns Genre, Rating" in plan.stdout) == (shape == "one-hot")
    for args in (
        ["teacher-train", *common, "-o", str(tmp_path / "t")],
        ["dump-targets", *common, "-t", str(tmp_path / "t" / "teacher.pt"), "-o", str(tmp_path / "cache")],
        ["distill-student", *common, "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "s")],
    ):
        proc = run_cli_in_process(args)
        assert proc.returncode == 0, proc.stderr
    assert "labels     24 images, 3 classes" in run_cli_in_process(["inspect", str(tmp_path / "cache")]).stdout


def test_mistakes_in_a_label_file_end_in_one_line_naming_the_row(tmp_path):
    root, rows = voc_rows(30)
    paras = write_shapes(tmp_path, rows)
    one_hot = paras["one-hot"]
    text = (tmp_path / "one-hot-train.csv").read_text().splitlines()
    text[3] = text[3].replace(",7.5", ",7.5").rsplit(",", 2)[0] + ",2,7.5"  # a 2 in the last class column of line 4
    (tmp_path / "bad-2.csv").write_text("\n".join(text) + "\n")
    findings = paras["findings"]
    lines = (tmp_path / "findings-test.csv").read_text().splitlines()
    lines[2] = lines[2].replace("images/", "images/missing-", 1)
    (tmp_path / "missing.csv").write_text("\n".join(lines) + "\n")
    lines = (tmp_path / "findings-test.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",Sci-Fi|Horror,58"
    (tmp_path / "unknown.csv").write_text("\n".join(lines) + "\n")
    cases = [
        (
            {**one_hot, "train_file": str(tmp_path / "bad-2.csv")},
            r"bad-2\.csv:4: class column 'Reality-TV' holds '2'; one-hot class columns hold 0 or 1",
        ),
        ({**findings, "test_file": str(tmp_path / "missing.csv")}, r"missing\.csv:3: csv: 1 of 6 image files are missing"),
        ({**findings, "test_file": str(tmp_path / "unknown.csv")}, r"unknown class 'Horror' in .*unknown\.csv:4"),
        ({**findings, "label_sepp": "|"}, r"unknown param 'label_sepp' for dataset 'csv' \(did you mean 'label_sep'\?\)"),
    ]
    for para, match in cases:
        cfg = tmp_path / "cfg.py"
        cfg.write_text(f"dataset = 'csv'\ndataset_para = {para!r}\nimg_size = 32\nmodel_t = 'test_resnet'\n")
        proc = run_cli_in_process(["teacher-train", "-c", str(cfg), "--data-root", str(root), "-o", str(tmp_path / "never")])
        assert_ends_with_error(proc, match)  # log lines of the files read before may precede it
    assert not (tmp_path / "never").exists()


def test_a_separator_that_glues_classes_is_warned_about(tmp_path, caplog):
    root, rows = voc_rows(30)
    para = write_shapes(tmp_path, rows)["findings"]
    para = {k: v for k, v in para.items() if k != "label_sep"}  # "Sci-Fi|N/A" now reads as one class
    with caplog.at_level("WARNING", logger="mlkd_cache"):
        data = build_dataset("csv", "train", str(root), **para)
    assert "Sci-Fi|N/A" in data.class_names
    assert any("holds '|': is label_sep right?" in r.getMessage() for r in caplog.records)
