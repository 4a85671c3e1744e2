"""Training curves of one or several runs, drawn into one PNG.

A run folder is the ``--out`` of ``teacher-train`` or ``distill-student``: it holds
``metrics.jsonl`` (one row per epoch) and, when ``log_every > 0``, ``steps.jsonl`` (the loss
terms of every ``log_every``-th step). The figure has three panels, all over epochs:

(a) total training loss: per logged step where ``steps.jsonl`` has rows (step ``s`` of epoch
    ``e`` sits at ``e - 1 + s / S``, ``S`` the largest step logged in the run: one epoch's
    step count to within ``log_every``), else the epoch mean at ``x = e``; log scale under the
    same rule as (b);
(b) every loss term's epoch mean, one line per run and term (colour = run, line style = term),
    on a log scale when the positive values span two orders of magnitude or more;
(c) test mAP (%) of the evaluated epochs.

matplotlib is an optional extra (``pip install 'mlkd-cache[plot]'``); it is imported only when a
plot is drawn, and drawn with its Agg canvas, never through pyplot, so nothing global (backend,
open figures) changes. The PNG is written to ``NAME.tmp`` and renamed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import MissingDependencyError, RunFolderError, missing_dependency, require_module
from ..fileio import atomic_write_bytes
from ..runtime.runlog import MetricsLog, RunFiles, StepLog

DEFAULT_NAME = "plot.png"
FIGSIZE = (16.0, 4.8)  # inches; at DPI this is 1600 x 480 pixels
DPI = 100
LOG_SPAN = 100.0  # panels (a) and (b) turn logarithmic when max / min of the positive values reaches this
PURPOSE = "plotting"  # what needs matplotlib, in its missing-package line
INSTALL_HINT = str(missing_dependency("matplotlib", PURPOSE))  # that line
_TERM_STYLES: List[Tuple[Any, str]] = [
    (("-", "--", ":", "-.")[i % 4], ("o", "s", "^", "D", "v")[i % 5]) for i in range(20)
]  # (line, marker)


@dataclass
class RunCurves:
    """One run's rows: ``epochs`` from metrics.jsonl, ``steps`` from steps.jsonl (may be empty)."""

    folder: Path
    label: str
    epochs: List[Dict[str, Any]]
    steps: List[Dict[str, Any]] = field(default_factory=list)

    def terms(self) -> List[str]:
        """Loss term names (``loss/<term>`` keys) in first-seen order."""
        names: Dict[str, None] = {}
        for row in self.epochs:
            names.update((k[len("loss/") :], None) for k in row if k.startswith("loss/"))
        return list(names)


def _rows(log: MetricsLog) -> List[Dict[str, Any]]:
    try:
        rows = log.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"cannot read {log.path}: {getattr(exc, 'strerror', None) or exc}") from None
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), (int, float))]


def load_run(folder: Path, label: Optional[str] = None) -> RunCurves:
    """Read a run folder's metrics.jsonl (required, at least one epoch) and steps.jsonl (optional)."""
    folder = Path(folder)
    files = RunFiles(folder)
    metrics = files.metrics
    if not metrics.is_file():
        if not folder.exists():
            raise RunFolderError(f"{folder} does not exist; pass the --out folder of teacher-train or distill-student")
        raise RunFolderError(
            f"{folder} is not a run folder (no metrics.jsonl); pass the --out folder of teacher-train or distill-student"
        )
    epochs = _rows(MetricsLog(metrics))
    if not epochs:
        raise RunFolderError(f"{metrics} holds no finished epoch; plot it after the run's first epoch has ended")
    steps = _rows(StepLog(files.steps))
    last = max(r["epoch"] for r in epochs)  # a kill between the two appends can leave steps of an unlogged epoch
    steps = [
        r
        for r in steps
        if r["epoch"] <= last and isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))
    ]
    return RunCurves(folder=folder, label=label or folder.name, epochs=epochs, steps=steps)


def run_labels(folders: Sequence[Path]) -> List[str]:
    """Folder names, lengthened to the shortest unique path suffix where two runs share a name
    (``a/teacher``, ``b/teacher``); the same folder given twice gets `` (2)``, `` (3)``, ..."""
    resolved = [Path(f).resolve().parts[1:] or (str(f),) for f in folders]
    parts = list(dict.fromkeys(resolved))  # distinct folders
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = [i for i, lab in enumerate(labels) if labels.count(lab) > 1 and depth[i] < len(parts[i])]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    label_of = dict(zip(parts, labels))
    seen: Dict[str, int] = {}
    unique = []
    for lab in (label_of[p] for p in resolved):
        seen[lab] = seen.get(lab, 0) + 1
        unique.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return unique


