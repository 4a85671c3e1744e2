"""``export``: a checkpoint's model as one file that runs without mlkd-cache, checked against
PyTorch before it gets its name.

The exported model (:class:`PixelModel`) takes what :func:`~mlkd_cache.data.views.eval_inputs`
gives, uint8 pixels ``[N, 3, S, S]`` (RGB, resized to ``img_size`` square with the card's
filter), and does the normalisation inside the graph with the float32 operations of
:func:`~mlkd_cache.data.transforms.to_float` (so its floats are the ones training saw); it
returns ``logits [N, C]`` and ``probabilities [N, C]`` (the sigmoid). The batch axis is dynamic.
Formats (:data:`FORMATS`):

* ``onnx``: ``torch.onnx.export(..., dynamo=True)`` (the legacy TorchScript exporter cannot
  export the ML-Decoder's multi-head attention and bakes batch sizes into reshapes; there is no
  fall-back to it), checked with onnxruntime on the CPU; the metadata in ``metadata_props``.
  Read it back with :func:`~mlkd_cache.runtime.deploy.load_onnx`.
* ``pt2``: ``torch.export`` + ``torch.export.save`` (the PyTorch-native format; TorchScript is
  deprecated), checked with the program ``torch.export.load`` reads back; the metadata in
  ``extra_files``.

The metadata keys and the input and output names are :mod:`mlkd_cache.runtime.deploy`'s.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..data import dataset_from_config
from ..data.transforms import TransformSpec, model_input, to_float
from ..data.views import eval_inputs
from ..errors import ConfigError, MlkdError, ModelError
from ..fileio import atomic_write_bytes
from ..metrics import sigmoid
from ..models.card import ModelCard
from ..runtime.checkpoint import load_model
from ..runtime.deploy import (
    DEFAULT_THRESHOLD,
    INPUT_NAME,
    OUTPUT_NAMES,
    decision_thresholds,
    export_metadata,
    ort_session,
    require,
)

__all__ = [
    "FORMATS",
    "CHECK_BATCHES",
    "TOLERANCE",
    "TOLERANCE_TEXT",
    "PixelModel",
    "check_pixels",
    "format_of",
    "compare",
    "export",
]

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}  # format -> the suffix its file must have (predict tells them apart by it)
CHECK_BATCHES = (1, 7)  # batch sizes the export is checked at: one, and one above 1 (a batch baked into the graph fails)
# The check's tolerance on max |Δ logit|, relative to the logits' scale max(1, max |z|): 2^-12 =
# 2^11 float32 epsilons (2^-23). Measured (onnxruntime against PyTorch on the CPU): 3e-7 of the
# scale for timm's test_resnet at 32 px, 1.2e-6 for resnet18 + ML-Decoder at 64 px and for
# resnet101 + ML-Decoder at 224 px, i.e. 3 to 10 epsilons of float32 sums taken in another order;
# the margin (200x) leaves room for other backbones and kernels, while a real fault (another
# normalisation, dropout left on, a wrong weight) moves logits by 1e-2 of their scale or more.
TOLERANCE = 2.0**-12
TOLERANCE_TEXT = f"2^{int(math.log2(TOLERANCE))}"  # how messages write it
_EXAMPLE_BATCH = 2  # the batch torch.export traces with: not 0 or 1, which it would specialise on
_QUIET = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx")

Runner = Callable[[Tensor], Tuple[np.ndarray, np.ndarray]]  # uint8 [N, 3, S, S] -> (logits, probabilities) [N, C]


class PixelModel(nn.Module):
    """``model`` with its input pipeline's last step inside: uint8 pixels ``[N, 3, S, S]`` ->
    (logits ``[N, C]``, probabilities ``[N, C]``), float32. The pixels become the model's input
    by :func:`~mlkd_cache.data.transforms.to_float` (cast, ``/ 255``, ``- mean``, ``/ std``)."""

    def __init__(self, model: nn.Module, spec: TransformSpec) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = spec.mean, spec.std

    def forward(self, pixels: Tensor) -> Tuple[Tensor, Tensor]:
        logits = self.model(to_float(pixels, self.mean, self.std)).logits
        return logits, torch.sigmoid(logits)


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
        fmt = next((f for f, suffix in FORMATS.items() if out.suffix.lower() == suffix), "onnx")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not an export format; choose one of {', '.join(FORMATS)}")
    if out.suffix.lower() != FORMATS[fmt]:
        raise ConfigError(
            f"-o {out}: an export to {fmt} is named *{FORMATS[fmt]} (predict tells the formats apart by it); name it {out.with_suffix(FORMATS[fmt]).name}"
        )
    return fmt


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters' info and warning logs (constant folding, graph passes) held back: the
    library reports its result, and a failure, itself."""
    loggers = [logging.getLogger(name) for name in _QUIET]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _failed(card: ModelCard, fmt: str, exc: Exception) -> ModelError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    hint = "try --format pt2" if fmt == "onnx" else "try --format onnx"
    return ModelError(f"cannot export {card.arch} to {fmt} with torch {torch.__version__} ({reason}); {hint}")


def _dynamic_batch() -> Dict[str, Dict[int, Any]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}


