"""mlkd_cache.stats: paired per-seed differences and their 95% t-interval, on hand-computed values."""

from __future__ import annotations

import math

import pytest

from mlkd_cache.stats import paired, summarise, t_critical


def test_t_critical_is_the_two_sided_95_percent_quantile():
    # scipy.stats.t.ppf(0.975, n - 1): as kd_study computed it before; within 1e-9 of the tables
    assert t_critical(3) == pytest.approx(4.302652729911275, rel=1e-9)  # t(0.975, df=2)
    assert t_critical(2) == pytest.approx(12.706204736174694, rel=1e-9)  # df=1
    assert t_critical(6) == pytest.approx(2.5705818356363146, rel=1e-9)  # df=5


def test_summarise():
    assert summarise([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    one = summarise([4.0])
    assert one["mean"] == 4.0 and math.isnan(one["std"])


def test_paired_differences_mean_std_and_interval():
    d = paired({0: 3.0, 1: 5.0, 2: 7.0}, {0: 2.0, 1: 3.0, 2: 4.0})  # differences 1, 2, 3
    assert d["per_seed"] == [1.0, 2.0, 3.0] and d["mean"] == 2.0 and d["std"] == 1.0
    half = 4.302652729911275 / 3**0.5  # t(0.975, 2 df) * std / sqrt(n) = 2.484
    assert d["ci95"] == pytest.approx([2.0 - half, 2.0 + half]) and d["beyond_noise"] is False
    tight = paired({0: 3.0, 1: 3.1, 2: 3.2}, {0: 1.0, 1: 1.0, 2: 1.0})  # 2.0 ± 0.1: far from 0
    assert tight["mean"] == pytest.approx(2.1) and tight["beyond_noise"] is True
    assert tight["ci95"][0] > 0


def test_paired_goes_by_seed_not_by_order():
    d = paired({2: 7.0, 0: 3.0, 1: 5.0}, {1: 3.0, 2: 4.0, 0: 2.0})
    assert d["per_seed"] == [1.0, 2.0, 3.0]


def test_paired_without_spread_has_no_interval():
    one = paired({0: 5.0}, {0: 3.5})
    assert one["per_seed"] == [1.5] and one["mean"] == 1.5 and math.isnan(one["std"])
    assert one["ci95"] is None and one["beyond_noise"] is None
    same = paired({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})  # every difference 1: std 0
    assert same["std"] == 0.0 and same["ci95"] is None and same["beyond_noise"] is None


def test_unequal_seed_sets_are_refused():
    with pytest.raises(ValueError, match=r"unpaired seeds: \[0, 1\] vs \[0, 2\]"):
        paired({0: 1.0, 1: 2.0}, {0: 1.0, 2: 2.0})
    with pytest.raises(ValueError, match="unpaired seeds"):
        paired({0: 1.0, 1: 2.0}, {0: 1.0})
