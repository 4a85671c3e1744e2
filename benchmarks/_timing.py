"""Shared timing helper for the benchmark scripts: warm-up, repeats, median.

t = measure(lambda: work(), warmup=1, repeat=5)
print(t.median, t.per_call, t.rate(items))
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence

__all__ = ["Timing", "measure", "format_table"]


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


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
