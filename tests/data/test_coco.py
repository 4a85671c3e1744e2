import json
import os

import numpy as np
import pytest

from mlkd_cache.data import build_dataset
from mlkd_cache.data.coco import (
    COCO_CLASSES,
    COCO_OFFICIAL_IDS,
    COCO_OFFICIAL_NAMES,
    parse_instances_annotations,
    parse_l2d_annotations,
)
from mlkd_cache.errors import ConfigError, DataError
from tests.data.fixtures import COCO_TRAIN_IMAGES, COCO_VAL_IMAGES, coco_instances_json, label_sets, make_coco_tree

# Statistics of L2D's real val2014 file, computed once from the file itself.
REAL_N, REAL_POSITIVES, REAL_PERSON = 40137, 116592, 21634
REAL_RAREST = ("hair drier", 70)


def test_class_order_alphabetical():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert list(COCO_CLASSES) == sorted(COCO_OFFICIAL_NAMES)
    assert COCO_CLASSES[:5] == ("airplane", "apple", "backpack", "banana", "baseball bat")
    assert COCO_CLASSES[9] == "bicycle" and COCO_CLASSES[44] == "motorcycle"
    assert COCO_CLASSES[49] == "person" and COCO_CLASSES[-1] == "zebra"
    assert len(COCO_OFFICIAL_IDS) == 80 and COCO_OFFICIAL_IDS[-1] == 90


def test_real_l2d_val_file(real_coco_val):
    names, labels = parse_l2d_annotations(str(real_coco_val))
    assert labels.shape == (REAL_N, 80) and labels.dtype == np.uint8
    assert len(names) == REAL_N == len(set(names))
    assert int(labels.sum()) == REAL_POSITIVES
    assert abs(labels.sum() / REAL_N - 2.905) < 1e-3
    assert labels.sum(axis=1).min() == 1  # L2D dropped unannotated images
    counts = labels.sum(axis=0)
    assert int(counts[49]) == REAL_PERSON and int(counts.argmax()) == 49
    assert COCO_CLASSES[int(counts.argmin())] == REAL_RAREST[0]
    assert int(counts.min()) == REAL_RAREST[1]
    row = labels[names.index("COCO_val2014_000000391895.jpg")]
    assert {COCO_CLASSES[k] for k in np.nonzero(row)[0]} == {"person", "motorcycle", "bicycle"}


def test_real_file_through_build_dataset(tmp_path, real_coco_val):
    os.symlink(real_coco_val, tmp_path / "val_anno.json")
    ds = build_dataset("coco", "test", str(tmp_path), check_images=False)
    assert len(ds) == REAL_N and ds.keys[0] == "val2014/COCO_val2014_000000391895.jpg"
    assert ds.describe() == "coco/test: 40137 images, 80 classes, 2.9 labels/image"
    # without images the default check reports them missing
    with pytest.raises(DataError, match=r"COCO images not found: .*val2014 is missing"):
        build_dataset("coco", "test", str(tmp_path))


def test_fixture_tree_l2d(coco_root):
    ds = build_dataset("coco", "train", str(coco_root))
    assert ds.annotation_format == "l2d"
    assert ds.keys == [f"train2014/{n}" for n in COCO_TRAIN_IMAGES]
    assert label_sets(ds) == {f"train2014/{n}": set(c) for n, c in COCO_TRAIN_IMAGES.items()}
    img, lab = ds[0]
    assert img.mode == "RGB" and lab.sum() == 3  # bowl, broccoli, orange
    val = build_dataset("coco", "test", str(coco_root))
    assert len(val) == 3  # the unannotated image is not in L2D's file


def test_instances_and_l2d_agree(tmp_path):
    """L2D issue #4: category ids must map through the sorted names, not their id order."""
    root = make_coco_tree(tmp_path, fmt="both")
    for split, content in (("train", COCO_TRAIN_IMAGES), ("test", COCO_VAL_IMAGES)):
        a = build_dataset("coco", split, str(root), annotation="l2d")
        b = build_dataset("coco", split, str(root), annotation="instances")
        auto = build_dataset("coco", split, str(root))
        assert auto.annotation_format == "l2d"  # L2D files win
        assert a.class_names == b.class_names == list(COCO_CLASSES)
        annotated = [k for k, row in zip(b.keys, b.labels) if row.any()]
        assert a.keys == annotated
        rows_b = {k: row for k, row in zip(b.keys, b.labels)}
        np.testing.assert_array_equal(a.labels, np.stack([rows_b[k] for k in a.keys]))
        folder = "train2014" if split == "train" else "val2014"
        assert label_sets(b) == {f"{folder}/{n}": set(c) for n, c in content.items()}
    # the unannotated val image is kept with a zero row from the instances file
    b = build_dataset("coco", "test", str(root), annotation="instances")
    assert len(b) == 4 and b.labels[b.keys.index("val2014/COCO_val2014_000000000042.jpg")].sum() == 0
    # person has official id 1 but index 49; an id-order mapping would have made it index 0
    row = b.labels[b.keys.index("val2014/COCO_val2014_000000391895.jpg")]
    assert np.nonzero(row)[0].tolist() == [9, 44, 49]


