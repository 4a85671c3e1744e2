"""Does the cache teach? Offline vs online distillation and the number of views, paired over seeds.

One teacher (the shipped digits config: ``resnet10t`` trained on ``dataset_para_t``'s 6,000
canvases; a second one for the ensemble rows), one cache per view count V (dumped over the
students' 1,000 canvases), and these student recipes (``test_resnet``, the config's epochs and
schedule), each with every seed:

* ``no KD``: ``distill-student --no-kd`` (hard-label loss only, a fresh view every epoch);
* ``L2D online fresh``: ``--teacher teacher.pt --fresh-views``, L2D's own regime (the teacher
  run live on a fresh augmentation every epoch, the very views the no-KD student sees);
* ``L2D offline V=...``: ``--cache`` of V views, for every V of ``--views``;
* ``L2D offline V=... int8`` (``l2d-compact``): the same from a cache of another precision
  (``--compact-dtype``, default int8), for every V of ``--compact-views`` (default 16, 32, 64),
  also paired with the config-precision row of the same V where there is one;
* ``MLD offline``, ``MPSCD offline``: for each V of ``--method-views`` (default: the config's
  ``cache.views``);
* ``MLD online fresh``;
* ``L2D offline V=... teacher B`` and ``... teachers A+B`` (``l2d-ensemble``, at each V of
  ``--method-views``): teacher B is the config with ``--teacher-b`` changes (default: seed + 1),
  dumped over the same views; A+B distils from both caches (``--cache A --cache B``). Printed
  with both teachers' mAP, the ensemble's (the mean of their probabilities), and the student of
  both against the better single-teacher student (chosen by val mAP), paired per seed.

One seed = the same initialisation and sample order in every recipe (``seed`` of the config).
Per row: mean ± std over seeds of test mAP and OF1/CF1 (L2D's top-k protocol) and of val mAP
(the split choices are made on), the paired difference of test mAP to no KD and to the same
method online with fresh views (mean ± std of the per-seed differences, and whether its 95%
t-interval excludes 0), the student's wall time (setup, training and the final test
evaluation) and the dump of its cache: seconds, seconds per student that read it in this
study, and per (sample, view): the cache's bytes and the dump's milliseconds. The teacher is trained once and is not part of any row's time.

Finished runs in ``--work`` are reused (a study can be interrupted and rerun); a work folder of
another config is refused (the tool version is recorded, not compared). The first MPSCD run of
a cache computes its class prototypes (``prototypes.pt``, a second or two here) and the others
reuse them, so that run's time includes them.

``--benchmark voc-rf144`` runs the same rows on real photographs: the 4,961 VOC 2007 images of
``../shared/data/voc2007-rf144`` with ``configs/voc-rf144/resnet10t_to_test_resnet_l2d.py`` (its
``--quick`` reads the first 96 / 48 / 48 rows of its train / val / test files). Without that
folder, ``python tools/build_voc_rf144.py path/to/VOCdevkit ../shared/data/voc2007-rf144`` builds
it from the official VOC 2007 release, with other labels and another split (docs/results.md).

Each run also records its per-class test AP; the table is followed by test AP per class group
(thirds of the classes: rare / frequent by the students' training positives, co-occurring /
mostly alone by the share of a class's images that carry another label) and per class, with
the paired Δ of each KD row. ``--rows`` runs some row families only (``no-kd`` always runs).

    python benchmarks/kd_study.py                      # every row, about 100 min on 2 cores (70 without l2d-ensemble)
    python benchmarks/kd_study.py --quick              # smoke run of every row, < 60 s
    python benchmarks/kd_study.py --seeds 5 --json
    python benchmarks/kd_study.py --benchmark voc-rf144 --views 1,4,16 --work runs/kd-voc   # 95 min
    python benchmarks/kd_study.py --views 4,8,16 --seeds 5 --rows no-kd,l2d-online,l2d-offline
    python benchmarks/kd_study.py --rows l2d-ensemble --seeds 5 --teacher-b seed=1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import format_table  # noqa: E402

from mlkd_cache import __version__  # noqa: E402
from mlkd_cache.commands import distill_student as distill
from mlkd_cache.commands import dump_targets as dump
from mlkd_cache.commands import evaluate  # noqa: E402
from mlkd_cache.config import CACHE_DTYPES, Config, load_config  # noqa: E402
from mlkd_cache.data import dataset_from_config  # noqa: E402
from mlkd_cache.errors import MlkdError  # noqa: E402
from mlkd_cache.metrics import average_precision, evaluate_logits  # noqa: E402
from mlkd_cache.runtime.recipes import NO_KD, RECIPES, recipe_fields, student_config  # noqa: E402
from mlkd_cache.runtime.runlog import MetricsLog  # noqa: E402
from mlkd_cache.runtime.train import Trainer  # noqa: E402
from mlkd_cache.stats import paired, summarise  # noqa: E402

METRICS = ("mAP", "OF1_topk", "CF1_topk")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
QUICK = {  # every row, tiny: 96 canvases at 32 px, one epoch each
    "dataset_para": dict(train_size=96, test_size=64, val_size=64),
    "dataset_para_t": dict(train_size=96),
    "img_size": 32,
    "batch_size": 16,
    "workers": 0,
    "embed_dim": 32,
    "max_epoch_t": 1,
    "max_epoch_s": 1,
    "log_every": 0,
}
QUICK_VOC = {  # every row, tiny: 96 / 48 / 48 photographs at 32 px, test_resnet both, one epoch each
    "model_t": "test_resnet",
    "img_size": 32,
    "batch_size": 16,
    "embed_dim": 32,
    "max_epoch_t": 1,
    "max_epoch_s": 1,
    "log_every": 0,
}


@dataclass(frozen=True)
class Benchmark:
    """A study's data and recipe: a shipped ``config``, its ``data_root`` (None: built in) and
    the ``quick`` overrides of ``--quick``; ``quick_rows`` > 0 cuts a csv split's files to their
    first rows (train, val, test: that many, half, half)."""

    config: str
    data_root: Optional[Path]
    quick: Dict[str, Any]
    quick_rows: int = 0


BENCHMARKS = {
    "digits": Benchmark("digits/resnet10t_to_test_resnet_l2d.py", None, QUICK),
    "voc-rf144": Benchmark("voc-rf144/resnet10t_to_test_resnet_l2d.py", SHARED / "voc2007-rf144", QUICK_VOC, quick_rows=96),
}


def quick_csv_files(root: Path, dataset_para: Dict[str, Any], rows: int, out: Path) -> Dict[str, Any]:
    """``dataset_para`` with each split file replaced by a copy of its first rows in ``out``
    (train: ``rows``, val and test: half; no ``train_size``), image names unchanged (relative to
    ``root``)."""
    out.mkdir(parents=True, exist_ok=True)
    para = {k: v for k, v in dataset_para.items() if k != "train_size"}  # every row of the cut file
    for key, count in (("train_file", rows), ("val_file", rows // 2), ("test_file", rows // 2)):
        if key in para:
            lines = (root / para[key]).read_text(encoding="utf-8").splitlines()
            target = out / Path(para[key]).name
            target.write_text("\n".join(lines[: count + 1]) + "\n", encoding="utf-8")
            para[key] = str(target)
    return para


@dataclass(frozen=True)
class Row:
    """One recipe of the study: ``method`` is a key of RECIPES, ``mode`` no-kd / online / offline,
    ``views`` the cache's V (offline), ``"fresh"`` (online, L2D's regime) or ``None``;
    ``teachers`` the caches it reads: ``"a"`` (the study's teacher), ``"b"`` (the second teacher
    of the ensemble rows) or ``"ab"`` (both: ``--cache A --cache B``)."""

    name: str
    method: str
    mode: str
    views: Any
    teachers: str = "a"
    dtype: str = ""  # the cache's precision (cache.dtype) when not the config's: the compact rows

    @property
    def kind(self) -> str:
        """The ``--rows`` name of this row's family: ``l2d-offline``, ``mld-online``, ``l2d-ensemble``, ..."""
        if self.teachers != "a":
            return f"{self.method}-ensemble"
        if self.dtype:
            return f"{self.method}-compact"
        return "no-kd" if self.mode == "no-kd" else f"{self.method}-{self.mode}"

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-").replace("=", "")


