"""benchmarks/losses.py runs: its loops check the vectorised losses' values first, its LED peak
memory comes from the profiler's allocation record (a torch API that could move), and its
figures carry the stamp of what measured them. Speed is the benchmark's business, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ..conftest import REPO, shared_data


@pytest.mark.slow
def test_one_batch_reports_speed_memory_and_stamp():
    shared_data("coco2014_val_anno.json")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "losses.py"), "--batches", "1", "--repeat", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result["ms_per_batch"]) == {"led_loop", "led_vectorised", "mpscd_loop", "mpscd_vectorised"}
    assert all(ms > 0 for ms in result["ms_per_batch"].values())
    # tokens [P, E] float32 and their gradient at least; far below every difference [P, P, E]
    P, E = result["led_peak_positives"], result["shape"]["E"]
    assert 2 * P * E * 4 / 2**20 <= result["led_peak_mib"] < result["pairwise_differences_mib"] / 4
    stamp = result["stamp"]
    assert stamp["command"] == "python benchmarks/losses.py --batches 1 --repeat 1 --json"
    assert stamp["torch"] == torch.__version__ and stamp["commit"] and stamp["cpu"]
