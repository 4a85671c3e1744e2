"""Images per second of one data-loading worker: decode + replayable train view, on real photographs.

On a GPU box the student's step takes milliseconds and the CPU side decides the speed of no-KD,
online and offline training alike: JPEG decode, resize, Cutout, RandAugment, ToTensor, replayed
for every sample. This script times what one DataLoader worker process does per sample (one
thread, as in a worker) on the photographs of ``../shared/data/coco2017-tiny`` (COCO-sized,
mostly 640 x 480; ``python tools/build_coco_tiny.py COCO2017 ../shared/data/coco2017-tiny`` builds
it from an official COCO 2017 download), and on the same photographs re-encoded at 4x their size
(4-5 k pixels wide, as phone pictures fed to the csv loader are), at 224 and 448 px, with
``transform.decode`` ``full`` and ``reduced`` side by side in one run (median of ``--rounds``,
interleaved).

The last columns divide published GPU training rates by one worker's rate: how many workers
keep that GPU busy. Rates from timm's published benchmark CSVs (one RTX 3090, AMP,
channels-last, 224 px): resnet34 about 2,000 img/s, resnet50 about 1,200 img/s.

A second table splits one COCO-sized sample at 224 px into its stages (median ms per image), and
times two alternatives beside the stage they would replace: torchvision's JPEG decoder (it
checks and prints whether its pixels equal Pillow's) and torch's uint8 antialiased resize (it
prints how many pixel values differ from Pillow's). These say where a per-worker speed-up can
come from and what it would cost in replay compatibility.

A third table times what one ``dump-targets`` worker does for a photograph at V = 8 views: decode
and resize once and make the 8 views from that image (what the dump does now), against a decode
and resize for every view (what it did before); the cached targets are bitwise the same.

A fourth times one training worker's views/s reading a cache's image store (``--images raw`` or
``jpeg``; the worker hands uint8 pixels over, 5 % of them fingerprinted) against decoding the
JPEG photograph (float32 views, as the workers made them before the store), with the shipped COCO
transform (Cutout + RandAugment) and without RandAugment, at 224 and 448 px, and how many workers
one GPU needs at published timm training rates before and after. A last one times an offline
student's whole epoch on coco2017-tiny at 224 px (timm's test_resnet, 2 workers) from a raw-store
cache against the same cache without a store (the photographs), end to end.

    python benchmarks/data_pipeline.py [--rounds 3] [--json] [--skip-epoch]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _timing import format_table  # noqa: E402

from mlkd_cache.config import DECODE_MODES  # noqa: E402
from mlkd_cache.data.base import load_rgb  # noqa: E402
from mlkd_cache.data.transforms import ReplayableTransform, TransformSpec, _to_tensor  # noqa: E402
from mlkd_cache.data.views import ViewDataset  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco2017-tiny"
GPU_RATES = {"resnet34": 2000.0, "resnet50": 1200.0}  # img/s training, RTX 3090, AMP (timm's benchmark CSVs)
STUDENT_RATE = (
    "resnet18",
    3500.0,
)  # img/s training, RTX 3090, AMP channels-last (timm's published figure)
SIZES = (224, 448)


def phone_sized(paths: List[Path], out: Path, factor: int = 4) -> List[Path]:
    """The photographs upscaled ``factor`` times and saved as JPEG (quality 90), phone-sized."""
    big = []
    for p in paths:
        with Image.open(p) as im:
            target = out / p.name
            im.convert("RGB").resize((im.width * factor, im.height * factor), Image.Resampling.BILINEAR).save(target, quality=90)
        big.append(target)
    return big


def images_per_second(paths: List[Path], size: int, decode: str) -> float:
    """One pass: decode + train view of every photograph (view seed = its index)."""
    spec = TransformSpec(img_size=size, decode=decode)
    transform = ReplayableTransform(spec)
    started = time.perf_counter()
    for k, path in enumerate(paths):
        transform(load_rgb(str(path), spec.decode_size), k)
    return len(paths) / (time.perf_counter() - started)


def _ms_per_image(fn, items: List, rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            fn(item)
        runs.append(time.perf_counter() - started)
    return 1e3 * statistics.median(runs) / len(items)


def stage_breakdown(paths: List[Path], rounds: int, size: int = 224) -> Dict[str, object]:
    """Median ms per image of each stage of the default train view (RandAugment on), and of the
    torchvision alternatives for decode and resize, with their pixel agreement with Pillow."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as TF

    spec = TransformSpec(img_size=size)
    transform = ReplayableTransform(spec)
    filt = Image.Resampling.BILINEAR
    raw = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    decoded = [load_rgb(str(p)) for p in paths]
    tensors = [decode_jpeg(r, mode=ImageReadMode.RGB) for r in raw]
    resized = [im.resize((size, size), filt) for im in decoded]
    rng = np.random.default_rng(0)
    stages = {
        "decode (Pillow, full)": _ms_per_image(lambda p: load_rgb(str(p)), paths, rounds),
        "decode (Pillow, reduced)": _ms_per_image(lambda p: load_rgb(str(p), size), paths, rounds),
        "decode (torchvision.io)": _ms_per_image(lambda r: decode_jpeg(r, mode=ImageReadMode.RGB), raw, rounds),
        "resize (Pillow)": _ms_per_image(lambda im: im.resize((size, size), filt), decoded, rounds),
        "resize (torch uint8, antialias)": _ms_per_image(lambda x: TF.resize(x, [size, size], antialias=True), tensors, rounds),
        "cutout": _ms_per_image(lambda im: transform._cutout(im, rng), resized, rounds),
        "randaugment": _ms_per_image(lambda im: transform._randaugment(im), resized, rounds),
        "to tensor + normalize": _ms_per_image(lambda im: _to_tensor(im, spec.mean, spec.std), resized, rounds),
        "whole train view (after decode)": _ms_per_image(lambda im: transform(im, 0), decoded, rounds),
    }
    same_decode = all(np.array_equal(np.asarray(im), x.permute(1, 2, 0).numpy()) for im, x in zip(decoded, tensors))
    diff = [
        np.asarray(a, dtype=np.int16) - TF.resize(x, [size, size], antialias=True).permute(1, 2, 0).numpy()
        for a, x in zip(resized, tensors)
    ]
    return {
        "img_size": size,
        "ms": stages,
        "torchvision_decode_equals_pillow": same_decode,
        "torch_resize_max_abs_diff": int(max(np.abs(d).max() for d in diff)),
        "torch_resize_differing_fraction": float(np.mean([np.count_nonzero(d) / d.size for d in diff])),
    }