ROW_KINDS = (  # --rows
    "no-kd",
    "l2d-online",
    "l2d-offline",
    "l2d-compact",
    "mld-offline",
    "mpscd-offline",
    "mld-online",
    "l2d-ensemble",
)


def study_rows(
    views: List[int],
    method_views: List[int],
    kinds: Sequence[str] = ROW_KINDS,
    compact_views: Sequence[int] = (),
    compact_dtype: str = "int8",
) -> List[Row]:
    """The study's rows in table order, of the ``kinds`` asked for (no KD always: every Δ is to it).
    ``l2d-compact``: L2D offline from caches of precision ``compact_dtype`` at each V of
    ``compact_views``. ``l2d-ensemble``: L2D offline from the second teacher alone and from both, at
    each V of ``method_views``, with L2D offline from the first teacher at those V (their single-teacher pair)."""
    rows = [Row("no KD", NO_KD, "no-kd", None), Row("L2D online fresh", "l2d", "online", "fresh")]
    rows += [Row(f"L2D offline V={v}", "l2d", "offline", v) for v in views]
    rows += [Row(f"L2D offline V={v} {compact_dtype}", "l2d", "offline", v, dtype=compact_dtype) for v in compact_views]
    rows += [
        Row(f"{name} offline V={v}", method, "offline", v)
        for method, name in (("mld", "MLD"), ("mpscd", "MPSCD"))
        for v in method_views
    ]
    rows.append(Row("MLD online fresh", "mld", "online", "fresh"))
    kept = [r for r in rows if r.mode == "no-kd" or r.kind in kinds]
    if "l2d-ensemble" in kinds:
        single = [Row(f"L2D offline V={v}", "l2d", "offline", v) for v in method_views]
        kept += [r for r in single if r not in kept]
        kept += [Row(f"L2D offline V={v} teacher B", "l2d", "offline", v, "b") for v in method_views]
        kept += [Row(f"L2D offline V={v} teachers A+B", "l2d", "offline", v, "ab") for v in method_views]
    return kept


