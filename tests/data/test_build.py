import numpy as np
import pytest

from mlkd_cache.data import DATASETS, MultiLabelDataset, build_dataset, dataset_params
from mlkd_cache.errors import ConfigError, DataError
from tests.data.fixtures import truncate_file


def test_registry_names():
    assert DATASETS.names() == ["coco", "csv", "digits", "nus", "voc"]
    assert isinstance(build_dataset("digits", "test", test_size=5), MultiLabelDataset)


def test_unknown_name():
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset 'vocc' \(did you mean 'voc'\?\); "
        r"valid: coco, csv, digits, nus, voc",
    ):
        build_dataset("vocc", "train")


def test_unknown_split():
    with pytest.raises(ConfigError, match=r"unknown split 'val'; valid: train, test"):
        build_dataset("voc", "val")
    with pytest.raises(ConfigError, match=r"unknown split 'dev'; valid: train, val, test"):
        build_dataset("digits", "dev")


def test_digits_val_split_is_new_canvases_of_training_scans():
    """``val`` draws from the train scan pool (never the test pool) with its own stream."""
    train = build_dataset("digits", "train", train_size=50, val_size=40)
    val = build_dataset("digits", "val", train_size=50, val_size=40)
    test = build_dataset("digits", "test", train_size=50, val_size=40, test_size=30)
    assert len(val) == 40 and val.keys[0] == "digits/val/000000"
    used = set(val.source_indices[val.source_indices >= 0].tolist())
    assert used <= set(train.source_pool.tolist()) and not used & set(test.source_pool.tolist())
    assert not np.array_equal(val.images[:40], train.images[:40])
    assert val.labels.sum(axis=1).min() >= 1


def test_unknown_param():
    with pytest.raises(
        ConfigError,
        match=r"unknown param 'trainsize' for dataset 'digits' "
        r"\(did you mean 'train_size'\?\); valid: canvas",
    ):
        build_dataset("digits", "train", trainsize=10)
    with pytest.raises(
        ConfigError,
        match=r"unknown param 'annotations' for dataset 'voc'.*"
        r"valid: check_images",
    ):
        build_dataset("voc", "train", "/nonexistent", annotations="x")
    assert dataset_params("coco") == {"annotation": "auto", "year": "auto", "check_images": True}


# every registered dataset but the embedded one and csv (which first asks for its file names)
@pytest.mark.parametrize("name", [n for n in DATASETS.names() if n not in ("digits", "csv")])
def test_missing_root(name, tmp_path):
    with pytest.raises(DataError, match=rf"dataset '{name}' needs a data root: pass --data-root"):
        build_dataset(name, "train", None)
    with pytest.raises(
        DataError,
        match=r"data root not found: .*nothere is not a folder; "
        r"pass --data-root",
    ):
        build_dataset(name, "train", str(tmp_path / "nothere"))


def test_truncated_jpeg(voc_root):
    ds = build_dataset("voc", "train", str(voc_root))
    assert ds.load_image(1).size == (24, 24)
    path = voc_root / "VOCtrainval2007/VOCdevkit/VOC2007/JPEGImages/000009.jpg"
    truncate_file(path, 0.5)
    with pytest.raises(DataError, match=r"cannot decode image .*000009\.jpg .*truncated"):
        ds.load_image(1)
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot decode image .*000009\.jpg"):
        ds.load_image(1)
    path.unlink()
    with pytest.raises(DataError, match=r"image file missing: .*000009\.jpg"):
        ds.load_image(1)
