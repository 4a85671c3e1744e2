"""LED (CD + ID) against per-class / per-image loops over explicit distance matrices (float64)."""

import pytest
import torch
import torch.nn.functional as F

from mlkd_cache.losses.base import DISTILL_LOSSES, KDBatch
from mlkd_cache.losses.led import class_distance, instance_distance

N, C, E_S, E_T = 6, 5, 4, 3


def distance_matrix(members):
    """d[i][j] = sqrt(max(|a_i - a_j|², 1e-12)) for i != j; divided by the mean over i != j."""
    m = len(members)
    d = [[None] * m for _ in range(m)]
    for i in range(m):
        for j in range(m):
            if i != j:
                d[i][j] = ((members[i] - members[j]) ** 2).sum().clamp(min=1e-12).sqrt()
    mean = sum(d[i][j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return [[d[i][j] / mean if i != j else None for j in range(m)] for i in range(m)]


def loop_rd(s_members, t_members):
    """Smooth-L1 between the two normalised matrices over i != j, divided by the member count."""
    m = len(s_members)
    if m < 2:
        return 0.0
    d_s = distance_matrix(s_members)
    d_t = distance_matrix([t.detach() for t in t_members])
    total = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                total = total + F.smooth_l1_loss(d_s[i][j], d_t[i][j], reduction="sum", beta=1.0)
    return total / m


def loop_cd(e_s, e_t, y):
    total = e_s.new_zeros(())
    for c in range(y.shape[1]):
        images = [n for n in range(y.shape[0]) if y[n, c] == 1]
        total = total + loop_rd([e_s[n, c] for n in images], [e_t[n, c] for n in images])
    return total


def loop_id(e_s, e_t, y):
    total = e_s.new_zeros(())
    for n in range(y.shape[0]):
        labels = [c for c in range(y.shape[1]) if y[n, c] == 1]
        total = total + loop_rd([e_s[n, c] for c in labels], [e_t[n, c] for c in labels])
    return total


def make(y, seed=0):
    g = torch.Generator().manual_seed(seed)
    e_s = torch.randn(*y.shape, E_S, generator=g, dtype=torch.float64)
    e_t = torch.randn(*y.shape, E_T, generator=g, dtype=torch.float64)
    return e_s, e_t


def batch_of(y, e_s, e_t, form):
    common = dict(
        y=y, z_s=torch.zeros(y.shape), z_t=torch.zeros(y.shape), f_s=torch.zeros(len(y), 1), f_t=torch.zeros(len(y), 1), e_s=e_s
    )
    if form == "dense":
        return KDBatch(e_t=e_t, **common)
    sample, cls = y.nonzero(as_tuple=True)
    perm = torch.randperm(len(sample), generator=torch.Generator().manual_seed(1))  # cache order need not be sorted
    return KDBatch(t_tokens=e_t[sample, cls][perm], token_sample=sample[perm], token_class=cls[perm], **common)


def led_terms(y, e_s, e_t, form="dense"):
    e_s = e_s.clone().requires_grad_(True)
    out = DISTILL_LOSSES.get("LED")(lambda_cd=100.0, lambda_id=1000.0)(batch_of(y, e_s, e_t, form))
    grads = torch.autograd.grad(out["led_cd"] + out["led_id"], e_s)[0]
    return out, grads


def loop_terms(y, e_s, e_t):
    e_s = e_s.clone().requires_grad_(True)
    out = {"led_cd": 100.0 * loop_cd(e_s, e_t, y), "led_id": 1000.0 * loop_id(e_s, e_t, y)}
    grads = torch.autograd.grad(out["led_cd"] + out["led_id"], e_s)[0]
    return out, grads


# Edge cases built in: class 3 has exactly one positive (skipped by CD), class 4 none,
# image 1 has exactly two positives, image 2 exactly one, image 5 none.
Y_EDGE = torch.tensor(
    [[1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]],
    dtype=torch.float64,
)


@pytest.mark.parametrize(
    "y", [Y_EDGE, (torch.rand(N, C, generator=torch.Generator().manual_seed(3)) < 0.5).double()], ids=["edge", "random"]
)
def test_matches_loop_value_and_gradient(y):
    e_s, e_t = make(y)
    out, grads = led_terms(y, e_s, e_t)
    ref, ref_grads = loop_terms(y, e_s, e_t)
    assert set(out) == {"led_cd", "led_id"}
    torch.testing.assert_close(out["led_cd"], ref["led_cd"])
    torch.testing.assert_close(out["led_id"], ref["led_id"])
    torch.testing.assert_close(grads, ref_grads)
    assert out["led_cd"] > 0 and out["led_id"] > 0


def test_single_positive_class_and_image_add_nothing():
    y = torch.zeros(N, C, dtype=torch.float64)
    y[0, 0] = 1  # one image carries class 0 and has one label: no group of >= 2
    e_s, e_t = make(y)
    out, grads = led_terms(y, e_s, e_t)
    assert out["led_cd"].item() == 0.0 and out["led_id"].item() == 0.0
    assert torch.equal(grads, torch.zeros_like(grads))


def test_no_positives_is_zero_with_finite_gradient():
    y = torch.zeros(N, C, dtype=torch.float64)
    e_s, e_t = make(y)
    for form in ("dense", "positive"):
        out, grads = led_terms(y, e_s, e_t, form)
        assert out["led_cd"].item() == 0.0 and out["led_id"].item() == 0.0
        assert torch.equal(grads, torch.zeros_like(grads))


def test_positive_form_equals_dense_form():
    y = (torch.rand(N, C, generator=torch.Generator().manual_seed(4)) < 0.6).double()
    e_s, e_t = make(y)
    dense, g_dense = led_terms(y, e_s, e_t, "dense")
    positive, g_positive = led_terms(y, e_s, e_t, "positive")
    assert torch.equal(dense["led_cd"], positive["led_cd"]) and torch.equal(dense["led_id"], positive["led_id"])
    assert torch.equal(g_dense, g_positive)


def test_identical_student_and_teacher_is_zero():
    y = Y_EDGE
    e, _ = make(y)
    out, grads = led_terms(y, e, e.clone())
    assert out["led_cd"].item() == 0.0 and out["led_id"].item() == 0.0
    assert torch.isfinite(grads).all()


def test_coincident_embeddings_have_finite_gradient():
    y = torch.ones(3, 2, dtype=torch.float64)
    e_s = torch.ones(3, 2, E_S, dtype=torch.float64)  # all members at one point: distances at the floor
    _, e_t = make(y)
    out, grads = led_terms(y, e_s, e_t)
    ref, ref_grads = loop_terms(y, e_s, e_t)
    assert torch.isfinite(grads).all()
    torch.testing.assert_close(out["led_cd"], ref["led_cd"])
    torch.testing.assert_close(grads, ref_grads)


def test_pure_functions_take_tokens():
    y = Y_EDGE
    e_s, e_t = make(y)
    sample, cls = y.nonzero(as_tuple=True)
    tokens = (e_s[sample, cls], e_t[sample, cls], sample, cls)
    torch.testing.assert_close(class_distance(*tokens), loop_cd(e_s, e_t, y))
    torch.testing.assert_close(instance_distance(*tokens), loop_id(e_s, e_t, y))


def test_distances_of_close_tokens_keep_their_precision():
    """Tokens of one class close together, far from the origin (|a|² / d² about 10^8): the
    distances computed in float32 from the differences are the float64 ones within a few float32
    ulps of themselves; |a|² + |b|² - 2a·b would lose every digit there."""
    from mlkd_cache.losses.led import token_distances

    g = torch.Generator().manual_seed(0)
    centre = 100.0 * torch.randn(1, 64, generator=g, dtype=torch.float64)
    tokens = centre + 1e-2 * torch.randn(8, 64, generator=g, dtype=torch.float64)
    exact = token_distances(tokens)
    got = token_distances(tokens.float()).double()
    off = ~torch.eye(8, dtype=torch.bool)
    # the float32 tokens are rounded (2^-24 of |a| = 6e-6 of ~800) before any distance: that error
    # enters d directly, not amplified
    bound = 4 * 2.0**-24 * tokens.abs().max() + 16 * 2.0**-24 * exact
    assert bool(((got - exact).abs() <= bound)[off].all()), float(((got - exact).abs() / exact)[off].max())
