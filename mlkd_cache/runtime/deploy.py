"""A trained model deployed: its export (the exporters), every model file run behind one
interface (the runners), and the decision thresholds, as timm's ``utils/onnx.py`` holds its
export and its ONNX forward.

What an export holds, defined here once (:mod:`mlkd_cache.commands.export` checks and writes it,
``predict`` runs it):

* one input, ``pixels``: uint8 ``[N, 3, S, S]``, RGB, NCHW, values 0-255, the image already
  resized to ``S = img_size`` square as :func:`~mlkd_cache.data.views.eval_inputs` gives it; the
  normalisation (``x / 255``, ``- mean``, ``/ std``) is inside the graph (:class:`PixelModel`);
* two outputs, ``logits`` float32 ``[N, C]`` and ``probabilities`` float32 ``[N, C]`` (their
  sigmoid);
* metadata (ONNX ``metadata_props``; a ``.pt2`` file's ``extra_files``), every value a string:
  :data:`KEY_CARD` is the card's :meth:`~mlkd_cache.models.card.ModelCard.to_dict` as JSON (what
  :func:`card_from_metadata` rebuilds), the other keys say the same facts for a human reader or a
  deploy script without mlkd-cache (:func:`export_metadata` lists them).

The model files (:data:`MODEL_FORMATS`, the one table of them): a checkpoint (``.pt``, run by
PyTorch on any device: :class:`TorchPredictor`), an ONNX export (``.onnx``, onnxruntime on the
CPU: :class:`OnnxPredictor`) and a torch.export program (``.pt2``, PyTorch on the CPU:
:class:`Pt2Predictor`). Each is a :class:`Predictor`: its ``card``, and ``run(pixels)`` ->
``(logits, probabilities)``. :func:`open_predictor` opens any of them, telling them apart by
their content (:func:`export_kind`), whatever their name.
"""

from __future__ import annotations

import abc
import contextlib
import io
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Tuple, Type, Union

import numpy as np
import torch
from torch import Tensor, nn

from .._version import __version__
from ..config import EXPORT_FORMATS, Config
from ..data.transforms import TransformSpec, model_input, to_float
from ..device import amp_enabled, as_device, autocast_for, pick_device
from ..errors import CheckpointError, ConfigError, DataError, MlkdError, ModelError, reason_of, require_module
from ..fileio import atomic_write_bytes
from ..models.card import ModelCard
from ..thresholds import UNTUNED
from .checkpoint import CHECKPOINT_SUFFIX, load_model

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "METADATA_KEYS",
    "MODEL_FORMATS",
    "ModelFormat",
    "export_metadata",
    "card_from_metadata",
    "PixelModel",
    "export_bytes",
    "export_kind",
    "exported_file_error",
    "ort_session",
    "Predictor",
    "TorchPredictor",
    "OnnxPredictor",
    "Pt2Predictor",
    "load_onnx",
    "load_pt2",
    "load_export",
    "open_predictor",
    "decision_thresholds",
    "check_output",
    "write_output",
]

INPUT_NAME = "pixels"  # uint8 [N, 3, S, S]
OUTPUT_NAMES = ("logits", "probabilities")  # float32 [N, C] each
EXPORT_FORMAT = "mlkd-cache-export"  # the value of KEY_FORMAT: what marks a file as an export of mlkd-cache
EXPORT_VERSION = 1  # raised when what an export holds changes; a reader refuses a newer one

# The metadata keys of an export, and what each value holds (every value is a string).
KEY_FORMAT = "mlkd_cache.format"
KEY_CARD = "mlkd_cache.card"
KEY_SOURCE = "mlkd_cache.source"
METADATA_KEYS: Dict[str, str] = {
    KEY_FORMAT: f"'{EXPORT_FORMAT}'",
    "mlkd_cache.format_version": f"the export format version ({EXPORT_VERSION})",
    KEY_CARD: "the model card as JSON (ModelCard.to_dict; ModelCard.from_dict rebuilds it)",
    "mlkd_cache.class_names": "JSON list of the C class names, in the order of the outputs",
    "mlkd_cache.thresholds": f"JSON: the card's per-class thresholds ({{'values': [C], ...}}) or null (use {UNTUNED:g})",
    "mlkd_cache.img_size": "S, the input side in pixels",
    "mlkd_cache.mean": "JSON [3]: the per-channel mean the graph subtracts from pixels / 255",
    "mlkd_cache.std": "JSON [3]: the per-channel std the graph divides by",
    "mlkd_cache.interpolation": "Pillow's resize filter (bilinear, bicubic, nearest)",
    "mlkd_cache.decode": "full, or reduced (JPEGs decoded at 1/2-1/8 scale first, sides >= img_size)",
    "mlkd_cache.resize": "how an image becomes the input, in words",
    "mlkd_cache.input": "the input tensor, in words",
    "mlkd_cache.outputs": "the output tensors, in words",
    "mlkd_cache.version": "the mlkd-cache version that exported it",
    KEY_SOURCE: "the checkpoint it was exported from (absolute path)",
    "mlkd_cache.source_sha256": "that checkpoint's sha256 (LoadedModel.sha256)",
}

