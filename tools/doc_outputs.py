"""Every printed block of the docs, made by running the commands it shows.

A fenced block right after a marker line ``<!-- output: NAME -->`` in a page of ``docs/`` holds
what recipe NAME printed: the commands run here, in a scratch folder, on embedded or generated
data (the digits, a VOC-layout tree of random pixels made by the test suite's fixture code, the
real photographs of ``../shared/data/voc2007-rf144``), each as ``$ command`` then its output,
stdout and stderr as a terminal shows them. Paths are relative to the scratch folder.

    python tools/doc_outputs.py                    # which blocks differ from a fresh (quick) run
    python tools/doc_outputs.py --write            # rewrite every block
    python tools/doc_outputs.py --write walkthrough  # some recipes only

``tests/test_doc_outputs.py`` reruns every recipe and fails when a block's lines differ from a
fresh run's beyond the numbers in them (losses, scores, sizes and times vary with the CPU and the
machine's load; the lines, fields and messages may not).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MARKER = re.compile(r"^<!-- output: ([\w-]+) -->\n```(\w*)\n(.*?)```\n", re.M | re.S)

sys.path.insert(0, str(REPO))  # the test suite's fixture code builds the VOC-layout tree


class Session:
    """Commands run in ``folder`` (the current directory meanwhile), their transcript kept.
    ``quick``: a recipe too long for the test suite (the demo) runs with small settings that
    print the same lines with other numbers."""

    def __init__(self, folder: Path, quick: bool = False) -> None:
        self.folder, self.quick = folder, quick
        self.lines: List[str] = []

    def run(self, command: str, show: Optional[str] = None, expect: int = 0) -> str:
        """Run ``command`` (``mlkd-cache ...`` in this process, anything else in a shell) and add
        ``$ show`` (default: the command) and its output to the transcript."""
        import torch

        from mlkd_cache.cli.main import main

        args = shlex.split(command)
        buffer = io.StringIO()
        code = 0
        if args[0] == "mlkd-cache":
            root = logging.getLogger()
            saved = root.handlers[:], root.level, torch.get_num_threads()
            root.handlers = []  # the command's logging.basicConfig writes to the captured stderr
            torch.set_num_threads(1)
            try:
                with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                    try:
                        main(args[1:])
                    except SystemExit as exc:
                        code = exc.code if isinstance(exc.code, int) else 0
            finally:
                root.handlers, root.level = saved[0], saved[1]
                torch.set_num_threads(saved[2])
        else:
            import subprocess

            proc = subprocess.run(command, shell=True, cwd=self.folder, capture_output=True, text=True)
            buffer.write(proc.stdout + proc.stderr)
            code = proc.returncode
        output = buffer.getvalue().replace(f"{self.folder}/", "").replace(str(self.folder), ".")
        if code != expect:
            raise RuntimeError(f"{command!r} exited with {code}, expected {expect}:\n{output}")
        self.lines += [f"$ {show or command}", *output.rstrip("\n").splitlines()]
        return output

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Recipes: name -> a function that runs commands in a session and returns the block
# ------------------------------------------------------------------------------------------------

WALKTHROUGH_CONFIG = """\
# voc_r50_r18.py: VOC 2007, ResNet-50 teacher -> ResNet-18 student with L2D's distiller (MLD + LED)
dataset = "voc"
data_root = "/data/voc"  # holds VOCtrainval2007/ and VOCtest2007/
val_split = dict(fraction=0.1, seed=0)  # a tenth of trainval held out to choose thresholds and weights on
img_size = 224
batch_size = 32

model_t = "resnet50"
pretrained_t = "weights/resnet50.pth"  # a local timm/torchvision state dict; None = from scratch
lr_t = 1e-4
max_epoch_t = 40

model_s = "resnet18"
pretrained_s = "weights/resnet18.pth"
lr_s = 1e-4
max_epoch_s = 40

