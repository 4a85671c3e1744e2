"""``bad_images = 'skip'`` through the stages: the teacher trains and the cache is dumped on the
N-K decodable images (one warning line), and distill-student accepts that cache under the same
policy. The default policy (``error``) is covered by tests/cli/test_bad_input.py."""

from __future__ import annotations

import json

import pytest

from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.commands import distill_student as distill
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.config import load_config
from mlkd_cache.errors import CacheMismatchError

from ..conftest import run_cli_in_process, tiny_config
from ..data.fixtures import make_csv_tree, truncate_file

pytestmark = pytest.mark.slow

DIGITS = "[" + ", ".join(f"'{d}'" for d in range(10)) + "]"


def test_skip_trains_dumps_and_distils_on_the_decodable_images(tmp_path):
    train = [(f"img/{k}.jpg", [str(k), str((k + 3) % 10)]) for k in range(8)]
    root = make_csv_tree(tmp_path / "csv", train=train, test=[(f"img/t{k}.jpg", [str(k)]) for k in range(3)])
    truncate_file(root / "img" / "2.jpg", keep_fraction=0.9)
    (root / "img" / "5.jpg").write_text("not a picture\n")
    cfg_path = tiny_config(
        tmp_path,
        dataset="'csv'",
        data_root=repr(str(root)),
        bad_images="'skip'",
        batch_size="2",
        workers="1",
        dataset_para=f"dict(train_file='train.csv', test_file='test.csv', classes={DIGITS})",
        max_epoch_t="1",
        max_epoch_s="1",
        log_every="1",
        cache="dict(views=2)",
    )

    proc = run_cli_in_process(["teacher-train", "-c", str(cfg_path), "-o", str(tmp_path / "teacher"), "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "cannot be decoded" in line]
    assert warnings == [warnings[0]] and warnings[0].startswith(
        f"skipped 2 of 8 images of csv/train that cannot be decoded (first: {root / 'img' / '2.jpg'}: "
    ), proc.stderr
    steps = (tmp_path / "teacher" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in steps] == [1, 2, 3]  # 6 images, batch 2

    cfg = load_config(cfg_path, {"workers": 0})
    teacher_pt = tmp_path / "teacher" / "teacher.pt"
    result = dump.run(cfg, teacher_pt, tmp_path / "cache", progress=False)
    assert result["samples"] == 6
    assert "img/2.jpg" not in TargetCache(tmp_path / "cache").keys and "img/5.jpg" not in TargetCache(tmp_path / "cache").keys

    student = distill.run(cfg, tmp_path / "student", cache=tmp_path / "cache", progress=False)
    assert student["epochs"] == 1 and (tmp_path / "student" / "student.pt").is_file()

    with pytest.raises(CacheMismatchError, match=r"labels of shape \(6, 10\), the dataset has \(8, 10\).*bad_images='skip'"):
        distill.run(cfg.replace(bad_images="error"), tmp_path / "student-error", cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "student-error").exists()