class _Photos:
    """The photographs as a dataset a ViewDataset takes (keys, labels, load_image)."""

    def __init__(self, paths: List[Path]) -> None:
        self.paths = paths
        self.keys = [p.name for p in paths]
        self.labels = np.zeros((len(paths), 1), np.uint8)
        self.class_names = ["x"]

    def load_image(self, index: int, size=None) -> Image.Image:
        return load_rgb(str(self.paths[index]), size)


DUMP_VIEWS = 8


DUMP_MODES = ("every view decoded, float32", "decode once, float32", "decode once, uint8")


def dump_views_per_second(paths: List[Path], size: int, mode: str) -> float:
    """One dump worker's views/s at V = 8 (the default train transform: Cutout + RandAugment):
    each photograph decoded and resized for every view with float32 views and fingerprints (the
    dump as it first was), once for its 8 views (float32), or once with uint8 views and
    fingerprints handed to the device (the dump now)."""
    uint8 = mode.endswith("uint8")
    views = ViewDataset(
        _Photos(paths), TransformSpec(img_size=size), 0, train=True, views=DUMP_VIEWS, with_fingerprint=True,
        image_dtype="uint8" if uint8 else "float32", fingerprint_of="uint8" if uint8 else "float32",
    )  # fmt: skip
    started = time.perf_counter()
    for i in range(len(paths)):
        if mode.startswith("decode once"):
            views.get_views(i, range(DUMP_VIEWS))
        else:
            for v in range(DUMP_VIEWS):
                views.get(i, v)
    return len(paths) * DUMP_VIEWS / (time.perf_counter() - started)


class _Stored(_Photos):
    """The photographs read from an image store file (raw pixels or JPEG), as a student reads a cache."""

    def __init__(self, paths: List[Path], store) -> None:
        super().__init__(paths)
        self.store = store

    def load_image(self, index: int, size=None) -> Image.Image:
        return self.store.image(index)


