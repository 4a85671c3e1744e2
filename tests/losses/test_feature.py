"""RKD and PKT against loops over sample pairs / triples (float64), D_s != D_t."""

import pytest
import torch
import torch.nn.functional as F

from mlkd_cache.errors import ConfigError
from mlkd_cache.losses.base import DISTILL_LOSSES, KDBatch
from mlkd_cache.losses.feature import pkt, rkd

N, D_S, D_T = 5, 6, 9


def loop_distance_term(f_s, f_t):
    def normalised(f):
        d = [
            [((f[i] - f[j]) ** 2).sum().clamp(min=1e-12).sqrt() if i != j else f.new_zeros(()) for j in range(N)]
            for i in range(N)
        ]
        mean = sum(d[i][j] for i in range(N) for j in range(N) if i != j) / (N * (N - 1))
        return [[d[i][j] / mean for j in range(N)] for i in range(N)]

    d_s, d_t = normalised(f_s), normalised(f_t.detach())
    return sum(F.smooth_l1_loss(d_s[i][j], d_t[i][j], reduction="sum") for i in range(N) for j in range(N)) / N


def loop_angle_term(f_s, f_t):
    def cos(f, a, b, c):
        u, v = f[b] - f[a], f[c] - f[a]
        if b == a or c == a:
            return f.new_zeros(())  # a zero difference vector has cosine 0 with anything
        return (u * v).sum() / (u.norm() * v.norm())

    f_t = f_t.detach()
    terms = [
        F.smooth_l1_loss(cos(f_s, a, b, c), cos(f_t, a, b, c), reduction="sum")
        for a in range(N)
        for b in range(N)
        for c in range(N)
    ]
    return sum(terms) / N**3


def loop_rkd(f_s, f_t):
    return 25.0 * loop_distance_term(f_s, f_t) + 50.0 * loop_angle_term(f_s, f_t)


def loop_pkt(f_s, f_t, eps=1e-7):
    def distribution(f):
        unit = [f[i] / (f[i].norm() + eps) for i in range(N)]
        sim = [[((unit[i] * unit[j]).sum() + 1) / 2 for j in range(N)] for i in range(N)]
        return [[sim[i][j] / sum(sim[i]) for j in range(N)] for i in range(N)]

    q_s, q_t = distribution(f_s), distribution(f_t.detach())
    return sum(q_t[i][j] * torch.log((q_t[i][j] + eps) / (q_s[i][j] + eps)) for i in range(N) for j in range(N)) / N**2


def features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D_S, generator=g, dtype=torch.float64), torch.randn(N, D_T, generator=g, dtype=torch.float64)


def value_and_grad(fn, f_s, f_t):
    f_s = f_s.clone().requires_grad_(True)
    v = fn(f_s, f_t)
    return v, torch.autograd.grad(v, f_s)[0]


@pytest.mark.parametrize("fn, ref", [(rkd, loop_rkd), (pkt, loop_pkt)], ids=["rkd", "pkt"])
def test_matches_loop_value_and_gradient(fn, ref):
    f_s, f_t = features()
    v, g = value_and_grad(fn, f_s, f_t)
    v_ref, g_ref = value_and_grad(ref, f_s, f_t)
    torch.testing.assert_close(v, v_ref)
    torch.testing.assert_close(g, g_ref)
    assert v > 0


@pytest.mark.parametrize("fn", [rkd, pkt], ids=["rkd", "pkt"])
def test_identical_is_zero_with_finite_gradient(fn):
    f, _ = features()
    v, g = value_and_grad(fn, f, f.clone())
    assert v.item() == 0.0 and torch.isfinite(g).all()


def test_rkd_weights_and_modules():
    f_s, f_t = features(1)
    batch = KDBatch(y=torch.zeros(N, 2), z_s=torch.zeros(N, 2), z_t=torch.zeros(N, 2), f_s=f_s, f_t=f_t, e_s=torch.zeros(N, 2, 1))
    assert DISTILL_LOSSES.get("RKD")(w_dist=10.0, w_angle=10.0)(batch)["rkd"] == rkd(f_s, f_t, 10.0, 10.0)
    assert list(DISTILL_LOSSES.get("PKT")()(batch)) == ["pkt"]
    with pytest.raises(ConfigError, match=r"RKD got unknown parameter 'x'; valid: w_dist, w_angle"):
        DISTILL_LOSSES.get("RKD")(x=10)
