"""How much do two teachers disagree? Their cached probabilities over the same (sample, view) pairs.

    python benchmarks/teacher_agreement.py runs/kd-head/cache-v16 runs/kd-head/cache-b-v16

Prints, over every cached entry (samples x views x classes) of two caches of the same inputs:
the mean |p_A - p_B|, the share of entries on opposite sides of 0.5, and the Jensen term
J = H(mean p) - mean H(p) per sample (nats; the part of an ensemble's averaged MLD no student
can remove, docs/losses.md "Several teachers"), also times a logits weight ``--lambda``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from mlkd_cache.cache.format import inputs_difference
from mlkd_cache.cache.reader import TargetCache


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy per entry, nats (0 at p = 0 or 1)."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_a")
    parser.add_argument("cache_b")
    parser.add_argument("--lambda", dest="lam", type=float, default=10.0, help="MLD weight to scale J by (default 10)")
    args = parser.parse_args(argv)
    a, b = TargetCache(args.cache_a), TargetCache(args.cache_b)
    difference = inputs_difference(a.spec, b.spec)
    if difference is not None:
        sys.exit(f"error: the caches hold targets of other inputs: they differ in {difference}")
    n, v = a.spec.num_samples, a.spec.views
    sample, view = np.repeat(np.arange(n), v), np.tile(np.arange(v), n)
    pa = torch.sigmoid(a.get(sample, view)["logits"].double())
    pb = torch.sigmoid(b.get(sample, view)["logits"].double())
    jensen = (entropy((pa + pb) / 2) - (entropy(pa) + entropy(pb)) / 2).sum(1).mean().item()
    print(f"{pa.numel():,} entries ({n} samples x {v} views x {a.spec.num_classes} classes)")
    print(f"mean |p_A - p_B|        {(pa - pb).abs().mean().item():.4f}")
    print(f"opposite sides of 0.5   {100 * ((pa > 0.5) != (pb > 0.5)).double().mean().item():.2f} %")
    print(f"Jensen term J           {jensen:.4f} nats per sample; x lambda {args.lam:g} = {args.lam * jensen:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
