"""What every rank of a torchrun run must share, each rank having read it from its own machine:
the config and the installed version, and the data of each split (docs/cluster.md). Each check
is one collective under torchrun and nothing without it; a rank that differs from rank 0 is
refused on every rank in one line naming it (:func:`~mlkd_cache.distributed.same_on_every_rank`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from .._version import __version__
from ..cache.format import split_digest
from ..config import Config
from ..distributed import DistInfo, agree, same_on_every_rank
from .checkpoint import LoadedModel

__all__ = ["check_same_config", "check_same_split", "load_on_every_rank", "LOCAL_KEYS"]


# Config keys that may differ between machines: where the data is and how many loader workers read it.
LOCAL_KEYS = ("data_root", "workers")


def config_digest(cfg: Config) -> str:
    """sha256 of the config's values but :data:`LOCAL_KEYS`, and of the installed version."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in LOCAL_KEYS}
    text = json.dumps({"config": values, "mlkd_cache": __version__}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_same_config(cfg: Config, info: DistInfo) -> None:
    """Every rank runs the same config (but :data:`LOCAL_KEYS`) with the same mlkd-cache version:
    other epochs or batch sizes on one node would hang the run or train something else."""
    same_on_every_rank(
        lambda: config_digest(cfg),
        info,
        f"config{f' {cfg.source}' if cfg.source else ''} or mlkd-cache version (all keys but {', '.join(LOCAL_KEYS)})",
        "give every node the same config file and the same mlkd-cache install",
    )


def check_same_split(split: Any, what: str, info: DistInfo) -> None:
    """Every rank reads the same ``split`` (keys, labels and class names; a dataset or the
    :class:`~mlkd_cache.data.views.ViewDataset` of one); ``what`` names it ("coco train split")."""
    same_on_every_rank(
        lambda: (split_digest(split.keys, split.labels), tuple(split.class_names)),
        info,
        f"{what} (image keys, labels or classes)",
        "give every node the same dataset files",
    )


def load_on_every_rank(load: Callable[[], LoadedModel], what: str, info: DistInfo) -> LoadedModel:
    """``load()`` on every rank, each from its own storage (a checkpoint or a teacher): a rank
    that cannot stops every rank, naming it, and every rank must have read the same model
    (its ``sha256``, compared under torchrun only). ``what`` names it ("checkpoint PATH")."""
    loaded = agree(info, load)
    same_on_every_rank(lambda: loaded.sha256, info, f"{what} (sha256)", "give every node the same file")
    return loaded
