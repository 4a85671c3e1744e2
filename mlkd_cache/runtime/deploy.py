"""An exported model read back for inference: :func:`load_onnx` gives an :class:`OnnxModel`
(onnxruntime on the CPU) with the model card rebuilt from the file's metadata.

What an export holds, defined here once (:mod:`mlkd_cache.commands.export` writes it, this module
reads it):

* one input, ``pixels``: uint8 ``[N, 3, S, S]``, RGB, NCHW, values 0-255, the image already
  resized to ``S = img_size`` square as :func:`~mlkd_cache.data.views.eval_inputs` gives it; the
  normalisation (``x / 255``, ``- mean``, ``/ std``) is inside the graph;
* two outputs, ``logits`` float32 ``[N, C]`` and ``probabilities`` float32 ``[N, C]`` (their
  sigmoid);
* metadata (ONNX ``metadata_props``; a ``.pt2`` file's ``extra_files``), every value a string:
  :data:`KEY_CARD` is the card's :meth:`~mlkd_cache.models.card.ModelCard.to_dict` as JSON (what
  :func:`card_from_metadata` rebuilds), the other keys say the same facts for a human reader or a
  deploy script without mlkd-cache (:func:`export_metadata` lists them).
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from .._version import __version__
from ..config import Config
from ..data.transforms import model_input
from ..device import amp_enabled, as_device, autocast_for, pick_device
from ..errors import CheckpointError, ConfigError, DataError, MissingDependencyError, MlkdError
from ..models.card import ModelCard
from .checkpoint import load_model

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "METADATA_KEYS",
    "DEPLOY_EXTRA",
    "require",
    "export_metadata",
    "card_from_metadata",
    "ort_session",
    "OnnxModel",
    "load_onnx",
    "DEFAULT_THRESHOLD",
    "Predictor",
    "open_predictor",
    "decision_thresholds",
]

INPUT_NAME = "pixels"  # uint8 [N, 3, S, S]
OUTPUT_NAMES = ("logits", "probabilities")  # float32 [N, C] each
EXPORT_FORMAT = "mlkd-cache-export"  # the value of KEY_FORMAT: what marks a file as an export of mlkd-cache
EXPORT_VERSION = 1  # raised when what an export holds changes; a reader refuses a newer one
DEPLOY_EXTRA = "pip install 'mlkd-cache[deploy]'"  # what installs onnx, onnxruntime and onnxscript

# The metadata keys of an export, and what each value holds (every value is a string).
KEY_FORMAT = "mlkd_cache.format"
KEY_CARD = "mlkd_cache.card"
METADATA_KEYS: Dict[str, str] = {
    KEY_FORMAT: f"'{EXPORT_FORMAT}'",
    "mlkd_cache.format_version": f"the export format version ({EXPORT_VERSION})",
    KEY_CARD: "the model card as JSON (ModelCard.to_dict; ModelCard.from_dict rebuilds it)",
    "mlkd_cache.class_names": "JSON list of the C class names, in the order of the outputs",
    "mlkd_cache.thresholds": "JSON: the card's per-class thresholds ({'values': [C], ...}) or null (use 0.5)",
    "mlkd_cache.img_size": "S, the input side in pixels",
    "mlkd_cache.mean": "JSON [3]: the per-channel mean the graph subtracts from pixels / 255",
    "mlkd_cache.std": "JSON [3]: the per-channel std the graph divides by",
    "mlkd_cache.interpolation": "Pillow's resize filter (bilinear, bicubic, nearest)",
    "mlkd_cache.decode": "full, or reduced (JPEGs decoded at 1/2-1/8 scale first, sides >= img_size)",
    "mlkd_cache.resize": "how an image becomes the input, in words",
    "mlkd_cache.input": "the input tensor, in words",
    "mlkd_cache.outputs": "the output tensors, in words",
    "mlkd_cache.version": "the mlkd-cache version that exported it",
    "mlkd_cache.source": "the checkpoint it was exported from (absolute path)",
    "mlkd_cache.source_sha256": "that checkpoint's sha256 (LoadedModel.sha256)",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import the optional package ``module`` (an extra of ``deploy``);
    :class:`~mlkd_cache.errors.MissingDependencyError` in one line when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{purpose} needs the package {module}, which is not installed; {DEPLOY_EXTRA}") from None


def export_metadata(card: ModelCard, source: Union[str, Path], sha256: str) -> Dict[str, str]:
    """The metadata of an export of the model ``card`` describes, made from the checkpoint at
    ``source`` whose sha256 is ``sha256``: one string per key of :data:`METADATA_KEYS`."""
    spec = card.transform
    s = spec.img_size
    decode = " (JPEGs larger than twice the side decoded at reduced scale first)" if spec.decode == "reduced" else ""
    meta = {
        KEY_FORMAT: EXPORT_FORMAT,
        "mlkd_cache.format_version": str(EXPORT_VERSION),
        KEY_CARD: json.dumps(card.to_dict(), sort_keys=True),
        "mlkd_cache.class_names": json.dumps(list(card.class_names)),
        "mlkd_cache.thresholds": json.dumps(card.thresholds),
        "mlkd_cache.img_size": str(s),
        "mlkd_cache.mean": json.dumps(list(spec.mean)),
        "mlkd_cache.std": json.dumps(list(spec.std)),
        "mlkd_cache.interpolation": spec.interpolation,
        "mlkd_cache.decode": spec.decode,
        "mlkd_cache.resize": (
            f"decode{decode}, apply the EXIF orientation, convert to RGB (transparency composited on white), "
            f"resize to {s}x{s} (square: the aspect ratio is not kept) with Pillow's {spec.interpolation} filter"
        ),
        "mlkd_cache.input": (
            f"{INPUT_NAME}: uint8 [N, 3, {s}, {s}], RGB, NCHW, values 0-255; "
            f"the normalisation ((pixels / 255 - mean) / std, float32) is inside the model"
        ),
        "mlkd_cache.outputs": f"{OUTPUT_NAMES[0]}: float32 [N, {card.num_classes}]; {OUTPUT_NAMES[1]}: float32 [N, {card.num_classes}] = sigmoid(logits)",
        "mlkd_cache.version": __version__,
        "mlkd_cache.source": os.path.abspath(str(source)),
        "mlkd_cache.source_sha256": sha256,
    }
    return meta


def _restore_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` read from JSON with the tuples the schema gives (``transform.mean``, ...) back:
    :meth:`Config.to_dict` of it, when that holds exactly the same values (so a card written from
    a current checkpoint comes back equal to it); else as JSON gave it."""
    try:
        restored = Config.from_dict(config).to_dict()
    except MlkdError:
        return config
    return restored if json.loads(json.dumps(restored)) == config else config


