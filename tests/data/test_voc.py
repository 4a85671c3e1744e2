import os
import shutil

import numpy as np
import pytest

from mlkd_cache.data import build_dataset
from mlkd_cache.data.voc import VOC_CLASSES, parse_voc_xml
from mlkd_cache.errors import DataError
from tests.data.fixtures import VOC_TEST_EXPECTED, VOC_TRAIN_EXPECTED, label_sets, make_voc_tree, voc_xml

TRAIN_DIR = "VOCtrainval2007/VOCdevkit/VOC2007"


def test_class_order_is_standard():
    assert VOC_CLASSES == (
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    )


def test_train_labels_keys_and_rows(voc_root):
    ds = build_dataset("voc", "train", str(voc_root))
    assert ds.name == "voc" and ds.split == "train"
    assert ds.class_names == list(VOC_CLASSES) and ds.num_classes == 20
    assert ds.keys == [f"{TRAIN_DIR}/JPEGImages/{i}.jpg" for i in VOC_TRAIN_EXPECTED]
    assert ds.labels.dtype == np.uint8 and ds.labels.shape == (4, 20)
    got = label_sets(ds)
    assert got == {f"{TRAIN_DIR}/JPEGImages/{i}.jpg": s for i, s in VOC_TRAIN_EXPECTED.items()}
    # exact rows: chair=8; horse=12, person=14; car=6; aeroplane=0, pottedplant=15, tvmonitor=19
    expected = np.zeros((4, 20), np.uint8)
    expected[0, 8] = 1
    expected[1, [12, 14]] = 1
    expected[2, 6] = 1
    expected[3, [0, 15, 19]] = 1
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.describe() == "voc/train: 4 images, 20 classes, 1.8 labels/image"


def test_test_split(voc_root):
    ds = build_dataset("voc", "test", str(voc_root))
    assert ds.keys[0] == "VOCtest2007/VOCdevkit/VOC2007/JPEGImages/000001.jpg"
    assert list(label_sets(ds).values()) == list(VOC_TEST_EXPECTED.values())
    img, lab = ds[2]
    assert img.mode == "RGB" and img.size == (24, 24)
    assert lab.dtype == np.uint8 and lab.tolist() == ds.labels[2].tolist()


def test_parts_are_not_objects(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(voc_xml("a", [dict(name="person", parts=("head", "hand", "foot")), dict(name="dog", difficult=1)]))
    assert parse_voc_xml(str(p)) == ["person", "dog"]


def test_missing_annotations_dir(voc_root):
    shutil.rmtree(voc_root / TRAIN_DIR / "Annotations")
    with pytest.raises(DataError, match=r"VOC layout not found: .*VOC2007/Annotations is missing"):
        build_dataset("voc", "train", str(voc_root))


def test_missing_trainval_txt(voc_root):
    (voc_root / TRAIN_DIR / "ImageSets/Main/trainval.txt").unlink()
    with pytest.raises(
        DataError,
        match=r"ImageSets/Main/trainval\.txt is missing; expected "
        r"<root>/VOCtrainval2007/.*L2D layout",
    ):
        build_dataset("voc", "train", str(voc_root))


def test_unknown_class_in_xml(tmp_path):
    root = make_voc_tree(tmp_path, train={"000001": [dict(name="dog"), dict(name="aeroplan")]})
    with pytest.raises(
        DataError,
        match=r"unknown class 'aeroplan'.*did you mean 'aeroplane'.*"
        r"000001\.xml.*valid classes: aeroplane, bicycle",
    ):
        build_dataset("voc", "train", str(root))


def test_missing_image_reported_at_startup(voc_root):
    for i in ("000009", "000017"):
        os.remove(voc_root / TRAIN_DIR / "JPEGImages" / f"{i}.jpg")
    with pytest.raises(DataError, match=r"2 of 4 image files are missing, first: .*000009\.jpg"):
        build_dataset("voc", "train", str(voc_root))


def test_empty_split(tmp_path):
    root = make_voc_tree(tmp_path, train={})
    with pytest.raises(DataError, match="empty split: .*trainval.txt lists no images"):
        build_dataset("voc", "train", str(root))


def test_malformed_xml(voc_root):
    (voc_root / TRAIN_DIR / "Annotations/000012.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"malformed VOC annotation .*000012\.xml"):
        build_dataset("voc", "train", str(voc_root))
