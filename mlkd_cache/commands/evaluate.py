"""``evaluate``: a checkpoint scored on a split of the dataset it was trained for."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from ..distributed import init_distributed
from ..runtime.scoring import load_model_on_ranks, score

__all__ = ["run"]


def run(
    checkpoint: Path,
    data_root: Optional[str] = None,
    batch_size: Optional[int] = None,
    workers: Optional[int] = None,
    split: str = "test",
    keep_logits: bool = False,
) -> Dict:
    """Score ``checkpoint`` on ``split`` of the dataset it was trained for: it is loaded on every
    rank, then :func:`~mlkd_cache.runtime.scoring.score` (the arguments and result are its)."""
    info = init_distributed()
    return score(load_model_on_ranks(checkpoint, info), data_root, batch_size, workers, split, keep_logits)
