"""What a model gives is one table, losses.base.MODEL_OUTPUTS: the model's Outputs, a factory
teacher's checks and sizes, the cache's sizes and words, and the KDBatch messages follow it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlkd_cache.errors import ConfigError, ModelError
from mlkd_cache.losses.base import MODEL_OUTPUTS, OUTPUT_SIZES, SIZE_DIMS, SLOT_TEACHER_OUTPUT, KDBatch
from mlkd_cache.models import Outputs, build_model
from mlkd_cache.models.card import OUTPUTS
from mlkd_cache.models.factory import _ORDER, FactoryTeacher, read_outputs

C = 4


def test_outputs_and_every_table_keyed_by_output_follow_the_one_table():
    from mlkd_cache.cache.format import OUTPUT_SIZES as SPEC_SIZES
    from mlkd_cache.cache.format import OUTPUT_WORDS, TEACHER_OUTPUTS

    assert Outputs._fields == tuple(MODEL_OUTPUTS) == OUTPUTS == TEACHER_OUTPUTS  # names and order
    assert sorted(_ORDER) == sorted(Outputs._fields)  # a factory's tuple places every output once
    assert set(SLOT_TEACHER_OUTPUT.values()) <= set(MODEL_OUTPUTS)
    assert SPEC_SIZES == OUTPUT_SIZES == {"features": "feature_dim", "label_emb": "embed_dim"}
    assert set(OUTPUT_WORDS) == set(MODEL_OUTPUTS) and {k: OUTPUT_WORDS[k] for k in ("features", "label_emb", "logits")} == {
        "features": "pooled features [N, D]",
        "label_emb": "label-wise embeddings [N, C, E]",
        "logits": "logits [N, C]",
    }
    assert all(set(out.dims) <= {"N", "C", *SIZE_DIMS} and out.dims[0] == "N" for out in MODEL_OUTPUTS.values())


def test_a_model_gives_the_shapes_of_the_table():
    torch.manual_seed(0)
    model = build_model("test_resnet", C, embed_dim=16, ff_dim=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    sizes = {"N": 2, "C": C, **{d: getattr(model, attr) for d, attr in SIZE_DIMS.items()}}
    for name, spec in MODEL_OUTPUTS.items():
        assert tuple(getattr(out, name).shape) == tuple(sizes[d] for d in spec.dims), name


class _Tuple(nn.Module):
    """A user's model whose forward returns ``(logits, label_emb, features)`` of the shapes given."""

    def __init__(self, *shapes) -> None:
        super().__init__()
        self.shapes = shapes
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return tuple(None if s is None else torch.zeros(x.shape[0], *s) + self.w for s in self.shapes)


def test_a_factory_teacher_is_checked_and_sized_by_the_table():
    teacher = FactoryTeacher(_Tuple((C,), (C, 6), (10,)), [f"c{i}" for i in range(C)], "pkg.mod:make")
    teacher.probe(8)
    assert teacher.outputs == ("features", "label_emb", "logits") and (teacher.feature_dim, teacher.embed_dim) == (10, 6)
    out = teacher(torch.zeros(3, 3, 8, 8))
    assert (out.features.shape, out.label_emb.shape, out.logits.shape) == ((3, 10), (3, C, 6), (3, C))
    logits_only = FactoryTeacher(_Tuple((C,), None, None), ["a", "b", "c", "d"], "pkg.mod:make")
    logits_only.probe(8)
    assert logits_only.outputs == ("logits",) and (logits_only.feature_dim, logits_only.embed_dim) == (0, 0)
    assert logits_only(torch.zeros(1, 3, 8, 8)).features is None

    def refused(*values):
        with pytest.raises(ModelError) as err:
            read_outputs(tuple(values), C, "pkg.mod:make")
        return str(err.value)

    z = torch.zeros
    assert "logits has shape [2, 5], expected [N, 4] (4 = the number of class names" in refused(z(2, 5))
    assert "label_emb has shape [2, 3, 6], expected [N, 4, E] (4 = " in refused(z(2, C), z(2, 3, 6))
    assert "label_emb has shape [3, 4, 6], expected [N, 4, E]" in refused(z(2, C), z(3, C, 6))  # another N
    assert "features has shape [2, 7, 1], expected [N, D] (4 = " in refused(z(2, C), None, z(2, 7, 1))


def test_kdbatch_names_the_outputs_as_the_table_does():
    y, z = torch.zeros(2, C), torch.zeros(2, C)
    with pytest.raises(ConfigError, match=r"^KDBatch.z_s must be the student's logits \[N, C\], got shape \[2\]$"):
        KDBatch(y=y, z_s=torch.zeros(2), z_t=z)
    with pytest.raises(
        ConfigError, match=r"expected \[2, 4, E\] \(the teacher's label-wise embeddings \[N, C, E_t\], dense form\)"
    ):
        KDBatch(y=y, z_s=z, z_t=z, e_t=torch.zeros(2, 3, 5))
    with pytest.raises(ConfigError, match=r"reads KDBatch.f_t \(the teacher's pooled features \[N, D_t\]\), which"):
        KDBatch(y=y, z_s=z, z_t=z).need("PKT", "f_t")
    with pytest.raises(ConfigError, match=r"KDBatch.e_s \(the student's label-wise embeddings \[N, C, E_s\], from an ML-Decoder"):
        KDBatch(y=y, z_s=z, z_t=z).need("LED", "e_s")
