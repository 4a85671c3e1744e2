"""Class prototypes of a target cache: the L2-normalised mean teacher embedding of every class.

MPSCD needs one teacher-space prototype per class. They are a pure function of the cached
positive label-wise embeddings, so they are computed once per cache and stored beside it as
``DIR/prototypes.pt`` together with the provenance of the cache they came from; a later run
reuses the file only when that provenance still matches the cache.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Dict

import torch
from torch import Tensor

from ..errors import MlkdError
from ..fileio import atomic_write_bytes
from .reader import TargetCache

__all__ = [
    "PROTOTYPES_NAME",
    "PROTOTYPES_VERSION",
    "PrototypeAccumulator",
    "compute_prototypes",
    "prototype_provenance",
    "load_or_compute_prototypes",
]

PROTOTYPES_NAME = "prototypes.pt"
PROTOTYPES_VERSION = 1

log = logging.getLogger("mlkd_cache")


class PrototypeAccumulator:
    """Streaming class means: :meth:`add` chunks of ``(tokens [P, E], classes [P])``, then
    :meth:`prototypes` gives ``[C, E]`` float32 L2-normalised means (all-zero rows for classes
    never seen). Sums and counts accumulate in float64 on the CPU."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        self.sums = torch.zeros(num_classes, embed_dim, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, tokens: Tensor, classes: Tensor) -> None:
        classes = classes.detach().to("cpu", torch.long)
        self.sums.index_add_(0, classes, tokens.detach().to("cpu", torch.float64))
        self.counts.index_add_(0, classes, torch.ones(len(classes), dtype=torch.float64))

    def prototypes(self) -> Tensor:
        means = self.sums / self.counts.clamp(min=1).unsqueeze(1)  # [C, E]; absent classes stay zero
        norms = means.norm(dim=1, keepdim=True)
        return torch.where(norms > 0, means / norms.clamp(min=1e-300), torch.zeros_like(means)).to(torch.float32)


def compute_prototypes(cache: TargetCache, batch: int = 65536) -> Tensor:
    """``[C, E]`` float32: per class the mean of every cached positive teacher embedding (all
    views), L2-normalised. A class with no positive in the cache gets an all-zero row.

    Streams :meth:`TargetCache.iter_positive_tokens` into a :class:`PrototypeAccumulator`.
    """
    acc = PrototypeAccumulator(cache.spec.num_classes, cache.spec.embed_dim)
    for tokens, classes in cache.iter_positive_tokens(view=None, batch=batch):
        acc.add(tokens, classes)
    return acc.prototypes()


def prototype_provenance(cache: TargetCache) -> Dict[str, Any]:
    """What a stored prototype file must match to be reused for ``cache``."""
    spec = cache.spec
    return {
        "format_version": PROTOTYPES_VERSION,
        "teacher_sha256": spec.teacher_sha256,
        "labels_sha256": spec.labels_sha256,
        "views": spec.views,
        "embedding": spec.embedding,
        "num_classes": spec.num_classes,
        "embed_dim": spec.embed_dim,
        "shards_sha256": cache.content_sha256(),
    }


def _load_stored(path: Path, provenance: Dict[str, Any]) -> Tensor | None:
    """The stored prototypes when ``path`` exists, loads and matches ``provenance``; else None."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: recompute over it
        log.warning("ignoring unreadable %s (%s); recomputing prototypes", path, type(exc).__name__)
        return None
    if not isinstance(stored, dict) or stored.get("provenance") != provenance:
        log.info("%s was computed for another cache; recomputing prototypes", path)
        return None
    prototypes = stored.get("prototypes")
    shape = (provenance["num_classes"], provenance["embed_dim"])
    if not isinstance(prototypes, Tensor) or tuple(prototypes.shape) != shape:
        return None
    return prototypes.to(torch.float32)


def load_or_compute_prototypes(cache: TargetCache) -> Tensor:
    """``[C, E]`` prototypes of ``cache``: read from ``DIR/prototypes.pt`` when its provenance
    matches the cache, otherwise computed with :func:`compute_prototypes` and stored there.

    The file holds ``{"prototypes": Tensor, "provenance": prototype_provenance(cache)}`` (loaded
    with ``weights_only=True``). When the directory cannot be written (read-only cache), the
    prototypes are returned without being stored and a warning is logged.
    """
    cache.require("label_emb", "class prototypes (MPSCD)")
    path = Path(cache.directory) / PROTOTYPES_NAME
    provenance = prototype_provenance(cache)
    stored = _load_stored(path, provenance)
    if stored is not None:
        return stored
    prototypes = compute_prototypes(cache)
    buffer = io.BytesIO()
    torch.save({"prototypes": prototypes, "provenance": provenance}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue(), unique=True)  # runs sharing a cache may write at once
    except MlkdError as exc:
        log.warning("cannot store prototypes in %s (%s); they will be recomputed next run", path.parent, exc)
    return prototypes
