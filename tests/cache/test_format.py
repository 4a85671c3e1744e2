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
    """A small spec for ``labels`` (uint8 [N, C]) holding every teacher output; every field can
    be overridden."""
    from mlkd_cache.cache.format import TEACHER_OUTPUTS

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
        outputs=TEACHER_OUTPUTS,
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


@pytest.mark.parametrize(
    "built, asked, match",
    [
        (
            {"fraction": 0.1, "seed": 0},
            {},
            r"^cache built with val_split fraction=0.1 seed=0, the config asks for no val_split; re-run dump-targets with "
            r"this config or set val_split = dict\(fraction=0.1, seed=0\)$",
        ),
        (
            {},
            {"fraction": 0.2, "seed": 3},
            r"^cache built with no val_split, the config asks for val_split fraction=0.2 seed=3; re-run dump-targets with "
            r"this config or set val_split.fraction = 0$",
        ),
        (
            {"fraction": 0.1, "seed": 0},
            {"fraction": 0.1, "seed": 1},
            r"^cache built with val_split fraction=0.1 seed=0, the config asks for val_split fraction=0.1 seed=1; ",
        ),
    ],
    ids=["some-vs-none", "none-vs-some", "other-seed"],
)
def test_check_request_another_val_split_comes_before_the_labels(labels, built, asked, match):
    """A cache of another val split holds other labels too: the split is named, not the digest."""
    spec = make_spec(labels, val_split=built)
    other = labels[: len(labels) - 3]
    with pytest.raises(CacheMismatchError, match=match):
        check_request(spec, val_split=asked, labels=other)
    check_request(spec, val_split=dict(built), labels=labels)
    check_request(spec, val_split={"fraction": 0.0, "seed": 9} if not built else built)  # off is off, whatever its seed


def test_val_split_is_an_attribute_only_when_one_was_held_out(labels, tmp_path):
    plain, held = make_spec(labels), make_spec(labels, val_split={"fraction": 0.1, "seed": 4})
    assert "val_split" not in plain.to_attrs() and "val_split" not in plain.to_dict() and plain.val_split == {}
    assert held.to_attrs()["val_split"] == '{"fraction":0.1,"seed":4}' and held.format_version == plain.format_version
    path = tmp_path / "shard.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(held.to_attrs())
    with h5py.File(path, "r") as f:
        assert CacheSpec.from_attrs(f.attrs) == held
    assert CacheSpec.from_dict(held.to_dict()) == held and hash(held) != hash(plain)
    with pytest.raises(ValueError, match=r"CacheSpec.val_split must be \{\} or \{fraction, seed\}"):
        make_spec(labels, val_split={"fraction": 0.0, "seed": 1})


@pytest.mark.parametrize("version", [2, 3])
def test_a_cache_without_a_val_split_keeps_its_attributes(version):
    """The caches of earlier versions (no val_split) read back to exactly the attributes they hold:
    the same hashes, the same comparisons."""
    from mlkd_cache.cache.format import SHARD_ATTRS, _plain

    from ..conftest import REPO

    with h5py.File(REPO / "tests" / "fixtures" / f"cache-v{version}" / "cache" / "shard-00000.h5", "r") as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in SHARD_ATTRS}
    spec = CacheSpec.from_attrs(attrs)
    assert spec.val_split == {} and spec.to_attrs() == attrs


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
        assert list(shapes)[: 2 + len(spec.view_fields)] == ["keys", "labels", *(f.name for f in spec.view_fields)]
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
    full = make_spec(labels, outputs=("features", "label_emb", "logits"))  # every output of format 2
    assert "outputs" not in full.to_attrs() and "outputs" not in full.to_dict() and full.format_version == 2
    logits = make_spec(labels, feature_dim=0, embed_dim=0, outputs=["logits"])
    attrs = logits.to_attrs()
    assert attrs["format_version"] == 3 and attrs["outputs"] == '["logits"]'
    assert logits.absent[:2] == ("features", "label_emb") and not logits.has_embeddings
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
        ({"outputs": ("logits", "saliency")}, "must hold logits and only"),
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


