"""Replayable augmentation: a view is a pure function of (image, seed), in any process."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mlkd_cache.config import Config
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
from mlkd_cache.errors import ConfigError

# A tiny in-memory stand-in for mlkd_cache.data.base.MultiLabelDataset. Kept as source text so
# the fresh-subprocess test builds exactly the same dataset.
STANDIN_SRC = textwrap.dedent(
    """
    import numpy as np
    from PIL import Image

    class TinyDataset:
        name = "tiny"
        split = "train"

        def __init__(self, n=8, c=3, seed=1234):
            rng = np.random.default_rng(seed)
            self.class_names = [f"c{j}" for j in range(c)]
            self.keys = [f"img/{i:04d}.png" for i in range(n)]
            self.labels = (rng.random((n, c)) < 0.5).astype(np.uint8)
            yy, xx = np.mgrid[0:40, 0:48]
            self._images = []
            for i in range(n):
                noise = rng.integers(0, 256, size=(40, 48, 3))
                grad = np.stack([xx * 5, yy * 6, (xx + yy) * 3], axis=-1)
                self._images.append(((noise + grad * (i + 1)) % 256).astype(np.uint8)[: 30 + i, : 44 - i])

        def __len__(self):
            return len(self.keys)

        def load_image(self, index):
            return Image.fromarray(self._images[index])
    """
)
exec(STANDIN_SRC, globals())  # defines TinyDataset

SIZE = 32


def _spec(**kw) -> TransformSpec:
    return TransformSpec(img_size=kw.pop("img_size", SIZE), **kw)


@pytest.fixture(scope="module")
def img() -> Image.Image:  # noqa: F821 - Image and TinyDataset come from STANDIN_SRC
    return TinyDataset().load_image(3)  # noqa: F821 - from STANDIN_SRC


@pytest.fixture(scope="module")
def tf() -> ReplayableTransform:
    return ReplayableTransform(_spec())


def _perturb_global_rngs(k: int) -> None:
    random.seed(1000 + k)
    np.random.seed(2000 + k)
    torch.manual_seed(3000 + k)
    random.random(), np.random.rand(5), torch.rand(3)


# --------------------------------------------------------------------------------------------
# Seeds, fingerprints
# --------------------------------------------------------------------------------------------


def test_view_seed_pinned_values():
    assert view_seed(0, "a", 0) == 5745073405633736804
    assert view_seed(1, "img/0001.jpg", 3) == 17319271779286023440
    assert view_seed(42, "x", -1) == 14286075455149182619
    d = hashlib.blake2b(b"7:train/cat.jpg:5", digest_size=8).digest()
    assert view_seed(7, "train/cat.jpg", 5) == int.from_bytes(d, "little")


def test_view_seed_varies_with_each_input():
    ref = view_seed(0, "k", 0)
    assert view_seed(1, "k", 0) != ref
    assert view_seed(0, "k2", 0) != ref
    assert view_seed(0, "k", 1) != ref
    seeds = {view_seed(b, k, v) for b in range(3) for k in ("a", "b", "c") for v in range(-1, 4)}
    assert len(seeds) == 3 * 3 * 5
    assert all(0 <= s < 2**64 for s in seeds)


def test_fingerprint_sensitivity():
    x = torch.linspace(-1, 1, 24, dtype=torch.float32).reshape(2, 3, 4)
    fp = fingerprint(x)
    assert fingerprint(x.clone()) == fp
    assert 0 <= fp < 2**64
    y = x.clone()
    y[1, 2, 3] = torch.nextafter(y[1, 2, 3], torch.tensor(2.0))  # one ulp
    assert fingerprint(y) != fp
    assert fingerprint(x.to(torch.float64)) != fp
    assert fingerprint(x.reshape(6, 4)) != fp  # same bytes, other shape
    assert fingerprint(x.view(torch.int32)) != fp  # same bytes, other dtype
    # non-contiguous views hash as their contiguous copy
    t = x.transpose(1, 2)
    assert fingerprint(t) == fingerprint(t.contiguous())
    assert fingerprint(torch.zeros(0)) != fingerprint(torch.zeros(0, 3))


def test_signed_unsigned_roundtrip():
    for u in (0, 1, 2**63 - 1, 2**63, 2**64 - 1, view_seed(0, "a", 0)):
        s = to_signed(u)
        assert -(2**63) <= s < 2**63
        assert to_unsigned(s) == u
        assert torch.tensor([s], dtype=torch.int64).item() == s
        assert int(np.array([s], dtype=np.int64).view(np.uint64)[0]) == u
    assert to_signed(2**64 - 1) == -1
    with pytest.raises(ValueError):
        to_signed(2**64)
    with pytest.raises(ValueError):
        to_signed(-1)
    with pytest.raises(ValueError):
        to_unsigned(2**63)


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


def test_spec_hash_stable_and_field_sensitive():
    base = TransformSpec(img_size=224)
    assert base.spec_hash() == TransformSpec(img_size=224).spec_hash()
    assert base.spec_hash() == "47bdb746cd6561d9"  # pinned: a silent change would orphan caches
    assert len(base.spec_hash()) == 16
    json.dumps(base.to_dict())
    assert TransformSpec.from_dict(base.to_dict()) == base
    # ints and floats that compare equal hash equal
    assert TransformSpec(224, cutout=1, mean=(0, 0, 0)).spec_hash() == TransformSpec(224, cutout=1.0).spec_hash()
    variants = [
        dict(img_size=225),
        dict(cutout=0.25),
        dict(randaugment="rand-m9-n3-mstd0.5"),
        dict(randaugment=None),
        dict(hflip=0.5),
        dict(mean=(0.485, 0.456, 0.406)),
        dict(std=(0.229, 0.224, 0.225)),
        dict(interpolation="bicubic"),
    ]
    hashes = {base.spec_hash()}
    for v in variants:
        kw = {**base.to_dict(), **v}
        hashes.add(TransformSpec(**kw).spec_hash())
    assert len(hashes) == len(variants) + 1


def test_spec_from_config_and_validation():
    cfg = Config.from_dict({"img_size": 64, "transform": {"hflip": 0.5, "randaugment": None}})
    spec = TransformSpec.from_config(cfg)
    assert spec.img_size == 64 and spec.hflip == 0.5 and spec.randaugment is None
    assert spec.cutout == 0.5 and spec.mean == (0.0, 0.0, 0.0) and spec.interpolation == "bilinear"
    for bad in ("foo", "rand-q3", "rand-mfoo"):
        with pytest.raises(ConfigError):
            TransformSpec(img_size=32, randaugment=bad)
    with pytest.raises(ConfigError):
        TransformSpec(img_size=32, cutout=1.5)
    with pytest.raises(ConfigError):
        TransformSpec(img_size=32, std=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError):
        TransformSpec(img_size=32, interpolation="lanczos")


# --------------------------------------------------------------------------------------------
# ReplayableTransform
# --------------------------------------------------------------------------------------------


def test_same_seed_bit_identical(img, tf):
    seed = view_seed(0, "img/0003.png", 2)
    a = tf(img, seed)
    b = tf(img, seed)
    assert a.dtype == torch.float32 and a.shape == (3, SIZE, SIZE)
    assert torch.equal(a, b)
    for k in range(3):  # other code reseeds and advances every global RNG in between
        _perturb_global_rngs(k)
        assert torch.equal(tf(img, seed), a)
    # a freshly built transform (and one that went through pickle) gives the same tensor
    assert torch.equal(ReplayableTransform(_spec())(img, seed), a)
    assert torch.equal(pickle.loads(pickle.dumps(tf))(img, seed), a)
    # a seed that travelled as a signed int64 means the same view
    assert torch.equal(tf(img, to_signed(seed)), a)
    # the input image is not modified
    assert torch.equal(EvalTransform(_spec())(img), EvalTransform(_spec())(img.copy()))


def test_global_rng_states_restored(img, tf):
    _perturb_global_rngs(7)
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    tf(img, 12345)
    assert random.getstate() == py_state
    np_after = np.random.get_state()
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1])
    assert np_after[2:] == np_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)
    # ... including the streams the next user sees
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    _perturb_global_rngs(7)
    tf(img, 999)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_different_seeds_distinct(img, tf):
    fps = {fingerprint(tf(img, view_seed(0, "img/0003.png", v))) for v in range(20)}
    assert len(fps) == 20


def test_randaugment_actually_varies_output(img):
    # RandAugment alone (no cutout, no flip) still makes views differ
    t = ReplayableTransform(_spec(cutout=0.0))
    fps = {fingerprint(t(img, s)) for s in range(12)}
    assert len(fps) >= 10


def test_no_augmentation_equals_eval(img):
    spec = _spec(cutout=0.0, randaugment=None, hflip=0.0)
    assert torch.equal(ReplayableTransform(spec)(img, 5), EvalTransform(spec)(img))


def test_cutout_paints_constant_box(img):
    spec = _spec(cutout=0.5, randaugment=None, hflip=0.0)
    plain = EvalTransform(spec)(img)
    t = ReplayableTransform(spec)
    boxes = set()
    for seed in range(6):
        out = t(img, seed)
        diff = (out != plain).any(dim=0)
        ys, xs = torch.nonzero(diff, as_tuple=True)
        assert ys.numel() > 0
        y1, y2, x1, x2 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        region = out[:, y1:y2, x1:x2]
        # one constant RGB colour over the whole (clipped) box
        assert torch.equal(region, region[:, :1, :1].expand_as(region))
        # side is cutout * 32 = 16 before clipping; at least half of it survives clipping
        assert 8 <= y2 - y1 <= 16 and 8 <= x2 - x1 <= 16
        outside = torch.ones(SIZE, SIZE, dtype=torch.bool)
        outside[y1:y2, x1:x2] = False
        assert torch.equal(out[:, outside], plain[:, outside])
        boxes.add((y1, y2, x1, x2))
    assert len(boxes) > 1


def test_hflip_one_flips_exactly(img):
    spec = _spec(cutout=0.0, randaugment=None, hflip=1.0)
    out = ReplayableTransform(spec)(img, 3)
    assert torch.equal(out, EvalTransform(spec)(img).flip(-1))


def test_normalisation_and_grey_input(img):
    spec = _spec(cutout=0.0, randaugment=None, mean=(0.5, 0.25, 0.0), std=(0.5, 2.0, 1.0))
    raw = EvalTransform(_spec(cutout=0.0, randaugment=None))(img)
    out = EvalTransform(spec)(img)
    m = torch.tensor(spec.mean).view(3, 1, 1)
    s = torch.tensor(spec.std).view(3, 1, 1)
    assert torch.equal(out, (raw - m) / s)
    grey = ReplayableTransform(_spec())(img.convert("L"), 1)
    assert grey.shape == (3, SIZE, SIZE)


# --------------------------------------------------------------------------------------------
# Across processes: the replay guarantee
# --------------------------------------------------------------------------------------------

ITEMS = [(i, v) for i, v in zip(range(8), (0, 3, 1, 7, 2, 5, 4, 6))]
BASE_SEED = 17


class _Explicit(torch.utils.data.Dataset):
    """Asks a ViewDataset for explicit (index, view) pairs, as the cache dump does."""

    def __init__(self, vds, items):
        self.vds, self.items = vds, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, j):
        return self.vds.get(*self.items[j])


def _vds() -> ViewDataset:
    # uint8 pixels, as the training loaders hand them over: what format 2 fingerprints
    return ViewDataset(TinyDataset(), _spec(), BASE_SEED, train=True, views=8, with_fingerprint=True, image_dtype="uint8")  # noqa: F821


@pytest.mark.slow
def test_replay_identical_across_processes():
    vds = _vds()
    ref = [vds.get(i, v) for i, v in ITEMS]
    ref_fp = [fingerprint(item[0]) for item in ref]
    assert len(set(ref_fp)) == len(ITEMS)
    assert [to_unsigned(item[4]) for item in ref] == ref_fp

    # DataLoader workers (forked from a process whose global RNGs were disturbed; the loader
    # seeds `random` and torch differently in every worker)
    _perturb_global_rngs(11)
    loader = torch.utils.data.DataLoader(_Explicit(_vds(), ITEMS), batch_size=3, num_workers=2, shuffle=False)
    got_images, got_fp, got_idx, got_view = [], [], [], []
    for image, _labels, index, view, fp, *_ in loader:
        assert fp.dtype == torch.int64
        got_images.extend(image)
        got_fp.extend(to_unsigned(int(f)) for f in fp)
        got_idx.extend(int(i) for i in index)
        got_view.extend(int(v) for v in view)
    assert list(zip(got_idx, got_view)) == ITEMS
    assert got_fp == ref_fp
    for a, (b, *_rest) in zip(got_images, ref):
        assert torch.equal(a, b)
        assert fingerprint(a) == fingerprint(b)

    # __getitem__ through workers, student replay schedule at epoch 5
    ds = _vds()
    ds.set_epoch(5)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=2)))
    for j in range(len(ds)):
        v = ds.view_of(j, 5)
        assert int(batch[3][j]) == v
        assert torch.equal(batch[0][j], vds.get(j, v)[0])

    # a fresh interpreter (nothing inherited), whose global RNGs are disturbed first
    code = STANDIN_SRC + textwrap.dedent(
        f"""
        import json, random
        import numpy as np, torch
        from mlkd_cache.data.transforms import TransformSpec, fingerprint
        from mlkd_cache.data.views import ViewDataset
        random.seed(5); np.random.seed(5); torch.manual_seed(5); np.random.rand(3)
        vds = ViewDataset(TinyDataset(), TransformSpec(img_size={SIZE}), {BASE_SEED}, train=True, views=8, image_dtype="uint8")
        print(json.dumps([fingerprint(vds.get(i, v)[0]) for i, v in {ITEMS!r}]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ref_fp


def test_reduced_decode_is_recorded_and_keeps_old_hashes(tmp_path):
    """decode='full' (the spec of caches written before the key) hashes as before; 'reduced' is
    part of the spec and its hash, and a large JPEG decodes at reduced scale, sides >= img_size."""
    from PIL import Image

    from mlkd_cache.data.base import load_rgb

    full = TransformSpec(img_size=224)
    assert "decode" not in full.to_dict() and full.decode_size is None
    reduced = TransformSpec(img_size=224, decode="reduced")
    assert reduced.to_dict()["decode"] == "reduced" and reduced.spec_hash() != full.spec_hash()
    assert TransformSpec.from_dict(reduced.to_dict()) == reduced and TransformSpec.from_dict(full.to_dict()) == full
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (1000, 1800, 3), dtype=np.uint8)).resize((1800, 1000))
    big.save(tmp_path / "big.jpg", quality=90)
    assert load_rgb(str(tmp_path / "big.jpg")).size == (1800, 1000)
    assert load_rgb(str(tmp_path / "big.jpg"), reduced.decode_size).size == (450, 250)  # 1/4: the smaller side stays >= 224
    with pytest.raises(ConfigError, match="transform.decode"):
        TransformSpec(img_size=224, decode="fast")
