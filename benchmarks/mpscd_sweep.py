"""MPSCD defaults: a small sweep of its weight and temperatures on the digits benchmark.

Uses the teacher and cache of ``mlkd-cache demo`` (built first when missing) and trains the
demo's MPSCD student (BCE + 10·MLD + MPSCD, demo recipe otherwise unchanged) for every grid
point. Grid points are compared on the digits ``val`` split (500 new canvases of *training*
scans), never on the test split: the chosen defaults are then reported on the test split by
``mlkd-cache demo --seeds 3`` like every other recipe.

    python benchmarks/mpscd_sweep.py                       # runs/demo, full grid
    python benchmarks/mpscd_sweep.py --lambdas 1 10 --taus 0.1 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from mlkd_cache.commands import demo, evaluate
from mlkd_cache.config import load_config
from mlkd_cache.runtime.runlog import MetricsLog
from mlkd_cache.runtime.students import DistillTrainer

MLD = dict(name="MLD", para=dict())


def criterion(lam: float, tau: float) -> Dict[str, Any]:
    """BCE + 10·MLD + MPSCD with both term weights ``lam`` and both temperatures ``tau``."""
    para = dict(lambda_pcrd=lam, lambda_pcsd=lam, tau=tau, tau_s=tau)
    return dict(name="MPSCD", para=dict(lambda_logits=10.0, logits_dis=MLD, lambda_le=1.0, le_dis=dict(name="MPSCD", para=para)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--demo-dir", type=Path, default=Path("runs/demo"), help="out folder of `mlkd-cache demo` (default runs/demo)"
    )
    parser.add_argument("--config", default=demo.DEFAULT_CONFIG, help="digits config (default: the demo's)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 5.0, 20.0], help="lambda_pcrd = lambda_pcsd values")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.5], help="tau = tau_s values")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    cfg = load_config(args.config, {})
    built = demo.run(cfg, args.demo_dir, progress=False, students=[])  # teacher + cache, reused when present
    cache = Path(built["cache"]["out"])
    rows: List[Dict[str, Any]] = []
    for lam in args.lambdas:
        for tau in args.taus:
            out = args.demo_dir / "sweep-mpscd" / f"lambda{lam:g}-tau{tau:g}"
            scfg = cfg.replace(criterion_t2s_para=criterion(lam, tau), eval_every=cfg.max_epoch_s)
            started = time.perf_counter()
            if not (out / "student.pt").is_file():
                DistillTrainer(scfg, out, cache=cache, resume=(out / "checkpoint.pt").is_file(), progress=False).fit()
            val = evaluate.run(out / "student.pt", split="val")["metrics"]
            train_s = sum(r.get("train_time_s", 0.0) for r in MetricsLog(out / "metrics.jsonl").read())
            rows.append(
                {
                    "lambda": lam,
                    "tau": tau,
                    "val_mAP": val["mAP"],
                    "val_OF1": val["OF1_topk"],
                    "val_CF1": val["CF1_topk"],
                    "train_time_s": train_s,
                    "run": str(out),
                    "wall_s": time.perf_counter() - started,
                }
            )
            if not args.json:
                print(f"  lambda {lam:g} tau {tau:g}: val mAP {val['mAP']:.2f}", file=sys.stderr)
    best = max(rows, key=lambda r: r["val_mAP"])
    if args.json:
        print(json.dumps({"config": cfg.source, "cache": str(cache), "rows": rows, "best": best}))
        return 0
    print(
        f"\nMPSCD sweep on digits ({cfg.source}), student {cfg.model_s}, {cfg.max_epoch_s} epochs, "
        f"cache {cache}; selection on the val split (train-pool canvases), metrics in %"
    )
    print(f"{'lambda_pcrd=lambda_pcsd':>24} {'tau=tau_s':>10} {'val mAP':>8} {'val OF1':>8} {'val CF1':>8} {'train s':>8}")
    for r in rows:
        mark = "  <- best" if r is best else ""
        print(
            f"{r['lambda']:>24g} {r['tau']:>10g} {r['val_mAP']:8.2f} {r['val_OF1']:8.2f} {r['val_CF1']:8.2f} {r['train_time_s']:8.1f}{mark}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
