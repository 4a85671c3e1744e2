"""Bad input through the real console entry point, for every command: one clear line, exit code 2,
no traceback, no file touched.

Each case of :data:`CASES` runs the CLI's ``main`` in a folder of its own: in this process
(:func:`~tests.conftest.run_cli_in_process`, stdout, stderr and exit code captured as a process
would give them), and for the cases of :data:`REAL_PROCESSES` also as a real ``python -m
mlkd_cache`` process, side by side, one per core, whose output must be the same one line. The
expensive artefacts (a 1-epoch digits teacher, its 2-view cache, a second teacher) are built once,
in process, by the ``built`` fixture. Every case's folder is snapshotted (size, mtime, sha256) before and after its
run, the shared artefacts before and after all runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

import mlkd_cache
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import export as exporting
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config
from mlkd_cache.runtime.checkpoint import load_checkpoint, save_checkpoint

from ..conftest import assert_one_line_error, run_cli, run_cli_in_process, tiny_config
from ..data.fixtures import make_coco_tree, make_csv_tree, make_voc_tree, truncate_file

DIGITS = "[" + ", ".join(f"'{d}'" for d in range(10)) + "]"  # the digits teacher's classes
SMALL_FILE = 1 << 20  # files up to this size are compared by sha256 too


@dataclass(frozen=True)
class Built:
    """Artefacts shared by the cases (never to be changed by them)."""

    root: Path
    teacher: Path
    cache: Path
    other_teacher: Path  # a valid teacher.pt that is not the one the cache was dumped from


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("bad_input_artefacts")
    cfg_path = tiny_config(root, max_epoch_t="1", cache="dict(views=2)")
    cfg = load_config(cfg_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher.run(cfg, root / "teacher", progress=False)
        dump.run(cfg, root / "teacher" / "teacher.pt", root / "cache", progress=False)
    finally:
        torch.set_num_threads(threads)
    other = load_checkpoint(root / "teacher" / "teacher.pt")
    other["metrics"] = {"mAP": 0.0}
    (root / "other").mkdir()
    save_checkpoint(root / "other" / "teacher.pt", other)
    return Built(root, root / "teacher" / "teacher.pt", root / "cache", root / "other" / "teacher.pt")


# ---------------------------------------------------------------------------------------------
# Input builders
# ---------------------------------------------------------------------------------------------


def voc_config(tmp: Path, root: Path, **extra: str) -> Path:
    return tiny_config(tmp, dataset="'voc'", dataset_para="{}", data_root=repr(str(root)), **extra)


def csv_config(tmp: Path, root: Path, classes: str = "None", **extra: str) -> Path:
    para = f"dict(train_file='train.csv', test_file='test.csv', classes={classes})"
    return tiny_config(tmp, dataset="'csv'", dataset_para=para, data_root=repr(str(root)), **extra)


def digit_csv_tree(tmp: Path) -> Path:
    """A csv dataset whose classes are the digits teacher's, so that teacher fits it."""
    train = [(f"img/{k}.jpg", [str(k), str((k + 3) % 10)]) for k in range(6)]
    return make_csv_tree(tmp / "csv", train=train, test=train[:2])


def garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a torch file" * 10)
    return path


def first_voc_image(root: Path) -> Path:
    return sorted((root / "VOCtrainval2007/VOCdevkit/VOC2007/JPEGImages").glob("*.jpg"))[0]


def criterion(**para: str) -> str:
    """``--set criterion_t2s_para=...`` with an MLD logits slot plus ``para`` (Python literals)."""
    items = {"lambda_logits": "10.0", "logits_dis": "dict(name='MLD', para=dict())", **para}
    return "criterion_t2s_para=dict(name='KD', para=dict(" + ", ".join(f"{k}={v}" for k, v in items.items()) + "))"


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

Make = Callable[[Path, Built], List[str]]


@dataclass(frozen=True)
class Case:
    """``make(tmp, built)`` gives the arguments; ``match`` must be found in the one stderr line.
    ``lazy``: the problem is only met while the images are read (``bad_images='error'``), after
    ``tmp/out`` was created; it may then hold files, but none that looks complete."""

    make: Make
    match: str
    lazy: bool = False


