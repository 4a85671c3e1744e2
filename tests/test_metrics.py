"""Metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from mlkd_cache.metrics import (
    METRIC_KEYS,
    average_precision,
    evaluate_logits,
    format_metrics,
    mean_average_precision,
    sigmoid,
    threshold_f1,
    topk_f1,
    topk_predictions,
)

# 4 images x 3 classes, worked out by hand below.
Y = np.array(
    [
        [1, 0, 1],
        [0, 1, 0],
        [1, 1, 0],
        [0, 0, 1],
    ],
    dtype=np.uint8,
)
Z = np.array(
    [
        [2.0, 1.0, -1.0],  # k=2 -> top-2 {c0, c1}
        [0.5, -0.5, -2.0],  # k=1 -> {c0}
        [1.5, 3.0, 0.0],  # k=2 -> {c1, c0}
        [-3.0, -1.0, 0.2],  # k=1 -> {c2}
    ]
)

pytestmark = pytest.mark.numeric  # `make test-numeric` reruns it on the generic and AVX2 kernels


def approx(x):
    return pytest.approx(x, abs=1e-9)


def test_ap_hand_case():
    # c0 ranking: i0+, i2+, i1-, i3-            -> AP 1
    # c1 ranking: i2+, i0-, i1+, i3-            -> (1/1 + 2/3) / 2 = 5/6
    # c2 ranking: i3+, i2-, i0+, i1-            -> (1/1 + 2/3) / 2 = 5/6
    ap = average_precision(Z, Y)
    assert ap == approx(np.array([1.0, 5 / 6, 5 / 6]))
    assert mean_average_precision(Z, Y) == approx(100 * 8 / 9)
    # ranking only: probabilities give the same
    assert mean_average_precision(sigmoid(Z), Y) == approx(100 * 8 / 9)


def test_ap_equals_sklearn_and_excludes_empty_classes():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 7)) < 0.3).astype(np.uint8)
    y[:, 4] = 0  # a class without positives
    s = rng.normal(size=(60, 7)).round(1)  # rounded: ties included
    ap = average_precision(s, y)
    for j in range(7):
        if j == 4:
            assert np.isnan(ap[j])
        else:
            assert ap[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]), abs=1e-12)
    keep = [j for j in range(7) if j != 4]
    assert mean_average_precision(s, y) == pytest.approx(100 * np.mean(ap[keep]), abs=1e-9)
    assert mean_average_precision(s, np.zeros_like(y)) != mean_average_precision(s, np.zeros_like(y))  # NaN
    # infinite scores keep their order
    s_inf = s.copy()
    s_inf[0, :] = np.inf
    s_inf[1, :] = -np.inf
    s_big = s.copy()
    s_big[0, :] = 1e6
    s_big[1, :] = -1e6
    assert np.allclose(average_precision(s_inf, y), average_precision(s_big, y), equal_nan=True)


def test_topk_hand_case():
    # predictions: c0 {i0,i1,i2} vs true {i0,i2}: tp2 P2/3 R1 F1 .8
    #              c1 {i0,i2}    vs true {i1,i2}: tp1 P1/2 R1/2 F1 .5
    #              c2 {i3}       vs true {i0,i3}: tp1 P1  R1/2 F1 2/3
    pred = topk_predictions(Z, Y)
    assert pred.astype(int).tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]]
    m = topk_f1(Z, Y)
    assert m["CP"] == approx(100 * 13 / 18)
    assert m["CR"] == approx(100 * 2 / 3)
    assert m["CF1"] == approx(100 * 59 / 90)  # mean(.8, .5, 2/3)
    assert m["OP"] == approx(100 * 4 / 6)
    assert m["OR"] == approx(100 * 4 / 6)
    assert m["OF1"] == approx(100 * 4 / 6)
    # CF1/CP/CR are sklearn's macro scores with zero_division=0
    assert m["CF1"] == approx(100 * f1_score(Y, pred, average="macro", zero_division=0))
    assert m["CP"] == approx(100 * precision_score(Y, pred, average="macro", zero_division=0))
    assert m["CR"] == approx(100 * recall_score(Y, pred, average="macro", zero_division=0))
    assert m["OF1"] == approx(100 * f1_score(Y, pred, average="micro", zero_division=0))


def test_topk_k_zero_k_all_and_ties():
    y = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=np.uint8)
    s = np.array(
        [
            [5.0, 4.0, 3.0],  # k=0: nothing predicted
            [-np.inf, -1.0, -2.0],  # k=C: everything predicted, even -inf
            [1.0, 1.0, 0.0],  # k=1 with a tie at the top: > 2nd largest (1.0) -> nothing
            [0.0, 2.0, 1.0],  # k=1 -> {c1}
        ]
    )
    pred = topk_predictions(s, y)
    assert pred.astype(int).tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 0]]
    m = topk_f1(s, y)
    # tp=4 (row1: 3, row3: 1), predicted 4, true 5
    assert m["OP"] == approx(100.0)
    assert m["OR"] == approx(100 * 4 / 5)
    assert m["OF1"] == approx(100 * 8 / 9)
    # per class: c0 tp1 pred1 true2, c1 tp2 pred2 true2, c2 tp1 pred1 true1
    assert m["CR"] == approx(100 * (0.5 + 1 + 1) / 3)
    assert m["CF1"] == approx(100 * (2 / 3 + 1 + 1) / 3)


def test_perfect_scores_give_100():
    rng = np.random.default_rng(1)
    y = (rng.random((40, 6)) < 0.3).astype(np.uint8)
    y[0] = 1
    y[:, 0] = 0
    y[:6, 0] = 1  # every class has positives
    logits = np.where(y == 1, 5.0, -5.0) + rng.normal(scale=0.1, size=y.shape)
    d = evaluate_logits(logits, y)
    assert set(d) == set(METRIC_KEYS)
    for k, v in d.items():
        assert isinstance(v, float)
        assert v == approx(100.0), k


def test_threshold_hand_case():
    # sigmoid >= 0.5  <=>  logit >= 0 (0.0 counts): preds [[1,1,0],[1,0,0],[1,1,1],[0,0,1]]
    # c0 tp2/pred3/true2, c1 tp1/2/2, c2 tp1/2/2
    m = threshold_f1(Z, Y)
    cp, cr = 5 / 9, 2 / 3
    assert m["CP"] == approx(100 * cp)
    assert m["CR"] == approx(100 * cr)
    assert m["CF1"] == approx(100 * 20 / 33)  # 2*cp*cr/(cp+cr)
    assert m["OP"] == approx(100 * 4 / 7)
    assert m["OR"] == approx(100 * 4 / 6)
    assert m["OF1"] == approx(100 * 8 / 13)
    # undefined per-class precision/recall count as 0; no NaN anywhere
    m0 = threshold_f1(np.full((3, 2), -10.0), np.array([[1, 0], [0, 0], [1, 0]]))
    assert all(v == 0.0 for v in m0.values())
    # another threshold
    assert threshold_f1(Z, Y, threshold=0.9)["OP"] == approx(100 * 2 / 2)  # only 3.0 and 2.0 pass


def test_sigmoid_stable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = sigmoid(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    assert p[0] == 0.0 and p[2] == 0.5 and p[4] == 1.0
    assert p[1] == pytest.approx(np.exp(-30.0) / (1 + np.exp(-30.0)), rel=1e-12)


def test_evaluate_logits_keys_and_format():
    d = evaluate_logits(Z, Y)
    assert list(d) == list(METRIC_KEYS)
    assert d["mAP"] == approx(100 * 8 / 9)
    assert d["OF1_topk"] == approx(100 * 4 / 6)
    assert d["CF1@0.5"] == approx(100 * 20 / 33)
    line = format_metrics(d)
    assert line == "mAP 88.89 | top-k OF1 66.7 CF1 65.6 | @0.5 OF1 61.5 CF1 60.6"
    assert "\n" not in line


def test_input_validation():
    with pytest.raises(ValueError):
        evaluate_logits(Z[:, :2], Y)
    with pytest.raises(ValueError):
        evaluate_logits(Z, Y * 2)
    bad = Z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        mean_average_precision(bad, Y)