def write_store(paths: List[Path], size: int, mode: str, folder: Path):
    """An :class:`ImageStore` of the photographs at ``size`` px, written by the cache's own
    writer (an :class:`EvalBuffer`: keys, labels and images) in ``folder``."""
    from mlkd_cache.cache.format import CacheSpec, split_digest
    from mlkd_cache.cache.images import ImageStore, encode_image
    from mlkd_cache.cache.writer import EvalBuffer, write_shard

    spec = TransformSpec(img_size=size)
    cache = CacheSpec(
        num_samples=len(paths), views=1, num_classes=1, feature_dim=1, embed_dim=1, dtype="float16", embedding="positive",
        shard_size=len(paths), class_names=("x",), dataset="coco", split="train", img_size=size, transform=spec.to_dict(),
        transform_hash=spec.spec_hash(), normalisation={"mean": [0, 0, 0], "std": [1, 1, 1]}, base_seed=0, teacher_arch="-",
        teacher_sha256="0", labels_sha256="0", images=mode, jpeg_quality=90 if mode == "jpeg" else 0,
    )  # fmt: skip
    prepare = ReplayableTransform(spec).prepare
    keys, labels = [p.name for p in paths], np.zeros((len(paths), 1), np.uint8)
    buffer = EvalBuffer(cache, "test", 0, 0, len(paths), len(paths), keys, labels, split_digest(keys, labels))
    buffer.images.put(range(len(paths)), [encode_image(prepare(load_rgb(str(p))), mode, 90)[0] for p in paths])
    entry = write_shard(buffer, folder / mode / str(size))
    return ImageStore([(folder / mode / str(size) / entry["file"], 0, len(paths))], mode, size)


def training_views_per_second(data, size: int, randaugment: bool, store: bool, epoch: int) -> float:
    """One training worker's items/s over ``data`` (a fresh view each): from a store, uint8 pixels
    with 5 % fingerprinted (what the loaders hand over now); from the photographs, float32 views
    (what they handed over before the store)."""
    spec = TransformSpec(
        img_size=size, randaugment=TransformSpec.__dataclass_fields__["randaugment"].default if randaugment else None
    )
    views = ViewDataset(
        data, spec, 0, train=True, with_fingerprint=0.05 if store else 0.0, image_dtype="uint8" if store else "float32"
    )
    views.set_epoch(epoch)
    started = time.perf_counter()
    for i in range(len(views)):
        views[i]
    return len(views) / (time.perf_counter() - started)


def store_table(paths: List[Path], rounds: int, folder: Path) -> Dict[str, Dict[str, float]]:
    """Median items/s per (size, RandAugment, source): jpeg photographs, raw store, jpeg store."""
    sources = {}
    for size in SIZES:
        sources[size] = {
            "photographs": _Photos(paths),
            **{f"{m} store": _Stored(paths, write_store(paths, size, m, folder)) for m in ("raw", "jpeg")},
        }
    rates: Dict[str, List[float]] = {}
    for r in range(rounds):  # interleaved
        for size in SIZES:
            for ra in (True, False):
                for name, data in sources[size].items():
                    key = f"{size}|{'RandAugment' if ra else 'no RandAugment'}|{name}"
                    rates.setdefault(key, []).append(training_views_per_second(data, size, ra, name != "photographs", r))
    return {k: statistics.median(v) for k, v in rates.items()}