# -- the tables keyed by field, output or version derive from the schema ---------------------------


def every_kind_of_spec(labels):
    """A spec of every precision, embedding layout, image store and set of stored outputs."""
    import itertools

    from mlkd_cache.cache.format import OUTPUT_SIZES, TEACHER_OUTPUTS
    from mlkd_cache.config import CACHE_DTYPES, EMBEDDING_LAYOUTS, IMAGE_STORES

    optional = [o for o in TEACHER_OUTPUTS if o != "logits"]
    for dtype, embedding, images, count in itertools.product(
        CACHE_DTYPES, EMBEDDING_LAYOUTS, IMAGE_STORES, range(len(optional) + 1)
    ):
        for kept in itertools.combinations(optional, count):
            outputs = ("logits", *kept)
            sizes = {size: (7 if output in outputs else 0) for output, size in OUTPUT_SIZES.items()}
            quality = 90 if images == "jpeg" else 0
            yield make_spec(
                labels, dtype=dtype, embedding=embedding, images=images, jpeg_quality=quality, outputs=outputs, **sizes
            )


def test_every_dataset_of_every_cache_has_a_plan_part_and_every_output_a_size(labels):
    """``--dry-run`` counts each dataset a cache can hold under a part (a dataset without one was
    a KeyError there), each stored output under its own name; each output's size is a spec
    attribute that is 0 exactly when the output is absent."""
    from mlkd_cache.cache.format import OUTPUT_SIZES, OUTPUT_WORDS, PLAN_PARTS, TEACHER_OUTPUTS, image_shapes
    from mlkd_cache.losses.base import MODEL_OUTPUTS, SIZE_DIMS
    from mlkd_cache.models.card import ModelCard

    assert set(OUTPUT_WORDS) == set(MODEL_OUTPUTS) == set(TEACHER_OUTPUTS)
    int_fields = {f.name for f in dataclasses.fields(CacheSpec) if f.type == "int"}
    card_fields = {f.name for f in dataclasses.fields(ModelCard)}
    for output in TEACHER_OUTPUTS:
        own = [d for d in MODEL_OUTPUTS[output].dims if d in SIZE_DIMS]
        assert [OUTPUT_SIZES.get(output)] == ([SIZE_DIMS[d] for d in own] or [None]), output  # one size, or none
        assert {SIZE_DIMS[d] for d in own} <= int_fields & card_fields, output
    specs = list(every_kind_of_spec(labels))
    assert len(specs) == 4 * 2 * 3 * 2 ** (len(TEACHER_OUTPUTS) - 1)  # dtypes, layouts, stores, sets of outputs
    for spec in specs:
        shard = labels[:20]
        targets = set(dataset_shapes(spec, 20, int(shard.sum()))) - set(image_shapes(spec, 20))
        assert targets <= set(PLAN_PARTS), (spec.dtype, spec.embedding, spec.outputs)
        plan = spec.plan(labels)
        parts = plan["bytes_per_view_by_part"]
        assert set(parts) == {*spec.outputs, "seeds/fingerprints", "keys/labels"}
        assert sum(parts.values()) == pytest.approx(plan["bytes_per_view"])
        for output, size in OUTPUT_SIZES.items():
            assert (getattr(spec, size) > 0) == (output in spec.outputs)


