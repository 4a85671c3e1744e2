"""Decision thresholds measured without leakage: tuned on val, scored on test.

For each benchmark (the embedded digits, and VOC 2007 rf144 real photographs) and each seed, a
student trained by the shipped config (``distill-student --no-kd``: the decision rule is a
property of the scores, not of how they were trained; and on digits also the L2D student
distilled offline from a cache of the shipped teacher) is scored on test under three decision
rules, the per-class and global thresholds chosen on the val split only:

* ``0.5``: every class at probability 0.5 (the ML-GCN protocol);
* ``global``: one threshold for every class, the one maximising OF1 (micro F1) on val;
* ``per-class``: each class at the threshold maximising its own F1 on val (``tune-thresholds``,
  what ``distill-student`` stores in ``student.pt``), classes val cannot tune at ``global``.

It prints OF1 and CF1 on test (mean ± std over seeds) and the paired per-seed differences to
``0.5`` (mean ± std, 95% t-interval, * beyond the noise). Runs are kept in ``--work`` and reused.

    python benchmarks/thresholds.py                                   # both benchmarks, 3 seeds
    python benchmarks/thresholds.py --benchmark digits --seeds 5 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from mlkd_cache.commands import distill_student as distill
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import evaluate
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config
from mlkd_cache.metrics import sigmoid, threshold_f1
from mlkd_cache.runtime.runlog import RunFiles
from mlkd_cache.stats import paired, summarise
from mlkd_cache.thresholds import tune_thresholds

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARKS = {  # name -> (shipped config, data root or None, students)
    "digits": ("digits/resnet10t_to_test_resnet_l2d.py", None, ("no-kd", "l2d-offline")),
    "voc-rf144": ("voc-rf144/resnet10t_to_test_resnet_l2d.py", SHARED / "voc2007-rf144", ("no-kd",)),
}
RULES = ("0.5", "global", "per-class")


def student(bench: str, kind: str, seed: int, work: Path) -> Path:
    """``student.pt`` of ``kind`` trained with ``seed`` (reused when its folder holds one)."""
    config, root, _ = BENCHMARKS[bench]
    cfg = load_config(config, {"data_root": str(root) if root else None, "seed": seed})
    out = work / bench / f"{kind}-seed{seed}"
    files = RunFiles(out, "student")
    if files.final.is_file():
        return files.final
    if kind == "no-kd":
        distill.run(cfg, out, no_kd=True, progress=False, resume=files.checkpoint.is_file())
        return files.final
    base = load_config(config, {"data_root": str(root) if root else None})  # one teacher and cache (seed 0) for every seed
    teacher_out, cache = work / bench / "teacher", work / bench / "cache"
    if not RunFiles(teacher_out, "teacher").final.is_file():
        teacher.run(base, teacher_out, progress=False, resume=RunFiles(teacher_out, "teacher").checkpoint.is_file())
    if not (cache / "manifest.json").is_file():
        dump.run(base, RunFiles(teacher_out, "teacher").final, cache, progress=False)
    distill.run(cfg, out, cache=cache, progress=False, resume=files.checkpoint.is_file())
    return files.final


def score(checkpoint: Path, data_root: Any) -> Dict[str, Dict[str, float]]:
    """OF1 and CF1 (percent) on test under each rule, thresholds chosen on val."""
    root = str(data_root) if data_root else None
    val = evaluate.run(checkpoint, data_root=root, split="val", keep_logits=True)
    test = evaluate.run(checkpoint, data_root=root, split="test", keep_logits=True)
    tuned = tune_thresholds(sigmoid(val["logits"]), val["labels"], "f1")
    at = {"0.5": 0.5, "global": tuned["global"], "per-class": np.asarray(tuned["values"])}
    out = {}
    for rule, t in at.items():
        m = threshold_f1(test["logits"], test["labels"], t)
        out[rule] = {"OF1": float(m["OF1"]), "CF1": float(m["CF1"])}
    out["per-class"]["fallback_classes"] = len(tuned["fallback"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=[*BENCHMARKS, "both"], default="both")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/thresholds"))
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    benches = list(BENCHMARKS) if args.benchmark == "both" else [args.benchmark]
    for bench in benches:
        root = BENCHMARKS[bench][1]
        if root is not None and not root.is_dir():
            parser.error(f"the {bench} benchmark needs its data in {root}")
    started = time.perf_counter()
    records: List[Dict[str, Any]] = []
    for bench in benches:
        for kind in BENCHMARKS[bench][2]:
            for seed in range(args.seeds):
                path = student(bench, kind, seed, args.work)
                records.append({"benchmark": bench, "student": kind, "seed": seed, **score(path, BENCHMARKS[bench][1])})
                print(f"[{time.perf_counter() - started:7.1f}s] {bench} {kind} seed {seed} scored", file=sys.stderr, flush=True)
    print("OF1 / CF1 on test (%), thresholds tuned on val; mean ± std over seeds; paired difference to 0.5 (* beyond noise)")
    print(f"{'benchmark':<10} {'student':<12} {'rule':<10} {'OF1':>14} {'CF1':>14} {'OF1 - @0.5':>22} {'CF1 - @0.5':>22}")
    summary = []
    for bench in benches:
        for kind in BENCHMARKS[bench][2]:
            group = [r for r in records if r["benchmark"] == bench and r["student"] == kind]
            for rule in RULES:
                row: Dict[str, Any] = {"benchmark": bench, "student": kind, "rule": rule, "seeds": len(group)}
                cells = []
                for metric in ("OF1", "CF1"):
                    s = summarise([r[rule][metric] for r in group])
                    row[metric] = s
                    cells.append(f"{s['mean']:6.2f} ± {s['std']:5.2f}" if len(group) > 1 else f"{s['mean']:6.2f}")
                diffs = []
                for metric in ("OF1", "CF1"):
                    if rule == "0.5":
                        diffs.append("")
                        continue
                    d = paired({r["seed"]: r[rule][metric] for r in group}, {r["seed"]: r["0.5"][metric] for r in group})
                    row[f"{metric}_vs_0.5"] = d
                    star = "*" if d["beyond_noise"] else " "
                    diffs.append(f"{d['mean']:+6.2f} ± {d['std']:5.2f}{star}" if len(group) > 1 else f"{d['mean']:+6.2f}")
                summary.append(row)
                print(f"{bench:<10} {kind:<12} {rule:<10} {cells[0]:>14} {cells[1]:>14} {diffs[0]:>22} {diffs[1]:>22}")
    fallback = {f"{r['benchmark']}/{r['student']}/{r['seed']}": r["per-class"]["fallback_classes"] for r in records}
    shown = "0 in every run" if not any(fallback.values()) else fallback
    print(f"classes at the global threshold (val could not tune them): {shown}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps({"records": records, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
