"""MLD against a per-entry loop (float64): values, gradients, extreme logits, the zero floor."""

import math

import pytest
import torch
import torch.nn.functional as F

from mlkd_cache.errors import ConfigError
from mlkd_cache.losses.base import DISTILL_LOSSES, KDBatch
from mlkd_cache.losses.mld import mld


def loop_mld(z_s, z_t):
    """Σ_n Σ_c [p log(p/q) + (1-p) log((1-p)/(1-q))] / N, p = σ(z_t), q = σ(z_s)."""
    z_t = z_t.detach()
    total = z_s.new_zeros(())
    for n in range(z_s.shape[0]):
        for c in range(z_s.shape[1]):
            log_p, log_1p = -F.softplus(-z_t[n, c]), -F.softplus(z_t[n, c])  # log σ(x) = -softplus(-x)
            log_q, log_1q = -F.softplus(-z_s[n, c]), -F.softplus(z_s[n, c])
            total = total + log_p.exp() * (log_p - log_q) + log_1p.exp() * (log_1p - log_1q)
    return total / z_s.shape[0]


def grad(fn, z_s, z_t):
    z_s = z_s.clone().requires_grad_(True)
    value = fn(z_s, z_t)
    return value, torch.autograd.grad(value, z_s)[0]


def test_matches_loop_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3, torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    v, dz = grad(mld, z_s, z_t)
    v_ref, dz_ref = grad(loop_mld, z_s, z_t)
    torch.testing.assert_close(v, v_ref)
    torch.testing.assert_close(dz, dz_ref)
    torch.testing.assert_close(dz, (torch.sigmoid(z_s) - torch.sigmoid(z_t)) / 5)  # closed form


def test_extreme_logits_are_finite_and_correct():
    z_s = torch.tensor([[100.0, -100.0, 100.0, 0.0]], dtype=torch.float64)
    z_t = torch.tensor([[-100.0, 100.0, 100.0, -100.0]], dtype=torch.float64)
    v, dz = grad(mld, z_s, z_t)
    v_ref, _ = grad(loop_mld, z_s, z_t)
    assert torch.isfinite(v) and torch.isfinite(dz).all()
    torch.testing.assert_close(v, v_ref)
    torch.testing.assert_close(v, torch.tensor(200.0 + math.log(2.0), dtype=torch.float64))  # 100 + 100 + 0 + log 2
    torch.testing.assert_close(dz, torch.sigmoid(z_s) - torch.sigmoid(z_t))


def test_identical_is_exactly_zero():
    z = torch.randn(4, 6, dtype=torch.float64) * 50
    assert mld(z, z.clone()).item() == 0.0


def test_teacher_gets_no_gradient():
    z_s, z_t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    mld(z_s, z_t).backward()
    assert z_t.grad is None


def test_module_returns_named_term():
    z_s, z_t = torch.randn(3, 4), torch.randn(3, 4)
    batch = KDBatch(y=torch.zeros(3, 4), z_s=z_s, z_t=z_t, f_s=torch.zeros(3, 1), f_t=torch.zeros(3, 1), e_s=torch.zeros(3, 4, 1))
    out = DISTILL_LOSSES.get("MLD")()(batch)
    assert list(out) == ["mld"] and out["mld"] == mld(z_s, z_t)


def test_no_temperature_parameter():
    with pytest.raises(ConfigError, match=r"MLD got unknown parameter 'T'; valid: \(none\)"):
        DISTILL_LOSSES.get("MLD")(T=4.0)


def test_averaged_over_teachers_is_mld_from_the_mean_probability():
    """Why an ensemble averages its terms (docs/losses.md, "Several teachers"): the mean over K
    teachers of MLD(z_s, z_k) has the value MLD(z_s, z̄) + J and the gradient of MLD(z_s, z̄), with
    σ(z̄) the mean of the teachers' probabilities and J = H(mean p) - mean H(p_k) >= 0 (per
    entry, summed, / N) free of the student: distilling each teacher and averaging trains the
    student toward the ensemble's mean probability. float64."""
    g = torch.Generator().manual_seed(1)
    z_s = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    z_k = torch.randn(3, 6, 5, generator=g, dtype=torch.float64) * 3  # K = 3 teachers
    p_mean = torch.sigmoid(z_k).mean(0)
    z_mean = torch.log(p_mean) - torch.log1p(-p_mean)  # the logit of the mean probability

    def averaged(z, _):
        return sum(mld(z, z_k[k]) for k in range(3)) / 3

    def entropy(p):
        return -(p * p.log() + (1 - p) * (1 - p).log())

    v, dz = grad(averaged, z_s, None)
    v_mean, dz_mean = grad(mld, z_s, z_mean)
    jensen = (entropy(p_mean) - entropy(torch.sigmoid(z_k)).mean(0)).sum() / 6
    assert jensen > 0
    torch.testing.assert_close(v, v_mean + jensen)
    torch.testing.assert_close(dz, dz_mean)