def identity(cfg: Config) -> Dict[str, Any]:
    """What a work folder's runs depend on: the config, less cache.views (every row names its V)."""
    values = json.loads(json.dumps(cfg.to_dict(), default=str))
    values["cache"].pop("views")
    return values


def map_by_seed(runs: List[Dict[str, Any]]) -> Dict[int, float]:
    """``{seed: test mAP}`` of a row's runs."""
    return {r["seed"]: r["test"]["mAP"] for r in runs}


class Study:
    def __init__(
        self,
        cfg: Config,
        work: Path,
        seeds: List[int],
        views: List[int],
        method_views: List[int],
        config_name: str = "",
        kinds: Sequence[str] = ROW_KINDS,
        teacher_b: Optional[Dict[str, Any]] = None,
        cfg_b: Optional[Config] = None,
        compact_views: Sequence[int] = (),
        compact_dtype: str = "int8",
    ) -> None:
        """``teacher_b``: the config changes that make the ensemble rows' second teacher (default:
        seed + 1), ``cfg_b`` the config they give (default: ``cfg`` with them)."""
        self.cfg, self.work, self.seeds, self.config_name = cfg, work, seeds, config_name
        self.views, self.method_views = views, method_views
        self.prototype_views = int(cfg.cache["views"])  # online rows: MPSCD prototypes only
        self.rows = study_rows(views, method_views, kinds, compact_views, compact_dtype)
        self.teacher_b = dict(teacher_b or {"seed": int(cfg.seed) + 1})
        self.cfg_b = cfg_b if cfg_b is not None else cfg.replace(**self.teacher_b)
        self.scores: Dict[str, Dict[str, Dict[str, Any]]] = {}  # teacher letter -> split -> evaluate.run(keep_logits)
        work.mkdir(parents=True, exist_ok=True)
        if "b" in self.letters:  # every run of teacher B (its folder, caches, students) belongs to these changes
            stamp, changes = work / "teacher-b.json", json.loads(json.dumps(self.teacher_b, default=str))
            if stamp.is_file() and json.loads(stamp.read_text()) != changes:
                sys.exit(
                    f"error: {work} holds ensemble runs of another teacher B ({stamp.read_text().strip()}); choose another "
                    f"--work, or delete its teacher-b, cache-b-v*, *-teacher-b and *-teachers-a+b folders and teacher-b.json"
                )
            stamp.write_text(json.dumps(changes))
        stamp = work / "study.json"
        mine = {"config": identity(cfg), "tool_version": __version__}
        if stamp.is_file():
            old = json.loads(stamp.read_text())
            old["config"].get("cache", {}).pop("views", None)  # folders of earlier versions recorded it
            if old["config"] != mine["config"]:
                sys.exit(f"error: {work} holds a study of another config; choose another --work or delete it")
        else:
            stamp.write_text(json.dumps(mine, indent=1, default=str))

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    @property
    def letters(self) -> List[str]:
        """The teachers the rows read: ``a``, and ``b`` when there are ensemble rows."""
        return ["a", "b"] if any(r.teachers != "a" for r in self.rows) else ["a"]

    # -- stage 1 --------------------------------------------------------------------------
    def teacher(self, letter: str = "a") -> Dict[str, Any]:
        """Train (or reuse) teacher ``a`` (the config's) or ``b`` (``cfg_b``); its metrics and logits."""
        out = self.work / ("teacher" if letter == "a" else "teacher-b")
        cfg = self.cfg if letter == "a" else self.cfg_b
        final = out / "teacher.pt"
        if not final.is_file():
            self.log("training the teacher ..." if letter == "a" else "training teacher B ...")
            Trainer(cfg, "t", out, resume=(out / "checkpoint.pt").is_file(), progress=False).fit()
        rows = MetricsLog(out / "metrics.jsonl").read()
        seconds = sum(r.get("train_time_s", 0.0) + r.get("eval_time_s", 0.0) for r in rows)
        val = evaluate.run(final, split="val", keep_logits=True)
        test = evaluate.run(final, split="test", keep_logits=True)
        self.scores[letter] = {"val": val, "test": test}  # logits and labels, for the ensemble's scores
        return {
            "path": str(final),
            "arch": cfg.model_t,
            "changes": {} if letter == "a" else self.teacher_b,
            "seconds": seconds,
            "test": {k: test["metrics"][k] for k in METRICS},
            "val_mAP": val["metrics"]["mAP"],
            "test_per_class_ap": test["per_class_ap"],
        }

    def dumps(self, teachers: Dict[str, Dict[str, Any]]) -> Dict[Any, Dict[str, Any]]:
        """Every cache the rows read, keyed ``(teacher letter, V)``; all dumped with the config
        (its seed and transform), so that the two teachers' caches hold the same views."""
        result = {}
        wanted = {(letter, r.views, r.dtype) for r in self.rows if r.mode == "offline" for letter in r.teachers}
        for letter, v, dtype in sorted(wanted):
            out = self.work / ((f"cache-v{v}" if letter == "a" else f"cache-{letter}-v{v}") + (f"-{dtype}" if dtype else ""))
            record = out / "study-dump.json"
            if not record.is_file():  # a dump without its record is redone whole, so that its time is a whole dump's
                self.log(f"dumping teacher {letter.upper()}, V={v} {dtype} ...")
                started = time.perf_counter()
                teacher = Path(teachers[letter]["path"])
                cache = {"views": v, "fields": recipe_fields(self.cfg), **({"dtype": dtype} if dtype else {})}
                info = dump.run(self.cfg.replace(cache=cache), teacher, out, progress=False, overwrite=True)
                record.write_text(json.dumps({"seconds": time.perf_counter() - started, "bytes": info.get("total_bytes")}))
            result[letter, v, dtype] = {"path": str(out), **json.loads(record.read_text())}
        return result

    def ensemble_teacher(self, teachers: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        """The two teachers as an ensemble: scores = the mean of their probabilities, scored as
        logits ``log(p / (1 - p))`` (the same ranking, so the same AP; top-k and thresholds alike)."""
        out: Dict[str, Any] = {}
        for split in ("val", "test"):
            runs = [self.scores[letter][split] for letter in ("a", "b")]
            p = np.mean([1.0 / (1.0 + np.exp(-r["logits"].astype(np.float64))) for r in runs], axis=0)
            z = np.log(p) - np.log1p(-p)
            metrics = evaluate_logits(z, runs[0]["labels"])
            if split == "val":
                out["val_mAP"] = metrics["mAP"]
            else:
                out["test"] = {k: metrics[k] for k in METRICS}
                ap = average_precision(z, runs[0]["labels"])
                out["test_per_class_ap"] = {name: float(100 * v) for name, v in zip(teachers["a"]["test_per_class_ap"], ap)}
        return out

    # -- stage 2 --------------------------------------------------------------------------
    def student(self, row: Row, seed: int, teacher: Path, caches: Dict[Any, Dict[str, Any]]) -> Dict[str, Any]:
        out = self.work / row.slug / f"seed{seed}"
        record = out / "study-run.json"
        if record.is_file():
            return json.loads(record.read_text())
        if out.exists():  # an interrupted run: start it again
            shutil.rmtree(out)
        self.log(f"{row.name}, seed {seed} ...")
        cfg = student_config(self.cfg, row.method, seed).replace(
            eval_every=self.cfg.epochs("s")[1], cache={"views": row.views if row.mode == "offline" else self.prototype_views}
        )
        cache = [Path(caches[letter, row.views, row.dtype]["path"]) for letter in row.teachers] if row.mode == "offline" else None
        started = time.perf_counter()
        result = distill.run(
            cfg,
            out,
            progress=False,
            no_kd=row.mode == "no-kd",
            cache=cache,
            teacher=teacher if row.mode == "online" else None,
            fresh_views=row.views == "fresh",
        )
        seconds = time.perf_counter() - started
        val = evaluate.run(Path(result["final"]), split="val")["metrics"]
        per_class = evaluate.run(Path(result["final"]), split="test")["per_class_ap"]  # the reported split, per class
        entry = {
            "seed": seed,
            "test": {k: result["metrics"][k] for k in METRICS},
            "val_mAP": val["mAP"],
            "seconds": seconds,
            "test_per_class_ap": per_class,
        }
        record.write_text(json.dumps(entry))
        return entry

    def run(self) -> Dict[str, Any]:
        started = time.perf_counter()
        teachers = {letter: self.teacher(letter) for letter in self.letters}
        caches = self.dumps(teachers)
        teacher = Path(teachers["a"]["path"])
        self.train_size = len(dataset_from_config(self.cfg, "train"))  # the students' split, as dumped
        runs: Dict[str, List[Dict[str, Any]]] = {row.name: [] for row in self.rows}
        for seed in self.seeds:  # seed-major: an interrupted study has whole seeds
            for row in self.rows:
                runs[row.name].append(self.student(row, seed, teacher, caches))
        readers = {
            key: sum(
                len(self.seeds)
                for r in self.rows
                if r.mode == "offline" and (r.views, r.dtype) == key[1:] and key[0] in r.teachers
            )
            for key in caches
        }
        table = [self.summarise_row(row, runs, caches, readers) for row in self.rows]
        train = dataset_from_config(self.cfg, "train")
        result = {
            "study": "kd_study",
            "tool_version": __version__,
            "config": self.config_name,
            "seeds": self.seeds,
            "train_size_students": len(train),
            "classes": class_profile(train.class_names, train.labels),
            "train_size_teacher": len(dataset_from_config(self.cfg, "train", "t")),
            "teacher": teachers["a"],
            "dumps": {f"{letter if letter != 'a' else ''}{v}{dtype}": c for (letter, v, dtype), c in caches.items()},
            "rows": table,
            "wall_s": time.perf_counter() - started,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        }
        if "b" in teachers:
            result["teacher_b"] = teachers["b"]
            result["ensemble_teacher"] = self.ensemble_teacher(teachers)
            result["ensembles"] = ensemble_comparisons(table)
        return result

    def summarise_row(self, row: Row, runs, caches, readers) -> Dict[str, Any]:
        mine = runs[row.name]
        by_kind = {(r.method, r.mode, r.views, r.teachers): r.name for r in self.rows if not r.dtype}
        base = runs[by_kind[NO_KD, "no-kd", None, "a"]]
        online_name = by_kind.get((row.method, "online", "fresh", "a")) if row.teachers == "a" else None

        out: Dict[str, Any] = {
            "name": row.name,
            "method": row.method,
            "loss": RECIPES[row.method].label,
            "mode": row.mode,
            "views": row.views,
            "teachers": row.teachers,
            "runs": mine,
            "test": {k: summarise([r["test"][k] for r in mine]) for k in METRICS},
            "val_mAP": summarise([r["val_mAP"] for r in mine]),
            "seconds": summarise([r["seconds"] for r in mine]),
            "vs_no_kd": None if row.mode == "no-kd" else paired(map_by_seed(mine), map_by_seed(base)),
            "vs_online_fresh": paired(map_by_seed(mine), map_by_seed(runs[online_name]))
            if online_name and row.mode == "offline"
            else None,
        }
        out["loss_terms"] = self.loss_terms(row)
        if row.mode == "offline":
            keys = [(letter, row.views, row.dtype) for letter in row.teachers]
            parts = [{"seconds": caches[key]["seconds"], "students": readers[key]} for key in keys]
            sizes = [caches[key]["bytes"] for key in keys]
            pairs = self.train_size * row.views * len(keys)  # the (sample, view) pairs dumped
            out["dump"] = {  # several caches (an ensemble): each dump's time over the students that read it
                "seconds": sum(p["seconds"] for p in parts),
                "bytes": None if None in sizes else sum(sizes),
                "bytes_per_view": None if None in sizes else sum(sizes) / pairs,
                "ms_per_view": 1000 * sum(p["seconds"] for p in parts) / pairs,
                "parts": parts,
                "seconds_per_student": sum(p["seconds"] / p["students"] for p in parts),
            }
            same_v = by_kind.get((row.method, row.mode, row.views, row.teachers))
            if row.dtype and same_v and same_v != row.name:  # a compact cache against the config's precision, same V
                out["vs_config_precision"] = {"row": same_v, **paired(map_by_seed(mine), map_by_seed(runs[same_v]))}
            if len(parts) == 1:
                out["dump"]["students"] = parts[0]["students"]
        return out

    def loss_terms(self, row: Row) -> Dict[str, Dict[str, float]]:
        """Each loss term per batch in the first and the last epoch (``metrics.jsonl``), mean over seeds."""
        ends: Dict[str, List[Dict[str, float]]] = {"first_epoch": [], "last_epoch": []}
        for seed in self.seeds:
            rows = MetricsLog(self.work / row.slug / f"seed{seed}" / "metrics.jsonl").read()
            for key, r in (("first_epoch", rows[0]), ("last_epoch", rows[-1])):
                ends[key].append({k[len("loss/") :]: v for k, v in r.items() if k.startswith("loss/")})
        return {key: {t: statistics.mean(d[t] for d in ds) for t in ds[0]} for key, ds in ends.items()}


def ensemble_comparisons(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per V with ensemble rows: the student of both teachers against the better single-teacher
    student, chosen by mean val mAP (never test), paired per seed on test mAP; and against the other."""
    out = []
    for both in (r for r in rows if r["teachers"] == "ab"):
        singles = [
            r
            for r in rows
            if r["mode"] == "offline"
            and r["views"] == both["views"]
            and r["teachers"] in ("a", "b")
            and r["method"] == both["method"]
        ]
        better = max(singles, key=lambda r: r["val_mAP"]["mean"])
        other = next((r for r in singles if r is not better), None)

        out.append(
            {
                "views": both["views"],
                "ensemble_row": both["name"],
                "better_single": better["name"],
                "vs_better_single": paired(map_by_seed(both["runs"]), map_by_seed(better["runs"])),
                "other_single": other["name"] if other else None,
                "vs_other_single": paired(map_by_seed(both["runs"]), map_by_seed(other["runs"])) if other else None,
            }
        )
    return out


def class_profile(class_names: Sequence[str], labels: Any) -> Dict[str, Dict[str, float]]:
    """Per class of the students' training labels ``[N, C]``: ``positives`` (images with it) and
    ``with_others`` (the share of those images that carry another label too, 0..1)."""
    y = torch.as_tensor(labels, dtype=torch.float64)
    positives = y.sum(0)
    multi = (y.sum(1, keepdim=True) > 1).double()
    with_others = (y * multi).sum(0) / positives.clamp(min=1)
    return {name: {"positives": int(positives[c]), "with_others": float(with_others[c])} for c, name in enumerate(class_names)}


def class_groups(classes: Dict[str, Dict[str, float]]) -> Dict[str, List[str]]:
    """Thirds of the classes: ``rare`` / ``frequent`` by training positives, ``co-occurring`` /
    ``mostly alone`` by the share of their images with another label."""
    names = list(classes)
    third = max(1, len(names) // 3)
    by_count = sorted(names, key=lambda n: (classes[n]["positives"], n))
    by_company = sorted(names, key=lambda n: (classes[n]["with_others"], n))
    return {
        "rare": by_count[:third],
        "frequent": by_count[-third:],
        "co-occurring": by_company[-third:],
        "mostly alone": by_company[:third],
    }


def group_ap(run: Dict[str, Any], group: List[str]) -> float:
    """A run's test AP averaged over the classes of ``group`` (those with test positives: AP is
    undefined, NaN, for a class the test split lacks)."""
    return statistics.mean(ap for ap in (run["test_per_class_ap"][name] for name in group) if not math.isnan(ap))


def per_class_section(result: Dict[str, Any]) -> List[str]:
    """Test AP by class group and by class: the teacher, no KD, and each KD row's paired Δ."""
    rows = result["rows"]
    if "classes" not in result or any("test_per_class_ap" not in run for r in rows for run in r["runs"]):
        return []  # runs recorded before per-class AP was
    teacher_ap = result["teacher"]["test_per_class_ap"]
    scored = {name: info for name, info in result["classes"].items() if not math.isnan(teacher_ap[name])}
    groups = class_groups(scored)  # classes with positives in the test split
    base = next(r for r in rows if r["mode"] == "no-kd")

    def by_seed(row: Dict[str, Any], group: List[str]) -> Dict[int, float]:
        return {run["seed"]: group_ap(run, group) for run in row["runs"]}

    headers = ["test AP by class group"] + [f"{g} ({len(names)})" for g, names in groups.items()]
    body = [
        ["teacher"] + [f"{statistics.mean(teacher_ap[n] for n in names):.2f}" for names in groups.values()],
        ["no KD"] + [_pm(summarise(list(by_seed(base, names).values()))) for names in groups.values()],
    ]
    for r in rows:
        if r["mode"] != "no-kd":
            body.append(
                [f"Δ {r['name']}"] + [_diff(paired(by_seed(r, names), by_seed(base, names))) for names in groups.values()]
            )
    lines = ["", format_table(body, headers), ""]
    lines += [f"  {g}: {', '.join(names)}" for g, names in groups.items()]

    shown = [r for r in rows if r["mode"] != "no-kd" and r["method"] in ("l2d", "mpscd")]
    shown = [r for r in shown if r["mode"] == "online" or r["views"] == max(x["views"] for x in shown if x["mode"] == "offline")]
    headers = ["class", "train +", "with others", "teacher", "no KD"] + [f"Δ {r['name']}" for r in shown]
    body = []
    for name, info in sorted(scored.items(), key=lambda kv: -kv[1]["positives"]):
        no_kd = {run["seed"]: run["test_per_class_ap"][name] for run in base["runs"]}
        body.append(
            [
                name,
                str(info["positives"]),
                f"{100 * info['with_others']:.0f}%",
                f"{teacher_ap[name]:.1f}",
                _pm(summarise(list(no_kd.values())), 1),
            ]
            + [_diff(paired({run["seed"]: run["test_per_class_ap"][name] for run in r["runs"]}, no_kd)) for r in shown]
        )
    lines += ["", format_table(body, headers)]
    lines += [
        "",
        "test AP per class (mean over seeds); train +: the students' training images with the class; with others: the share",
        "of those with another label too; groups are thirds of the classes by those two counts; Δ: paired per seed, as above",
    ]
    return lines


def _pm(s: Dict[str, float], digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if not math.isnan(s["std"]) else f"{s['mean']:.{digits}f}"


def _diff(d: Optional[Dict[str, Any]]) -> str:
    if d is None:
        return "—"
    mark = {True: " *", False: "", None: ""}[d["beyond_noise"]]
    return f"{d['mean']:+.2f} ± {d['std']:.2f}{mark}"


def _run_minutes(result: Dict[str, Any]) -> float:
    """Minutes of every run the table rests on: teacher, dumps and students (stable across reruns)."""
    students = sum(run["seconds"] for row in result["rows"] for run in row["runs"])
    dumps = sum(d["seconds"] for d in result["dumps"].values())
    teachers = result["teacher"]["seconds"] + result.get("teacher_b", {}).get("seconds", 0.0)
    return (teachers + dumps + students) / 60


def ensemble_section(result: Dict[str, Any]) -> List[str]:
    """The ensemble rows' comparison: both teachers and their ensemble, and the student of both
    against the better single-teacher student (chosen on val)."""
    if "ensemble_teacher" not in result:
        return []
    a, b, e = result["teacher"], result["teacher_b"], result["ensemble_teacher"]
    changes = ", ".join(f"{k}={v}" for k, v in b["changes"].items())
    lines = [
        "",
        "several teachers (L2D offline; teacher B = the config with " + changes + "):",
        f"  teacher A {a['arch']}: test mAP {a['test']['mAP']:.2f} (val {a['val_mAP']:.2f}); teacher B {b['arch']}: "
        f"test mAP {b['test']['mAP']:.2f} (val {b['val_mAP']:.2f}), trained in {b['seconds']:.0f} s; "
        f"ensemble (mean of their probabilities): test mAP {e['test']['mAP']:.2f} (val {e['val_mAP']:.2f})",
    ]
    for c in result["ensembles"]:
        lines.append(
            f"  V={c['views']}: {c['ensemble_row']} - {c['better_single']} (the better single teacher's student by val mAP) = "
            f"{_diff(c['vs_better_single'])}; - {c['other_single']} = {_diff(c['vs_other_single'])}"
        )
    return lines


def render(result: Dict[str, Any]) -> str:
    t = result["teacher"]
    n = len(result["seeds"])
    lines = [
        f"KD study, {result['config']} (mlkd-cache {result['tool_version']}), seeds {result['seeds']}: "
        f"students on {result['train_size_students']} training images, teacher on {result['train_size_teacher']}",
        f"teacher: test mAP {t['test']['mAP']:.2f}, OF1 {t['test']['OF1_topk']:.2f}, CF1 {t['test']['CF1_topk']:.2f}, "
        f"val mAP {t['val_mAP']:.2f}, trained in {t['seconds']:.0f} s (once, in no row's time)",
        "",
    ]
    body = []
    for r in result["rows"]:
        dump_cell, per_view = "—", "—"
        if "dump" in r:
            d = r["dump"]
            shares = " + ".join(f"{p['seconds']:.0f} s / {p['students']}" for p in d.get("parts", [d]))
            dump_cell = f"{shares} = {d['seconds_per_student']:.1f} s"
            size = "?" if d.get("bytes_per_view") is None else f"{d['bytes_per_view']:.0f} B"
            per_view = f"{size}, {d['ms_per_view']:.2f} ms" if "ms_per_view" in d else "—"
        body.append(
            [
                r["name"],
                _pm(r["test"]["mAP"]),
                _pm(r["test"]["OF1_topk"], 1),
                _pm(r["test"]["CF1_topk"], 1),
                _pm(r["val_mAP"]),
                _diff(r["vs_no_kd"]),
                _diff(r["vs_online_fresh"]),
                f"{r['seconds']['mean']:.0f} s",
                dump_cell,
                per_view,
            ]
        )
    headers = [
        "row",
        "test mAP",
        "OF1 top-k",
        "CF1 top-k",
        "val mAP",
        "Δ mAP vs no KD",
        "Δ vs online fresh",
        "student",
        "dump / students",
        "per view: cache, dump",
    ]
    lines.append(format_table(body, headers))
    compact = [r for r in result["rows"] if r.get("vs_config_precision")]
    if compact:
        lines += ["", "a compact cache against the config's precision at the same V (paired test mAP):"]
        lines += [f"  {r['name']} - {r['vs_config_precision']['row']}: {_diff(r['vs_config_precision'])}" for r in compact]
    base = next(r for r in result["rows"] if r["mode"] == "no-kd")["test"]["mAP"]
    lines += [
        "",
        f"benchmark: teacher - no KD = {t['test']['mAP'] - base['mean']:.2f} test mAP (goal >= 5), "
        f"no-KD seed-to-seed std {base['std']:.2f} (goal <= 1)",
        "loss terms per batch, first epoch -> last epoch (mean over seeds):",
    ]
    width = max(len(r["name"]) for r in result["rows"])
    for r in result["rows"]:
        first, last = r["loss_terms"]["first_epoch"], r["loss_terms"]["last_epoch"]
        terms = "  ".join(f"{k} {first[k]:.1f} -> {last[k]:.1f}" for k in first)
        lines.append(f"  {r['name']:<{width}}  {terms}")
    lines += [
        "",
        f"mean ± std over {n} seeds; Δ: paired per-seed differences of test mAP, mean ± std, * = 95% t-interval excludes 0;",
        "student: wall time of one run (setup, training, final test evaluation); dump: the cache's dump time and that",
        f"time per student run that read the cache in this study. Runs in this table: {_run_minutes(result):.1f} min "
        f"(teacher, dumps, students); this invocation {result['wall_s'] / 60:.1f} min (finished runs are reused).",
    ]
    return "\n".join(lines + ensemble_section(result) + per_class_section(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="student seeds 0..N-1, at least 2 (default 3)")
    parser.add_argument("--views", default="1,2,4,8,16", help="cache view counts of the offline L2D rows (default 1,2,4,8,16)")
    parser.add_argument(
        "--method-views",
        default=None,
        help="view counts of the offline MLD and MPSCD rows, comma-separated (default: the config's cache.views)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder; finished runs in it are reused (default: a temporary one, removed)"
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    parser.add_argument(
        "--compact-views",
        default="16,32,64",
        help="cache view counts of the l2d-compact rows, comma-separated (default 16,32,64)",
    )
    parser.add_argument(
        "--compact-dtype",
        default="int8",
        choices=CACHE_DTYPES,
        help="cache.dtype of the l2d-compact rows' caches (default int8)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run of every row: tiny data, 1 epoch, V in 1,2, 2 seeds")
    parser.add_argument(
        "--benchmark",
        choices=sorted(BENCHMARKS),
        default="digits",
        help="the data and recipe (default digits; voc-rf144: real photographs)",
    )
    parser.add_argument(
        "--rows",
        default=",".join(k for k in ROW_KINDS if k != "l2d-compact"),
        help=f"row families to run, comma-separated, of {', '.join(ROW_KINDS)} (default all but l2d-compact; no-kd always runs)",
    )
    parser.add_argument(
        "--teacher-b",
        dest="teacher_b",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the l2d-ensemble rows' second teacher: a config change (repeatable; default seed=<the config's seed + 1>)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2: paired differences need a spread")
    kinds = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(ROW_KINDS))
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROW_KINDS)}")
    if args.teacher_b and "l2d-ensemble" not in kinds:
        parser.error("--teacher-b makes the second teacher of the l2d-ensemble rows; add l2d-ensemble to --rows")
    logging.basicConfig(level=logging.WARNING)
    from mlkd_cache.config import parse_override

    bench = BENCHMARKS[args.benchmark]
    if bench.data_root is not None and not bench.data_root.is_dir():
        parser.error(f"the {args.benchmark} benchmark needs its data in {bench.data_root}")
    overrides: Dict[str, Any] = {**(bench.quick if args.quick else {}), "eval_split": "test"}  # report test; val is scored apart
    if bench.data_root is not None:
        overrides["data_root"] = str(bench.data_root)
    settings = dict(parse_override(s) for s in args.settings)
    views = [1, 2] if args.quick else sorted({int(v) for v in args.views.split(",")})
    seeds = list(range(2 if args.quick else args.seeds))

    def study(work: Path) -> Dict[str, Any]:
        cfg = load_config(bench.config, overrides, settings=settings)
        teacher_b = dict(parse_override(s) for s in args.teacher_b) or {"seed": int(cfg.seed) + 1}
        try:  # a bad --teacher-b stops here, before any run (--set's syntax, dotted keys included)
            cfg_b = load_config(bench.config, overrides, settings={**settings, **teacher_b})
        except MlkdError as exc:
            sys.exit(f"error: --teacher-b: {exc}")
        if args.quick and bench.quick_rows and bench.data_root is not None:
            para = quick_csv_files(bench.data_root, cfg.dataset_para, bench.quick_rows, work / "quick-data")
            cfg, cfg_b = cfg.replace(dataset_para=para), cfg_b.replace(dataset_para=para)
        method_views = [2] if args.quick else sorted({int(v) for v in (args.method_views or str(cfg.cache["views"])).split(",")})
        if args.compact_dtype == cfg.cache["dtype"] and "l2d-compact" in kinds:
            sys.exit(f"error: --compact-dtype {args.compact_dtype} is the config's cache.dtype; choose another precision")
        compact = [2] if args.quick else sorted({int(v) for v in args.compact_views.split(",")})
        study = Study(cfg, work, seeds, views, method_views, bench.config, kinds, teacher_b, cfg_b, compact, args.compact_dtype)
        return study.run()

    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="kd-study-") as tmp:
            result = study(Path(tmp))
    else:
        result = study(args.work)
    print(json.dumps(result, indent=1, default=str) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
