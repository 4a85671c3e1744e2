"""Writing shards and reading them back: round trips, atomicity, resume checks, refusals, workers."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mlkd_cache.cache import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    CacheSpec,
    ShardBuffer,
    ShardWriter,
    TargetCache,
    codec,
    shard_entry,
    shard_is_complete,
    shard_name,
    write_manifest,
    write_shard,
)
from mlkd_cache.cache.format import part_glob
from mlkd_cache.config import CACHE_DTYPES
from mlkd_cache.errors import CacheCorruptError, CacheMismatchError, MlkdError
from tests.cache.test_format import make_spec

N, C, V, D, E = 50, 6, 3, 8, 5


def make_data(seed: int = 0) -> dict:
    """Teacher outputs of every (sample, view) pair, as if from a forward pass."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((N, C)) < 0.35).astype(np.uint8)
    labels[3] = 0  # a sample with no positive label
    labels[25] = 1  # one with every label
    return {
        "keys": [f"img_{i:04d}_é.jpg" for i in range(N)],
        "labels": labels,
        "view_seed": rng.integers(0, 2**64, size=(N, V), dtype=np.uint64, endpoint=False) | np.uint64(2**63),
        "fingerprint": rng.integers(0, 2**64, size=(N, V), dtype=np.uint64, endpoint=False),
        "logits": rng.standard_normal((N, V, C)).astype(np.float32),
        "features": rng.standard_normal((N, V, D)).astype(np.float32),
        "label_emb": rng.standard_normal((N, V, C, E)).astype(np.float32),
    }


DATA = make_data()


def fill(spec: CacheSpec, k: int, data: dict, order: str = "sequential", seed: int = 0, as_torch: bool = False) -> ShardBuffer:
    start, stop = spec.shard_range(k)
    buf = ShardBuffer(spec, k, data["keys"][start:stop], data["labels"][start:stop])
    pairs = np.array([(r, v) for v in range(spec.views) for r in range(stop - start)])
    rng = np.random.default_rng(seed)
    if order == "random":
        pairs = pairs[rng.permutation(len(pairs))]
    i = 0
    while i < len(pairs):
        size = int(rng.integers(1, 14)) if order == "random" else 7
        rows, views = pairs[i : i + size, 0], pairs[i : i + size, 1]
        g = rows + start
        names = [f.name for f in spec.view_fields] + (["label_emb"] if spec.has_embeddings else [])  # what the teacher gave
        args = {name: data[name][g, views] for name in names}
        if as_torch:  # the dump engine's types: int64 seeds carrying uint64 bits, float64 outputs
            args = {
                k: torch.from_numpy(a.view(np.int64)) if a.dtype == np.uint64 else torch.from_numpy(a.astype(np.float64))
                for k, a in args.items()
            }
            rows, views = torch.from_numpy(rows), torch.from_numpy(views)
        if not spec.has_embeddings:
            args["label_emb"] = None
        buf.put(rows, views, **args)
        i += size
    return buf


def build(directory: Path, data: dict = DATA, **overrides) -> CacheSpec:
    spec = make_spec(data["labels"], **overrides)
    with ShardWriter(directory, max_pending=1) as writer:
        for k in range(spec.num_shards()):
            writer.submit(fill(spec, k, data, order="random", seed=k))
    entries = writer.close()
    assert [e["index"] for e in entries] == list(range(spec.num_shards()))
    assert writer.bytes_written == sum(e["bytes"] for e in entries)
    write_manifest(directory, spec, entries)
    return spec


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict:
    """Read-only caches built once: {(embedding, dtype): directory}."""
    out = {}
    for embedding in ("positive", "dense"):
        for dtype in CACHE_DTYPES:
            d = tmp_path_factory.mktemp(f"{embedding}_{dtype}")
            build(d, embedding=embedding, dtype=dtype)
            out[embedding, dtype] = d
    return out


@pytest.fixture
def cache_copy(caches, tmp_path) -> Path:
    """A private copy of the float32 positive cache, free to damage."""
    return Path(shutil.copytree(caches["positive", "float32"], tmp_path / "cache"))


def random_batch(seed: int = 1, size: int = 40):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, N, size)
    idx[:3] = [3, 25, 49]  # the empty sample, the full one, the short last shard
    idx[3] = idx[4]  # a duplicate
    return idx, rng.integers(0, V, size)


# -- round trip ------------------------------------------------------------------------------------


