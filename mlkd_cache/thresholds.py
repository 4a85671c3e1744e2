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

Fallback: a class the split cannot tune (no positive in it, or a precision or recall target no
threshold reaches) gets the one global threshold tuned on the same split, the one that
maximises micro-F1 (OF1) over all classes; the result names those classes and why.
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
    "Objective",
    "objective_forms",
    "parse_objective",
    "predictions_at",
    "tune_thresholds",
]


class ObjectiveKind(NamedTuple):
    target: Optional[str]  # the name of its target in the syntax ("P" in precision=P), None: it takes none
    means: str  # what a threshold maximises, in words


# The objectives, declared once: the parser, its error and the CLI's help derive from them.
OBJECTIVES: Dict[str, ObjectiveKind] = {
    "f1": ObjectiveKind(None, "each class's F1, maximised"),
    "precision": ObjectiveKind("P", "the highest recall whose precision is at least P"),
    "recall": ObjectiveKind("R", "the highest precision whose recall is at least R"),
}
DEFAULT_OBJECTIVE = "f1"
NO_POSITIVE = "no positive in the split"  # why a class fell back (the other reason: "<objective> unreachable")


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


def _best_cuts(p: np.ndarray, y: np.ndarray, objective: Objective) -> Tuple[np.ndarray, np.ndarray]:
    """The best threshold of each column of ``p`` (float64 ``[N, C]``, labels ``y`` bool
    ``[N, C]``) for ``objective``, float64 ``[C]``, and whether the column could be tuned
    (bool ``[C]``; where not, the threshold is meaningless)."""
    n, c = p.shape
    order = np.argsort(-p, axis=0, kind="stable")
    ps = np.take_along_axis(p, order, axis=0)  # [N, C], each column descending
    tp = np.cumsum(np.take_along_axis(y, order, axis=0), axis=0, dtype=np.int64)  # [N, C]: TP when rows 0..k are predicted
    predicted = np.arange(1, n + 1, dtype=np.int64)[:, None]  # [N, 1]: TP + FP of cut k
    positives = tp[-1]  # [C]
    target = 0.0 if objective.target is None else objective.target
    cut = np.ones((n, c), dtype=bool)  # a threshold can fall below row k only between distinct scores
    cut[:-1] = ps[:-1] > ps[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / predicted
        recall = tp / positives
        if objective.kind == "f1":
            score, ok = 2.0 * tp / (predicted + positives), cut
        elif objective.kind == "precision":
            score, ok = recall, cut & (precision >= target)
        else:  # recall
            score, ok = precision, cut & (recall >= target)
    ok = ok & (positives > 0)
    k = np.argmax(np.where(ok, score, -np.inf), axis=0)  # [C]; the first best cut: fewest positives
    cols = np.arange(c)
    hi = ps[k, cols]  # the lowest score predicted positive
    lo = np.where(k + 1 < n, ps[np.minimum(k + 1, n - 1), cols], 0.0)  # the next lower score (0 below the last)
    mid = lo + (hi - lo) / 2.0
    return np.where(mid > lo, mid, hi), ok.any(axis=0)  # adjacent doubles: the midpoint may round down to lo


def tune_thresholds(
    probabilities, labels, objective: Union[str, Objective] = DEFAULT_OBJECTIVE, class_names: Optional[Sequence[str]] = None
) -> Dict[str, Any]:
    """Per-class thresholds for ``objective`` chosen on ``probabilities`` (``[N, C]`` in [0, 1],
    compared in float64) and 0/1 ``labels`` ``[N, C]`` (module docstring: the rule, ties, fallback).

    Returns a plain dict for ``ModelCard.thresholds``: ``values`` (``[C]`` floats), ``objective``
    (its string), ``global`` (the micro-F1 threshold) and ``fallback`` (``{class name: why}`` of
    the classes that got ``global``; indices as names without ``class_names``).
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
    per_class, tuned = _best_cuts(p, y, goal)
    overall, _ = _best_cuts(p.reshape(-1, 1), y.reshape(-1, 1), Objective("f1"))  # micro-F1 over all (sample, class)
    global_t = float(overall[0])
    positives = np.asarray(y.any(axis=0))
    return {
        "values": np.where(tuned, per_class, global_t).tolist(),
        "objective": str(goal),
        "global": global_t,
        "fallback": {
            names[j]: (NO_POSITIVE if not positives[j] else f"{goal} unreachable") for j in np.flatnonzero(~tuned).tolist()
        },
    }
