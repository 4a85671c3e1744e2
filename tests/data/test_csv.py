import logging

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


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "mlkd_cache" and r.levelno == logging.WARNING]


def test_exact_duplicate_rows_are_merged_at_their_first_row_with_one_warning(tmp_path, caplog):
    """Rows repeating an image with the same labels (in another order, as a list literal, empty)
    are dropped; the image keeps its first row's place, and one warning names the merged lines."""
    for name in "abc":
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    (tmp_path / "train.csv").write_text(
        "image,labels\n"
        "a.jpg,cat;dog\n"  # 2
        "b.jpg,dog\n"  # 3
        "a.jpg,dog cat\n"  # 4 = 2
        "c.jpg,\n"  # 5
        "b.jpg,dog\n"  # 6 = 3
        "c.jpg,\n"  # 7 = 5
        "a.jpg,\"['dog', 'cat']\"\n"  # 8 = 2
    )
    path = tmp_path / "train.csv"
    with caplog.at_level(logging.WARNING, logger="mlkd_cache"):
        ds = build_dataset("csv", "train", str(tmp_path), train_file="train.csv")
    assert ds.keys == ["a.jpg", "b.jpg", "c.jpg"] and ds.class_names == ["cat", "dog"]
    assert ds.labels.tolist() == [[1, 1], [0, 1], [0, 0]]
    assert ds.image_paths == [str(tmp_path / f"{n}.jpg") for n in "abc"]
    assert _warnings(caplog) == [
        f"csv: {path}: 4 duplicate rows merged, the same image and labels as an earlier line (lines 4 = 2, 6 = 3, 7 = 5, ...)"
    ]
    (tmp_path / "train.json").write_text(
        '[{"image": "b.jpg", "labels": ["cat", "dog"]}, {"image": "a.jpg", "labels": []},'
        ' {"image": "b.jpg", "labels": ["dog", "cat"]}]'
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlkd_cache"):
        js = build_dataset("csv", "train", str(tmp_path), train_file="train.json")
    assert js.keys == ["b.jpg", "a.jpg"] and js.labels.tolist() == [[1, 1], [0, 0]]
    assert _warnings(caplog) == [
        f"csv: {tmp_path / 'train.json'}: 1 duplicate row merged, the same image and labels as an earlier entry (entries 2 = 0)"
    ]


def test_a_one_hot_duplicate_row_is_merged_and_a_conflicting_one_names_both_lines(tmp_path, caplog):
    """The same one-hot row (after image_pattern; a column that is no class may differ) is merged;
    the same image with another row stops in one line naming both lines and the classes that differ."""
    for name in "ab":
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    header = "Id,cat,dog,Rating\n"
    (tmp_path / "train.csv").write_text(header + "b,0,1,7\na,1,1,8\nb,0,1.0,9\n")
    kw = dict(image_column="Id", image_pattern="{}.jpg", label_columns="one-hot")
    with caplog.at_level(logging.WARNING, logger="mlkd_cache"):
        ds = build_dataset("csv", "train", str(tmp_path), train_file="train.csv", **kw)
    assert ds.keys == ["b.jpg", "a.jpg"] and ds.labels.tolist() == [[0, 1], [1, 1]]
    assert _warnings(caplog) == [
        f"csv: {tmp_path / 'train.csv'}: 1 duplicate row merged, the same image and labels as an earlier line (lines 4 = 2)"
    ]
    (tmp_path / "conflict.csv").write_text(header + "b,0,1,7\na,1,1,8\nb,0,1,7\nb,1,0,7\n")
    with pytest.raises(DataError) as err:
        build_dataset("csv", "train", str(tmp_path), train_file="conflict.csv", **kw)
    assert str(err.value) == (
        f"{tmp_path / 'conflict.csv'}:5: image 'b.jpg' is listed twice with other labels (also line 2; "
        "they differ in cat, dog); merge its labels in one row"
    )


def test_a_conflicting_duplicate_is_one_line_naming_both_lines(tmp_path):
    for name in "ab":
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    (tmp_path / "dup.csv").write_text("image,labels\nb.jpg,dog\na.jpg,cat;dog\nb.jpg,dog\na.jpg,dog\n")
    with pytest.raises(DataError) as err:
        build_dataset("csv", "train", str(tmp_path), train_file="dup.csv", train_size=1)
    assert str(err.value) == (
        f"{tmp_path / 'dup.csv'}:5: image 'a.jpg' is listed twice with other labels (also line 3; "
        "they differ in cat); merge its labels in one row"
    )
    assert "\n" not in str(err.value)


def test_train_size_counts_distinct_images(tmp_path):
    for name in "abc":
        (tmp_path / f"{name}.jpg").write_bytes(b"")
    (tmp_path / "train.csv").write_text("image,labels\na.jpg,cat\na.jpg,cat\nb.jpg,dog\na.jpg,cat\nc.jpg,emu\n")
    two = build_dataset("csv", "train", str(tmp_path), train_file="train.csv", train_size=2)
    assert two.keys == ["a.jpg", "b.jpg"] and two.labels.tolist() == [[1, 0, 0], [0, 1, 0]]
    three = build_dataset("csv", "train", str(tmp_path), train_file="train.csv", train_size=3)
    assert three.keys == ["a.jpg", "b.jpg", "c.jpg"] and len(three) == 3
    with pytest.raises(ConfigError, match=r"train_size 4 but .*train\.csv lists 3 images"):
        build_dataset("csv", "train", str(tmp_path), train_file="train.csv", train_size=4)
