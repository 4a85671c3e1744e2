"""Class prototypes of a cache: values, the stored file's reuse and invalidation, read-only caches."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlkd_cache import fileio
from mlkd_cache.cache import TargetCache
from mlkd_cache.cache import prototypes as proto_mod
from mlkd_cache.cache.prototypes import PROTOTYPES_NAME, compute_prototypes, load_or_compute_prototypes
from tests.cache.test_writer_reader import build, make_data

EMPTY_CLASS = 5

pytestmark = pytest.mark.numeric  # `make test-numeric` reruns it on the generic and AVX2 kernels


def data_with_empty_class(seed: int = 0) -> dict:
    data = make_data(seed)
    data["labels"][:, EMPTY_CLASS] = 0  # a class no sample carries
    return data


def loop_prototypes(data: dict) -> np.ndarray:
    """Reference: per class, the normalised mean over every (sample, view) carrying it."""
    labels, emb = data["labels"], data["label_emb"].astype(np.float64)  # emb [N, V, C, E]
    N, V, C, E = emb.shape
    out = np.zeros((C, E))
    for c in range(C):
        tokens = [emb[i, v, c] for i in range(N) if labels[i, c] for v in range(V)]
        if tokens:
            mean = np.mean(tokens, axis=0)
            out[c] = mean / np.linalg.norm(mean)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Read-only caches {embedding: directory} of the data with an empty class."""
    out = {}
    for embedding in ("positive", "dense"):
        d = tmp_path_factory.mktemp(f"proto_{embedding}")
        build(d, data_with_empty_class(), embedding=embedding)
        out[embedding] = d
    return out


@pytest.fixture
def cache_dir(built, tmp_path) -> Path:
    return Path(shutil.copytree(built["positive"], tmp_path / "cache"))


@pytest.mark.parametrize("embedding", ["positive", "dense"])
def test_prototypes_equal_loop_reference(built, embedding):
    got = compute_prototypes(TargetCache(built[embedding]), batch=7)  # small chunks: several per shard
    expected = loop_prototypes(data_with_empty_class())
    assert got.dtype == torch.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not got[EMPTY_CLASS].any()  # zero row for a class without positives


def test_prototypes_file_written_then_reused(cache_dir, monkeypatch):
    first = load_or_compute_prototypes(TargetCache(cache_dir))
    path = cache_dir / PROTOTYPES_NAME
    assert path.is_file() and not list(cache_dir.glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("prototypes recomputed although the stored file matches")

    monkeypatch.setattr(proto_mod, "compute_prototypes", fail)
    again = load_or_compute_prototypes(TargetCache(cache_dir))
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    stored = torch.load(path, weights_only=True)
    assert stored["provenance"]["teacher_sha256"] == TargetCache(cache_dir).spec.teacher_sha256


def test_prototypes_recomputed_for_another_cache(cache_dir, tmp_path):
    load_or_compute_prototypes(TargetCache(cache_dir))
    other = tmp_path / "other"
    other.mkdir()
    build(other, make_data(seed=3))  # other labels and embeddings
    shutil.copy(cache_dir / PROTOTYPES_NAME, other / PROTOTYPES_NAME)  # a stale file beside it
    got = load_or_compute_prototypes(TargetCache(other))
    np.testing.assert_allclose(got.numpy(), loop_prototypes(make_data(seed=3)), rtol=1e-5, atol=1e-6)
    rewritten = torch.load(other / PROTOTYPES_NAME, weights_only=True)
    torch.testing.assert_close(rewritten["prototypes"], got)


def test_prototypes_recomputed_over_a_corrupt_file(cache_dir):
    (cache_dir / PROTOTYPES_NAME).write_bytes(b"not a torch file")
    got = load_or_compute_prototypes(TargetCache(cache_dir))
    torch.testing.assert_close(got, compute_prototypes(TargetCache(cache_dir)))
    torch.testing.assert_close(torch.load(cache_dir / PROTOTYPES_NAME, weights_only=True)["prototypes"], got)


def test_prototypes_of_a_read_only_cache(cache_dir, monkeypatch, caplog):
    os.chmod(cache_dir, 0o555)
    try:
        if os.access(cache_dir, os.W_OK):  # root ignores permission bits: refuse the write as the OS would

            def refuse(*args, dir=None, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))

            monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
        with caplog.at_level(logging.WARNING, logger="mlkd_cache"):
            got = load_or_compute_prototypes(TargetCache(cache_dir))
    finally:
        os.chmod(cache_dir, 0o755)
    np.testing.assert_allclose(got.numpy(), loop_prototypes(data_with_empty_class()), rtol=1e-5, atol=1e-6)
    assert not (cache_dir / PROTOTYPES_NAME).exists()
    assert "cannot store prototypes" in caplog.text
