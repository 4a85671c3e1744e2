"""Models: a timm backbone + ML-Decoder head returning ``Outputs(features, label_emb, logits)``.

``build_model("resnet101", num_classes=80)`` builds an L2D-style teacher/student; any timm
model name works besides the seed names in :data:`SEED_MODELS`. Nothing is ever downloaded:
``pretrained`` is None or the path of a local weights file.
"""

from .ml_decoder import MLDecoderHead
from .model import MultiLabelModel, Outputs, build_model, load_backbone_weights
from .names import SEED_MODELS, resolve_model_name

__all__ = [
    "MLDecoderHead",
    "MultiLabelModel",
    "Outputs",
    "SEED_MODELS",
    "build_model",
    "load_backbone_weights",
    "resolve_model_name",
]
