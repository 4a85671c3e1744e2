"""benchmarks/holdout.py runs and prints what docs/datasets.md quotes: a stratified val split of a
COCO-sized label matrix, stamped."""

from __future__ import annotations

import pytest

from ..conftest import run_benchmark_json


@pytest.mark.slow  # a fresh interpreter
def test_the_holdout_benchmark_prints_a_stratified_split():
    result = run_benchmark_json("holdout.py", "--repeat", "1")
    assert (result["images"], result["classes"]) == (118287, 80)
    assert abs(result["held_out"] - 11829) <= 60  # a tenth, every class at its share
    assert 0.095 <= result["class_share_min"] <= result["class_share_max"] <= 0.105
    assert result["median_s"] > 0 and result["stamp"]["command"].startswith("python benchmarks/holdout.py")