# -- metadata -----------------------------------------------------------------------------------


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
        KEY_SOURCE: os.path.abspath(str(source)),
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


def card_from_metadata(meta: Dict[str, str], where: str) -> ModelCard:
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


# -- the exporters -------------------------------------------------------------------------------

_EXAMPLE_BATCH = 2  # the batch torch.export traces with: not 0 or 1, which it would specialise on
_QUIET = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx")


class PixelModel(nn.Module):
    """``model`` with its input pipeline's last step inside: uint8 pixels ``[N, 3, S, S]`` ->
    (logits ``[N, C]``, probabilities ``[N, C]``), float32. The pixels become the model's input
    by :func:`~mlkd_cache.data.transforms.to_float` (cast, ``/ 255``, ``- mean``, ``/ std``), the
    float32 operations training used (so an export's floats are the ones training saw)."""

    def __init__(self, model: nn.Module, spec: TransformSpec) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = spec.mean, spec.std

    def forward(self, pixels: Tensor) -> Tuple[Tensor, Tensor]:
        logits = self.model(to_float(pixels, self.mean, self.std)).logits
        return logits, torch.sigmoid(logits)


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
    other = next(f for f in MODEL_FORMATS if f != fmt)
    reason = f"{type(exc).__name__}: {reason_of(exc, 200)}"
    return ModelError(f"cannot export {card.arch} to {fmt} with torch {torch.__version__} ({reason}); try --format {other}")


def _dynamic_batch() -> Dict[str, Dict[int, Any]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}


def _onnx_bytes(
    wrapper: PixelModel, example: Tensor, meta: Dict[str, str], opset: Optional[int], card: ModelCard
) -> Tuple[bytes, int]:
    """``torch.onnx.export(..., dynamo=True)`` of ``wrapper`` (dynamic batch) with ``meta`` in its
    ``metadata_props``, and the opset it has. The legacy TorchScript exporter cannot export the
    ML-Decoder's multi-head attention and bakes batch sizes into reshapes: no fall-back to it."""
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
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if proto.ByteSize() >= 2**31:
        raise ModelError(f"{card.arch} is over ONNX's 2 GiB limit of one file; export it with --format pt2")
    return proto.SerializeToString(), int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def _pt2_bytes(wrapper: PixelModel, example: Tensor, meta: Dict[str, str]) -> bytes:
    """``torch.export`` + ``torch.export.save`` of ``wrapper`` (dynamic batch), ``meta`` as its
    ``extra_files`` (the PyTorch-native format; TorchScript is deprecated)."""
    buffer = io.BytesIO()
    program = torch.export.export(wrapper, (example,), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, buffer, extra_files=meta)
    return buffer.getvalue()


def export_bytes(
    model: nn.Module, card: ModelCard, fmt: str, meta: Dict[str, str], opset: Optional[int] = None
) -> Tuple[bytes, Optional[int]]:
    """The file of ``model`` (eval mode, on the CPU; ``card`` describes it) in the format ``fmt``
    of :data:`MODEL_FORMATS`, its input uint8 pixels (:class:`PixelModel`) with a dynamic batch
    axis and ``meta`` (:func:`export_metadata`) as its metadata, and the ONNX opset it has (None
    for pt2). ``opset``: the ONNX opset to ask for (None: the exporter's default). An exporter's
    failure, or an opset it cannot give, is one :class:`~mlkd_cache.errors.ModelError` line."""
    if fmt not in MODEL_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not an export format; choose one of {', '.join(MODEL_FORMATS)}")
    wrapper = PixelModel(model, card.transform).eval()
    example = torch.zeros((_EXAMPLE_BATCH, 3, card.img_size, card.img_size), dtype=torch.uint8)
    try:
        with _quiet_exporters():
            if fmt == "pt2":
                return _pt2_bytes(wrapper, example, meta), None
            data, used = _onnx_bytes(wrapper, example, meta, opset, card)
    except ModelError:
        raise
    except Exception as exc:  # the exporter's errors are long reports: one line, and what to try
        raise _failed(card, fmt, exc) from None
    if opset is not None and used != opset:  # the exporter keeps its own opset when it cannot convert the graph
        raise ModelError(
            f"torch's ONNX exporter could not give {card.arch} opset {opset} (it gave {used}); choose another --opset"
        )
    return data, used


