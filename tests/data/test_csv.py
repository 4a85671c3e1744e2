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


def test_one_hot_and_negative_label_mistakes_are_refused_not_guessed(tmp_path):
    """Reviewed edge cases: a -1 or an empty cell in an otherwise 0/1 column stops at its line;
    1.0/0.0 read as 1/0; the test file's columns may come in another order; classes must match the
    columns; a negative_label is no class; a row with more cells than the header stops."""
    for name in "abc":
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    header = "image,cat,dog,Rating\n"
    (tmp_path / "train.csv").write_text(header + "a.jpg,1,0,7\nb.jpg,0,1.0,8\nc.jpg,1.0,1,9\n")
    (tmp_path / "test.csv").write_text("image,dog,cat\na.jpg,1,0\n")
    kw = dict(train_file="train.csv", test_file="test.csv", label_columns="one-hot")
    train = build_dataset("csv", "train", str(tmp_path), **kw)
    test = build_dataset("csv", "test", str(tmp_path), **kw)
    assert train.class_names == ["cat", "dog"] and train.labels.tolist() == [[1, 0], [0, 1], [1, 1]]
    assert test.labels.tolist() == [[0, 1]] and train.ignored_columns == ["Rating"]
    (tmp_path / "neg.csv").write_text(header + "a.jpg,1,0,7\nb.jpg,-1,1,8\nc.jpg,1,1,9\n")
    with pytest.raises(DataError, match=r"neg\.csv:3: class column 'cat' holds '-1'"):
        build_dataset("csv", "train", str(tmp_path), train_file="neg.csv", label_columns="one-hot")
    (tmp_path / "empty.csv").write_text(header + "a.jpg,1,0,7\nb.jpg,,1,8\nc.jpg,1,1,9\n")
    with pytest.raises(DataError, match=r"empty\.csv:3: class column 'cat' holds 'an empty cell'"):
        build_dataset("csv", "train", str(tmp_path), train_file="empty.csv", label_columns="one-hot")
    with pytest.raises(DataError, match=r"no column for bird"):
        build_dataset(
            "csv", "train", str(tmp_path), train_file="train.csv", label_columns="one-hot", classes=["cat", "dog", "bird"]
        )
    (tmp_path / "l.csv").write_text("image,labels\na.jpg,cat;No Finding\n")
    with pytest.raises(ConfigError, match="negative_label 'No Finding' means no class"):
        build_dataset(
            "csv", "train", str(tmp_path), train_file="l.csv", negative_label="No Finding", classes=["cat", "No Finding"]
        )
    with pytest.raises(DataError, match=r"l\.csv:2: 'No Finding' \(negative_label, no positive class\) comes with other labels"):
        build_dataset("csv", "train", str(tmp_path), train_file="l.csv", label_sep=";", negative_label=" No Finding ")
    (tmp_path / "wide.csv").write_text("image,labels\na.jpg,cat,dog\n")
    with pytest.raises(DataError, match=r"wide\.csv:2: 3 cells, the header has 2"):
        build_dataset("csv", "train", str(tmp_path), train_file="wide.csv")
    with pytest.raises(ConfigError, match="image_pattern must hold one"):
        build_dataset("csv", "train", str(tmp_path), train_file="wide.csv", image_pattern="{x}/{}.jpg")
