"""Multi-label metrics (DESIGN.md section 7). Every number is in percent (0-100).

* ``mAP``: mean over classes of scikit-learn's average precision. Classes with no positive
  label in the evaluated set are *excluded* (their AP is NaN and the mean is a NaN-mean).
  L2D calls ``average_precision_score`` on every class, which scores such a class as 0 (with
  a warning) and drags the mean down; on the standard test splits every class has positives,
  so both agree there.
* top-k protocol (L2D): image i predicts its top-k_i labels, k_i = its number of true labels.
  As in L2D the threshold is the (k_i+1)-th largest score and a label is predicted when its
  score is strictly greater. With ties this predicts *fewer* than k_i labels (the tied labels at
  the boundary are all left out), never more; k_i = 0 predicts nothing, k_i = C predicts all.
  OP/OR/OF1 are micro precision/recall/F1 over all (image, label) pairs; CP/CR are per-class
  precision/recall averaged over all C classes and CF1 is the mean of per-class F1 (sklearn's
  ``average="macro", zero_division=0``: an undefined ratio counts as 0).
* threshold protocol (ML-GCN convention): predict ``sigmoid(logit) >= threshold``; CP/CR are
  per-class precision/recall averaged over classes (0 where undefined), CF1 = 2·CP·CR/(CP+CR),
  OP/OR/OF1 overall. The threshold is 0.5 (keys ``...@0.5``) or, where a model stores per-class
  thresholds (:mod:`mlkd_cache.thresholds`), one per class (keys ``...@tuned``).
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .thresholds import UNTUNED, predictions_at

__all__ = [
    "average_precision",
    "mean_average_precision",
    "topk_f1",
    "threshold_f1",
    "evaluate_logits",
    "format_metrics",
    "METRIC_KEYS",
    "TUNED_KEYS",
    "sigmoid",
]


def _check(scores, labels, what: str = "scores") -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 2 or y.ndim != 2:
        raise ValueError(f"{what} and labels must be 2-D [N, C], got shapes {s.shape} and {y.shape}")
    if s.shape != y.shape:
        raise ValueError(f"{what} shape {s.shape} does not match labels shape {y.shape}")
    s = s.astype(np.float64, copy=False)
    if np.isnan(s).any():
        raise ValueError(f"{what} contain NaN")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0/1")
    return s, y.astype(bool, copy=False)


def sigmoid(x) -> np.ndarray:
    """Numerically stable logistic function in float64 (no overflow for large |x|)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))  # in (0, 1], never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _safe_div(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f1(p, r) -> np.ndarray:
    return _safe_div(2.0 * np.asarray(p) * np.asarray(r), np.asarray(p) + np.asarray(r))


# --------------------------------------------------------------------------------------------
# Average precision
# --------------------------------------------------------------------------------------------


def average_precision(scores, labels) -> np.ndarray:
    """Per-class average precision ``[C]`` (fraction, 0-1; sklearn's definition), NaN for
    classes without a positive. Only the ranking of ``scores`` matters (logits or
    probabilities give the same result); +-inf scores are allowed."""
    from sklearn.metrics import average_precision_score

    s, y = _check(scores, labels)
    n, c = s.shape
    ap = np.full(c, np.nan, dtype=np.float64)
    if n == 0:
        return ap
    if not np.isfinite(s).all():
        # sklearn rejects inf; AP only depends on order and ties, which dense ranks keep exactly
        s = np.stack([np.unique(s[:, j], return_inverse=True)[1].astype(np.float64) for j in range(c)], axis=1)
    has_pos = y.any(axis=0)
    for j in np.flatnonzero(has_pos):
        ap[j] = average_precision_score(y[:, j], s[:, j])
    return ap


def mean_average_precision(scores, labels) -> float:
    """mAP in percent: NaN-mean of :func:`average_precision` (classes with no positive are
    excluded; NaN if no class has one)."""
    ap = average_precision(scores, labels)
    if np.isnan(ap).all():
        return float("nan")
    return float(np.nanmean(ap) * 100.0)


# --------------------------------------------------------------------------------------------
# F1 protocols
# --------------------------------------------------------------------------------------------


def _prf(pred: np.ndarray, y: np.ndarray) -> Dict[str, float]:
    """Precision/recall/F1 summary of boolean predictions vs boolean labels, in percent.

    Returns per-class CP, CR (means, 0 where undefined), CF1 as the mean of per-class F1 under
    key ``CF1_macro`` and as 2·CP·CR/(CP+CR) under ``CF1_of_means``, and micro OP, OR, OF1."""
    tp_c = np.logical_and(pred, y).sum(axis=0).astype(np.float64)
    pred_c = pred.sum(axis=0).astype(np.float64)
    true_c = y.sum(axis=0).astype(np.float64)
    p_c = _safe_div(tp_c, pred_c)
    r_c = _safe_div(tp_c, true_c)
    f1_c = _safe_div(2.0 * tp_c, pred_c + true_c)  # = 2PR/(P+R); 0 when tp=0, as sklearn zero_division=0
    cp = float(p_c.mean()) if p_c.size else 0.0
    cr = float(r_c.mean()) if r_c.size else 0.0
    op = float(_safe_div(tp_c.sum(), pred_c.sum()))
    orc = float(_safe_div(tp_c.sum(), true_c.sum()))
    return {
        "CP": 100.0 * cp,
        "CR": 100.0 * cr,
        "CF1_macro": 100.0 * (float(f1_c.mean()) if f1_c.size else 0.0),
        "CF1_of_means": 100.0 * float(_f1(cp, cr)),
        "OP": 100.0 * op,
        "OR": 100.0 * orc,
        "OF1": 100.0 * float(_f1(op, orc)),
    }


