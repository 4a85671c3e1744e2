"""MPSCD against readable loop implementations (float64): values, gradients, prototype correction."""

from __future__ import annotations

import math

import pytest
import torch

from mlkd_cache.errors import ConfigError
from mlkd_cache.losses.base import DISTILL_LOSSES, KDBatch
from mlkd_cache.losses.mpscd import MPSCD, corrected_prototypes, pcrd, pcsd

N, C, E_S, E_T = 6, 5, 4, 3
EMPTY_CLASS = 4  # its prototype row is zero


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


# -- loop references ---------------------------------------------------------------------------


def loop_pcrd(u, v, classes, protos, tau):
    P = len(u)
    valid = [k for k in range(len(protos)) if protos[k].norm() > 0]
    total = 0.0
    for p in range(P):
        keys = [v[q] for q in range(P)] + [protos[k] for k in valid]
        denominator = sum(torch.exp(u[p] @ key / tau) for key in keys)
        numerator = torch.exp(u[p] @ v[p] / tau)
        if int(classes[p]) in valid:
            numerator = numerator + torch.exp(u[p] @ protos[int(classes[p])] / tau)
        total = total - torch.log(numerator / denominator)
    return total / P


def loop_kl(t_scores, s_scores):
    """KL(softmax(t) || softmax(s)) for two lists of scalars."""
    zt = sum(torch.exp(x) for x in t_scores)
    zs = sum(torch.exp(x) for x in s_scores)
    return sum(
        (torch.exp(a) / zt) * (torch.log(torch.exp(a) / zt) - torch.log(torch.exp(b) / zs)) for a, b in zip(t_scores, s_scores)
    )


def loop_pcsd(u, v, protos, tau_s):
    P = len(u)
    valid = [k for k in range(len(protos)) if protos[k].norm() > 0]
    total = 0.0
    for p in range(P):
        others = [q for q in range(P) if q != p]
        total = total + loop_kl([v[p] @ v[q] / tau_s for q in others], [u[p] @ u[q] / tau_s for q in others])
        total = total + loop_kl([v[p] @ protos[k] / tau_s for k in valid], [u[p] @ protos[k] / tau_s for k in valid])
    return total / P


def loop_correction(protos, v, classes, m):
    out = protos.clone()
    for c in range(len(protos)):
        members = [v[p] for p in range(len(v)) if int(classes[p]) == c]
        if members:
            out[c] = unit(m * protos[c] + (1 - m) * sum(members) / len(members))
    return out


# -- fixtures ----------------------------------------------------------------------------------


def make_prototypes(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(C, E_T, generator=g, dtype=torch.float64), dim=1)
    protos[EMPTY_CLASS] = 0
    return protos


def make_batch(seed: int = 0, y=None) -> KDBatch:
    g = torch.Generator().manual_seed(seed)
    if y is None:
        y = (torch.rand(N, C, generator=g) < 0.5).double()
        y[:, EMPTY_CLASS] = 0
        y[0, :2] = 1  # at least two tokens
    sample, cls = (y > 0.5).nonzero(as_tuple=True)
    order = torch.randperm(len(sample), generator=g)  # the cache's token order need not be sorted
    e_t = torch.randn(N, C, E_T, generator=g, dtype=torch.float64)
    return KDBatch(
        y=y,
        z_s=torch.randn(N, C, dtype=torch.float64),
        z_t=torch.randn(N, C, dtype=torch.float64),
        f_s=torch.randn(N, 2, dtype=torch.float64),
        f_t=torch.randn(N, 2, dtype=torch.float64),
        e_s=torch.randn(N, C, E_S, generator=g, dtype=torch.float64, requires_grad=True),
        t_tokens=e_t[sample, cls][order],
        token_sample=sample[order],
        token_class=cls[order],
    )


def make_loss(**para) -> MPSCD:
    torch.manual_seed(0)
    return MPSCD(E_S, E_T, C, prototypes=make_prototypes(), **para).double()


def loop_terms(loss: MPSCD, batch: KDBatch, protos: torch.Tensor):
    """(PCRD, PCSD) from per-token loops over the labels, with the module's projection head."""
    s, t, cls = [], [], []
    for i in range(N):
        for c in range(C):
            if batch.y[i, c] > 0.5:
                s.append(batch.e_s[i, c])
                t.append(batch.t_tokens[(batch.token_sample == i) & (batch.token_class == c)][0])
                cls.append(c)
    u = [unit(loss.proj.weight @ x + loss.proj.bias) for x in s]
    v = [unit(x) for x in t]
    return loop_pcrd(u, v, cls, protos, loss.tau), loop_pcsd(u, v, protos, loss.tau_s)


# -- pure functions ----------------------------------------------------------------------------


def test_pure_terms_match_loops_with_a_token_of_an_empty_class():
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(7, E_T, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(7, E_T, generator=g, dtype=torch.float64), dim=1)
    classes = torch.tensor([0, 1, 1, 2, 3, EMPTY_CLASS, 0])
    protos = make_prototypes()
    torch.testing.assert_close(pcrd(u, v, classes, protos, 0.2), loop_pcrd(u, v, classes, protos, 0.2))
    torch.testing.assert_close(pcsd(u, v, protos, 0.3), loop_pcsd(u, v, protos, 0.3))


