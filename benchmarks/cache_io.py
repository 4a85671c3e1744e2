"""Target-cache I/O: shard write speed, random batch reads vs a plain in-memory gather, size on disk.

COCO-like synthetic shards (C=80, E=768, D=2048, V=8, float16, positive mode) whose label sets
are those of the first N images of the real COCO val annotation file. Everything is measured
side by side in one run and printed as a table of values, ratios and goals (reported, not
asserted). The temporary cache directory is deleted at the end.

    python benchmarks/cache_io.py                  # N = 4096 (one shard, ~0.3 GB on disk)
    python benchmarks/cache_io.py --samples 8192 --dir /fast/disk --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import format_table, measure  # noqa: E402

from mlkd_cache.cache import CacheSpec, ShardBuffer, TargetCache, labels_digest, write_manifest, write_shard  # noqa: E402
from mlkd_cache.cache.h5 import open_read  # noqa: E402

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco2014_val_anno.json"
C, E, D = 80, 768, 2048
GOALS = {"read_samples_s": 20_000, "read_vs_copy": 0.5, "overhead": 0.05, "dense_vs_positive": 20.0}


def coco_labels(n: int, path: Path) -> np.ndarray:
    """uint8 [n, 80]: the label sets of the first n images (cycled if the file has fewer)."""
    records = json.loads(Path(path).read_text())
    y = np.zeros((n, C), np.uint8)
    for i in range(n):
        y[i, records[i % len(records)]["labels"]] = 1
    return y


def make_spec(labels: np.ndarray, views: int, shard_size: int) -> CacheSpec:
    return CacheSpec(
        num_samples=len(labels),
        views=views,
        num_classes=C,
        feature_dim=D,
        embed_dim=E,
        dtype="float16",
        embedding="positive",
        shard_size=shard_size,
        class_names=tuple(f"class_{c}" for c in range(C)),
        dataset="coco-synthetic",
        split="train",
        img_size=448,
        transform={"name": "benchmark"},
        transform_hash="0" * 16,
        normalisation={"mean": [0.0] * 3, "std": [1.0] * 3},
        base_seed=0,
        teacher_arch="synthetic",
        teacher_sha256="0" * 64,
        labels_sha256=labels_digest(labels),
    )


def fill_buffer(spec: CacheSpec, k: int, labels: np.ndarray, rng: np.random.Generator, batch: int = 256) -> ShardBuffer:
    """Put every (sample, view) of shard k in batches, like the dump engine, with random fp16 values."""
    start, stop = spec.shard_range(k)
    buf = ShardBuffer(spec, k, [f"COCO_{i:012d}.jpg" for i in range(start, stop)], labels[start:stop])
    pool = rng.standard_normal(1 << 23, dtype=np.float32).astype(np.float16)  # 16 MiB of values to slice from
    for v in range(spec.views):
        for lo in range(0, stop - start, batch):
            rows = np.arange(lo, min(lo + batch, stop - start))
            B = len(rows)
            off = int(rng.integers(0, len(pool) // 2))
            window = pool[off:]
            logits = window[: B * C].reshape(B, C)
            features = window[: B * D].reshape(B, D)
            # [B, C, E] without materialising B*C*E values: overlapping strided windows of the pool
            label_emb = np.lib.stride_tricks.as_strided(window, shape=(B, C, E), strides=(2 * 1021, 2 * 97, 2))
            seeds = rng.integers(0, 2**63, B, dtype=np.int64)
            buf.put(
                rows,
                np.full(B, v),
                view_seed=seeds,
                fingerprint=seeds ^ 0x5A5A,
                logits=logits,
                features=features,
                label_emb=label_emb,
            )
    return buf


def token_plan(offsets: np.ndarray, idx: np.ndarray, views: np.ndarray):
    starts, counts = offsets[idx], offsets[idx + 1] - offsets[idx]
    first = np.cumsum(counts) - counts
    rows = np.repeat(starts - first, counts) + np.arange(counts.sum())
    return rows, np.repeat(views, counts)


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    labels = coco_labels(args.samples, args.annotations)
    spec = make_spec(labels, args.views, args.shard_size or args.samples)
    plan = spec.plan(labels)
    root = Path(tempfile.mkdtemp(prefix="mlkd-cache-io-", dir=args.dir))
    try:
        # -- fill + write ----------------------------------------------------------------------
        entries, write_s, fill_s = [], [], 0.0
        for k in range(spec.num_shards()):
            t0 = time.perf_counter()
            buf = fill_buffer(spec, k, labels, rng)
            fill_s += time.perf_counter() - t0
            timing = measure(lambda b=buf: entries.append(write_shard(b, root)), warmup=0, repeat=args.write_repeat)
            write_s.append(timing.median)
            del buf
        entries = list({e["index"]: e for e in entries}.values())
        write_manifest(root, spec, entries)
        disk_bytes = sum(e["bytes"] for e in entries)

        # -- random batch reads vs an in-memory gather of the same bytes ----------------------
        cache = TargetCache(root)
        B, nb = args.batch, args.batches
        batches = [(rng.integers(0, spec.num_samples, B), rng.integers(0, spec.views, B)) for _ in range(nb)]
        read_bytes = 0  # bytes of the cached tensors returned by one pass (counted outside the timing)
        for idx, views in batches:
            out = cache.get(idx, views)
            read_bytes += sum(
                out[k].numel() * out[k].element_size() for k in ("logits", "features", "tokens", "view_seed", "fingerprint")
            )

        def read_all():
            for idx, views in batches:
                cache.get(idx, views)

        read = measure(read_all, warmup=1, repeat=args.repeat)

        # the same datasets held in RAM, shards concatenated (token offsets shifted accordingly)
        mem = {name: [] for name in ("logits", "features", "emb", "view_seed", "fingerprint")}
        offsets, base = [], 0
        for entry in sorted(entries, key=lambda e: e["index"]):
            with open_read(root / entry["file"]) as f:
                for name in mem:
                    mem[name].append(f[name][()])
                offsets.append(f["emb_offsets"][:-1] + base)
                base += len(f["emb_class"])
        arrays = {name: np.concatenate(parts) for name, parts in mem.items()}
        emb_offsets = np.concatenate(offsets + [np.array([base])])
        plans = [token_plan(emb_offsets, idx, v) for idx, v in batches]

        def copy_all():
            for (idx, v), (rows, tv) in zip(batches, plans):
                arrays["logits"][idx, v]
                arrays["features"][idx, v]
                arrays["emb"][rows, tv]
                arrays["view_seed"][idx, v]
                arrays["fingerprint"][idx, v]

        copy = measure(copy_all, warmup=1, repeat=args.repeat)
        mem.clear()  # free the in-RAM copy
        arrays.clear()

        read_sps = read.rate(B * nb)
        read_mbs = read_bytes / read.median / 1e6
        copy_mbs = read_bytes / copy.median / 1e6
        result = {
            "samples": spec.num_samples,
            "views": spec.views,
            "shards": spec.num_shards(),
            "batch": B,
            "batches": nb,
            "fill_pairs_s": spec.num_samples * spec.views / fill_s,
            "write_mb_s": disk_bytes / sum(write_s) / 1e6,
            "read_samples_s": read_sps,
            "read_mb_s": read_mbs,
            "copy_mb_s": copy_mbs,
            "read_vs_copy": read_mbs / copy_mbs,
            "bytes_per_read_sample": read_bytes / (B * nb),
            "disk_bytes": disk_bytes,
            "payload_bytes": plan["payload_bytes"],
            "overhead": disk_bytes / plan["payload_bytes"] - 1,
            "dense_payload_bytes": plan["dense_payload_bytes"],
            "dense_vs_positive": plan["dense_emb_payload_bytes"] / plan["emb_payload_bytes"],
            "dense_vs_positive_total": plan["dense_payload_bytes"] / plan["payload_bytes"],
            "mean_positives": plan["positive_tokens"] / spec.num_samples,
            "read_timing": read.as_dict(),
            "copy_timing": copy.as_dict(),
        }
        result["goals"] = {
            "read_samples_s": result["read_samples_s"] >= GOALS["read_samples_s"],
            "read_vs_copy": result["read_vs_copy"] >= GOALS["read_vs_copy"],
            "overhead": result["overhead"] <= GOALS["overhead"],
            "dense_vs_positive": result["dense_vs_positive"] >= GOALS["dense_vs_positive"],
        }
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(r: dict) -> str:
    ok = lambda key: "PASS" if r["goals"][key] else "FAIL"  # noqa: E731
    mb = lambda b: f"{b / 1e6:,.1f} MB"  # noqa: E731
    rows = [
        ("fill (ShardBuffer.put)", f"{r['fill_pairs_s']:,.0f} sample-views/s", "", ""),
        ("write (write_shard, incl. fsync + sha256)", f"{r['write_mb_s']:,.0f} MB/s", "", ""),
        (
            f"read TargetCache.get, batch {r['batch']}",
            f"{r['read_samples_s']:,.0f} samples/s",
            f">= {GOALS['read_samples_s']:,}",
            ok("read_samples_s"),
        ),
        ("read bandwidth", f"{r['read_mb_s']:,.0f} MB/s", "", ""),
        ("in-memory numpy gather, same pattern", f"{r['copy_mb_s']:,.0f} MB/s", "", ""),
        ("read / in-memory gather", f"{r['read_vs_copy']:.0%}", f">= {GOALS['read_vs_copy']:.0%}", ok("read_vs_copy")),
        ("on disk vs payload", f"{mb(r['disk_bytes'])} vs {mb(r['payload_bytes'])}", "", ""),
        ("file overhead", f"{r['overhead']:.3%}", f"<= {GOALS['overhead']:.0%}", ok("overhead")),
        (
            f"label embeddings dense / positive (C / {r['mean_positives']:.2f})",
            f"{r['dense_vs_positive']:.1f}x",
            f">= {GOALS['dense_vs_positive']:.0f}x",
            ok("dense_vs_positive"),
        ),
        ("whole cache dense / positive", f"{r['dense_vs_positive_total']:.1f}x ({mb(r['dense_payload_bytes'])})", "", ""),
    ]
    head = (
        f"cache_io: {r['samples']} samples x {r['views']} views, {r['shards']} shard(s), C={C} D={D} E={E} float16 "
        f"positive; {r['batches']} random batches of {r['batch']} ({r['bytes_per_read_sample']:,.0f} B/sample)"
    )
    return head + "\n" + format_table(rows, ["metric", "value", "goal", "status"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--samples", type=int, default=4096, help="N images (label sets of the first N COCO val images)")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=0, help="samples per shard (0: all in one shard)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=400, help="random batches per timed run")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of all batches (median reported)")
    p.add_argument("--write-repeat", type=int, default=2, help="timed writes of each shard (median)")
    p.add_argument("--dir", default=None, help="parent of the temporary cache directory (default: system temp)")
    p.add_argument("--annotations", type=Path, default=ANNOTATIONS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