# -- telling model files apart by their content -------------------------------------------------

_MAX_FIELDS = 1 << 16  # top-level fields read before a file is taken for something else than ONNX
_ONNX_METADATA = 14  # ModelProto.metadata_props: StringStringEntryProto {key = 1, value = 2}
_ONNX_REQUIRED = {(1, 0), (7, 2)}  # ModelProto.ir_version (varint) and graph (length-delimited)


def _varint(f: BinaryIO) -> Optional[int]:
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None


def _protobuf_fields(f: BinaryIO, end: int, keep: Tuple[int, ...]) -> Optional[List[Tuple[int, int, bytes]]]:
    """The fields of the protobuf message in ``f`` up to ``end``: ``(number, wire type, payload)``,
    the payload read only for the length-delimited fields numbered in ``keep`` (else ``b""``: a
    graph is skipped, not read); None when the bytes are not a protobuf message."""
    fields: List[Tuple[int, int, bytes]] = []
    while f.tell() < end:
        tag = _varint(f)
        if tag is None or tag >> 3 == 0 or len(fields) >= _MAX_FIELDS:
            return None
        number, wire = tag >> 3, tag & 7
        payload = b""
        if wire == 0:
            if _varint(f) is None:
                return None
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, io.SEEK_CUR)
        elif wire == 2:
            size = _varint(f)
            if size is None or f.tell() + size > end:
                return None
            if number in keep:
                payload = f.read(size)
            else:
                f.seek(size, io.SEEK_CUR)
        else:
            return None
        fields.append((number, wire, payload))
    return fields if f.tell() == end else None


def _onnx_metadata(path: Path) -> Optional[Dict[str, str]]:
    """The ``metadata_props`` of the ONNX model at ``path``, read field by field without onnx
    (its graph is skipped); None when the file is no ONNX model (a protobuf ``ModelProto`` with
    an ``ir_version`` and a ``graph``)."""
    with open(path, "rb") as f:
        end = f.seek(0, io.SEEK_END)
        f.seek(0)
        fields = _protobuf_fields(f, end, keep=(_ONNX_METADATA,))
    if fields is None or not _ONNX_REQUIRED <= {(n, w) for n, w, _ in fields}:
        return None
    meta = {}
    for number, wire, payload in fields:
        if number != _ONNX_METADATA or wire != 2:
            continue
        entry = _protobuf_fields(io.BytesIO(payload), len(payload), keep=(1, 2)) or []
        strings = {n: p.decode("utf-8", "replace") for n, w, p in entry if w == 2}
        meta[strings.get(1, "")] = strings.get(2, "")
    return meta


def _pt2_metadata(path: Path) -> Optional[Dict[str, str]]:
    """The ``extra_files`` of the torch.export archive at ``path`` (a zip with an
    ``<name>/archive_format`` record, where a checkpoint has ``<name>/data.pkl``); None for any
    other file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = [
                name[: -len("/archive_format")] for name in names if name.count("/") == 1 and name.endswith("/archive_format")
            ]
            if not roots:
                return None
            prefix = f"{roots[0]}/extra/"
            return {
                name[len(prefix) :]: archive.read(name).decode("utf-8", "replace")
                for name in names
                if name.startswith(prefix) and name[len(prefix) :].startswith("mlkd_cache.")
            }
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


class ExportKind(NamedTuple):
    """What :func:`export_kind` found in a file."""

    format: str  # a key of MODEL_FORMATS
    metadata: Dict[str, str]  # its mlkd_cache.* metadata (empty for an export of another tool)


def export_kind(path: Union[str, Path]) -> Optional[ExportKind]:
    """The export format of the file at ``path`` by its content, whatever its name: an ONNX model
    or a torch.export archive, with its ``mlkd_cache.*`` metadata (read without onnx); None for
    any other file (a checkpoint, a file of another kind, one that cannot be read)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            meta = _pt2_metadata(path)
            return None if meta is None else ExportKind("pt2", meta)
        meta = _onnx_metadata(path)
    except OSError:
        return None
    return None if meta is None else ExportKind("onnx", meta)


