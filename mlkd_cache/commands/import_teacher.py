"""``import-teacher``: a teacher trained by another codebase, as this tool's ``teacher.pt``.

Format ``l2d``: the checkpoints L2D's ``main.py`` saves (and MPSCD's fork of it),
``pretrained_models/model_teacher_<model_t>_<dataset>_<img_size>.pth``: the ``state_dict()`` of an
``nn.DataParallel`` (every key under ``module.``) of a torchvision-style ResNet whose classifier
``fc`` is an ML-Decoder (keys under ``fc.decoder.``). Facts read from L2D's public code
(github.com/penghui-yang/L2D, ``models/resnet.py``, ``models/tools.py``, ``models/ml_decoder.py``):

* the backbone's keys are torchvision's ResNet keys, which are timm's for the same models
  (``conv1``, ``bn1``, ``layerK.I.{conv,bn}J``, ``layerK.0.downsample.{0,1}``); its features are
  the spatial mean of ``layer4``, its decoder memory ``layer4`` flattened, as here;
* the ML-Decoder is one decoder layer without self-attention (``norm1``, ``multihead_attn``,
  ``linear1``, ``linear2``, ``norm2``, ``norm3``), a ``[C, E]`` non-trained query table
  (``query_embed``), the token projection ``embed_standart`` and a group FC of one class per
  group (``duplicate_pooling`` ``[C, E, 1]``, ``duplicate_pooling_bias`` ``[C]``), width 768, 8
  heads, feed-forward 2048: :class:`~mlkd_cache.models.ml_decoder.MLDecoderHead` key for key
  (:data:`L2D_HEAD_KEYS`).

L2D's RepVGG, Swin and MobileNetV2 are its own implementations, whose layers and keys are not
timm's; they are refused by name (:data:`L2D_NOT_EXACT`).

Format ``factory``: CHECKPOINT is a factory ``package.module:function`` returning ``(model,
class_names)`` (:mod:`mlkd_cache.models.factory`). The teacher.pt records the factory and the
model's weights as they are now; loading it calls the factory again and loads those weights, so
the file pins the teacher a cache is dumped from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from ..config import IMPORT_FORMATS, Config
from ..data import dataset_from_config
from ..data.planning import planned_train_split
from ..data.transforms import TransformSpec
from ..distributed import init_distributed
from ..errors import CheckpointError, ConfigError, MlkdError
from ..fileio import file_sha256
from ..models import build_model
from ..models.card import ModelCard
from ..models.factory import build_factory_teacher, is_factory_spec, weights_sha256
from ..runtime.checkpoint import save_model
from ..runtime.deploy import exported_file_error
from ..runtime.scoring import load_model_on_ranks, score

__all__ = ["L2D_EXACT", "L2D_NOT_EXACT", "L2D_HEAD_KEYS", "l2d_state_dict", "import_factory", "run"]

# model_t seed names whose L2D checkpoints map key for key onto a timm backbone
L2D_EXACT = ("resnet18", "resnet34", "resnet50", "resnet101", "wrn50", "wrn101")
L2D_NOT_EXACT = {
    "repvgg_a0": "L2D's RepVGG is its own implementation (other block and key layout than timm's repvgg)",
    "repvgg_a2": "L2D's RepVGG is its own implementation (other block and key layout than timm's repvgg)",
    "swin_t": "L2D's Swin is the original Microsoft code (other keys, relative-position tables) than timm's",
    "swin_s": "L2D's Swin is the original Microsoft code (other keys, relative-position tables) than timm's",
    "mobilenet_v2": "L2D's MobileNetV2 is its own implementation (other keys) than timm's",
}

# L2D's ML-Decoder key (under module.fc.decoder.) -> this tool's head key (under head.)
L2D_HEAD_KEYS = {
    "embed_standart.weight": "embed.weight",
    "embed_standart.bias": "embed.bias",
    "query_embed.weight": "queries",
    "layers.0.norm1.weight": "norm1.weight",
    "layers.0.norm1.bias": "norm1.bias",
    "layers.0.multihead_attn.in_proj_weight": "cross_attn.in_proj_weight",
    "layers.0.multihead_attn.in_proj_bias": "cross_attn.in_proj_bias",
    "layers.0.multihead_attn.out_proj.weight": "cross_attn.out_proj.weight",
    "layers.0.multihead_attn.out_proj.bias": "cross_attn.out_proj.bias",
    "layers.0.linear1.weight": "ffn.0.weight",
    "layers.0.linear1.bias": "ffn.0.bias",
    "layers.0.linear2.weight": "ffn.3.weight",
    "layers.0.linear2.bias": "ffn.3.bias",
    "layers.0.norm2.weight": "norm2.weight",
    "layers.0.norm2.bias": "norm2.bias",
    "layers.0.norm3.weight": "norm3.weight",
    "layers.0.norm3.bias": "norm3.bias",
    "duplicate_pooling": "weight",  # [C, E, 1] -> [C, E]
    "duplicate_pooling_bias": "bias",
}
_DECODER = "fc.decoder."


def l2d_state_dict(source: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An L2D teacher ``state_dict`` (``module.`` prefixed or not) as a
    :class:`~mlkd_cache.models.model.MultiLabelModel` ``state_dict``: ``head.`` keys by
    :data:`L2D_HEAD_KEYS`, every other key under ``backbone.`` unchanged. Raises
    :class:`CheckpointError` for a key of L2D's decoder this mapping does not know."""
    out: Dict[str, Tensor] = {}
    for key, value in source.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name.startswith(_DECODER):
            inner = name[len(_DECODER) :]
            if inner not in L2D_HEAD_KEYS:
                raise CheckpointError(f"unknown ML-Decoder key {key!r} in the checkpoint: not L2D's decoder layout")
            if inner == "duplicate_pooling":
                if value.dim() != 3 or value.shape[-1] != 1:
                    raise CheckpointError(
                        f"{key} has shape {tuple(value.shape)}, an L2D teacher's group FC is [C, E, 1] (one class per group)"
                    )
                value = value[..., 0]
            out["head." + L2D_HEAD_KEYS[inner]] = value
        else:
            out["backbone." + name] = value
    return out


