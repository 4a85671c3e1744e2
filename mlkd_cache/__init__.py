"""mlkd-cache: offline multi-label knowledge distillation from a cached teacher.

The public API (``docs/api.md``): what a training loop of your own needs to distil from a cache.
Names are imported on first use, so ``import mlkd_cache`` stays light (no torch until needed)::

    import mlkd_cache as mc

    cache = mc.open_cache("runs/cache", train_set, mc.TransformSpec.from_config(cfg))
    views = mc.CachedViews(train_set, cache)          # a Dataset; views.collate for the DataLoader
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

from ._version import __version__

# public name -> the module that defines it (one place; docs/api.md documents each name)
_EXPORTS: Dict[str, str] = {
    # the cache
    "open_cache": "mlkd_cache.cache.reader",
    "TargetCache": "mlkd_cache.cache.reader",
    "CachedViews": "mlkd_cache.cache.replay",
    "CachedBatch": "mlkd_cache.cache.replay",
    "EpochSampler": "mlkd_cache.data.sampler",
    "EpochIndex": "mlkd_cache.data.sampler",
    "load_or_compute_prototypes": "mlkd_cache.cache.prototypes",
    # data and models
    "load_config": "mlkd_cache.config",
    "Config": "mlkd_cache.config",
    "build_dataset": "mlkd_cache.data",
    "dataset_from_config": "mlkd_cache.data",
    "TransformSpec": "mlkd_cache.data.transforms",
    "ViewDataset": "mlkd_cache.data.views",
    "build_model": "mlkd_cache.models",
    "Outputs": "mlkd_cache.models",
    "load_model": "mlkd_cache.runtime.checkpoint",
    "predict": "mlkd_cache.commands.predict",
    "load_teacher": "mlkd_cache.runtime.teachers",
    # losses
    "KDBatch": "mlkd_cache.losses.base",
    "Distiller": "mlkd_cache.losses.distiller",
    "DistillLoss": "mlkd_cache.losses.base",
    "register_loss": "mlkd_cache.losses.base",
    # metrics
    "mean_average_precision": "mlkd_cache.metrics",
    # errors
    "MlkdError": "mlkd_cache.errors",
    "ConfigError": "mlkd_cache.errors",
    "DataError": "mlkd_cache.errors",
    "CacheMismatchError": "mlkd_cache.errors",
    "CacheCorruptError": "mlkd_cache.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlkd_cache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted({*globals(), *__all__})
