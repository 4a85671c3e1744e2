"""Per-class thresholds: the vectorised tuner against a loop over every candidate threshold, the
objectives' guarantees, the fallback (never worse for the objective than 0.5, over random and
adversarial score sets), the parser, and the metrics at per-class thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from mlkd_cache.errors import ConfigError, DataError
from mlkd_cache.metrics import METRIC_KEYS, TUNED_KEYS, evaluate_logits, format_metrics, sigmoid, threshold_f1
from mlkd_cache.thresholds import NO_POSITIVE, UNTUNED, Objective, parse_objective, predictions_at, tune_thresholds

pytestmark = pytest.mark.numeric

EPS = np.finfo(np.float64).eps  # thresholds are float64 midpoints of float64 probabilities


def counts(p: np.ndarray, y: np.ndarray, t: float):
    """(TP, predicted, positives) of one column at threshold ``t``, by plain counting."""
    pred = p >= t
    return int((pred & y).sum()), int(pred.sum()), int(y.sum())


def score(kind: str, target, tp: int, predicted: int, positives: int):
    """The objective's value at a cut, or None where the cut is not allowed (loop reference)."""
    precision = tp / predicted
    recall = tp / positives
    if kind == "f1":
        return 2.0 * tp / (predicted + positives)
    if kind == "precision":
        return recall if precision >= target else None
    return precision if recall >= target else None


def best_cut(p: np.ndarray, y: np.ndarray, kind: str, target):
    """The lowest score admitted by the best threshold of one column, trying every distinct
    score (None: nothing can be tuned); ties go to the higher threshold."""
    if not y.any():
        return None
    best, best_s = None, None
    for s in sorted(set(p.tolist()), reverse=True):  # highest threshold first: the first best wins ties
        value = score(kind, target, *counts(p, y, s))
        if value is not None and (best is None or value > best):
            best, best_s = value, s
    return best_s


def midpoint(p: np.ndarray, s: float) -> float:
    below = p[p < s]
    return (s + (below.max() if below.size else 0.0)) / 2.0


# Where a class without a positive goes (module docstring of mlkd_cache.thresholds)
NO_POSITIVE_SIDE = {"f1": lambda g: g, "precision": lambda g: max(g, 0.5), "recall": lambda g: min(g, 0.5)}


def highest_precision(p: np.ndarray, y: np.ndarray) -> float:
    return max(counts(p, y, s)[0] / counts(p, y, s)[1] for s in set(p.tolist()))


def reference(p: np.ndarray, y: np.ndarray, kind: str, target):
    """Thresholds ``[C]``, ``{fallen-back class index: why}`` and the global threshold, by loops."""
    g = best_cut(p.ravel(), y.ravel(), "f1", None)
    global_t = midpoint(p.ravel(), g)
    values, fallback = [], {}
    for j in range(p.shape[1]):
        if not y[:, j].any():
            values.append(NO_POSITIVE_SIDE[kind](global_t))
            fallback[j] = NO_POSITIVE
            continue
        s = best_cut(p[:, j], y[:, j], kind, target)
        if s is None:  # a precision out of reach: the class's highest instead
            best = highest_precision(p[:, j], y[:, j])
            s = best_cut(p[:, j], y[:, j], kind, best)
            fallback[j] = f"{kind}={target!r} unreachable, at most {best:.3f}"
        values.append(midpoint(p[:, j], s))
    return np.array(values), fallback, global_t


