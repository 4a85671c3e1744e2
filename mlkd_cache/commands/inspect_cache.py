"""``inspect``: what a cache holds, how big it is, and how good its cached logits are."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..cache.format import OUTPUT_SIZES
from ..cache.h5 import open_read
from ..cache.images import stored_jpeg_bytes
from ..cache.reader import TargetCache
from ..data.base import label_summary
from ..metrics import mean_average_precision


def run(cache_dir: Path, batch: int = 4096, verify_checksums: bool = True) -> Dict[str, Any]:
    """Summary of ``cache_dir`` with the mAP of each view's cached logits against the stored labels.
    ``verify_checksums`` first compares every shard's sha256 with the manifest."""
    cache = TargetCache(Path(cache_dir), verify_checksums=verify_checksums)
    spec = cache.spec
    manifest = cache.manifest
    stored_eval = manifest.get("eval") if spec.stores_images else None
    eval_bytes = int(sum(e["bytes"] for e in stored_eval["shards"])) if stored_eval else 0
    total = int(sum(s["bytes"] for s in manifest["shards"])) + eval_bytes
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
        **{size: getattr(spec, size) for size in OUTPUT_SIZES.values()},  # feature_dim, embed_dim
        "teacher_outputs": list(spec.outputs),
        "absent_outputs": list(spec.absent),
        "quantisation_error": cache.quantisation_error(),
        "teacher_arch": spec.teacher_arch,
        "teacher_sha256": spec.teacher_sha256,
        "dataset": f"{spec.dataset}/{spec.split}",
        "val_split": dict(spec.val_split),  # the val split held out of the train split ({} when none)
        "img_size": spec.img_size,
        "transform_hash": spec.transform_hash,
        "class_names": list(spec.class_names),
        "cached_logit_map_per_view": view_map,
        "labels": label_summary(spec.class_names, labels),
        "format_version": cache.format_version,
        "fingerprints_of": cache.fingerprint_of,
        "image_store": _store_summary(cache, eval_bytes),
    }


def _store_summary(cache: TargetCache, eval_bytes: int) -> Dict[str, Any]:
    """Mode, quality, images per split and the store's bytes (raw: exact; jpeg: the encoded bytes)."""
    spec = cache.spec
    if not spec.stores_images:
        return {"mode": "none"}
    train, held = cache.stored_split("train"), cache.stored_split("eval")
    if spec.images == "raw":
        image_bytes = int(spec.image_nbytes(len(train) + len(held), "raw") or 0)
    else:  # the JPEG bytes each file holds
        image_bytes = 0
        for split in (train, held):
            for path, _, _ in split.store.parts:
                with open_read(path) as f:
                    image_bytes += stored_jpeg_bytes(f)
    return {
        "mode": spec.images,
        "jpeg_quality": spec.jpeg_quality or None,
        "img_size": spec.img_size,
        "train_images": len(train),
        "eval_split": cache.eval_split,
        "eval_images": len(held),
        "image_bytes": image_bytes,
        "eval_file_bytes": eval_bytes,
    }
