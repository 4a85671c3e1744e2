"""Hard-label losses against readable per-entry loops (float64)."""

import math

import pytest
import torch

from mlkd_cache.errors import ConfigError
from mlkd_cache.losses.hard import asl, bce, build_hard_loss


def loop_bce(z, y):
    total = 0.0
    for n in range(z.shape[0]):
        for c in range(z.shape[1]):
            p = 1 / (1 + math.exp(-z[n, c]))
            total -= y[n, c] * math.log(p) + (1 - y[n, c]) * math.log(1 - p)
    return total


def loop_asl(z, y, gamma_neg, gamma_pos, clip):
    total = 0.0
    for n in range(z.shape[0]):
        for c in range(z.shape[1]):
            p = 1 / (1 + math.exp(-z[n, c]))
            if y[n, c]:
                total -= (1 - p) ** gamma_pos * math.log(p)
            else:
                pm = max(p - clip, 0.0)
                total -= pm**gamma_neg * math.log(1 - pm)
    return total


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(5, 7, generator=g) < 0.3).double()
    return z, y


def test_bce_is_sum_over_entries(batch):
    z, y = batch
    assert bce(z, y).item() == pytest.approx(loop_bce(z.numpy(), y.numpy()), rel=1e-12)


def test_bce_finite_at_extreme_logits():
    z = torch.tensor([[100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0]])
    loss = bce(z, y)
    loss.backward()
    assert loss.item() == pytest.approx(200.0, rel=1e-6)
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("gamma_neg, gamma_pos, clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.0), (0.0, 0.0, 0.0)])
def test_asl_matches_formula(batch, gamma_neg, gamma_pos, clip):
    z, y = batch
    got = asl(z, y, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip).item()
    assert got == pytest.approx(loop_asl(z.numpy(), y.numpy(), gamma_neg, gamma_pos, clip), rel=1e-9)


def test_asl_without_focusing_is_bce(batch):
    z, y = batch
    assert asl(z, y, gamma_neg=0, gamma_pos=0, clip=0).item() == pytest.approx(bce(z, y).item(), rel=1e-9)


def test_build_hard_loss_returns_named_term(batch):
    z, y = batch
    terms = build_hard_loss("asl", {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05})(z, y)
    assert list(terms) == ["asl"]
    assert list(build_hard_loss("bce", {"gamma_neg": 1.0})(z, y)) == ["bce"]
    with pytest.raises(ConfigError, match="unknown hard-label loss 'bse'.*'bce'"):
        build_hard_loss("bse", {})
