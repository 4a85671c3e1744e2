"""The cache schema: CacheSpec geometry, attribute round trip, sizes and request checks."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from mlkd_cache.cache.format import (
    FORMAT_VERSION,
    CacheSpec,
    check_request,
    dataset_shapes,
    labels_digest,
    shard_name,
)
from mlkd_cache.errors import CacheCorruptError, CacheMismatchError

CLASSES = ("airplane", "apple", "backpack", "banana", "bear", "bed")


def make_spec(labels: np.ndarray, **overrides) -> CacheSpec:
    """A small spec for ``labels`` (uint8 [N, C]); every field can be overridden."""
    n, c = labels.shape
    fields = dict(
        num_samples=n,
        views=3,
        num_classes=c,
        feature_dim=8,
        embed_dim=5,
        dtype="float32",
        embedding="positive",
        shard_size=20,
        class_names=CLASSES[:c] if c <= len(CLASSES) else tuple(f"c{i}" for i in range(c)),
        dataset="synthetic",
        split="train",
        img_size=224,
        transform={"resize": (224, 224), "randaugment": {"n": 2, "m": 9}},
        transform_hash="47bdb746cd6561d9",
        normalisation={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        base_seed=1234,
        teacher_arch="tresnet_l",
        teacher_sha256="ab" * 32,
        labels_sha256=labels_digest(labels),
    )
    fields.update(overrides)
    return CacheSpec(**fields)


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    y = (rng.random((50, 6)) < 0.35).astype(np.uint8)
    y[0] = 0
    y[1] = 1
    return y


@pytest.fixture
def spec(labels) -> CacheSpec:
    return make_spec(labels)


def test_shard_geometry(spec):
    assert shard_name(0) == "shard-00000.h5" and shard_name(123) == "shard-00123.h5"
    assert spec.num_shards() == 3
    assert [spec.shard_range(k) for k in range(3)] == [(0, 20), (20, 40), (40, 50)]
    with pytest.raises(IndexError, match="shard 3 out of range"):
        spec.shard_range(3)


def test_attrs_round_trip_through_hdf5(spec, tmp_path):
    attrs = spec.to_attrs()
    assert attrs["format_version"] == 2  # every teacher output: the oldest format that holds it
    assert all(isinstance(v, (int, str)) for v in attrs.values())
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs.update(attrs)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        back = CacheSpec.from_attrs(f.attrs)
    assert back == spec
    assert back.to_attrs() == attrs
    assert CacheSpec.from_dict(spec.to_dict()) == spec
    assert hash(back) == hash(spec)


def test_tuples_and_lists_give_equal_specs(labels):
    a = make_spec(labels, transform={"resize": (224, 224)}, class_names=list(CLASSES))
    b = make_spec(labels, transform={"resize": [224, 224]})
    assert a == b and a.class_names == CLASSES


def test_from_attrs_refuses_missing_and_newer(spec):
    attrs = spec.to_attrs()
    del attrs["teacher_sha256"]
    with pytest.raises(CacheCorruptError, match="cache attributes lack teacher_sha256"):
        CacheSpec.from_attrs(attrs)
    attrs = {**spec.to_attrs(), "format_version": FORMAT_VERSION + 1}
    with pytest.raises(CacheMismatchError, match=f"format version {FORMAT_VERSION + 1}, .* reads up to {FORMAT_VERSION}"):
        CacheSpec.from_attrs(attrs)
    with pytest.raises(CacheCorruptError, match="lack format_version"):
        CacheSpec.from_attrs({})


@pytest.mark.parametrize(
    "override, match",
    [
        ({"dtype": "float8"}, "dtype must be one of float16, float32, bfloat16, int8"),
        ({"embedding": "sparse"}, "embedding must be one of positive, dense"),
        ({"class_names": ("a", "b")}, "2 class names for num_classes 6"),
        ({"views": 0}, "views must be >= 1"),
    ],
)
def test_spec_validates(labels, override, match):
    with pytest.raises(ValueError, match=match):
        make_spec(labels, **override)


def test_labels_digest_is_dtype_blind(labels):
    assert labels_digest(labels.astype(bool)) == labels_digest(labels) == labels_digest(labels.astype(np.int64))
    other = labels.copy()
    other[5, 2] ^= 1
    assert labels_digest(other) != labels_digest(labels)


@pytest.mark.parametrize("embedding", ["positive", "dense"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_shard_nbytes_by_hand(labels, embedding, dtype):
    spec = make_spec(labels, embedding=embedding, dtype=dtype)
    y = labels[:20]
    n, V, C, D, E, s, P = 20, 3, 6, 8, 5, np.dtype(dtype).itemsize, int(y.sum())
    fixed = n * 8 + n * C + 2 * n * V * 8 + n * V * C * s + n * V * D * s
    emb = (n + 1) * 8 + P * 2 + P * V * E * s if embedding == "positive" else n * V * C * E * s
    assert spec.shard_nbytes(y) == fixed + emb
    assert set(dataset_shapes(spec, n, P)) >= {"keys", "labels", "view_seed", "fingerprint", "logits", "features", "emb"}


def test_plan_ratios(labels):
    spec = make_spec(labels)
    plan = spec.plan(labels)
    P = int(labels.sum())
    assert plan["positive_tokens"] == P
    assert plan["payload_bytes"] == sum(spec.shard_nbytes(labels[a:b]) for a, b in map(spec.shard_range, range(3)))
    assert plan["dense_payload_bytes"] == dataclasses.replace(spec, embedding="dense").plan(labels)["payload_bytes"]
    assert plan["dense_emb_payload_bytes"] / plan["emb_payload_bytes"] == pytest.approx(50 * 6 / P)
    assert plan["bytes_per_sample"] == pytest.approx(plan["payload_bytes"] / 50)
    assert plan["bytes_per_view"] == pytest.approx(plan["payload_bytes"] / 150)


# -- check_request ---------------------------------------------------------------------------------


def test_check_request_accepts_the_same_request(spec, labels):
    check_request(spec, class_names=CLASSES, labels=labels, img_size=224, transform_hash="47bdb746cd6561d9", views=3)
    check_request(spec)  # nothing asked, nothing checked


@pytest.mark.parametrize(
    "request_, match",
    [
        (
            {"class_names": ["aeroplane", "bicycle"]},
            r"^cache built for 6 classes \(airplane, apple, backpack, \.\.\.\), the dataset has 2 \(aeroplane, bicycle\); "
            r"re-run dump-targets",
        ),
        (
            {"class_names": ["airplane", "apple", "bag", "banana", "bear", "bed"]},
            r"^cache built for other class names \(class 2 is 'backpack', the dataset has 'bag'\); re-run dump-targets",
        ),
        ({"img_size": 448}, r"^cache built for img_size 224, config asks for 448; re-run dump-targets or fix img_size$"),
        (
            {"transform_hash": "0123456789abcdef"},
            r"^cache built with transform 47bdb746cd6561d9, config gives 0123456789abcdef; re-run dump-targets",
        ),
        ({"views": 8}, r"^cache built with 3 views, config asks for 8; re-run dump-targets or set cache.views = 3$"),
    ],
    ids=["class-count", "class-names", "img_size", "transform", "views"],
)
def test_check_request_mismatch_messages(spec, request_, match):
    with pytest.raises(CacheMismatchError, match=match):
        check_request(spec, **request_)


def test_check_request_other_labels(spec, labels):
    other = labels.copy()
    other[7, 3] ^= 1
    digest = labels_digest(other)
    with pytest.raises(
        CacheMismatchError,
        match=rf"^cache built for other labels \(sha256 {spec.labels_sha256[:8]}… vs {digest[:8]}…\); re-run dump-targets",
    ):
        check_request(spec, labels=other)
    with pytest.raises(CacheMismatchError, match=r"cache built for labels of shape \(50, 6\), the dataset has \(49, 6\)"):
        check_request(spec, labels=labels[:49])


def test_check_request_where_prefix(spec):
    with pytest.raises(CacheMismatchError, match=r"^/data/cache: cache built for img_size 224, config asks for 448; "):
        check_request(spec, img_size=448, where="/data/cache")
    err = pytest.raises(CacheMismatchError, check_request, spec, views=2).value
    assert isinstance(err, ValueError) and "\n" not in str(err)


def test_the_schema_names_real_config_choices_outputs_and_kd_fields():
    """The cache schema's links to the layers around it: its layouts are the config's choices,
    every field filled from the teacher names a model output, every field a loss reads names a
    KDBatch field (a typo in a new field fails here, not in a training run)."""
    from mlkd_cache.cache.format import LAYOUTS, VIEW_FIELDS
    from mlkd_cache.config import EMBEDDING_LAYOUTS
    from mlkd_cache.losses.base import KDBatch
    from mlkd_cache.models.model import Outputs

    assert tuple(LAYOUTS) == EMBEDDING_LAYOUTS
    kd_fields = {f.name for f in dataclasses.fields(KDBatch)}
    assert {f.output for f in VIEW_FIELDS if f.output} <= set(Outputs._fields)
    assert {f.kd for f in VIEW_FIELDS if f.kd} | {kd for lay in LAYOUTS.values() for _, kd in lay.batch_keys} <= kd_fields
    assert len({f.name for f in VIEW_FIELDS}) == len(VIEW_FIELDS)
    spec = make_spec(np.eye(4, dtype=np.uint8)[:3])  # 3 samples, 4 classes, 3 positives
    for embedding, emb_shape in (("positive", (3, 3, 5)), ("dense", (3, 3, 4, 5))):
        shapes = dataset_shapes(dataclasses.replace(spec, embedding=embedding), 3, 3)
        assert list(shapes)[: 2 + len(VIEW_FIELDS)] == ["keys", "labels", *(f.name for f in VIEW_FIELDS)]
        assert shapes["logits"] == ((3, 3, 4), 4) and shapes["features"] == ((3, 3, 8), 4) and shapes["view_seed"] == ((3, 3), 8)
        assert shapes["emb"][0] == emb_shape


def test_a_store_is_recorded_only_when_there_is_one(spec, tmp_path):
    """A cache without an image store keeps the attributes (and so the hashes) caches had before
    the store existed, and reads back with images='none'; a store's mode and quality round-trip
    through HDF5, and a JPEG quality without a JPEG store (or the other way) is refused."""
    assert "images" not in spec.to_attrs() and "jpeg_quality" not in spec.to_dict()
    assert CacheSpec.from_dict(spec.to_dict()) == spec and spec.images == "none" and not spec.stores_images
    stored = dataclasses.replace(spec, images="jpeg", jpeg_quality=75)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.attrs.update(stored.to_attrs())
    with h5py.File(tmp_path / "s.h5", "r") as f:
        back = CacheSpec.from_attrs(f.attrs)
    assert back == stored and back.stores_images and back.jpeg_quality == 75
    assert stored.image_nbytes(10, "raw") == 10 * spec.img_size**2 * 3
    assert stored.image_nbytes(10, "jpeg", 1000.0) == 10_000 + 8 * 11 and stored.image_nbytes(10, "jpeg") is None
    for images, quality in (("raw", 90), ("jpeg", 0), ("png", 0)):
        with pytest.raises(ValueError):
            dataclasses.replace(spec, images=images, jpeg_quality=quality)


def test_a_cache_of_some_teacher_outputs(labels, tmp_path):
    """A teacher that gives logits alone (or logits and features): no datasets for the rest,
    sizes 0, ``outputs`` recorded, format 3; a complete cache keeps format 2 without ``outputs``."""
    from mlkd_cache.cache.format import TEACHER_OUTPUTS
    from mlkd_cache.models import Outputs

    assert TEACHER_OUTPUTS == Outputs._fields  # one order of the names, the model's
    full = make_spec(labels)
    assert "outputs" not in full.to_attrs() and "outputs" not in full.to_dict() and full.absent == ()
    logits = make_spec(labels, feature_dim=0, embed_dim=0, outputs=["logits"])
    attrs = logits.to_attrs()
    assert attrs["format_version"] == 3 == FORMAT_VERSION - 1 and attrs["outputs"] == '["logits"]'
    assert logits.absent == ("features", "label_emb") and not logits.has_embeddings
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs.update(attrs)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert CacheSpec.from_attrs(f.attrs) == logits
    assert CacheSpec.from_dict(logits.to_dict()) == logits
    shapes = dataset_shapes(logits, 20, int(labels[:20].sum()))
    assert set(shapes) == {"keys", "labels", "view_seed", "fingerprint", "logits"}
    n, V, C = 20, 3, 6
    assert logits.shard_nbytes(labels[:20]) == n * 8 + n * C + 2 * n * V * 8 + n * V * C * 4
    both = make_spec(labels, embed_dim=0, outputs=("logits", "features"))
    assert both.outputs == ("features", "logits")  # TEACHER_OUTPUTS order
    assert set(dataset_shapes(both, 20, 0)) == {"keys", "labels", "view_seed", "fingerprint", "logits", "features"}


@pytest.mark.parametrize(
    "override, match",
    [
        ({"outputs": ("features", "label_emb")}, "must hold logits"),
        ({"outputs": ("logits", "attention")}, "must hold logits and only"),
        ({"outputs": ("logits",)}, "feature_dim 8 does not fit outputs"),  # sizes of absent outputs are 0
        ({"feature_dim": 0}, "feature_dim 0 does not fit outputs"),
        ({"outputs": ("logits", "features"), "embed_dim": 5}, "embed_dim 5 does not fit"),
    ],
)
def test_outputs_and_sizes_must_agree(labels, override, match):
    with pytest.raises(ValueError, match=match):
        make_spec(labels, **override)


@pytest.mark.parametrize("dtype, version", [("float16", 2), ("float32", 2), ("bfloat16", 4), ("int8", 4)])
def test_compact_precisions_are_format_4_with_scales_for_int8(dtype, version):
    """bfloat16 and int8 caches are format 4 (a reader of formats <= 3 refuses them by version);
    int8 adds one float32 scale per stored vector: each feature row, each token of each view."""
    labels = (np.random.default_rng(0).random((10, 4)) < 0.5).astype(np.uint8)
    spec = make_spec(labels, dtype=dtype)
    assert spec.format_version == version and spec.to_attrs()["format_version"] == version
    shapes = dataset_shapes(spec, 10, int(labels.sum()))
    V, D, E, P = spec.views, spec.feature_dim, spec.embed_dim, int(labels.sum())
    stored = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[dtype]
    assert shapes["features"] == ((10, V, D), stored) and shapes["emb"] == ((P, V, E), stored)
    assert shapes["logits"][1] == (4 if dtype == "float32" else 2)
    scales = {k: v for k, v in shapes.items() if k.endswith("_scale")}
    assert scales == ({"features_scale": ((10, V), 4), "emb_scale": ((P, V), 4)} if dtype == "int8" else {})