def card_from_metadata(meta: Mapping[str, str], where: str) -> ModelCard:
    """The model card an export's metadata ``meta`` holds; :class:`~mlkd_cache.errors.CheckpointError`
    in one line naming ``where`` when it is not an export of mlkd-cache, or a newer one."""
    if meta.get(KEY_FORMAT) != EXPORT_FORMAT or KEY_CARD not in meta:
        raise CheckpointError(
            f"{where} is not an export of mlkd-cache (no '{KEY_FORMAT}' metadata); make one with mlkd-cache export"
        )
    version = meta.get("mlkd_cache.format_version", "")
    if not version.isdigit() or int(version) > EXPORT_VERSION:
        raise CheckpointError(
            f"{where} has export format {version!r}, this mlkd-cache reads up to {EXPORT_VERSION}; upgrade mlkd-cache"
        )
    try:
        entries = json.loads(meta[KEY_CARD])
    except ValueError:
        raise CheckpointError(f"{where}: its '{KEY_CARD}' metadata is not JSON; export the checkpoint again") from None
    if isinstance(entries, dict) and isinstance(entries.get("config"), dict):
        entries["config"] = _restore_config(entries["config"])
    return ModelCard.from_dict(entries, where)


def ort_session(model: Union[str, Path, bytes]) -> Any:
    """An onnxruntime ``InferenceSession`` of ``model`` (a path, or the bytes of an ONNX file) on
    the CPU, with deterministic kernels where onnxruntime offers a choice and only its errors logged."""
    ort = require("onnxruntime", "running an ONNX model")
    options = ort.SessionOptions()
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only: no warnings about initializers on stderr
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An export of mlkd-cache run by onnxruntime on the CPU: ``model(pixels)`` -> logits."""

    def __init__(self, session: Any, card: ModelCard, path: Path) -> None:
        self.session = session  # onnxruntime.InferenceSession
        self.card = card  # rebuilt from the metadata: classes, input spec, thresholds, config, provenance
        self.path = path

    @property
    def metadata(self) -> Dict[str, str]:
        """The file's metadata (keys: :data:`METADATA_KEYS`)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _pixels(self, pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels)
        s = self.card.img_size
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise DataError(
                f"{self.path} takes uint8 pixels [N, 3, {s}, {s}] (RGB, resized to {s}x{s}), got {x.dtype} {list(x.shape)}; "
                f"make them with eval_inputs(dataset, model.card.transform)"
            )
        return np.ascontiguousarray(x)

    def run(self, pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 pixels ``[N, 3, S, S]`` -> (logits, probabilities), float32 ``[N, C]`` each."""
        logits, probabilities = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: self._pixels(pixels)})
        return logits, probabilities

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels ``[N, 3, S, S]`` -> float32 logits ``[N, C]``."""
        (logits,) = self.session.run([OUTPUT_NAMES[0]], {INPUT_NAME: self._pixels(pixels)})
        return logits

    def __repr__(self) -> str:
        return f"OnnxModel({self.path}, {self.card.arch}, {self.card.num_classes} classes, {self.card.img_size} px)"


def load_onnx(path: Union[str, Path]) -> OnnxModel:
    """The ONNX file at ``path`` written by ``mlkd-cache export``, ready to run; a file that is
    missing, not ONNX or not such an export is one :class:`~mlkd_cache.errors.CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    require("onnxruntime", "running an ONNX model")
    try:
        session = ort_session(path)
    except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, ...: one line, no traceback
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"cannot read {path} as an ONNX model ({reason[:160]}); give a file written by mlkd-cache export"
        ) from None
    card = card_from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    if [i.name for i in inputs] != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
        raise CheckpointError(
            f"{path} does not take '{INPUT_NAME}' and give {', '.join(OUTPUT_NAMES)}; export the checkpoint again"
        )
    return OnnxModel(session, card, path)


DEFAULT_THRESHOLD = 0.5  # a model that stores no thresholds
ONNX_SUFFIX = ".onnx"


class TorchPredictor:
    """A checkpoint's model on ``device`` (AMP on CUDA when its config asks for it)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.loaded = load_model(path, device)
        self.card, self.path, self.device = self.loaded.card, path, device
        self.amp = amp_enabled(bool(self.card.config.get("amp", True)), device)

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> np.ndarray:
        """float32 ``[N, C]`` logits of uint8 pixels ``[N, 3, S, S]``."""
        with autocast_for(self.device, self.amp):
            out = self.loaded.model(model_input(pixels, self.card.transform, self.device))
        return out.logits.float().cpu().numpy()


class OnnxPredictor:
    """An exported ONNX file run by onnxruntime on the CPU (its graph takes uint8 pixels)."""

    def __init__(self, path: Path) -> None:
        self.onnx = load_onnx(path)
        self.card, self.path, self.device = self.onnx.card, path, torch.device("cpu")

    def logits(self, pixels: torch.Tensor) -> np.ndarray:
        return np.asarray(self.onnx(pixels.numpy()), dtype=np.float32)


Predictor = Union[TorchPredictor, OnnxPredictor]


def open_predictor(model: Union[str, Path], device: Union[str, torch.device, None] = None) -> Predictor:
    """The model ``model`` names: an ONNX export (``.onnx``, run by onnxruntime on the CPU) or a
    checkpoint (teacher.pt, student.pt) on ``device`` (default: CUDA when there is one)."""
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"model {path} not found; give a student.pt, a teacher.pt or an exported .onnx file")
    if path.suffix.lower() == ONNX_SUFFIX:
        return OnnxPredictor(path)
    return TorchPredictor(path, pick_device() if device is None else as_device(device))


def decision_thresholds(card: ModelCard, threshold: Optional[float]) -> Tuple[np.ndarray, str]:
    """float64 ``[C]`` thresholds on probabilities and where they come from: ``threshold`` for
    every class when given, else the card's per-class thresholds, else :data:`DEFAULT_THRESHOLD`."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ConfigError(f"--threshold must be a probability in [0, 1], got {threshold}")
        return np.full(card.num_classes, float(threshold)), f"one threshold {threshold:g} for every class (--threshold)"
    stored = card.thresholds
    if stored is None:
        return (
            np.full(card.num_classes, DEFAULT_THRESHOLD),
            f"{DEFAULT_THRESHOLD:g} for every class (the model stores no thresholds; mlkd-cache tune-thresholds chooses them)",
        )
    where = f"{stored.get('split', '?')} split, {stored.get('samples', '?')} images"
    return (
        np.asarray(stored["values"], dtype=np.float64),
        f"the per-class thresholds stored in the model ({stored.get('objective', '?')} on its {where})",
    )
