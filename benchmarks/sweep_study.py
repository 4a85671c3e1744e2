"""Does tuned distillation beat a tuned no-KD student? Two sweeps of one budget, then the winners on seeds.

One teacher and one cache of ``--views`` views (trained and dumped here, or given with
``--teacher`` / ``--cache``), then, through the real CLI:

1. ``mlkd-cache sweep --no-kd`` and ``mlkd-cache sweep --cache CACHE`` (L2D offline), each with
   ``--trials`` trials of the config's epochs, ``--jobs`` workers, TPE and the median pruner,
   every trial scored on val (the default space: lr_s, and for L2D each active loss weight,
   log-uniform over a tenth to ten times the config's value);
2. each sweep's best config (``OUT/best.py``) trained on seeds 0..N-1: seed 0 is the best trial
   itself, the others ``distill-student -c best.py --seed K`` (as many at a time as ``--jobs``,
   one thread each, as the trials ran), each student scored on val and test;
3. the paired difference of test mAP, tuned L2D minus tuned no KD (same seed: same
   initialisation and data order), mean ± std and its 95% t-interval;
4. what the sweeps cost: the trials' worker-seconds, against the same trials with the teacher
   online, priced by the epoch times of the best L2D config trained ``--timing-epochs`` epochs
   from the cache and with a live teacher on fresh views, one after the other, alone, with the
   trials' thread count (trial times themselves depend on what else the machine ran).

Choices are made on val only; test is scored once per winner and seed. Finished steps in
``--work`` are reused (sweeps resume), so an interrupted study can be rerun. Prints a table
(``--json``: one JSON object) and writes ``WORK/sweep_study.json``, stamped.

    python benchmarks/sweep_study.py --benchmark voc-rf144 --work runs/sweep-voc          # about 80 min on 2 cores
    python benchmarks/sweep_study.py --benchmark digits --trials 12 --work runs/sweep-digits
    python benchmarks/sweep_study.py --quick                                             # smoke run, < 2 min
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import REPO, format_table, stamp  # noqa: E402

from mlkd_cache.stats import paired, summarise  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
BENCHMARKS = {
    "digits": ("digits/resnet10t_to_test_resnet_l2d.py", None),
    "voc-rf144": ("voc-rf144/resnet10t_to_test_resnet_l2d.py", SHARED / "voc2007-rf144"),
}
QUICK = ["--set", "dataset_para=dict(train_size=96, val_size=48, test_size=48)", "--set", "model_t='test_resnet'"]
QUICK += [
    "--set",
    "img_size=32",
    "--set",
    "embed_dim=32",
    "--set",
    "workers=0",
    "--set",
    "max_epoch_t=1",
    "--set",
    "max_epoch_s=2",
]
REGIMES = {"no KD, tuned": ["--no-kd"], "L2D offline, tuned": []}  # the cache is added to the offline one


def cli(args: List[str], threads: int, log: Path) -> float:
    """Run ``mlkd-cache ARGS`` with ``threads`` torch threads; its output goes to ``log``. Returns seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", "mlkd_cache", *args], env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"mlkd-cache {' '.join(args[:1])} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - started