criterion_t2s_para = dict(
    name="L2D",
    para=dict(
        lambda_ft=0.0,
        ft_dis=None,
        lambda_le=1.0,
        le_dis=dict(name="LED", para=dict(lambda_cd=100.0, lambda_id=1000.0)),
        lambda_logits=10.0,
        logits_dis=dict(name="MLD", para=dict()),
    ),
)
cache = dict(views=8)
"""


def walkthrough_config(s: Session) -> str:
    return WALKTHROUGH_CONFIG


def _voc_tree(root: Path, train: int = 64, test: int = 32) -> None:
    """A VOC 2007 tree of ``train`` + ``test`` random-pixel images, 1-3 random classes each."""
    from mlkd_cache.data.voc import VOC_CLASSES
    from tests.data.fixtures import make_voc_tree

    rng = random.Random(0)

    def objects(prefix: str, n: int) -> Dict[str, List[dict]]:
        return {f"{prefix}{k:05d}": [{"name": c} for c in rng.sample(VOC_CLASSES, rng.randint(1, 3))] for k in range(n)}

    make_voc_tree(root, train=objects("0", train), test=objects("1", test))


def walkthrough(s: Session) -> str:
    """The three stages of docs/training.md, with tiny models and 2 epochs."""
    (s.folder / "voc_r50_r18.py").write_text(WALKTHROUGH_CONFIG)
    _voc_tree(s.folder / "voc")
    small = "--data-root voc --img-size 64 --batch-size 16 --set pretrained_t=None --set pretrained_s=None --no-progress"
    s.run(f"mlkd-cache teacher-train -c voc_r50_r18.py -o runs/voc/teacher --epochs 2 --model test_resnet {small}")
    s.run(
        "mlkd-cache dump-targets -c voc_r50_r18.py --teacher runs/voc/teacher/teacher.pt -o runs/voc/cache --data-root voc "
        "--set img_size=64 --batch-size 16 --no-progress"
    )
    s.run("mlkd-cache inspect runs/voc/cache")
    s.run(
        f"mlkd-cache distill-student -c voc_r50_r18.py --cache runs/voc/cache -o runs/voc/student-l2d --epochs 2 "
        f"--model test_resnet {small}"
    )
    return s.text()


def config_typo(s: Session) -> str:
    (s.folder / "my_voc.py").write_text(WALKTHROUGH_CONFIG)
    s.run("mlkd-cache teacher-train -c my_voc.py --set img_sise=448", expect=2)
    return s.text()


def dry_run_coco(s: Session) -> str:
    s.run("mlkd-cache dump-targets -c coco/resnet101_to_resnet34_l2d.py --dry-run --views 8")
    return s.text()


def dry_run_digits(s: Session) -> str:
    s.run("mlkd-cache dump-targets -c digits/resnet10t_to_test_resnet_l2d.py --dry-run --views 16")
    return s.text()


_TRAINED: Dict[str, Path] = {}  # the deploy recipes' student, trained once per process
_KEEP: List[tempfile.TemporaryDirectory] = []


def _deploy_student(s: Session) -> None:
    """A no-KD student of the shipped VOC rf144 config, briefly trained on its real photographs
    (300 of them, 3 epochs: its labels are those of a weak model), with f1 thresholds on val, in
    ``s.folder`` as ``student.pt``, beside six photographs, a truncated JPEG and a text file."""
    data = SHARED / "voc2007-rf144"
    if not data.is_dir():
        raise RuntimeError(f"the deploy recipes need the photographs in {data} (tools/build_voc_rf144.py builds them)")
    (s.folder / "voc2007-rf144").symlink_to(data)
    if "student" not in _TRAINED:
        scratch = tempfile.TemporaryDirectory()
        _KEEP.append(scratch)
        home = Path(scratch.name).resolve()
        (home / "voc2007-rf144").symlink_to(data)
        here = os.getcwd()
        os.chdir(home)
        try:
            Session(home).run(  # not shown: how the student was made
                "mlkd-cache distill-student -c voc-rf144/resnet10t_to_test_resnet_l2d.py --no-kd --data-root voc2007-rf144 "
                "-o student --epochs 3 --set eval_every=3 --no-progress "
                "--set \"dataset_para=dict(train_file='train.csv', val_file='val.csv', test_file='test.csv', train_size=300)\""
            )
        finally:
            os.chdir(here)
        _TRAINED["student"] = home / "student" / "student.pt"
    shutil.copy(_TRAINED["student"], s.folder / "student.pt")
    photos = s.folder / "photos"
    photos.mkdir()
    for name in ("000016.jpg", "000019.jpg", "000032.jpg", "000033.jpg", "000042.jpg", "000047.jpg"):
        shutil.copy(data / "images" / name, photos / name)
    (photos / "broken.jpg").write_bytes((data / "images" / "000050.jpg").read_bytes()[:2500])
    (photos / "notes.txt").write_text("shot on 2026-12-01\n")


def deploy_predict(s: Session) -> str:
    _deploy_student(s)
    s.run(
        "mlkd-cache predict student.pt photos/ -o labels.csv --no-progress",
        show="mlkd-cache predict student.pt photos/ -o labels.csv",
    )
    s.run("cut -d, -f1-3 labels.csv")
    return s.text()


def deploy_thresholds(s: Session) -> str:
    _deploy_student(s)
    s.run("mlkd-cache evaluate student.pt --data-root voc2007-rf144")
    s.run("mlkd-cache tune-thresholds student.pt --objective precision=0.7 -o student-p70.pt --data-root voc2007-rf144")
    return s.text()


def deploy_export(s: Session) -> str:
    _deploy_student(s)
    shutil.copy(REPO / "examples" / "deploy" / "run_onnx.py", s.folder / "run_onnx.py")
    s.run("mlkd-cache export student.pt -o student.onnx")
    s.run("mlkd-cache predict student.onnx photos/ -o labels-onnx.csv --no-progress")
    s.run(f"{shlex.quote(sys.executable)} run_onnx.py student.onnx photos/000016.jpg photos/000042.jpg | cut -c1-60")
    s.lines[-3] = "$ python run_onnx.py student.onnx photos/000016.jpg photos/000042.jpg | cut -c1-60"
    return s.text()


# The demo's small settings for the test suite: the same config, teacher, cache and four students,
# on 64 canvases for one epoch each (the full demo takes about 15 minutes on 2 cores).
QUICK_DEMO = (
    "--set max_epoch_t=1 --set max_epoch_s=1 --set batch_size=16 --set cache.views=2 "
    '--set "dataset_para=dict(train_size=64, val_size=32, test_size=64)" --set "dataset_para_t=dict(train_size=64)"'
)


def demo(s: Session) -> str:
    """The results table ``make demo`` (``mlkd-cache demo``) prints: its heading line to the last
    student's row."""
    output = s.run(f"mlkd-cache demo --out runs/demo --no-progress {QUICK_DEMO if s.quick else ''}")
    lines = output.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("digits "))
    stop = next(k for k in range(start, len(lines)) if lines[k].startswith("vs teacher:"))
    return "\n".join(lines[start:stop]) + "\n"


