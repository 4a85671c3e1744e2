"""Dump throughput against pure teacher inference on the same views, and dump peak memory
against the number of samples.

Side by side in one run, on the embedded digits data with a randomly initialised teacher:

* ``inference``: the teacher's forward passes over every (sample, view) pair, outputs dropped;
* ``dump``: ``dump-targets`` over the same pairs (same batches, workers, teacher), which also
  copies the outputs into shard buffers and writes HDF5 shards on a background thread;
* peak RSS of a whole ``dump-targets`` process for N and 4N samples (separate processes).

Goals: dump >= 0.90 x inference; peak memory does not grow with N.

    python benchmarks/dump.py [--samples 512] [--views 4] [--model resnet18] [--img-size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.config import load_config
from mlkd_cache.data import build_dataset
from mlkd_cache.data.transforms import TransformSpec, model_input
from mlkd_cache.data.views import ViewDataset
from mlkd_cache.models import build_model
from mlkd_cache.models.card import ModelCard
from mlkd_cache.runtime.checkpoint import load_model, save_model


def write_config(directory: Path, samples: int, model: str, img_size: int, batch: int, workers: int, shard: int) -> Path:
    path = directory / "bench_config.py"
    path.write_text(
        f"dataset = 'digits'\ndataset_para = dict(train_size={samples}, test_size=16)\n"
        f"img_size = {img_size}\nbatch_size = {batch}\nworkers = {workers}\nmodel_t = {model!r}\n"
        f"embed_dim = 768\ncache = dict(shard_size={shard})\n"
    )
    return path


def write_teacher(directory: Path, cfg) -> Path:
    """A randomly initialised teacher checkpoint with the model card dump-targets reads."""
    torch.manual_seed(0)
    model = build_model(cfg.model_t, 10, embed_dim=cfg.embed_dim, img_size=cfg.img_size)
    card = ModelCard.of(model, "teacher", [str(d) for d in range(10)], TransformSpec.from_config(cfg), cfg.to_dict())
    path = directory / "teacher.pt"
    save_model(path, card, model.state_dict(), epoch=0, metrics={})
    return path


@torch.no_grad()
def time_inference(cfg, teacher_pt: Path, views: int) -> float:
    """Seconds for the teacher's forward passes over every (sample, view), as dump batches them."""
    data = build_dataset(cfg.dataset, "train", None, **cfg.dataset_para)
    spec = TransformSpec.from_config(cfg)
    view_data = ViewDataset(data, spec, cfg.seed, train=True, views=views, with_fingerprint=True, image_dtype="uint8")
    model = load_model(teacher_pt).model
    shard = cfg.cache["shard_size"]
    started = time.perf_counter()
    for start in range(0, len(data), shard):
        for batch, _ in dump.view_batches(view_data, start, min(start + shard, len(data)), views, cfg.batch_size, cfg.workers):
            model(model_input(batch.image, spec, torch.device("cpu")))
    return time.perf_counter() - started


def peak_rss_mb(config: Path, teacher_pt: Path, out: Path, views: int, samples: int) -> float:
    code = (
        "import resource, sys\n"
        "from mlkd_cache.config import load_config\nfrom mlkd_cache.commands import dump_targets as dump\n"
        f"cfg = load_config({str(config)!r}, {{'dataset_para': dict(train_size={samples}, test_size=16)}})\n"
        f"dump.run(cfg, {str(teacher_pt)!r}, {str(out)!r}, views={views}, progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions (best of each is kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = write_config(tmp, args.samples, args.model, args.img_size, args.batch_size, args.workers, args.shard_size)
        cfg = load_config(config)
        teacher_pt = write_teacher(tmp, cfg)
        pairs = args.samples * args.views
        time_inference(cfg, teacher_pt, args.views)  # warm-up: caches, allocator, thread pools
        infer_times, dump_times = [], []
        for rep in range(args.repeat):  # interleaved, best of each: the machine is noisy
            infer_times.append(time_inference(cfg, teacher_pt, args.views))
            result = dump.run(cfg, teacher_pt, tmp / f"cache{rep}", views=args.views, progress=False)
            dump_times.append(result["seconds"])
        t_infer, t_dump = min(infer_times), min(dump_times)
        rss_n = peak_rss_mb(config, teacher_pt, tmp / "rss1", args.views, args.samples)
        rss_4n = peak_rss_mb(config, teacher_pt, tmp / "rss4", args.views, 4 * args.samples)

    report = {
        "model": args.model,
        "img_size": args.img_size,
        "samples": args.samples,
        "views": args.views,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "shard_size": args.shard_size,
        "inference_views_per_s": pairs / t_infer,
        "dump_views_per_s": pairs / t_dump,
        "dump_over_inference": t_infer / t_dump,
        "cache_mb": result["total_bytes"] / 2**20,
        "peak_rss_mb_N": rss_n,
        "peak_rss_mb_4N": rss_4n,
        "rss_4N_over_N": rss_4n / rss_n,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"teacher {args.model} @ {args.img_size}px, {args.samples} samples x {args.views} views, "
        f"batch {args.batch_size}, {args.workers} worker(s), torch threads {torch.get_num_threads()}"
    )
    print(f"{'':28}{'views/s':>10}   (best of {args.repeat}, interleaved)")
    print(f"{'teacher inference only':28}{report['inference_views_per_s']:>10.1f}")
    print(f"{'dump-targets':28}{report['dump_views_per_s']:>10.1f}")
    ok = "PASS" if report["dump_over_inference"] >= 0.90 else "FAIL"
    print(f"dump / inference = {report['dump_over_inference']:.3f}   (goal >= 0.90: {ok})")
    ok = "PASS" if report["rss_4N_over_N"] <= 1.10 else "FAIL"
    print(
        f"peak RSS: {rss_n:.0f} MB for N={args.samples}, {rss_4n:.0f} MB for 4N "
        f"= {report['rss_4N_over_N']:.3f}x   (goal: flat, <= 1.10x: {ok})"
    )


if __name__ == "__main__":
    main()
