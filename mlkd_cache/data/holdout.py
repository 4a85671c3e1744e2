"""A held-out val split carved out of a train split: iterative stratification, written here.

``holdout_mask(labels, fraction, seed)`` chooses which samples of a multi-label train split form
the val split (config key ``val_split = dict(fraction=..., seed=...)``). The algorithm is the
iterative stratification of Sechidis, Tsoumakas & Vlahavas (2011, "On the stratification of
multi-label data", ECML PKDD), for two subsets (train ``1 - fraction``, val ``fraction``):

1. every subset *desires* ``fraction`` (val) or ``1 - fraction`` (train) of the samples, and of
   the positives of each class;
2. while samples are left, take the class with the fewest unassigned positives (the rarest
   first: a frequent class is easy to balance with what is left) and hand each of its unassigned
   samples, in a seeded random order, to the subset that desires that class most, ties to the
   subset that desires the most samples, then to a seeded coin; a sample given to a subset
   lowers that subset's desire for each of its classes by one;
3. samples without any label go to the subset that desires the most samples.

Two changes to the paper, both to serve small classes: a class with ``k >= 2`` positives desires
at least one positive in each subset (val's desire is clipped to ``[1, k - 1]``), and a last pass
moves, for each class with ``>= 2`` positives still absent from val (all its samples went to train
while rarer classes were placed), one of its train samples to val, the one with the fewest
labels whose every class keeps a positive in train; a class is left absent from val only when no
such sample exists. So every class with >= 2 positives that can be represented in val is.

Determinism: the mask is a function of (labels, fraction, seed) alone, bit for bit on every
platform. All desires are integers (``fraction`` as the exact ratio ``num / den`` with
``den <= 10**6``; desires counted in ``1/den`` of a sample), so no comparison rests on float
rounding. The random order of the samples, the order among equally rare classes and the coins
come from SplitMix64 (a fixed integer function of the seed and a counter), not from numpy's
``Generator``, whose streams numpy does not promise to keep across versions (NEP 19).

Why not the ``iterative-stratification`` package: the split decides which images a teacher, a
cache and every student may train on, and it is recorded in caches and model cards (fraction,
seed); it must never move when a dependency changes, and a dependency's release may change its
tie-breaking or its use of numpy's RNG. The algorithm is short; this module needs numpy only.

Cost: one pass over the samples in Python (the algorithm's own order: each decision reads the
desires the previous one left) with scalar integers, and numpy for everything per class (at most
``C`` rounds); 0.05-0.06 s for a COCO-sized ``[118287, 80]`` label matrix on one core
(docs/datasets.md).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["holdout_mask", "val_split_record", "describe_val_split", "MAX_DENOMINATOR"]

MAX_DENOMINATOR = 10**6  # fraction as num/den: 0.1 -> 1/10, 0.123457 -> 10288/83333
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
# the streams drawn from a seed, one per use
_SAMPLE_ORDER, _CLASS_ORDER, _COINS = 1, 2, 3


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on ``uint64 [n]`` (wrapping arithmetic): ``uint64 [n]``."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _stream(seed: int, use: int, n: int) -> np.ndarray:
    """``n`` pseudo-random ``uint64`` of stream ``use`` of ``seed``: SplitMix64 of
    ``base + (i + 1) * golden``, ``base`` a SplitMix64 of (seed, use)."""
    base = int(_splitmix64(np.array([(int(seed) * 4 + use) & _MASK64], dtype=np.uint64))[0])
    steps = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN)  # wraps, as SplitMix64 does
    return _splitmix64(steps + np.uint64(base))


def _order(seed: int, use: int, n: int) -> np.ndarray:
    """A seeded permutation of ``range(n)``, ``int64 [n]`` (stable sort of the stream: ties in
    64-bit values, were there any, keep index order)."""
    return np.argsort(_stream(seed, use, n), kind="stable")


def _ratio(fraction: float) -> Tuple[int, int]:
    """``fraction`` as ``(num, den)``, ``den <= MAX_DENOMINATOR`` (exact Python integer arithmetic)."""
    r = Fraction(float(fraction)).limit_denominator(MAX_DENOMINATOR)
    return r.numerator, r.denominator


class _Coins:
    """Seeded coin flips for double ties, drawn in blocks, the same sequence on every run."""

    def __init__(self, seed: int) -> None:
        self.seed, self.used, self.block = seed, 0, np.zeros(0, dtype=np.uint64)

    def flip(self) -> bool:
        if self.used == len(self.block):
            self.block = _stream(self.seed, _COINS, self.used + 64)  # a longer prefix of one stream
        bit = bool(self.block[self.used] >> np.uint64(63))
        self.used += 1
        return bit


def _deal(
    count: int, want: Optional[Tuple[int, int]], total: Tuple[int, int], den: int, coins: _Coins
) -> Tuple[np.ndarray, int, int]:
    """Step 2's decisions for ``count`` samples of one class, in order (step 3's with ``want``
    None): ``(to_val bool [count], val total desire, train total desire)`` after them. ``want``:
    (val, train) desire for the class, ``total``: (val, train) desire for samples, both in
    ``1/den`` of a sample."""
    a, b = want if want is not None else (0, 0)
    step = den if want is not None else 0  # unlabelled samples change no class's desire
    va, vb = total
    out = np.empty(count, dtype=bool)
    for k in range(count):
        if a != b:
            v = a > b
        elif va != vb:
            v = va > vb
        else:
            v = coins.flip()
        out[k] = v
        if v:
            a -= step
            va -= den
        else:
            b -= step
            vb -= den
    return out, va, vb


def holdout_mask(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Which samples form the val split: bool ``[N]``, True = val.

    ``labels``: ``[N, C]`` 0/1 (any integer or bool dtype); ``fraction`` in ``[0, 1)`` (0: an
    all-False mask); ``seed``: an int >= 0. About ``round(fraction * N)`` samples are chosen,
    stratified per class by iterative stratification (module doc); the same arguments give the
    same mask on every run and platform.
    """
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be [N, C], got shape {y.shape}")
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n, c = y.shape
    if n == 0 or float(fraction) == 0.0:
        return np.zeros(n, dtype=bool)
    num, den = _ratio(fraction)
    order = _order(seed, _SAMPLE_ORDER, n)  # position p holds sample order[p]
    y = y[order] != 0  # bool [N, C], samples in the seeded order
    y_cols = np.ascontiguousarray(y.T)  # bool [C, N]: a class's samples, one contiguous row
    counts = y.sum(axis=0, dtype=np.int64)  # [C]

    # desires in 1/den of a sample: val fraction * k, clipped to [1, k - 1] for k >= 2
    want_val = counts * num
    small = counts >= 2
    want_val[small] = np.clip(want_val[small], den, (counts[small] - 1) * den)
    want_train = counts * den - want_val
    total_val, total_train = n * num, n * (den - num)

    coins = _Coins(seed)
    class_rank = np.empty(c, dtype=np.int64)
    class_rank[_order(seed, _CLASS_ORDER, c)] = np.arange(c)  # ties among equally rare classes
    left = counts.copy()  # unassigned positives per class
    assigned = np.zeros(n, dtype=bool)
    to_val = np.zeros(n, dtype=bool)
    while True:
        live = np.flatnonzero(left > 0)
        if len(live) == 0:
            break
        cls = int(live[np.lexsort((class_rank[live], left[live]))[0]])  # rarest, then the seeded order
        idx = np.flatnonzero(y_cols[cls] & ~assigned)  # its unassigned samples, in the seeded order
        dest, total_val, total_train = _deal(
            len(idx), (int(want_val[cls]), int(want_train[cls])), (total_val, total_train), den, coins
        )
        rows_val, rows_train = idx[dest], idx[~dest]
        want_val -= y[rows_val].sum(axis=0, dtype=np.int64) * den
        want_train -= y[rows_train].sum(axis=0, dtype=np.int64) * den
        left -= y[idx].sum(axis=0, dtype=np.int64)
        assigned[idx] = True
        to_val[rows_val] = True
    idx = np.flatnonzero(~assigned)  # samples without labels: by the desire for samples alone
    if len(idx):
        dest, total_val, total_train = _deal(len(idx), None, (total_val, total_train), den, coins)
        to_val[idx[dest]] = True

    _represent_small_classes(y, to_val, counts)
    mask = np.empty(n, dtype=bool)
    mask[order] = to_val
    return mask


