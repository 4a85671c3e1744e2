"""The held-out val split (config ``val_split``, ``mlkd_cache/data/holdout.py``): the iterative
stratification itself, and the splits every dataset builds with it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mlkd_cache.config import load_config
from mlkd_cache.data import available_splits, build_dataset, check_eval_split, dataset_from_config, has_split
from mlkd_cache.data.coco import parse_l2d_annotations
from mlkd_cache.data.holdout import _represent_small_classes, describe_val_split, holdout_mask, val_split_record
from mlkd_cache.errors import ConfigError, DataError
from tests.data.fixtures import make_coco_tree, make_csv_tree, make_nus_tree, make_voc_tree

# --------------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------------


def long_tail(n: int = 5000, c: int = 40, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, c]``: class k positive with probability 0.25 / (k + 1) (COCO-like long tail,
    about 1.1 labels per image), plus two classes of exactly 2 and 3 positives."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.25 / np.arange(1, c + 1)).astype(np.uint8)
    y[:, -2:] = 0
    y[[10, 20], -2] = 1
    y[[30, 40, 50], -1] = 1
    return y


def pinned_labels() -> np.ndarray:
    """A label matrix from integer arithmetic alone (no RNG): ``[300, 12]``, class k with k + 1
    of every 97 residues, 81 images without a label."""
    i = np.arange(300, dtype=np.int64)[:, None]
    k = np.arange(12, dtype=np.int64)[None]
    return (((i * 2654435761 + k * 40503) % 97) < (k + 1)).astype(np.uint8)


def digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()


@pytest.mark.parametrize(
    "fraction, seed, size, first, sha",
    [
        (0.1, 0, 30, [0, 3, 26, 38, 56, 58], "e89b75e8c7e34aab2082d1608ff55de4fd5fb08a34b4c496b691f67fff8cc451"),
        (0.25, 7, 75, [2, 3, 6, 16, 18, 24], "2480247868529d94a026b1f22f4e25febff56f9c2fdf8f3f60d74ee8d17c64d2"),
    ],
)
def test_the_mask_never_moves(fraction, seed, size, first, sha):
    """Pinned bit for bit: caches and model cards record (fraction, seed), and the images they
    name must stay the same on every platform and after any dependency's upgrade."""
    mask = holdout_mask(pinned_labels(), fraction, seed)
    assert mask.dtype == bool and mask.shape == (300,)
    assert int(mask.sum()) == size and np.flatnonzero(mask)[:6].tolist() == first
    assert digest(mask) == sha


def test_same_arguments_same_mask_another_seed_another_mask():
    y = long_tail()
    mask = holdout_mask(y, 0.1, 0)
    assert np.array_equal(mask, holdout_mask(y.copy(), 0.1, 0))
    assert np.array_equal(mask, holdout_mask(y.astype(bool), 0.1, 0))  # any 0/1 dtype
    other = holdout_mask(y, 0.1, 1)
    assert (mask != other).sum() > 0.1 * len(y)  # not a shifted copy: most of val differs
    assert abs(int(other.sum()) - int(mask.sum())) <= 5
    assert not np.array_equal(mask, holdout_mask(y, 0.2, 0))


def test_every_class_with_two_positives_is_in_val_and_shares_are_close():
    y = long_tail()
    fraction = 0.1
    mask = holdout_mask(y, fraction, 0)
    counts, in_val = y.sum(0), y[mask].sum(0)
    assert (in_val[counts >= 2] >= 1).all()  # the 2- and 3-positive classes included
    assert ((counts - in_val)[counts >= 2] >= 1).all()  # and train keeps one of each
    assert in_val[-2] == 1 and in_val[-1] == 1
    frequent = counts >= 50
    assert frequent.sum() >= 20
    share = in_val[frequent] / counts[frequent]
    assert np.abs(share - fraction).max() <= 0.02, share
    assert abs(int(mask.sum()) - fraction * len(y)) <= 0.01 * len(y)
    # without labels: shared out by the desire for images alone
    empty = y.sum(1) == 0
    assert abs(mask[empty].mean() - fraction) < 0.03


