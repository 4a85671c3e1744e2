import pytest

from mlkd_cache.data import DATASETS, MultiLabelDataset, build_dataset, dataset_params
from mlkd_cache.errors import ConfigError, DataError
from tests.data.fixtures import truncate_file


def test_registry_names():
    assert DATASETS.names() == ["coco", "csv", "digits", "nus", "voc"]
    assert isinstance(build_dataset("digits", "test", test_size=5), MultiLabelDataset)


def test_unknown_name():
    with pytest.raises(ConfigError, match=r"unknown dataset 'vocc' \(did you mean 'voc'\?\); "
                                          r"valid: coco, csv, digits, nus, voc"):
        build_dataset("vocc", "train")


def test_unknown_split():
    with pytest.raises(ConfigError, match=r"unknown split 'val'; valid: train, test"):
        build_dataset("digits", "val")


def test_unknown_param():
    with pytest.raises(ConfigError, match=r"unknown param 'trainsize' for dataset 'digits' "
                                          r"\(did you mean 'train_size'\?\); valid: canvas"):
        build_dataset("digits", "train", trainsize=10)
    with pytest.raises(ConfigError, match=r"unknown param 'annotations' for dataset 'voc'.*"
                                          r"valid: check_images"):
        build_dataset("voc", "train", "/nonexistent", annotations="x")
    assert dataset_params("coco") == {"annotation": "auto", "check_images": True}


@pytest.mark.parametrize("name", ["voc", "coco", "nus"])
def test_missing_root(name, tmp_path):
    with pytest.raises(DataError, match=rf"dataset '{name}' needs a data root: pass --data-root"):
        build_dataset(name, "train", None)
    with pytest.raises(DataError, match=r"data root not found: .*nothere is not a folder; "
                                        r"pass --data-root"):
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
