"""Per-class decision thresholds: the decision rule, and thresholds chosen on labelled data.

A class is predicted for a sample when its probability (the sigmoid of its logit, float64)
reaches its threshold: ``p >= t`` (:func:`predictions_at`, the one rule; the threshold metrics
apply it too). :func:`tune_thresholds` chooses one threshold per class for an objective:

* ``f1``: each class's F1 is maximised;
* ``precision=P``: the highest recall whose precision is at least ``P``;
* ``recall=R``: the highest precision whose recall is at least ``R``.

``P`` and ``R`` are fractions in (0, 1]. Every column is sorted once and the true and false
positives of every cut come from cumulative sums (no loop over classes or samples). A chosen
threshold lies midway between the lowest score it admits and the next lower distinct score (0
below the lowest), so tied scores are never split; among cuts that score the same, the one that
predicts fewest positives (the highest threshold) wins.

Fallback: a class the split cannot tune for the objective gets a threshold that still serves
that objective, never one that serves it worse on the split than the untuned rule, 0.5:

* ``precision=P`` out of reach (every cut of the class has precision below ``P``): the cut of its
  highest achievable precision (and, among those, the highest recall), i.e. the same rule with the
  target lowered to what the class can reach. No threshold gives the class a higher precision on
  the split, 0.5 included. The alternative, one global threshold (micro-F1's, or one that
  reaches ``P`` over all classes pooled), is set by the pool, mostly by the classes that do reach
  ``P``, and can give the very classes that missed it a lower precision than 0.5 does: with
  micro-F1's threshold (0.219) for them, a VOC student's test OP was 32.7, against 50.2 at 0.5.
* ``recall=R`` is reached by every class with a positive (the lowest cut predicts every sample:
  recall 1), so its only fallback is the next case.
* No positive in the split: precision, recall and F1 are 0 or undefined at every threshold, so
  the split says nothing about the class. It gets the global threshold :func:`tune_thresholds`
  also returns (the one that maximises micro-F1, OF1, over all classes on the split), moved to the
  objective's side of 0.5: for ``precision=P`` at least 0.5 (it predicts no more samples, all
  false positives, than 0.5), for ``recall=R`` at most 0.5 (it predicts no fewer, so it misses no
  more of the class where it occurs), for ``f1`` as it is.

So on the split a ``precision=P`` threshold gives every class a precision of at least the lower
of ``P`` and its precision at 0.5 (a class reaching ``P`` trades precision above ``P`` for recall,
as the objective asks), and a ``recall=R`` threshold a recall of at least the lower of ``R`` and
its recall at 0.5. The result names each class that fell back and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, DataError

__all__ = [
    "OBJECTIVES",
    "DEFAULT_OBJECTIVE",
    "NO_POSITIVE",
    "UNTUNED",
    "TUNING_SPLIT",
    "Objective",
    "objective_forms",
    "parse_objective",
    "predictions_at",
    "tune_thresholds",
]


class ObjectiveKind(NamedTuple):
    target: Optional[str]  # the name of its target in the syntax ("P" in precision=P), None: it takes none
    means: str  # what a threshold maximises, in words
    shows: Tuple[str, ...] = ()  # the metrics (threshold protocol) that show what it targets, besides OF1 and CF1


# The objectives, declared once: the parser, its error and the CLI's help derive from them.
OBJECTIVES: Dict[str, ObjectiveKind] = {
    "f1": ObjectiveKind(None, "each class's F1, maximised"),
    "precision": ObjectiveKind("P", "the highest recall whose precision is at least P", ("OP", "CP")),
    "recall": ObjectiveKind("R", "the highest precision whose recall is at least R", ("OR", "CR")),
}
DEFAULT_OBJECTIVE = "f1"
NO_POSITIVE = "no positive in the split"  # why a class fell back (the other: "precision=P unreachable, at most ...")
TUNING_SPLIT = "val"  # the split thresholds are tuned on unless told otherwise
UNTUNED = 0.5  # the threshold of a model without tuned ones; no fallback serves its objective worse


def objective_forms() -> str:
    """The accepted spellings: ``"f1, precision=P, recall=R"``."""
    return ", ".join(kind if o.target is None else f"{kind}={o.target}" for kind, o in OBJECTIVES.items())


@dataclass(frozen=True)
class Objective:
    """What a threshold maximises: ``kind`` (a key of :data:`OBJECTIVES`) and its ``target``
    (a fraction in (0, 1]; None for ``f1``)."""

    kind: str
    target: Optional[float] = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}={self.target!r}"


def parse_objective(text: Union[str, Objective]) -> Objective:
    """``"f1"``, ``"precision=0.9"`` or ``"recall=0.8"`` as an :class:`Objective`; anything else
    is a :class:`~mlkd_cache.errors.ConfigError` naming the valid forms."""
    if isinstance(text, Objective):
        return text
    kind, sep, value = str(text).strip().lower().partition("=")
    kind = kind.strip()
    if kind in OBJECTIVES and bool(sep) == (OBJECTIVES[kind].target is not None):
        if not sep:
            return Objective(kind)
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0.0 < target <= 1.0:
            return Objective(kind, target)
    symbols = " and ".join(o.target for o in OBJECTIVES.values() if o.target)
    raise ConfigError(
        f"objective {str(text)!r} is not valid; use one of {objective_forms()} ({symbols} fractions in (0, 1], "
        f"e.g. precision=0.9)"
    )


def predictions_at(probabilities, thresholds) -> np.ndarray:
    """Boolean ``[N, C]``: ``probabilities [N, C] >= thresholds`` (one float, or ``[C]`` per class)."""
    p = np.asarray(probabilities)
    t = np.asarray(thresholds, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be 2-D [N, C], got shape {p.shape}")
    if t.ndim != 0 and t.shape != (p.shape[1],):
        raise ValueError(f"thresholds must be one float or [C] = [{p.shape[1]}], got shape {t.shape}")
    return p >= t


class _Cuts(NamedTuple):
    """Every cut of every column: column ``j`` sorted descending, cut ``k`` predicts its rows 0..k."""

    scores: np.ndarray  # float64 [N, C], each column descending
    tp: np.ndarray  # int64 [N, C]: true positives of cut k
    predicted: np.ndarray  # int64 [N, 1]: k + 1
    positives: np.ndarray  # int64 [C]
    allowed: np.ndarray  # bool [N, C]: a threshold can fall below row k (the next score is lower, or none is)


def _cuts(p: np.ndarray, y: np.ndarray) -> _Cuts:
    n = p.shape[0]
    order = np.argsort(-p, axis=0, kind="stable")
    scores = np.take_along_axis(p, order, axis=0)
    tp = np.cumsum(np.take_along_axis(y, order, axis=0), axis=0, dtype=np.int64)
    allowed = np.ones(p.shape, dtype=bool)
    allowed[:-1] = scores[:-1] > scores[1:]
    return _Cuts(scores, tp, np.arange(1, n + 1, dtype=np.int64)[:, None], tp[-1], allowed)


def _rates(c: _Cuts) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of every cut, float64 ``[N, C]`` (NaN recall without a positive)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return c.tp / c.predicted, c.tp / c.positives, 2.0 * c.tp / (c.predicted + c.positives)


def _best_cuts(c: _Cuts, kind: str, target: np.ndarray) -> np.ndarray:
    """The best threshold of each column for objective ``kind`` with per-column ``target``
    (float64 ``[C]``; ignored for ``f1``), float64 ``[C]``; meaningless for a column without a
    positive, or whose target no cut reaches."""
    n, width = c.scores.shape
    precision, recall, f1 = _rates(c)
    if kind == "f1":
        score, ok = f1, c.allowed
    elif kind == "precision":
        score, ok = recall, c.allowed & (precision >= target)
    else:  # recall
        score, ok = precision, c.allowed & (recall >= target)
    ok = ok & (c.positives > 0)
    k = np.argmax(np.where(ok, score, -np.inf), axis=0)  # [C]; the first best cut: fewest positives
    cols = np.arange(width)
    hi = c.scores[k, cols]  # the lowest score predicted positive
    lo = np.where(k + 1 < n, c.scores[np.minimum(k + 1, n - 1), cols], 0.0)  # the next lower score (0 below the last)
    mid = lo + (hi - lo) / 2.0
    return np.where(mid > lo, mid, hi)  # adjacent doubles: the midpoint may round down to lo


def _highest_precision(c: _Cuts) -> np.ndarray:
    """The highest precision any threshold gives each column, float64 ``[C]`` (0 without a positive)."""
    precision, _, _ = _rates(c)
    return np.where(c.allowed, precision, 0.0).max(axis=0)


# Where a class without a positive in the split goes, per objective: the global threshold, kept on
# the objective's side of the untuned 0.5 (module docstring).
_NO_POSITIVE_SIDE = {"f1": lambda g: g, "precision": lambda g: max(g, UNTUNED), "recall": lambda g: min(g, UNTUNED)}


def tune_thresholds(
    probabilities, labels, objective: Union[str, Objective] = DEFAULT_OBJECTIVE, class_names: Optional[Sequence[str]] = None
) -> Dict[str, Any]:
    """Per-class thresholds for ``objective`` chosen on ``probabilities`` (``[N, C]`` in [0, 1],
    compared in float64) and 0/1 ``labels`` ``[N, C]`` (module docstring: the rule, ties, fallback).

    Returns a plain dict for ``ModelCard.thresholds``: ``values`` (``[C]`` floats), ``objective``
    (its string), ``global`` (the micro-F1 threshold) and ``fallback`` (``{class name: why}`` of
    the classes the split could not tune for the objective; indices as names without ``class_names``).
    A split with no sample or no positive label at all is a :class:`~mlkd_cache.errors.DataError`."""
    goal = parse_objective(objective)
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"probabilities and labels must be [N, C] of one shape, got {p.shape} and {y.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    y = y.astype(bool)
    names = [str(j) for j in range(p.shape[1])] if class_names is None else [str(n) for n in class_names]
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} class names for {p.shape[1]} classes")
    if not y.any():
        raise DataError(f"cannot tune thresholds on {p.shape[0]} samples without a positive label; use a split with labels")
    cuts = _cuts(p, y)
    positives = cuts.positives > 0
    fallback: Dict[str, str] = {}
    target = np.full(p.shape[1], 0.0 if goal.target is None else goal.target)
    if goal.kind == "precision":  # out of reach: the class's highest precision instead (module docstring)
        best = _highest_precision(cuts)
        for j in np.flatnonzero(positives & (best < target)).tolist():
            fallback[names[j]] = f"{goal} unreachable, at most {best[j]:.3f}"
        target = np.minimum(target, best)
    per_class = _best_cuts(cuts, goal.kind, target)
    overall = _best_cuts(_cuts(p.reshape(-1, 1), y.reshape(-1, 1)), "f1", np.zeros(1))  # micro-F1 over all (sample, class)
    global_t = float(overall[0])
    for j in np.flatnonzero(~positives).tolist():
        fallback[names[j]] = NO_POSITIVE
    return {
        "values": np.where(positives, per_class, _NO_POSITIVE_SIDE[goal.kind](global_t)).tolist(),
        "objective": str(goal),
        "global": global_t,
        "fallback": {name: fallback[name] for name in names if name in fallback},  # in class order
    }
