"""PS (partial softmax) against a per-sample, per-positive-label loop (float64)."""

import torch

from mlkd_cache.losses.base import DISTILL_LOSSES, KDBatch
from mlkd_cache.losses.ps import ps


def loop_ps(z_s, z_t, y):
    """For each sample n and positive j: KL(softmax_t ‖ softmax_s) over {j} ∪ negatives(n); sum / N."""
    total = z_s.new_zeros(())
    for n in range(y.shape[0]):
        negatives = [k for k in range(y.shape[1]) if y[n, k] == 0]
        for j in range(y.shape[1]):
            if y[n, j] == 1:
                members = negatives + [j]
                p_s = torch.softmax(z_s[n, members], dim=0)
                p_t = torch.softmax(z_t[n, members].detach(), dim=0)
                total = total + (p_t * (p_t.log() - p_s.log())).sum()
    return total / y.shape[0]


Y = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.float64)


def value_and_grad(fn, z_s, z_t, y):
    z_s = z_s.clone().requires_grad_(True)
    v = fn(z_s, z_t, y)
    return v, torch.autograd.grad(v, z_s)[0]


def test_matches_loop_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 5, generator=g, dtype=torch.float64) * 2, torch.randn(4, 5, generator=g, dtype=torch.float64) * 2
    v, dz = value_and_grad(ps, z_s, z_t, Y)
    v_ref, dz_ref = value_and_grad(loop_ps, z_s, z_t, Y)
    torch.testing.assert_close(v, v_ref)
    torch.testing.assert_close(dz, dz_ref)
    assert v > 0


def test_rows_without_positives_or_negatives_add_nothing():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    keep = torch.tensor([True, False, False, True])  # row 1 has no positives, row 2 no negatives
    v, dz = value_and_grad(ps, z_s, z_t, Y)
    v_kept = ps(z_s[keep], z_t[keep], Y[keep]) * keep.sum() / 4
    torch.testing.assert_close(v, v_kept)
    assert torch.isfinite(dz).all() and torch.equal(dz[~keep], torch.zeros_like(dz[~keep]))


def test_identical_is_zero_and_extreme_logits_finite():
    z = torch.randn(4, 5, dtype=torch.float64) * 100
    assert ps(z, z.clone(), Y).item() == 0.0
    v, dz = value_and_grad(ps, z, -z, Y)
    assert torch.isfinite(v) and torch.isfinite(dz).all()


def test_module_returns_named_term():
    z_s, z_t = torch.randn(4, 5), torch.randn(4, 5)
    batch = KDBatch(y=Y.float(), z_s=z_s, z_t=z_t, f_s=torch.zeros(4, 1), f_t=torch.zeros(4, 1), e_s=torch.zeros(4, 5, 1))
    out = DISTILL_LOSSES.get("PS")()(batch)
    assert list(out) == ["ps"] and out["ps"] == ps(z_s, z_t, Y.float())
