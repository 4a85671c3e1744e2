"""Thin pytest fixtures over the plain builders in :mod:`tests.data.fixtures`."""

from pathlib import Path

import pytest

from tests.data.fixtures import make_coco_tree, make_csv_tree, make_nus_tree, make_voc_tree

REAL_COCO_VAL = Path(__file__).parents[2].parent / "shared" / "data" / "coco2014_val_anno.json"
COCO2017_TINY = Path(__file__).parents[2].parent / "shared" / "data" / "coco2017-tiny"


@pytest.fixture
def voc_root(tmp_path):
    return make_voc_tree(tmp_path / "voc")


@pytest.fixture
def coco_root(tmp_path):
    return make_coco_tree(tmp_path / "coco", fmt="l2d")


@pytest.fixture
def nus_root(tmp_path):
    return make_nus_tree(tmp_path / "nus")


@pytest.fixture
def csv_root(tmp_path):
    return make_csv_tree(tmp_path / "csv", fmt="csv")


@pytest.fixture
def real_coco_val():
    if not REAL_COCO_VAL.is_file():
        pytest.skip(f"L2D's real COCO val annotation file is absent: {REAL_COCO_VAL}")
    return REAL_COCO_VAL


@pytest.fixture
def coco2017_tiny():
    """100 real COCO 2017 photographs in the official layout (../shared/data/coco2017-tiny)."""
    if not COCO2017_TINY.is_dir():
        pytest.skip(f"shared test data absent: {COCO2017_TINY}")
    return COCO2017_TINY
