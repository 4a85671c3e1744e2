"""import-teacher --format l2d: a checkpoint in L2D's key layout (an ``nn.DataParallel`` state dict
of a torchvision ResNet whose ``fc`` is an ML-Decoder) becomes a teacher.pt whose model gives L2D's
model's outputs. L2D's model is rebuilt here from what its public code does (torchvision ResNet,
``avgpool`` removed, sequence-first attention, a group FC loop), not from the code under test."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mlkd_cache.runtime.checkpoint import load_checkpoint, load_model

from ..conftest import assert_one_line_error, run_cli_in_process, tiny_config

pytestmark = pytest.mark.numeric

E = 768  # L2D's decoder width
HEADS, FF = 8, 2048

# L2D key (after module.) -> this tool's key: written out here, not taken from the code under test
EXPECTED_HEAD = {
    "fc.decoder.embed_standart.weight": "head.embed.weight",
    "fc.decoder.embed_standart.bias": "head.embed.bias",
    "fc.decoder.query_embed.weight": "head.queries",
    "fc.decoder.layers.0.norm1.weight": "head.norm1.weight",
    "fc.decoder.layers.0.norm1.bias": "head.norm1.bias",
    "fc.decoder.layers.0.multihead_attn.in_proj_weight": "head.cross_attn.in_proj_weight",
    "fc.decoder.layers.0.multihead_attn.in_proj_bias": "head.cross_attn.in_proj_bias",
    "fc.decoder.layers.0.multihead_attn.out_proj.weight": "head.cross_attn.out_proj.weight",
    "fc.decoder.layers.0.multihead_attn.out_proj.bias": "head.cross_attn.out_proj.bias",
    "fc.decoder.layers.0.linear1.weight": "head.ffn.0.weight",
    "fc.decoder.layers.0.linear1.bias": "head.ffn.0.bias",
    "fc.decoder.layers.0.linear2.weight": "head.ffn.3.weight",
    "fc.decoder.layers.0.linear2.bias": "head.ffn.3.bias",
    "fc.decoder.layers.0.norm2.weight": "head.norm2.weight",
    "fc.decoder.layers.0.norm2.bias": "head.norm2.bias",
    "fc.decoder.layers.0.norm3.weight": "head.norm3.weight",
    "fc.decoder.layers.0.norm3.bias": "head.norm3.bias",
    "fc.decoder.duplicate_pooling": "head.weight",
    "fc.decoder.duplicate_pooling_bias": "head.bias",
}


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(E), nn.LayerNorm(E), nn.LayerNorm(E)
        self.multihead_attn = nn.MultiheadAttention(E, HEADS)  # sequence-first, as L2D's
        self.linear1, self.linear2 = nn.Linear(E, FF), nn.Linear(FF, E)


class _Decoder(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.embed_standart = nn.Linear(features, E)
        self.query_embed = nn.Embedding(classes, E)
        self.layers = nn.ModuleList([_Layer()])
        self.duplicate_pooling = nn.Parameter(torch.randn(classes, E, 1) * 0.05)
        self.duplicate_pooling_bias = nn.Parameter(torch.randn(classes))


class _MLDecoder(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.decoder = _Decoder(features, classes)


def l2d_teacher(arch: str, classes: int) -> nn.Module:
    """A torchvision ResNet with L2D's ML-Decoder as ``fc`` and random BatchNorm statistics."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None)
    features = net.fc.in_features
    net.avgpool = nn.Identity()
    net.fc = _MLDecoder(features, classes)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


@torch.no_grad()
def l2d_outputs(net: nn.Module, x: torch.Tensor):
    """(features [N, D], label embeddings [N, C, E], logits [N, C]) as L2D's forward computes them."""
    f = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    f = net.layer4(net.layer3(net.layer2(net.layer1(f))))  # [N, D, h, w]
    features = f.flatten(2).mean(2)
    d = net.fc.decoder
    memory = torch.relu(d.embed_standart(f.flatten(2).transpose(1, 2))).transpose(0, 1)  # [L, N, E]
    layer = d.layers[0]
    tgt = d.query_embed.weight.unsqueeze(1).expand(-1, x.shape[0], -1)  # [C, N, E]
    tgt = layer.norm1(tgt + tgt)  # tgt + dropout1(tgt) in eval mode
    tgt = layer.norm2(tgt + layer.multihead_attn(tgt, memory, memory)[0])
    tgt = layer.norm3(tgt + layer.linear2(torch.relu(layer.linear1(tgt))))
    h = tgt.transpose(0, 1)  # [N, C, E]
    logits = torch.stack([h[:, i, :] @ d.duplicate_pooling[i] for i in range(h.shape[1])], dim=1).flatten(1)
    return features, h, logits + d.duplicate_pooling_bias


def save_l2d(net: nn.Module, path) -> dict:
    state = {f"module.{k}": v.clone() for k, v in net.state_dict().items()}  # nn.DataParallel's keys
    torch.save(state, path)
    return state


