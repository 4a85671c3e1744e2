"""The sdist and wheel: built offline from the checkout, installed into a fresh virtual
environment, and used there as a user would (console script, shipped configs, one tiny epoch)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import mlkd_cache

from .conftest import ONE_THREAD, REPO


def run(args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, REPO])  # sdist, then the wheel from it
    wheel = next(dist.glob("mlkd_cache-*.whl"))
    assert next(dist.glob("mlkd_cache-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "mlkd_cache/__init__.py",
        "mlkd_cache/cli/main.py",
        "mlkd_cache/configs/digits/resnet10t_to_test_resnet_l2d.py",
    ):
        assert expected in names
    assert not any(n.startswith(("tests/", "cli/", "configs/")) for n in names)  # no stray top-level packages

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python, script = venv / "bin" / "python", venv / "bin" / "mlkd-cache"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel])
    # the dependencies (torch, timm, ...) come from this environment, as a .pth after the fresh site-packages
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"  # not the checkout: nothing may come from it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | ONE_THREAD
    where = run([python, "-c", "import mlkd_cache; print(mlkd_cache.__file__)"], cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    assert (
        run([python, "-m", "mlkd_cache", "--version"], cwd=work, env=env).stdout.strip()
        == f"mlkd-cache, version {mlkd_cache.__version__}"
    )
    assert "teacher-train" in run([script, "--help"], cwd=work, env=env).stdout
    tiny = [
        "--set", "model_t=test_resnet", "--set", "img_size=32", "--set", "embed_dim=32", "--set", "workers=0",
        "--set", "dataset_para=dict(train_size=64, val_size=32, test_size=32)", "--set", "dataset_para_t=dict(train_size=64)",
    ]  # fmt: skip
    proc = run(
        [
            script,
            "teacher-train",
            "-c",
            "digits/resnet10t_to_test_resnet_l2d.py",
            "-o",
            "out",
            "--epochs",
            "1",
            "--no-progress",
            *tiny,
        ],
        cwd=work,
        env=env,
    )
    assert (work / "out" / "teacher.pt").is_file() and "trained 1 epochs" in proc.stdout, proc.stdout
