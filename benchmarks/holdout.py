"""How long carving a val split takes: ``holdout_mask`` on a COCO-sized label matrix.

A random ``[118287, 80]`` label matrix with COCO's label density (2.9 labels per image, class
frequencies falling as a power law), fraction 0.1: the median of ``--repeat`` runs after one
warm-up, in one process (the algorithm runs on one core), and how close each class's val share
comes to the fraction.

    python benchmarks/holdout.py [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import measure, stamp, stamp_line  # noqa: E402

from mlkd_cache.data.holdout import holdout_mask  # noqa: E402


def coco_sized_labels(seed: int = 0) -> np.ndarray:
    """``uint8 [118287, 80]``: COCO 2017 train's size and label density, a power-law class frequency."""
    rng = np.random.default_rng(seed)
    p = 0.2 / np.arange(1, 81) ** 0.9
    return (rng.random((118287, 80)) < p * (2.9 / p.sum())).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    labels = coco_sized_labels()
    timing = measure(lambda: holdout_mask(labels, 0.1, 0), warmup=1, repeat=args.repeat)
    mask = holdout_mask(labels, 0.1, 0)
    share = labels[mask].sum(0) / labels.sum(0)
    result = {
        "images": int(labels.shape[0]),
        "classes": int(labels.shape[1]),
        "median_s": timing.median,
        "held_out": int(mask.sum()),
        "class_share_min": float(share.min()),
        "class_share_max": float(share.max()),
        "stamp": stamp(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(stamp_line())
        print(
            f"holdout_mask on a {result['images']:,} x {result['classes']} label matrix, fraction 0.1: "
            f"{result['median_s']:.3f} s (median of {args.repeat}); {result['held_out']:,} held out; "
            f"every class's val share in {result['class_share_min']:.3f}-{result['class_share_max']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
