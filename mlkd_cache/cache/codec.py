"""How a cache stores its float vectors (``cache.dtype``), and what storing them costs in error.

=============  ====================  =========================================================
``dtype``      stored as             read back
=============  ====================  =========================================================
``float32``    float32               as stored
``float16``    float16 (IEEE half)   as stored
``bfloat16``   uint16: the upper     float32 (the stored bits, shifted back; numpy and HDF5
               16 bits of float32    have no bfloat16)
``int8``       int8, plus one        float32 ``q * scale``: symmetric, ``scale = max|x| / 127``
               float32 scale per     per stored vector (each pooled-feature row, each
               vector                label-wise token of each view)
=============  ====================  =========================================================

The precision applies to the pooled features and the label-wise embeddings, the bulk of a view.
Logits stay float16 in every precision but float32 (:func:`logits_dtype`): ``C`` numbers a view.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

import numpy as np
import torch

from ..config import CACHE_DTYPES

__all__ = [
    "STORAGE",
    "SCALED",
    "COMPACT",
    "SCALE_DTYPE",
    "INT8_MAX",
    "Encoded",
    "encode",
    "decode",
    "logits_dtype",
    "value_dtype",
    "ErrorSum",
]

STORAGE: Dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
    "int8": np.dtype(np.int8),
}
SCALED = ("int8",)  # precisions that store a scale per vector
COMPACT = ("bfloat16", "int8")  # precisions a reader of cache format 3 or older cannot read (format 4)
SCALE_DTYPE = np.dtype(np.float32)  # the per-vector scales of SCALED precisions
INT8_MAX = 127  # symmetric: q in [-127, 127], so that -q is always stored exactly
assert set(STORAGE) == set(CACHE_DTYPES)

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def logits_dtype(dtype: str) -> str:
    """The dtype a cache of precision ``dtype`` stores its logits in."""
    return "float32" if dtype == "float32" else "float16"


def value_dtype(dtype: str) -> np.dtype:
    """The dtype :func:`decode` returns for ``dtype``: the stored float, float32 for bfloat16 and int8."""
    return np.dtype(np.float32) if dtype in COMPACT else STORAGE[dtype]


class Encoded(NamedTuple):
    """Vectors ``[..., K]`` as stored (``values``, and ``scales [...]`` float32 for int8, else
    None), with the error of storing them against the float32 input: largest absolute error,
    and the sum over vectors of ``|x̂ - x| / |x|`` (Euclidean; 0 for a zero vector) with their count."""

    values: np.ndarray
    scales: Optional[np.ndarray]
    max_abs: float
    rel_sum: float
    vectors: int


def encode(x: Any, dtype: str) -> Encoded:
    """``x`` (a float tensor on any device, or an array) ``[..., K]`` as a cache of ``dtype`` stores it."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    t = t.float()
    scales: Optional[torch.Tensor] = None
    if dtype in SCALED:
        scale = t.abs().amax(dim=-1) / INT8_MAX  # [...]
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(t / safe[..., None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
        stored, back, scales = q, q.float() * scale[..., None], scale
    else:
        stored = t.to(_TORCH[dtype])
        back = stored.float()
    diff = back - t
    vectors = int(t[..., 0].numel()) if t.shape[-1] else 0
    if vectors and dtype != "float32":
        norm = t.norm(dim=-1)
        rel = torch.where(norm > 0, diff.norm(dim=-1) / norm.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(norm))
        max_abs, rel_sum = float(diff.abs().max()), float(rel.double().sum())
    else:
        max_abs, rel_sum = 0.0, 0.0
    if dtype == "bfloat16":
        values = stored.view(torch.int16).cpu().numpy().view(np.uint16)
    else:
        values = stored.cpu().numpy()
    return Encoded(values, None if scales is None else scales.cpu().numpy().astype(SCALE_DTYPE), max_abs, rel_sum, vectors)


def decode(values: np.ndarray, scales: Optional[np.ndarray], dtype: str) -> np.ndarray:
    """Stored ``values [..., K]`` (and ``scales [...]`` for int8) as floats of :func:`value_dtype`."""
    if dtype not in COMPACT:
        return values
    if dtype == "bfloat16":
        return (np.asarray(values, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    if scales is None:
        raise ValueError("int8 values need their scales")
    return np.asarray(values, dtype=np.int8).astype(np.float32) * np.asarray(scales, dtype=np.float32)[..., None]


class ErrorSum:
    """Running error of the :class:`Encoded` batches of one field: ``as_dict()`` gives the
    largest absolute error, the mean relative error per vector and the vector count."""

    def __init__(self) -> None:
        self.max_abs, self.rel_sum, self.vectors = 0.0, 0.0, 0

    def add(self, enc: Encoded) -> None:
        # a non-finite teacher output makes the error NaN from then on (max() would drop a NaN)
        self.max_abs = float(np.maximum(self.max_abs, enc.max_abs))
        self.rel_sum += enc.rel_sum
        self.vectors += enc.vectors

    def as_dict(self) -> Dict[str, float]:
        return {"max_abs": self.max_abs, "mean_rel": self.rel_sum / max(self.vectors, 1), "vectors": self.vectors}
