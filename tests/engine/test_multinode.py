"""Every stage on 2 simulated nodes x 1 rank (tests/nodes.py): it computes what 1 node x 2 ranks
computes (first-step terms, caches byte for byte), on shared storage and on storage of a node's
own; layouts that cannot work are refused on every node in one line before any work; a node
that dies ends the run within seconds, leaves nothing looking complete, and a re-run resumes."""

from __future__ import annotations

import re
import shlex
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mlkd_cache.cache.format import MANIFEST_NAME, part_glob
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.commands.evaluate import run as evaluate_run
from mlkd_cache.config import load_config
from mlkd_cache.runtime.checkpoint import load_checkpoint
from mlkd_cache.runtime.runlog import MetricsLog
from mlkd_cache.runtime.students import DistillTrainer, NoKDTrainer
from mlkd_cache.runtime.train import Trainer

from ..bounds import assert_map_of_recomputed
from ..conftest import (
    REPO,
    SAME_ARITHMETIC_RTOL,
    first_step_terms,
    run_cli_in_process,
    tiny_config,
    torch_threads,
    wait_for_checkpoint,
)
from ..nodes import (
    Node,
    assert_all_ok,
    assert_refused_on_every_node,
    kill_last_node_when,
    needs_private_mounts,
    needs_torchrun,
    run_nodes,
    start_nodes,
)
from .test_dump import assert_same_cache

pytestmark = [pytest.mark.slow, needs_torchrun]

# A node that dies takes its gloo connections with it: the survivor's next collective fails at
# once (a training step; a dump's end of a round of shards), and its agent exits. Measured here:
# about 1 s from the SIGKILL to the survivor's exit; the 300 s process-group timeout is what a
# hang would cost.
FAIL_FAST_S = 30.0
TEACHER_EPOCHS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny recipe (2 ranks x batch 8), its teacher trained in this process, and the
    reference cache one process dumps from it (2 views, float32, raw image store)."""
    tmp = tmp_path_factory.mktemp("nodes")
    cfg_path = tiny_config(
        tmp,
        batch_size="8",
        max_epoch_t=str(TEACHER_EPOCHS),
        max_epoch_s="1",
        log_every="1",
        dataset_para="dict(train_size=128, test_size=32)",
        cache="dict(views=2, dtype='float32', images='raw', shard_size=32)",
    )
    cfg = load_config(cfg_path)
    with torch_threads(1):
        teacher.run(load_config(cfg_path, {"max_epoch_t": 1}), tmp / "teacher", progress=False)
        teacher_pt = tmp / "teacher" / "teacher.pt"
        dump.run(cfg, teacher_pt, tmp / "cache", progress=False)
    return SimpleNamespace(tmp=tmp, cfg_path=cfg_path, teacher_pt=teacher_pt, cache=tmp / "cache")


def normalised(line: str) -> str:
    """``line`` with its host name and paths masked: what docs/cluster.md quotes of it."""
    return re.sub(r"/[^\s:;()]+", "PATH", re.sub(r"\(host [^)]+\)", "(host H)", line))


def assert_quoted_in_docs(line: str) -> None:
    """docs/cluster.md quotes the refusal as it is printed (host and paths aside)."""
    quoted = [normalised(q) for q in (REPO / "docs" / "cluster.md").read_text(encoding="utf-8").splitlines()]
    assert normalised(line) in quoted, f"docs/cluster.md should quote this line (host and paths aside): {line}"


def steps(out: Path):
    return MetricsLog(out / "steps.jsonl").read()


def assert_first_step(out: Path, trainer, names) -> None:
    """Rank 0's first logged step is the one this process computes for it (world size 2)."""
    terms = first_step_terms(trainer, world_size=2)
    assert sorted(terms) == sorted(names)
    first = steps(out)[0]
    for name, value in terms.items():
        assert first[name] == pytest.approx(value, rel=SAME_ARITHMETIC_RTOL), (name, first[name], value)


@pytest.fixture(scope="module")
def trained_on_two_nodes(setup):
    """teacher-train on 2 nodes, node 1's --out on storage of its own: rank 0 alone writes."""
    out = setup.tmp / "teacher-2n"
    out.mkdir()
    args = ["teacher-train", "-c", setup.cfg_path, "-o", out, "--no-progress"]
    assert_all_ok(run_nodes(args, [Node(), Node(private=[out])]))
    return out