def topk_predictions(scores, labels) -> np.ndarray:
    """Boolean ``[N, C]`` predictions of L2D's top-k protocol (see module docstring)."""
    s, y = _check(scores, labels)
    n, c = s.shape
    if n == 0 or c == 0:
        return np.zeros((n, c), dtype=bool)
    k = y.sum(axis=1)  # true labels per image, 0..C
    desc = -np.sort(-s, axis=1)  # scores sorted descending per row
    kth = np.take_along_axis(desc, np.minimum(k, c - 1)[:, None], axis=1)  # (k+1)-th largest
    thr = np.where((k >= c)[:, None], -np.inf, kth)
    pred = s > thr
    if (k >= c).any():  # -inf scores of an all-positive row are predicted too
        pred[k >= c] = True
    return pred


def topk_f1(scores, labels) -> Dict[str, float]:
    """L2D's top-k protocol: keys ``CP, CR, CF1, OP, OR, OF1`` in percent, CF1 = macro F1."""
    _, y = _check(scores, labels)
    r = _prf(topk_predictions(scores, labels), y)
    return {"CP": r["CP"], "CR": r["CR"], "CF1": r["CF1_macro"], "OP": r["OP"], "OR": r["OR"], "OF1": r["OF1"]}


def threshold_f1(logits, labels, threshold: Union[float, np.ndarray] = UNTUNED) -> Dict[str, float]:
    """ML-GCN threshold protocol on ``sigmoid(logits) >= threshold`` (one float, or ``[C]``: one
    per class): keys ``CP, CR, CF1, OP, OR, OF1`` in percent, CF1 = 2·CP·CR/(CP+CR)."""
    z, y = _check(logits, labels, "logits")
    r = _prf(predictions_at(sigmoid(z), threshold), y)
    return {"CP": r["CP"], "CR": r["CR"], "CF1": r["CF1_of_means"], "OP": r["OP"], "OR": r["OR"], "OF1": r["OF1"]}


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

_PRF = ("CP", "CR", "CF1", "OP", "OR", "OF1")
AT_UNTUNED = f"@{UNTUNED:g}"  # the key suffix of the metrics at the one untuned threshold: "OF1@0.5"
METRIC_KEYS = ("mAP", *(f"{k}_topk" for k in _PRF), *(k + AT_UNTUNED for k in _PRF))
TUNED_KEYS = tuple(f"{k}@tuned" for k in _PRF)  # at a model's own thresholds


def evaluate_logits(logits, labels, thresholds: Optional[np.ndarray] = None) -> Dict[str, float]:
    """All metrics of a set of logits ``[N, C]``, flat, in percent (keys: :data:`METRIC_KEYS`,
    and :data:`TUNED_KEYS` at per-class ``thresholds`` ``[C]`` on probabilities when given)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        out: Dict[str, float] = {"mAP": mean_average_precision(logits, labels)}
        for k, v in topk_f1(logits, labels).items():
            out[f"{k}_topk"] = float(v)
        for k, v in threshold_f1(logits, labels, UNTUNED).items():
            out[k + AT_UNTUNED] = float(v)
        if thresholds is not None:
            for k, v in threshold_f1(logits, labels, np.asarray(thresholds, dtype=np.float64)).items():
                out[f"{k}@tuned"] = float(v)
    return out


def format_metrics(d: Dict[str, float]) -> str:
    """One line: ``mAP 83.41 | top-k OF1 78.2 CF1 74.1 | @0.5 OF1 80.0 CF1 76.3``, and
    ``| tuned OF1 81.2 CF1 77.9`` where ``d`` holds the metrics at a model's own thresholds."""

    def f(key: str, digits: int) -> str:
        v = d.get(key, float("nan"))
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}"

    tuned = f" | tuned OF1 {f('OF1@tuned', 1)} CF1 {f('CF1@tuned', 1)}" if "OF1@tuned" in d else ""
    return (
        f"mAP {f('mAP', 2)} | top-k OF1 {f('OF1_topk', 1)} CF1 {f('CF1_topk', 1)} "
        f"| {AT_UNTUNED} OF1 {f('OF1' + AT_UNTUNED, 1)} CF1 {f('CF1' + AT_UNTUNED, 1)}{tuned}"
    )
