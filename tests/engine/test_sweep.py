"""``sweep``: the search space, the trial bookkeeping (dead workers, retries, the budget) and, as
real processes, a sweep of two workers killed with SIGKILL and resumed, then its best trial
trained again by ``distill-student -c OUT/best.py`` to the last digit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from mlkd_cache.commands import dump_targets as dump  # noqa: E402
from mlkd_cache.commands import teacher_train as teacher  # noqa: E402
from mlkd_cache.config import load_config  # noqa: E402
from mlkd_cache.errors import ConfigError  # noqa: E402
from mlkd_cache.runtime.search_space import (  # noqa: E402
    DEFAULT_SPAN,
    SearchParam,
    apply_params,
    build_space,
    default_space,
    parse_space_item,
    tunable_keys,
)
from mlkd_cache.runtime.sweep import DIED, DIVERGED, ERROR, count_trials, reap_dead_trials  # noqa: E402

from ..conftest import tiny_config, torch_threads  # noqa: E402

LED = "criterion_t2s_para.para.le_dis.para"
MPSCD = "dict(name='MPSCD', para=dict(lambda_le=1.0, le_dis=dict(name='MPSCD', para=dict(lambda_pcrd=2.0, lambda_pcsd=0.5))))"


# ---------------------------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------------------------


def test_the_default_space_is_each_active_weight_and_lr_around_the_config(tmp_path):
    """L2D: LED through its own two weights (not lambda_le), MLD through lambda_logits, and lr_s,
    each log-uniform over [value / 10, value x 10]; --no-kd: lr_s alone."""
    cfg = load_config(tiny_config(tmp_path))
    space = default_space(cfg)
    assert list(space) == ["lr_s", f"{LED}.lambda_cd", f"{LED}.lambda_id", "criterion_t2s_para.para.lambda_logits"]
    assert space["lr_s"] == SearchParam("lr_s", "log", 3e-3 / DEFAULT_SPAN, 3e-3 * DEFAULT_SPAN)
    assert (space[f"{LED}.lambda_cd"].low, space[f"{LED}.lambda_cd"].high) == (10.0, 1000.0)
    assert (space[f"{LED}.lambda_id"].low, space[f"{LED}.lambda_id"].high) == (100.0, 10000.0)
    assert list(default_space(cfg, no_kd=True)) == ["lr_s"]
    mpscd = load_config(tiny_config(tmp_path, criterion_t2s_para=MPSCD))
    assert list(default_space(mpscd)) == [
        "lr_s",
        "criterion_t2s_para.para.le_dis.para.lambda_pcrd",
        "criterion_t2s_para.para.le_dis.para.lambda_pcsd",
    ]


def test_a_trial_config_carries_its_values_and_nothing_else(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    trial = apply_params(cfg, {"lr_s": 1e-3, f"{LED}.lambda_cd": 7.5, "batch_size": 8})
    assert (trial.lr_s, trial.batch_size) == (1e-3, 8)
    assert trial.criterion_t2s_para["para"]["le_dis"]["para"] == {"lambda_cd": 7.5, "lambda_id": 1000.0}
    untouched = {k: v for k, v in trial.to_dict().items() if k not in ("lr_s", "batch_size", "criterion_t2s_para")}
    assert untouched == {k: v for k, v in cfg.to_dict().items() if k not in ("lr_s", "batch_size", "criterion_t2s_para")}


def test_the_config_space_and_space_items_replace_the_default(tmp_path):
    cfg = load_config(tiny_config(tmp_path, search_space="{'lr_s': 'log:1e-4:1e-2', 'batch_size': 'choice:8,16'}"))
    space = build_space(cfg, [parse_space_item("max_epoch_s=int:2:4"), parse_space_item("lr_s=float:0.001:0.002")])
    assert list(space) == ["lr_s", "batch_size", "max_epoch_s"]
    assert space["lr_s"] == SearchParam("lr_s", "float", 0.001, 0.002)
    assert space["batch_size"].choices == (8, 16) and space["max_epoch_s"].integer
    assert set(tunable_keys(cfg)) >= {"lr_s", "weight_decay", f"{LED}.lambda_cd", "criterion_t2s_para.para.lambda_le"}


@pytest.mark.parametrize(
    "item, message",
    [
        (
            "lr=log:1e-4:1e-2",
            r"search space key 'lr' is not tunable in this config \(did you mean 'lr_s'\?\); valid keys: lr_s, weight_decay",
        ),
        ("lr_s=log:0:1", r"log needs 0 < LO < HI; use float:0:1"),
        ("lr_s=log:1e-2:1e-4", r"log needs two numbers LO < HI"),
        ("lr_s=uniform:1:2", r"unknown kind 'uniform'; write log:LO:HI, float:LO:HI, int:LO:HI or choice:A,B"),
        ("lr_s=int:1:3", r"lr_s holds a float; use float:LO:HI or log:LO:HI"),
        ("batch_size=int:1.5:3", r"batch_size holds an int; give whole-number bounds"),
        ("criterion_t2s_para.para.ft_dis.para.t=log:1:2", r"not tunable in this config"),  # the feature slot is off
    ],
)
def test_a_bad_space_entry_is_one_line_naming_the_fix(tmp_path, item, message):
    cfg = load_config(tiny_config(tmp_path))
    with pytest.raises(ConfigError, match=message):
        build_space(cfg, [parse_space_item(item)])


def test_no_kd_refuses_a_distillation_weight(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    with pytest.raises(ConfigError, match=r"weights a distillation loss, which --no-kd does not train; drop it"):
        build_space(cfg, [parse_space_item("criterion_t2s_para.para.lambda_logits=log:1:10")], no_kd=True)


# ---------------------------------------------------------------------------------------------
# Trial bookkeeping, on an in-memory study
# ---------------------------------------------------------------------------------------------


def _study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def _running(study, pid: int, host: str, beat: float):
    trial = study.ask()
    trial.suggest_float("lr_s", 1e-4, 1e-2, log=True)
    trial.set_user_attr("worker", {"host": host, "pid": pid, "threads": 1, "device": "cpu"})
    trial.set_user_attr("heartbeat", beat)
    return trial


def _dead_pid() -> int:
    """A pid no process has: one past the kernel's largest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_a_dead_worker_s_trial_fails_and_is_retried_once_with_its_values():
    """A trial of a process of this host that ended fails as died and is enqueued once with the
    same values; its retry counts in its place; a retry that dies too is not retried again."""
    import socket

    from optuna.trial import TrialState

    study = _study()
    now = time.time()
    alive = _running(study, os.getpid(), socket.gethostname(), now)
    dead = _running(study, _dead_pid(), socket.gethostname(), now)
    assert count_trials(study) == (2, 0)
    assert reap_dead_trials(study, now) == [dead.number]
    frozen = {t.number: t for t in study.get_trials()}
    assert frozen[dead.number].state == TrialState.FAIL and frozen[dead.number].user_attrs["failure"].startswith(DIED)
    assert frozen[alive.number].state == TrialState.RUNNING
    assert count_trials(study) == (1, 1)  # the died one is replaced by its waiting retry
    retry = study.ask()
    assert retry.suggest_float("lr_s", 1e-4, 1e-2, log=True) == dead.params["lr_s"]  # the enqueued value
    assert retry.user_attrs["retry_of"] == dead.number
    retry.set_user_attr("worker", {"host": socket.gethostname(), "pid": _dead_pid()})
    assert reap_dead_trials(study, now) == [retry.number]
    assert count_trials(study) == (2, 0)  # no second retry: the died retry counts as finished
    assert len({t.number for t in study.get_trials()}) == len(study.get_trials())


