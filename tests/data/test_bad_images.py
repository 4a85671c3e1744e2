"""The ``bad_images`` policy: ``error`` leaves undecodable files to fail when read, ``skip``
decodes every image once at construction and leaves the bad ones out with one warning."""

import logging

import numpy as np
import pytest

from mlkd_cache.data import build_dataset
from mlkd_cache.data.bad_images import decode_problem
from mlkd_cache.errors import ConfigError, DataError
from tests.data.fixtures import CSV_TRAIN, label_sets, make_csv_tree, truncate_file

KW = dict(train_file="train.csv", test_file="test.csv")


@pytest.fixture
def damaged(tmp_path):
    """The csv fixture with img/b.jpg truncated and img/d.jpg a text file (2 of 4 train images)."""
    root = make_csv_tree(tmp_path / "csv")
    truncate_file(root / "img" / "b.jpg", keep_fraction=0.9)
    (root / "img" / "d.jpg").write_text("not a picture\n")
    return root


def test_decode_problem_names_the_failure(damaged):
    assert decode_problem(str(damaged / "img" / "a.jpg")) is None
    assert "truncated" in decode_problem(str(damaged / "img" / "b.jpg"))
    assert decode_problem(str(damaged / "img" / "d.jpg")).startswith("UnidentifiedImageError: cannot identify image file")
    assert decode_problem(str(damaged / "img" / "nope.jpg")).startswith("FileNotFoundError")


def test_error_is_the_default_and_reads_nothing_up_front(damaged):
    ds = build_dataset("csv", "train", str(damaged), **KW)
    assert len(ds) == 4
    with pytest.raises(DataError, match=r"cannot decode image .*b\.jpg .*truncated"):
        ds.load_image(1)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_leaves_out_the_bad_images_with_one_warning(damaged, caplog, workers):
    with caplog.at_level(logging.WARNING, logger="mlkd_cache"):
        ds = build_dataset("csv", "train", str(damaged), bad_images="skip", workers=workers, **KW)
    assert ds.keys == ["img/a.jpg", "img/sub/c.jpg"] and len(ds.image_paths) == 2
    full = dict(CSV_TRAIN)
    assert label_sets(ds) == {k: set(full[k]) for k in ds.keys}
    assert ds.class_names == ["bird", "cat", "dog"]  # classes come from the label file, not the survivors
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"skipped 2 of 4 images of csv/train that cannot be decoded (first: {damaged / 'img' / 'b.jpg'}: "
    )
    assert "truncated" in warnings[0] and "\n" not in warnings[0]
    assert ds.load_image(1).mode == "RGB"


def test_skip_of_a_clean_split_changes_nothing_and_says_nothing(damaged, caplog):
    with caplog.at_level(logging.WARNING, logger="mlkd_cache"):
        clean = build_dataset("csv", "test", str(damaged), bad_images="skip", **KW)
    plain = build_dataset("csv", "test", str(damaged), **KW)
    assert clean.fingerprint() == plain.fingerprint() and not caplog.records


def test_skip_with_nothing_left_is_the_empty_split_error(tmp_path):
    root = make_csv_tree(tmp_path / "csv")
    for image, _ in CSV_TRAIN:
        truncate_file(root / image)
    with pytest.raises(DataError, match=r"empty split: all 4 images of csv/train cannot be decoded \(first: .*a\.jpg: "):
        build_dataset("csv", "train", str(root), bad_images="skip", **KW)


def test_digits_has_no_files_and_ignores_the_policy():
    a = build_dataset("digits", "test", test_size=8, bad_images="skip")
    b = build_dataset("digits", "test", test_size=8)
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.labels, b.labels)


def test_unknown_policy(damaged):
    with pytest.raises(ConfigError, match=r"bad_images must be one of error, skip, got 'ignore'"):
        build_dataset("csv", "train", str(damaged), bad_images="ignore", **KW)
