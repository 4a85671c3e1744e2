"""Statistics over seeds: mean ± std of repeated runs and paired per-seed differences.

A KD result is a difference to a baseline trained with the same seeds (the same initialisation
and sample order), so it is compared seed by seed: :func:`paired` takes ``{seed: value}`` of
both and returns the per-seed differences, their mean and std, and the two-sided 95% Student-t
interval of the mean. ``demo`` and ``benchmarks/kd_study.py`` both report it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, Mapping, Sequence

__all__ = ["paired", "summarise", "t_critical"]


def t_critical(n: int) -> float:
    """Two-sided 95% quantile of Student's t with n - 1 degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn

    return float(t.ppf(0.975, n - 1))


def summarise(values: Sequence[float]) -> Dict[str, float]:
    """``{"mean", "std"}`` of ``values`` (sample std, n - 1; NaN for a single value)."""
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": mean, "std": std}


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Dict[str, Any]:
    """Per-seed differences ``a[seed] - b[seed]`` in seed order: ``per_seed``, ``mean``, ``std``
    (NaN for one seed), ``ci95`` (the 95% t-interval of the mean, ``None`` for one seed or no
    spread) and ``beyond_noise`` (whether that interval excludes 0; ``None`` likewise).
    ``ValueError`` when ``a`` and ``b`` do not hold the same seeds."""
    if set(a) != set(b):
        raise ValueError(f"unpaired seeds: {sorted(a)} vs {sorted(b)}")
    diffs = [a[seed] - b[seed] for seed in sorted(a)]
    out: Dict[str, Any] = {"per_seed": diffs, **summarise(diffs)}
    n = len(diffs)
    if n > 1 and out["std"] > 0:
        half = t_critical(n) * out["std"] / math.sqrt(n)
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
        out["beyond_noise"] = bool(abs(out["mean"]) > half)
    else:
        out["ci95"], out["beyond_noise"] = None, None
    return out
