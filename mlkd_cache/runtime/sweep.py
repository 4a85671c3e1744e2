"""Sweeps: students tuned from one cache, each trial a ``distill-student`` run scored on val.

A :class:`SweepPlan` is a config, a :class:`~mlkd_cache.runtime.regimes.Regime` (the cache,
``--no-kd`` or a live teacher), a search space (:mod:`.search_space`), the val metric to
maximise and the number of trials. Its trials live in an optuna study, in a storage several
processes or machines may share (SQLite on one machine; a journal file on a shared filesystem or
an RDB on a cluster); :func:`run_workers` runs ``jobs`` local workers on it.

Each worker loops: under a lock on ``OUT/sweep.lock`` it fails the trials whose worker died
(:func:`reap_dead_trials`: a process of this host that is gone, or a heartbeat older than
:data:`STALE_AFTER_S`) and enqueues each once more, counts the trials (:func:`count_trials`) and
asks for the next; then it trains the trial's student in ``OUT/trials/NNNN`` with the config's
budget, reports val after every scoring to the pruner and tells the study the final value. A
trial is pruned (the pruner), complete, or failed: its loss diverged (counted, not retried), its
process died (retried once; the retry counts in its place), or an error stopped it (the error
ends the sweep in one line and the trial is not counted).

Training never depends on the sweep: the pruner reads the scores, and a trial's student is the
one ``distill-student -c OUT/best.py`` trains (:func:`write_best_config`), to the last digit on
the machine and thread count the worker had (recorded per trial).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .._version import __version__
from ..config import Config
from ..errors import ConfigError, MlkdError, TrainingDiverged, one_line, reason_of, require_module
from ..metrics import METRIC_KEYS
from ..thresholds import TUNING_SPLIT
from .regimes import Regime, train_student
from .search_space import SearchParam, apply_params

log = logging.getLogger("mlkd_cache")

__all__ = [
    "PRUNERS",
    "DB_NAME",
    "SweepPlan",
    "storage_url",
    "open_study",
    "run_workers",
    "count_trials",
    "reap_dead_trials",
    "ranked_trials",
    "write_best_config",
    "importances",
    "save_plots",
    "short_names",
    "forget_if_empty",
    "fail_died",
]

PRUNERS = ("median", "none")  # median: optuna's MedianPruner over the trials' val scores; none: every trial runs out
DB_NAME = "sweep.db"  # OUT/sweep.db: the default storage (SQLite)
TRIALS_DIR = "trials"  # OUT/trials/NNNN: each trial's run folder
BEST_CONFIG = "best.py"
SUMMARY = "sweep.json"  # OUT/sweep.json: the ranked trials and the best (summary())
STUDY_MARKER = "study.json"  # OUT/study.json: the study whose sweep this folder is
LOCK_NAME = "sweep.lock"
IDENTITY_ATTR = "mlkd_cache_sweep"  # the study's user attribute recording what it tunes
HEARTBEAT_S = 30.0  # a running trial writes its time this often
STALE_AFTER_S = 600.0  # a trial of another host whose heartbeat is older than this is taken as dead
WARMUP_SHARE = 4  # the pruner never stops a trial in its first 1/WARMUP_SHARE of the planned epochs
PLOTS = ("history", "importances", "slices")  # the PNG files a sweep writes in OUT
# A failed trial's user attribute "failure" starts with its kind: diverged (counted), died
# (retried once), error (not counted).
DIVERGED, DIED, ERROR = "diverged", "died", "error"


@dataclass(frozen=True)
class SweepPlan:
    """What one sweep tunes. ``cfg``: the base config (its ``eval_split`` is what trials are
    scored on: val); ``space``: key -> :class:`SearchParam`; ``metric``: a key of
    :data:`~mlkd_cache.metrics.METRIC_KEYS`, maximised; ``trials``: how many to finish."""

    cfg: Config
    regime: Regime
    space: Mapping[str, SearchParam]
    metric: str
    trials: int
    pruner: str
    out: Path
    storage: str
    study_name: str
    sources: Tuple[str, ...] = ()  # what the trials learn from, by content: each cache's manifest sha256, the teacher's sha256

    def __post_init__(self) -> None:
        if self.metric not in METRIC_KEYS:
            from ..registry import did_you_mean

            raise ConfigError(
                f"--metric {self.metric!r} is not a metric{did_you_mean(self.metric, METRIC_KEYS)}; choose among {', '.join(METRIC_KEYS)}"
            )
        if self.cfg.eval_split != TUNING_SPLIT:
            raise ConfigError(f"a sweep scores its trials on {TUNING_SPLIT}; the config's eval_split is {self.cfg.eval_split!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner {self.pruner!r}: choose among {', '.join(PRUNERS)}")

    def identity(self) -> Dict[str, Any]:
        """What makes two sweeps one study: the config (less where its data and workers are),
        the regime's mode and views, the space and the metric."""
        values = {k: v for k, v in self.cfg.to_dict().items() if k not in ("data_root", "workers", "search_space")}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
        regime = self.regime.record()
        return {
            "config": digest,
            "regime": {k: regime[k] for k in ("mode", "fresh_views", "views")},
            "sources": list(self.sources),
            "space": {k: p.spec() for k, p in self.space.items()},
            "metric": self.metric,
        }

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        return apply_params(self.cfg, params)

    def trial_dir(self, number: int) -> Path:
        return self.out / TRIALS_DIR / f"{number:04d}"

    @property
    def stop_epoch(self) -> int:
        """The epoch a trial ends after (the config's budget)."""
        return self.cfg.epochs("s")[1]


