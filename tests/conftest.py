"""Shared fixtures: a tiny digits recipe that trains in seconds on CPU, and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import pytest

from mlkd_cache.data.transforms import model_input
from mlkd_cache.runtime.checkpoint import load_checkpoint as _load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# One thread per process for the tiny models: they gain nothing from more, CPU kernels then sum in
# the same order in every process, and on a busy machine runs are several times faster.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data (real photographs and annotation files); the test is skipped,
    naming the path, on a checkout without that folder."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data absent: {path}")
    return path


# Folders whose every test compares computed numbers with a tolerance: they carry the ``numeric``
# marker (`make test-numeric` reruns those tests on the generic and the AVX2 kernels), as do
# the tests marked one by one elsewhere.
NUMERIC_FOLDERS = ("losses", "models")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name in NUMERIC_FOLDERS:
            item.add_marker(pytest.mark.numeric)


# A digits run small enough for the test suite: timm's test_resnet, 32-px canvases.
TINY = {
    "dataset_para": "dict(train_size=96, test_size=48)",
    "model_t": "'test_resnet'",
    "model_s": "'test_resnet'",
    "img_size": "32",
    "batch_size": "16",
    "embed_dim": "32",
    "workers": "0",
    "lr_t": "3e-3",
    "lr_s": "3e-3",
}


def tiny_config(tmp_path: Path, **extra: str) -> Path:
    """Write a config file with the TINY recipe (plus ``extra`` key=python-literal lines)."""
    values = {**TINY, "max_epoch_t": "2", "max_epoch_s": "2", **extra}
    path = tmp_path / "tiny_digits.py"
    path.write_text("dataset = 'digits'\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return path


@pytest.fixture
def tiny_cfg_path(tmp_path) -> Path:
    return tiny_config(tmp_path)


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads in this process (in-process runs, see ONE_THREAD)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """A module's in-process runs on one torch thread: ``pytest.mark.usefixtures("one_torch_thread")``."""
    with torch_threads(1):
        yield


def run_cli(args: Sequence[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m mlkd_cache ARGS`` in a real process; returns the completed process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlkd_cache", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def run_cli_in_process(args: Sequence[str], threads: int = 1) -> subprocess.CompletedProcess:
    """Run the CLI's ``main(ARGS)`` in this process, as ``python -m mlkd_cache ARGS`` would:
    stdout, stderr (log lines included) and the exit code captured; an exception that escapes
    ``main`` becomes exit code 1 with its traceback on stderr, as the interpreter prints it.
    Much cheaper than a process (no interpreter start, no torch import). Torch runs on
    ``threads`` threads meanwhile (1, as the ``ONE_THREAD`` processes: the same sums in the same
    order); its thread count and the logging set-up are restored afterwards."""
    import contextlib
    import io
    import logging
    import traceback

    import torch

    from mlkd_cache.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    root, saved_threads = logging.getLogger(), torch.get_num_threads()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []  # so that the command's logging.basicConfig writes to the captured stderr
    code = 0
    torch.set_num_threads(threads)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
    finally:
        root.handlers, root.level = saved_handlers, saved_level
        torch.set_num_threads(saved_threads)
    return subprocess.CompletedProcess(["mlkd-cache", *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> str:
    """Exit code 2, no traceback, one line on stderr that contains ``match``."""
    import re

    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


def assert_ends_with_error(proc: subprocess.CompletedProcess, match: str) -> str:
    """A run that failed after some work: exit code 2, no traceback, and its stderr (progress
    and log lines allowed) ends with one ``error:`` line that contains ``match``."""
    import re

    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("error: "), proc.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, proc.stderr
    assert re.search(match, lines[-1]), lines[-1]
    return lines[-1]


def wait_for_checkpoint(out: Path, proc, epochs_done: int, timeout: float = 240) -> None:
    """Poll until ``out/checkpoint.pt`` records ``epochs_done`` epochs (then a SIGKILL lands mid-run)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before it could be killed: {proc.stderr.read()}")
        ckpt = out / "checkpoint.pt"
        if ckpt.exists():
            try:
                if _load_checkpoint(ckpt, require=("epoch",))["epoch"] >= epochs_done:
                    return
            except Exception:
                pass  # being renamed into place
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


# float32 arithmetic repeated in another process on one thread is the same arithmetic: equal up
# to a few units in the last place (eps = 2^-23 = 1.2e-7) at most.
SAME_ARITHMETIC_RTOL = 8 * 2.0**-23


def first_step_terms(trainer, world_size: int, rank: int = 0) -> dict:
    """The loss terms rank ``rank`` of a ``world_size``-rank torchrun run computes at its first
    step, recomputed in this process from ``trainer`` (built, not yet trained: the run's initial
    weights): its share of the first global batch, drawn as the run's loader draws it (the
    loader's seed comes from the global RNG, as in the run), through the model in training mode.
    What must equal the first row of that rank's steps.jsonl."""
    from torch.utils.data import DataLoader

    from mlkd_cache.data.sampler import EpochSampler

    cfg = trainer.cfg
    sampler = EpochSampler(trainer.train_data, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(
        trainer.train_data,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=trainer.make_collate(),
        generator=trainer.loader.generator,
    )
    trainer.model.train()
    batch = next(iter(loader))
    batch = batch._replace(image=model_input(batch.image, trainer.spec, trainer.info.device))  # as train_one_epoch hands it on
    terms = trainer.loss_terms(batch, trainer.model(batch.image))
    return {k: float(v.detach()) for k, v in terms.items()}


def calibrate_batchnorm(model, images, transform) -> None:
    """Set ``model``'s BatchNorm statistics to those of ``images`` (eval inputs, uint8) and leave it
    in eval mode: a freshly initialised network scores every image alike, a calibrated one gives
    each image its own probabilities, so label sets (and a wrong decode) have something to show."""
    import torch

    pixels = torch.stack([item.image for item in images])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average
    with torch.no_grad():
        model.train()(model_input(pixels, transform, torch.device("cpu")))
    model.eval()


def run_benchmark_json(script: str, *args: str, timeout: int = 300) -> dict:
    """Run ``benchmarks/<script>`` with ``args`` and ``--json`` in a fresh interpreter from the
    repository root (as its docstring says to run it); its one JSON object."""
    import json

    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)
