"""Every printed block of the docs is what its commands print (tools/doc_outputs.py): rerun, the
block's lines equal a fresh run's but for the numbers in them (losses, scores, sizes and times
vary with the CPU and the machine's load) and the labels a weak model guesses."""

from __future__ import annotations

import importlib.util

import pytest

from .conftest import REPO, SHARED_DATA

spec = importlib.util.spec_from_file_location("doc_outputs", REPO / "tools" / "doc_outputs.py")
doc_outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doc_outputs)  # type: ignore[union-attr]

MARKED = {name: (page, text) for page in doc_outputs.pages() for name, _, text in doc_outputs.blocks(page)}


def test_every_marked_block_has_its_recipe_and_every_recipe_its_block():
    found = [name for page in doc_outputs.pages() for name, _, _ in doc_outputs.blocks(page)]
    assert sorted(found) == sorted(doc_outputs.RECIPES)  # each once


def test_the_mask_keeps_what_must_not_change():
    a = "teacher epoch 1/2  loss 231.6779  mAP 22.18 | @0.5 OF1 0.0  0.7s\nphotos/a.jpg,cat;dog,"
    b = "teacher epoch 1/2  loss 107.0047  mAP 15.46 | @0.5 OF1 3.5  12.1s\nphotos/a.jpg,person,"
    assert doc_outputs.shape(a) == doc_outputs.shape(b)
    assert doc_outputs.shape(a) != doc_outputs.shape(a.replace("mAP", "AP"))  # a changed field is seen
    assert doc_outputs.shape("x 1 shard(s)") != doc_outputs.shape("x 1 shards")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(doc_outputs.RECIPES))
def test_the_block_is_what_the_commands_print(name):
    if name in doc_outputs.NEEDS_PHOTOS and not (SHARED_DATA / "voc2007-rf144").is_dir():
        pytest.skip(f"shared test data absent: {SHARED_DATA / 'voc2007-rf144'}")
    page, text = MARKED[name]
    fresh = doc_outputs.run_recipe(name, quick=True)
    assert doc_outputs.shape(fresh) == doc_outputs.shape(text), (
        f"{page.name}: the block '{name}' is stale; rewrite it with `python tools/doc_outputs.py --write {name}`\n{fresh}"
    )