def config(tmp_path, arch: str):
    return tiny_config(tmp_path, model_t=repr(arch), embed_dim=str(E), img_size="64")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_an_l2d_checkpoint_imports_key_for_key_with_l2d_outputs(tmp_path, arch):
    net = l2d_teacher(arch, classes=10)  # digits' 10 classes
    source = save_l2d(net, tmp_path / "l2d.pth")
    out = tmp_path / "teacher.pt"
    proc = run_cli_in_process(["import-teacher", str(tmp_path / "l2d.pth"), "-c", str(config(tmp_path, arch)), "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(out)
    imported = ckpt["model"]
    # every L2D key lands where the written-out mapping says, unchanged (the group FC squeezed)
    for key, value in source.items():
        name = key[len("module.") :]
        target = EXPECTED_HEAD.get(name, None if name.startswith("fc.") else f"backbone.{name}")
        assert target is not None, key
        expected = value[..., 0] if name.endswith("duplicate_pooling") else value
        assert torch.equal(imported[target], expected), key
    assert len(imported) == len(source)  # every parameter and buffer of our model set, none left over
    loaded = load_model(out)
    imported_from = loaded.card.provenance["imported_from"]
    assert imported_from["format"] == "l2d" and len(imported_from["sha256"]) == 64
    model = loaded.model
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        got = model(x)
    for name, ours, theirs in zip(("features", "label_emb", "logits"), got, l2d_outputs(net, x)):
        # float32 sums over up to 2,048 channels in another order: 2^-13 of the tensor's scale
        scale = float(theirs.abs().max())
        assert float((ours - theirs).abs().max()) <= 2**-13 * scale, name


def test_a_checkpoint_of_other_classes_architecture_or_family_is_refused_in_one_line(tmp_path):
    save_l2d(l2d_teacher("resnet18", classes=20), tmp_path / "voc.pth")
    proc = run_cli_in_process(
        ["import-teacher", str(tmp_path / "voc.pth"), "-c", str(config(tmp_path, "resnet18")), "-o", str(tmp_path / "a.pt")]
    )
    assert_one_line_error(proc, r"holds a teacher of 20 classes, the digits config has 10")
    save_l2d(l2d_teacher("resnet18", classes=10), tmp_path / "r18.pth")
    proc = run_cli_in_process(
        ["import-teacher", str(tmp_path / "r18.pth"), "-c", str(config(tmp_path, "resnet34")), "-o", str(tmp_path / "b.pt")]
    )
    assert_one_line_error(proc, r"is not an L2D resnet34 teacher: .*; set model_t to the checkpoint's architecture")
    proc = run_cli_in_process(
        ["import-teacher", str(tmp_path / "r18.pth"), "-c", str(config(tmp_path, "swin_t")), "-o", str(tmp_path / "c.pt")]
    )
    assert_one_line_error(proc, r"model_t swin_t cannot be imported exactly: L2D's Swin is the original Microsoft code")
    assert not any((tmp_path / name).exists() for name in ("a.pt", "b.pt", "c.pt"))


@pytest.mark.slow
def test_an_imported_teacher_is_scored_and_dumps_a_cache(tmp_path):
    save_l2d(l2d_teacher("resnet18", classes=10), tmp_path / "l2d.pth")
    cfg = config(tmp_path, "resnet18")
    out = tmp_path / "teacher.pt"
    proc = run_cli_in_process(
        ["import-teacher", str(tmp_path / "l2d.pth"), "-c", str(cfg), "-o", str(out), "--data-root", str(tmp_path)]
    )
    assert proc.returncode == 0, proc.stderr
    assert "test mAP" in proc.stdout  # scored on the config's eval_split
    proc = run_cli_in_process(
        ["dump-targets", "-c", str(cfg), "-t", str(out), "-o", str(tmp_path / "cache"), "--views", "1", "--no-progress"]
    )
    assert proc.returncode == 0, proc.stderr


def test_wrapped_pickled_plain_and_unscorable_checkpoints(tmp_path):
    """A state dict wrapped under 'state_dict' imports; a pickled module, a plain classifier (no
    ML-Decoder), an existing -o and a data root that cannot be read are refused in one line, and
    nothing is written."""
    net = l2d_teacher("resnet18", classes=10)
    cfg = str(config(tmp_path, "resnet18"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    proc = run_cli_in_process(["import-teacher", str(tmp_path / "wrapped.pth"), "-c", cfg, "-o", str(tmp_path / "w.pt")])
    assert proc.returncode == 0, proc.stderr
    proc = run_cli_in_process(["import-teacher", str(tmp_path / "wrapped.pth"), "-c", cfg, "-o", str(tmp_path / "w.pt")])
    assert_one_line_error(proc, r"w\.pt exists; remove it or choose another file")
    torch.save(net, tmp_path / "pickled.pth")
    proc = run_cli_in_process(["import-teacher", str(tmp_path / "pickled.pth"), "-c", cfg, "-o", str(tmp_path / "p.pt")])
    assert_one_line_error(proc, r"a pickled nn\.Module\? .*torch\.save\(model\.state_dict\(\)")
    plain = torchvision.models.resnet18(weights=None)
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    proc = run_cli_in_process(["import-teacher", str(tmp_path / "plain.pth"), "-c", cfg, "-o", str(tmp_path / "q.pt")])
    assert_one_line_error(proc, r"holds no ML-Decoder \(no fc\.decoder\.\* keys\): not an L2D teacher")
    voc = tmp_path / "voc.py"
    voc.write_text(f"dataset = 'voc'\nmodel_t = 'resnet18'\nembed_dim = {E}\nimg_size = 64\n")
    save_l2d(l2d_teacher("resnet18", classes=20), tmp_path / "voc.pth")
    proc = run_cli_in_process(
        [
            "import-teacher",
            str(tmp_path / "voc.pth"),
            "-c",
            str(voc),
            "-o",
            str(tmp_path / "v.pt"),
            "--data-root",
            str(tmp_path / "nowhere"),
        ]
    )
    assert_one_line_error(proc, r"data root not found")
    assert not any((tmp_path / n).exists() for n in ("p.pt", "q.pt", "v.pt"))
