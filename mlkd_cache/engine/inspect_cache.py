"""``inspect``: what a cache holds, how big it is, and how good its cached logits are."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..cache.reader import TargetCache
from ..metrics import mean_average_precision


def run(cache_dir: Path, batch: int = 4096, verify_checksums: bool = True) -> Dict[str, Any]:
    """Summary of ``cache_dir`` with the mAP of each view's cached logits against the stored labels.
    ``verify_checksums`` first compares every shard's sha256 with the manifest."""
    cache = TargetCache(Path(cache_dir), verify_checksums=verify_checksums)
    spec = cache.spec
    manifest = cache.manifest
    total = int(sum(s["bytes"] for s in manifest["shards"]))
    labels = cache.labels
    view_map = []
    for view in range(spec.views):
        parts = []
        for lo in range(0, spec.num_samples, batch):
            idx = np.arange(lo, min(lo + batch, spec.num_samples), dtype=np.int64)
            parts.append(cache.get(idx, np.full_like(idx, view))["logits"].float().numpy())
        view_map.append(mean_average_precision(np.concatenate(parts), labels))
    return {
        "cache": str(cache_dir),
        "checksums_verified": verify_checksums,
        "samples": spec.num_samples,
        "views": spec.views,
        "shards": len(manifest["shards"]),
        "total_bytes": total,
        "bytes_per_sample": total / max(spec.num_samples, 1),
        "bytes_per_view": total / max(spec.num_samples * spec.views, 1),
        "embedding": spec.embedding,
        "dtype": spec.dtype,
        "positive_tokens": int(labels.sum()),
        "num_classes": spec.num_classes,
        "feature_dim": spec.feature_dim,
        "embed_dim": spec.embed_dim,
        "teacher_arch": spec.teacher_arch,
        "teacher_sha256": spec.teacher_sha256,
        "dataset": f"{spec.dataset}/{spec.split}",
        "img_size": spec.img_size,
        "transform_hash": spec.transform_hash,
        "class_names": list(spec.class_names),
        "cached_logit_map_per_view": view_map,
    }
