"""Are two run folders numerically identical? For refactors that must not change a number.

Run the same commands with two versions of the code into two folders, then::

    python tools/compare_runs.py RUN_A RUN_B

It walks both folders and compares, file by file:

* HDF5 shards: every dataset's dtype, shape and bytes, and every attribute except the shard's
  ``created`` time;
* checkpoints (``*.pt``): every tensor bit for bit, and the other entries except folders and the
  cache's digest; a model checkpoint's card is compared as the card it reads as, so a checkpoint
  of format 1 (the card's entries at its top level) compares with one of format 2 (a teacher's
  ``teacher_sha256`` still differs: it is the sha256 of the teacher.pt file);
* ``metrics.jsonl`` / ``steps.jsonl``: every value except times and throughput;
* ``manifest.json``: everything except the shard sha256 sums (they cover ``created``);
* ``prototypes.pt``: the prototypes bit for bit.

It prints one line per difference and exits 1 when there is any, 0 when none.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, List

import numpy as np
import torch

from mlkd_cache.cache.h5 import open_read
from mlkd_cache.runtime.checkpoint import CHECKPOINT_FORMAT, model_entries, read_card

# Entries that differ between two runs of the same code: clocks, folders, and digests of files
# that hold a creation time (a shard's sha256 covers its ``created`` attribute).
VOLATILE_KEYS = {"created", "seconds", "out", "source", "steps_log", "tool_version", "sha256", "cache_sha256", "shards_sha256"}
VOLATILE_SUFFIXES = ("_time_s", "_per_s")


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith(VOLATILE_SUFFIXES)


def _same(a: Any, b: Any, where: str) -> Iterator[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            yield f"{where}: tensor vs {type(b).__name__}"
        elif (
            a.dtype != b.dtype
            or a.shape != b.shape
            or not torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))
        ):
            yield f"{where}: tensors differ"
    elif isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if _volatile(str(key)):
                continue
            if key not in a or key not in b:
                yield f"{where}.{key}: only in {'B' if key not in a else 'A'}"
            else:
                yield from _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            yield f"{where}: {len(a)} vs {len(b)} entries"
        for k, (x, y) in enumerate(zip(a, b)):
            yield from _same(x, y, f"{where}[{k}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            yield f"{where}: arrays differ"
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
        yield f"{where}: {a!r} vs {b!r}"


def _h5(a: Path, b: Path, where: str) -> Iterator[str]:
    with open_read(a) as fa, open_read(b) as fb:  # without file locks, as every reader of a cache
        yield from _same({k: v for k, v in fa.attrs.items()}, {k: v for k, v in fb.attrs.items()}, f"{where} attrs")
        names_a, names_b = set(fa.keys()), set(fb.keys())
        if names_a != names_b:
            yield f"{where}: datasets {sorted(names_a ^ names_b)} in one file only"
        for name in sorted(names_a & names_b):
            x, y = fa[name][()], fb[name][()]
            if x.dtype == object:  # variable-length strings: compare the values, not the pointers
                same = x.shape == y.shape and x.tolist() == y.tolist()
            else:
                same = x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
            if not same:
                yield f"{where}/{name}: bytes differ"


def _checkpoint(path: Path) -> Any:
    """A ``.pt`` file's contents; a model checkpoint's card as the card it reads as (any format
    version), beside its other entries."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or not ("card" in obj or "transform" in obj):
        return obj
    return {**model_entries(obj), "card": read_card(obj, path).to_dict()}


def _jsonl(path: Path) -> List[Any]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(a: Path, b: Path) -> List[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"{p}: only in {'A' if p in files_a else 'B'}" for p in sorted(files_a ^ files_b)]
    for rel in sorted(files_a & files_b):
        fa, fb, where = a / rel, b / rel, str(rel)
        if rel.suffix == ".h5":
            problems += list(_h5(fa, fb, where))
        elif rel.suffix == ".pt":
            problems += list(_same(_checkpoint(fa), _checkpoint(fb), where))
        elif rel.suffix == ".jsonl":
            problems += list(_same(_jsonl(fa), _jsonl(fb), where))
        elif rel.suffix == ".json":
            problems += list(_same(json.loads(fa.read_text()), json.loads(fb.read_text()), where))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    problems = compare(args.run_a, args.run_b)
    for line in problems:
        print(line)
    checked = sum(1 for p in args.run_a.rglob("*") if p.is_file())
    print(f"{len(problems)} difference(s) over {checked} files of {args.run_a} and {args.run_b}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
