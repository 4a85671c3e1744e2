"""LED (CD + ID) against per-class / per-image loops over explicit distance matrices (float64)."""

import pytest
import torch
import torch.nn.functional as F

from mlkd_cache.losses import led as led_module
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


@pytest.fixture(params=["sampled", "dense"])
def products(request, monkeypatch):
    """Both ways of computing the pairs' products: sampled (the CPU's) and one dense x @ x.T
    (every other device's), run here on the CPU."""
    if request.param == "dense":
        monkeypatch.setattr(led_module, "SAMPLED_DEVICES", ())
    return request.param


# Edge cases built in: class 3 has exactly one positive (skipped by CD), class 4 none,
# image 1 has exactly two positives, image 2 exactly one, image 5 none.
Y_EDGE = torch.tensor(
    [[1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]],
    dtype=torch.float64,
)


@pytest.mark.parametrize(
    "y", [Y_EDGE, (torch.rand(N, C, generator=torch.Generator().manual_seed(3)) < 0.5).double()], ids=["edge", "random"]
)
def test_matches_loop_value_and_gradient(y, products):
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


def test_positive_form_equals_dense_form(products):
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


def test_coincident_embeddings_have_finite_gradient(products):
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


U32 = 2.0**-24  # float32's unit roundoff


def centred_bound(tokens: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``[P, P]`` bound of |float32 token_distances - exact| from the arithmetic it does, in float64.

    Rounding the float64 tokens to float32 moves a distance by up to u(|a| + |b|). Centring each
    group on its computed mean is a common shift (the distances keep no trace of how the mean
    rounded) and rounds each centred token x by up to u|x|, moving d by u(|x| + |y|). The form
    |x|² + |y|² - 2x·y errs by at most (E + 3)u(|x| + |y|)² (the E-term dot products and norms,
    then two additions), which moves d by that over d; the root adds u·d. Uncentred, the same
    form errs by (E + 3)u(|a| + |b|)² / d: what the centring takes away."""
    exact = torch.cdist(tokens, tokens)
    members = group[:, None] == group[None, :]
    centre = torch.stack([tokens[group == g].mean(dim=0) for g in group.tolist()])
    a, x = tokens.norm(dim=1), (tokens - centre).norm(dim=1)
    E = tokens.shape[1]
    bound = U32 * (a[:, None] + a[None, :]) + U32 * (x[:, None] + x[None, :])
    bound = bound + (E + 3) * U32 * (x[:, None] + x[None, :]) ** 2 / exact.clamp(min=1e-300) + U32 * exact
    return torch.where(members, bound, torch.zeros_like(bound))


def clusters(sizes, dim, radius, spread, seed=0):
    """Groups of tokens, each within ``spread`` of its own centre at distance ~``radius`` from the origin."""
    g = torch.Generator().manual_seed(seed)
    parts, group = [], []
    for k, m in enumerate(sizes):
        centre = radius * F.normalize(torch.randn(1, dim, generator=g, dtype=torch.float64), dim=1)
        parts.append(centre + spread * torch.randn(m, dim, generator=g, dtype=torch.float64) / dim**0.5)
        group += [k] * m
    perm = torch.randperm(sum(sizes), generator=g)  # members of a group need not be adjacent
    return torch.cat(parts)[perm], torch.tensor(group)[perm]


@pytest.mark.parametrize(
    "sizes, dim, radius, spread",
    [
        ((8,), 64, 800.0, 0.08),  # |a|² / d² about 10^8: the uncentred form keeps no digit
        ((187,), 768, 250.0, 1.0),  # COCO's positives of a batch in one class, |a| / d about 180
        ((5, 2, 31, 9, 1), 32, 50.0, 0.5),  # several groups far apart: each centred on its own mean
    ],
    ids=["far-from-origin", "coco-one-class", "several-groups"],
)
def test_distances_of_close_tokens_keep_their_precision(sizes, dim, radius, spread, products):
    """Tokens of a group close together far from the origin: float32 distances within the bound
    of the arithmetic they do (:func:`centred_bound`), for every pair of one group; 0 across
    groups and on the diagonal. L2D's uncentred |a|² + |b|² - 2a·b breaks that bound."""
    from mlkd_cache.losses.led import token_distances

    tokens, group = clusters(sizes, dim, radius, spread)
    members = (group[:, None] == group[None, :]) & ~torch.eye(len(group), dtype=torch.bool)
    got = token_distances(tokens.float(), group).double()
    exact = torch.cdist(tokens, tokens)
    bound = centred_bound(tokens, group)
    err = (got - exact).abs()
    assert bool((err <= bound)[members].all()), float((err / bound)[members].max())
    assert bool((got[~members] == 0).all())
    t = tokens.float()
    sq = t.pow(2).sum(dim=1)
    uncentred = (sq[:, None] + sq[None, :] - 2 * t @ t.T).clamp(min=1e-12).sqrt().double()
    assert bool(((uncentred - exact).abs() > bound)[members].any())


def test_distance_gradients_match_finite_differences(products):
    """The pair distances' own backward (sparse products on the CPU, one dense product
    elsewhere) against finite differences, in float64, over several groups."""
    from mlkd_cache.losses.led import token_distances

    tokens, group = clusters((4, 3, 1), 5, 3.0, 1.0)
    assert torch.autograd.gradcheck(lambda e: token_distances(e, group), (tokens.requires_grad_(True),))


def test_float32_distances_and_gradient_at_coco_sizes(products):
    """At COCO's sizes (187 tokens, E = 768, classes of 1 to 40 images) each way of computing
    the products gives the float64 distances and gradient within what float32 rounding allows:
    the distances within :func:`centred_bound`; each gradient term ``w_ij (x_i - x_j) / d_ij`` is
    a unit vector times ``w_ij``, moved by the relative error of its distance and of its
    difference (both within ``centred_bound / d``), so each coordinate of the gradient within
    ``Σ_j |w_ij| 4 bound_ij / d_ij``."""
    tokens, group = clusters((40, 25, 12, 9, 5, 3, 2, 2, 1, 1, *[2] * 40, *[1] * 7), 768, 30.0, 1.0)
    weights = torch.rand(len(group), len(group), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    members = (group[:, None] == group[None, :]) & ~torch.eye(len(group), dtype=torch.bool)

    def run(dtype):
        e = tokens.detach().clone().to(dtype).requires_grad_(True)
        d = led_module.token_distances(e, group)
        (d * weights.to(dtype)).sum().backward()
        return d.detach().double(), e.grad.double()

    exact_d, exact_g = run(torch.float64)
    bound = centred_bound(tokens, group)
    relative = torch.where(members, bound / exact_d.clamp(min=1e-300), torch.zeros_like(bound))
    grad_bound = (weights.abs() * 4 * relative).sum(dim=1, keepdim=True)  # [P, 1], every coordinate
    d, g = run(torch.float32)
    assert len(group) == 187 and bool((d[members] > 0).all())
    assert bool(((d - exact_d).abs() <= bound).all())
    assert bool(((g - exact_g).abs() <= grad_bound).all()), float(((g - exact_g).abs() / grad_bound).max())


def test_distances_ignore_autocast(products):
    """Under an autocast region (a user's training loop) the distances are the float32 ones,
    however the products are computed."""
    from mlkd_cache.losses.led import token_distances

    tokens, group = clusters((6, 4), 16, 20.0, 0.5)
    want = token_distances(tokens.float(), group)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = token_distances(tokens.float(), group)
        half = token_distances(tokens.bfloat16(), group)
    assert got.dtype == half.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(half, token_distances(tokens.bfloat16().float(), group))