def test_correction_equals_formula():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(6, E_T, generator=g, dtype=torch.float64)
    classes = torch.tensor([0, 0, 2, EMPTY_CLASS, 2, 2])
    protos = make_prototypes()
    got = corrected_prototypes(protos, v, classes, momentum=0.7)
    torch.testing.assert_close(got, loop_correction(protos, v, classes, 0.7))
    torch.testing.assert_close(got[[1, 3]], protos[[1, 3]], rtol=0, atol=0)  # absent classes unchanged


# -- the module --------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["mpscd_pcrd", "mpscd_pcsd"])
def test_module_values_and_gradients_match_loops(term):
    loss = make_loss(lambda_pcrd=0.5, lambda_pcsd=2.0, tau=0.2, tau_s=0.5).eval()
    batch = make_batch()
    weight = {"mpscd_pcrd": 0.5, "mpscd_pcsd": 2.0}[term]
    got = loss(batch)[term]
    ref_pcrd, ref_pcsd = loop_terms(loss, batch, make_prototypes())
    expected = weight * (ref_pcrd if term == "mpscd_pcrd" else ref_pcsd)
    torch.testing.assert_close(got, expected)
    inputs = (batch.e_s, loss.proj.weight, loss.proj.bias)
    for g_got, g_ref in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(expected, inputs)):
        torch.testing.assert_close(g_got, g_ref)


def test_training_uses_pre_update_prototypes_then_corrects_them():
    loss = make_loss(momentum=0.8)
    batch = make_batch()
    evaluated = loss.eval()(batch)
    trained = loss.train()(batch)
    for name in MPSCD.terms:
        torch.testing.assert_close(trained[name], evaluated[name])  # same prototypes in both
    _, t, _, cls = batch.positive_tokens()
    v = torch.nn.functional.normalize(t, dim=1)
    torch.testing.assert_close(loss.prototypes, loop_correction(make_prototypes(), v, cls, 0.8))
    before = loss.prototypes.clone()
    loss.eval()(batch)
    torch.testing.assert_close(loss.prototypes, before, rtol=0, atol=0)  # eval never updates


def test_identical_student_and_teacher_give_zero_pcsd():
    loss = MPSCD(E_T, E_T, C, prototypes=make_prototypes()).double()
    with torch.no_grad():
        loss.proj.weight.copy_(torch.eye(E_T))
        loss.proj.bias.zero_()
    batch = make_batch()
    dense = torch.zeros(N, C, E_T, dtype=torch.float64)
    dense[batch.token_sample, batch.token_class] = batch.t_tokens
    batch.e_s = dense.requires_grad_()
    out = loss(batch)
    assert abs(out["mpscd_pcsd"].item()) < 1e-12
    assert out["mpscd_pcrd"].item() > 0


@pytest.mark.parametrize("positives", [0, 1])
def test_fewer_than_two_tokens_give_zeros_with_a_graph(positives):
    loss = make_loss()
    y = torch.zeros(N, C, dtype=torch.float64)
    y[2, 1] = positives
    out = loss(make_batch(y=y))
    assert set(out) == set(MPSCD.terms)
    total = sum(out.values())
    assert total.item() == 0.0 and math.isfinite(total.item())
    total.backward()
    assert loss.proj.weight.grad is not None and not loss.proj.weight.grad.any()


def test_projection_head_receives_gradients():
    loss = make_loss()
    sum(loss(make_batch()).values()).backward()
    assert loss.proj.weight.grad.abs().sum() > 0 and loss.proj.bias.grad.abs().sum() > 0
    assert loss.prototypes.grad is None


def test_forward_without_prototypes_is_a_config_error():
    loss = MPSCD(E_S, E_T, C).double()
    with pytest.raises(ConfigError, match="no class prototypes.*set_prototypes"):
        loss(make_batch())
    loss.set_prototypes(make_prototypes())
    assert set(loss(make_batch())) == set(MPSCD.terms)


def test_prototypes_of_the_wrong_shape_are_refused():
    with pytest.raises(ConfigError, match=r"shape \[5, 4\], expected .* \[5, 3\]"):
        MPSCD(E_S, E_T, C, prototypes=torch.ones(C, 4))


def test_state_dict_carries_prototypes():
    trained = make_loss()
    fresh = MPSCD(E_S, E_T, C).double()
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh.prototypes, trained.prototypes)
    torch.testing.assert_close(fresh(make_batch())["mpscd_pcrd"], trained(make_batch())["mpscd_pcrd"])


def test_registered_with_context_parameters():
    build = DISTILL_LOSSES.get("MPSCD")
    loss = build(student_embed_dim=E_S, teacher_embed_dim=E_T, num_classes=C, prototypes=make_prototypes(), tau=0.05)
    assert isinstance(loss, MPSCD) and loss.tau == 0.05
    with pytest.raises(ConfigError, match="unknown parameter 'temperature'"):
        build(student_embed_dim=E_S, teacher_embed_dim=E_T, num_classes=C, temperature=0.1)
