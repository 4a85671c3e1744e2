"""timm backbone + ML-Decoder head -> :class:`Outputs` (features, label_emb, logits).

Building a model never touches the network: the timm backbone is always created with
``pretrained=False`` and, when asked, weights are read from a local file given by path
(``torch.load(weights_only=True)`` or safetensors) and loaded with explicit key checks.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import MissingWeightsError, ModelError
from .ml_decoder import MLDecoderHead
from .names import resolve_model_name

_logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: ``pretrained`` values that ask for hub weights, which this tool never downloads
_HUB_WORDS = frozenset(
    {
        "true",
        "yes",
        "1",
        "on",
        "hub",
        "timm",
        "default",
        "pretrained",
        "imagenet",
        "imagenet1k",
        "imagenet-1k",
        "imagenet_1k",
        "in1k",
        "imagenet21k",
        "imagenet-21k",
        "in21k",
        "in22k",
        "torchvision",
        "huggingface",
        "hf",
    }
)
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "http://", "https://", "timm:", "torchvision:", "hub:")

#: common classifier module names, dropped from a weights file when the model lacks them
_CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "last_linear.", "head_dist.", "heads.")
#: wrappers a weights file may put around the backbone's keys
_KEY_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "_orig_mod.")


class Outputs(NamedTuple):
    """What a :class:`MultiLabelModel` returns for a batch of ``N`` images: one tensor per entry
    of :data:`~mlkd_cache.losses.base.MODEL_OUTPUTS`, in its order and of the shape it gives
    there (``tests/models/test_outputs.py`` checks both)."""

    features: Tensor  # timm's forward_head(pre_logits=True)
    label_emb: Tensor  # the ML-Decoder's output per class query
    logits: Tensor


class MultiLabelModel(nn.Module):
    """timm backbone (created with ``num_classes=0``) + :class:`MLDecoderHead`.

    Attributes: ``arch`` (name as given), ``timm_name``, ``num_classes`` (C), ``embed_dim``
    (E), ``feature_dim`` (D of ``Outputs.features``), ``token_dim`` (channels of the feature
    map fed to the head), ``feature_format`` (timm's ``output_fmt``, default 'NCHW': how a 4-D
    ``forward_features`` map is read; 3-D outputs are always token sequences [N, L, D]),
    ``img_size`` (as given; None or ignored for CNNs), ``backbone``, ``head``.
    """

    def __init__(
        self,
        arch: str,
        timm_name: str,
        backbone: nn.Module,
        num_classes: int,
        embed_dim: int = 768,
        ff_dim: int = 2048,
        heads: int = 8,
        dropout: float = 0.1,
        img_size: Optional[Union[int, Tuple[int, int]]] = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.timm_name = timm_name
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.img_size = img_size
        self.backbone: Any = backbone  # a timm model: forward_features, forward_head
        self.token_dim, self.feature_dim = _backbone_dims(backbone)
        fmt = str(getattr(backbone, "output_fmt", "NCHW") or "NCHW").upper()
        self.feature_format = fmt if fmt in ("NCHW", "NHWC", "NLC") else "NCHW"
        self.head = MLDecoderHead(
            self.token_dim,
            num_classes,
            embed_dim=embed_dim,
            ff_dim=ff_dim,
            heads=heads,
            dropout=dropout,
        )

    def tokens(self, fmap: Tensor) -> Tensor:
        """Backbone ``forward_features`` output -> tokens ``[N, L, token_dim]``.

        4-D maps are NCHW, or NHWC when the backbone declares ``output_fmt == 'NHWC'`` (swin,
        mambaout, …); when the declared layout's channel axis does not have ``token_dim``
        entries but the other one does, the other layout is used. 3-D outputs are already a
        token sequence (ViT: prefix/class tokens included, all kept as decoder memory).
        """
        if fmap.dim() == 3:
            out = fmap
        elif fmap.dim() == 4:
            nhwc = self.feature_format == "NHWC"
            if nhwc and fmap.shape[-1] != self.token_dim and fmap.shape[1] == self.token_dim:
                nhwc = False
            elif not nhwc and fmap.shape[1] != self.token_dim and fmap.shape[-1] == self.token_dim:
                nhwc = True
            out = fmap.flatten(1, 2) if nhwc else fmap.flatten(2).transpose(1, 2)
        else:
            raise RuntimeError(
                f"{self.timm_name}: forward_features returned a {fmap.dim()}-D tensor "
                f"{tuple(fmap.shape)}; expected [N, C, H, W], [N, H, W, C] or [N, L, C]"
            )
        if out.shape[-1] != self.token_dim:
            raise RuntimeError(
                f"{self.timm_name}: feature map {tuple(fmap.shape)} has no axis of token_dim={self.token_dim} channels"
            )
        return out

    def forward(self, x: Tensor) -> Outputs:
        """Images ``[N, 3, H, W]`` (any memory format) -> :class:`Outputs`."""
        fmap = self.backbone.forward_features(x)
        features = self.backbone.forward_head(fmap, pre_logits=True)
        if features.dim() > 2:
            features = features.flatten(1)
        label_emb, logits = self.head(self.tokens(fmap))
        return Outputs(features, label_emb, logits)


def _backbone_dims(backbone: nn.Module) -> Tuple[int, int]:
    """(token_dim, feature_dim) of a timm backbone: ``num_features`` and ``head_hidden_size``.

    timm defines ``num_features`` as the channels of ``forward_features`` and
    ``head_hidden_size`` as the width of ``forward_head(pre_logits=True)`` (they differ for
    models with a pre-logits layer, e.g. MobileNetV3, MambaOut). Models lacking these are
    probed with one tiny forward pass under ``torch.no_grad``.
    """
    token_dim = getattr(backbone, "num_features", None)
    feature_dim = getattr(backbone, "head_hidden_size", None) or token_dim
    if isinstance(token_dim, int) and isinstance(feature_dim, int):
        return token_dim, feature_dim
    return _probe_dims(backbone)  # pragma: no cover - every timm model sets num_features


def _probe_dims(backbone: nn.Module) -> Tuple[int, int]:  # pragma: no cover
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else "cpu"
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            timm_model: Any = backbone
            fmap = timm_model.forward_features(torch.zeros(1, 3, *size, device=device))
            pooled = timm_model.forward_head(fmap, pre_logits=True).flatten(1)
    finally:
        backbone.train(was_training)
    fmt = str(getattr(backbone, "output_fmt", "NCHW")).upper()
    token_dim = fmap.shape[-1] if fmap.dim() == 3 or fmt == "NHWC" else fmap.shape[1]
    return int(token_dim), int(pooled.shape[1])


# --------------------------------------------------------------------------------------------
# building


def _create_backbone(timm_name: str, img_size) -> nn.Module:
    """``timm.create_model(timm_name, pretrained=False, num_classes=0)``, with ``img_size``
    when the architecture accepts it (transformers do; CNNs raise TypeError and get none)."""
    import timm

    kwargs = dict(pretrained=False, num_classes=0)
    attempts = [dict(kwargs, img_size=img_size), kwargs] if img_size is not None else [kwargs]
    for kw in attempts:
        try:
            return timm.create_model(timm_name, **kw)
        except TypeError as exc:
            if "img_size" in kw and "img_size" in str(exc):
                continue  # a CNN: any input size works, nothing to configure
            raise ModelError(f"cannot build {timm_name!r}: {exc}") from exc
        except (AssertionError, RuntimeError, ValueError) as exc:
            size = f" with img_size={img_size!r}" if "img_size" in kw else ""
            raise ModelError(f"cannot build {timm_name!r}{size}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _check_pretrained_arg(pretrained) -> Optional[Path]:
    """Validate ``pretrained``: None/False -> None, an existing local file -> its Path."""
    if pretrained is None or pretrained is False:
        return None
    hub_msg = (
        "pretrained={!r}: hub weights are never downloaded by this tool; pass --pretrained PATH "
        "with a local timm/torchvision weight file (.pth/.pt/.bin/.safetensors), or leave it "
        "unset to train from scratch"
    )
    if pretrained is True or not isinstance(pretrained, (str, os.PathLike)):
        raise MissingWeightsError(hub_msg.format(pretrained))
    text = os.fspath(pretrained)
    if isinstance(text, bytes):  # pragma: no cover - bytes paths are unusual
        text = os.fsdecode(text)
    if not text.strip():
        return None
    stripped = text.strip()
    if stripped.lower() in _HUB_WORDS or stripped.lower().startswith(_HUB_PREFIXES):
        if not os.path.exists(text):
            raise MissingWeightsError(hub_msg.format(pretrained))
    path = Path(text).expanduser()
    if not path.is_file():
        if path.is_dir():
            raise MissingWeightsError(
                f"pretrained weights path is a directory, not a file: {path}; pass --pretrained "
                f"PATH with a local timm/torchvision weight file, or leave it unset to train "
                f"from scratch (this tool never downloads)"
            )
        raise MissingWeightsError(
            f"pretrained weights file not found: {text}; pass --pretrained PATH with a local "
            f"timm/torchvision weight file, or leave it unset to train from scratch (this tool "
            f"never downloads)"
        )
    return path


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with a little-endian u64 header length, then a JSON '{'."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def _read_weights(path: Path) -> Dict[str, Tensor]:
    """Read a state dict from ``path`` (safetensors, or torch.load with weights_only=True)."""
    try:
        if _looks_like_safetensors(path):
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, truncated, or a pickle with arbitrary objects
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(
            f"cannot read pretrained weights file {path}: {type(exc).__name__}: {first} "
            f"(expected a state dict saved with torch.save or safetensors; only plain tensors "
            f"are loaded, weights_only=True)"
        ) from exc
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj, path: Path) -> Dict[str, Tensor]:
    """The tensor dict inside a checkpoint (``{'state_dict': …}``, ``{'model': …}`` …)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if not isinstance(obj, Mapping):
            break
        for key in ("state_dict", "model", "model_state_dict", "module", "net", "backbone"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    if isinstance(obj, Mapping) and any(isinstance(v, Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    raise ModelError(f"pretrained weights file {path} holds no state dict of tensors")


def _match_prefix(state: Dict[str, Tensor], expected: set) -> Dict[str, Tensor]:
    """Strip wrapper prefixes (``module.``, ``backbone.`` …) when that matches more keys."""
    best, best_hits = state, len(expected & state.keys())
    for _ in range(2):  # e.g. "module.backbone."
        improved = False
        for prefix in _KEY_PREFIXES:
            cand = {k[len(prefix) :]: v for k, v in best.items() if k.startswith(prefix)}
            hits = len(expected & cand.keys())
            if hits > best_hits:
                best, best_hits, improved = cand, hits, True
        if not improved:
            break
    return best


def _apply_timm_filter(state: Dict[str, Tensor], backbone: nn.Module) -> Dict[str, Tensor]:
    """timm's own ``checkpoint_filter_fn`` for the architecture, when its module has one
    (converts original-repo layouts, resamples position embeddings for another img_size)."""
    module = sys.modules.get(type(backbone).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        out = filter_fn(dict(state), backbone)
    except Exception as exc:  # the key checks below report the real problem
        _logger.debug("checkpoint_filter_fn of %s failed: %s", type(backbone).__module__, exc)
        return state
    return dict(out) if isinstance(out, Mapping) else state


def _few(keys: List[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f", … ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_backbone_weights(backbone: nn.Module, path: PathLike, timm_name: str = "") -> None:
    """Load a local weights file into a timm backbone built with ``num_classes=0``.

    Classifier keys are dropped; every other key of the backbone must be present with the
    right shape, and the file may not hold extra non-classifier keys (a file of another
    architecture), else :class:`ModelError` naming a few offending keys.
    """
    path = Path(path)
    name = timm_name or type(backbone).__name__
    own = backbone.state_dict()
    expected = set(own)
    state = _match_prefix(_read_weights(path), expected)
    state = _apply_timm_filter(state, backbone)

    classifier = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    head_prefixes = tuple(f"{c}." for c in classifier) + _CLASSIFIER_PREFIXES
    unexpected = [k for k in state if k not in expected]
    dropped = [k for k in unexpected if k.startswith(head_prefixes)]
    extra = [k for k in unexpected if not k.startswith(head_prefixes)]
    missing = [k for k in expected - state.keys() if not k.endswith("num_batches_tracked")]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in expected & state.keys() if state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_few(missing)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} keys of the wrong shape: {_few(wrong_shape, 3)}")
    if extra:
        problems.append(f"{len(extra)} keys the model does not have: {_few(extra)}")
    if problems:
        raise ModelError(
            f"pretrained weights {path} do not fit {name}: " + "; ".join(problems) + " (weights for a different architecture?)"
        )
    if dropped:
        _logger.info("pretrained weights %s: dropped classifier keys %s", path, _few(dropped))
    state = {k: v for k, v in state.items() if k in expected}
    backbone.load_state_dict(state, strict=False)


def feature_dim_of(name: str, img_size: Optional[Union[int, Tuple[int, int]]] = None) -> int:
    """D, the pooled feature size of backbone ``name`` (seed or timm name), read from a copy
    built on the meta device: no weights are allocated, so ResNet-101 costs milliseconds."""
    with torch.device("meta"):
        backbone = _create_backbone(resolve_model_name(name), img_size)
    return _backbone_dims(backbone)[1]


def build_model(
    name: str,
    num_classes: int,
    pretrained: Optional[PathLike] = None,
    embed_dim: int = 768,
    img_size: Optional[Union[int, Tuple[int, int]]] = None,
    ff_dim: int = 2048,
    dropout: float = 0.1,
) -> MultiLabelModel:
    """Build a :class:`MultiLabelModel`: timm backbone ``name`` + ML-Decoder head.

    Args:
        name: a seed name (see ``SEED_MODELS``) or any timm model name.
        num_classes: C, number of labels.
        pretrained: None (random init) or the path of a local weights file for the timm
            backbone (.pth/.pt/.bin/.safetensors; classifier keys are ignored). Never downloads:
            hub names such as "imagenet" or True raise :class:`MissingWeightsError`.
        embed_dim: E, ML-Decoder width (label embeddings are ``[N, C, E]``).
        img_size: input size for architectures that need it (swin, vit); ignored by CNNs.
        ff_dim, dropout: ML-Decoder feed-forward width and dropout.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    timm_name = resolve_model_name(name)
    weights = _check_pretrained_arg(pretrained)  # fail fast, before building anything
    backbone = _create_backbone(timm_name, img_size)
    if weights is not None:
        load_backbone_weights(backbone, weights, timm_name)
    return MultiLabelModel(
        name,
        timm_name,
        backbone,
        num_classes,
        embed_dim=embed_dim,
        ff_dim=ff_dim,
        dropout=dropout,
        img_size=img_size,
    )