def _tt(tmp: Path, cfg: Path, *extra: str) -> List[str]:
    return ["teacher-train", "-c", str(cfg), "-o", str(tmp / "out"), "--no-progress", *extra]


def _ds(tmp: Path, b: Built, *extra: str, cache: Path | None = None, out: Path | None = None) -> List[str]:
    config = tiny_config(tmp, cache="dict(views=2)")  # the recipe the shared cache was dumped with
    return [
        "distill-student",
        "-c",
        str(config),
        "--cache",
        str(cache or b.cache),
        "-o",
        str(out or tmp / "out"),
        "--no-progress",
        *extra,
    ]


def _dt(tmp: Path, cfg: Path, teacher_pt: Path, *extra: str) -> List[str]:
    return ["dump-targets", "-c", str(cfg), "--teacher", str(teacher_pt), "-o", str(tmp / "out"), "--no-progress", *extra]


def _truncated_voc(tmp: Path) -> Path:
    root = make_voc_tree(tmp / "voc")
    truncate_file(first_voc_image(root))
    return root


def _not_an_image_csv(tmp: Path) -> Path:
    root = make_csv_tree(tmp / "csv")
    (root / "img" / "b.jpg").write_text("image,labels\nthis is a text file\n")
    return root


def _empty_csv_split(tmp: Path) -> Path:
    root = make_csv_tree(tmp / "csv")
    (root / "train.csv").write_text("image,labels\n")
    return root


def _empty_voc_split(tmp: Path) -> Path:
    root = make_voc_tree(tmp / "voc")
    (root / "VOCtrainval2007/VOCdevkit/VOC2007/ImageSets/Main/trainval.txt").write_text("")
    return root


def _truncated_digit_csv(tmp: Path) -> Path:
    root = digit_csv_tree(tmp)
    truncate_file(root / "img" / "2.jpg")
    return root


