"""The docs' reference parts are generated from the code, so they cannot drift from it."""
from __future__ import annotations

from mlkd_cache.config import reference_markdown

from .conftest import REPO


def test_config_reference_in_docs_is_the_generated_one():
    page = (REPO / "docs" / "configs.md").read_text(encoding="utf-8")
    table = reference_markdown()
    assert table in page, "docs/configs.md config reference is stale: paste mlkd_cache.config.reference_markdown()"
