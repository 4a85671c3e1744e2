"""The docs' reference parts are generated from the code, so they cannot drift from it."""

from __future__ import annotations

from mlkd_cache.config import reference_markdown

from .conftest import REPO


def test_config_reference_in_docs_is_the_generated_one():
    page = (REPO / "docs" / "configs.md").read_text(encoding="utf-8")
    table = reference_markdown()
    assert table in page, "docs/configs.md config reference is stale: paste mlkd_cache.config.reference_markdown()"


def test_license_file_is_the_licence_setup_cfg_declares():
    declared = next(
        line.split("=", 1)[1].strip() for line in (REPO / "setup.cfg").read_text().splitlines() if line.startswith("license =")
    )
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert declared == "Apache-2.0"
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