def test_a_class_stays_out_of_val_only_when_no_image_of_it_can_leave_train():
    """Over 200 small random label matrices with rare classes: a class with >= 2 positives and
    none in val is one whose every train image holds a class with a single train positive."""
    absent = 0
    for t in range(200):
        rng = np.random.default_rng(t)
        n, c = int(rng.integers(5, 200)), int(rng.integers(1, 20))
        y = (rng.random((n, c)) < rng.random(c) ** 3 * 0.5).astype(np.uint8)
        mask = holdout_mask(y, float(rng.choice([0.05, 0.1, 0.3])), t)
        counts, in_val = y.sum(0), y[mask].sum(0)
        in_train = counts - in_val
        for k in np.flatnonzero((counts >= 2) & (in_val == 0)):
            absent += 1
            rows = np.flatnonzero((y[:, k] == 1) & ~mask)
            assert all(((y[r] == 1) & (in_train < 2)).any() for r in rows), (t, k)
    assert absent == 0  # in random data the last pass always finds an image to move


def test_the_last_pass_moves_the_image_with_fewest_labels_that_train_can_spare():
    """Class 2's two images each hold a class of one image: neither can leave train, class 2
    stays out of val. Class 3 gets image 3 (one label) rather than image 2 (two), class 4 then
    image 4; train keeps a positive of every class."""
    y = np.zeros((5, 5), dtype=bool)
    for row, classes in enumerate([(0, 2), (1, 2), (3, 4), (3,), (4,)]):
        y[row, list(classes)] = True
    to_val = np.zeros(5, dtype=bool)
    _represent_small_classes(y, to_val, y.sum(0))
    assert to_val.tolist() == [False, False, False, True, True]


def test_off_and_bad_arguments():
    y = long_tail(100, 5)
    assert not holdout_mask(y, 0.0, 3).any()
    assert holdout_mask(np.zeros((0, 5), np.uint8), 0.5).shape == (0,)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
            holdout_mask(y, bad)
    with pytest.raises(ValueError, match=r"labels must be \[N, C\]"):
        holdout_mask(y[0], 0.1)


def test_records_and_their_words():
    assert val_split_record(None) == {} == val_split_record({"fraction": 0.0, "seed": 5})
    assert val_split_record({"fraction": 0.1, "seed": 2}) == {"fraction": 0.1, "seed": 2}
    assert describe_val_split({}) == "no val_split"
    assert describe_val_split({"fraction": 0.1, "seed": 2}) == "val_split fraction=0.1 seed=2"


def test_a_coco_sized_matrix_is_stratified():
    """A COCO-sized label matrix (118,287 images, 80 classes, 2.9 labels each; its speed is
    benchmarks/holdout.py's): every class's val share within half a point of the fraction."""
    rng = np.random.default_rng(0)
    p = 0.2 / np.arange(1, 81) ** 0.9
    y = (rng.random((118287, 80)) < p * (2.9 / p.sum())).astype(np.uint8)
    mask = holdout_mask(y, 0.1, 0)
    share = y[mask].sum(0) / y.sum(0)
    assert np.abs(share - 0.1).max() < 0.005 and abs(int(mask.sum()) - 11829) <= 60


def test_on_real_coco_labels(real_coco_val):
    """L2D's COCO val2014 labels (40,137 images): the figures docs/datasets.md quotes."""
    _, y = parse_l2d_annotations(str(real_coco_val))
    mask = holdout_mask(y, 0.1, 0)
    assert int(mask.sum()) == 3983
    share = y[mask].sum(0) / y.sum(0)
    assert 0.094 <= share.min() and share.max() <= 0.101


# --------------------------------------------------------------------------------------------
# The splits of every dataset
# --------------------------------------------------------------------------------------------

HOLD = {"fraction": 0.25, "seed": 0}
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "car", "cat", "chair", "dog", "horse", "person"]


