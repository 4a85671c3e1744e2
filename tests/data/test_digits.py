import numpy as np
import pytest

from mlkd_cache.data import build_dataset
from mlkd_cache.data.digits import split_source_pools
from mlkd_cache.errors import ConfigError


@pytest.fixture(scope="module")
def train():
    return build_dataset("digits", "train")


@pytest.fixture(scope="module")
def test():
    return build_dataset("digits", "test")


def test_shapes_and_keys(train, test):
    assert len(train) == 2000 and len(test) == 1000
    assert train.class_names == [str(d) for d in range(10)]
    assert train.labels.shape == (2000, 10) and train.labels.dtype == np.uint8
    assert train.images.shape == (2000, 32, 32) and train.images.dtype == np.uint8
    assert train.keys[123] == "digits/train/000123" and test.keys[0] == "digits/test/000000"
    assert len(set(train.keys)) == 2000


def test_determinism():
    a = build_dataset("digits", "train", train_size=300, seed=5)
    b = build_dataset("digits", "train", train_size=300, seed=5)
    c = build_dataset("digits", "train", train_size=300, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels, c.labels)
    # the train canvases do not depend on test_size
    d = build_dataset("digits", "train", train_size=300, test_size=7, seed=5)
    np.testing.assert_array_equal(a.images, d.images)


def test_disjoint_source_scans(train, test):
    tr = set(train.source_indices[train.source_indices >= 0].tolist())
    te = set(test.source_indices[test.source_indices >= 0].tolist())
    assert tr and te and not (tr & te)
    pool_tr, pool_te = split_source_pools(0)
    assert len(pool_tr) == 1258 and len(pool_te) == 539
    assert not set(pool_tr) & set(pool_te) and len(set(pool_tr) | set(pool_te)) == 1797
    assert tr <= set(pool_tr.tolist()) and te <= set(pool_te.tolist())


def test_label_statistics(train, test):
    for ds in (train, test):
        per = ds.labels.sum(axis=1)
        assert per.min() == 1 and per.max() == 4
        assert 2.0 < per.mean() < 2.5
        freq = ds.labels.mean(axis=0)
        assert freq.min() > 0.15 and freq.max() < 0.32  # every class common, none dominant
        # labels are exactly the classes of the placed digits
        for i in range(0, len(ds), 97):
            placed = {str(c) for c in ds.digit_classes[i] if c >= 0}
            assert {ds.class_names[k] for k in np.nonzero(ds.labels[i])[0]} == placed
    counts = (train.source_indices >= 0).sum(axis=1)
    assert set(np.unique(counts).tolist()) == {1, 2, 3, 4}
    assert train.describe() == "digits/train: 2000 images, 10 classes, 2.3 labels/image"


def test_load_image(train):
    img, lab = train[7]
    assert img.mode == "RGB" and img.size == (32, 32)
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    np.testing.assert_array_equal(arr[..., 0], train.images[7])
    assert arr.max() > 100  # a digit is drawn
    assert lab.tolist() == train.labels[7].tolist()


def test_params():
    ds = build_dataset("digits", "test", test_size=50, canvas=48, digit_size=16, max_digits=2)
    assert ds.load_image(0).size == (48, 48)
    assert ds.labels.sum(axis=1).max() <= 2
    with pytest.raises(ConfigError, match="param canvas must be >= 16"):
        build_dataset("digits", "train", canvas=12, digit_size=16)
    with pytest.raises(ConfigError, match="param seed must be an integer"):
        build_dataset("digits", "train", seed="x")


def test_a_smaller_split_is_a_prefix_of_a_larger_one():
    """Canvases come in seeded blocks: the students' 1,000 are the teacher's first 1,000."""
    small = build_dataset("digits", "train", train_size=700)
    large = build_dataset("digits", "train", train_size=1200)
    np.testing.assert_array_equal(small.images, large.images[:700])
    np.testing.assert_array_equal(small.labels, large.labels[:700])
    assert small.keys == large.keys[:700]
    assert not np.array_equal(large.images[:500], large.images[500:1000])  # blocks differ
