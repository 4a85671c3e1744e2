"""`mlkd-cache plot`: training curves of real runs in one PNG; bad input in one line; the demo's hook."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mlkd_cache.cli.main import app, main
from mlkd_cache.commands import demo, plot
from mlkd_cache.commands import teacher_train as teacher
from mlkd_cache.config import load_config

from ..conftest import assert_one_line_error, tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXELS = (round(plot.FIGSIZE[1] * plot.DPI), round(plot.FIGSIZE[0] * plot.DPI))  # rows, columns

# most tests use `runs`, which trains two teachers (the rule: tests/test_markers.py)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Tuple[Path, Path]:
    """Two 2-epoch tiny teachers that share a folder name: ``a/teacher`` logs every 2nd step
    (steps.jsonl), ``b/teacher`` (another learning rate) logs per epoch only."""
    root = tmp_path_factory.mktemp("plot_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, lr, log_every in (("a", "3e-3", "2"), ("b", "1e-3", "0")):
            (root / name).mkdir()
            cfg = load_config(tiny_config(root / name, lr_t=lr, log_every=log_every))
            teacher.run(cfg, root / name / "teacher", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "a" / "teacher", root / "b" / "teacher"


def invoke(*args) -> "object":
    result = CliRunner().invoke(app, ["plot", *[str(a) for a in args]], catch_exceptions=True)
    result.returncode = result.exit_code  # the field assert_one_line_error reads
    return result


def assert_png(path: Path) -> None:
    """A complete PNG of the figure's size that is not blank, and no temporary file beside it."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[:2] == PIXELS
    assert float(np.var(pixels[..., :3])) > 0
    assert not path.with_name(path.name + ".tmp").exists()


def hide_matplotlib(monkeypatch) -> None:
    """Make every ``import matplotlib...`` fail in this process, as when it is not installed."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_cli_draws_two_runs_into_one_png(runs, tmp_path):
    out = tmp_path / "curves.png"
    result = invoke(*runs, "-o", out, "--title", "two teachers")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out}"
    assert_png(out)


def test_default_output_is_plot_png_in_the_current_folder(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(runs[0])
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "plot.png")
    assert not (runs[0] / "plot.png").exists()


def test_figure_has_one_curve_per_run_in_each_panel(runs):
    curves = [plot.load_run(f, label) for f, label in zip(runs, plot.run_labels(runs))]
    steps_a = [json.loads(line) for line in (runs[0] / "steps.jsonl").read_text().splitlines()]
    assert len(steps_a) == 2 * 3 and not curves[1].steps  # 6 steps per epoch, every 2nd logged; b logs none
    fig = plot.figure(curves, "t")
    ax_loss, ax_terms, ax_map = fig.axes[:3]
    assert [line.get_label() for line in ax_loss.lines] == ["a/teacher", "b/teacher"]
    assert [len(line.get_xdata()) for line in ax_loss.lines] == [6, 2]  # per logged step, per epoch
    assert list(ax_loss.lines[0].get_xdata()) == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert len(ax_terms.lines) == 2 and ax_terms.get_yscale() == "linear"  # one term (bce) per run
    for line, run in zip(ax_map.lines, curves):
        assert list(line.get_ydata()) == [row["mAP"] for row in run.epochs]


def test_loss_terms_spanning_orders_of_magnitude_get_a_log_axis(tmp_path):
    rows = [{"epoch": e, "loss/bce": 100.0 / e, "loss/mld": 0.1 / e, "loss": 100.1 / e} for e in (1, 2, 3)]
    (tmp_path / "kd").mkdir()
    (tmp_path / "kd" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = plot.figure([plot.load_run(tmp_path / "kd")])
    assert fig.axes[1].get_yscale() == "log" and len(fig.axes[1].lines) == 2
    assert "no evaluated epoch" in [t.get_text() for t in fig.axes[2].texts]


def test_labels_are_folder_names_made_unique():
    assert plot.run_labels([Path("/r/x/teacher"), Path("/r/y/teacher"), Path("/r/x/student-mld")]) == [
        "x/teacher",
        "y/teacher",
        "student-mld",
    ]
    assert plot.run_labels([Path("/r/teacher"), Path("/r/teacher")]) == ["teacher", "teacher (2)"]


def test_folder_without_metrics_is_one_line_exit_2(runs, tmp_path):
    out = tmp_path / "p.png"
    result = invoke(runs[0], runs[0].parent, "-o", out)
    line = assert_one_line_error(
        result, r"is not a run folder \(no metrics.jsonl\); pass the --out folder of teacher-train or distill-student"
    )
    assert str(runs[0].parent) in line and not out.exists()
    assert_one_line_error(invoke(tmp_path / "nowhere"), r"nowhere does not exist")


def test_empty_metrics_is_one_line_exit_2(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    assert_one_line_error(invoke(tmp_path / "run", "-o", tmp_path / "p.png"), r"metrics.jsonl holds no finished epoch")
    assert not (tmp_path / "p.png").exists()


def test_out_must_be_a_png(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # the console entry point, which puts usage errors in one line
        main(["plot", str(runs[0]), "-o", str(tmp_path / "p.pdf")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("error: Invalid value for '--out'") and "p.pdf does not end in .png" in lines[0]


def test_missing_matplotlib_is_one_line_exit_2(runs, tmp_path, monkeypatch):
    hide_matplotlib(monkeypatch)
    result = invoke(runs[0], "-o", tmp_path / "p.png")
    assert_one_line_error(result, r"^error: plotting needs matplotlib: pip install 'mlkd-cache\[plot\]'$")
    assert not (tmp_path / "p.png").exists()


def test_demo_hook_draws_all_runs_and_skips_without_matplotlib(runs, tmp_path, monkeypatch):
    written = demo.write_curves(tmp_path, list(runs), "digits demo")
    assert written == tmp_path / "plot.png"
    assert_png(written)
    hide_matplotlib(monkeypatch)
    assert demo.write_curves(tmp_path / "bare", list(runs)) is None
    assert not (tmp_path / "bare").exists()


def test_matplotlib_is_imported_only_inside_functions():
    """No module of the package imports matplotlib at import time (it is an optional extra)."""
    repo = Path(__file__).resolve().parents[2]
    for source in [*(repo / "mlkd_cache").rglob("*.py"), *(repo / "cli").glob("*.py")]:
        tree = ast.parse(source.read_text(), str(source))
        for node in tree.body:  # module level, including ``if``/``try`` blocks there
            for inner in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
                names = (
                    [a.name for a in inner.names]
                    if isinstance(inner, ast.Import)
                    else ([inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
                )
                assert not any(n.split(".")[0] == "matplotlib" for n in names), f"{source}:{inner.lineno}"
