"""make gpu-check on a machine without CUDA: one line, exit 0, nothing run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ..conftest import REPO


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check runs for real")
def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "gpu-check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing was run"
    ]
    assert not (tmp_path / "w").exists()