def _represent_small_classes(y: np.ndarray, to_val: np.ndarray, counts: np.ndarray) -> None:
    """The last pass (module doc), in place on ``to_val`` (bool ``[N]``) for ``y`` (bool ``[N, C]``,
    the seeded order): each class with >= 2 positives and none in val, rarest first, gets the
    train sample with the fewest labels (first in the seeded order) whose every class keeps a
    positive in train."""
    val_counts = y[to_val].sum(axis=0, dtype=np.int64)
    train_counts = counts - val_counts
    missing = np.flatnonzero((counts >= 2) & (val_counts == 0))
    for cls in missing[np.argsort(counts[missing], kind="stable")]:
        if val_counts[cls] > 0:  # a move for a rarer class brought one
            continue
        rows = np.flatnonzero(y[:, cls] & ~to_val)
        labels = y[rows]  # bool [r, C]
        keeps = ~(labels & (train_counts < 2)).any(axis=1)  # every class of the sample keeps one in train
        if not keeps.any():
            continue
        rows, labels = rows[keeps], labels[keeps]
        pick = int(np.argmin(labels.sum(axis=1)))  # fewest labels, first in the seeded order
        to_val[rows[pick]] = True
        moved = labels[pick].astype(np.int64)
        val_counts += moved
        train_counts -= moved


# --------------------------------------------------------------------------------------------
# The record of a split (config key val_split, cache spec, manifest)
# --------------------------------------------------------------------------------------------


def val_split_record(val_split: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The split a ``val_split`` config value carves, as caches record it: ``{}`` when off
    (fraction 0, or None), else ``{"fraction": float, "seed": int}``."""
    if not val_split or float(val_split.get("fraction", 0.0)) == 0.0:
        return {}
    return {"fraction": float(val_split["fraction"]), "seed": int(val_split.get("seed", 0))}


def describe_val_split(record: Optional[Mapping[str, Any]]) -> str:
    """``"val_split fraction=0.1 seed=0"``, or ``"no val_split"`` for an empty record."""
    record = val_split_record(record)
    if not record:
        return "no val_split"
    return f"val_split fraction={record['fraction']:g} seed={record['seed']}"
