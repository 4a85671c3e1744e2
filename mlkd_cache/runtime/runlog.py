"""A training run's folder: its file names (:class:`RunFiles`) and its logs, ``metrics.jsonl``
(one row per epoch) and ``steps.jsonl`` (loss terms every N steps), and, with ``tensorboard``,
the same rows as TensorBoard event files (:class:`TensorBoardLog`).

Both JSONL logs are appended and fsynced, so after a kill they hold whole rows; a resume truncates
them to the epochs its checkpoint has done (and hides the TensorBoard points logged after it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import require_module
from ..fileio import append_text, atomic_write_bytes

__all__ = ["RunFiles", "MetricsLog", "StepLog", "TensorBoardLog", "require_tensorboard"]


@dataclass(frozen=True)
class RunFiles:
    """The files of one training run in ``out``: resumable state, final weights, logs."""

    out: Path
    role: Optional[str] = None  # "teacher" or "student" (ROLES): the final checkpoint is OUT/<role>.pt

    def __post_init__(self) -> None:
        from ..models.card import ROLES  # imported here: run folders are named without torch

        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        object.__setattr__(self, "out", Path(self.out))

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: weights and the state ``--resume`` needs, after every epoch."""
        return self.out / "checkpoint.pt"

    @property
    def final(self) -> Path:
        """``teacher.pt`` / ``student.pt``: the card and final weights, written once at the end."""
        if self.role is None:
            raise ValueError("RunFiles without a role names no final checkpoint")
        return self.out / f"{self.role}.pt"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def steps(self) -> Path:
        return self.out / "steps.jsonl"

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``: TensorBoard event files (config key ``tensorboard``), one per start or resume."""
        return self.out / "tensorboard"


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch, appended and fsynced as each epoch ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is not trusted
        return rows

    def truncate_to(self, epochs_done: int) -> None:
        """Keep only the rows of epochs ``<= epochs_done`` (used on resume) - atomically."""
        rows = [r for r in self.read() if int(r.get("epoch", 0)) <= epochs_done]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def reset(self) -> None:
        atomic_write_bytes(self.path, b"")

    def append(self, row: Mapping[str, Any]) -> None:
        append_text(self.path, json.dumps(dict(row)) + "\n")


class StepLog(MetricsLog):
    """``steps.jsonl``: loss terms of every ``log_every``-th training step, one JSON object per
    line (``epoch`` is 1-based, ``step`` counts from 1 within the epoch). Rows are buffered and
    appended with one fsync per :meth:`flush` (the trainer flushes at each epoch's end), so
    after a kill the file holds whole epochs; :meth:`truncate_to` keeps it in step with a resume.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._pending: List[Dict[str, Any]] = []

    def add(self, row: Mapping[str, Any]) -> None:
        self._pending.append(dict(row))

    def flush(self) -> None:
        if not self._pending:
            return
        append_text(self.path, "".join(json.dumps(r) + "\n" for r in self._pending))
        self._pending = []


def require_tensorboard() -> Any:
    """torch's ``SummaryWriter`` class, or :class:`~mlkd_cache.errors.MissingDependencyError` with
    the install line (imported here only: a run without ``tensorboard`` never imports the package)."""
    return require_module(
        "torch.utils.tensorboard", "writing TensorBoard logs (--tensorboard)", package="tensorboard"
    ).SummaryWriter


class TensorBoardLog:
    """``tensorboard/``: the rows of ``steps.jsonl`` and ``metrics.jsonl`` as TensorBoard scalars,
    tagged ``step/<key>`` and ``epoch/<key>`` (``epoch`` and ``step`` themselves are the x axis).

    Both are numbered by the global step, ``(epoch - 1) * steps_per_epoch + step`` (1-based), an
    epoch's row at its last step, so step and epoch curves share an axis and a resume continues
    them. Each writer adds a new event file to the folder and marks the points after
    ``epochs_done`` as purged, so the steps a killed run logged beyond its checkpoint are hidden
    in favour of the resumed ones. Values are stored as float32 (TensorBoard's scalars).
    """

    def __init__(self, path: Path, steps_per_epoch: int, epochs_done: int = 0) -> None:
        summary_writer = require_tensorboard()
        self.steps_per_epoch = steps_per_epoch
        self.writer = summary_writer(str(path), purge_step=epochs_done * steps_per_epoch + 1)

    def _add(self, prefix: str, row: Mapping[str, Any], step: int, skip: Tuple[str, ...]) -> None:
        for key, value in row.items():
            if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def add_step(self, row: Mapping[str, Any]) -> None:
        """One ``steps.jsonl`` row (``epoch`` and ``step`` 1-based); on disk by the epoch's flush at the latest."""
        step = (int(row["epoch"]) - 1) * self.steps_per_epoch + int(row["step"])
        self._add("step", row, step, skip=("epoch", "step"))

    def add_epoch(self, row: Mapping[str, Any]) -> None:
        """One ``metrics.jsonl`` row, then everything written so far is flushed to disk."""
        self._add("epoch", row, int(row["epoch"]) * self.steps_per_epoch, skip=("epoch",))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class RunLogs:
    """The logs of one training run, written by rank 0 alone (on other ranks every call is a
    no-op): ``metrics.jsonl`` (a row per epoch), ``steps.jsonl`` (a row every ``log_every``-th
    step; 0: none) and, with ``tensorboard``, the same rows as TensorBoard scalars."""

    def __init__(self, files: RunFiles, is_main: bool, log_every: int, tensorboard: bool, steps_per_epoch: int) -> None:
        self.files, self.is_main, self.log_every = files, is_main, log_every
        self.tensorboard, self.steps_per_epoch = tensorboard, steps_per_epoch
        self.metrics, self.steps = MetricsLog(files.metrics), StepLog(files.steps)
        self.board: Optional[TensorBoardLog] = None

    def start(self, epochs_done: int, resume: bool) -> None:
        """A new run starts its logs empty; a resumed one keeps the rows of its ``epochs_done``
        epochs (a killed run may have logged more); TensorBoard continues from there."""
        if not self.is_main:
            return
        if resume:
            self.metrics.truncate_to(epochs_done)
            if self.files.steps.exists():
                self.steps.truncate_to(epochs_done)
        else:
            self.metrics.reset()
            if self.log_every:
                self.steps.reset()
        if self.tensorboard:
            self.board = TensorBoardLog(self.files.tensorboard, self.steps_per_epoch, epochs_done)

    def wants_step(self, step: int) -> bool:
        """Whether the (0-based) ``step`` of an epoch is logged."""
        return self.is_main and bool(self.log_every) and (step + 1) % self.log_every == 0

    def step(self, row: Mapping[str, Any]) -> None:
        """One row of ``steps.jsonl`` (buffered until the epoch's end), and its scalars."""
        self.steps.add(row)
        if self.board is not None:  # the same row, no extra sync
            self.board.add_step(row)

    def epoch(self, row: Mapping[str, Any]) -> None:
        """The epoch's steps and its row of ``metrics.jsonl``, on disk (fsynced), and its scalars."""
        if not self.is_main:
            return
        self.steps.flush()
        self.metrics.append(row)
        if self.board is not None:
            self.board.add_epoch(row)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
