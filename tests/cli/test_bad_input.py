"""Bad input through the real console entry point: one clear line, exit code 2, no traceback,
no file touched."""
from __future__ import annotations

import pytest

from ..conftest import assert_one_line_error, run_cli, tiny_config
from ..data.fixtures import make_coco_tree, make_voc_tree, truncate_file


def voc_config(tmp_path, root, **extra):
    return tiny_config(tmp_path, dataset="'voc'", dataset_para="{}", data_root=repr(str(root)), **extra)


CASES = {
    "missing data root": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp, dataset="'voc'", dataset_para="{}"))],
        r"--data-root",
    ),
    "data root does not exist": (
        lambda tmp: ["teacher-train", "-c", str(voc_config(tmp, tmp / "nowhere"))],
        r"nowhere",
    ),
    "wrong folder layout (COCO tree given to voc)": (
        lambda tmp: ["teacher-train", "-c", str(voc_config(tmp, make_coco_tree(tmp / "coco")))],
        r"VOC.*(layout|trainval)",
    ),
    "config typo": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp, img_sise="32"))],
        r"unknown config key 'img_sise'; did you mean 'img_size'\?",
    ),
    "config typo through --set": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp)), "--set", "bach_size=4"],
        r"unknown config key 'bach_size'; did you mean 'batch_size'\?",
    ),
    "wrong type": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp, batch_size="'16'"))],
        r"'batch_size' must be int",
    ),
    "unknown model": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp)), "--model", "resnet51"],
        r"unknown model 'resnet51'.*resnet50",
    ),
    "config file missing": (
        lambda tmp: ["teacher-train", "-c", str(tmp / "missing.py")],
        r"config file not found",
    ),
    "pretrained file missing": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp)), "--pretrained", str(tmp / "w.pth")],
        r"pretrained weights file not found: .*w\.pth; pass --pretrained PATH",
    ),
    "hub weights asked for": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp)), "--pretrained", "imagenet"],
        r"--pretrained PATH",
    ),
    "batch larger than the dataset": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp)), "--batch-size", "500"],
        r"batch_size 500 .* larger than the train split \(96 samples\)",
    ),
    "output folder not writable (below a file)": (
        lambda tmp: ["teacher-train", "-c", str(tiny_config(tmp)), "-o", str(_garbage(tmp / "file") / "sub")],
        r"--out .*sub is not writable",
    ),
    "evaluate: no checkpoint": (
        lambda tmp: ["evaluate", str(tmp / "teacher.pt")],
        r"checkpoint not found",
    ),
    "evaluate: not a checkpoint": (
        lambda tmp: ["evaluate", str(_garbage(tmp / "teacher.pt"))],
        r"cannot read checkpoint",
    ),
}


def _garbage(path):
    path.write_bytes(b"\x00not a torch file" * 10)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    make_args, match = CASES[case]
    args = make_args(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    if args[0] == "teacher-train" and "-o" not in args:
        args += ["-o", str(out)]
    proc = run_cli(args)
    assert_one_line_error(proc, match)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing changed
    assert not out.exists()


def test_truncated_jpeg_is_reported_with_its_file(tmp_path):
    root = make_voc_tree(tmp_path / "voc")
    victim = sorted((root / "VOCtrainval2007/VOCdevkit/VOC2007/JPEGImages").glob("*.jpg"))[0]
    truncate_file(victim)
    cfg = voc_config(tmp_path, root, batch_size="2", max_epoch_t="1")
    proc = run_cli(["teacher-train", "-c", str(cfg), "-o", str(tmp_path / "out"), "--no-progress"])
    assert_one_line_error(proc, victim.name)


def test_help_shows_defaults_and_examples():
    proc = run_cli(["teacher-train", "--help"])
    assert proc.returncode == 0
    assert "Examples:" in proc.stdout and "--data-root" in proc.stdout and "--resume" in proc.stdout
    assert "[default: runs/<config name>]" in proc.stdout
    proc = run_cli(["--version"])
    assert proc.returncode == 0 and "mlkd-cache" in proc.stdout
