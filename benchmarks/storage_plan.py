"""Planned cache size of every shipped config, computed by the code that writes the files.

For each config under ``configs/`` (teacher ``model_t``, ``embed_dim``, ``img_size``), each
dtype (float16, float32), each embedding mode (positive, dense) and 1, 4, 8 and 16 views, this
prints the payload of the cache ``dump-targets`` would write: :meth:`CacheSpec.plan`, the same
function ``dump-targets --dry-run`` calls and the writer's arrays follow (a test checks plan
against a real dump). HDF5 headers add a few KiB per shard on top.

The datasets themselves are not needed: the size depends on the labels only through the number
of positives per shard, so each dataset enters as (train images N, classes C, positives per
image P) from :data:`DATASET_STATS` (the digits numbers are measured on the embedded data). For
exact figures on your own copy run ``mlkd-cache dump-targets -c CONFIG --data-root DIR --dry-run``.

    python benchmarks/storage_plan.py [--json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

from mlkd_cache.cache.format import planning_labels
from mlkd_cache.config import load_config, shipped_configs_dir
from mlkd_cache.data import build_dataset
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.engine.dump import build_spec, planned_teacher

# (train images N, classes C, positives per image P, where the numbers come from)
DATASET_STATS: Dict[str, tuple] = {
    "voc": (5011, 20, 1.46, "VOC 2007 trainval; P approximate"),
    "coco": (82081, 80, 2.905, "COCO 2014 train as in L2D's train_anno.json; P measured on its val file (40,137 images)"),
    "nus": (161789, 81, 2.4, "NUS-WIDE 81 concepts, the official TrainImagelist.txt the loader reads; P approximate"),
}
VIEWS = (1, 4, 8, 16)
DTYPES = ("float16", "float32")


class _PlannedData:
    """What :func:`build_spec` reads of a dataset: class names and labels."""

    def __init__(self, class_names: List[str], labels) -> None:
        self.class_names, self.labels = class_names, labels

    def __len__(self) -> int:
        return len(self.labels)


def planned_data(cfg) -> tuple:
    """(dataset stand-in, provenance) for ``cfg``'s train split."""
    if cfg.dataset == "digits":  # embedded: the real labels
        data = build_dataset("digits", "train", None, **cfg.dataset_para)
        return _PlannedData(data.class_names, data.labels), "embedded digits, measured"
    n, c, p, where = DATASET_STATS[cfg.dataset]
    return _PlannedData([f"class{i}" for i in range(c)], planning_labels(n, c, p)), where


def plan_config(path: Path) -> Dict[str, Any]:
    cfg = load_config(str(path))
    data, where = planned_data(cfg)
    teacher = planned_teacher(cfg, data.class_names)
    transform = TransformSpec.from_config(cfg)
    sizes = {}
    for dtype in DTYPES:
        cfg_dtype = load_config(str(path), {"cache.dtype": dtype})
        for views in VIEWS:
            plan = build_spec(cfg_dtype, teacher, "0" * 64, data, views, transform).plan(data.labels)
            sizes[f"{dtype}/V{views}"] = {"positive": plan["payload_bytes"], "dense": plan["dense_payload_bytes"]}
    return {
        "config": f"{path.parent.name}/{path.name}", "teacher": cfg.model_t, "D": teacher["feature_dim"],
        "E": cfg.embed_dim, "N": len(data), "C": len(data.class_names), "positives_per_image": float(data.labels.sum()) / len(data),
        "data": where, "bytes": sizes,
    }


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    root = shipped_configs_dir()
    rows = [plan_config(path) for path in sorted(root.glob("*/*.py")) if path.name != "__init__.py"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| config | teacher (D, E) | N × C, P/image | views | fp16 positive | fp16 dense | fp32 positive | fp32 dense |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for views in VIEWS:
            b16, b32 = r["bytes"][f"float16/V{views}"], r["bytes"][f"float32/V{views}"]
            head = (f"`{r['config']}` | {r['teacher']} ({r['D']}, {r['E']}) | {r['N']:,} × {r['C']}, {r['positives_per_image']:.2f}"
                    if views == VIEWS[0] else " | | ")
            print(f"| {head} | {views} | {human(b16['positive'])} | {human(b16['dense'])} | {human(b32['positive'])} | {human(b32['dense'])} |")
    print()
    for name, (n, c, p, where) in DATASET_STATS.items():
        print(f"{name}: N={n:,}, C={c}, P={p} ({where})")


if __name__ == "__main__":
    main()