def voc_tree(root):
    train = {f"{i:06d}": [dict(name=VOC_NAMES[i % 10]), dict(name=VOC_NAMES[(i * 3) % 7])] for i in range(1, 25)}
    return make_voc_tree(root, train=train)


def coco_tree(root):
    names = ["person", "dog", "cat", "bowl", "giraffe", "zebra"]
    train = {f"COCO_train2014_{i:012d}.jpg": [names[i % 6], names[(i // 2) % 6]] for i in range(24)}
    return make_coco_tree(root, fmt="instances", train=train)


def nus_tree(root):
    concepts = ["airport", "animal", "beach", "bear", "birds"]
    train = [((concepts[i % 5], f"{i:04d}_{i}.jpg"), {concepts[i % 5], concepts[(i * 2) % 5]}) for i in range(24)]
    return make_nus_tree(root, train=train)


TREES = {"voc": voc_tree, "coco": coco_tree, "nus": nus_tree}


@pytest.mark.parametrize("name", sorted(TREES))
def test_val_is_carved_out_of_train(name, tmp_path):
    root = TREES[name](tmp_path / name)
    whole = build_dataset(name, "train", root)
    train = build_dataset(name, "train", root, val_split=HOLD)
    val = build_dataset(name, "val", root, val_split=HOLD)
    assert val.split == "val" and train.split == "train"
    assert train.val_split == val.val_split == HOLD and whole.val_split == {}
    assert not set(train.keys) & set(val.keys)
    assert sorted(train.keys + val.keys) == sorted(whole.keys)
    assert train.keys == [k for k in whole.keys if k not in set(val.keys)]  # original order: a mask
    mask = holdout_mask(whole.labels, 0.25, 0)
    assert val.keys == [k for k, m in zip(whole.keys, mask) if m]
    assert np.array_equal(val.labels, whole.labels[mask]) and np.array_equal(train.labels, whole.labels[~mask])
    assert abs(len(val) - 0.25 * len(whole)) <= 1 and val.image_paths == [p for p, m in zip(whole.image_paths, mask) if m]
    # the test split is the dataset's own
    assert build_dataset(name, "test", root, val_split=HOLD).keys == build_dataset(name, "test", root).keys
    # another seed, another val split
    assert build_dataset(name, "val", root, val_split={"fraction": 0.25, "seed": 1}).keys != val.keys


def config(tmp_path, **keys):
    cfg = tmp_path / "cfg.py"
    cfg.write_text("".join(f"{k} = {v!r}\n" for k, v in keys.items()))
    return cfg


def test_splits_named_with_val_split_on(voc_root, tmp_path):
    off = load_config(config(tmp_path, dataset="voc", data_root=str(voc_root)))
    assert available_splits(off) == ("train", "test") and not has_split(off, "val")
    with pytest.raises(ConfigError, match=r"has no val split \(it has train, test\); set eval_split='test', or hold out"):
        check_eval_split(off.replace(eval_split="val"))
    on = load_config(config(tmp_path, dataset="voc", data_root=str(voc_root)), settings={"val_split.fraction": 0.5})
    assert on.val_split == {"fraction": 0.5, "seed": 0}
    assert available_splits(on) == ("train", "val", "test") and has_split(on, "val")
    check_eval_split(on.replace(eval_split="val"))
    assert dataset_from_config(on, "val").split == "val"


def test_val_split_config_values_are_checked(tmp_path):
    path = config(tmp_path, dataset="voc")
    for fraction in (1.0, 1e-7, -0.1):  # a share that holds out nothing, or everything
        with pytest.raises(ConfigError, match=r"config key 'val_split.fraction' must be 0 \(off\) or in \[1e-06, 0.999999\]"):
            load_config(path, settings={"val_split.fraction": fraction})
    path_t = config(tmp_path, dataset="csv", dataset_para_t={"train_file": "all.csv"})
    with pytest.raises(ConfigError, match=r"'dataset_para_t' sets 'train_file' while val_split is on"):
        load_config(path_t, settings={"val_split.fraction": 0.1})
    with pytest.raises(ConfigError, match=r"'val_split.seed' must be >= 0"):
        load_config(path, settings={"val_split.seed": -1})
    with pytest.raises(ConfigError, match=r"unknown config key 'val_split.fractoin' \(did you mean 'fraction'\?\)"):
        load_config(path, settings={"val_split.fractoin": 0.1})


def test_refused_where_the_dataset_has_its_own_val_split(csv_root, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^config key val_split \(val_split fraction=0.1 seed=0\) carves a val split out of the train split, and "
        r"dataset digits has one of its own; drop val_split \(fraction=0\)$",
    ):
        build_dataset("digits", "train", val_split={"fraction": 0.1, "seed": 0}, train_size=20)
    (csv_root / "val.csv").write_text("image,labels\nimg/e.jpg,bird\n")
    params = dict(train_file="train.csv", test_file="test.csv", val_file="val.csv")
    with pytest.raises(
        ConfigError, match=r"has one of its own \(val_file 'val.csv'\); drop val_split \(fraction=0\) or val_file"
    ):
        build_dataset("csv", "val", csv_root, val_split={"fraction": 0.1}, **params)
    cfg = load_config(config(tmp_path, dataset="digits"), settings={"val_split.fraction": 0.1})
    with pytest.raises(ConfigError, match="dataset digits has one of its own"):
        available_splits(cfg)


CSV_ROWS = [(f"img/{i:02d}.jpg", [["cat", "dog", "bird"][i % 3], ["cat", "fox"][i % 2]]) for i in range(20)]


def csv_config(tmp_path, train_size=None, fraction=0.2):
    root = make_csv_tree(tmp_path / "csv", train=CSV_ROWS)
    return load_config(
        config(
            tmp_path,
            dataset="csv",
            data_root=str(root),
            dataset_para=dict(train_file="train.csv", test_file="test.csv", train_size=train_size),
            dataset_para_t=dict(train_size=None),
            val_split=dict(fraction=fraction, seed=0),
        )
    )


def test_teacher_and_students_share_one_val_split_outside_both(tmp_path):
    """csv with train_size: the val split is carved from the whole train file first, so the
    teacher (every image left) and the students (the first 10 of them) share it, and neither
    trains on it."""
    cfg = csv_config(tmp_path, train_size=10)
    teacher, student = dataset_from_config(cfg, "train", "t"), dataset_from_config(cfg, "train", "s")
    val, val_t = dataset_from_config(cfg, "val", "s"), dataset_from_config(cfg, "val", "t")
    assert val.keys == val_t.keys and len(val) == 5
    assert not set(val.keys) & set(teacher.keys) and not set(val.keys) & set(student.keys)
    assert len(teacher) == 15 and student.keys == teacher.keys[:10]
    assert sorted(teacher.keys + val.keys) == sorted(image for image, _ in CSV_ROWS)


def test_too_few_images_left_for_train_size(tmp_path):
    cfg = csv_config(tmp_path, train_size=18)
    with pytest.raises(
        ConfigError,
        match=r"^dataset csv: train_size 18 but val_split fraction=0.2 seed=0 leaves 15 of the 20 images of .*train.csv "
        r"for training; lower train_size or val_split.fraction$",
    ):
        dataset_from_config(cfg, "train", "s")
    assert len(dataset_from_config(cfg, "train", "t")) == 15  # the teacher takes every image: fine


def test_a_val_split_too_small_to_hold_an_image(tmp_path):
    root = make_csv_tree(tmp_path / "csv", train=[(f"img/{i}.jpg", [f"c{i}"]) for i in range(5)])
    params = dict(train_file="train.csv", test_file="test.csv")
    with pytest.raises(DataError, match=r"val_split fraction=0.01 seed=0 holds out none of the 5 images of .*; raise val_split"):
        build_dataset("csv", "val", root, val_split={"fraction": 0.01, "seed": 0}, **params)
    assert len(build_dataset("csv", "train", root, val_split={"fraction": 0.01, "seed": 0}, **params)) == 5