CASES: Dict[str, Case] = {
    # ---- teacher-train: data
    "teacher-train: missing data root": Case(
        lambda t, b: _tt(t, tiny_config(t, dataset="'voc'", dataset_para="{}")),
        r"dataset 'voc' needs a data root: pass --data-root",
    ),
    "teacher-train: data root does not exist": Case(
        lambda t, b: _tt(t, voc_config(t, t / "nowhere")),
        r"data root not found: .*nowhere is not a folder",
    ),
    "teacher-train: wrong folder layout (COCO tree given to voc)": Case(
        lambda t, b: _tt(t, voc_config(t, make_coco_tree(t / "coco"))),
        r"VOC layout not found: .*VOCtrainval2007",
    ),
    "teacher-train: truncated JPEG, read in a DataLoader worker": Case(
        lambda t, b: _tt(t, voc_config(t, _truncated_voc(t), batch_size="2", max_epoch_t="1", workers="1")),
        r"cannot decode image .*JPEGImages/000005\.jpg \(.+\); the file is truncated or not an image",
        lazy=True,
    ),
    "teacher-train: a text file with a .jpg name": Case(
        lambda t, b: _tt(t, csv_config(t, _not_an_image_csv(t), batch_size="2", max_epoch_t="1")),
        r"cannot decode image .*img/b\.jpg \(cannot identify image file .*\); the file is truncated or not an image",
        lazy=True,
    ),
    "teacher-train: empty split (csv label file lists no image)": Case(
        lambda t, b: _tt(t, csv_config(t, _empty_csv_split(t), classes="['bird', 'cat', 'dog']")),
        r"empty split: .*train\.csv lists no images",
    ),
    "teacher-train: unknown class in a VOC annotation": Case(
        lambda t, b: _tt(t, voc_config(t, make_voc_tree(t / "voc", train={"000005": [dict(name="chiar")]}))),
        r"unknown class 'chiar' \(did you mean 'chair'\?\) in .*000005\.xml",
    ),
    "teacher-train: unknown class in a csv label file": Case(
        lambda t, b: _tt(t, csv_config(t, make_csv_tree(t / "csv"), classes="['cat', 'dog']")),
        r"unknown class 'bird' in .*train\.csv:\d+ \(image img/sub/c\.jpg\)",
    ),
    "teacher-train: bad_images policy misspelt": Case(
        lambda t, b: _tt(t, tiny_config(t), "--set", "bad_images=ignore"),
        r"'bad_images' must be one of error, skip, got 'ignore'",
    ),
    # ---- teacher-train: config and options
    "teacher-train: config typo": Case(
        lambda t, b: _tt(t, tiny_config(t, img_sise="32")),
        r"unknown config key 'img_sise' \(did you mean 'img_size'\?\)$",
    ),
    "teacher-train: config typo through --set": Case(
        lambda t, b: _tt(t, tiny_config(t), "--set", "bach_size=4"),
        r"unknown config key 'bach_size' \(did you mean 'batch_size'\?\)$",
    ),
    "teacher-train: wrong type": Case(
        lambda t, b: _tt(t, tiny_config(t, batch_size="'16'")),
        r"'batch_size' must be int, got str '16'",
    ),
    "teacher-train: unknown dataset": Case(
        lambda t, b: _tt(t, tiny_config(t, dataset="'vocc'")),
        r"config key 'dataset' must be one of voc, coco, nus, csv, digits, got 'vocc' \(did you mean 'voc'\?\)$",
    ),
    "teacher-train: unknown model": Case(
        lambda t, b: _tt(t, tiny_config(t), "--model", "resnet51"),
        r"unknown model 'resnet51'.*resnet50",
    ),
    "teacher-train: unknown hard loss": Case(
        lambda t, b: _tt(t, tiny_config(t), "--set", "loss_t=focal"),
        r"'loss_t' must be one of asl, bce, got 'focal'",
    ),
    "teacher-train: config file missing": Case(
        lambda t, b: _tt(t, t / "missing.py"),
        r"config file not found: .*missing\.py",
    ),
    "teacher-train: pretrained file missing": Case(
        lambda t, b: _tt(t, tiny_config(t), "--pretrained", str(t / "w.pth")),
        r"pretrained weights file not found: .*w\.pth; pass --pretrained PATH",
    ),
    "teacher-train: hub weights asked for": Case(
        lambda t, b: _tt(t, tiny_config(t), "--pretrained", "imagenet"),
        r"--pretrained PATH",
    ),
    "teacher-train: batch larger than the dataset": Case(
        lambda t, b: _tt(t, tiny_config(t), "--batch-size", "500"),
        r"batch_size 500 .* larger than the train split \(96 samples\)",
    ),
    "teacher-train: output folder not writable (below a file)": Case(
        lambda t, b: ["teacher-train", "-c", str(tiny_config(t)), "-o", str(garbage(t / "file") / "sub")],
        r"--out .*file/sub is not writable",
    ),
    "teacher-train: unknown option (click)": Case(
        lambda t, b: _tt(t, tiny_config(t), "--epoch", "3"),
        r"No such option '--epoch'.*'--epochs'.*\(see 'mlkd-cache teacher-train --help'\)$",
    ),
    # ---- dump-targets
    "dump-targets: truncated JPEG, read in a DataLoader worker": Case(
        lambda t, b: _dt(t, csv_config(t, _truncated_digit_csv(t), classes=DIGITS, workers="1"), b.teacher),
        r"cannot decode image .*img/2\.jpg \(.+\); the file is truncated or not an image",
        lazy=True,
    ),
    "dump-targets: empty split (VOC set file lists no image)": Case(
        lambda t, b: _dt(t, voc_config(t, _empty_voc_split(t)), b.teacher),
        r"empty split: .*trainval\.txt lists no images",
    ),
    "dump-targets: teacher trained for another class set": Case(
        lambda t, b: _dt(t, voc_config(t, make_voc_tree(t / "voc")), b.teacher),
        r"teacher .*teacher\.pt was trained for 10 classes .* voc train split has 20",
    ),
    "dump-targets: teacher trained at another img_size": Case(
        lambda t, b: _dt(t, tiny_config(t), b.teacher, "--set", "img_size=48"),
        r"trained at img_size 32, config asks for 48",
    ),
    "dump-targets: teacher file is not a checkpoint": Case(
        lambda t, b: _dt(t, tiny_config(t), garbage(t / "teacher.pt")),
        r"cannot read checkpoint .*teacher\.pt \(not a complete zip archive, as torch checkpoints are\)",
    ),
    "dump-targets: --views 0 (click)": Case(
        lambda t, b: _dt(t, tiny_config(t), b.teacher, "--views", "0"),
        r"'--views': 0 is not in the range x>=1 \(see 'mlkd-cache dump-targets --help'\)$",
    ),
    "dump-targets: --set cache.views=0": Case(
        lambda t, b: _dt(t, tiny_config(t), b.teacher, "--set", "cache.views=0"),
        r"config key 'cache\.views' must be >= 1, got 0",
    ),
    "dump-targets: cache.fields misspelt": Case(
        lambda t, b: _dt(t, tiny_config(t), b.teacher, "--set", "cache.fields=['logits', 'featurs']"),
        r"config key 'cache\.fields' names 'featurs' \(did you mean 'features'\?\), not a teacher output",
    ),
    "dump-targets: --teacher missing": Case(
        lambda t, b: ["dump-targets", "-c", str(tiny_config(t)), "-o", str(t / "out")],
        r"dump-targets needs --teacher and --out \(only --dry-run works without them\)$",
    ),
    "evaluate: --split missing its value (click)": Case(
        lambda t, b: ["evaluate", str(b.teacher), "--split"],
        r"Option '--split' requires an argument.*\(see 'mlkd-cache evaluate --help'\)$",
    ),
    "dump-targets: output folder not writable (below a file)": Case(
        lambda t, b: [
            "dump-targets",
            "-c",
            str(tiny_config(t)),
            "--teacher",
            str(b.teacher),
            "-o",
            str(garbage(t / "file") / "sub"),
        ],
        r"--out .*file/sub is not writable",
    ),
    # ---- distill-student
    "distill-student: cache for another img_size": Case(
        lambda t, b: _ds(t, b, "--img-size", "48"),
        r"cache built for img_size 32, config asks for 48",
    ),
    "distill-student: cache for another transform": Case(
        lambda t, b: _ds(t, b, "--set", "transform.hflip=0.5"),
        r"cache built with transform \w+, config gives \w+",
    ),
    "distill-student: unknown loss name": Case(
        lambda t, b: _ds(t, b, "--set", criterion(logits_dis="dict(name='MLDX', para=dict())")),
        r"logits_dis: unknown distillation loss 'MLDX' \(did you mean 'MLD'\?\)",
    ),
    "distill-student: unknown loss para key": Case(
        lambda t, b: _ds(t, b, "--set", criterion(lambda_logit="1.0")),
        r"unknown para key 'lambda_logit' \(did you mean 'lambda_logits'\?\)",
    ),
    "distill-student: negative loss weight": Case(
        lambda t, b: _ds(t, b, "--set", criterion(lambda_logits="-1.0")),
        r"lambda_logits must be >= 0, got -1",
    ),
    "distill-student: unknown parameter of a loss": Case(
        lambda t, b: _ds(t, b, "--set", criterion(lambda_le="1.0", le_dis="dict(name='LED', para=dict(lambda_xd=1.0))")),
        r"LED got unknown parameter 'lambda_xd'",
    ),
    "distill-student: batch larger than the dataset": Case(
        lambda t, b: _ds(t, b, "--batch-size", "500"),
        r"batch_size 500 .* larger than the train split \(96 samples\)",
    ),
    "distill-student: output folder not writable (below a file)": Case(
        lambda t, b: _ds(t, b, out=garbage(t / "file") / "sub"),
        r"--out .*file/sub is not writable",
    ),
    "distill-student: --cache is not a cache": Case(
        lambda t, b: _ds(t, b, cache=garbage(t / "notcache" / "x.bin").parent),
        r"no manifest\.json in .*notcache and no shard files: not a target cache; give the --out folder of dump-targets",
    ),
    "distill-student: neither --cache nor --teacher": Case(
        lambda t, b: ["distill-student", "-c", str(tiny_config(t)), "-o", str(t / "out")],
        r"give either --cache DIR .* or --teacher teacher\.pt .*not neither",
    ),
    # ---- sweep
    "sweep: a search-space key the config cannot tune": Case(
        lambda t, b: [
            "sweep",
            "-c",
            str(tiny_config(t, cache="dict(views=2)")),
            "--cache",
            str(b.cache),
            "-o",
            str(t / "sweep"),
            "--space",
            "lr=log:1e-4:1e-2",
        ],
        r"search space key 'lr' is not tunable in this config \(did you mean 'lr_s'\?\); valid keys: lr_s, weight_decay, ",
    ),
    "sweep: a dataset without a val split": Case(
        lambda t, b: ["sweep", "-c", str(csv_config(t, make_csv_tree(t / "csv"))), "--no-kd", "-o", str(t / "sweep")],
        r"sweep scores its trials on the val split, which dataset csv has not here; carve one from train with val_split = ",
    ),
    # ---- inspect, verify, evaluate, demo
    "inspect: folder is not a cache": Case(
        lambda t, b: ["inspect", str(garbage(t / "notcache" / "x.bin").parent)],
        r"no manifest\.json in .*notcache and no shard files: not a target cache; give the --out folder of dump-targets",
    ),
    "verify: folder is not a cache": Case(
        lambda t, b: ["verify", str(garbage(t / "notcache" / "x.bin").parent), "--teacher", str(b.teacher)],
        r"no manifest\.json in .*notcache and no shard files: not a target cache; give the --out folder of dump-targets",
    ),
    "verify: another teacher than the cache's": Case(
        lambda t, b: ["verify", str(b.cache), "--teacher", str(b.other_teacher)],
        r"dumped from teacher sha256 \w+…, .*other/teacher\.pt is \w+…; pass the teacher the cache was built with",
    ),
    "evaluate: no checkpoint": Case(
        lambda t, b: ["evaluate", str(t / "teacher.pt")],
        r"checkpoint not found: .*teacher\.pt",
    ),
    "evaluate: not a checkpoint": Case(
        lambda t, b: ["evaluate", str(garbage(t / "teacher.pt"))],
        r"cannot read checkpoint .*teacher\.pt \(not a complete zip archive, as torch checkpoints are\)",
    ),
    "evaluate: truncated checkpoint": Case(
        lambda t, b: ["evaluate", str(truncate_file(shutil.copy(b.teacher, t / "teacher.pt"), keep_fraction=0.6))],
        r"cannot read checkpoint .*teacher\.pt \(not a complete zip archive, as torch checkpoints are\)",
    ),
    "evaluate: unknown split": Case(
        lambda t, b: ["evaluate", str(b.teacher), "--split", "dev"],
        r"unknown split 'dev'; valid: train, val, test",
    ),
    "demo: unknown student recipe": Case(
        lambda t, b: ["demo", "-c", str(tiny_config(t)), "-o", str(t / "out"), "--students", "no-kd,l3d"],
        r"--students: unknown recipe 'l3d'; choose from no-kd, mld, l2d, mpscd",
    ),
    # ---- import-teacher, tune-thresholds, predict, export, plot
    "import-teacher: weights file missing": Case(
        lambda t, b: [
            "import-teacher",
            str(t / "nowhere.pth"),
            "-c",
            str(tiny_config(t, model_t="'resnet18'")),
            "-o",
            str(t / "out" / "teacher.pt"),
        ],
        r"checkpoint not found: .*nowhere\.pth; give the \.pth file L2D's main\.py saved",
    ),
    "tune-thresholds: -o exists": Case(
        lambda t, b: ["tune-thresholds", str(b.teacher), "-o", str(garbage(t / "tuned.pt"))],
        r"-o .*tuned\.pt exists; .*pass --overwrite",
    ),
    "tune-thresholds: objective misspelt": Case(
        lambda t, b: ["tune-thresholds", str(b.teacher), "--objective", "precison=0.7", "-o", str(t / "out" / "tuned.pt")],
        r"objective 'precison=0\.7' is not valid; use one of f1, precision=P, recall=R",
    ),
    "predict: input missing": Case(
        lambda t, b: ["predict", str(b.teacher), str(t / "nowhere.jpg"), "-o", str(t / "out" / "labels.csv")],
        r"nowhere\.jpg does not exist",
    ),
    "export: -o exists": Case(
        lambda t, b: ["export", str(b.teacher), "-o", str(garbage(t / "teacher.onnx"))],
        r"-o .*teacher\.onnx exists; .*pass --overwrite",
    ),
    "plot: folder is not a run": Case(
        lambda t, b: ["plot", str(garbage(t / "run" / "x.bin").parent), "-o", str(t / "out" / "curves.png")],
        r"run is not a run folder \(no metrics\.jsonl\); pass the --out folder of teacher-train or distill-student",
    ),
    # ---- an exported file where a checkpoint is needed (export and tune-thresholds: tests/engine/test_export.py)
    "evaluate: an exported .pt2 file given as the checkpoint": Case(
        lambda t, b: ["evaluate", exporting.export(b.teacher, t / "teacher.pt2", check=False)["path"]],
        r"teacher\.pt2 is a torch\.export \(\.pt2\) program written by mlkd-cache export, not a checkpoint; "
        r"this needs a checkpoint \(\.pt\): give the one it was exported from, .*teacher/teacher\.pt$",
    ),
    "dump-targets: --teacher is an exported .onnx file": Case(
        lambda t, b: _dt(t, tiny_config(t), Path(exporting.export(b.teacher, t / "teacher.onnx", check=False)["path"])),
        r"teacher\.onnx is an ONNX model written by mlkd-cache export, not a checkpoint; this needs a checkpoint \(\.pt\)",
    ),
    "import-teacher: the weights file is an exported .onnx": Case(
        lambda t, b: [
            "import-teacher",
            exporting.export(b.teacher, t / "teacher.onnx", check=False)["path"],
            "-c",
            str(tiny_config(t, model_t="'resnet18'")),
            "-o",
            str(t / "out" / "teacher.pt"),
        ],
        r"teacher\.onnx is an ONNX model written by mlkd-cache export, not a checkpoint",
    ),
    "verify: --teacher is an exported .pt2 file": Case(
        lambda t, b: ["verify", str(b.cache), "--teacher", exporting.export(b.teacher, t / "teacher.pt2", check=False)["path"]],
        r"teacher\.pt2 is a torch\.export \(\.pt2\) program written by mlkd-cache export, not a checkpoint",
    ),
}

