"""How far offline targets and loss terms sit from online ones, from one student state at every step.

The figures behind the tolerances of the teacher-forced equivalence test
(tests/engine/test_distill.py, whose machinery this script runs): a tiny digits teacher (2
epochs), its cache of 2 views in every precision (``cache.dtype``: float16, float32, bfloat16,
int8), and an offline L2D (MLD + LED) and MLD + MPSCD student of 24 steps, the live teacher run
beside the cache at every step. Printed per cache precision and loss:

* per target (logits, features, positive label-wise embeddings): max |cached - live| / max |live|
  over the 24 steps, as a power of 2 (the test allows the dtype's rounding plus 2^-16);
* per term: max |term(cached) - term(live)| / |term(live)| (the test allows TERM_RTOL, or does
  not bound it: LED from an int8 cache);
* how close the teacher tokens of one group lie (one class's for CD, one image's for ID):
  max (|a|^2 + |b|^2) / d(a, b)^2, as they are and centred on the group's mean (as LED computes
  them). A rounding of the stored tokens by u|a| moves their distance d by up to 2u|a| / d,
  whatever the arithmetic; the form |a|^2 + |b|^2 - 2a.b multiplies its own rounding by the
  factor, which centring brings down to the centred one.

It imports the test's helpers, so it needs the test extras (``make venv`` installs them). Run it
under the CPU kernels to compare, e.g. ``ATEN_CPU_CAPABILITY=default``:

    python benchmarks/offline_online_gap.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mlkd_cache.commands import dump_targets as dump  # noqa: E402
from mlkd_cache.commands import teacher_train as teacher  # noqa: E402
from mlkd_cache.config import CACHE_DTYPES, load_config  # noqa: E402
from tests.bounds import RECOMPUTE  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.engine.test_distill import MPSCD_CRITERION, TERM_RTOL, crit, run_teacher_forced  # noqa: E402

CRITERIA = {"L2D": None, "MPSCD": MPSCD_CRITERION}


def log2(x: float) -> str:
    return "exact" if x == 0 else f"2^{math.log2(x):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "recompute_allowed": RECOMPUTE, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        every_output = "fields=('logits', 'features', 'label_emb')"  # each target compared with the live teacher's
        cfg_path = tiny_config(root, cache=f"dict(views=2, {every_output})", batch_size="8", max_epoch_s="2", log_every="1")
        teacher.run(load_config(cfg_path), root / "teacher", progress=False)
        teacher_pt = root / "teacher" / "teacher.pt"
        for dtype in CACHE_DTYPES:
            dump.run(load_config(cfg_path, {"cache.dtype": dtype}), teacher_pt, root / dtype, progress=False)
            for name, criterion in CRITERIA.items():
                cfg = load_config(cfg_path, {} if criterion is None else {"criterion_t2s_para": crit(criterion)})
                with pytest.MonkeyPatch.context() as patch:
                    _, records = run_teacher_forced(cfg, root / f"{dtype}-{name}", teacher_pt, root / dtype, patch)
                gaps = {k: max(r.gaps[k] for r in records) for k in records[0].gaps}
                terms = {
                    k: max(
                        abs(float(r.trained[k]) - float(r.from_live[k])) / max(abs(float(r.from_live[k])), 1e-30) for r in records
                    )
                    for k in records[0].trained
                }
                condition = {k: max(r.led_condition[k] for r in records) for k in records[0].led_condition}
                results["runs"].append(
                    {"dtype": dtype, "loss": name, "target_gaps": gaps, "term_gaps": terms, "led_condition": condition}
                )
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"CPU kernels {results['cpu_capability']}; 24 teacher-forced steps per row; max over the steps")
    for run in results["runs"]:
        targets = "  ".join(f"{k} {log2(v)}" for k, v in run["target_gaps"].items())
        allowed = TERM_RTOL.get(run["dtype"], {})
        terms = "  ".join(
            f"{k} {v:.1e} ({f'allowed {allowed[k]:.1e}' if k in allowed else 'not bounded'})" for k, v in run["term_gaps"].items()
        )
        print(f"{run['dtype']:8s} {run['loss']:5s}  targets: {targets}")
        print(f"{'':15s}terms: {terms}")
        closeness = "  ".join(f"{k} {v:.0f}" for k, v in run["led_condition"].items())
        print(f"{'':15s}closeness (|a|^2+|b|^2)/d^2 of a group's teacher tokens: {closeness}")


if __name__ == "__main__":
    main()