def _read(path: Path) -> Dict[str, Tensor]:
    """The tensors of ``path``: a state dict, or one wrapped under ``state_dict``/``model``/``module``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}; give the .pth file L2D's main.py saved") from None
    except Exception as exc:  # an export, a pickled module or other objects: weights_only refuses them
        exported = exported_file_error(path)
        if exported is not None:
            raise exported from None
        raise CheckpointError(
            f"cannot read {path} as tensors ({type(exc).__name__}): a pickled nn.Module? load it where it was made and "
            f"torch.save(model.state_dict(), ...), then import that file"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a state dict of tensors (it holds {keys}); give the .pth file L2D's main.py saved")
    return obj


def _class_names(cfg: Config) -> List[str]:
    """The config's classes: from its train split when the data is here (a data root that fails
    is an error), else from the dataset's published class list."""
    try:
        return list(dataset_from_config(cfg, "train").class_names)
    except MlkdError:
        planned = planned_train_split(cfg.dataset, **cfg.dataset_para) if not cfg.data_root else None
        if planned is None:
            raise
        return list(planned.class_names)


def _describe_difference(ours: Dict[str, Tensor], theirs: Dict[str, Tensor], cfg: Config, path: Path) -> Optional[str]:
    """One line naming what differs between the imported weights and ``model_t``'s, or None."""
    C, E = int(ours["head.bias"].shape[0]), int(ours["head.queries"].shape[1])
    if "head.bias" in theirs and int(theirs["head.bias"].shape[0]) != C:
        return f"{path} holds a teacher of {int(theirs['head.bias'].shape[0])} classes, the {cfg.dataset} config has {C}; use the checkpoint of this dataset"
    if "head.queries" in theirs and int(theirs["head.queries"].shape[1]) != E:
        return f"{path} has ML-Decoder width {int(theirs['head.queries'].shape[1])}, the config embed_dim {E}; set embed_dim = {int(theirs['head.queries'].shape[1])}"
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    shaped = [k for k in ours if k in theirs and tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if missing or extra or shaped:
        first = (shaped or missing or extra)[0]
        what = (
            f"{first} has shape {tuple(theirs[first].shape)}, model_t expects {tuple(ours[first].shape)}"
            if shaped
            else f"{len(missing)} of model_t's weights are absent (first {first})"
            if missing
            else f"{len(extra)} weights have no place in model_t (first {first})"
        )
        return f"{path} is not an L2D {cfg.model_t} teacher: {what}; set model_t to the checkpoint's architecture"
    return None


def _finish(
    out: Path,
    model: nn.Module,
    class_names: List[str],
    cfg: Config,
    imported_from: Dict[str, Any],
    evaluate_split: Optional[str],
    result: Dict[str, Any],
) -> Dict[str, Any]:
    """Write ``out`` (the card of ``model`` as a teacher for the config's classes and input
    pipeline, and its weights), then score it on ``evaluate_split`` when given."""
    card = ModelCard.of(
        model, "teacher", class_names, TransformSpec.from_config(cfg), cfg.to_dict(), {"imported_from": imported_from}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, card, model.state_dict(), epoch=0, metrics={})
    if evaluate_split is not None:
        scored = score(load_model_on_ranks(out, init_distributed()), data_root=cfg.data_root, split=evaluate_split)
        result["split"] = evaluate_split
        result["metrics"] = scored["metrics"]
    return result


def import_factory(factory: str, cfg: Config, out: Path, evaluate_split: Optional[str] = None) -> Dict[str, Any]:
    """``out``: a teacher.pt of the factory teacher ``factory`` for the config's classes and input
    pipeline (img_size, transform), recording the factory, its outputs and its weights."""
    if not is_factory_spec(factory):
        raise ConfigError(f"--format factory takes package.module:function, got {factory!r}")
    if out.exists():
        raise ConfigError(f"-o {out} exists; remove it or choose another file")
    class_names = _class_names(cfg)
    if evaluate_split is not None:
        dataset_from_config(cfg, evaluate_split)
    teacher = build_factory_teacher(factory, cfg.img_size)
    if teacher.class_names != class_names:
        if len(teacher.class_names) != len(class_names):
            what = f"{len(teacher.class_names)} classes, the config's data {len(class_names)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(teacher.class_names, class_names)) if a != b)
            what = f"class {i} {teacher.class_names[i]!r}, the config's data {class_names[i]!r}"
        raise CheckpointError(f"teacher factory {factory} returns {what}; return the dataset's classes in its order")
    sha256 = weights_sha256(teacher)
    imported_from = {"factory": factory, "sha256": sha256, "format": "factory"}
    result = {"out": str(out), "arch": f"factory:{factory}", "classes": len(class_names), "source_sha256": sha256}
    return _finish(out, teacher, class_names, cfg, imported_from, evaluate_split, {**result, "outputs": list(teacher.outputs)})


def run(
    checkpoint: Union[str, Path], cfg: Config, out: Path, fmt: str = "l2d", evaluate_split: Optional[str] = None
) -> Dict[str, Any]:
    """Convert ``checkpoint`` (format ``fmt``) into ``out`` (a teacher.pt for ``cfg.model_t`` and
    the config's classes); with ``evaluate_split`` also score it on that split. Nothing is
    written unless every weight maps exactly. ``fmt="factory"``: ``checkpoint`` is a factory
    ``package.module:function`` (:func:`import_factory`)."""
    if fmt not in IMPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; choose one of {', '.join(IMPORT_FORMATS)}")
    if fmt == "factory":
        return import_factory(str(checkpoint), cfg, Path(out), evaluate_split)
    checkpoint, out = Path(checkpoint), Path(out)
    if checkpoint.is_dir():
        raise ConfigError(f"{checkpoint} is a folder; give the .pth file L2D's main.py saved")
    arch = cfg.model_t
    if arch in L2D_NOT_EXACT:
        raise ConfigError(
            f"model_t {arch} cannot be imported exactly: {L2D_NOT_EXACT[arch]}; import one of {', '.join(L2D_EXACT)}"
        )
    if arch not in L2D_EXACT:
        raise ConfigError(
            f"model_t {arch} is not an L2D architecture this import maps exactly; use one of {', '.join(L2D_EXACT)}"
        )
    if out.exists():
        raise ConfigError(f"-o {out} exists; remove it or choose another file")
    spec = TransformSpec.from_config(cfg)
    if tuple(spec.mean) != (0.0, 0.0, 0.0) or tuple(spec.std) != (1.0, 1.0, 1.0):
        raise ConfigError(
            f"L2D teachers see unnormalised inputs (Resize, ToTensor), the config normalises with mean {list(spec.mean)} "
            f"std {list(spec.std)}; drop transform.mean/std"
        )
    class_names = _class_names(cfg)
    if evaluate_split is not None:
        dataset_from_config(cfg, evaluate_split)  # a split that cannot be scored fails before anything is written
    source = _read(checkpoint)
    if not any(k.removeprefix("module.").startswith(_DECODER) for k in source):
        raise CheckpointError(
            f"{checkpoint} holds no ML-Decoder (no fc.decoder.* keys): not an L2D teacher; a plain classifier "
            f"cannot be imported this way"
        )
    theirs = l2d_state_dict(source)
    model = build_model(arch, len(class_names), pretrained=None, embed_dim=cfg.embed_dim, img_size=cfg.img_size)
    ours = model.state_dict()
    difference = _describe_difference(ours, theirs, cfg, checkpoint)
    if difference:
        raise CheckpointError(difference)
    model.load_state_dict(theirs, strict=True)
    sha256 = file_sha256(checkpoint)
    imported_from = {"path": str(checkpoint.resolve()), "sha256": sha256, "format": fmt}
    result: Dict[str, Any] = {"out": str(out), "arch": arch, "classes": len(class_names), "source_sha256": sha256}
    return _finish(out, model, class_names, cfg, imported_from, evaluate_split, result)
