"""What persistent DataLoader workers save a student per epoch: start-up and epoch time, side by side.

``distill-student`` used to start its DataLoader workers again every epoch, since the epoch
(which picks each sample's cached view) lived in the dataset and only reached workers created
after ``set_epoch``. Its indices now carry their epoch (``EpochSampler``), so the workers persist.
This script replays the digits students' train split (the shipped config: 1,000 canvases at 64 px,
batch 32, 16 cached views) with the same sampler, both ways, in one run:

* start-up: seconds from ``iter(loader)`` to the first batch, in the epochs after the first
  (the first starts the workers either way);
* epoch: seconds to iterate one whole epoch (no model: the loader's own cost).

Each row is the median over ``--epochs - 1`` epochs, interleaved over ``--rounds`` rounds of each
setting; the last column divides the non-persistent figure by the persistent one.

    python benchmarks/loader_startup.py [--workers 2 4] [--epochs 6] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import format_table  # noqa: E402

from mlkd_cache.config import load_config  # noqa: E402
from mlkd_cache.data import dataset_from_config  # noqa: E402
from mlkd_cache.data.sampler import EpochSampler  # noqa: E402
from mlkd_cache.data.transforms import TransformSpec  # noqa: E402
from mlkd_cache.data.views import ViewDataset  # noqa: E402

CONFIG = "digits/resnet10t_to_test_resnet_l2d.py"


def one_run(views: ViewDataset, batch: int, workers: int, persistent: bool, epochs: int) -> Dict[str, List[float]]:
    """Start-up and whole-epoch seconds of each epoch after the first."""
    loader = DataLoader(
        views,
        batch,
        sampler=EpochSampler(views, seed=0),
        drop_last=True,
        num_workers=workers,
        persistent_workers=persistent,
        generator=torch.Generator().manual_seed(0),
    )
    startup, epoch_s = [], []
    for epoch in range(epochs):
        started = time.perf_counter()
        it = iter(loader)
        next(it)
        first = time.perf_counter() - started
        for _ in it:
            pass
        if epoch:  # the first epoch starts the workers in both settings
            startup.append(first)
            epoch_s.append(time.perf_counter() - started)
    del loader
    return {"startup": startup, "epoch": epoch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(CONFIG)
    views = ViewDataset(
        dataset_from_config(cfg, "train"), TransformSpec.from_config(cfg), cfg.seed, train=True, views=int(cfg.cache["views"])
    )
    results: Dict[str, Dict[str, List[float]]] = {}
    for _ in range(args.rounds):
        for workers in args.workers:
            for persistent in (False, True):
                key = f"{workers}:{persistent}"
                run = one_run(views, cfg.batch_size, workers, persistent, args.epochs)
                for name, values in run.items():
                    results.setdefault(key, {}).setdefault(name, []).extend(values)
    rows, record = [], {}
    for workers in args.workers:
        med = {p: {n: statistics.median(v) for n, v in results[f"{workers}:{p}"].items()} for p in (False, True)}
        record[str(workers)] = med
        for name in ("startup", "epoch"):
            before, after = med[False][name], med[True][name]
            rows.append([str(workers), name, f"{before * 1000:.1f}", f"{after * 1000:.1f}", f"{before / after:.2f}x"])
    if args.json:
        print(json.dumps({"config": CONFIG, "samples": len(views), "batch": cfg.batch_size, "median_s": record}))
        return
    print(f"{CONFIG}: {len(views)} samples, batch {cfg.batch_size}, {args.epochs - 1} epochs x {args.rounds} rounds (median ms)")
    print(format_table(rows, ["workers", "what", "new workers/epoch", "persistent", "ratio"]))


if __name__ == "__main__":
    main()