def storage_url(out: Path, storage: Optional[str]) -> str:
    """``--storage`` as given, else SQLite in ``OUT/sweep.db``."""
    return storage if storage else f"sqlite:///{(Path(out) / DB_NAME).resolve()}"


def _storage(url: str) -> Any:
    """The optuna storage of ``url``: ``journal:PATH`` (a journal file, e.g. on NFS), an RDB URL
    (``sqlite:///``, ``postgresql://``, ``mysql://``); SQLite waits for its lock up to a minute."""
    optuna = require_module("optuna", "mlkd-cache sweep")
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except (ImportError, ValueError) as exc:  # an unknown dialect, a missing driver
        raise ConfigError(f"--storage {url}: {reason_of(exc)}; give sqlite:///PATH, journal:PATH or an RDB URL") from None
    except Exception as exc:  # sqlalchemy's OperationalError: a server not reached, a file not writable
        raise ConfigError(
            f"--storage {url} cannot be opened ({reason_of(exc)}); check the URL and that it is reachable"
        ) from None


def _sampler(plan: SweepPlan, worker: int, done: int) -> Any:
    """TPE, seeded from the config's seed, the worker's index and the trials the study holds:
    workers and resumed sweeps do not propose the same values."""
    import numpy as np
    import optuna

    seed = int(np.random.SeedSequence([plan.cfg.seed, worker, done]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(plan: SweepPlan) -> Any:
    import optuna

    if plan.pruner == "none":
        return optuna.pruners.NopPruner()
    planned, _ = plan.cfg.epochs("s")
    return optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=planned // WARMUP_SHARE + 1
    )  # steps < this: never pruned


def open_study(plan: SweepPlan, worker: int = 0) -> Any:
    """The plan's study in its storage, created on first use; :class:`ConfigError` when the
    storage holds a study of that name that tunes something else (:meth:`SweepPlan.identity`)."""
    optuna = require_module("optuna", "mlkd-cache sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(plan.storage)
    study = optuna.create_study(
        storage=storage, study_name=plan.study_name, direction="maximize", pruner=_pruner(plan), load_if_exists=True
    )
    identity = plan.identity()
    recorded = study.user_attrs.get(IDENTITY_ATTR)
    if recorded is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
    elif recorded != identity:
        part = next(k for k in identity if recorded.get(k) != identity[k])
        raise ConfigError(
            f"study {plan.study_name!r} in {plan.storage} tunes another sweep (its {part} differs: "
            f"{json.dumps(recorded.get(part))} vs {json.dumps(identity[part])}); give another -o, --storage or --study-name"
        )
    study.sampler = _sampler(plan, worker, len(study.get_trials(deepcopy=False)))
    return study


# --------------------------------------------------------------------------------------------
# Trial bookkeeping
# --------------------------------------------------------------------------------------------


def _failure_kind(trial: Any) -> str:
    return str(trial.user_attrs.get("failure", "")).split(":", 1)[0]


def count_trials(study: Any) -> Tuple[int, int]:
    """``(counted, waiting)``: trials that count towards the budget (complete, pruned, running,
    diverged, and died without a retry in their place) and trials enqueued to run (retries)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    replaced = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    counted = waiting = 0
    for t in trials:
        if t.state == TrialState.WAITING:
            waiting += 1
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            counted += 1
        elif t.state == TrialState.FAIL:
            kind = _failure_kind(t)
            counted += kind == DIVERGED or (kind == DIED and t.number not in replaced)
    return counted, waiting


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` of this host has ended (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def reap_dead_trials(study: Any, now: Optional[float] = None) -> List[int]:
    """Fail every running trial whose worker is gone (a process of this host that ended, or a
    heartbeat older than :data:`STALE_AFTER_S`, on any host) and enqueue its values once more,
    unless it was itself a retry (:func:`fail_died`). Returns the numbers failed."""
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        beat = float(t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else now))
        mine = worker.get("host") == host and worker.get("pid") is not None
        if not ((mine and _process_gone(int(worker["pid"]))) or now - beat > STALE_AFTER_S):
            continue
        if fail_died(study, t, f"its worker {worker.get('host')}:{worker.get('pid')} ended"):
            failed.append(t.number)
    return failed


def fail_died(study: Any, trial: Any, why: str) -> bool:
    """Fail the running ``trial`` (a FrozenTrial) as died and enqueue its values once more, unless
    it was itself a retry; False when another worker had already finished it."""
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial._trial_id, "failure", f"{DIED}: {why}")
        study.tell(trial.number, state=TrialState.FAIL)
    except Exception:  # another worker failed it first
        return False
    if "retry_of" not in trial.user_attrs:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    return True


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock on ``OUT/sweep.lock``: one local worker at a time counts and asks."""
    with open(out / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Heartbeat:
    """A thread writing the time into the trial's ``heartbeat`` attribute every :data:`HEARTBEAT_S`
    and, every second, ending a worker whose sweep (``parent``, a pid) was killed: its trial is
    left running, to be found dead and retried."""

    def __init__(self, trial: Any, parent: Optional[int] = None) -> None:
        self.trial, self.parent, self.stopped = trial, parent, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        last = time.monotonic()
        while not self.stopped.wait(1.0):
            if self.parent is not None and os.getppid() != self.parent:
                os._exit(3)
            if time.monotonic() - last >= HEARTBEAT_S:
                last = time.monotonic()
                with contextlib.suppress(Exception):  # a storage hiccup must not end the trial
                    self.trial.set_user_attr("heartbeat", time.time())

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def _worker_record(threads: int) -> Dict[str, Any]:
    import torch

    device = (
        f"cuda (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'all')})" if torch.cuda.is_available() else "cpu"
    )
    return {"host": socket.gethostname(), "pid": os.getpid(), "threads": threads, "device": device}


def run_trial(plan: SweepPlan, study: Any, trial: Any, parent: Optional[int]) -> None:
    """Train the student of ``trial`` and tell the study how it ended. ``parent``: the pid of the
    sweep that started this worker (a worker whose sweep was killed ends within a second, its
    trial left running, to be found dead and retried)."""
    import optuna
    import torch
    from optuna.trial import TrialState

    params = {key: param.suggest(trial) for key, param in plan.space.items()}
    trial.set_user_attr("worker", _worker_record(torch.get_num_threads()))
    trial.set_user_attr("heartbeat", time.time())
    out = plan.trial_dir(trial.number)
    if out.exists():  # a number is never given twice: a folder left by a study forgotten after its errors
        shutil.rmtree(out)

    def on_scored(epochs: int, metrics: Dict[str, Any]) -> None:
        trial.report(float(metrics[plan.metric]), epochs)
        if epochs < plan.stop_epoch and trial.should_prune():  # a trial that ran its budget completes
            raise optuna.TrialPruned()

    beat = _Heartbeat(trial, parent)
    started = time.perf_counter()
    try:
        try:
            result = train_student(
                plan.trial_config(params), out, plan.regime, progress=False, verify_checksums=False, on_scored=on_scored
            )
        except optuna.TrialPruned:
            trial.set_user_attr("wall_s", time.perf_counter() - started)
            study.tell(trial, state=TrialState.PRUNED)
        except TrainingDiverged as exc:
            trial.set_user_attr("wall_s", time.perf_counter() - started)
            trial.set_user_attr("failure", f"{DIVERGED}: {one_line(exc)}")
            study.tell(trial, state=TrialState.FAIL)
        except (KeyboardInterrupt, SystemExit):  # stopped from outside: as if its process had died
            fail_died(study, study._storage.get_trial(trial._trial_id), "interrupted")
            raise
        except BaseException as exc:
            trial.set_user_attr("failure", f"{ERROR}: {one_line(exc) or type(exc).__name__}")
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            trial.set_user_attr("wall_s", time.perf_counter() - started)
            study.tell(trial, float(result["metrics"][plan.metric]))
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker took this one for dead
        log.warning("sweep trial %d was failed as dead by another worker while it ran; its result is dropped", trial.number)
    finally:
        beat.stop()
        (out / "checkpoint.pt").unlink(missing_ok=True)  # a finished trial needs no resume state


def work(plan: SweepPlan, worker: int = 0, parent: Optional[int] = None) -> int:
    """One worker: run trials until the study holds ``plan.trials`` counted ones; returns how
    many this worker ran."""
    study = open_study(plan, worker)
    ran = 0
    while True:
        with _locked(plan.out):
            reap_dead_trials(study)
            counted, waiting = count_trials(study)
            if not waiting and counted >= plan.trials:
                return ran
            trial = study.ask()
        run_trial(plan, study, trial, parent)
        ran += 1


def _worker_main(plan: SweepPlan, worker: int, threads: int, parent: int, errors: Any) -> None:
    """A spawned worker: ``threads`` intra-op threads, then :func:`work`; an error's one line goes
    to ``errors``. SIGTERM (the sweep stopping it) ends it as a death: its trial is retried."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        work(plan, worker, parent)
    except MlkdError as exc:
        errors.put(f"worker {worker}: {one_line(exc)}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_workers(plan: SweepPlan, jobs: int) -> None:
    """Run ``jobs`` workers on the plan's study: in this process for 1; else spawned processes,
    each with an equal share of the cores as threads (at least 1) and, where there are GPUs, the
    GPU of its index modulo their number. The first worker's error ends the sweep (one line)."""
    plan.out.mkdir(parents=True, exist_ok=True)
    open_study(plan)  # creates it, or refuses another sweep's, before any worker starts
    if jobs == 1:
        work(plan)
        return
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    threads = max(1, _cpu_count() // jobs)
    gpus = _visible_gpus()
    processes = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for worker in range(jobs):
            if gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[worker % len(gpus)]
            p = context.Process(target=_worker_main, args=(plan, worker, threads, os.getpid(), errors), daemon=False)
            p.start()
            processes.append(p)
    finally:
        if gpus:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
    stopped = False
    try:
        running = list(processes)
        while running:
            ready = wait([p.sentinel for p in running])
            for p in [p for p in running if p.sentinel in ready]:
                p.join()
                running.remove(p)
                if p.exitcode and not stopped:  # the first worker that fails stops the others; their trials are retried
                    stopped = True
                    for other in running:
                        other.terminate()
    except KeyboardInterrupt:
        for p in processes:
            p.terminate()
        raise
    finally:
        for p in processes:
            p.join()
    if not errors.empty():
        raise MlkdError(errors.get())
    codes = [p.exitcode for p in processes if p.exitcode and p.exitcode != 128 + signal.SIGTERM]
    if codes:
        raise MlkdError(
            f"{len(codes)} of {jobs} sweep workers ended abnormally (exit codes {', '.join(map(str, codes))}); "
            f"run the same command again to go on where they stopped"
        )


def _visible_gpus() -> List[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (its own list when set)."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def forget_if_empty(plan: SweepPlan) -> bool:
    """Delete the plan's study, and OUT's claim on it, when none of its trials finished (complete,
    pruned or diverged): a sweep whose first trials stopped on an error, the others with them.
    The run after the fix starts clean."""
    optuna = require_module("optuna", "mlkd-cache sweep")
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=plan.study_name, storage=_storage(plan.storage))
    except KeyError:  # never created
        return False
    trials = study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or _failure_kind(t) == DIVERGED for t in trials):
        return False
    optuna.delete_study(study_name=plan.study_name, storage=_storage(plan.storage))
    (plan.out / STUDY_MARKER).unlink(missing_ok=True)
    shutil.rmtree(plan.out / TRIALS_DIR, ignore_errors=True)
    return True


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def ranked_trials(study: Any) -> List[Dict[str, Any]]:
    """Every trial as a row, best first: complete by value, then pruned by their last score,
    then failed, then the rest; ``value`` is the final val metric (pruned: the last reported)."""
    from optuna.trial import TrialState

    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        value = t.value if t.state == TrialState.COMPLETE else (t.intermediate_values[steps[-1]] if steps else None)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": value,
                "epochs": steps[-1] if steps else 0,
                "params": dict(t.params),
                "wall_s": t.user_attrs.get("wall_s"),
                "threads": (t.user_attrs.get("worker") or {}).get("threads"),
                "failure": t.user_attrs.get("failure"),
                "retry_of": t.user_attrs.get("retry_of"),
            }
        )
    return sorted(rows, key=lambda r: (order.get(getattr(TrialState, r["state"].upper()), 3), -(r["value"] or 0.0), r["number"]))


def best_trial(study: Any) -> Optional[Any]:
    """The complete trial of the highest value (the lowest number among equals), or None."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def write_best_config(plan: SweepPlan, trial: Any, path: Path) -> Path:
    """``path``: a config file (Python assignments) of every key of the best trial's config, with
    a header saying which trial, what it scored and the command that trains it again."""
    cfg = plan.trial_config(trial.params)
    threads = (trial.user_attrs.get("worker") or {}).get("threads")
    command = " ".join(
        [
            "mlkd-cache distill-student -c",
            shlex.quote(str(path)),
            plan.regime.options(),
            "-o",
            shlex.quote(str(plan.out / "best")),
        ]
    ).replace("  ", " ")
    lines = [
        f"# The best trial of a sweep: trial {trial.number} of study {plan.study_name!r} ({plan.storage}),",
        f"# {TUNING_SPLIT} {plan.metric} {trial.value!r} after {cfg.epochs('s')[1]} epochs; written by mlkd-cache {__version__}.",
        "# Its tuned values: " + ", ".join(f"{k} = {v!r}" for k, v in trial.params.items()) + ".",
        "# Train it again, the same weights on the same machine (on CPU; cuDNN may not repeat itself on a GPU):",
        f"#     OMP_NUM_THREADS={threads} {command}" if threads else f"#     {command}",
        "",
    ]
    lines += [f"{key} = {value!r}" for key, value in cfg.to_dict().items()]
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # workers sharing OUT may finish at once
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def importances(study: Any) -> Dict[str, float]:
    """Each tuned key's share of the val metric's variance (optuna's fANOVA), from the complete
    trials; ``{}`` with fewer than two of them."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}


def short_names(keys: Sequence[str]) -> Dict[str, str]:
    """Each dotted key by its last part where that is unique (``lambda_cd``), else whole."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def save_plots(plan: SweepPlan, study: Any) -> List[Path]:
    """PNG files in OUT (:data:`PLOTS`): ``history`` (each trial's val score, pruned ones at
    their last, and the best so far), ``importances`` (with two complete trials) and ``slices``
    (the score against each tuned key, on a log axis for a log-uniform one)."""
    require_module("matplotlib", "the sweep's plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(ranked_trials(study), key=lambda r: r["number"])
    scored = [r for r in rows if r["value"] is not None and r["state"] in ("complete", "pruned")]
    done = [r for r in scored if r["state"] == "complete"]
    pruned = [r for r in scored if r["state"] == "pruned"]
    label = f"{TUNING_SPLIT} {plan.metric}"
    names = short_names(list(plan.space))
    written: List[Path] = []

    def save(figure: Any, name: str) -> None:
        path = plan.out / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)

    figure, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.scatter([r["number"] for r in done], [r["value"] for r in done], label="complete", zorder=3)
    ax.scatter([r["number"] for r in pruned], [r["value"] for r in pruned], marker="x", label="pruned (last score)", zorder=3)
    best, line = float("-inf"), []
    for r in rows:
        if r["state"] == "complete":
            best = max(best, r["value"])
        line.append(best if best > float("-inf") else None)
    ax.step(
        [r["number"] for r in rows],
        [float("nan") if v is None else v for v in line],
        where="post",
        color="0.4",
        label="best so far",
    )
    ax.set(xlabel="trial", ylabel=label, title=f"{plan.study_name}: {label} per trial")
    ax.legend(fontsize=8)
    save(figure, "history")

    shares = importances(study)
    if shares:
        figure, ax = plt.subplots(figsize=(6.4, 0.5 + 0.4 * len(shares)))
        keys = list(shares)[::-1]
        ax.barh([names.get(k, k) for k in keys], [shares[k] for k in keys])
        ax.set(xlabel=f"share of the {label} variance (fANOVA)", title="importance of each tuned key")
        save(figure, "importances")

    if plan.space:
        figure, axes = plt.subplots(1, len(plan.space), figsize=(3.2 * len(plan.space), 3.2), sharey=True, squeeze=False)
        for ax, (key, param) in zip(axes[0], plan.space.items()):
            for group, marker in ((done, "o"), (pruned, "x")):
                points = [(r["params"][key], r["value"]) for r in group if key in r["params"]]
                if points:
                    ax.scatter(*zip(*points), marker=marker)
            if param.kind == "log":
                ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(names[key])
        axes[0][0].set_ylabel(label)
        figure.suptitle(f"{label} against each tuned key (x: pruned, at its last score)")
        save(figure, "slices")
    return written


def summary(plan: SweepPlan, study: Any) -> Dict[str, Any]:
    """The sweep's result: the ranked trials, the counts by state, the best trial and its
    config, the importances; written to ``OUT/sweep.json``."""
    rows = ranked_trials(study)
    best = best_trial(study)
    result: Dict[str, Any] = {
        "study": plan.study_name,
        "storage": plan.storage,
        "metric": f"{TUNING_SPLIT} {plan.metric}",
        "regime": plan.regime.record(),
        "space": {k: p.spec() for k, p in plan.space.items()},
        "trials_asked": plan.trials,
        "states": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running", "waiting")},
        "trials": rows,
        "importances": importances(study),
        "best": None,
        "tool_version": __version__,
    }
    if best is not None:
        path = write_best_config(plan, best, plan.out / BEST_CONFIG)
        threads = (best.user_attrs.get("worker") or {}).get("threads")
        result["best"] = {
            "number": best.number,
            "value": best.value,
            "params": dict(best.params),
            "config": str(path),
            "threads": threads,
        }
    tmp = plan.out / f"{SUMMARY}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp, plan.out / SUMMARY)
    return result