def _onnx_bytes(
    wrapper: PixelModel, example: Tensor, opset: Optional[int], meta: Dict[str, str], card: ModelCard
) -> Tuple[bytes, int]:
    """The ONNX file of ``wrapper`` (dynamic batch) with ``meta`` in its ``metadata_props``, and its opset."""
    try:
        with _quiet_exporters():
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=_dynamic_batch(),
                opset_version=opset,
                verbose=False,
            )
        assert program is not None, "torch.onnx.export(dynamo=True) returns the ONNXProgram"
        proto = program.model_proto
    except Exception as exc:  # the exporter's errors are long reports: one line, and what to try
        raise _failed(card, "onnx", exc) from None
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if proto.ByteSize() >= 2**31:
        raise ModelError(f"{card.arch} is over ONNX's 2 GiB limit of one file; export it with --format pt2")
    used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and used != opset:  # the exporter keeps its own opset when it cannot convert the graph
        raise ModelError(
            f"torch's ONNX exporter could not give {card.arch} opset {opset} (it gave {used}); choose another --opset"
        )
    return proto.SerializeToString(), int(used)


def _pt2_bytes(wrapper: PixelModel, example: Tensor, meta: Dict[str, str], card: ModelCard) -> bytes:
    """The ``torch.export.save`` archive of ``wrapper`` (dynamic batch) with ``meta`` as its ``extra_files``."""
    buffer = io.BytesIO()
    try:
        with _quiet_exporters():
            program = torch.export.export(wrapper, (example,), dynamic_shapes=_dynamic_batch())
            torch.export.save(program, buffer, extra_files=meta)
    except Exception as exc:
        raise _failed(card, "pt2", exc) from None
    return buffer.getvalue()


def _onnx_runner(data: bytes) -> Runner:
    session = ort_session(data)

    def run(pixels: Tensor) -> Tuple[np.ndarray, np.ndarray]:
        logits, probabilities = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels.numpy()})
        return logits, probabilities

    return run


def _pt2_runner(data: bytes) -> Runner:
    module = torch.export.load(io.BytesIO(data)).module()

    @torch.no_grad()
    def run(pixels: Tensor) -> Tuple[np.ndarray, np.ndarray]:
        logits, probabilities = module(pixels)
        return logits.numpy(), probabilities.numpy()

    return run


@torch.no_grad()
def compare(model: nn.Module, card: ModelCard, run: Runner, pixels: Tensor) -> List[Dict[str, Any]]:
    """The exported model (``run``) against the PyTorch ``model`` on ``pixels`` (uint8
    ``[>= 7, 3, S, S]``) at each batch size of :data:`CHECK_BATCHES`, the PyTorch input made
    as evaluate makes it (:func:`model_input`). One record per batch size: ``max_abs_dlogit``,
    its ``tolerance`` (:data:`TOLERANCE` x ``logit_scale`` = max(1, max |z|)), ``max_abs_dprob``
    and ``label_disagreements`` at the card's thresholds (0.5 where it has none).

    The export is refused (:class:`~mlkd_cache.errors.ModelError`, one line) when max |Δ logit|
    exceeds the tolerance, when a probability differs by more than tolerance / 4 (+ 2^-20: the
    sigmoid's slope is at most 1/4, and a float32 sigmoid rounds), or when a label differs
    where the PyTorch probability is more than tolerance / 4 from its threshold."""
    thresholds, _ = decision_thresholds(card, None)  # float64 [C]
    records = []
    for n in CHECK_BATCHES:
        batch = pixels[:n]
        z_ref = model(model_input(batch, card.transform, torch.device("cpu"))).logits.float().numpy()
        z, p = run(batch)
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
) -> Dict[str, Any]:
    """Export the model of ``checkpoint`` (teacher.pt, student.pt) to ``out`` as ``fmt``
    (:data:`FORMATS`; default: from the suffix of ``out``, else onnx), ONNX at ``opset`` (None:
    the exporter's default). With ``check`` the file is run (onnxruntime, or the loaded
    ExportedProgram) against the PyTorch model by :func:`compare` on :func:`check_pixels`
    before it is written; a failed check, an ``out`` that exists and a missing package (onnx,
    onnxscript, onnxruntime: the ``deploy`` extra) are one line each, and nothing is written.
    The file is written atomically (a temporary file in its folder, renamed).

    Returns ``{"path", "format", "bytes", "opset", "export_seconds", "check_seconds", "input",
    "checked", "check_images", "check_thresholds", "checks": [compare's records], "source", "sha256"}``."""
    out = Path(out)
    fmt = format_of(out, fmt)
    if out.exists():
        raise ConfigError(f"-o {out} exists; delete it or choose another file")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript") + (("onnxruntime",) if check else ()):
            require(module, "export to ONNX")
    elif opset is not None:
        raise ConfigError("--opset is the ONNX opset; leave it out with --format pt2")
    loaded = load_model(checkpoint, "cpu")
    card = loaded.card
    meta = export_metadata(card, checkpoint, loaded.sha256)
    wrapper = PixelModel(loaded.model, card.transform).eval()
    example = torch.zeros((_EXAMPLE_BATCH, 3, card.img_size, card.img_size), dtype=torch.uint8)
    start = time.perf_counter()
    used_opset: Optional[int] = None
    if fmt == "onnx":
        data, used_opset = _onnx_bytes(wrapper, example, opset, meta, card)
    else:
        data = _pt2_bytes(wrapper, example, meta, card)
    export_seconds = time.perf_counter() - start
    checks: List[Dict[str, Any]] = []
    images, check_seconds = "", 0.0
    if check:
        start = time.perf_counter()
        pixels, images = check_pixels(card)
        checks = compare(loaded.model, card, (_onnx_runner if fmt == "onnx" else _pt2_runner)(data), pixels)
        check_seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
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
        "check_thresholds": "the card's per-class thresholds" if card.thresholds is not None else f"{DEFAULT_THRESHOLD:g}",
        "checks": checks,
        "source": str(checkpoint),
        "sha256": loaded.sha256,
    }