# Cases also run as real processes (the console entry point, interpreter exit included): one per
# kind of failure (a click usage error, an error in a DataLoader worker process, a config that
# does not fit the cache, a file that is not a checkpoint).
REAL_PROCESSES = (
    "teacher-train: unknown option (click)",
    "teacher-train: truncated JPEG, read in a DataLoader worker",
    "distill-student: cache for another transform",
    "evaluate: not a checkpoint",
)

# What a finished output looks like: none of these may be left by a failed run.
COMPLETE_LOOKING = ("teacher.pt", "student.pt", "checkpoint.pt", "manifest.json")


def snapshot(*roots: Path) -> Dict[str, Tuple]:
    """path -> ("dir",) or (size, mtime_ns, sha256 of small files) of everything under ``roots``."""
    state: Dict[str, Tuple] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_dir():
                state[str(p)] = ("dir",)
                continue
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size <= SMALL_FILE else None
            state[str(p)] = (st.st_size, st.st_mtime_ns, digest)
    return state


@dataclass
class Outcome:
    """One case's run: its folder, the finished run (in process) and the folder's state around
    it; for the cases of :data:`REAL_PROCESSES` also the run as a real process, in a folder of
    its own (``process_tmp``)."""

    tmp: Path
    proc: subprocess.CompletedProcess
    before: Dict[str, Tuple]
    after: Dict[str, Tuple]
    process: Optional[subprocess.CompletedProcess] = None
    process_tmp: Optional[Path] = None