def test_another_host_s_trial_is_dead_only_when_its_heartbeat_is_stale():
    from mlkd_cache.runtime.sweep import STALE_AFTER_S

    study = _study()
    now = time.time()
    fresh = _running(study, 1, "elsewhere", now - STALE_AFTER_S / 2)
    stale = _running(study, 1, "elsewhere", now - 2 * STALE_AFTER_S)
    assert reap_dead_trials(study, now) == [stale.number]
    assert fresh.number not in reap_dead_trials(study, now)


def test_the_budget_counts_finished_diverged_and_running_trials_not_errors():
    from optuna.trial import TrialState

    study = _study()
    for state, failure in (
        (TrialState.COMPLETE, None),
        (TrialState.PRUNED, None),
        (TrialState.FAIL, DIVERGED),
        (TrialState.FAIL, ERROR),
    ):
        trial = study.ask()
        trial.suggest_float("lr_s", 1e-4, 1e-2, log=True)
        if failure:
            trial.set_user_attr("failure", f"{failure}: why")
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # running
    assert count_trials(study) == (4, 0)


# ---------------------------------------------------------------------------------------------
# Real processes: two workers, SIGKILL, resume, best.py
# ---------------------------------------------------------------------------------------------


def _cli(*args: str) -> list:
    return [sys.executable, "-m", "mlkd_cache", *args]


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_trials_asked_and_best_py_trains_its_student_again(tmp_path):
    cfg = tiny_config(tmp_path, max_epoch_t="1", max_epoch_s="4", eval_every="2", cache="dict(views=2)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with torch_threads(1):  # the teacher and its cache in this process: the processes under test are the sweep's
        teacher.run(load_config(cfg), tmp_path / "t", progress=False)
        dump.run(load_config(cfg), tmp_path / "t" / "teacher.pt", tmp_path / "cache", progress=False)
    out = tmp_path / "sweep"
    sweep = _cli(
        "sweep", "-c", str(cfg), "--cache", str(tmp_path / "cache"), "-o", str(out), "--trials", "5", "--jobs", "2", "--no-plots"
    )

    first = subprocess.Popen(sweep, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    storage = f"sqlite:///{out / 'sweep.db'}"
    deadline = time.time() + 240
    killed_running: list = []
    while time.time() < deadline and first.poll() is None:  # kill once a trial is done and two are running
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="tiny_digits-offline", storage=storage)
            states = [t.state.name for t in study.get_trials()]
        except Exception:  # the study is being created
            continue
        if states.count("COMPLETE") >= 1 and states.count("RUNNING") == 2:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            killed_running = [t.number for t in study.get_trials() if t.state.name == "RUNNING"]
            break
    assert len(killed_running) == 2, f"the sweep never had a trial done and two running: {first.communicate()}"

    second = subprocess.run(sweep, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    result = json.loads((out / "sweep.json").read_text())
    trials = {r["number"]: r for r in result["trials"]}
    counted = [r for r in trials.values() if r["state"] in ("complete", "pruned")]
    assert len(counted) == 5, second.stdout
    for number in killed_running:  # each killed trial failed as died, and ran again once, same values
        assert trials[number]["state"] == "fail" and trials[number]["failure"].startswith(DIED)
        retries = [r for r in trials.values() if r["retry_of"] == number]
        assert len(retries) == 1 and retries[0]["params"] == trials[number]["params"]
        assert retries[0]["state"] in ("complete", "pruned")
    assert len(trials) == 5 + len(killed_running)
    folders = {p.name for p in (out / "trials").iterdir()}  # one per trial number; a trial killed early may have none
    assert {f"{r['number']:04d}" for r in counted} <= folders <= {f"{n:04d}" for n in trials}
    assert "rank  trial  state" in second.stdout and f"best: trial {result['best']['number']}" in second.stdout

    best = result["best"]
    env_best = {**os.environ, "OMP_NUM_THREADS": str(best["threads"])}
    again = subprocess.run(
        _cli(
            "distill-student",
            "-c",
            best["config"],
            "--cache",
            str(tmp_path / "cache"),
            "-o",
            str(tmp_path / "best"),
            "--no-progress",
        ),
        env=env_best,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["mAP"] == best["value"]  # the same weights: the same val mAP, to the last digit
    assert load_config(best["config"]).eval_split == "val"  # trials were scored on val, never on test


# ---------------------------------------------------------------------------------------------
# Refused before any trial, and leaving nothing behind
# ---------------------------------------------------------------------------------------------


def _plan(tmp_path, study_name: str = "s", **changes):
    from mlkd_cache.runtime.regimes import Regime
    from mlkd_cache.runtime.sweep import SweepPlan, storage_url

    cfg = load_config(tiny_config(tmp_path)).replace(eval_split="val")
    out = tmp_path / "sweep"
    values = dict(
        cfg=cfg,
        regime=Regime.of(no_kd=True),
        space=build_space(cfg, no_kd=True),
        metric="mAP",
        trials=3,
        pruner="median",
        out=out,
        storage=storage_url(out, None),
        study_name=study_name,
    )
    return SweepPlan(**{**values, **changes})


def test_an_out_folder_holds_one_study(tmp_path):
    from mlkd_cache.commands.sweep import _claim_out

    plan = _plan(tmp_path)
    _claim_out(plan)
    (plan.out / "journal.log").write_text("")  # a storage's own file, a best/ run: the folder stays this study's
    _claim_out(plan)
    with pytest.raises(ConfigError, match=r"holds the sweep of study 's', not 'other'; give another -o"):
        _claim_out(_plan(tmp_path, "other"))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds 'notes.txt' and no sweep; give a new or empty folder"):
        _claim_out(_plan(tmp_path, out=stranger))


def test_a_sweep_whose_trials_all_stopped_on_an_error_leaves_no_study(tmp_path):
    from optuna.trial import TrialState

    from mlkd_cache.commands.sweep import _claim_out
    from mlkd_cache.runtime.sweep import STUDY_MARKER, forget_if_empty, open_study

    plan = _plan(tmp_path)
    _claim_out(plan)
    study = open_study(plan)
    trial = study.ask()
    trial.set_user_attr("failure", f"{ERROR}: the data root is missing")
    study.tell(trial, state=TrialState.FAIL)
    assert forget_if_empty(plan)
    assert not (plan.out / STUDY_MARKER).exists()
    assert optuna.study.get_all_study_names(plan.storage) == []
    study = open_study(plan)  # a study with a finished trial is kept
    trial = study.ask()
    study.tell(trial, state=TrialState.PRUNED)
    assert not forget_if_empty(plan)


def test_a_study_refuses_another_sweep_naming_what_differs(tmp_path):
    from mlkd_cache.runtime.sweep import open_study

    (tmp_path / "sweep").mkdir()
    open_study(_plan(tmp_path))
    other = _plan(
        tmp_path, space=build_space(load_config(tiny_config(tmp_path)), [parse_space_item("lr_s=log:1e-3:1e-2")], no_kd=True)
    )
    with pytest.raises(ConfigError, match=r"study 's' in sqlite:///.* tunes another sweep \(its space differs: "):
        open_study(other)
    with pytest.raises(ConfigError, match=r"its sources differ"):
        open_study(_plan(tmp_path, sources=("0" * 64,)))


def test_a_value_the_config_refuses_is_refused_before_any_trial(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    with pytest.raises(
        ConfigError, match=r"pct_start=float:0.1:1.5: the value 1.5 is refused \(config key 'pct_start' must be in \(0, 1\)"
    ):
        build_space(cfg, [parse_space_item("pct_start=float:0.1:1.5")])
    with pytest.raises(ConfigError, match=r"the value 16.5 is refused"):
        build_space(cfg, [parse_space_item("batch_size=choice:16.5,32")])


def test_without_optuna_the_sweep_says_so_in_one_line(tmp_path, monkeypatch):
    from mlkd_cache.commands import sweep as sweep_command
    from mlkd_cache.errors import MissingDependencyError
    from mlkd_cache.runtime.regimes import Regime

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    cfg = load_config(tiny_config(tmp_path))
    with pytest.raises(MissingDependencyError, match=r"mlkd-cache sweep needs optuna.*pip install 'mlkd-cache\[sweep\]'"):
        sweep_command.run(cfg, tmp_path / "sweep", Regime.of(no_kd=True))
    assert not (tmp_path / "sweep").exists()
