"""The README's reference parts are generated from the code, so they cannot drift from it."""
from __future__ import annotations

from mlkd_cache.config import reference_markdown

from .conftest import REPO


def test_config_reference_in_readme_is_the_generated_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = reference_markdown()
    assert table in readme, "README config reference is stale: paste mlkd_cache.config.reference_markdown()"
