"""How long the ``mlkd-cache`` command takes to answer before any work: ``--version``, ``--help``
and a command's ``--help`` (which import no torch), beside ``import torch`` alone (what any
command that runs a model pays first). Each is a fresh interpreter, as a user's shell starts one;
the variants run in turn, and the median over repeats is printed with the goal (0.5 s), which is
not asserted.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --repeat 9 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import format_table, measure_interleaved, stamp, stamp_line  # noqa: E402

GOAL_S = 0.5  # --help and --version
CLI = "from mlkd_cache.cli.main import main; main({args!r})"
VARIANTS = {
    "mlkd-cache --version": CLI.format(args=["--version"]),
    "mlkd-cache --help": CLI.format(args=["--help"]),
    "mlkd-cache predict --help": CLI.format(args=["predict", "--help"]),
    "python -c 'import torch'": "import torch",
}


def run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of every variant")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    timings = measure_interleaved({name: (lambda c=code: run(c)) for name, code in VARIANTS.items()}, repeat=args.repeat)
    torch_s = timings["python -c 'import torch'"].median
    if args.json:
        print(json.dumps({"stamp": stamp(), "goal_s": GOAL_S, "timings": {k: t.as_dict() for k, t in timings.items()}}, indent=2))
        return
    rows = [
        [
            name,
            f"{t.median:.3f}",
            f"{t.min:.3f}",
            f"{t.median / torch_s:.2f}",
            "" if "torch" in name else ("yes" if t.median < GOAL_S else "NO"),
        ]
        for name, t in timings.items()
    ]
    print(f"startup, median of {args.repeat} fresh interpreters")
    print(format_table(rows, ["command", "median s", "min s", "x import torch", f"< {GOAL_S} s"]))
    print(stamp_line())


if __name__ == "__main__":
    main()
