"""ViewDataset: which view each epoch uses, and what an item holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlkd_cache.data.transforms import (
    EvalTransform,
    ReplayableTransform,
    TransformSpec,
    fingerprint,
    to_signed,
    to_unsigned,
    view_seed,
)
from mlkd_cache.data.views import ViewDataset

SIZE = 24


class TinyDataset:
    """In-memory stand-in for mlkd_cache.data.base.MultiLabelDataset."""

    name = "tiny"
    split = "train"

    def __init__(self, n: int = 6, c: int = 4, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.class_names = [f"c{j}" for j in range(c)]
        self.keys = [f"sample-{i}" for i in range(n)]
        self.labels = (rng.random((n, c)) < 0.4).astype(np.uint8)
        self._images = [rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8) for i in range(n)]

    def __len__(self):
        return len(self.keys)

    def load_image(self, index):
        return Image.fromarray(self._images[index])


SPEC = TransformSpec(img_size=SIZE)


def test_teacher_view_is_epoch():
    ds = ViewDataset(TinyDataset(), SPEC, base_seed=3, train=True)
    for i in range(len(ds)):
        for e in (0, 1, 2, 17, 100):
            assert ds.view_of(i, e) == e
    ds.set_epoch(4)
    assert ds[2][3] == 4


def test_student_views_cycle_with_offsets():
    V = 4
    data = TinyDataset(n=32)
    ds = ViewDataset(data, SPEC, base_seed=3, train=True, views=V)
    offsets = []
    for i in range(len(ds)):
        # every V consecutive epochs visit every view exactly once, from any starting epoch
        for start in (0, 1, V, 7):
            assert sorted(ds.view_of(i, e) for e in range(start, start + V)) == list(range(V))
        off = ds.view_of(i, 0)
        assert off == view_seed(3, data.keys[i], -1) % V
        assert ds.view_of(i, 1) == (off + 1) % V
        offsets.append(off)
    assert len(set(offsets)) > 1  # samples are not all on the same view in the same epoch
    other = ViewDataset(data, SPEC, base_seed=4, train=True, views=V)
    assert [other.view_of(i, 0) for i in range(len(ds))] != offsets


def test_eval_view_zero_and_item():
    data = TinyDataset()
    ds = ViewDataset(data, SPEC, base_seed=0, train=False, with_fingerprint=True)
    ds.set_epoch(9)
    image, labels, index, view, fp, *_ = ds[1]
    assert view == 0 and index == 1
    assert torch.equal(image, EvalTransform(SPEC)(data.load_image(1)))
    assert fp == to_signed(fingerprint(EvalTransform(SPEC).pixels(data.load_image(1))))
    assert torch.equal(labels, torch.from_numpy(data.labels[1].astype(np.float32)))


def test_item_shapes_dtypes_and_fingerprint():
    data = TinyDataset()
    ds = ViewDataset(data, SPEC, base_seed=1, train=True, views=3, with_fingerprint=True)
    ds.set_epoch(2)
    for i in range(len(ds)):
        image, labels, index, view, fp, *_ = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert labels.dtype == torch.float32 and labels.shape == (4,)
        assert np.array_equal(labels.numpy(), data.labels[i].astype(np.float32))
        assert isinstance(index, int) and index == i
        assert isinstance(view, int) and view == ds.view_of(i, 2)
        assert isinstance(fp, int) and -(2**63) <= fp < 2**63
        pixels = ReplayableTransform(SPEC).pixels(data.load_image(i), ds.seed_of(i, view))
        assert to_unsigned(fp) == fingerprint(pixels)  # format 2: the uint8 pixels are fingerprinted
        assert torch.equal(image, ReplayableTransform(SPEC)(data.load_image(i), ds.seed_of(i, view)))
        assert torch.equal(image, ds.get(i, view)[0])
    assert ds.seed_of(2, 1) == view_seed(1, "sample-2", 1)
    # views of one sample differ; without fingerprints the field is 0
    assert not torch.equal(ds.get(0, 0)[0], ds.get(0, 1)[0])
    plain = ViewDataset(data, SPEC, base_seed=1, train=True, views=3)
    assert plain.get(0, 1)[4] == 0
    assert torch.equal(plain.get(0, 1)[0], ds.get(0, 1)[0])


def test_collate_keeps_fingerprints():
    ds = ViewDataset(TinyDataset(), SPEC, base_seed=1, train=True, with_fingerprint=True)
    ds.set_epoch(3)
    image, labels, index, view, fp, *_ = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert image.shape == (4, 3, SIZE, SIZE) and labels.shape == (4, 4)
    assert index.dtype == torch.int64 and view.tolist() == [3, 3, 3, 3] and fp.dtype == torch.int64
    for j in range(4):
        i, v = int(index[j]), int(view[j])
        assert to_unsigned(int(fp[j])) == fingerprint(
            ReplayableTransform(SPEC).pixels(ds.dataset.load_image(i), ds.seed_of(i, v))
        )


def test_bad_arguments():
    data = TinyDataset()
    with pytest.raises(ValueError):
        ViewDataset(data, SPEC, 0, train=True, views=0)
    ds = ViewDataset(data, SPEC, 0, train=True, views=2)
    with pytest.raises(IndexError):
        ds.get(len(data), 0)
    with pytest.raises(IndexError):
        ds.get(0, 2)
    with pytest.raises(ValueError):
        ds.set_epoch(-1)
    assert len(ds) == len(data)


def test_fingerprint_share_picks_a_fresh_reproducible_subset_each_epoch():
    """``with_fingerprint=p`` fingerprints about a share p of each epoch's items, a different
    subset per epoch, the same one when asked again; unchecked items carry 0."""
    data = TinyDataset(n=400)
    ds = ViewDataset(data, SPEC, base_seed=5, train=True, views=3, with_fingerprint=0.25)
    chosen = [{i for i in range(len(ds)) if ds.is_checked(i, e)} for e in range(3)]
    for subset in chosen:
        assert 60 <= len(subset) <= 140  # 100 expected
    assert chosen[0] != chosen[1] != chosen[2]
    assert chosen[0] == {i for i in range(len(ds)) if ds.is_checked(i, 0)}
    ds.set_epoch(1)
    picked, skipped = min(chosen[1]), min(set(range(len(ds))) - chosen[1])
    image, _, _, view, fp, *_ = ds[picked]
    assert fp == to_signed(fingerprint(ReplayableTransform(SPEC).pixels(data.load_image(picked), ds.seed_of(picked, view))))
    assert view == ds.view_of(picked, 1)
    assert ds[skipped][4] == 0
    assert all(ViewDataset(data, SPEC, 5, True, 3, with_fingerprint=1.0).is_checked(i, 7) for i in range(10))
    assert not any(ViewDataset(data, SPEC, 5, True, 3, with_fingerprint=0.0).is_checked(i, 7) for i in range(10))
    with pytest.raises(ValueError, match="share"):
        ViewDataset(data, SPEC, 5, True, 3, with_fingerprint=1.5)


@pytest.mark.parametrize("spec", [SPEC, TransformSpec(img_size=SIZE, randaugment=None, hflip=0.5, interpolation="bicubic")])
def test_views_from_one_decode_are_the_views_of_one_decode_each(spec):
    """get_views (one decode and resize, then each view) gives bit for bit the images and
    fingerprints of get for each (sample, view): what lets the dump decode a photograph once."""
    ds = ViewDataset(TinyDataset(), spec, base_seed=5, train=True, views=4, with_fingerprint=True)
    for i in range(len(ds)):
        together = ds.get_views(i, range(4))
        for view, item in enumerate(together):
            alone = ds.get(i, view)
            assert torch.equal(item.image, alone.image) and item.fingerprint == alone.fingerprint != 0
            assert (item.sample, item.view) == (alone.sample, alone.view) == (i, view)
    assert not torch.equal(together[0].image, together[1].image)  # four different views


def test_the_dump_batches_pairs_as_before():
    """view_batches: the (sample, view) pairs in shard order, batch_size pairs a batch (the last
    fewer), with or without workers: the teacher runs on the batches it always ran on."""
    from mlkd_cache.commands.dump_targets import view_batches
    from mlkd_cache.data.views import view_pairs

    ds = ViewDataset(TinyDataset(n=5), SPEC, base_seed=1, train=True, views=3, with_fingerprint=True)
    for workers in (0, 2):
        batches = [batch for batch, _ in view_batches(ds, 1, 5, 3, batch_size=5, workers=workers)]
        assert [len(b.sample) for b in batches] == [5, 5, 2]
        pairs = np.stack([torch.cat([b.sample for b in batches]).numpy(), torch.cat([b.view for b in batches]).numpy()], 1)
        assert np.array_equal(pairs, view_pairs(1, 5, 3))
        first = ds.get(int(pairs[6, 0]), int(pairs[6, 1]))
        assert torch.equal(batches[1].image[1], first.image) and int(batches[1].fingerprint[1]) == first.fingerprint


@pytest.mark.numeric  # bitwise on every vector unit: `make test-numeric` reruns it on the generic and AVX2 kernels
def test_uint8_items_are_the_float_items_pixels_and_model_input_gives_back_the_same_floats():
    """image_dtype="uint8" hands over the pixels of the very float32 items (model_input turns a
    batch of them into those floats bit for bit, whatever the normalisation); fingerprint_of
    chooses what is hashed: the pixels (format 2) or the float input (format 1 caches)."""
    from mlkd_cache.data.transforms import model_input

    data = TinyDataset()
    for spec in (SPEC, TransformSpec(img_size=SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))):
        floats = ViewDataset(data, spec, base_seed=1, train=True, views=3, with_fingerprint=True)
        pixels = ViewDataset(data, spec, base_seed=1, train=True, views=3, with_fingerprint=True, image_dtype="uint8")
        old = ViewDataset(data, spec, base_seed=1, train=True, views=3, with_fingerprint=True, fingerprint_of="float32")
        a, b, c = (d.get_views(2, [0, 1, 2]) for d in (floats, pixels, old))
        assert all(x.image.dtype == torch.uint8 and x.image.shape == (3, SIZE, SIZE) for x in b)
        assert [x.fingerprint for x in a] == [x.fingerprint for x in b] == [to_signed(fingerprint(x.image)) for x in b]
        assert [x.fingerprint for x in c] == [to_signed(fingerprint(x.image)) for x in a]
        batch = model_input(torch.stack([x.image for x in b]), spec, torch.device("cpu"))
        assert batch.dtype == torch.float32 and torch.equal(batch, torch.stack([x.image for x in a]))
    with pytest.raises(ValueError, match="image_dtype"):
        ViewDataset(data, SPEC, 0, train=True, image_dtype="float16")
    with pytest.raises(ValueError, match="fingerprint_of"):
        ViewDataset(data, SPEC, 0, train=True, fingerprint_of="jpeg")