@pytest.fixture(scope="module")
def outcomes(request, built, tmp_path_factory) -> Tuple[Dict[str, Outcome], Dict[str, Tuple], Dict[str, Tuple]]:
    """Run the selected cases in this process, one after the other, then those of
    :data:`REAL_PROCESSES` as processes too, as many at a time as there are cores (each process
    spends most of its life importing torch); returns the outcomes and the state of the shared
    artefacts before and after all of them."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and hasattr(item, "callspec")
        and item.originalname == "test_bad_input_is_one_line_exit_2"
    ]
    prepared = []
    for n, name in enumerate(selected):  # inputs are built here, one after the other
        tmp = tmp_path_factory.mktemp(f"case{n}")
        args = CASES[name].make(tmp, built)
        prepared.append((name, tmp, args, snapshot(tmp)))
    shared_before = snapshot(built.root)

    results = {}
    for name, tmp, args, before in prepared:
        results[name] = Outcome(tmp, run_cli_in_process(args), before, {})
        results[name].after = snapshot(tmp)

    in_processes = []
    for n, name in enumerate(name for name in REAL_PROCESSES if name in results):
        tmp = tmp_path_factory.mktemp(f"process{n}")
        in_processes.append((name, tmp, CASES[name].make(tmp, built)))

    def run(item) -> Tuple[str, Path, subprocess.CompletedProcess]:
        name, tmp, args = item
        return name, tmp, run_cli(args, env={"OMP_NUM_THREADS": "1"})

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for name, tmp, proc in pool.map(run, in_processes):
            results[name].process, results[name].process_tmp = proc, tmp
    return results, shared_before, snapshot(built.root)


def test_the_table_covers_every_command():
    """Every command of the CLI's group has a row: a new command fails here until it has one."""
    from mlkd_cache.cli.main import app

    assert set(REAL_PROCESSES) <= set(CASES)
    commands = {name.split(":")[0] for name in CASES}
    assert commands == set(app.commands)
    assert len(CASES) >= 30


