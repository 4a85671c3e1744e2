"""``--help`` and ``--version`` answer without importing torch: every command module of ``cli/``
imports what it runs inside its function, and takes its choices from light modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlkd_cache.cli.main import app
from mlkd_cache.config import EXPORT_FORMATS, PREDICTION_FORMATS

PROBE = """
import sys
from mlkd_cache.cli.main import app, main
for args in [["--version"], ["--help"], *([name, "--help"] for name in app.commands)]:
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
    loaded = sorted(m for m in ("torch", "timm", "h5py", "sklearn") if m in sys.modules)
    assert not loaded, f"{' '.join(args)} imported {', '.join(loaded)}"
print("light", len(app.commands))
"""


@pytest.mark.slow
def test_help_and_version_import_no_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == f"light {len(app.commands)}"


def test_the_cli_choices_are_the_tables_of_the_code():
    """The formats the CLI offers (light names in config) are the keys of the tables that run them."""
    from mlkd_cache.commands.predict import WRITERS
    from mlkd_cache.runtime.deploy import MODEL_FORMATS

    assert tuple(WRITERS) == PREDICTION_FORMATS
    assert tuple(MODEL_FORMATS) == tuple(EXPORT_FORMATS)
    assert all(MODEL_FORMATS[name].runs_with == runs_with for name, runs_with in EXPORT_FORMATS.items())
