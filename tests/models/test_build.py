"""build_model / resolve_model_name / pretrained loading, on timm's tiny test models."""

import socket

import pytest
import timm
import torch

from mlkd_cache.errors import MissingWeightsError, ModelError
from mlkd_cache.models import (
    SEED_MODELS,
    MultiLabelModel,
    Outputs,
    build_model,
    resolve_model_name,
)

C, E = 5, 32
SMALL = dict(embed_dim=E, ff_dim=64)

# (name, img_size, input size, layout of forward_features)
BACKBONES = [
    ("test_resnet", None, 48, "NCHW"),
    ("test_efficientnet", None, 40, "NCHW"),
    ("test_vit", 32, 32, "NLC"),
    ("test_mambaout", None, 48, "NHWC"),  # NHWC maps, and feature_dim != token_dim
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Building a model must never touch the network: any connection attempt fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def build(name, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(name, C, **{**SMALL, **kw})


# ------------------------------------------------------------------------------- names


def test_seed_models_exist_in_timm():
    names = set(timm.list_models())
    assert set(SEED_MODELS) >= {"resnet101", "resnet50", "wrn101", "swin_t", "mobilenet_v2"}
    for seed, timm_name in SEED_MODELS.items():
        assert timm_name in names, (seed, timm_name)
        assert resolve_model_name(seed) == timm_name
    assert SEED_MODELS["wrn101"] == "wide_resnet101_2"
    assert SEED_MODELS["swin_t"] == "swin_tiny_patch4_window7_224"
    assert SEED_MODELS["mobilenet_v2"] == "mobilenetv2_100"


@pytest.mark.parametrize("name", ["resnet50", "test_vit", "convnext_atto", "resnet50.a1_in1k"])
def test_timm_names_pass_through(name):
    assert resolve_model_name(name) == name


def test_unknown_name_suggests_close_ones():
    pattern = r"unknown model 'resnet51' \(did you mean .*'resnet50'.*\?\); seed names: "
    with pytest.raises(ModelError, match=pattern) as ei:
        resolve_model_name("resnet51")
    msg = str(ei.value)
    assert "seed names: " in msg and "wrn101" in msg and "any timm model name works" in msg
    assert isinstance(ei.value, ValueError)
    with pytest.raises(ModelError, match="not supported"):
        resolve_model_name("hf-hub:timm/resnet50.a1_in1k")
    with pytest.raises(ModelError, match="unknown model"):
        build_model("resnet51", C)


# ------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name, img_size, px, layout", BACKBONES)
def test_output_shapes_and_dims(name, img_size, px, layout):
    model = build(name, img_size=img_size).eval()
    assert isinstance(model, MultiLabelModel)
    assert model.arch == name and model.timm_name == name
    assert model.num_classes == C and model.embed_dim == E
    x = torch.randn(2, 3, px, px)
    with torch.no_grad():
        out = model(x)
        fmap = model.backbone.forward_features(x)
    assert isinstance(out, Outputs)
    assert out.features.shape == (2, model.feature_dim)
    assert out.label_emb.shape == (2, C, E)
    assert out.logits.shape == (2, C)
    # token_dim is the channel axis of the real feature map, in the expected layout
    channel_axis = {"NCHW": 1, "NHWC": -1, "NLC": -1}[layout]
    assert fmap.dim() == (3 if layout == "NLC" else 4)
    assert fmap.shape[channel_axis] == model.token_dim
    assert model.tokens(fmap).shape[-1] == model.token_dim
    # feature_dim is what timm's pre-logits head really gives
    with torch.no_grad():
        pooled = model.backbone.forward_head(fmap, pre_logits=True)
    assert pooled.shape[-1] == model.feature_dim
    assert torch.equal(out.features, pooled.flatten(1))
    if name == "test_mambaout":
        assert model.feature_dim != model.token_dim


def test_nhwc_tokens_keep_channels_together():
    """NHWC maps are flattened, not transposed: token (h, w) is fmap[:, h, w, :]."""
    model = build("test_mambaout").eval()
    fmap = torch.randn(2, 3, 4, model.token_dim)
    tokens = model.tokens(fmap)
    assert tokens.shape == (2, 12, model.token_dim)
    assert torch.equal(tokens[:, 1 * 4 + 2], fmap[:, 1, 2])
    cnn = build("test_resnet").eval()
    fmap = torch.randn(2, cnn.token_dim, 3, 4)
    assert torch.equal(cnn.tokens(fmap)[:, 1 * 4 + 2], fmap[:, :, 1, 2])


def test_img_size_goes_to_transformers_only():
    vit = build("test_vit", img_size=32)
    assert vit.backbone.patch_embed.img_size == (32, 32)
    cnn = build("test_resnet", img_size=32)  # ResNet rejects img_size: built without it
    assert cnn.img_size == 32
    assert cnn(torch.randn(1, 3, 64, 64)).logits.shape == (1, C)


@pytest.mark.parametrize("name, img_size, px, layout", BACKBONES)
def test_channels_last_and_autocast(name, img_size, px, layout):
    model = build(name, img_size=img_size).eval()
    x = torch.randn(2, 3, px, px)
    with torch.no_grad():
        ref = model(x)
        cl = model(x.contiguous(memory_format=torch.channels_last))
        for a, b in zip(ref, cl):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = model(x)
    for t, want in zip(amp, ref):
        assert t.shape == want.shape
        assert torch.isfinite(t.float()).all()


def test_gradients_reach_backbone_and_head_queries_fixed():
    model = build("test_resnet")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    queries = model.head.queries.clone()
    stem = model.backbone.conv1[0].weight.clone()
    out = model(torch.randn(2, 3, 48, 48))
    (out.logits.sum() + out.label_emb.pow(2).mean() + out.features.mean()).backward()
    assert model.backbone.conv1[0].weight.grad.abs().sum() > 0
    assert model.head.embed.weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.equal(model.head.queries, queries)
    assert not torch.equal(model.backbone.conv1[0].weight, stem)
    assert "head.queries" in model.state_dict()


def test_same_seed_same_initial_state():
    a, b = build("test_resnet", seed=7), build("test_resnet", seed=7)
    c = build("test_resnet", seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert not torch.equal(sa["head.queries"], sc["head.queries"])
    assert not torch.equal(sa["backbone.conv1.0.weight"], sc["backbone.conv1.0.weight"])


def test_bad_num_classes():
    with pytest.raises(ModelError, match="num_classes"):
        build_model("test_resnet", 0)


# ------------------------------------------------------------------------------ pretrained


def reference_backbone(name="test_resnet", seed=123, **kw):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kw)


def assert_backbone_equals(model, state):
    own = model.backbone.state_dict()
    for k, v in own.items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_pretrained_loads_backbone(tmp_path, fmt):
    ref = reference_backbone(num_classes=0)
    state = ref.state_dict()
    if fmt == "torch":
        path = tmp_path / "weights.pth"
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = build("test_resnet", pretrained=str(path))
    assert_backbone_equals(model, state)
    assert model(torch.randn(1, 3, 48, 48)).logits.shape == (1, C)
    # a Path works as well as a str
    assert_backbone_equals(build("test_resnet", pretrained=path), state)


def test_pretrained_drops_classifier_and_unwraps(tmp_path):
    full = reference_backbone(num_classes=1000)  # file with fc.weight / fc.bias
    state = full.state_dict()
    assert "fc.weight" in state
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = build("test_resnet", pretrained=path)
    assert_backbone_equals(model, state)
    # one of our own model checkpoints works as a backbone weight file too
    own = tmp_path / "teacher.pth"
    torch.save(model.state_dict(), own)
    again = build("test_resnet", seed=99, pretrained=own)
    assert_backbone_equals(again, state)


def test_pretrained_vit_other_img_size(tmp_path):
    """timm's checkpoint filter resamples position embeddings for another img_size."""
    ref = reference_backbone("test_vit", num_classes=0)  # default 160 px
    path = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), path)
    model = build("test_vit", img_size=32, pretrained=path)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    assert model.backbone.pos_embed.shape != ref.pos_embed.shape
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, C)