@pytest.mark.slow  # the shared teacher and cache are trained and dumped first (`built`)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(outcomes, case):
    results, shared_before, shared_after = outcomes
    outcome, spec = results[case], CASES[case]
    line = assert_one_line_error(outcome.proc, spec.match)
    if outcome.process is not None:  # the same line from a real process (its own folder: paths differ)
        assert_one_line_error(outcome.process, spec.match)
        assert outcome.process.stderr.strip().replace(str(outcome.process_tmp), "TMP") == line.replace(str(outcome.tmp), "TMP")
    out = outcome.tmp / "out"
    after = outcome.after
    if spec.lazy and out.exists():  # created by the run: nothing in it may look finished
        left = [p for p in out.rglob("*") if p.name in COMPLETE_LOOKING or p.suffix == ".h5"]
        assert not left, left
        after = {p: s for p, s in after.items() if not Path(p).is_relative_to(out)}
    assert after == outcome.before  # nothing written, nothing changed in the case's folder
    assert not out.exists() or spec.lazy
    changed = sorted(set(shared_before.items()) ^ set(shared_after.items()))
    assert not changed, f"shared teacher/cache changed by some case: {changed[:3]}"


def test_help_shows_defaults_and_examples():  # in a real process: tests/test_wheel.py
    proc = run_cli_in_process(["teacher-train", "--help"])
    assert proc.returncode == 0
    assert "Examples:" in proc.stdout and "--data-root" in proc.stdout and "--resume" in proc.stdout
    assert "[default: runs/<config name>]" in proc.stdout
    proc = run_cli_in_process(["--version"])
    assert proc.returncode == 0 and proc.stdout == f"mlkd-cache, version {mlkd_cache.__version__}\n" and not proc.stderr