def exported_file_error(path: Union[str, Path]) -> Optional[CheckpointError]:
    """The one line for an export given where a checkpoint is needed (evaluate, tune-thresholds,
    export, --teacher, load_model): what the file is, that a checkpoint is needed, and which
    one it was exported from where its metadata says; None when ``path`` is no export."""
    kind = export_kind(path)
    if kind is None:
        return None
    by = " written by mlkd-cache export" if kind.metadata.get(KEY_FORMAT) == EXPORT_FORMAT else ""
    source = kind.metadata.get(KEY_SOURCE)
    give = f"give the one it was exported from, {source}" if source else "give a teacher.pt or student.pt"
    return CheckpointError(
        f"{path} is {MODEL_FORMATS[kind.format].what}{by}, not a checkpoint; this needs a checkpoint ({CHECKPOINT_SUFFIX}): {give}"
    )


# -- the runners ---------------------------------------------------------------------------------

Pixels = Union[Tensor, np.ndarray]  # uint8 [N, 3, S, S]


class Predictor(abc.ABC):
    """A model file ready to run, of any format: ``card`` (classes, input spec, thresholds), ``path``,
    ``device``; :meth:`run` takes uint8 pixels ``[N, 3, S, S]`` (a tensor or an array, as
    :func:`~mlkd_cache.data.views.eval_inputs` gives them) and gives float32 ``(logits,
    probabilities)``, ``[N, C]`` each; ``predictor(pixels)`` gives the logits."""

    format = ""  # a key of MODEL_FORMATS, or "checkpoint"

    def __init__(self, card: ModelCard, path: Path, device: torch.device) -> None:
        self.card, self.path, self.device = card, Path(path), device

    def pixels(self, pixels: Pixels) -> Tensor:
        """``pixels`` as a contiguous uint8 tensor ``[N, 3, S, S]``; one DataError line otherwise."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
        s = self.card.img_size
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise DataError(
                f"{self.path} takes uint8 pixels [N, 3, {s}, {s}] (RGB, resized to {s}x{s}), got "
                f"{str(x.dtype).replace('torch.', '')} {list(x.shape)}; make them with eval_inputs(dataset, model.card.transform)"
            )
        return x.contiguous()

    @abc.abstractmethod
    def run(self, pixels: Pixels) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 pixels ``[N, 3, S, S]`` -> (logits, probabilities), float32 ``[N, C]`` each."""

    def logits(self, pixels: Pixels) -> np.ndarray:
        """uint8 pixels ``[N, 3, S, S]`` -> float32 logits ``[N, C]``."""
        return self.run(pixels)[0]

    def __call__(self, pixels: Pixels) -> np.ndarray:
        return self.logits(pixels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, {self.card.arch}, {self.card.num_classes} classes, {self.card.img_size} px)"