def epoch_end_to_end(rounds: int, folder: Path) -> Dict[str, float]:
    """Median seconds of an offline student's training epoch on coco2017-tiny at 224 px (timm's
    test_resnet, 2 workers, batch 10), from a raw-store cache and from the same cache without a
    store (the photographs); the two students are bit for bit the same."""
    from mlkd_cache.commands import distill_student as distill
    from mlkd_cache.commands import dump_targets as dump
    from mlkd_cache.commands import teacher_train as teacher
    from mlkd_cache.config import load_config
    from mlkd_cache.runtime.students import DistillTrainer

    cfg_text = (
        "dataset = 'coco'\nmodel_t = 'test_resnet'\nmodel_s = 'test_resnet'\nimg_size = 224\nbatch_size = 10\n"
        f"embed_dim = 32\nworkers = 2\nlog_every = 0\nmax_epoch_t = 1\nmax_epoch_s = 1\ndata_root = {str(PHOTOS)!r}\n"
        "cache = dict(views=2)\neval_every = 100\n"
    )
    path = folder / "coco_tiny_224.py"
    path.write_text(cfg_text)
    cfg = load_config(str(path))
    teacher.run(cfg, folder / "teacher", progress=False)
    for mode in ("none", "raw"):
        dump.run(
            cfg.replace(cache={**cfg.cache, "images": mode}),
            folder / "teacher" / "teacher.pt",
            folder / f"cache-{mode}",
            progress=False,
        )
    times: Dict[str, List[float]] = {
        "photographs": [],
        "raw store": [],
        "photographs, loader only": [],
        "raw store, loader only": [],
    }
    for r in range(rounds):
        for name, mode in (("photographs", "none"), ("raw store", "raw")):
            result = distill.run(cfg, folder / f"student-{mode}-{r}", cache=folder / f"cache-{mode}", progress=False)
            rows = [json.loads(line) for line in Path(result["metrics_log"]).read_text().splitlines()]
            times[name].append(rows[-1]["train_time_s"])
            # the same run's loader alone (2 persistent workers, cached targets collated): epochs 2-4 after a warm-up
            trainer = DistillTrainer(cfg, folder / f"loader-{mode}-{r}", cache=folder / f"cache-{mode}", progress=False)
            for epoch in range(4):
                trainer.sampler.set_epoch(epoch)
                started = time.perf_counter()
                for _ in trainer.loader:
                    pass
                if epoch:
                    times[f"{name}, loader only"].append(time.perf_counter() - started)
            trainer._stop_workers()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes per (set, size, mode); the median is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-epoch", action="store_true", help="leave out the end-to-end student epoch (the slowest part)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker's share
    coco = sorted(PHOTOS.glob("*2017/*.jpg"))
    if not coco:
        sys.exit(f"no photographs under {PHOTOS}")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"COCO-sized": coco, "phone-sized (4x)": phone_sized(coco[:20], Path(tmp))}
        rates: Dict[str, Dict[int, Dict[str, List[float]]]] = {s: {z: {m: [] for m in DECODE_MODES} for z in SIZES} for s in sets}
        for _ in range(args.rounds):  # interleaved, so that drifting machine load hits every mode alike
            for name, paths in sets.items():
                for size in SIZES:
                    for mode in DECODE_MODES:
                        rates[name][size][mode].append(images_per_second(paths, size, mode))
    dump_rates: Dict[int, Dict[str, List[float]]] = {z: {m: [] for m in DUMP_MODES} for z in SIZES}
    for _ in range(args.rounds):
        for size in SIZES:
            for mode in DUMP_MODES:
                dump_rates[size][mode].append(dump_views_per_second(coco[:40], size, mode))
    dump_rows, dump_out = [], {}
    for size, by in dump_rates.items():
        every, once, now = (statistics.median(by[m]) for m in DUMP_MODES)
        dump_out[size] = {"every_view_decoded_views_s": every, "decode_once_float32_views_s": once, "decode_once_uint8_views_s": now,
                          "ratio": now / every, "ratio_decode_once_alone": once / every}  # fmt: skip
        dump_rows.append([size, f"{every:.0f}", f"{once:.0f}", f"{now:.0f}", f"{once / every:.2f}x", f"{now / every:.2f}x"])
    ratios = {
        f"dump_views_v{DUMP_VIEWS}_vs_every_view_decoded": dump_out[224]["ratio"],
        f"dump_views_v{DUMP_VIEWS}_decode_once_alone": dump_out[224]["ratio_decode_once_alone"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        stores = store_table(coco, args.rounds, Path(tmp))
        epoch = None if args.skip_epoch else epoch_end_to_end(args.rounds, Path(tmp))
    store_rows, store_out = [], {}
    for size in SIZES:
        for ra in ("RandAugment", "no RandAugment"):
            jpeg, raw, jstore = (stores[f"{size}|{ra}|{n}"] for n in ("photographs", "raw store", "jpeg store"))
            tag = f"{size}" + ("" if ra == "RandAugment" else "_no_randaugment")
            ratios[f"student_store_vs_jpeg_{tag}"] = raw / jpeg
            ratios[f"student_jpeg_store_vs_jpeg_{tag}"] = jstore / jpeg
            need = STUDENT_RATE[1]
            store_out[tag] = {"photographs_img_s": jpeg, "raw_store_img_s": raw, "jpeg_store_img_s": jstore,
                              "workers_before": need / jpeg, "workers_after_raw": need / raw}  # fmt: skip
            store_rows.append([size, ra, f"{jpeg:.0f}", f"{raw:.0f}", f"{jstore:.0f}", f"{raw / jpeg:.2f}x", f"{jstore / jpeg:.2f}x",
                               f"{need / jpeg:.0f} -> {need / raw:.0f}"])  # fmt: skip
    if epoch is not None:
        ratios["student_epoch_store_vs_jpeg_224"] = epoch["photographs"] / epoch["raw store"]
        ratios["student_loader_epoch_store_vs_jpeg_224"] = epoch["photographs, loader only"] / epoch["raw store, loader only"]
    breakdown = stage_breakdown(coco, max(args.rounds, 3))
    rows, out = [], []
    for name, by_size in rates.items():
        for size, by_mode in by_size.items():
            full, reduced = (statistics.median(by_mode[m]) for m in ("full", "reduced"))
            record = {
                "photos": name,
                "img_size": size,
                "full_img_s": full,
                "reduced_img_s": reduced,
                "ratio": reduced / full,
                "workers_needed_full": {m: r / full for m, r in GPU_RATES.items()},
                "workers_needed_reduced": {m: r / reduced for m, r in GPU_RATES.items()},
            }
            out.append(record)
            rows.append(
                [
                    name,
                    size,
                    f"{full:.0f}",
                    f"{reduced:.0f}",
                    f"{reduced / full:.2f}x",
                    *(f"{r / full:.0f} / {r / reduced:.0f}" for r in GPU_RATES.values()),
                ]
            )
    if args.json:
        record = {"rounds": args.rounds, "ratios": ratios, "rows": out, "dump": dump_out, "stages": breakdown}
        print(json.dumps({**record, "store": store_out, "epoch_s": epoch}, indent=1))
        return
    print(f"one worker (1 thread), decode + train view, median of {args.rounds} rounds; {len(coco)} COCO 2017 photographs")
    print(
        format_table(
            rows,
            [
                "photos",
                "px",
                "full img/s",
                "reduced img/s",
                "reduced/full",
                *(f"workers for {m} (full / reduced)" for m in GPU_RATES),
            ],
        )
    )
    print(f"\none dump worker, V = {DUMP_VIEWS} views per photograph (Cutout + RandAugment), 40 COCO-sized photographs, views/s")
    print(
        format_table(
            dump_rows,
            ["px", "every view decoded, float32", "decode once, float32", "decode once, uint8 (now)", "once/every", "now/every"],
        )
    )
    print(
        f"\none training worker, items/s: photographs (decode + float32 view) vs the cache's image store (uint8 view); {len(coco)} photographs"
    )
    print(
        format_table(
            store_rows,
            [
                "px",
                "transform",
                "photographs",
                "raw store",
                "jpeg store",
                "raw/photos",
                "jpeg/photos",
                f"workers for {STUDENT_RATE[0]}",
            ],
        )
    )
    if epoch is not None:
        print(
            f"\noffline student epoch, coco2017-tiny, 224 px, 2 workers: photographs {epoch['photographs']:.2f} s, "
            f"raw store {epoch['raw store']:.2f} s ({epoch['photographs'] / epoch['raw store']:.2f}x); its loader alone: photographs "
            f"{epoch['photographs, loader only']:.3f} s, raw store {epoch['raw store, loader only']:.3f} s "
            f"({epoch['photographs, loader only'] / epoch['raw store, loader only']:.2f}x)"
        )
    ms = breakdown["ms"]
    print(f"\none COCO-sized sample at {breakdown['img_size']} px, by stage (median ms per image; RandAugment on)")
    print(format_table([[k, f"{v:.2f}"] for k, v in ms.items()], ["stage", "ms"]))
    print(
        f"torchvision.io decode equals Pillow's pixels: {breakdown['torchvision_decode_equals_pillow']}; "
        f"torch resize vs Pillow: max |diff| {breakdown['torch_resize_max_abs_diff']}, "
        f"{100 * breakdown['torch_resize_differing_fraction']:.2f}% of values differ"
    )


if __name__ == "__main__":
    main()
