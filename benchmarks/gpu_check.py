"""``make gpu-check``: every CUDA path of the tool once, on one GPU, in a few minutes; fails loudly.

Stages, each the real CLI in its own process, on the embedded digits data at 224 px (no download,
no data root), ResNet-50 teacher -> ResNet-18 student, AMP on, DataLoader workers with pinned
memory, channels-last models, non-blocking copies (what the trainers do on CUDA):

1. ``teacher-train`` one epoch (AMP forward/backward with loss scaling);
2. ``dump-targets`` (AMP inference, shards written while the next one is computed);
3. ``verify``: cached logits, features and embeddings against a fresh teacher pass, and every
   input fingerprint;
4. ``distill-student --cache`` with ``replay_check=1.0`` (every student input's fingerprint
   compared with the cache: one differing pixel stops it), ``--teacher`` (online) and ``--no-kd``;
   every loader hands uint8 pixels over, converted on the GPU (``model_input``);
4b. the image store: ``dump-targets --images raw`` then an offline student (AMP, ``replay_check=1.0``)
   that reads only that cache, its data root pointed at a folder that does not exist;
5. throughput ratios at 224 px from the benchmarks, side by side in one run:
   ``benchmarks/dump.py`` (dump / inference) and ``benchmarks/distill_throughput.py``
   (offline / no-KD, offline / online against the ideal speed-up).

Any stage that exits non-zero stops the check with its stderr and exit code 1. On a machine
without CUDA it prints one line and exits 0 without running anything.

    make gpu-check            # or: python benchmarks/gpu_check.py [--samples 4096] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import torch

HERE = Path(__file__).resolve().parent
CONFIG = """\
dataset = "digits"
dataset_para = dict(train_size={samples}, val_size=256, test_size=512)
img_size = {img_size}
batch_size = {batch_size}
model_t = "{teacher}"
model_s = "{student}"
embed_dim = {embed_dim}
lr_t = 1e-3
lr_s = 1e-3
max_epoch_t = 1
max_epoch_s = 1
workers = {workers}
amp = True
replay_check = 1.0
transform = dict(cutout=0.5, randaugment="rand-m9-n2-mstd0.5", hflip=0.0)
cache = dict(views=2)
"""


FULL = dict(img_size=224, batch_size=64, teacher="resnet50", student="resnet18", embed_dim=256, bench_samples=2048, rounds=3)
SMOKE = dict(
    img_size=32, batch_size=16, teacher="test_resnet", student="test_resnet", embed_dim=32, bench_samples=64, rounds=1, samples=64
)


def run(step: str, args: List[str]) -> str:
    """Run one stage; on failure print its output and exit 1."""
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"gpu-check FAILED at {step} (exit {proc.returncode}, {took:.0f} s): {' '.join(args)}")
        print(proc.stdout[-4000:])
        print(proc.stderr[-4000:], file=sys.stderr)
        sys.exit(1)
    print(f"ok  {step:<28} {took:6.1f} s")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="digits training canvases (default 4096)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="run the same sequence on CPU with tiny models (checks the script, not CUDA)"
    )
    args = parser.parse_args()
    size = SMOKE if args.cpu_smoke else FULL
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu-check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing was run")
        return
    where = "CPU (smoke run)" if args.cpu_smoke else f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
    print(f"gpu-check on {where}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cfg = work / "gpu_check.py"
        samples = size.get("samples", args.samples)
        cfg.write_text(
            CONFIG.format(
                samples=samples,
                workers=args.workers,
                **{k: size[k] for k in ("img_size", "batch_size", "teacher", "student", "embed_dim")},
            )
        )
        cli = [sys.executable, "-m", "mlkd_cache"]
        common = ["-c", str(cfg), "--no-progress"]
        teacher = work / "teacher" / "teacher.pt"
        run("teacher-train (AMP)", [*cli, "teacher-train", *common, "-o", str(work / "teacher")])
        run("dump-targets (AMP)", [*cli, "dump-targets", *common, "-t", str(teacher), "-o", str(work / "cache")])
        print(run("verify", [*cli, "verify", str(work / "cache"), "-t", str(teacher), "-k", "256"]).rstrip())
        run(
            "distill-student offline",
            [*cli, "distill-student", *common, "--cache", str(work / "cache"), "-o", str(work / "offline")],
        )
        run("distill-student online", [*cli, "distill-student", *common, "-t", str(teacher), "-o", str(work / "online")])
        run("distill-student --no-kd", [*cli, "distill-student", *common, "--no-kd", "-o", str(work / "no-kd")])
        store = work / "cache-raw"
        run(
            "dump-targets --images raw (AMP)",
            [*cli, "dump-targets", *common, "-t", str(teacher), "-o", str(store), "--images", "raw"],
        )
        run(
            "distill-student from the raw store alone",
            [*cli, "distill-student", *common, "--cache", str(store), "--set", "replay_check=1.0",
             "--set", f"data_root={str(work / 'no-such-folder')!r}", "-o", str(work / "from-store")],
        )  # fmt: skip
        py = [sys.executable]
        print(
            run(
                "benchmarks/dump.py",
                [
                    *py,
                    str(HERE / "dump.py"),
                    "--model",
                    size["teacher"],
                    "--img-size",
                    str(size["img_size"]),
                    "--samples",
                    str(size["bench_samples"] // 2),
                    "--views",
                    "2",
                    "--batch-size",
                    str(size["batch_size"]),
                    "--workers",
                    str(args.workers),
                ],
            ).rstrip()
        )
        print(
            run(
                "benchmarks/distill_throughput.py",
                [
                    *py,
                    str(HERE / "distill_throughput.py"),
                    "--teacher",
                    size["teacher"],
                    "--student",
                    size["student"],
                    "--img-size",
                    str(size["img_size"]),
                    "--samples",
                    str(size["bench_samples"]),
                    "--batch-size",
                    str(size["batch_size"]),
                    "--workers",
                    str(args.workers),
                    "--rounds",
                    str(size["rounds"]),
                ],
            ).rstrip()
        )
    print("gpu-check passed")


if __name__ == "__main__":
    main()