def last_row(run: Path) -> Dict[str, Any]:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_map(student: Path, data: List[str]) -> float:
    from mlkd_cache.commands import evaluate

    root = data[data.index("--data-root") + 1] if "--data-root" in data else None
    return float(evaluate.run(student, data_root=root, split="test")["metrics"]["mAP"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="voc-rf144")
    parser.add_argument("--trials", type=int, default=20, help="trials per sweep (default 20)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds each winner is trained on (default 5)")
    parser.add_argument("--jobs", type=int, default=2, help="sweep workers and seed runs at a time (default 2)")
    parser.add_argument("--views", type=int, default=16, help="views of the cache (default 16)")
    parser.add_argument("--teacher", type=Path, default=None, help="a trained teacher.pt of the config (else trained here)")
    parser.add_argument("--cache", type=Path, default=None, help="its cache of --views views (else dumped here)")
    parser.add_argument(
        "--timing-epochs",
        type=int,
        default=3,
        help="epochs of the offline and online runs whose epoch times price an online sweep (default 3)",
    )
    parser.add_argument(
        "--untuned", action="store_true", help="also train the config's own values (no KD and L2D) on the same seeds"
    )
    parser.add_argument("--work", type=Path, default=Path("runs/sweep-study"))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny digits, 4 trials, 2 seeds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.benchmark, args.trials, args.seeds, args.views = "digits", 4, 2, 2
    config, root = BENCHMARKS[args.benchmark]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    data = (["--data-root", str(root)] if root else []) + (QUICK if args.quick else [])
    per_job = max(1, (os.cpu_count() or 1) // args.jobs)

    teacher = args.teacher or work / "teacher" / "teacher.pt"
    if not teacher.exists():
        cli(["teacher-train", "-c", config, *data, "-o", str(teacher.parent), "--no-progress"], os.cpu_count() or 1, log)
    cache = args.cache or work / "cache"
    if not (cache / "manifest.json").exists():
        cli(
            [
                "dump-targets",
                "-c",
                config,
                *data,
                "-t",
                str(teacher),
                "-o",
                str(cache),
                "--views",
                str(args.views),
                "--no-progress",
            ],
            os.cpu_count() or 1,
            log,
        )

    rows: Dict[str, Dict[str, Any]] = {}
    for name, regime in REGIMES.items():
        out = work / ("sweep-no-kd" if regime else "sweep-l2d")
        regime = regime or ["--cache", str(cache)]
        wall_file = work / f"{out.name}.wall_s"  # the sweep's wall time, kept for a rerun that reuses it
        done = (out / "sweep.json").exists() and wall_file.exists()
        if done:
            states = json.loads((out / "sweep.json").read_text())["states"]
            done = states["complete"] + states["pruned"] >= args.trials
        if done:
            wall = float(wall_file.read_text())
        else:
            sweep = [
                "sweep",
                "-c",
                config,
                *data,
                *regime,
                "-o",
                str(out),
                "--trials",
                str(args.trials),
                "--jobs",
                str(args.jobs),
            ]
            wall = cli(sweep, 1, log)
            wall_file.write_text(f"{wall}\n")
        result = json.loads((out / "sweep.json").read_text())
        best = result["best"]
        runs: Dict[int, Path] = {0: out / "trials" / f"{best['number']:04d}"}
        for seed in range(1, args.seeds):
            runs[seed] = out / f"best-seed{seed}"

        todo = [
            (
                ["distill-student", "-c", best["config"], *regime, "--seed", str(seed), "-o", str(run), "--no-progress"],
                best["threads"] or per_job,
                log,
            )
            for seed, run in runs.items()
            if seed and not (run / "student.pt").exists()
        ]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: cli(*job), todo))
        trials = result["trials"]
        rows[name] = {
            "params": best["params"],
            "best_trial": best["number"],
            "best_val": best["value"],
            "val": {s: float(last_row(r)["mAP"]) for s, r in runs.items()},
            "test": {s: test_map(r / "student.pt", data) for s, r in runs.items()},
            "states": result["states"],
            "sweep_wall_s": wall,
            "trial_seconds": sum(t["wall_s"] or 0.0 for t in trials),
            "trial_epochs": sum(t["epochs"] for t in trials if t["state"] in ("complete", "pruned")),
        }

    untuned: Dict[str, Dict[str, Any]] = {}
    if args.untuned:  # the config's own values on the same seeds: what the tuning itself gained
        for name, regime in (("no KD, config", ["--no-kd"]), ("L2D offline, config", ["--cache", str(cache)])):
            runs = {seed: work / f"config-{'no-kd' if regime == ['--no-kd'] else 'l2d'}-seed{seed}" for seed in range(args.seeds)}
            todo = [
                (
                    [
                        "distill-student",
                        "-c",
                        config,
                        *data,
                        *regime,
                        "--seed",
                        str(seed),
                        "--set",
                        "eval_split='val'",
                        "-o",
                        str(run),
                        "--no-progress",
                    ],
                    per_job,
                    log,
                )
                for seed, run in runs.items()
                if not (run / "student.pt").exists()
            ]
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(lambda job: cli(*job), todo))
            untuned[name] = {
                "val": {s: float(last_row(r)["mAP"]) for s, r in runs.items()},
                "test": {s: test_map(r / "student.pt", data) for s, r in runs.items()},
            }

    # the cost of the same trials online: the best L2D config trained a few epochs from the cache and
    # with the live teacher, one after the other, alone, with the trials' thread count
    epoch_s: Dict[str, float] = {}
    best_config = json.loads((work / "sweep-l2d" / "sweep.json").read_text())["best"]["config"]
    for mode, source in (("offline", ["--cache", str(cache)]), ("online", ["-t", str(teacher), "--fresh-views"])):
        run = work / f"epochs-{mode}"
        if not (run / "student.pt").exists():
            epochs = str(args.timing_epochs)
            cli(
                [
                    "distill-student",
                    "-c",
                    best_config,
                    *source,
                    "--epochs",
                    epochs,
                    "-o",
                    str(run),
                    "--no-progress",
                    "--set",
                    f"eval_every={epochs}",
                ],
                per_job,
                log,
            )
        epoch_s[mode] = _epoch_seconds_of(run)
    kd = rows["L2D offline, tuned"]
    base = rows["no KD, tuned"]
    result = {
        "benchmark": args.benchmark,
        "config": config,
        "trials": args.trials,
        "seeds": args.seeds,
        "jobs": args.jobs,
        "views": args.views,
        "timing_epochs": args.timing_epochs,
        "rows": rows,
        "paired_test": paired(kd["test"], base["test"]),
        "paired_val": paired(kd["val"], base["val"]),
        "epoch_s": epoch_s,
        "online_sweep_s_projected": kd["trial_seconds"] * epoch_s["online"] / epoch_s["offline"],
        "untuned": untuned,
        "paired_untuned_test": paired(untuned["L2D offline, config"]["test"], untuned["no KD, config"]["test"])
        if untuned
        else None,
        "tuning_gain_test": {
            "no KD": paired(base["test"], untuned["no KD, config"]["test"]),
            "L2D offline": paired(kd["test"], untuned["L2D offline, config"]["test"]),
        }
        if untuned
        else None,
        "stamp": stamp(),
    }
    (work / "sweep_study.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if args.json else render(result))
    return 0


def _epoch_seconds_of(run: Path) -> float:
    """Median training seconds per epoch of one run (its metrics.jsonl)."""
    import statistics

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return float(statistics.median(r["train_time_s"] for r in rows))


def _diff(d: Dict[str, Any]) -> str:
    """A paired difference: mean ± std, its 95% interval, beyond or within the noise."""
    ci = "n/a" if d["ci95"] is None else f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
    return f"{d['mean']:+.2f} ± {d['std']:.2f}, 95% interval {ci}, {'beyond' if d['beyond_noise'] else 'within'} the noise"


def _pm(values: Dict[Any, float]) -> str:
    s = summarise(list(values.values()))
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def render(result: Dict[str, Any]) -> str:
    s = result["stamp"]
    lines = [f"mlkd-cache {s['mlkd_cache']} ({s['commit']}), torch {s['torch']}, {s['cpu']}: {s['command']}"]
    lines.append(
        f"{result['benchmark']}: {result['trials']} trials per sweep ({result['jobs']} workers), each winner on {result['seeds']} seeds"
    )
    headers = ["row", "best trial (val mAP)", "tuned values", "val mAP", "test mAP", "trials c/p/f", "sweep wall"]
    table = []
    for name, row in result["rows"].items():
        values = ", ".join(f"{k.rsplit('.', 1)[-1]} {v:.3g}" for k, v in row["params"].items())
        states = row["states"]
        table.append(
            [
                name,
                f"#{row['best_trial']} ({row['best_val']:.2f})",
                values,
                _pm(row["val"]),
                _pm(row["test"]),
                f"{states['complete']}/{states['pruned']}/{states['fail']}",
                f"{row['sweep_wall_s'] / 60:.1f} min",
            ]
        )
    lines.append(format_table(table, headers))
    v = result["paired_val"]
    lines.append(
        f"tuned L2D - tuned no KD, test mAP, paired over seeds: {_diff(result['paired_test'])} "
        f"(val: {v['mean']:+.2f} ± {v['std']:.2f})"
    )
    for name, row in result["untuned"].items():
        lines.append(f"{name}: val mAP {_pm(row['val'])}, test mAP {_pm(row['test'])}")
    if result["untuned"]:
        u, g = result["paired_untuned_test"], result["tuning_gain_test"]
        lines.append(f"config L2D - config no KD, test mAP, paired: {_diff(u)}")
        lines.append(f"tuned - config, test mAP, paired: no KD {_diff(g['no KD'])}; L2D offline {_diff(g['L2D offline'])}")
    kd, e = result["rows"]["L2D offline, tuned"], result["epoch_s"]
    lines.append(
        f"the L2D sweep's trials trained {kd['trial_seconds'] / 60:.0f} worker-min ({kd['trial_epochs']} epochs); an epoch of its best "
        f"config takes {e['offline']:.2f} s from the cache and {e['online']:.2f} s with the teacher online (median of "
        f"{result.get('timing_epochs', 3)}, alone, one thread each): the same trials online would train about "
        f"{result['online_sweep_s_projected'] / 60:.0f} worker-min ({e['online'] / e['offline']:.2f}x)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
