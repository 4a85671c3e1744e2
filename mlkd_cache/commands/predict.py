"""``predict``: labels for new images from a trained model, a checkpoint or its export (ONNX or
torch.export: :func:`~mlkd_cache.runtime.deploy.open_predictor` tells them apart by content).

The model's card says how it sees an image (``card.transform``: the eval resize, img_size and
normalisation) and which decision thresholds it was tuned with (``card.thresholds``); the images
go through the one eval input pipeline (:func:`~mlkd_cache.data.views.eval_inputs` of
:class:`~mlkd_cache.data.image_files.ImageFiles`), so a file is seen exactly as ``evaluate`` sees
the same file in a split. A class is predicted when its probability (the sigmoid of its logit)
reaches its threshold: ``--threshold`` for every class when given, else the per-class thresholds
stored in the model, else :data:`~mlkd_cache.thresholds.UNTUNED`; ``top_k`` then keeps the ``k``
most probable of those.

A file that cannot be read as an image (truncated, not an image at all) is named in its row and in
the summary, and every other file is predicted; rows keep the order of the inputs. The output
file follows the ``-o`` rule ``export`` shares (:func:`~mlkd_cache.runtime.deploy.check_output`):
an existing file is refused unless ``overwrite``, a folder above it that does not exist is made.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import PREDICTION_FORMATS
from ..data.image_files import ImageFiles, collect_images
from ..data.views import eval_inputs
from ..distributed import DistInfo, bar_disabled
from ..errors import ConfigError, DataError, one_line, require_module
from ..metrics import sigmoid
from ..runtime.deploy import Predictor, check_output, decision_thresholds, open_predictor, write_output
from ..thresholds import predictions_at

__all__ = ["OUTPUT_FORMATS", "Predictions", "predict", "write_predictions", "run"]

# the suffix of the file predictions are written to -> its format (csv otherwise); the formats of
# model files are another table (runtime.deploy.MODEL_FORMATS)
OUTPUT_FORMATS = {f".{fmt}": fmt for fmt in PREDICTION_FORMATS}
PROBABILITY_PREFIX = "p:"  # csv / parquet column of a class's probability: p:<class name>


@dataclass
class Predictions:
    """Labels and probabilities of ``N`` images for ``C`` classes."""

    paths: List[str]  # the images, in the order of the inputs
    class_names: List[str]  # the C classes, in the order of the columns
    probabilities: np.ndarray  # float64 [N, C]: sigmoid of the logits; NaN in the row of an unreadable file
    labels: np.ndarray  # bool [N, C]: predicted classes (False in the row of an unreadable file)
    errors: List[Optional[str]]  # why a file could not be read, None for a predicted one
    thresholds: np.ndarray  # float64 [C]: the decision thresholds applied
    threshold_source: str  # where they came from, in words
    model: str  # the model file

    @property
    def label_sets(self) -> List[List[str]]:
        """Each image's predicted class names, in class order."""
        names = np.asarray(self.class_names, dtype=object)
        return [list(names[row]) for row in self.labels]

    @property
    def unreadable(self) -> List[Tuple[str, str]]:
        """``(path, reason)`` of every file that could not be read."""
        return [(p, e) for p, e in zip(self.paths, self.errors) if e is not None]


class _Readable(Dataset):
    """``(index, uint8 pixels [3, S, S], reason)`` of each file of ``views``: zeros and the reason
    (one line) for a file that cannot be read, an empty reason otherwise."""

    def __init__(self, views: Dataset, size: int) -> None:
        self.views, self.size = views, size

    def __len__(self) -> int:
        return len(self.views)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tuple[int, torch.Tensor, str]:
        try:
            return index, self.views[index].image, ""
        except DataError as exc:
            return index, torch.zeros((3, self.size, self.size), dtype=torch.uint8), one_line(exc)


def predict(
    model: Union[str, Path, Predictor],
    inputs: Sequence[Union[str, Path]],
    threshold: Optional[float] = None,
    top_k: Optional[int] = None,
    batch_size: int = 32,
    workers: int = 0,
    device: Union[str, torch.device, None] = None,
    progress: bool = False,
) -> Predictions:
    """Predict the images ``inputs`` name (files, folders, lists of paths:
    :func:`~mlkd_cache.data.image_files.collect_images`) with ``model`` (a checkpoint, an ONNX or
    torch.export file, or what :func:`open_predictor` opened), ``batch_size`` images a batch read by
    ``workers`` DataLoader processes. ``threshold``: one decision threshold for every class
    instead of the model's; ``top_k``: keep at most the ``k`` most probable predicted classes."""
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    predictor = model if isinstance(model, Predictor) else open_predictor(model, device)
    card = predictor.card
    thresholds, source = decision_thresholds(card, threshold)
    paths = collect_images(inputs)
    readable = _Readable(eval_inputs(ImageFiles(paths), card.transform), card.img_size)
    loader = DataLoader(  # a generator of its own: a caller's global RNG is not drawn from
        readable,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=predictor.device.type == "cuda",
        generator=torch.Generator(),
    )
    logits = np.full((len(paths), card.num_classes), np.nan, dtype=np.float32)
    errors: List[Optional[str]] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc="predict", unit="image", disable=bar_disabled(progress, DistInfo()), dynamic_ncols=True)
    for index, pixels, reasons in loader:
        ok = np.asarray([not r for r in reasons], dtype=bool)
        rows = index.numpy()
        if ok.any():
            logits[rows[ok]] = predictor.logits(pixels[torch.from_numpy(ok)])
        for row, reason in zip(rows[~ok], (r for r in reasons if r)):
            errors[int(row)] = reason
        bar.update(len(rows))
    bar.close()
    probabilities = sigmoid(logits)  # float64; NaN stays NaN
    ranked = np.nan_to_num(probabilities, nan=-1.0)  # an unreadable row: below every threshold
    labels = predictions_at(ranked, thresholds)
    if top_k is not None and top_k < card.num_classes:
        order = np.argsort(-ranked, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.broadcast_to(np.arange(card.num_classes), order.shape), axis=1)
        labels &= ranks < top_k
    return Predictions(
        paths=paths,
        class_names=list(card.class_names),
        probabilities=probabilities,
        labels=labels,
        errors=errors,
        thresholds=thresholds,
        threshold_source=source,
        model=str(predictor.path),
    )