def _matplotlib() -> Tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or :class:`MissingDependencyError` with the install line."""
    figure_module = require_module("matplotlib.figure", PURPOSE)
    return figure_module.Figure, require_module("matplotlib.backends.backend_agg", PURPOSE).FigureCanvasAgg


def matplotlib_available() -> bool:
    """Whether :func:`plot_runs` can draw (matplotlib importable)."""
    try:
        _matplotlib()
    except MissingDependencyError:
        return False
    return True


def _loss_points(run: RunCurves) -> Tuple[List[float], List[float], str]:
    """x (epochs), total loss and how it was sampled (``"step"`` or ``"epoch"``) for panel (a)."""
    if run.steps:
        per_epoch = max(float(r["step"]) for r in run.steps)
        return [r["epoch"] - 1 + r["step"] / per_epoch for r in run.steps], [float(r["loss"]) for r in run.steps], "step"
    rows = [r for r in run.epochs if isinstance(r.get("loss"), (int, float))]
    return [r["epoch"] for r in rows], [float(r["loss"]) for r in rows], "epoch"


def _log_scale_fits(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) > 1 and max(positive) / min(positive) >= LOG_SPAN


def figure(runs: Sequence[RunCurves], title: Optional[str] = None) -> Any:
    """The three-panel matplotlib ``Figure`` of ``runs`` (``FIGSIZE`` inches at ``DPI``, Agg canvas)."""
    Figure, FigureCanvasAgg = _matplotlib()
    from matplotlib.lines import Line2D

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_terms, ax_map = fig.subplots(1, 3)
    colours = [f"C{i % 10}" for i in range(len(runs))]

    sampled = set()
    all_loss: List[float] = []
    for run, colour in zip(runs, colours):
        x, y, how = _loss_points(run)
        sampled.add(how)
        all_loss += y
        ax_loss.plot(
            x,
            y,
            color=colour,
            linewidth=1.0 if how == "step" else 1.5,
            marker=None if how == "step" else "o",
            markersize=3,
            label=run.label,
        )
    ax_loss.set_title(
        "(a) training loss "
        + ("per logged step" if sampled == {"step"} else "per epoch" if sampled == {"epoch"} else "per step / per epoch")
    )
    if _log_scale_fits(all_loss):
        ax_loss.set_yscale("log", nonpositive="mask")

    terms = list(dict.fromkeys(t for run in runs for t in run.terms()))
    styles = {t: _TERM_STYLES[i % len(_TERM_STYLES)] for i, t in enumerate(terms)}
    all_terms: List[float] = []
    for run, colour in zip(runs, colours):
        for term in run.terms():
            rows = [r for r in run.epochs if isinstance(r.get(f"loss/{term}"), (int, float))]
            y = [float(r[f"loss/{term}"]) for r in rows]
            all_terms += y
            ls, marker = styles[term]
            ax_terms.plot([r["epoch"] for r in rows], y, color=colour, linestyle=ls, marker=marker, markersize=4)
    ax_terms.set_title("(b) loss terms, epoch mean")
    if _log_scale_fits(all_terms):
        ax_terms.set_yscale("log", nonpositive="mask")
    if terms:
        handles = [Line2D([], [], color="0.3", linestyle=styles[t][0], marker=styles[t][1], markersize=4) for t in terms]
        ax_terms.legend(handles, terms, fontsize="small", title="term (colour = run)", title_fontsize="small")

    evaluated = False
    for run, colour in zip(runs, colours):
        rows = [r for r in run.epochs if isinstance(r.get("mAP"), (int, float))]
        evaluated |= bool(rows)
        ax_map.plot([r["epoch"] for r in rows], [r["mAP"] for r in rows], color=colour, marker="o", markersize=3)
    ax_map.set_title("(c) test mAP (%), evaluated epochs")
    if not evaluated:
        ax_map.text(0.5, 0.5, "no evaluated epoch", ha="center", va="center", transform=ax_map.transAxes)

    for ax, ylabel in ((ax_loss, "loss"), (ax_terms, "loss term"), (ax_map, "mAP (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize="small", title="run", title_fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def png_bytes(fig: Any) -> bytes:
    """``fig`` rendered as PNG at ``DPI``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_runs(folders: Sequence[Path], out: Path, title: Optional[str] = None) -> Path:
    """Draw the curves of the run ``folders`` into the PNG ``out`` (atomically); returns ``out``.

    Every folder is read (and checked) before matplotlib is imported, so a bad folder is
    reported first and nothing is written when any input is wrong.
    """
    folders = [Path(f) for f in folders]
    runs = [load_run(f, label) for f, label in zip(folders, run_labels(folders))]
    png = png_bytes(figure(runs, title))
    out = Path(out)
    atomic_write_bytes(out, png)
    return out
