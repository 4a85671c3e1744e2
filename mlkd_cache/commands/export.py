"""``export``: a checkpoint's model as one file that runs without mlkd-cache, checked against
PyTorch before it gets its name.

The exported model (:class:`~mlkd_cache.runtime.deploy.PixelModel`) takes what
:func:`~mlkd_cache.data.views.eval_inputs` gives, uint8 pixels ``[N, 3, S, S]`` (RGB, resized to
``img_size`` square with the card's filter), and does the normalisation inside the graph with the
float32 operations of :func:`~mlkd_cache.data.transforms.to_float` (so its floats are the ones
training saw); it returns ``logits [N, C]`` and ``probabilities [N, C]`` (the sigmoid). The batch
axis is dynamic. Formats (:data:`~mlkd_cache.runtime.deploy.MODEL_FORMATS`):

* ``onnx``: ``torch.onnx.export(..., dynamo=True)``, checked with onnxruntime on the CPU; the
  metadata in ``metadata_props``.
* ``pt2``: ``torch.export`` + ``torch.export.save``, checked with the program
  ``torch.export.load`` reads back; the metadata in ``extra_files``.

The exporters, the runners the check runs the file with (the ones ``predict`` runs it with) and
the metadata are :mod:`mlkd_cache.runtime.deploy`'s; this module chooses the check's images,
compares, and writes the file under the ``-o`` rule ``predict`` shares
(:func:`~mlkd_cache.runtime.deploy.check_output`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..data import dataset_from_config
from ..data.transforms import model_input
from ..data.views import eval_inputs
from ..errors import ConfigError, MlkdError, ModelError, require_module
from ..metrics import sigmoid
from ..models.card import ModelCard
from ..runtime.checkpoint import load_model
from ..runtime.deploy import (
    MODEL_FORMATS,
    Predictor,
    check_output,
    decision_thresholds,
    export_bytes,
    export_metadata,
    write_output,
)
from ..thresholds import UNTUNED

__all__ = [
    "CHECK_BATCHES",
    "TOLERANCE",
    "TOLERANCE_TEXT",
    "check_pixels",
    "format_of",
    "compare",
    "export",
]

CHECK_BATCHES = (1, 7)  # batch sizes the export is checked at: one, and one above 1 (a batch baked into the graph fails)
# The check's tolerance on max |Δ logit|, relative to the logits' scale max(1, max |z|): 2^-12 =
# 2^11 float32 epsilons (2^-23). Measured (onnxruntime against PyTorch on the CPU): 3e-7 of the
# scale for timm's test_resnet at 32 px, 1.2e-6 for resnet18 + ML-Decoder at 64 px and for
# resnet101 + ML-Decoder at 224 px, i.e. 3 to 10 epsilons of float32 sums taken in another order;
# the margin (200x) leaves room for other backbones and kernels, while a real fault (another
# normalisation, dropout left on, a wrong weight) moves logits by 1e-2 of their scale or more.
TOLERANCE = 2.0**-12
TOLERANCE_TEXT = f"2^{int(math.log2(TOLERANCE))}"  # how messages write it


def check_pixels(card: ModelCard, n: int = max(CHECK_BATCHES), seed: int = 0) -> Tuple[Tensor, str]:
    """uint8 ``[n, 3, S, S]`` to check an export with, and what they are: the first ``n`` images
    of the test split of the card's dataset through :func:`eval_inputs` (cycled when it has
    fewer) when that data is at hand, else uniform random pixels from a generator seeded with
    ``seed`` (the global RNG is not touched)."""
    try:
        cfg = card.config_with(bad_images="error", workers=0)  # no start-up scan of every image
        split = dataset_from_config(cfg, "test")
        inputs = eval_inputs(split, card.transform)
        if len(inputs):
            pixels = torch.stack([inputs[i % len(inputs)].image for i in range(n)])
            return pixels, f"the first {min(n, len(inputs))} images of the {cfg.dataset} test split"
    except MlkdError:  # the data is not here (no data root, a missing file): random pixels will do
        pass
    s = card.img_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=generator), f"random pixels (seed {seed})"


def format_of(out: Union[str, Path], fmt: Optional[str] = None) -> str:
    """The format to write ``out`` in: ``fmt`` when given, else the one its suffix names, else
    onnx; :class:`~mlkd_cache.errors.ConfigError` when the file's suffix is not the format's."""
    out = Path(out)
    if fmt is None:
        fmt = next((f for f, spec in MODEL_FORMATS.items() if out.suffix.lower() == spec.suffix), "onnx")
    if fmt not in MODEL_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not an export format; choose one of {', '.join(MODEL_FORMATS)}")
    suffix = MODEL_FORMATS[fmt].suffix
    if out.suffix.lower() != suffix:
        raise ConfigError(
            f"-o {out}: an export to {fmt} is named *{suffix} (the name says what the file holds); name it {out.with_suffix(suffix).name}"
        )
    return fmt


@torch.no_grad()
def compare(model: nn.Module, card: ModelCard, exported: Predictor, pixels: Tensor) -> List[Dict[str, Any]]:
    """The ``exported`` model against the PyTorch ``model`` on ``pixels`` (uint8
    ``[>= 7, 3, S, S]``) at each batch size of :data:`CHECK_BATCHES`, the PyTorch input made
    as evaluate makes it (:func:`model_input`). One record per batch size: ``max_abs_dlogit``,
    its ``tolerance`` (:data:`TOLERANCE` x ``logit_scale`` = max(1, max |z|)), ``max_abs_dprob``
    and ``label_disagreements`` at the card's thresholds (:data:`~mlkd_cache.thresholds.UNTUNED` where it has none).

    The export is refused (:class:`~mlkd_cache.errors.ModelError`, one line) when max |Δ logit|
    exceeds the tolerance, when a probability differs by more than tolerance / 4 (+ 2^-20: the
    sigmoid's slope is at most 1/4, and a float32 sigmoid rounds), or when a label differs
    where the PyTorch probability is more than tolerance / 4 from its threshold."""
    thresholds, _ = decision_thresholds(card, None)  # float64 [C]
    records = []
    for n in CHECK_BATCHES:
        batch = pixels[:n]
        z_ref = model(model_input(batch, card.transform, torch.device("cpu"))).logits.float().numpy()
        z, p = exported.run(batch)
        p_ref = sigmoid(z_ref)  # float64 [n, C]
        scale = max(1.0, float(np.abs(z_ref).max()))
        tol = TOLERANCE * scale
        dz = float(np.abs(z.astype(np.float64) - z_ref).max())
        dp = float(np.abs(p.astype(np.float64) - p_ref).max())
        flipped = (sigmoid(z) >= thresholds) != (p_ref >= thresholds)
        disagree = int((flipped & (np.abs(p_ref - thresholds) > tol / 4)).sum())
        records.append(
            dict(batch=n, max_abs_dlogit=dz, tolerance=tol, logit_scale=scale, max_abs_dprob=dp, label_disagreements=disagree)
        )
        problems = []
        if not dz <= tol:
            problems.append(f"max |Δ logit| {dz:.3g} over the tolerance {tol:.3g} ({TOLERANCE_TEXT} x logit scale {scale:.3g})")
        if not dp <= tol / 4 + 2**-20:
            problems.append(f"max |Δ probability| {dp:.3g} over {tol / 4 + 2**-20:.3g}")
        if disagree:
            problems.append(f"{disagree} labels differ at the thresholds")
        if problems:
            raise ModelError(
                f"the exported {card.arch} disagrees with the PyTorch model at batch {n}: {'; '.join(problems)}; "
                f"nothing written (report it with the checkpoint's arch and torch {torch.__version__}, or try the other --format)"
            )
    return records


def export(
    checkpoint: Union[str, Path],
    out: Union[str, Path],
    fmt: Optional[str] = None,
    check: bool = True,
    opset: Optional[int] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Export the model of ``checkpoint`` (teacher.pt, student.pt) to ``out`` as ``fmt``
    (:data:`~mlkd_cache.runtime.deploy.MODEL_FORMATS`; default: from the suffix of ``out``, else
    onnx), ONNX at ``opset`` (None: the exporter's default). With ``check`` the file is run (by
    the runner ``predict`` runs it with) against the PyTorch model by :func:`compare` on
    :func:`check_pixels` before it is written; a failed check, an ``out`` that exists (unless
    ``overwrite``) and a missing package (onnx, onnxscript, onnxruntime: the ``deploy`` extra)
    are one line each, and nothing is written. The file is written atomically (a temporary file
    in its folder, renamed); the folders above it that do not exist yet are made.

    Returns ``{"path", "format", "bytes", "opset", "export_seconds", "check_seconds", "input",
    "checked", "check_images", "check_thresholds", "checks": [compare's records], "source", "sha256"}``."""
    out = Path(out)
    fmt = format_of(out, fmt)
    check_output(out, overwrite)
    if fmt == "onnx":
        for module in ("onnx", "onnxscript") + (("onnxruntime",) if check else ()):
            require_module(module, "export to ONNX")
    elif opset is not None:
        raise ConfigError("--opset is the ONNX opset; leave it out with --format pt2")
    loaded = load_model(checkpoint, "cpu")
    card = loaded.card
    meta = export_metadata(card, checkpoint, loaded.sha256)
    start = time.perf_counter()
    data, used_opset = export_bytes(loaded.model, card, fmt, meta, opset)
    export_seconds = time.perf_counter() - start
    checks: List[Dict[str, Any]] = []
    images, check_seconds = "", 0.0
    if check:
        start = time.perf_counter()
        pixels, images = check_pixels(card)
        checks = compare(loaded.model, card, MODEL_FORMATS[fmt].predictor.load(data, str(out)), pixels)
        check_seconds = time.perf_counter() - start
    write_output(out, data)
    return {
        "path": str(out),
        "format": fmt,
        "bytes": len(data),
        "opset": used_opset,
        "export_seconds": export_seconds,
        "check_seconds": check_seconds,
        "input": meta["mlkd_cache.input"],
        "checked": check,
        "check_images": images,
        "check_thresholds": "the card's per-class thresholds" if card.thresholds is not None else f"{UNTUNED:g}",
        "checks": checks,
        "source": str(checkpoint),
        "sha256": loaded.sha256,
    }