def _rows(preds: Predictions) -> List[Dict[str, Any]]:
    """One plain record per image: path, labels (class names), error, probabilities by class."""
    probs = preds.probabilities.tolist()
    return [
        {"path": path, "labels": labels, "error": error, "probabilities": dict(zip(preds.class_names, row))}
        for path, labels, error, row in zip(preds.paths, preds.label_sets, preds.errors, probs)
    ]


def _csv_bytes(preds: Predictions) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "labels", "error", *(PROBABILITY_PREFIX + c for c in preds.class_names)])
    for row in _rows(preds):
        probs = ["" if math.isnan(p) else repr(p) for p in row["probabilities"].values()]
        writer.writerow([row["path"], ";".join(row["labels"]), row["error"] or "", *probs])
    return out.getvalue().encode("utf-8")


def _jsonl_bytes(preds: Predictions) -> bytes:
    lines = []
    for row in _rows(preds):
        row["probabilities"] = {c: (None if math.isnan(p) else p) for c, p in row["probabilities"].items()}
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _parquet_bytes(preds: Predictions) -> bytes:
    pa = require_module("pyarrow", "parquet output", instead="or write csv or jsonl")
    pq = require_module("pyarrow.parquet", "parquet output", instead="or write csv or jsonl")
    columns: Dict[str, Any] = {
        "path": pa.array(preds.paths, pa.string()),
        "labels": pa.array(preds.label_sets, pa.list_(pa.string())),
        "error": pa.array(preds.errors, pa.string()),
    }
    for c, name in enumerate(preds.class_names):
        columns[PROBABILITY_PREFIX + name] = pa.array(preds.probabilities[:, c], pa.float64(), from_pandas=True)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


WRITERS = {"csv": _csv_bytes, "jsonl": _jsonl_bytes, "parquet": _parquet_bytes}


def output_format(out: Path, fmt: Optional[str] = None) -> str:
    """The format of ``out``: ``fmt`` when given, else from its suffix (:data:`OUTPUT_FORMATS`), csv
    otherwise. A ``fmt`` other than the one its suffix names is refused (a parquet file named .csv)."""
    named = OUTPUT_FORMATS.get(Path(out).suffix.lower())
    if fmt is not None:
        if fmt not in WRITERS:
            raise ConfigError(f"--format {fmt!r} is not an output format; choose one of {', '.join(WRITERS)}")
        if named is not None and named != fmt:
            raise ConfigError(f"--format {fmt} but -o {out} names a {named} file; drop --format or write to a .{fmt} file")
        return fmt
    return PREDICTION_FORMATS[0] if named is None else named  # csv


def write_predictions(preds: Predictions, out: Union[str, Path], fmt: Optional[str] = None, overwrite: bool = False) -> str:
    """Write ``preds`` to ``out`` atomically (one row per image: path, labels, error and every
    class's probability, columns ``p:<class>``) as csv, jsonl or parquet; returns the format.
    An existing ``out`` is refused unless ``overwrite``; missing folders above it are made."""
    out = check_output(out, overwrite)
    fmt = output_format(out, fmt)
    data = WRITERS[fmt](preds)  # a missing pyarrow fails here, before anything is written
    write_output(out, data)
    return fmt


def run(
    model: Union[str, Path],
    inputs: Sequence[Union[str, Path]],
    out: Union[str, Path],
    fmt: Optional[str] = None,
    threshold: Optional[float] = None,
    top_k: Optional[int] = None,
    batch_size: int = 32,
    workers: int = 0,
    device: Union[str, torch.device, None] = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """``mlkd-cache predict``: :func:`predict`, then :func:`write_predictions` to ``out``; the
    summary: images, predicted, unreadable ``(path, reason)``, thresholds' source, format."""
    output_format(Path(out), fmt)  # a wrong --format or -o fails before the model is read
    check_output(out, overwrite)
    preds = predict(model, inputs, threshold, top_k, batch_size, workers, device, progress)
    written = write_predictions(preds, out, fmt, overwrite)
    return {
        "model": preds.model,
        "out": str(out),
        "format": written,
        "images": len(preds.paths),
        "predicted": len(preds.paths) - len(preds.unreadable),
        "unreadable": preds.unreadable,
        "thresholds": preds.threshold_source,
        "labels_per_image": float(preds.labels.sum()) / max(len(preds.paths) - len(preds.unreadable), 1),
    }
