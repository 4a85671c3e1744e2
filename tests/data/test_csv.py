import numpy as np
import pytest

from mlkd_cache.data import build_dataset
from mlkd_cache.errors import ConfigError, DataError
from tests.data.fixtures import CSV_TEST, CSV_TRAIN, label_sets, make_csv_tree


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_both_forms(tmp_path, fmt):
    root = make_csv_tree(tmp_path, fmt=fmt)
    kw = dict(train_file=f"train.{fmt}", test_file=f"test.{fmt}")
    tr = build_dataset("csv", "train", str(root), **kw)
    te = build_dataset("csv", "test", str(root), **kw)
    assert tr.class_names == te.class_names == ["bird", "cat", "dog"]
    assert tr.keys == [im for im, _ in CSV_TRAIN] and te.keys == [im for im, _ in CSV_TEST]
    np.testing.assert_array_equal(tr.labels, [[0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(te.labels, [[1, 0, 0], [0, 1, 1]])
    img, lab = tr[2]
    assert img.mode == "RGB" and lab.tolist() == [1, 1, 0]


def test_explicit_classes_and_absolute_paths(tmp_path):
    root = make_csv_tree(tmp_path)
    ds = build_dataset(
        "csv",
        "test",
        None,
        train_file=str(root / "train.csv"),
        test_file=str(root / "test.csv"),
        image_dir=str(root),
        classes=["dog", "cat", "bird", "fish"],
    )
    assert ds.class_names == ["dog", "cat", "bird", "fish"]
    assert label_sets(ds) == {"img/e.jpg": {"bird"}, "img/f.jpg": {"dog", "cat"}}


def test_unknown_class_in_test_file(tmp_path):
    root = make_csv_tree(tmp_path, test=[("img/e.jpg", ["bird"]), ("img/f.jpg", ["horse"])])
    with pytest.raises(
        DataError,
        match=r"unknown class 'horse' in .*test\.csv:3 \(image img/f\.jpg\)"
        r".*valid classes: bird, cat, dog \(derived from .*train\.csv\)",
    ):
        build_dataset("csv", "test", str(root), train_file="train.csv", test_file="test.csv")


def test_errors(tmp_path):
    root = make_csv_tree(tmp_path)
    with pytest.raises(ConfigError, match="needs the param train_file"):
        build_dataset("csv", "train", str(root))
    with pytest.raises(ConfigError, match="test split needs the param test_file"):
        build_dataset("csv", "test", str(root), train_file="train.csv")
    with pytest.raises(DataError, match=r"--data-root"):
        build_dataset("csv", "train", None, train_file="train.csv")
    with pytest.raises(DataError, match=r"train label file not found: .*nope\.csv"):
        build_dataset("csv", "train", str(root), train_file="nope.csv")
    (root / "bad.csv").write_text("file,tags\na.jpg,cat\n")
    with pytest.raises(
        DataError, match=r"bad\.csv: no column 'image' for the images \(the header has file, tags\); set the param image_column"
    ):
        build_dataset("csv", "train", str(root), train_file="bad.csv")
    (root / "dup.csv").write_text("image,labels\nimg/a.jpg,cat\nimg/a.jpg,dog\n")
    with pytest.raises(DataError, match=r"image 'img/a\.jpg' is listed twice"):
        build_dataset("csv", "train", str(root), train_file="dup.csv")
    (root / "img" / "sub" / "c.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 4 image files are missing, first: .*img/sub/c\.jpg"):
        build_dataset("csv", "train", str(root), train_file="train.csv")


def test_a_val_file_gives_the_val_split(tmp_path):
    """``val_file`` builds the ``val`` split (for ``eval_split='val'``) with the train file's
    classes; without it the val split is refused in one line naming the param."""
    root = tmp_path
    (root / "a.jpg").write_bytes(b"")
    (root / "b.jpg").write_bytes(b"")
    (root / "train.csv").write_text("image,labels\na.jpg,cat;dog\nb.jpg,dog\n")
    (root / "val.csv").write_text("image,labels\nb.jpg,cat\n")
    val = build_dataset("csv", "val", str(root), train_file="train.csv", val_file="val.csv")
    assert val.split == "val" and val.keys == ["b.jpg"] and val.class_names == ["cat", "dog"]
    assert val.labels.tolist() == [[1, 0]]
    with pytest.raises(ConfigError, match="val split needs the param val_file"):
        build_dataset("csv", "val", str(root), train_file="train.csv")


def test_train_size_keeps_the_first_rows_and_the_whole_files_classes(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    (tmp_path / "train.csv").write_text("image,labels\na.jpg,cat\nb.jpg,dog\nc.jpg,emu\n")
    part = build_dataset("csv", "train", str(tmp_path), train_file="train.csv", train_size=2)
    assert part.keys == ["a.jpg", "b.jpg"] and part.class_names == ["cat", "dog", "emu"]
    with pytest.raises(ConfigError, match="train_size 4 but .* lists 3 images"):
        build_dataset("csv", "train", str(tmp_path), train_file="train.csv", train_size=4)
