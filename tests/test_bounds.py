"""The bounds that numeric tests use to compare numbers from other kernels (tests/bounds.py)."""

import numpy as np
import pytest

from mlkd_cache.metrics import mean_average_precision

from .bounds import logit_bound, map_range

pytestmark = pytest.mark.numeric


def near_tied_model(seed: int, n: int = 16, c: int = 10):
    """Scores of a weak model (the digits fixtures' teacher): each class's scores within 1e-3
    of each other, on a grid of 1e-4 so that many are tied or closer than the bound."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.3).astype(np.uint8)
    labels[0] = 1  # every class has a positive
    scores = rng.normal(size=(1, c)) + np.round(rng.random((n, c)) * 1e-3, 4)
    return scores, labels


@pytest.mark.parametrize("seed", range(6))
def test_map_range_holds_every_perturbation_within_the_bound(seed):
    """Scores moved anywhere within delta (random moves, moves to the corners, rounding to a
    coarser grid) give an mAP in map_range; the range is wide for near-tied scores and shrinks
    to the mAP itself at delta = 0."""
    scores, labels = near_tied_model(seed)
    delta = 2e-4
    low, high = map_range(scores, labels, delta)
    assert low <= mean_average_precision(scores, labels) <= high
    rng = np.random.default_rng(100 + seed)
    moves = [rng.uniform(-delta, delta, scores.shape) for _ in range(20)]
    moves += [delta * rng.choice([-1.0, 1.0], scores.shape) for _ in range(20)]
    moves.append(np.round(scores / delta) * delta - scores)  # a coarser rounding: ties made and broken
    for move in moves:
        assert np.abs(move).max() <= delta * (1 + 1e-12)
        assert low - 1e-9 <= mean_average_precision(scores + move, labels) <= high + 1e-9
    assert high - low > 1.0  # near ties: the metric is not fixed by the logits' bound
    assert map_range(scores, labels, 0.0) == (mean_average_precision(scores, labels),) * 2


def test_map_range_is_tight_for_separated_scores():
    """Scores farther apart than 2 delta cannot swap: the range is the mAP alone."""
    scores, labels = near_tied_model(0)
    spread = scores + np.arange(scores.size).reshape(scores.shape) * 1e-2
    assert map_range(spread, labels, 2e-4) == (mean_average_precision(spread, labels),) * 2


def test_logit_bound_scales_with_the_logits():
    assert logit_bound(np.array([[-4.0, 1.0], [2.0, 0.5]])) == 4.0 * 2.0**-13
    assert logit_bound(np.array([[1.0]]), rel=2.0**-10) == 2.0**-10
