"""benchmarks/cli_startup.py runs every variant in fresh interpreters and stamps its figures; the
time itself is the benchmark's business (its 0.5 s goal is printed, not asserted)."""

from __future__ import annotations

import pytest

from ..conftest import run_benchmark_json


@pytest.mark.slow
def test_every_variant_is_timed_and_stamped():
    result = run_benchmark_json("cli_startup.py", "--repeat", "1")
    assert set(result["timings"]) == {
        "mlkd-cache --version",
        "mlkd-cache --help",
        "mlkd-cache predict --help",
        "python -c 'import torch'",
    }
    assert all(t["median_s"] > 0 and t["repeat"] == 1 for t in result["timings"].values())
    assert result["goal_s"] == 0.5 and result["stamp"]["command"] == "python benchmarks/cli_startup.py --repeat 1 --json"
