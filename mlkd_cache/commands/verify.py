"""``verify``: re-run the teacher on sampled cached (sample, view) pairs and compare.

Checks, for K random pairs: the rebuilt input's 64-bit fingerprint equals the cached one
(replay still produces the same picture), and the teacher's logits, pooled features and
positive label-wise embeddings match the cached ones. A tensor passes when its largest absolute
error is within ``RTOL[dtype]`` of its largest magnitude and every row keeps cosine similarity
>= ``MIN_COSINE`` (fp16 storage rounds at 2^-11 relative, bfloat16 at 2^-8, int8 to half a step
of each row's scale, max|row| / 254, with a lower cosine floor; the tolerance also covers a dump
made with CUDA AMP and verified in fp32 on CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..cache.reader import TargetCache
from ..config import CACHE_DTYPES, Config
from ..data import build_dataset
from ..data.transforms import TransformSpec, to_unsigned
from ..data.views import ViewDataset
from ..device import amp_enabled, pick_device, place_model
from ..errors import CacheMismatchError
from ..runtime.scoring import forward
from ..runtime.teachers import TeacherSpec, open_teacher

RTOL = {dtype: 1e-3 if dtype == "float32" else 1e-2 for dtype in CACHE_DTYPES}  # of the largest magnitude
# Every row's cosine with the recomputed one. int8 rounds each row to max|row| / 254: a row with a
# few large entries (max/rms 50) keeps a cosine near 0.994, so int8 rows get a lower floor.
MIN_COSINE = 0.999
MIN_COSINE_INT8 = 0.99


def compare(name: str, ref: torch.Tensor, got: torch.Tensor, rtol: float, min_cosine: float = MIN_COSINE) -> Dict[str, Any]:
    """Max abs error and min row cosine of cached ``got`` against recomputed ``ref`` ([R, K])."""
    ref, got = ref.double().reshape(len(ref), -1), got.double().reshape(len(got), -1)
    if ref.numel() == 0:
        return {"tensor": name, "rows": 0, "max_abs_err": 0.0, "scale": 0.0, "min_cosine": 1.0, "ok": True}
    err = float((ref - got).abs().max())
    scale = float(ref.abs().max())
    cosine = float(torch.nn.functional.cosine_similarity(ref, got, dim=1, eps=1e-12).min())
    ok = err <= rtol * max(scale, 1e-12) and cosine >= min_cosine
    return {"tensor": name, "rows": len(ref), "max_abs_err": err, "scale": scale, "min_cosine": cosine, "ok": ok}


@torch.no_grad()
def run(
    cache_dir: Path,
    teacher: TeacherSpec,
    samples: int = 64,
    data_root: Optional[str] = None,
    seed: int = 0,
    batch_size: int = 32,
    verify_checksums: bool = True,
) -> Dict[str, Any]:
    """Re-run ``teacher`` (a teacher.pt or a factory ``package.module:function``, as ``--teacher``
    names it) on ``samples`` random cached (sample, view) pairs and compare; with
    ``verify_checksums`` every shard's sha256 is first compared with the manifest. The train
    split is the cache's image store, else rebuilt as the manifest records it (``made_with``),
    else (caches written before that record) from the teacher's config."""
    cache = TargetCache(Path(cache_dir), verify_checksums=verify_checksums)
    spec = cache.spec
    transform = TransformSpec.from_dict(spec.transform)
    device = pick_device()
    # a factory's card takes its input pipeline from a config: the cache's, at its input size
    loaded = open_teacher(teacher, Config.from_dict({"dataset": spec.dataset, "img_size": transform.img_size}))
    model = place_model(loaded.model, device)
    sha = loaded.sha256
    if sha != spec.teacher_sha256:
        raise CacheMismatchError(
            f"cache {cache_dir} was dumped from teacher sha256 {spec.teacher_sha256[:12]}…, {teacher} is "
            f"{sha[:12]}…; pass the teacher the cache was built with"
        )
    cfg = loaded.card.config_with(data_root=data_root or None)
    made = cache.manifest.get("made_with")
    if spec.stores_images:  # replay from the stored pixels: the store is what students read
        dataset: Any = cache.stored_split("train")
    elif isinstance(made, dict):  # the split as the dump built it
        root = data_root or made.get("data_root")
        params = dict(made.get("dataset_para") or {})
        dataset = build_dataset(
            spec.dataset,
            spec.split,
            root,
            bad_images=made.get("bad_images", "error"),
            workers=cfg.workers,
            val_split=spec.val_split,  # the dump's train split: the same val split held out
            **params,
        )
    elif loaded.card.factory is not None:
        raise CacheMismatchError(
            f"cache {cache_dir} does not record how its train split was built (dumped by mlkd-cache {spec.tool_version}) "
            f"and a factory teacher has no config to rebuild it from; re-run dump-targets with this version"
        )
    else:  # the cache names the dataset and split; the teacher's config the rest
        dataset = build_dataset(
            spec.dataset,
            spec.split,
            cfg.data_root,
            bad_images=cfg.bad_images,
            workers=cfg.workers,
            val_split=spec.val_split,
            **cfg.dataset_para,
        )
    cache.check_request(class_names=dataset.class_names, labels=dataset.labels)
    view_data = ViewDataset(
        dataset,
        transform,
        spec.base_seed,
        train=True,
        views=spec.views,
        with_fingerprint=True,
        image_dtype="uint8",
        fingerprint_of=cache.fingerprint_of,
    )

    rng = np.random.default_rng(seed)
    count = min(samples, spec.num_samples)
    indices = np.sort(rng.choice(spec.num_samples, size=count, replace=False)).astype(np.int64)
    views = rng.integers(0, spec.views, size=count).astype(np.int64)
    cached = cache.get(indices, views)

    amp = amp_enabled(cfg.amp, device)
    teacher_fields = [f for f in spec.view_fields if f.output is not None]  # logits, features (those the cache holds)
    recomputed: Dict[str, List[torch.Tensor]] = {f.name: [] for f in teacher_fields}
    label_emb: List[torch.Tensor] = []
    fingerprints: List[int] = []
    for lo in range(0, count, batch_size):
        items = [view_data.get(int(i), int(v)) for i, v in zip(indices[lo : lo + batch_size], views[lo : lo + batch_size])]
        fingerprints += [to_unsigned(int(item.fingerprint)) for item in items]
        out = forward(model, torch.stack([item.image for item in items]), transform, device, amp)
        for f in teacher_fields:
            recomputed[f.name].append(getattr(out, str(f.output)).float().cpu())
        if spec.has_embeddings:
            label_emb.append(out.label_emb.float().cpu())

    cached_fp = cached["fingerprint"].numpy().view(np.uint64)
    fp_mismatch = int((np.asarray(fingerprints, dtype=np.uint64) != cached_fp).sum())
    rtol = RTOL[spec.dtype]
    coded = MIN_COSINE_INT8 if spec.dtype == "int8" else MIN_COSINE  # features and embeddings (logits stay float16)
    rows = [
        compare(f.name, torch.cat(recomputed[f.name]), cached[f.name], rtol, coded if f.coded else MIN_COSINE)
        for f in teacher_fields
    ]
    if spec.has_embeddings and spec.layout.positive:
        ref_tokens = torch.cat(label_emb)[cached["token_sample"], cached["token_class"]]
        rows.append(compare("label_emb (positive)", ref_tokens, cached["tokens"], rtol, coded))
    elif spec.has_embeddings:
        rows.append(compare("label_emb (dense)", torch.cat(label_emb), cached["label_emb"], rtol, coded))
    return {
        "cache": str(cache_dir),
        "checksums_verified": verify_checksums,
        "pairs": count,
        "images": "from the cache's " + spec.images + " store" if spec.stores_images else "from the dataset folder",
        "fingerprint_mismatches": fp_mismatch,
        "rtol": rtol,
        "min_cosine": MIN_COSINE,
        "tensors": rows,
        "ok": fp_mismatch == 0 and all(r["ok"] for r in rows),
    }
