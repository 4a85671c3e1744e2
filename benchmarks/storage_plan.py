"""Planned cache size of every shipped config, computed by the code that writes the files.

For each config under ``configs/`` (teacher ``model_t``, ``embed_dim``, ``img_size``, its
``cache.views`` and distiller), each choice of stored outputs (``cache.fields``: ``auto``, what
the config's distiller reads, and every output the teacher gives) and each precision
(``cache.dtype``: float32, float16, bfloat16, int8), this prints the bytes per (sample, view)
and the whole payload of the cache ``dump-targets`` would write, positive embeddings:
:meth:`CacheSpec.plan`, the same function ``dump-targets --dry-run`` calls and the writer's
arrays follow (a test checks plan against a real dump). HDF5 headers add a few KiB per shard.

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
from typing import Any, Dict, Optional

from mlkd_cache.cli.common import human_size  # bytes per view as dump-targets --dry-run prints them
from mlkd_cache.commands.dump_targets import build_spec
from mlkd_cache.config import CACHE_DTYPES, load_config, shipped_configs_dir
from mlkd_cache.data import build_dataset
from mlkd_cache.data.planning import planned_train_split
from mlkd_cache.data.transforms import TransformSpec
from mlkd_cache.runtime.teachers import planned_card

FIELDS = {"auto": "auto", "all": ("logits", "features", "label_emb")}  # cache.fields: the default, and every output


def planned_data(cfg):
    """The train split of ``cfg`` for planning: the embedded digits' real labels, else the
    published split of :mod:`mlkd_cache.data.planning` (what ``--dry-run`` uses without data)."""
    if cfg.dataset == "digits":  # embedded: the real labels
        data = build_dataset("digits", "train", None, **cfg.dataset_para)
        data.source = "embedded digits, measured"
        return data
    return planned_train_split(cfg.dataset, **cfg.dataset_para)


def plan_config(path: Path) -> Optional[Dict[str, Any]]:
    """The plan of the shipped config ``path``; None for a dataset without a published split
    (csv: its size is known from its files only, ``--dry-run --data-root``)."""
    cfg = load_config(str(path))
    data = planned_data(cfg)
    if data is None:
        return None
    teacher = planned_card(cfg, data.class_names)
    transform = TransformSpec.from_config(cfg)
    views = int(cfg.cache["views"])
    sizes: Dict[str, Dict[str, Any]] = {}
    for fields_name, fields in FIELDS.items():
        for dtype in CACHE_DTYPES:
            cfg_k = load_config(str(path), {"cache.dtype": dtype, "cache.fields": fields})
            spec = build_spec(cfg_k, teacher, "0" * 64, data, views, transform)
            plan = spec.plan(data.labels)
            sizes[f"{fields_name}/{dtype}"] = {
                "outputs": list(spec.outputs),
                "bytes_per_view": plan["bytes_per_view"],
                "by_part": plan["bytes_per_view_by_part"],
                "payload": plan["payload_bytes"],
            }
    return {
        "config": f"{path.parent.name}/{path.name}",
        "teacher": cfg.model_t,
        "D": teacher.feature_dim,
        "E": cfg.embed_dim,
        "N": len(data),
        "C": len(data.class_names),
        "views": views,
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
    planned = {
        f"{path.parent.name}/{path.name}": plan_config(path) for path in sorted(root.glob("*/*.py")) if path.name != "__init__.py"
    }
    rows = [r for r in planned.values() if r is not None]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    dtypes = " | ".join(CACHE_DTYPES)
    print(f"| config | teacher (D, E) | N × C, P/image | V | stored outputs | {dtypes} |")
    print("|---|---|---|---:|---|" + "---:|" * len(CACHE_DTYPES))
    for r in rows:
        for fields_name in FIELDS:
            cells = [r["bytes"][f"{fields_name}/{dtype}"] for dtype in CACHE_DTYPES]
            head = (
                f"`{r['config']}` | {r['teacher']} ({r['D']}, {r['E']}) | {r['N']:,} × {r['C']}, {r['positives_per_image']:.2f} | {r['views']}"
                if fields_name == "auto"
                else " | | |"
            )
            outputs = ", ".join(cells[0]["outputs"]) + (" (auto)" if fields_name == "auto" else "")
            sizes = " | ".join(f"{human_size(c['bytes_per_view'])} ({human(c['payload'])})" for c in cells)
            print(f"| {head} | {outputs} | {sizes} |")
    print()
    for source in dict.fromkeys(r["data"] for r in rows):
        print(f"- {source}")
    for name in (name for name, r in planned.items() if r is None):
        print(f"- `{name}`: a csv dataset, planned from its files only (`--dry-run --data-root DIR`)")


if __name__ == "__main__":
    main()