class TorchPredictor(Predictor):
    """A checkpoint's model on ``device`` (AMP on CUDA when its config asks for it)."""

    format = "checkpoint"

    def __init__(self, path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> None:
        device = as_device(device)
        self.loaded = load_model(path, device)
        super().__init__(self.loaded.card, Path(path), device)
        self.amp = amp_enabled(self.card.config_with().amp, device)

    @torch.no_grad()
    def run(self, pixels: Pixels) -> Tuple[np.ndarray, np.ndarray]:
        with autocast_for(self.device, self.amp):
            out = self.loaded.model(model_input(self.pixels(pixels), self.card.transform, self.device))
        logits = out.logits.float()
        return logits.cpu().numpy(), torch.sigmoid(logits).cpu().numpy()


def ort_session(model: Union[str, Path, bytes]) -> Any:
    """An onnxruntime ``InferenceSession`` of ``model`` (a path, or the bytes of an ONNX file) on
    the CPU, with deterministic kernels where onnxruntime offers a choice and only its errors logged."""
    ort = require_module("onnxruntime", "running an ONNX model")
    options = ort.SessionOptions()
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only: no warnings about initializers on stderr
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


class OnnxPredictor(Predictor):
    """An ONNX export run by onnxruntime on the CPU (:func:`ort_session`)."""

    format = "onnx"

    def __init__(self, session: Any, card: ModelCard, path: Path) -> None:
        super().__init__(card, path, torch.device("cpu"))
        self.session = session  # onnxruntime.InferenceSession

    @classmethod
    def load(cls, source: Union[Path, bytes], where: str) -> "OnnxPredictor":
        """The ONNX export in ``source`` (a file, or its bytes) named ``where`` in messages."""
        require_module("onnxruntime", "running an ONNX model")
        try:
            session = ort_session(source)
        except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, ...: one line, no traceback
            raise CheckpointError(
                f"cannot read {where} as an ONNX model ({reason_of(exc)}); give a file written by mlkd-cache export"
            ) from None
        card = card_from_metadata(dict(session.get_modelmeta().custom_metadata_map), where)
        inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
        if inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
            raise CheckpointError(
                f"{where} does not take '{INPUT_NAME}' and give {', '.join(OUTPUT_NAMES)}; export the checkpoint again"
            )
        return cls(session, card, Path(where))

    @property
    def metadata(self) -> Dict[str, str]:
        """The file's metadata (keys: :data:`METADATA_KEYS`)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, pixels: Pixels) -> Tuple[np.ndarray, np.ndarray]:
        logits, probabilities = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: self.pixels(pixels).numpy()})
        return logits, probabilities

    def logits(self, pixels: Pixels) -> np.ndarray:
        (logits,) = self.session.run([OUTPUT_NAMES[0]], {INPUT_NAME: self.pixels(pixels).numpy()})
        return logits


class Pt2Predictor(Predictor):
    """A torch.export program (``torch.export.load``) run by PyTorch on the CPU, where it was
    exported."""

    format = "pt2"

    def __init__(self, program: Any, card: ModelCard, path: Path, metadata: Dict[str, str]) -> None:
        super().__init__(card, path, torch.device("cpu"))
        self.program = program  # torch.export.ExportedProgram
        self.module = program.module()
        self.metadata = metadata  # the file's extra_files (keys: METADATA_KEYS)

    @classmethod
    def load(cls, source: Union[Path, bytes], where: str) -> "Pt2Predictor":
        """The torch.export archive in ``source`` (a file, or its bytes) named ``where`` in messages."""
        extra = dict.fromkeys(METADATA_KEYS, "")  # torch.export.load fills in the extra files the archive has
        try:
            with _quiet_exporters():
                program = torch.export.load(io.BytesIO(source) if isinstance(source, bytes) else source, extra_files=extra)
        except Exception as exc:  # a truncated or foreign archive: one line, no traceback
            raise CheckpointError(
                f"cannot read {where} as a torch.export program ({reason_of(exc)}); give a file written by mlkd-cache export"
            ) from None
        metadata = {key: value for key, value in extra.items() if value}
        card = card_from_metadata(metadata, where)
        signature = program.graph_signature
        if len(signature.user_inputs) != 1 or len(signature.user_outputs) != len(OUTPUT_NAMES):
            raise CheckpointError(
                f"{where} does not take '{INPUT_NAME}' and give {', '.join(OUTPUT_NAMES)}; export the checkpoint again"
            )
        return cls(program, card, Path(where), metadata)

    @torch.no_grad()
    def run(self, pixels: Pixels) -> Tuple[np.ndarray, np.ndarray]:
        logits, probabilities = self.module(self.pixels(pixels))
        return logits.numpy(), probabilities.numpy()


@dataclass(frozen=True)
class ModelFormat:
    """A format of exported model file: its suffix (``predict`` reads a file by its content, the
    suffix says what ``export`` writes), what it is in words, what runs it, and its runner."""

    suffix: str
    what: str
    runs_with: str
    predictor: Type[Union[OnnxPredictor, Pt2Predictor]]


# The one table of exported model files (a checkpoint is CHECKPOINT_SUFFIX, TorchPredictor).
MODEL_FORMATS: Dict[str, ModelFormat] = {
    "onnx": ModelFormat(".onnx", "an ONNX model", EXPORT_FORMATS["onnx"], OnnxPredictor),
    "pt2": ModelFormat(".pt2", "a torch.export (.pt2) program", EXPORT_FORMATS["pt2"], Pt2Predictor),
}


def load_onnx(path: Union[str, Path]) -> OnnxPredictor:
    """The ONNX file at ``path`` written by ``mlkd-cache export``, ready to run; a file that is
    missing, not ONNX or not such an export is one :class:`~mlkd_cache.errors.CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    return OnnxPredictor.load(path, str(path))


def load_pt2(path: Union[str, Path]) -> Pt2Predictor:
    """The torch.export file at ``path`` written by ``mlkd-cache export``, ready to run; a file
    that is missing, not such an archive or not such an export is one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"torch.export program not found: {path}")
    return Pt2Predictor.load(path, str(path))


def _format_of_file(path: Path) -> Optional[str]:
    """The export format of ``path``: by its content, else by its suffix (so a damaged export is
    named as one), else None (a checkpoint)."""
    kind = export_kind(path)
    if kind is not None:
        return kind.format
    return next((fmt for fmt, spec in MODEL_FORMATS.items() if path.suffix.lower() == spec.suffix), None)


def load_export(path: Union[str, Path]) -> Union[OnnxPredictor, Pt2Predictor]:
    """The export at ``path`` (ONNX or torch.export, told apart by content), ready to run."""
    path = Path(path)
    fmt = _format_of_file(path) if path.is_file() else None
    if fmt is None:
        raise CheckpointError(f"{path} is not an export of mlkd-cache ({' or '.join(s.suffix for s in MODEL_FORMATS.values())})")
    return load_onnx(path) if fmt == "onnx" else load_pt2(path)


def open_predictor(model: Union[str, Path], device: Union[str, torch.device, None] = None) -> Predictor:
    """The model file ``model`` names, ready to run: an export (ONNX, run by onnxruntime; a
    torch.export program, by PyTorch; both on the CPU) or a checkpoint (teacher.pt, student.pt)
    on ``device`` (default: CUDA when there is one). Exports are told apart by their content."""
    path = Path(model)
    if not path.is_file():
        suffixes = " or ".join(spec.suffix for spec in MODEL_FORMATS.values())
        raise ConfigError(f"model {path} not found; give a student.pt, a teacher.pt or an exported {suffixes} file")
    fmt = _format_of_file(path)
    if fmt is not None:
        return MODEL_FORMATS[fmt].predictor.load(path, str(path))
    return TorchPredictor(path, pick_device() if device is None else as_device(device))


# -- decisions and the files written ----------------------------------------------------------


def decision_thresholds(card: ModelCard, threshold: Optional[float]) -> Tuple[np.ndarray, str]:
    """float64 ``[C]`` thresholds on probabilities and where they come from: ``threshold`` for
    every class when given, else the card's rule (:meth:`ModelCard.decision_rule`: its stored
    per-class thresholds, else :data:`~mlkd_cache.thresholds.UNTUNED`)."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ConfigError(f"--threshold must be a probability in [0, 1], got {threshold}")
        return np.full(card.num_classes, float(threshold)), f"one threshold {threshold:g} for every class (--threshold)"
    values, source = card.decision_rule()
    return np.asarray(values, dtype=np.float64), source


def check_output(out: Union[str, Path], overwrite: bool = False) -> Path:
    """The rule of ``-o`` for ``predict`` and ``export``, checked before any work: ``out`` must
    not be a folder, nor an existing file unless ``overwrite``; a folder above it that does not
    exist yet is made when it is written (:func:`write_output`), so one that is a file is refused."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"-o {out} is a folder; give the file to write")
    if out.exists() and not overwrite:
        raise ConfigError(f"-o {out} exists; delete it, choose another file or pass --overwrite")
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ConfigError(f"-o {out}: {above} is a file, not a folder; choose another file")
    return out


def make_output_folder(out: Path) -> None:
    """The folders above ``out`` that do not exist yet, made; one line when they cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"-o {out}: cannot make folder {out.parent} ({exc.strerror or exc}); choose another file") from None


def write_output(out: Path, data: bytes) -> None:
    """Write ``data`` to ``out`` atomically (a temporary file in its folder, renamed), making the
    folders above it that do not exist yet."""
    make_output_folder(out)
    atomic_write_bytes(out, data)
