"""Inference speed of a deployed model: PyTorch eager against onnxruntime, and student against teacher.

Part 1, the runtime: images per second of one model on the CPU, PyTorch eager (``load_model``:
uint8 pixels converted by ``model_input``, then the forward, no autograd) against onnxruntime on
its ``export`` (normalisation inside the graph), at batch 1 (latency) and 32, for the digits
student (``test_resnet`` at 64 px, E = 128, 10 classes) and a ``resnet18`` + ML-Decoder at 224 px
(E = 768, the 20 VOC classes). The two runtimes alternate round by round on the same uint8
batch; medians of ``--rounds``.

Part 2, the reason for distilling: teacher against student of the shipped COCO pair
(``configs/coco``: ResNet-101 -> ResNet-34 at 224 px, 80 classes) and VOC pair
(``configs/voc/resnet50_to_resnet18_mpscd.py``: ResNet-50 -> ResNet-18 at 224 px, 20 classes),
PyTorch eager at batch 1 and 32, with parameters and checkpoint size, in the same run.

Every model is randomly initialised (seed 0): speed does not depend on the weights. Images per
second count preprocessed images (decode and resize are the same for every runtime and model:
benchmarks/data_pipeline.py measures them).

    python benchmarks/predict.py                 # about a minute on 2 cores
    python benchmarks/predict.py --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import format_table, measure  # noqa: E402

from mlkd_cache.commands.export import export  # noqa: E402
from mlkd_cache.config import load_config  # noqa: E402
from mlkd_cache.data.transforms import TransformSpec, model_input  # noqa: E402
from mlkd_cache.models import build_model  # noqa: E402
from mlkd_cache.models.card import ModelCard  # noqa: E402
from mlkd_cache.runtime.checkpoint import load_model, save_model  # noqa: E402
from mlkd_cache.runtime.deploy import load_onnx  # noqa: E402

BATCHES = (1, 32)
RUNTIME_MODELS = {  # name -> (arch, img_size, embed_dim, classes)
    "digits student test_resnet 64px": ("test_resnet", 64, 128, 10),
    "resnet18 + ML-Decoder 224px": ("resnet18", 224, 768, 20),
}
PAIRS = {"COCO": "coco/resnet101_to_resnet34_l2d.py", "VOC": "voc/resnet50_to_resnet18_mpscd.py"}


def write_checkpoint(directory: Path, name: str, arch: str, img_size: int, embed_dim: int, classes: int) -> Path:
    """A randomly initialised model (seed 0) as a checkpoint, with its card."""
    torch.manual_seed(0)
    model = build_model(arch, classes, embed_dim=embed_dim, img_size=img_size)
    config = load_config(None, {"img_size": img_size, "embed_dim": embed_dim})
    card = ModelCard.of(model, "student", [f"c{k}" for k in range(classes)], TransformSpec.from_config(config), config.to_dict())
    path = directory / f"{name}.pt"
    save_model(path, card, model.state_dict(), epoch=0, metrics={})
    return path


def eager(path: Path) -> Callable[[torch.Tensor], Any]:
    loaded = load_model(path)
    spec, cpu = loaded.card.transform, torch.device("cpu")

    @torch.no_grad()
    def run(pixels: torch.Tensor) -> Any:
        return loaded.model(model_input(pixels, spec, cpu)).logits

    return run


def runtime_rows(work: Path, rounds: int) -> List[Dict[str, Any]]:
    rows = []
    for name, (arch, size, embed, classes) in RUNTIME_MODELS.items():
        path = write_checkpoint(work, arch, arch, size, embed, classes)
        onnx_path = work / f"{arch}.onnx"
        export(path, onnx_path)
        runners = {"eager": eager(path), "onnxruntime": load_onnx(onnx_path)}
        for batch in BATCHES:
            pixels = torch.randint(
                0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(batch)
            )
            array = pixels.numpy()
            inputs = {"eager": pixels, "onnxruntime": array}
            runs: Dict[str, List[float]] = {k: [] for k in runners}
            for k, fn in runners.items():
                fn(inputs[k])  # warm-up
            for _ in range(rounds):  # alternating, so that load from elsewhere falls on both
                for k, fn in runners.items():
                    runs[k] += measure(lambda fn=fn, x=inputs[k]: fn(x), warmup=0, repeat=1).runs
            median = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "eager_images_per_s": batch / median["eager"],
                    "onnxruntime_images_per_s": batch / median["onnxruntime"],
                    "onnxruntime_over_eager": median["eager"] / median["onnxruntime"],
                    "eager_ms_per_batch": median["eager"] * 1e3,
                    "onnxruntime_ms_per_batch": median["onnxruntime"] * 1e3,
                }
            )
            print(f"[{time.strftime('%H:%M:%S')}] {name} batch {batch} done", file=sys.stderr, flush=True)
    return rows


def pair_rows(work: Path, rounds: int) -> List[Dict[str, Any]]:
    rows = []
    for pair, config_name in PAIRS.items():
        cfg = load_config(config_name)
        classes = {"coco": 80, "voc": 20}[cfg.dataset]
        measured = {}
        for role, arch in (("teacher", cfg.model_t), ("student", cfg.model_s)):
            path = write_checkpoint(work, f"{pair}-{role}", arch, cfg.img_size, cfg.embed_dim, classes)
            run = eager(path)
            params = sum(p.numel() for p in load_model(path).model.parameters())
            for batch in BATCHES:
                pixels = torch.randint(
                    0,
                    256,
                    (batch, 3, cfg.img_size, cfg.img_size),
                    dtype=torch.uint8,
                    generator=torch.Generator().manual_seed(batch),
                )
                t = measure(lambda x=pixels, run=run: run(x), warmup=1, repeat=rounds)
                measured[(role, batch)] = t.median
                rows.append(
                    {
                        "pair": pair,
                        "role": role,
                        "arch": arch,
                        "img_size": cfg.img_size,
                        "batch": batch,
                        "params_m": params / 1e6,
                        "checkpoint_mb": path.stat().st_size / 2**20,
                        "images_per_s": batch / t.median,
                    }
                )
            print(f"[{time.strftime('%H:%M:%S')}] {pair} {role} done", file=sys.stderr, flush=True)
        for row in rows[-2 * len(BATCHES) :]:
            row["student_over_teacher"] = measured[("teacher", row["batch"])] / measured[("student", row["batch"])]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per runtime and batch size (median)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = runtime_rows(Path(tmp), args.rounds)
        pairs = pair_rows(Path(tmp), max(3, args.rounds // 2))
    print(f"CPU, torch {torch.__version__} on {torch.get_num_threads()} threads; medians of {args.rounds} alternating runs")
    print(
        format_table(
            [
                (
                    r["model"],
                    r["batch"],
                    f"{r['eager_images_per_s']:.1f}",
                    f"{r['onnxruntime_images_per_s']:.1f}",
                    f"{r['onnxruntime_over_eager']:.2f}x",
                    f"{r['eager_ms_per_batch']:.1f}",
                    f"{r['onnxruntime_ms_per_batch']:.1f}",
                )
                for r in runtime
            ],
            ["model", "batch", "eager img/s", "onnxruntime img/s", "ort / eager", "eager ms", "ort ms"],
        )
    )
    print()
    print(
        format_table(
            [
                (
                    f"{r['pair']} {r['role']} {r['arch']}",
                    r["batch"],
                    f"{r['params_m']:.1f}",
                    f"{r['checkpoint_mb']:.0f}",
                    f"{r['images_per_s']:.1f}",
                    f"{r['student_over_teacher']:.2f}x" if r["role"] == "student" else "",
                )
                for r in pairs
            ],
            ["model (eager, 224 px)", "batch", "params (M)", "checkpoint MB", "img/s", "student / teacher"],
        )
    )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps({"runtime": runtime, "pairs": pairs, "torch_threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