def test_a_new_view_field_is_planned_from_its_view_fields_entry_alone(labels, monkeypatch):
    """The recipe of a new cache field: one VIEW_FIELDS entry, and ``--dry-run`` plans it (its
    bytes under its teacher output, an int8 cache's scales too, or with the seeds when no
    output fills it) with no other table to extend."""
    import mlkd_cache.cache.format as fmt

    extra = (
        fmt.ViewField("crop_box", ("num_classes",), "uint64"),  # from the data, as view_seed
        fmt.ViewField("features_var", ("feature_dim",), None, output="features", coded=True),
    )
    monkeypatch.setattr(fmt, "VIEW_FIELDS", (*fmt.VIEW_FIELDS, *extra))
    for dtype in ("float16", "int8"):
        spec = make_spec(labels, dtype=dtype)
        plan = spec.plan(labels)
        n, V, C, D = spec.num_samples, spec.views, spec.num_classes, spec.feature_dim
        s = spec.storage_dtype.itemsize
        assert plan["bytes_per_view_by_part"]["seeds/fingerprints"] * n * V == 2 * n * V * 8 + n * V * C * 8
        features = 2 * n * V * D * s + (2 * n * V * 4 if dtype == "int8" else 0)  # both fields, their scales in int8
        assert plan["bytes_per_view_by_part"]["features"] * n * V == features
    parts = fmt.plan_parts()
    assert parts["crop_box"] == "seeds/fingerprints" and parts["features_var"] == parts["features_var_scale"] == "features"
    assert list(dict.fromkeys(parts.values())) == list(dict.fromkeys(fmt.PLAN_PARTS.values()))  # the printed order


def test_format_versions_are_one_table(labels):
    """Every format version from 1 up holds what its fingerprints hash (what a reader passes to
    ViewDataset), FORMAT_VERSION is the newest, and every version from 2 up is the one some cache
    is written at (a version nothing needs would never be written)."""
    from mlkd_cache.cache.format import FORMATS
    from mlkd_cache.data.views import FINGERPRINT_INPUTS

    assert list(FORMATS) == list(range(1, FORMAT_VERSION + 1))
    assert all(f.fingerprint_input in FINGERPRINT_INPUTS for f in FORMATS.values())
    assert FORMATS[1].fingerprint_input == "float32" and FORMATS[1].needed_by is None  # read only
    written = {spec.format_version for spec in every_kind_of_spec(labels)}
    assert written == set(range(2, FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="fingerprint_input must be one of uint8, float32"):
        type(FORMATS[2])("float64", None)


def test_a_new_format_version_is_written_and_read_from_its_entry_alone(labels, monkeypatch):
    """The recipe of a new format: one FORMATS entry saying which caches need it; the caches
    that do are written at it, and a reader knows what their fingerprints hash."""
    import mlkd_cache.cache.format as fmt
    from mlkd_cache.cache.reader import TargetCache

    newer = FORMAT_VERSION + 1
    monkeypatch.setitem(fmt.FORMATS, newer, fmt.FormatVersion("uint8", lambda spec: spec.views == 7))
    assert make_spec(labels, views=7).format_version == newer and make_spec(labels, views=7).to_attrs()["format_version"] == newer
    assert make_spec(labels).format_version < newer
    reader = TargetCache.__new__(TargetCache)  # what a cache of each version says its fingerprints hash
    for version, entry in fmt.FORMATS.items():
        reader.format_version = version
        assert reader.fingerprint_of == entry.fingerprint_input


def test_a_new_teacher_output_leaves_the_caches_of_the_others_as_they_were(labels, monkeypatch):
    """A cache that does not record its outputs holds format 2's three, whatever the model gives
    now: once a new output exists, a cache of the three still leaves ``outputs`` out and stays
    format 2 (and an older cache still reads as the three), while one holding the new output
    records it."""
    import mlkd_cache.cache.format as fmt

    three = ("features", "label_emb", "logits")
    monkeypatch.setattr(fmt, "TEACHER_OUTPUTS", (*three, "saliency"))
    old = make_spec(labels, outputs=three)
    assert old.absent == ("saliency",) and "outputs" not in old.to_attrs() and old.format_version == 2
    assert CacheSpec.from_dict(old.to_dict()).outputs == three
    new = make_spec(labels, outputs=(*three, "saliency"))
    assert new.absent == () and new.to_dict()["outputs"] == [*three, "saliency"] and new.format_version == 3
    assert CacheSpec.from_dict(new.to_dict()) == new