def random_case(seed: int, n: int = 40, c: int = 6):
    """Probabilities on a 0.05 grid (many ties, 0 and 1 included), a class without positives and
    a class whose positives all score below its negatives (precision 0.9 out of reach)."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 21, size=(n, c)) / 20.0
    y = (rng.random((n, c)) < 0.35 + 0.3 * p).astype(np.uint8)  # labels follow the scores, loosely
    y[:, 1] = 0  # no positive
    y[:, 2] = (p[:, 2] <= np.sort(p[:, 2])[3]).astype(np.uint8)  # the lowest scores positive
    y[np.argmax(p[:, 2]), 2] = 0
    y[:, 3] = 1  # every sample positive
    return p, y


@pytest.mark.parametrize("objective", ["f1", "precision=0.9", "precision=0.6", "recall=0.8", "recall=1.0"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tuner_equals_loop_reference(objective, seed):
    p, y = random_case(seed)
    goal = parse_objective(objective)
    got = tune_thresholds(p, y, objective, class_names=[f"c{j}" for j in range(p.shape[1])])
    want, fallback, global_t = reference(p, y.astype(bool), goal.kind, goal.target)
    values = np.array(got["values"])
    assert got["objective"] == objective and set(got) == {"values", "objective", "global", "fallback"}
    assert got["global"] == pytest.approx(global_t, abs=EPS)
    np.testing.assert_allclose(values, want, rtol=0, atol=EPS)
    # the same decisions exactly: every tie on the same side
    assert (predictions_at(p, values) == predictions_at(p, want)).all()
    assert got["fallback"] == {f"c{j}": why for j, why in fallback.items()}
    assert got["fallback"]["c1"] == NO_POSITIVE
    if objective == "precision=0.9":
        assert got["fallback"]["c2"].startswith("precision=0.9 unreachable, at most 0.")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_f1_thresholds_are_optimal(seed):
    p, y = random_case(seed, n=60, c=5)
    y = y.astype(bool)
    got = tune_thresholds(p, y, "f1")
    values = np.array(got["values"])
    grid = np.concatenate([np.unique(p), np.linspace(0, 1, 401), [np.nextafter(1.0, 2.0)]])
    for j in range(p.shape[1]):
        if str(j) in got["fallback"]:
            continue

        def f1(t, column=j):
            tp, predicted, positives = counts(p[:, column], y[:, column], t)
            return 2.0 * tp / (predicted + positives)

        chosen = f1(values[j])
        assert max(f1(t) for t in grid) == chosen, j


@pytest.mark.parametrize("target", [0.5, 0.75, 0.9])
def test_precision_and_recall_targets_are_met(target):
    p, y = random_case(7, n=80, c=6)
    y = y.astype(bool)
    for kind in ("precision", "recall"):
        got = tune_thresholds(p, y, f"{kind}={target}")
        pred = predictions_at(p, np.array(got["values"]))
        tp, predicted, positives = (pred & y).sum(0), pred.sum(0), y.sum(0)
        tuned = [j for j in range(p.shape[1]) if str(j) not in got["fallback"]]
        assert tuned, got
        achieved = tp / np.maximum(predicted if kind == "precision" else positives, 1)
        assert (achieved[tuned] >= target).all(), (kind, achieved)


@pytest.mark.parametrize("objective", ["f1", "precision=1.0", "recall=0.9"])
def test_a_class_without_positives_gets_the_micro_f1_threshold_on_the_objectives_side(objective):
    p, y = random_case(3)
    got = tune_thresholds(p, y, objective)
    global_t = got["global"]
    kind = parse_objective(objective).kind
    assert got["fallback"]["1"] == NO_POSITIVE
    assert got["values"][1] == NO_POSITIVE_SIDE[kind](global_t)
    # no other threshold gives a higher OF1 over all classes
    flat_p, flat_y = p.ravel(), y.ravel().astype(bool)

    def of1(t):
        tp, predicted, positives = counts(flat_p, flat_y, t)
        return 2.0 * tp / (predicted + positives)

    assert max(of1(t) for t in np.unique(flat_p)) == of1(global_t)


# ------------------------------------------------------------------------------------------------
# A precision or recall target is never served worse than by 0.5, on the split tuned on
# ------------------------------------------------------------------------------------------------


def score_sets(seed: int):
    """``(name, probabilities [N, C], labels [N, C] bool)``: random ones and adversarial ones."""
    rng = np.random.default_rng(seed)
    n, c = 120, 8
    y = rng.random((n, c)) < rng.uniform(0.02, 0.5, size=c)  # prevalences from rare to common
    y[:, 0] = False  # a class without positives in each set
    yield "random", rng.random((n, c)), y
    p, _ = random_case(seed, n=n, c=c)
    yield "coarse grid", p, y
    z = -3.0 + 1.2 * y + rng.normal(size=(n, c))  # a cautious, weak model: most classes miss a high target
    yield "cautious", 1.0 / (1.0 + np.exp(-z)), y
    yield "inverted", np.where(y, 0.2, 0.8) + rng.normal(scale=0.05, size=(n, c)).clip(-0.15, 0.15), y
    yield "ties at 0.5", rng.choice([np.nextafter(0.5, 0.0), 0.5, np.nextafter(0.5, 1.0)], size=(n, c)), y
    top_negative = rng.random((n, c)) * 0.9
    top_negative[0] = 1.0
    yield "top score a negative", top_negative, y & (np.arange(n) > 0)[:, None]
    yield "confident 0/1", (rng.random((n, c)) < 0.3).astype(np.float64), y
    one = np.zeros((n, c), dtype=bool)
    one[rng.integers(0, n, size=c), np.arange(c)] = True
    one[:, 0] = False
    yield "one positive a class", rng.random((n, c)), one


def per_class(p: np.ndarray, y: np.ndarray, t):
    """Per class at thresholds ``t``: (precision, 0 where nothing is predicted, as the metrics
    count it; recall; how many samples are predicted)."""
    pred = predictions_at(p, t)
    tp, predicted, positives = (pred & y).sum(0), pred.sum(0), y.sum(0)
    return np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0), tp / np.maximum(positives, 1), predicted


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("target", [0.3, 0.7, 0.9, 1.0])
def test_a_precision_target_never_gives_a_lower_precision_than_0_5(seed, target):
    for name, p, y in score_sets(seed):
        got = tune_thresholds(p, y, f"precision={target}")
        values = np.array(got["values"])
        precision, _, predicted = per_class(p, y, values)
        at_half, _, predicted_at_half = per_class(p, y, UNTUNED)
        has = y.any(0)
        # every class with a positive: at least the target, or at least what 0.5 gives it
        assert (precision[has] >= np.minimum(target, at_half[has])).all(), (name, precision, at_half)
        for j in np.flatnonzero(has):
            if str(j) in got["fallback"]:  # out of reach: no threshold does better
                best = max(per_class(p[:, [j]], y[:, [j]], t)[0][0] for t in np.unique(p[:, j]))
                assert precision[j] == best < target, (name, j)
            else:
                assert precision[j] >= target, (name, j)
        # a class without positives predicts no more samples (all false) than at 0.5
        assert (predicted[~has] <= predicted_at_half[~has]).all(), name


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("target", [0.3, 0.7, 1.0])
def test_a_recall_target_never_gives_a_lower_recall_than_0_5(seed, target):
    for name, p, y in score_sets(seed):
        got = tune_thresholds(p, y, f"recall={target}")
        _, recall, predicted = per_class(p, y, np.array(got["values"]))
        _, at_half, predicted_at_half = per_class(p, y, UNTUNED)
        has = y.any(0)
        assert (recall[has] >= target).all(), (name, recall)  # every class with a positive reaches it
        assert set(got["fallback"]) == {str(j) for j in np.flatnonzero(~has)}, name
        # a class without positives predicts no fewer samples than at 0.5: it misses no more where it occurs
        assert (predicted[~has] >= predicted_at_half[~has]).all(), name


def test_a_cautious_model_keeps_its_precision_under_a_precision_target():
    """Most classes of a weak, cautious model reach 70% precision at no threshold: they must not
    drag the pooled precision below what 0.5 gives (at the micro-F1 threshold they did)."""
    rng = np.random.default_rng(0)
    y = rng.random((500, 20)) < 0.07
    p = 1.0 / (1.0 + np.exp(-(-3.0 + 1.2 * y + rng.normal(size=y.shape))))
    got = tune_thresholds(p, y, "precision=0.7")
    assert len(got["fallback"]) >= 3 and got["global"] < UNTUNED

    def pooled_and_mean_precision(t):
        pred = predictions_at(p, t)
        precision, _, predicted = per_class(p, y, t)
        return (pred & y).sum() / pred.sum(), precision.mean()

    op_half, cp_half = pooled_and_mean_precision(UNTUNED)
    op_tuned, cp_tuned = pooled_and_mean_precision(np.array(got["values"]))
    assert op_tuned > op_half and cp_tuned > cp_half, (op_half, op_tuned, cp_half, cp_tuned)


def test_adjacent_scores_are_split_and_ties_never():
    a = np.nextafter(0.5, 1.0)  # one ulp above 0.5: the midpoint rounds onto a neighbour
    p = np.array([[a, 0.7], [0.5, 0.7], [0.5, 0.2]])
    y = np.array([[1, 1], [0, 0], [0, 0]])
    got = tune_thresholds(p, y, "f1")
    assert predictions_at(p, np.array(got["values"])).tolist() == [[True, True], [False, True], [False, False]]
    assert got["values"][1] == pytest.approx(0.45, abs=EPS)  # the tie at 0.7 is kept together


def test_no_positive_anywhere_and_no_sample_refused():
    with pytest.raises(DataError, match="without a positive label"):
        tune_thresholds(np.full((4, 3), 0.3), np.zeros((4, 3)))
    with pytest.raises(DataError):
        tune_thresholds(np.zeros((0, 3)), np.zeros((0, 3)))


@pytest.mark.parametrize(
    "text, want",
    [
        ("f1", Objective("f1")),
        (" F1 ", Objective("f1")),
        ("precision=0.9", Objective("precision", 0.9)),
        ("recall=1", Objective("recall", 1.0)),
    ],
)
def test_parse_objective(text, want):
    assert parse_objective(text) == want
    assert parse_objective(str(want)) == want


@pytest.mark.parametrize(
    "text", ["f2", "", "precision", "precision=", "precision=1.5", "recall=0", "recall=abc", "f1=0.5", "recall=nan"]
)
def test_parse_objective_errors_are_one_line(text):
    with pytest.raises(ConfigError) as info:
        parse_objective(text)
    message = str(info.value)
    assert "\n" not in message and "f1, precision=P, recall=R" in message and repr(text) in message


def test_threshold_f1_per_class_against_counting():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(50, 4)).astype(np.float32)
    y = (rng.random((50, 4)) < 0.4).astype(np.uint8)
    t = np.array([0.2, 0.5, 0.65, 0.9])
    pred = sigmoid(z) >= t
    tp, predicted, positives = (pred & (y == 1)).sum(0), pred.sum(0), y.sum(0)
    cp, cr = np.mean(tp / np.maximum(predicted, 1)), np.mean(tp / positives)
    op, orc = tp.sum() / predicted.sum(), tp.sum() / positives.sum()
    m = threshold_f1(z, y, t)
    assert m["CP"] == pytest.approx(100 * cp, abs=1e-9) and m["CR"] == pytest.approx(100 * cr, abs=1e-9)
    assert m["CF1"] == pytest.approx(100 * 2 * cp * cr / (cp + cr), abs=1e-9)
    assert m["OF1"] == pytest.approx(100 * 2 * op * orc / (op + orc), abs=1e-9)
    assert threshold_f1(z, y, np.full(4, 0.5)) == threshold_f1(z, y, 0.5)
    with pytest.raises(ValueError, match=r"\[C\]"):
        threshold_f1(z, y, np.full(3, 0.5))

    plain = evaluate_logits(z, y)
    tuned = evaluate_logits(z, y, t)
    assert list(plain) == list(METRIC_KEYS) and list(tuned) == [*METRIC_KEYS, *TUNED_KEYS]
    assert all(tuned[k] == plain[k] for k in METRIC_KEYS)
    assert tuned["OF1@tuned"] == m["OF1"] and tuned["CF1@tuned"] == m["CF1"]
    line = format_metrics(tuned)
    assert line == format_metrics(plain) + f" | tuned OF1 {m['OF1']:.1f} CF1 {m['CF1']:.1f}"