RECIPES: Dict[str, Callable[[Session], str]] = {
    "walkthrough-config": walkthrough_config,
    "walkthrough": walkthrough,
    "config-typo": config_typo,
    "dry-run-coco": dry_run_coco,
    "dry-run-digits": dry_run_digits,
    "deploy-predict": deploy_predict,
    "deploy-thresholds": deploy_thresholds,
    "deploy-export": deploy_export,
    "demo": demo,
}
NEEDS_PHOTOS = ("deploy-predict", "deploy-thresholds", "deploy-export")


def run_recipe(name: str, quick: bool = False) -> str:
    """The block recipe ``name`` prints, made in a scratch folder of its own (``quick``: see
    :class:`Session`)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp).resolve()
        here = os.getcwd()
        os.chdir(folder)
        try:
            return RECIPES[name](Session(folder, quick))
        finally:
            os.chdir(here)


def blocks(page: Path) -> List[Tuple[str, str, str]]:
    """``(name, language, text)`` of every marked block of ``page``."""
    return [(m.group(1), m.group(2), m.group(3)) for m in MARKER.finditer(page.read_text(encoding="utf-8"))]


def pages() -> List[Path]:
    return sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


# What a block may print otherwise on another CPU besides its numbers: the classes a weak model
# predicts for a photograph, or the classes a precision target is out of reach for.
VOLATILE = (
    (re.compile(r"^(photos/[^,\s]+),[^,]*,", re.M), r"\1,<labels>,"),
    (re.compile(r"^(photos/\S+) .*$", re.M), r"\1 <labels>"),
    (re.compile(r"(classes fell back)(:.*)?$", re.M), r"\1: <classes>"),
)


def shape(text: str) -> str:
    """``text`` with its numbers, digests, times and :data:`VOLATILE` parts masked: what must not
    change between CPUs."""
    for pattern, mask in VOLATILE:
        text = pattern.sub(mask, text)
    text = re.sub(r"\b[0-9a-f]{12,}\b", "<hex>", text)
    text = re.sub(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", "<n>", text)
    return re.sub(r"[ \t]+", " ", text)


def write(names: Sequence[str]) -> List[str]:
    """Rerun ``names`` and rewrite their blocks; the names of the blocks that changed."""
    fresh = {name: run_recipe(name) for name in names}
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")

        def replace(m: re.Match, page: Path = page) -> str:
            name, lang, old = m.group(1), m.group(2), m.group(3)
            if name not in fresh:
                return m.group(0)
            if fresh[name] != old:
                changed.append(f"{page.relative_to(REPO)}: {name}")
            return f"<!-- output: {name} -->\n```{lang}\n{fresh[name]}```\n"

        new = MARKER.sub(replace, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"recipes to run (default: all): {', '.join(RECIPES)}")
    parser.add_argument("--write", action="store_true", help="rewrite the blocks (default: only say which differ)")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    names = args.names or list(RECIPES)
    if args.write:
        changed = write(names)
        print("\n".join(changed) if changed else "every block was already what the commands print")
        return
    stale = []
    marked = {name: (page, text) for page in pages() for name, _, text in blocks(page)}
    for name in names:
        page, text = marked[name]
        if shape(run_recipe(name, quick=True)) != shape(text):
            stale.append(f"{page.relative_to(REPO)}: {name}")
    print("\n".join(stale) if stale else "every block has the lines the commands print")
    sys.exit(1 if stale else 0)


if __name__ == "__main__":
    main()