def test_instances_category_order_in_file_is_irrelevant(tmp_path):
    data = coco_instances_json(COCO_VAL_IMAGES)
    p1 = tmp_path / "a.json"
    p1.write_text(json.dumps(data))
    data["categories"] = data["categories"][::-1]
    p2 = tmp_path / "b.json"
    p2.write_text(json.dumps(data))
    n1, l1 = parse_instances_annotations(str(p1))
    n2, l2 = parse_instances_annotations(str(p2))
    assert n1 == n2 and np.array_equal(l1, l2)


def test_instances_unknown_category(tmp_path):
    data = coco_instances_json(COCO_VAL_IMAGES)
    data["categories"][0]["name"] = "persn"
    p = tmp_path / "i.json"
    p.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"unknown class 'persn'.*did you mean 'person'"):
        parse_instances_annotations(str(p))


def test_l2d_bad_index(tmp_path):
    p = tmp_path / "val_anno.json"
    p.write_text(json.dumps([{"file_name": "x.jpg", "labels": [3, 80]}]))
    with pytest.raises(DataError, match=r"class index 80 is outside 0\.\.79"):
        parse_l2d_annotations(str(p))


def test_missing_annotations_and_bad_format(tmp_path):
    (tmp_path / "train2014").mkdir()
    with pytest.raises(
        DataError,
        match=r"COCO annotations not found in .*: expected train_anno\.json \(L2D\) or "
        r"annotations/instances_train2014\.json or annotations/instances_train2017\.json",
    ):
        build_dataset("coco", "train", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown year 2016; valid: auto, 2014, 2017"):
        build_dataset("coco", "train", str(tmp_path), year=2016)
    with pytest.raises(ConfigError, match="unknown annotation format 'xml'"):
        build_dataset("coco", "train", str(tmp_path), annotation="xml")


def test_missing_image(coco_root):
    os.remove(coco_root / "val2014" / "COCO_val2014_000000184613.jpg")
    with pytest.raises(
        DataError,
        match=r"1 of 3 image files are missing, first: "
        r".*COCO_val2014_000000184613\.jpg",
    ):
        build_dataset("coco", "test", str(coco_root))


def test_real_coco2017_tree_by_root_alone(coco2017_tiny):
    """The official 2017 layout: train2017/, val2017/, annotations/instances_*2017.json."""
    for split, folder in (("train", "train2017"), ("test", "val2017")):
        ds = build_dataset("coco", split, str(coco2017_tiny))
        raw = json.loads((coco2017_tiny / "annotations" / f"instances_{folder}.json").read_text())
        assert (ds.year, ds.annotation_format, len(ds)) == (2017, "instances", 50)
        assert ds.keys[0] == f"{folder}/{raw['images'][0]['file_name']}" and list(ds.class_names) == list(COCO_CLASSES)
        # labels from the official ids through the alphabetical names: person (id 1) is column 49
        cat_name = {c["id"]: c["name"] for c in raw["categories"]}
        expected = {im["file_name"]: set() for im in raw["images"]}
        by_id = {im["id"]: im["file_name"] for im in raw["images"]}
        for a in raw["annotations"]:
            expected[by_id[a["image_id"]]].add(cat_name[a["category_id"]])
        got = {k.split("/", 1)[1]: {COCO_CLASSES[c] for c in np.flatnonzero(row)} for k, row in zip(ds.keys, ds.labels)}
        assert got == expected
        assert sum(not v for v in got.values()) == {"train": 1, "test": 2}[split]  # unannotated images stay, all-zero


def test_both_official_years_must_be_chosen(tmp_path, coco2017_tiny):
    root = make_coco_tree(tmp_path / "both", fmt="instances", images=False)
    (root / "annotations" / "instances_train2017.json").symlink_to(coco2017_tiny / "annotations" / "instances_train2017.json")
    (root / "train2017").symlink_to(coco2017_tiny / "train2017")
    with pytest.raises(DataError, match=r"holds COCO 2014 and 2017 .*dataset_para=dict\(year=2017\)"):
        build_dataset("coco", "train", str(root), check_images=False)
    assert build_dataset("coco", "train", str(root), year=2017).year == 2017
    assert build_dataset("coco", "train", str(root), year=2014, check_images=False).keys[0].startswith("train2014/")
    # L2D's files are 2014 images: auto with L2D's file present still reads it, year=2017 skips it
    make_coco_tree(root, fmt="l2d", images=False)
    assert build_dataset("coco", "train", str(root), check_images=False).annotation_format == "l2d"
    assert build_dataset("coco", "train", str(root), year=2017).annotation_format == "instances"
    with pytest.raises(ConfigError, match="L2D's annotation files cover COCO 2014 only"):
        build_dataset("coco", "train", str(root), annotation="l2d", year=2017)
