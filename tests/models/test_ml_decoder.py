"""MLDecoderHead: shapes, the per-class classifier, fixed queries, gradients, init."""

import math

import pytest
import torch

from mlkd_cache.errors import ModelError
from mlkd_cache.models import MLDecoderHead

N, L, T, C, E = 3, 7, 16, 5, 32


def make_head(**kw):
    torch.manual_seed(0)
    args = dict(token_dim=T, num_classes=C, embed_dim=E, ff_dim=64, heads=4, dropout=0.1)
    args.update(kw)
    return MLDecoderHead(**args)


def test_shapes():
    head = make_head().eval()
    emb, logits = head(torch.randn(N, L, T))
    assert emb.shape == (N, C, E)
    assert logits.shape == (N, C)


def test_rejects_wrong_token_dim():
    head = make_head()
    with pytest.raises(ValueError, match=r"tokens \[N, L, 16\]"):
        head(torch.randn(N, L, T + 1))


def test_logits_match_loop_reference():
    head = make_head().eval()
    with torch.no_grad():
        head.bias.normal_()  # non-zero bias so it is part of the check
        emb, logits = head(torch.randn(N, L, T))
        ref = torch.empty(N, C)
        for c in range(C):
            ref[:, c] = emb[:, c] @ head.weight[c] + head.bias[c]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


def test_decoder_layer_reference():
    """One decoder layer without self-attention, written out step by step (eval mode)."""
    head = make_head().eval()
    tokens = torch.randn(N, L, T)
    with torch.no_grad():
        emb, _ = head(tokens)
        mem = torch.relu(tokens @ head.embed.weight.T + head.embed.bias)
        q = head.queries.expand(N, C, E)
        q = head.norm1(q + q)
        attn = head.cross_attn(q, mem, mem)[0]
        q = head.norm2(q + attn)
        ffn = head.ffn[3](torch.relu(head.ffn[0](q)))
        q = head.norm3(q + ffn)
    torch.testing.assert_close(emb, q, rtol=1e-5, atol=1e-5)


def test_no_self_attention_between_queries():
    """Each class query attends only to the image tokens: a head holding a subset of the
    classes gives the same embeddings for them (eval mode)."""
    head = make_head().eval()
    small = make_head(num_classes=2).eval()
    state = head.state_dict()
    for key in ("queries", "weight", "bias"):
        state[key] = state[key][[1, 3]]
    small.load_state_dict(state)
    tokens = torch.randn(N, L, T)
    with torch.no_grad():
        emb, logits = head(tokens)
        emb2, logits2 = small(tokens)
    torch.testing.assert_close(emb2, emb[:, [1, 3]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits2, logits[:, [1, 3]], rtol=1e-5, atol=1e-5)


def test_queries_fixed_but_saved():
    head = make_head()
    assert not head.queries.requires_grad
    assert all(p is not head.queries for p in head.parameters())
    assert "queries" in head.state_dict()
    before = head.queries.clone()
    opt = torch.optim.AdamW(head.parameters(), lr=0.1, weight_decay=0.5)
    emb, logits = head(torch.randn(N, L, T))
    (logits.sum() + emb.pow(2).mean()).backward()
    opt.step()
    assert torch.equal(head.queries, before)


def test_gradients_reach_all_trainable_parts():
    head = make_head()
    tokens = torch.randn(N, L, T, requires_grad=True)
    _, logits = head(tokens)
    logits.sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None, name
    for name in ("embed.weight", "cross_attn.in_proj_weight", "ffn.0.weight", "weight", "bias"):
        assert dict(head.named_parameters())[name].grad.abs().sum() > 0, name


def test_init_is_seeded_and_distributed_as_specified():
    torch.manual_seed(3)
    a = MLDecoderHead(T, 64, embed_dim=128, ff_dim=64)
    torch.manual_seed(3)
    b = MLDecoderHead(T, 64, embed_dim=128, ff_dim=64)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    torch.manual_seed(4)
    c = MLDecoderHead(T, 64, embed_dim=128, ff_dim=64)
    assert not torch.equal(a.queries, c.queries)
    # queries ~ N(0, 1) like nn.Embedding; classifier xavier-normal; bias zeros
    assert abs(a.queries.mean().item()) < 0.05
    assert abs(a.queries.std().item() - 1.0) < 0.05
    xavier_std = math.sqrt(2.0 / (64 + 128))
    assert abs(a.weight.std().item() - xavier_std) / xavier_std < 0.1
    assert torch.equal(a.bias, torch.zeros(64))


def test_dropout_only_in_train_mode():
    head = make_head(dropout=0.5)
    tokens = torch.randn(N, L, T)
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(tokens)[1], head(tokens)[1])
    head.train()
    with torch.no_grad():
        assert not torch.equal(head(tokens)[1], head(tokens)[1])


def test_autocast_runs():
    head = make_head().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        emb, logits = head(torch.randn(N, L, T))
    assert emb.shape == (N, C, E) and logits.shape == (N, C)
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(embed_dim=30, heads=4), "divisible"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ModelError, match=match):
        make_head(**kw)
