"""tools/compare_runs.py, which backs the claim that a refactor changed no number: it must see a
one-ulp change in a shard, a checkpoint or a log, and ignore only clocks, folders and digests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import List

import h5py
import numpy as np
import pytest
import torch

from .conftest import REPO

pytestmark = pytest.mark.slow  # the tool runs in a process

TOOL = REPO / "tools" / "compare_runs.py"


def make_run(root: Path, logit: float, seconds: float, created: str) -> Path:
    (root / "cache").mkdir(parents=True)
    with h5py.File(root / "cache" / "shard-00000.h5", "w") as f:
        f.create_dataset("keys", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("logits", data=np.array([[0.5, logit]], dtype=np.float16))
        f.attrs["created"] = created
    torch.save({"model": {"w": torch.tensor([1.0, logit])}, "source": str(root)}, root / "student.pt")
    (root / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "mAP": logit, "train_time_s": seconds}) + "\n")
    return root


def compare(a: Path, b: Path) -> List[str]:
    spec = importlib.util.spec_from_file_location("compare_runs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare(a, b)


def test_same_numbers_pass_and_one_ulp_fails(tmp_path):
    a = make_run(tmp_path / "a", 0.25, 1.0, "2026-12-01T00:00:00")
    b = make_run(tmp_path / "b", 0.25, 9.0, "2026-12-02T00:00:00")  # other clock, folder, creation time
    assert compare(a, b) == []
    c = make_run(tmp_path / "c", float(np.nextafter(np.float16(0.25), np.float16(1))), 1.0, "x")
    diff = "\n".join(compare(a, c))
    assert "cache/shard-00000.h5/logits: bytes differ" in diff
    assert "student.pt.model.w: tensors differ" in diff and "metrics.jsonl[0].mAP" in diff
    proc = subprocess.run([sys.executable, str(TOOL), str(a), str(c)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout.splitlines()[-1].startswith("3 difference(s) over 3 files")