@needs_private_mounts
def test_teacher_train_and_evaluate(setup, trained_on_two_nodes, tmp_path):
    out = trained_on_two_nodes
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "steps.jsonl", "teacher.pt"]
    assert [r["epoch"] for r in MetricsLog(out / "metrics.jsonl").read()] == list(range(1, TEACHER_EPOCHS + 1))
    with torch_threads(1):
        trainer = Trainer(load_config(setup.cfg_path), "t", tmp_path / "first-step", progress=False)
        assert_first_step(out, trainer, ["bce"])

    # evaluate on 2 nodes: the logits gathered over nodes score as one process scores them
    done = run_nodes(["evaluate", out / "teacher.pt", "--json"])
    assert_all_ok(done)
    import json

    scored = json.loads(done[0].stdout)
    assert done[1].stdout == ""  # rank 0 alone reports
    assert scored["samples"] == 32
    with torch_threads(1):
        here = evaluate_run(out / "teacher.pt", keep_logits=True)
    assert_map_of_recomputed(scored["metrics"]["mAP"], here["logits"], here["labels"])


@needs_private_mounts
def test_node_killed_mid_training_then_resume_with_the_checkpoint_on_rank_0_only(setup, trained_on_two_nodes, tmp_path):
    """Node 1 dies after epoch 1: node 0 exits within seconds, no teacher.pt. --resume where
    rank 0 sees no checkpoint is refused on both nodes; --resume on 2 nodes, node 1 seeing no
    checkpoint (rank 0 sends it), ends with the weights of the uninterrupted 2-node run, bit for
    bit."""
    out = tmp_path / "run"
    out.mkdir()
    args = ["teacher-train", "-c", setup.cfg_path, "-o", out, "--no-progress"]
    nodes = [Node(), Node(private=[out])]
    procs = start_nodes(args, nodes)
    survivor, elapsed = kill_last_node_when(procs, lambda: wait_for_checkpoint(out, procs[0], epochs_done=1))
    assert survivor.returncode != 0 and elapsed < FAIL_FAST_S, (elapsed, survivor.stderr[-2000:])
    assert not (out / "teacher.pt").exists()
    done = load_checkpoint(out / "checkpoint.pt", require=("epoch",))["epoch"]
    assert 1 <= done < TEACHER_EPOCHS

    # rank 0's node sees no checkpoint (node 1 does): refused on both nodes, naming rank 0
    refused = run_nodes([*args, "--resume"], [Node(private=[out]), Node()])
    assert_refused_on_every_node(refused, r"^error: rank 0 on node 0 \(host .+\): --resume: no .*checkpoint.pt to resume from")
    resumed = run_nodes([*args, "--resume"], nodes)
    assert_all_ok(resumed)
    assert f"resumed {out / 'checkpoint.pt'} after epoch {done}" in resumed[0].stderr
    assert [r["epoch"] for r in MetricsLog(out / "metrics.jsonl").read()] == list(range(1, TEACHER_EPOCHS + 1))
    got, want = load_checkpoint(out / "teacher.pt")["model"], load_checkpoint(trained_on_two_nodes / "teacher.pt")["model"]
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def dump_args(setup, out: Path, *extra: object):
    return ["dump-targets", "-c", setup.cfg_path, "--teacher", setup.teacher_pt, "-o", out, "--no-progress", *extra]


def test_dump_on_two_nodes_equals_one_process(setup, tmp_path):
    out = tmp_path / "cache"
    done = run_nodes(dump_args(setup, out))
    assert_all_ok(done)
    assert "4 shard(s) written" in done[0].stdout and done[1].stdout == ""
    assert_same_cache(out, setup.cache)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in setup.cache.iterdir())  # no probe, no .tmp


@needs_private_mounts
def test_dump_to_storage_one_node_cannot_see_is_refused_on_every_node(setup, tmp_path):
    """Node 1's --out is a disk of its own: both nodes stop before the teacher runs, with one
    line naming rank 1, and node 0's folder holds nothing (no manifest, no shard)."""
    out = tmp_path / "cache"
    out.mkdir()
    done = run_nodes(dump_args(setup, out), [Node(), Node(private=[out])])
    line = assert_refused_on_every_node(
        done, r"^error: rank 1 on node 1 \(host .+\): --out .* is not the folder rank 0 writes.* storage every node shares"
    )
    assert_quoted_in_docs(line)
    assert list(out.iterdir()) == []


