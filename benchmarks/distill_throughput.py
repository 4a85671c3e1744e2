"""Student training throughput: no-KD, online KD and offline KD, against the ideal speed-up.

One run, one teacher/student pair (default resnet50 -> resnet18, timm, random init: no
pretrained weights, nothing downloaded), the embedded digits data at 64 px, the same batch
size, workers and sample order (same sampler seed and epochs) in every mode:

* ``no-kd``: ``Trainer(cfg, 's')``, the student on the hard-label loss only;
* ``online``: ``DistillTrainer(teacher=teacher.pt)``, the teacher run live on every batch;
* ``offline``: ``DistillTrainer(cache=DIR)``, teacher targets read from a ``dump-targets``
  cache of the same teacher (its dump time is reported too).

Each mode first runs one untimed warm-up epoch; then ``--rounds`` rounds, each of one
``train_one_epoch`` per mode in turn (no-kd, online, offline, no-kd, ...): interleaved, so
that load from other jobs falls on every mode alike. ``train_one_epoch`` does not evaluate;
its ``train_time_s`` covers data loading (DataLoader workers start each epoch), forward,
losses, backward and optimiser. steps/s = len(loader) / train_time_s, best (default) or median
of the rounds (``--stat``).

After each round, on ``--batches`` preloaded batches (no data loading), two costs are timed
side by side, alternating batch by batch: the teacher's no-grad eval forward (the online
trainer's own ``source.targets``) and one no-KD student step (forward, hard loss, backward,
optimiser step). With the same statistic over all rounds:
ideal speed-up = (t_teacher_forward + t_student_step) / t_student_step, the most that skipping
the teacher can buy.

Goals (printed, not asserted): offline >= 0.95 x no-kd; offline/online >= 0.90 x ideal.

Optimiser implementations, before/after: one training step (forward, hard loss, backward,
Adam step) of the teacher and of the student with each Adam implementation of
``mlkd_cache.runtime.optim.IMPLEMENTATIONS`` — ``for-loop`` (torch's CPU default, what every
trainer here ran before), ``foreach`` and ``fused`` (what they run now) — on copies of one
model, alternating implementation by implementation on the same preloaded batches.

    python benchmarks/distill_throughput.py                 # a few minutes on 2 idle CPU cores
    python benchmarks/distill_throughput.py --quick         # smoke run, ~1 min on 2 idle cores
    python benchmarks/distill_throughput.py --samples 1024 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
from torch.utils.data._utils.collate import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import format_table  # noqa: E402

from mlkd_cache import __version__  # noqa: E402
from mlkd_cache.commands import dump_targets as dump  # noqa: E402
from mlkd_cache.commands.distill_student import DistillTrainer  # noqa: E402
from mlkd_cache.config import load_config  # noqa: E402
from mlkd_cache.data.transforms import model_input  # noqa: E402
from mlkd_cache.losses.hard import build_hard_loss  # noqa: E402
from mlkd_cache.models import build_model  # noqa: E402
from mlkd_cache.runtime.optim import IMPLEMENTATIONS, build_optimizer  # noqa: E402
from mlkd_cache.runtime.train import Trainer  # noqa: E402

CONFIG = "digits/resnet10t_to_test_resnet_l2d.py"
MODES = ("no-kd", "online", "offline")
GOAL_OFFLINE_VS_NO_KD = 0.95
GOAL_OF_IDEAL = 0.90


def make_config(args, epochs: int):
    """The shipped digits config with this benchmark's pair, sizes and loader settings."""
    return load_config(
        CONFIG,
        {
            "model_t": args.teacher,
            "model_s": args.student,
            "dataset_para": dict(train_size=args.samples, test_size=64),
            "dataset_para_t": {},
            "img_size": args.img_size,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "embed_dim": args.embed_dim,
            # OneCycle refuses to step past the planned schedule: plan more epochs than we run
            "max_epoch_s": epochs + 10,
            "stop_epoch_s": epochs + 10,
            "max_epoch_t": 1,
            "cache.views": args.views,
            "cache.dtype": "float16",
        },
    )