def stored(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` [..., K] as a cache of precision ``dtype`` reads it back (codec.py), vector by vector."""
    enc = codec.encode(a, dtype)
    return codec.decode(enc.values, enc.scales, dtype)


@pytest.mark.parametrize("dtype", CACHE_DTYPES)
@pytest.mark.parametrize("embedding", ["positive", "dense"])
def test_get_returns_what_was_put(caches, embedding, dtype):
    """What was put, as its precision stores it: logits float16 (float32 in a float32 cache),
    features and embeddings in the cache's precision (read back as float32 from bfloat16 and int8)."""
    cache = TargetCache(caches[embedding, dtype])
    idx, views = random_batch()
    out = cache.get(torch.from_numpy(idx), views)
    cast = lambda a: stored(a, dtype)  # noqa: E731
    assert out["logits"].dtype == getattr(torch, codec.logits_dtype(dtype))
    assert out["features"].dtype == torch.from_numpy(np.zeros(0, codec.value_dtype(dtype))).dtype
    np.testing.assert_array_equal(out["logits"].numpy(), DATA["logits"][idx, views].astype(codec.logits_dtype(dtype)))
    np.testing.assert_array_equal(out["features"].numpy(), cast(DATA["features"][idx, views]))
    assert out["view_seed"].dtype == out["fingerprint"].dtype == torch.int64
    np.testing.assert_array_equal(out["view_seed"].numpy().view(np.uint64), DATA["view_seed"][idx, views])
    np.testing.assert_array_equal(out["fingerprint"].numpy().view(np.uint64), DATA["fingerprint"][idx, views])
    assert (out["view_seed"].numpy().view(np.uint64) >= 2**63).all()
    expected_emb = cast(DATA["label_emb"][idx, views])  # [B, C, E]
    if embedding == "positive":
        sample, klass = np.nonzero(DATA["labels"][idx])  # batch order, classes ascending
        np.testing.assert_array_equal(out["token_sample"].numpy(), sample)
        np.testing.assert_array_equal(out["token_class"].numpy(), klass)
        np.testing.assert_array_equal(out["tokens"].numpy(), expected_emb[sample, klass])
    else:
        np.testing.assert_array_equal(out["label_emb"].numpy(), expected_emb)


def test_keys_labels_and_metadata_round_trip(caches):
    cache = TargetCache(caches["positive", "float32"])
    assert cache.keys == DATA["keys"]
    np.testing.assert_array_equal(cache.labels, DATA["labels"])
    assert cache.labels.dtype == np.uint8
    assert (cache.num_samples, cache.views, len(cache)) == (N, V, N)
    assert cache.spec == make_spec(DATA["labels"])
    cache.check_request(labels=DATA["labels"], img_size=224, views=V)
    with pytest.raises(CacheMismatchError, match=r"cache built for img_size 224, config asks for 448"):
        cache.check_request(img_size=448)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_positive_and_dense_modes_agree(caches, dtype):
    pos = TargetCache(caches["positive", dtype])
    dense = TargetCache(caches["dense", dtype])
    idx, views = random_batch(seed=7, size=64)
    out = pos.get(idx, views)
    full = dense.get(idx, views)["label_emb"]
    np.testing.assert_array_equal(out["tokens"].numpy(), full[out["token_sample"], out["token_class"]].numpy())
    mask = torch.from_numpy(DATA["labels"][idx]).bool()[..., None]  # [B, C, 1]
    assert torch.equal(pos.dense_label_emb(idx, views), full * mask)
    assert torch.equal(dense.dense_label_emb(idx, views), full)
    for view in (None, 1):
        a = [torch.cat(x) for x in zip(*pos.iter_positive_tokens(view=view, batch=17))]
        b = [torch.cat(x) for x in zip(*dense.iter_positive_tokens(view=view, batch=17))]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].dtype == torch.float32
    tokens, classes = [torch.cat(x) for x in zip(*pos.iter_positive_tokens(view=1))]
    rows, klass = np.nonzero(DATA["labels"])
    np.testing.assert_array_equal(tokens.numpy(), stored(DATA["label_emb"][rows, 1, klass], dtype))
    np.testing.assert_array_equal(classes.numpy(), klass)


def test_empty_batch(caches):
    out = TargetCache(caches["positive", "float16"]).get([], [])
    assert out["logits"].shape == (0, C) and out["tokens"].shape == (0, E)
    with pytest.raises(IndexError, match=r"sample indices must lie in \[0, 50\)"):
        TargetCache(caches["positive", "float16"]).get([50], [0])


# -- buffers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["positive", "dense"])
def test_put_order_does_not_matter(embedding, tmp_path):
    spec = make_spec(DATA["labels"], embedding=embedding, dtype="float16")
    seq = fill(spec, 1, DATA, order="sequential")
    rnd = fill(spec, 1, DATA, order="random", seed=5, as_torch=True)
    assert seq.arrays.keys() == rnd.arrays.keys()
    for name in seq.arrays:
        assert seq.arrays[name].tobytes() == rnd.arrays[name].tobytes(), name
    write_shard(seq, tmp_path / "a")
    write_shard(rnd, tmp_path / "b")
    with h5py.File(tmp_path / "a" / shard_name(1)) as fa, h5py.File(tmp_path / "b" / shard_name(1)) as fb:
        assert fa["keys"].asstr()[()].tolist() == fb["keys"].asstr()[()].tolist() == DATA["keys"][20:40]
        for name in set(fa) - {"keys"}:
            assert fa[name][()].tobytes() == fb[name][()].tobytes(), name


def test_complete_and_duplicate_puts(tmp_path):
    spec = make_spec(DATA["labels"])
    buf = ShardBuffer(spec, 2, DATA["keys"][40:50], DATA["labels"][40:50])
    rows = np.arange(10)

    def put(rows, view):
        g, views = rows + 40, np.full(len(rows), view)
        buf.put(rows, views, **{n: DATA[n][g, views] for n in ("view_seed", "fingerprint", "logits", "features", "label_emb")})

    put(rows, 0)
    put(rows, 1)
    assert not buf.complete
    with pytest.raises(ValueError, match="shard 2 is not complete: 10 .* pairs were never put"):
        write_shard(buf, tmp_path)
    with pytest.raises(ValueError, match=r"\(row 4, view 1\) of shard 2 was already put"):
        put(np.array([4]), 1)
    with pytest.raises(ValueError, match=r"\(row 6, view 2\) of shard 2 was already put"):
        put(np.array([5, 6, 6]), 2)  # a duplicate inside one batch
    put(rows, 2)  # the failed puts left nothing behind
    assert buf.complete
    assert not list(tmp_path.iterdir())


def test_put_checks_shapes():
    spec = make_spec(DATA["labels"])
    buf = ShardBuffer(spec, 0, DATA["keys"][:20], DATA["labels"][:20])
    with pytest.raises(ValueError, match=r"logits has shape \(2, 5\), expected \(2, 6\)"):
        buf.put(
            [0, 1],
            [0, 0],
            view_seed=[1, 2],
            fingerprint=[3, 4],
            logits=np.zeros((2, 5)),
            features=np.zeros((2, D)),
            label_emb=np.zeros((2, C, E)),
        )
    with pytest.raises(TypeError, match=r"put\(\) takes the fields view_seed, fingerprint, logits, features; got"):
        buf.put([0, 1], [0, 0], label_emb=np.zeros((2, C, E)), view_seed=[1, 2], fingerprint=[3, 4], logits=np.zeros((2, C)))
    with pytest.raises(ValueError, match=r"got 19 keys"):
        ShardBuffer(spec, 0, DATA["keys"][:19], DATA["labels"][:20])


# -- atomic writes and resume checks ---------------------------------------------------------------


def test_write_shard_is_atomic(tmp_path, monkeypatch):
    spec = make_spec(DATA["labels"])
    buf = fill(spec, 0, DATA)
    final, tmp = tmp_path / "shard-00000.h5", tmp_path / "shard-00000.h5.tmp"
    real_replace, seen = os.replace, []

    def spy(src, dst):
        seen.append((Path(src).exists(), Path(dst).exists()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    entry = write_shard(buf, tmp_path)
    assert seen == [(True, False)]  # the .h5 appears only by the rename of a finished .tmp
    assert entry["file"] == final.name and entry["bytes"] == final.stat().st_size and not tmp.exists()
    assert shard_entry(tmp_path, spec, 0) == entry  # what a resumed dump lists for a skipped shard

    final.unlink()

    def fail(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(MlkdError, match=r"cannot write .*shard-00000.h5: Input/output error; "):
        write_shard(buf, tmp_path)
    assert not final.exists() and not tmp.exists()


def test_disk_full_leaves_no_tmp(tmp_path, monkeypatch):
    buf = fill(make_spec(DATA["labels"]), 0, DATA)
    real = h5py.Group.create_dataset

    def create(self, name, *args, **kwargs):
        if name == "features":
            raise OSError(errno.ENOSPC, "Can't write data (file write failed)")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create)
    with pytest.raises(MlkdError, match=r"cannot write .*shard-00000.h5: No space left on device; free space"):
        write_shard(buf, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_shard_writer_reraises(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    spec = make_spec(DATA["labels"])
    writer = ShardWriter(not_a_dir)
    writer.submit(fill(spec, 0, DATA))
    with pytest.raises(MlkdError, match="cannot write"):
        writer.close()
    with pytest.raises(ValueError, match="not complete"):
        ShardWriter(tmp_path).submit(ShardBuffer(spec, 0, DATA["keys"][:20], DATA["labels"][:20]))


def test_shard_is_complete(caches, tmp_path):
    src = caches["positive", "float32"]
    spec = make_spec(DATA["labels"])
    good = src / shard_name(1)
    assert shard_is_complete(good, spec, 1)
    assert not shard_is_complete(good, spec, 0)  # other sample range
    assert not shard_is_complete(tmp_path / "missing.h5", spec, 1)
    assert not shard_is_complete(good, dataclasses.replace(spec, teacher_sha256="cd" * 32), 1)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not shard_is_complete(truncated, spec, 1)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\0" * 4096)
    assert not shard_is_complete(garbage, spec, 1)
    wrong = Path(shutil.copy(good, tmp_path / "wrong.h5"))
    with h5py.File(wrong, "r+") as f:
        f.attrs["img_size"] = 448
    assert not shard_is_complete(wrong, spec, 1)


# -- refusals --------------------------------------------------------------------------------------


def test_refuses_missing_manifest(cache_copy):
    (cache_copy / MANIFEST_NAME).unlink()
    with pytest.raises(
        CacheCorruptError, match=r"^no manifest.json in .*cache: the dump did not finish; re-run dump-targets \(it resumes\)$"
    ):
        TargetCache(cache_copy)


def test_refuses_missing_shard(cache_copy):
    (cache_copy / shard_name(1)).unlink()
    with pytest.raises(
        CacheCorruptError,
        match=r"^shard-00001.h5 listed in .*manifest.json is missing; re-run dump-targets with the same config and teacher to rewrite it$",
    ):
        TargetCache(cache_copy)


def test_refuses_truncated_shard(cache_copy):
    path = cache_copy / shard_name(2)
    size = path.stat().st_size
    os.truncate(path, size - 100)
    with pytest.raises(
        CacheCorruptError,
        match=rf"^shard-00002.h5 in .* has {size - 100} bytes, manifest.json lists {size} \(truncated\?\); re-run dump-targets",
    ):
        TargetCache(cache_copy)


def test_refuses_shard_of_another_cache(cache_copy, tmp_path):
    other = tmp_path / "other"
    build(other, teacher_sha256="cd" * 32)
    shutil.copy(other / shard_name(1), cache_copy / shard_name(1))
    manifest = json.loads((cache_copy / MANIFEST_NAME).read_text())
    manifest["shards"][1]["bytes"] = (cache_copy / shard_name(1)).stat().st_size
    (cache_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(
        CacheCorruptError, match=r"^shard-00001.h5 in .* belongs to another cache \(teacher_sha256 cdcd.* vs abab.*\)"
    ):
        TargetCache(cache_copy)


def test_refuses_newer_manifest(cache_copy):
    manifest = json.loads((cache_copy / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (cache_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CacheMismatchError, match=f"format version 99, this mlkd-cache reads up to {FORMAT_VERSION}"):
        TargetCache(cache_copy)


def test_verify_checksums_catches_a_flipped_byte(cache_copy):
    path = cache_copy / shard_name(0)
    with h5py.File(path, "r") as f:
        offset = f["features"].id.get_offset() + 123
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))
    TargetCache(cache_copy)  # size and attributes still fine
    with pytest.raises(
        CacheCorruptError, match=r"^shard-00000.h5 in .* fails its sha256 check \(\w{8}… vs \w{8}… in manifest.json\)"
    ):
        TargetCache(cache_copy, verify_checksums=True)
    with pytest.raises(CacheCorruptError, match=r"^shard-00000.h5 .* sha256 .*re-run dump-targets"):
        TargetCache(cache_copy).verify_checksums([0])
    TargetCache(cache_copy).verify_checksums([1, 2])  # the others are intact
    TargetCache(cache_copy.parent / "cache", verify_checksums=False)


# -- sizes -----------------------------------------------------------------------------------------


def test_plan_matches_the_files(caches):
    for (embedding, dtype), directory in caches.items():
        spec = make_spec(DATA["labels"], embedding=embedding, dtype=dtype)
        payload = 0
        for k in range(spec.num_shards()):
            with h5py.File(directory / shard_name(k)) as f:
                payload += sum(f[name].nbytes for name in f)
                assert all(f[name].chunks is None and f[name].compression is None for name in f)
        plan = spec.plan(DATA["labels"])
        assert plan["payload_bytes"] == payload
        on_disk = sum(p.stat().st_size for p in directory.glob(part_glob()))
        assert 0 < on_disk - payload < 3 * 24_000  # HDF5 headers + attributes: a few KiB per shard
    mean_positives = DATA["labels"].sum() / N
    plan = make_spec(DATA["labels"]).plan(DATA["labels"])
    assert plan["dense_emb_payload_bytes"] / plan["emb_payload_bytes"] == pytest.approx(C / mean_positives)


def test_overhead_is_small_for_real_sizes(tmp_path):
    rng = np.random.default_rng(3)
    n, c, v, d, e = 64, 20, 2, 1024, 96
    labels = (rng.random((n, c)) < 0.15).astype(np.uint8)
    spec = make_spec(
        labels, views=v, feature_dim=d, embed_dim=e, shard_size=n, dtype="float16", class_names=tuple(f"c{i}" for i in range(c))
    )
    buf = ShardBuffer(spec, 0, [str(i) for i in range(n)], labels)
    rows, views = np.repeat(np.arange(n), v), np.tile(np.arange(v), n)
    B = len(rows)
    buf.put(
        rows,
        views,
        view_seed=np.arange(B),
        fingerprint=np.arange(B),
        logits=rng.random((B, c)),
        features=rng.random((B, d)),
        label_emb=rng.random((B, c, e)),
    )
    size = write_shard(buf, tmp_path)["bytes"]
    plan = spec.plan(labels)
    assert plan["payload_bytes"] <= size < 1.05 * plan["payload_bytes"]
    assert plan["dense_payload_bytes"] > 2 * plan["payload_bytes"]


# -- processes -------------------------------------------------------------------------------------


class _CacheItems(torch.utils.data.Dataset):
    def __init__(self, cache: TargetCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        view = (i * 7) % self.cache.views
        out = self.cache.get([i], [view])
        return {
            "logits": out["logits"][0],
            "features": out["features"][0],
            "fingerprint": out["fingerprint"][0],
            "label_emb": self.cache.dense_label_emb([i], [view])[0],
            "pid": os.getpid(),
        }


def test_pickle_drops_handles(caches):
    cache = TargetCache(caches["positive", "float16"])
    idx, views = random_batch()
    before = cache.get(idx, views)
    assert cache._maps  # maps open in this process
    state = cache.__getstate__()
    assert state["_maps"] == {} and state["_pid"] is None
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000
    after = pickle.loads(blob).get(idx, views)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_dataloader_workers_match_main_process(caches):
    cache = TargetCache(caches["positive", "float16"])
    ds = _CacheItems(cache)
    main = [ds[i] for i in range(N)]  # opens maps in the parent before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    got = list(loader)
    pids = {int(p) for batch in got for p in batch["pid"]}
    assert os.getpid() not in pids and len(pids) == 2
    for name in ("logits", "features", "fingerprint", "label_emb"):
        assert torch.equal(torch.cat([b[name] for b in got]), torch.stack([m[name] for m in main])), name


def test_chunked_shard_falls_back_to_row_reads(cache_copy):
    """A shard rewritten with chunked datasets (no file offset) is still served, via h5py rows."""
    path = cache_copy / shard_name(1)
    chunked = path.with_suffix(".chunked")
    with h5py.File(path, "r") as src, h5py.File(chunked, "w") as dst:
        for name in src:
            data = src[name][()]
            dst.create_dataset(name, data=data, chunks=True if data.size else None, dtype=src[name].dtype)
        dst.attrs.update(dict(src.attrs))
    os.replace(chunked, path)
    manifest = json.loads((cache_copy / MANIFEST_NAME).read_text())
    manifest["shards"][1]["bytes"] = path.stat().st_size
    (cache_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    cache = TargetCache(cache_copy)
    assert not isinstance(cache._arrays(1)["features"], np.ndarray)
    idx, views = random_batch(seed=11)
    out = cache.get(idx, views)
    np.testing.assert_array_equal(out["features"].numpy(), DATA["features"][idx, views])
    sample, klass = np.nonzero(DATA["labels"][idx])
    np.testing.assert_array_equal(out["tokens"].numpy(), DATA["label_emb"][idx, views][sample, klass])
    tokens = torch.cat([t for t, _ in cache.iter_positive_tokens(view=2)])
    rows, klass = np.nonzero(DATA["labels"])
    np.testing.assert_array_equal(tokens.numpy(), DATA["label_emb"][rows, 2, klass])


def test_write_manifest_needs_every_shard(tmp_path):
    spec = make_spec(DATA["labels"])
    entry = write_shard(fill(spec, 0, DATA), tmp_path)
    with pytest.raises(ValueError, match=r"missing \[1, 2\]"):
        write_manifest(tmp_path, spec, [entry])
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_write_manifest_refuses_a_file_its_folder_lacks(tmp_path):
    """Entries for every shard, but one file is not in the folder (written on another node's
    disk) or has another size: no manifest."""
    spec = make_spec(DATA["labels"])
    entries = [write_shard(fill(spec, k, DATA), tmp_path) for k in range(spec.num_shards())]
    (tmp_path / entries[1]["file"]).unlink()
    with pytest.raises(CacheCorruptError, match=r"shard-00001.h5 is not in .* as it was written .*every process sees"):
        write_manifest(tmp_path, spec, entries)
    assert not (tmp_path / MANIFEST_NAME).exists()


@pytest.mark.parametrize("embedding", ["positive", "dense"])
def test_a_logits_only_cache_holds_and_returns_only_logits(embedding, tmp_path):
    """A teacher without features or label-wise embeddings (a plain classifier): its cache stores
    the logits, nothing zero-filled in place of the rest, and whatever needs the rest says so."""
    from mlkd_cache.cache.prototypes import load_or_compute_prototypes

    spec = build(tmp_path / "c", feature_dim=0, embed_dim=0, outputs=("logits",), embedding=embedding)
    manifest = json.loads((tmp_path / "c" / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 3 and manifest["spec"]["outputs"] == ["logits"]
    with h5py.File(tmp_path / "c" / "shard-00000.h5", "r") as f:
        assert set(f) == {"keys", "labels", "view_seed", "fingerprint", "logits"}
    cache = TargetCache(tmp_path / "c")
    assert cache.spec == spec and cache.format_version == 3 and cache.fingerprint_of == "uint8"
    idx, views = random_batch()
    got = cache.get(idx, views)
    assert set(got) == {"view_seed", "fingerprint", "logits"}
    np.testing.assert_array_equal(got["logits"].numpy(), DATA["logits"][idx, views])
    for call in (lambda: cache.dense_label_emb(idx, views), lambda: next(cache.iter_positive_tokens())):
        with pytest.raises(CacheMismatchError, match="needs the teacher's label-wise embeddings .* has none"):
            call()
    with pytest.raises(CacheMismatchError, match=r"class prototypes \(MPSCD\) needs the teacher's label-wise"):
        load_or_compute_prototypes(cache)
    buf = ShardBuffer(spec, 0, DATA["keys"][:20], DATA["labels"][:20])
    with pytest.raises(TypeError, match="label_emb None: the cache holds no embeddings"):
        buf.put(
            [0],
            [0],
            label_emb=DATA["label_emb"][:1, 0],
            view_seed=DATA["view_seed"][:1, 0],
            fingerprint=DATA["fingerprint"][:1, 0],
            logits=DATA["logits"][:1, 0],
        )
    with pytest.raises(TypeError, match="put\\(\\) takes the fields view_seed, fingerprint, logits"):
        buf.put(
            [0],
            [0],
            label_emb=None,
            view_seed=DATA["view_seed"][:1, 0],
            fingerprint=DATA["fingerprint"][:1, 0],
            logits=DATA["logits"][:1, 0],
            features=DATA["features"][:1, 0],
        )
