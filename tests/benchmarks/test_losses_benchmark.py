"""benchmarks/losses.py runs: its loops check the vectorised losses' values first, its LED peak
memory comes from the profiler's allocation record (a torch API that could move), and its
figures carry the stamp of what measured them. Speed is the benchmark's business, not asserted."""

from __future__ import annotations

import pytest
import torch

from ..conftest import run_benchmark_json, shared_data


@pytest.mark.slow
def test_one_batch_reports_speed_memory_and_stamp():
    shared_data("coco2014_val_anno.json")
    result = run_benchmark_json("losses.py", "--batches", "1", "--repeat", "1")
    assert set(result["ms_per_batch"]) == {"led_loop", "led_vectorised", "mpscd_loop", "mpscd_vectorised"}
    assert all(ms > 0 for ms in result["ms_per_batch"].values())
    # tokens [P, E] float32 and their gradient at least; far below every difference [P, P, E]
    P, E = result["led_peak_positives"], result["shape"]["E"]
    assert 2 * P * E * 4 / 2**20 <= result["led_peak_mib"] < result["pairwise_differences_mib"] / 4
    stamp = result["stamp"]
    assert stamp["command"] == "python benchmarks/losses.py --batches 1 --repeat 1 --json"
    assert stamp["torch"] == torch.__version__ and stamp["commit"] and stamp["cpu"]
