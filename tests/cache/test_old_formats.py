"""Caches written by earlier versions are still read, giving what those versions read from them
(tests/fixtures/cache-v2 and cache-v3, each with the code's own reading in expected.json;
cache-v1 in tests/engine/test_image_store.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.cache.replay import CachedViews

from ..conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"


@pytest.mark.parametrize("version", [2, 3])
def test_an_old_cache_reads_as_it_was_written(version):
    fixture = FIXTURES / f"cache-v{version}"
    expected = json.loads((fixture / "expected.json").read_text())
    cache = TargetCache(fixture / "cache", verify_checksums=True)
    assert cache.format_version == expected["format_version"] == version
    assert list(cache.spec.outputs) == expected["outputs"]
    n, views = cache.num_samples, cache.views
    got = cache.get(np.repeat(np.arange(n), views), np.tile(np.arange(views), n))
    assert {k: str(v.dtype) for k, v in got.items()} == expected["dtypes"]
    digests = {k: hashlib.sha256(np.ascontiguousarray(v.numpy()).tobytes()).hexdigest() for k, v in got.items()}
    assert digests == expected["sha256"]

    # a student's loader replays it: every view's fingerprint is the cached one
    replay = CachedViews.from_cache(fixture / "cache", replay_check=1.0)
    loader = torch.utils.data.DataLoader(replay, 8, sampler=replay.sampler(shuffle=False), collate_fn=replay.collate)
    for batch in loader:
        replay.targets(batch, "cpu")
    assert replay.checked == n