@needs_private_mounts
def test_distill_offline_from_node_local_copies(setup, tmp_path):
    """Each node reads its own copy of the cache at the same path (node 1: a copy on its own
    disk, image store and stored eval split included): the run is the 2-rank run. A node
    whose copy is another cache is refused on every node, before any step."""
    staging = tmp_path / "staging"
    shutil.copytree(setup.cache, staging)
    copy_in = f"cp -a {shlex.quote(str(staging))}/. {shlex.quote(str(setup.cache))}/"
    out = tmp_path / "student"
    args = ["distill-student", "-c", setup.cfg_path, "--cache", setup.cache, "-o", out, "--no-progress"]
    assert_all_ok(run_nodes(args, [Node(), Node(private=[setup.cache], setup=copy_in)]))
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "steps.jsonl", "student.pt"]
    with torch_threads(1):
        trainer = DistillTrainer(load_config(setup.cfg_path), tmp_path / "first-step", cache=setup.cache, progress=False)
        assert_first_step(out, trainer, ["bce", "led_cd", "led_id", "mld"])

    # a damaged copy (one byte flipped in a data block): the same manifest, and node 1 checks its files
    shard = staging / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    damaged = tmp_path / "student-damaged"
    args = ["distill-student", "-c", setup.cfg_path, "--cache", setup.cache, "-o", damaged, "--no-progress"]
    done = run_nodes(args, [Node(), Node(private=[setup.cache], setup=copy_in)])
    assert_refused_on_every_node(done, r"^error: rank 1 on node 1 \(host .+\): .*shard-00001.h5.*sha256")
    assert not damaged.exists()

    # a stale copy: the same teacher and data, dumped with one view
    shutil.rmtree(staging)
    with torch_threads(1):
        dump.run(load_config(setup.cfg_path), setup.teacher_pt, staging, views=1, progress=False)
    other = tmp_path / "student-other"
    args = ["distill-student", "-c", setup.cfg_path, "--cache", setup.cache, "-o", other, "--no-progress"]
    done = run_nodes(args, [Node(), Node(private=[setup.cache], setup=copy_in)])
    line = assert_refused_on_every_node(
        done, r"^error: rank 1 on node 1 \(host .+\): its copy of the cache in .* differs from rank 0's; .*mlkd-cache inspect"
    )
    assert_quoted_in_docs(line)
    assert not other.exists()


@pytest.mark.parametrize("mode", ["online", "no-kd"])
def test_distill_online_and_no_kd(setup, tmp_path, mode):
    out = tmp_path / mode
    source = ["--teacher", setup.teacher_pt] if mode == "online" else ["--no-kd"]
    assert_all_ok(run_nodes(["distill-student", "-c", setup.cfg_path, *source, "-o", out, "--no-progress"]))
    cfg = load_config(setup.cfg_path)
    with torch_threads(1):
        if mode == "online":
            trainer = DistillTrainer(cfg, tmp_path / "first-step", teacher=setup.teacher_pt, progress=False)
            names = ["bce", "led_cd", "led_id", "mld"]
        else:
            trainer, names = NoKDTrainer(cfg, tmp_path / "first-step", progress=False), ["bce"]
        assert_first_step(out, trainer, names)


def test_node_killed_mid_dump_leaves_no_manifest_then_rerun_completes(setup, tmp_path):
    """Node 1 dies once the first shard is on disk: node 0 stops at the end of its round of
    shards, no manifest is left, and a re-run keeps the complete shards."""
    cfg_path = tiny_config(tmp_path, dataset_para="dict(train_size=384, test_size=16)", batch_size="8")
    out = tmp_path / "cache"
    args = ["dump-targets", "-c", cfg_path, "--teacher", setup.teacher_pt, "-o", out, "--views", "4"]
    args += ["--set", "cache.shard_size=16", "--no-progress"]  # 24 shards, 12 rounds of 2
    procs = start_nodes(args)

    def first_shard() -> None:
        deadline = time.time() + 240
        while not list(out.glob(part_glob())) and procs[0].poll() is None and time.time() < deadline:
            time.sleep(0.02)

    survivor, elapsed = kill_last_node_when(procs, first_shard)
    assert survivor.returncode != 0 and elapsed < FAIL_FAST_S, (elapsed, survivor.stderr[-2000:])
    assert not (out / MANIFEST_NAME).exists()  # the cache does not look complete
    complete = len(list(out.glob(part_glob())))
    assert 1 <= complete < 24

    rerun = run_cli_in_process([str(a) for a in args])
    assert rerun.returncode == 0, rerun.stderr
    assert f"{24 - complete} shard(s) written, {complete} already complete" in rerun.stdout