def test_pretrained_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    msg = (
        r"pretrained weights file not found: .*nope\.pth; pass --pretrained PATH with a local "
        r"timm/torchvision weight file, or leave it unset to train from scratch "
        r"\(this tool never downloads\)"
    )
    with pytest.raises(MissingWeightsError, match=msg) as ei:
        build("test_resnet", pretrained=str(path))
    assert isinstance(ei.value, FileNotFoundError)
    with pytest.raises(MissingWeightsError, match="directory"):
        build("test_resnet", pretrained=tmp_path)


@pytest.mark.parametrize("value", ["imagenet", "hub", True, "hf-hub:timm/resnet50.a1_in1k", "https://example.com/w.pth"])
def test_pretrained_hub_values_refused(value):
    with pytest.raises(MissingWeightsError, match=r"never downloaded.*--pretrained PATH"):
        build("test_resnet", pretrained=value)


def test_pretrained_none_and_false_mean_random_init():
    a = build("test_resnet", seed=1, pretrained=None)
    b = build("test_resnet", seed=1, pretrained=False)
    assert torch.equal(a.backbone.conv1[0].weight, b.backbone.conv1[0].weight)


def test_pretrained_other_architecture(tmp_path):
    path = tmp_path / "effnet.pth"
    torch.save(reference_backbone("test_efficientnet", num_classes=0).state_dict(), path)
    with pytest.raises(ModelError, match=r"do not fit test_resnet: missing \d+ keys: "):
        build("test_resnet", pretrained=path)


def test_pretrained_extra_or_misshapen_keys(tmp_path):
    state = reference_backbone(num_classes=0).state_dict()
    extra = dict(state, **{"layer5.0.conv1.weight": torch.zeros(3)})  # a deeper variant's file
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ModelError, match=r"keys the model does not have: layer5\.0\.conv1\.weight"):
        build("test_resnet", pretrained=tmp_path / "extra.pth")
    bad = dict(state, **{"conv1.0.weight": torch.zeros(1, 1, 1, 1)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match=r"wrong shape: conv1\.0\.weight \(1, 1, 1, 1\) vs"):
        build("test_resnet", pretrained=tmp_path / "bad.pth")


class NotATensor:
    pass


def test_pretrained_untrusted_pickle_refused(tmp_path):
    path = tmp_path / "evil.pth"
    state = reference_backbone(num_classes=0).state_dict()
    torch.save({"state_dict": state, "x": NotATensor()}, path)
    pattern = r"cannot read pretrained weights file .*weights_only=True"
    with pytest.raises(ModelError, match=pattern):
        build("test_resnet", pretrained=path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read pretrained weights file"):
        build("test_resnet", pretrained=junk)
