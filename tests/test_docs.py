"""The docs' reference parts are generated from the code, so they cannot drift from it."""

from __future__ import annotations

import re
from pathlib import Path

import click

from mlkd_cache.cli.main import app
from mlkd_cache.cli.reference import REGENERATE, cli_reference_markdown
from mlkd_cache.cli.tune_thresholds import OBJECTIVE_LINES
from mlkd_cache.config import reference_markdown

from .conftest import REPO


def test_config_reference_in_docs_is_the_generated_one():
    page = (REPO / "docs" / "configs.md").read_text(encoding="utf-8")
    table = reference_markdown()
    assert table in page, "docs/configs.md config reference is stale: paste mlkd_cache.config.reference_markdown()"


def test_cli_reference_in_docs_is_the_generated_one():
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == cli_reference_markdown(), f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"
    assert REGENERATE in page  # the page says how it is made


def test_cli_reference_has_every_command_with_every_parameter():
    root = click.Context(app, info_name="mlkd-cache", **app.context_settings)
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", cli_reference_markdown(), re.M | re.S))
    assert list(sections) == app.list_commands(root)  # every command, in the order --help lists them
    for name, section in sections.items():
        command = app.commands[name]
        ctx = click.Context(command, info_name=name, parent=root, **command.context_settings)
        assert f"Usage: `mlkd-cache {name} " in section
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                for opt in (*param.opts, *param.secondary_opts):
                    assert f"`{opt}`" in section, f"{name}: {opt} missing from its reference"
            else:
                assert f"| `{param.make_metavar(ctx)}` |" in section, f"{name}: argument {param.name} missing"


def test_cli_reference_keeps_paragraphs_and_ignores_the_terminal(monkeypatch):
    page = cli_reference_markdown()
    lines = page.splitlines()
    assert "\b" not in page and str(REPO) not in page and str(Path.home()) not in page
    # a \b paragraph keeps its lines (here the aligned list of objectives), a plain one is one line
    assert all(line.strip() in lines for line in OBJECTIVE_LINES.splitlines())
    assert " ".join(app.commands["plot"].help.split()) in lines
    monkeypatch.setenv("COLUMNS", "40")
    assert cli_reference_markdown() == page


def test_license_file_is_the_licence_setup_cfg_declares():
    declared = next(
        line.split("=", 1)[1].strip() for line in (REPO / "setup.cfg").read_text().splitlines() if line.startswith("license =")
    )
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert declared == "Apache-2.0"
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text


def test_the_docs_speak_of_the_project_alone():
    """No page points at a tracker issue or a design-note section a reader does not have."""
    pages = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
    external = ("h5py", "pytorch", "torch", "timm", "onnx")  # other projects' trackers may be cited
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"\b(?:issues? #?\d+|DESIGN(?:\.md)? §\s*\d+)", text, re.I):
            if not any(name in text[max(0, m.start() - 12) : m.start()].lower() for name in external):
                found.append(f"{page.name}: {m.group(0)}")
    assert not found, found
