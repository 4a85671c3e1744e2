"""Planned cache size of every shipped config, computed by the code that writes the files.

For each config under ``configs/`` (teacher ``model_t``, ``embed_dim``, ``img_size``), each
dtype (float16, float32), each embedding mode (positive, dense) and 1, 4, 8 and 16 views, this
prints the payload of the cache ``dump-targets`` would write: :meth:`CacheSpec.plan`, the same
function ``dump-targets --dry-run`` calls and the writer's arrays follow (a test checks plan
against a real dump). HDF5 headers add a few KiB per shard on top.

The datasets themselves are not needed: the size depends on the labels only through the number
of positives per shard, so each dataset enters as (train images N, classes C, positives per
image P) as published (:mod:`mlkd_cache.data.planning`, the numbers ``dump-targets --dry-run``
uses without a data root; the digits numbers are measured on the embedded data). For
exact figures on your own copy run ``mlkd-cache dump-targets -c CONFIG --data-root DIR --dry-run``.

    python benchmarks/storage_plan.py [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from mlkd_cache.config import load_config, shipped_configs_dir
from mlkd_cache.data import build_dataset
from mlkd_cache.data.planning import planned_train_split
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.engine.dump import build_spec
from mlkd_cache.engine.teacher import planned_card

VIEWS = (1, 4, 8, 16)
DTYPES = ("float16", "float32")


def planned_data(cfg):
    """The train split of ``cfg`` for planning: the embedded digits' real labels, else the
    published split of :mod:`mlkd_cache.data.planning` (what ``--dry-run`` uses without data)."""
    if cfg.dataset == "digits":  # embedded: the real labels
        data = build_dataset("digits", "train", None, **cfg.dataset_para)
        data.source = "embedded digits, measured"
        return data
    return planned_train_split(cfg.dataset, **cfg.dataset_para)


def plan_config(path: Path) -> Dict[str, Any]:
    cfg = load_config(str(path))
    data = planned_data(cfg)
    teacher = planned_card(cfg, data.class_names)
    transform = TransformSpec.from_config(cfg)
    sizes = {}
    for dtype in DTYPES:
        cfg_dtype = load_config(str(path), {"cache.dtype": dtype})
        for views in VIEWS:
            plan = build_spec(cfg_dtype, teacher, "0" * 64, data, views, transform).plan(data.labels)
            sizes[f"{dtype}/V{views}"] = {"positive": plan["payload_bytes"], "dense": plan["dense_payload_bytes"]}
    return {
        "config": f"{path.parent.name}/{path.name}",
        "teacher": cfg.model_t,
        "D": teacher.feature_dim,
        "E": cfg.embed_dim,
        "N": len(data),
        "C": len(data.class_names),
        "positives_per_image": float(data.labels.sum()) / len(data),
        "data": data.source,
        "bytes": sizes,
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
            head = (
                f"`{r['config']}` | {r['teacher']} ({r['D']}, {r['E']}) | {r['N']:,} × {r['C']}, {r['positives_per_image']:.2f}"
                if views == VIEWS[0]
                else " | | "
            )
            print(
                f"| {head} | {views} | {human(b16['positive'])} | {human(b16['dense'])} | {human(b32['positive'])} | {human(b32['dense'])} |"
            )
    print()
    for source in dict.fromkeys(r["data"] for r in rows):
        print(f"- {source}")


if __name__ == "__main__":
    main()
