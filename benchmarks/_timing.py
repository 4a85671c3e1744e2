"""Shared helpers of the benchmark scripts: timing (warm-up, repeats, median) and the stamp.

t = measure(lambda: work(), warmup=1, repeat=5)
print(t.median, t.per_call, t.rate(items))
print(stamp_line())   # mlkd-cache version, commit, CPU, torch, the command
"""

from __future__ import annotations

import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

__all__ = ["Timing", "measure", "measure_interleaved", "format_table", "stamp", "stamp_line"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Timing:
    """Wall-clock seconds of ``repeat`` runs of ``number`` calls each (warm-up runs excluded)."""

    runs: List[float] = field(default_factory=list)
    number: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def min(self) -> float:
        return min(self.runs)

    @property
    def max(self) -> float:
        return max(self.runs)

    @property
    def per_call(self) -> float:
        """Median seconds of one call."""
        return self.median / self.number

    def rate(self, items_per_call: float) -> float:
        """Items per second at the median run (``items_per_call`` items done by each call)."""
        return items_per_call / self.per_call

    def as_dict(self) -> Dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "repeat": len(self.runs), "number": self.number}


def measure(fn: Callable[[], Any], *, warmup: int = 1, repeat: int = 5, number: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then time ``repeat`` runs of ``number`` calls."""
    if repeat < 1 or number < 1:
        raise ValueError("repeat and number must be >= 1")
    for _ in range(warmup):
        fn()
    timing = Timing(number=number)
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        timing.runs.append(time.perf_counter() - start)
    return timing


def measure_interleaved(fns: Dict[str, Callable[[], Any]], *, warmup: int = 1, repeat: int = 5) -> Dict[str, Timing]:
    """:func:`measure` of several variants side by side: each repeat runs every variant once, in
    turn, so that a slow spell of the machine falls on all of them rather than on one."""
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    timings = {name: Timing() for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            timings[name].runs.append(time.perf_counter() - start)
    return timings


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def stamp() -> Dict[str, Any]:
    """What a printed figure was measured with: mlkd-cache version and commit, CPU, torch, command."""
    import torch

    from mlkd_cache import __version__

    return {
        "mlkd_cache": __version__,
        "commit": _commit(),
        "cpu": f"{_cpu_name()} ({torch.get_num_threads()} threads, kernels {torch.backends.cpu.get_cpu_capability()})",
        "torch": torch.__version__,
        "command": shlex.join(["python", str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]])
        if Path(sys.argv[0]).resolve().is_relative_to(REPO)
        else shlex.join(sys.argv),
    }


def stamp_line() -> str:
    s = stamp()
    return f"mlkd-cache {s['mlkd_cache']} ({s['commit']}), torch {s['torch']}, {s['cpu']}: {s['command']}"
