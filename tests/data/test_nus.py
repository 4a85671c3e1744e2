import numpy as np
import pytest

from mlkd_cache.data import build_dataset
from mlkd_cache.data.nus import normalise_image_path
from mlkd_cache.errors import DataError
from tests.data.fixtures import NUS_CONCEPTS, NUS_TEST, NUS_TRAIN, label_sets


def test_train_split(nus_root):
    ds = build_dataset("nus", "train", str(nus_root))
    assert ds.class_names == NUS_CONCEPTS
    assert ds.keys[0] == "Flickr/actor/0001_2124494179.jpg"
    assert ds.keys == [f"Flickr/{d}/{f}" for (d, f), _ in NUS_TRAIN]
    assert list(label_sets(ds).values()) == [s for _, s in NUS_TRAIN]
    np.testing.assert_array_equal(ds.labels[2], [0, 0, 1, 0, 1])  # beach, birds
    assert ds.labels[3].sum() == 0
    img, _ = ds[4]
    assert img.mode == "RGB" and img.size == (24, 24)
    assert ds.describe() == "nus/train: 5 images, 5 classes, 1.2 labels/image"


def test_test_split(nus_root):
    ds = build_dataset("nus", "test", str(nus_root))
    assert len(ds) == 3 and list(label_sets(ds).values()) == [s for _, s in NUS_TEST]


def test_path_normalisation():
    assert normalise_image_path("actor\\0001_2124494179.jpg\r\n") == "Flickr/actor/0001_2124494179.jpg"
    assert normalise_image_path("C:\\ImageData\\Flickr\\actor\\0001.jpg") == "Flickr/actor/0001.jpg"


def test_label_count_mismatch(nus_root):
    p = nus_root / "TrainTestLabels" / "Labels_beach_Train.txt"
    p.write_text(p.read_text() + "0\n0\n")
    with pytest.raises(
        DataError,
        match=r"Labels_beach_Train\.txt has 7 lines but "
        r".*TrainImagelist\.txt lists 5 images",
    ):
        build_dataset("nus", "train", str(nus_root))


def test_bad_label_value(nus_root):
    (nus_root / "TrainTestLabels" / "Labels_bear_Test.txt").write_text("0\n2\n1\n")
    with pytest.raises(DataError, match=r"Labels_bear_Test\.txt: every line must be 0 or 1"):
        build_dataset("nus", "test", str(nus_root))


def test_missing_label_file_and_concepts(nus_root):
    (nus_root / "TrainTestLabels" / "Labels_animal_Test.txt").unlink()
    with pytest.raises(DataError, match=r"NUS-WIDE label file not found: .*Labels_animal_Test\.txt"):
        build_dataset("nus", "test", str(nus_root))
    (nus_root / "Concepts81.txt").unlink()
    with pytest.raises(DataError, match=r"Concepts81\.txt is missing"):
        build_dataset("nus", "train", str(nus_root))


def test_missing_image(nus_root):
    (nus_root / "Flickr" / "bear" / "0005_3099811321.jpg").unlink()
    with pytest.raises(
        DataError,
        match=r"1 of 5 image files are missing, first: "
        r".*Flickr/bear/0005_3099811321\.jpg",
    ):
        build_dataset("nus", "train", str(nus_root))