def pick(values: List[float], stat: str) -> float:
    """The time statistic of the runs: ``best`` (smallest) or ``median``."""
    return min(values) if stat == "best" else statistics.median(values)


def preload_batches(trainer: Trainer, count: int, batch_size: int) -> list:
    """``count`` train batches of ``trainer`` (``ViewItem``, image on the device), built in this process."""
    data = trainer.train_data
    batches = []
    for b in range(count):
        batch = default_collate([data[(b * batch_size + j) % len(data)] for j in range(batch_size)])
        batches.append(batch._replace(image=model_input(batch.image, trainer.spec, trainer.info.device)))
    return batches


def student_step(trainer: Trainer, batch) -> None:
    """One hard-label training step of the no-KD student, as ``train_one_epoch`` does it."""
    trainer.ddp.train()
    outputs = trainer.ddp(batch.image)
    loss = sum(trainer.loss_terms(batch, outputs).values())
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()


def optimizer_step_times(
    cfg, arch: str, batches: list, repeats: int, num_classes: int, device: torch.device
) -> Dict[str, List[float]]:
    """Seconds of one training step of ``arch`` per Adam implementation, alternating on ``batches``."""
    import copy

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.manual_seed(0)
    base = build_model(arch, num_classes, pretrained=None, embed_dim=cfg.embed_dim, img_size=cfg.img_size).to(device).train()
    hard = build_hard_loss("bce", {})
    setups = {}
    for impl in IMPLEMENTATIONS:
        model = copy.deepcopy(base)
        setups[impl] = (model, build_optimizer(model, cfg.optimizer, 1e-4, cfg.weight_decay, implementation=impl))
    times: Dict[str, List[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    for r in range(repeats + 1):  # the first pass warms up every implementation
        for batch in batches:
            image, labels = batch.image, batch.labels.to(device)
            for impl, (model, opt) in setups.items():
                sync()
                start = time.perf_counter()
                loss = sum(hard(model(image).logits, labels).values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sync()
                if r:
                    times[impl].append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet50", help="timm name of the teacher (default resnet50)")
    parser.add_argument("--student", default="resnet18", help="timm name of the student (default resnet18)")
    parser.add_argument("--samples", type=int, default=1024, help="train samples (default 1024)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embed-dim", type=int, default=128, help="ML-Decoder embedding size (default 128)")
    parser.add_argument("--views", type=int, default=2, help="cached views per sample (default 2)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="DataLoader workers (default 1: on 2 cores, 2 workers oversubscribe the CPU and the epoch times scatter by ±20%%)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed epochs per mode (default 5)")
    parser.add_argument(
        "--batches", type=int, default=6, help="preloaded batches for the forward/step timing, per round (default 6)"
    )
    parser.add_argument("--stat", choices=("best", "median"), default="median", help="statistic over repeats (default median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 128 samples, 2 rounds, 2 batches")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.rounds, args.batches = min(args.samples, 128), min(args.rounds, 2), min(args.batches, 2)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return run(args, Path(tempfile.mkdtemp(prefix="distill_throughput-", dir=args.work)))
    with tempfile.TemporaryDirectory(prefix="distill_throughput-") as tmp:
        return run(args, Path(tmp))


def run(args, work: Path) -> int:
    started = time.perf_counter()

    def say(text: str) -> None:  # progress on stderr, so that stdout is only the table / JSON
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    cfg = make_config(args, epochs=1 + args.rounds)

    say(f"setup: {args.teacher} teacher checkpoint (random init) ...")
    teacher = Trainer(cfg, "t", work / "teacher", progress=False)
    teacher.save(teacher.files.final, 0, with_state=False)
    teacher_pt = teacher.files.final
    del teacher

    say(f"setup: dump-targets: {args.samples} samples x {args.views} views ...")
    dumped = dump.run(cfg, teacher_pt, work / "cache", views=args.views, progress=False)

    say("setup: trainers ...")
    trainers: Dict[str, Trainer] = {
        "no-kd": Trainer(cfg, "s", work / "no-kd", progress=False),
        "online": DistillTrainer(cfg, work / "online", teacher=teacher_pt, progress=False),
        "offline": DistillTrainer(cfg, work / "offline", cache=work / "cache", progress=False),
    }
    steps = {m: len(t.loader) for m, t in trainers.items()}
    assert len(set(steps.values())) == 1, steps
    steps_per_epoch = steps["no-kd"]
    no_kd, live = trainers["no-kd"], trainers["online"].source
    device = no_kd.info.device
    batches = preload_batches(no_kd, args.batches, args.batch_size)

    def sync() -> None:  # CUDA runs asynchronously: time finished work only
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def teacher_forward(batch) -> None:
        live.targets(batch, device, ())
        sync()

    say("warm-up: one epoch per mode, untimed ...")
    for trainer in trainers.values():
        trainer.train_one_epoch(0)
    for batch in batches[:1]:
        teacher_forward(batch)
        student_step(no_kd, batch)

    epoch_s: Dict[str, List[float]] = {m: [] for m in MODES}
    t_teacher: List[float] = []
    t_student: List[float] = []
    for r in range(args.rounds):
        for mode in MODES:
            row = trainers[mode].train_one_epoch(1 + r)
            epoch_s[mode].append(row["train_time_s"])
        for batch in batches:  # alternate on the same batch: side by side
            sync()
            start = time.perf_counter()
            teacher_forward(batch)
            t_teacher.append(time.perf_counter() - start)
            start = time.perf_counter()
            student_step(no_kd, batch)
            sync()
            t_student.append(time.perf_counter() - start)
        say(
            f"round {r + 1}/{args.rounds}: "
            + "  ".join(f"{m} {steps_per_epoch / epoch_s[m][-1]:.2f} steps/s" for m in MODES)
            + f"  teacher fwd {t_teacher[-1] * 1e3:.0f} ms  student step {t_student[-1] * 1e3:.0f} ms"
        )

    per_step = {m: pick(v, args.stat) / steps_per_epoch for m, v in epoch_s.items()}
    steps_per_s = {m: 1.0 / v for m, v in per_step.items()}
    tf, ts = pick(t_teacher, args.stat), pick(t_student, args.stat)
    ideal = (tf + ts) / ts
    offline_vs_no_kd = steps_per_s["offline"] / steps_per_s["no-kd"]
    offline_vs_online = steps_per_s["offline"] / steps_per_s["online"]
    of_ideal = offline_vs_online / ideal
    goals = {
        "offline_vs_no_kd": {
            "value": offline_vs_no_kd,
            "goal": GOAL_OFFLINE_VS_NO_KD,
            "pass": offline_vs_no_kd >= GOAL_OFFLINE_VS_NO_KD,
        },
        "offline_vs_online_of_ideal": {"value": of_ideal, "goal": GOAL_OF_IDEAL, "pass": of_ideal >= GOAL_OF_IDEAL},
    }
    report = {
        "teacher": args.teacher,
        "student": args.student,
        "weights": "random init",
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "samples": args.samples,
        "steps_per_epoch": steps_per_epoch,
        "embed_dim": args.embed_dim,
        "workers": args.workers,
        "views": args.views,
        "criterion": cfg.criterion_t2s_para.get("name"),
        "replay_check": cfg.replay_check,
        "rounds": args.rounds,
        "batches": args.batches,
        "stat": args.stat,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mlkd_cache": __version__,
        "steps_per_s": steps_per_s,
        "ms_per_step": {m: v * 1e3 for m, v in per_step.items()},
        "epoch_s_runs": epoch_s,
        "teacher_forward_ms": tf * 1e3,
        "student_step_ms": ts * 1e3,
        "teacher_forward_ms_runs": [t * 1e3 for t in t_teacher],
        "student_step_ms_runs": [t * 1e3 for t in t_student],
        "dump_s": dumped["seconds"],
        "dump_views_per_s": args.samples * args.views / dumped["seconds"],
        "cache_mb": dumped.get("total_bytes", 0) / 2**20,
        "offline_over_no_kd": offline_vs_no_kd,
        "offline_over_online": offline_vs_online,
        "ideal_speedup": ideal,
        "offline_over_online_of_ideal": of_ideal,
        "goals": goals,
    }
    say("optimiser implementations: teacher and student steps ...")
    optim_ms = {}
    for role, arch in (("teacher", args.teacher), ("student", args.student)):
        times = optimizer_step_times(cfg, arch, batches, args.rounds, len(no_kd.class_names), device)
        optim_ms[role] = {impl: pick(v, args.stat) * 1e3 for impl, v in times.items()}
    report["optimizer_step_ms"] = optim_ms
    report["fused_speedup_over_for_loop"] = {r: v["for-loop"] / v["fused"] for r, v in optim_ms.items()}
    say("done")
    if args.json:
        print(json.dumps(report))
        return 0

    print(
        f"pair {args.teacher} -> {args.student} (timm, random init, nothing downloaded), {report['criterion']} distiller, "
        f"digits @ {args.img_size}px, {args.samples} samples, batch {args.batch_size} ({steps_per_epoch} steps/epoch), "
        f"{args.workers} worker(s), embed_dim {args.embed_dim}"
    )
    print(
        f"machine: {os.cpu_count()} CPU(s), device {device}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"python {platform.python_version()}"
    )
    print(
        f"cache: {args.views} views float16, {report['cache_mb']:.1f} MB, dumped in {dumped['seconds']:.1f} s "
        f"({report['dump_views_per_s']:.0f} views/s); offline replay_check {cfg.replay_check}"
    )
    print()
    rows = [
        (
            m,
            f"{steps_per_s[m]:.2f}",
            f"{per_step[m] * 1e3:.0f}",
            f"{steps_per_s[m] * args.batch_size:.0f}",
            f"{steps_per_s[m] / steps_per_s['no-kd']:.3f}",
        )
        for m in MODES
    ]
    print(format_table(rows, ["mode", "steps/s", "ms/step", "samples/s", "x no-kd"]))
    print(f"({args.stat} of {args.rounds} interleaved epochs per mode after 1 warm-up epoch; epoch time includes data loading)")
    print()
    print(f"teacher forward (no grad, eval)   {tf * 1e3:8.1f} ms/batch")
    print(f"student step (fwd+bwd+optimiser)  {ts * 1e3:8.1f} ms/batch")
    print(f"({args.stat} of {len(t_teacher)} each, alternating on {args.batches} preloaded batches, no data loading)")
    print()
    print(f"offline / no-kd            {offline_vs_no_kd:.3f}")
    print(f"offline / online           {offline_vs_online:.3f}")
    print(f"ideal speed-up             {ideal:.3f}   = (t_teacher_forward + t_student_step) / t_student_step")
    print(f"(offline / online) / ideal {of_ideal:.3f}")
    print()
    rows = [
        (
            f"{role} {arch}",
            *(f"{optim_ms[role][impl]:.1f}" for impl in IMPLEMENTATIONS),
            f"{optim_ms[role]['for-loop'] / optim_ms[role]['fused']:.2f}x",
        )
        for role, arch in (("teacher", args.teacher), ("student", args.student))
    ]
    print(format_table(rows, ["training step (ms)", *(f"Adam {i}" for i in IMPLEMENTATIONS), "fused vs for-loop"]))
    print(
        f"({args.stat} of {args.rounds} x {len(batches)} steps per implementation, alternating on the same batches; "
        f"for-loop = torch's CPU default before, fused = now)"
    )
    print()
    for name, text in (
        ("offline_vs_no_kd", "offline >= 0.95 x no-kd"),
        ("offline_vs_online_of_ideal", "offline/online >= 0.90 x ideal"),
    ):
        g = goals[name]
        print(f"goal: {text:32} {'PASS' if g['pass'] else 'FAIL'} ({g['value']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
