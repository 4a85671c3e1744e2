"""Model names: the seed project's short names and any timm model name.

The seed configs (L2D / MPSCD) name backbones ``resnet101``, ``wrn101``, ``swin_t`` … ;
:data:`SEED_MODELS` maps them to timm names. Anything else must be a timm model name
(``timm.list_models()``), optionally with a pretrained tag (``resnet50.a1_in1k``): the tag is
kept (timm ignores it when ``pretrained=False``) but only the architecture part is checked.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, FrozenSet

from ..errors import ModelError
from ..registry import did_you_mean

#: seed-config name -> timm model name
SEED_MODELS: Dict[str, str] = {
    "resnet101": "resnet101",
    "resnet50": "resnet50",
    "resnet34": "resnet34",
    "resnet18": "resnet18",
    "wrn101": "wide_resnet101_2",
    "wrn50": "wide_resnet50_2",
    "repvgg_a2": "repvgg_a2",
    "repvgg_a0": "repvgg_a0",
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "mobilenet_v2": "mobilenetv2_100",
}


@lru_cache(maxsize=1)
def _timm_names() -> FrozenSet[str]:
    import timm

    return frozenset(timm.list_models())


def resolve_model_name(name: str) -> str:
    """Seed name -> timm name; a timm name (optionally ``arch.tag``) passes through unchanged.

    Raises :class:`ModelError` for an unknown name, suggesting up to 5 close timm names.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name in SEED_MODELS:
        return SEED_MODELS[name]
    if name.lower() in SEED_MODELS:
        return SEED_MODELS[name.lower()]
    seeds = ", ".join(SEED_MODELS)
    if ":" in name:
        # timm's "hf-hub:org/model" / "local-dir:..." sources read a remote or external config.
        raise ModelError(
            f"model {name!r}: source prefixes such as 'hf-hub:' are not supported (this tool "
            f"never downloads); use a timm architecture name and pass --pretrained PATH with a "
            f"local weights file (seed names: {seeds}; any timm model name works)"
        )
    names = _timm_names()
    arch = name.split(".", 1)[0]
    if arch in names:
        return name
    hint = did_you_mean(arch, sorted(names | set(SEED_MODELS)), n=5, cutoff=0.6)
    raise ModelError(f"unknown model {name!r}{hint}; seed names: {seeds}; any timm model name works")
