"""LED: label-wise embedding distillation (L2D), CD (class-aware) + ID (instance-aware).

Both parts are one relational distance loss :func:`rd` applied to groups of positive-label
embeddings: CD has one group per class (the batch images that carry it), ID one group per
image (its positive labels). Each part works on the list of its pairs of distinct tokens of one
group: their distances, per side, from each group's tokens centred on their mean, then the
per-group sums over that list. Nothing loops over classes or images, nothing is padded to the
largest group, and nothing of size ``[P, P, E]`` is formed.

Differences from L2D's ``cd.py`` / ``id.py`` / ``huber_dist.py`` (same math otherwise: distances
``sqrt(max(d², 1e-12))``, each matrix divided by the mean of its positive entries, teacher side
without gradient, smooth-L1 summed over the matrix and divided by its number of rows, groups
with < 2 members skipped, summed over groups):

- L2D finds a group's members as the rows that are not all zero after masking by the labels,
  so a positive embedding that is exactly zero is dropped (and student and teacher could then
  disagree on the member count). Here members are exactly the positive labels.
- L2D's pairwise matrix includes the (zero) diagonal in the smooth-L1 sum; it contributes 0,
  so excluding it, as here, gives the same value. Its matrix is symmetric, so each pair is
  computed once here and counted twice.
- L2D computes ``d²`` as ``|a|² + |b|² - 2a·b`` from the tokens as they are. Tokens of one group
  (a class's tokens, an image's tokens) often lie close together far from the origin, and that
  form then cancels: its rounding grows by ``(|a|² + |b|²) / d²``. Here each group is first
  centred on its own mean (:func:`token_distances`), which leaves its distances unchanged in
  exact arithmetic and makes the norms the form subtracts about as small as the distances.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, KDBatch, register_loss

__all__ = ["token_distances", "rd", "class_distance", "instance_distance", "led", "LED"]

EPS = 1e-12  # floor of a squared distance before sqrt (as L2D): keeps sqrt's gradient finite


# Devices where the products of the pairs are computed alone (a sampled sparse product); on
# the others one dense x @ x.T serves them (plain matrix kernels: torch's sparse ones were timed
# and checked on the CPU only).
SAMPLED_DEVICES = ("cpu",)


class _Pairs(NamedTuple):
    """The pairs ``i < j`` of distinct tokens of one group, for a grouping of ``P`` tokens.

    ``inv [P]`` compact group ids, ``members [G]`` tokens per group; ``i, j, group [Q]`` the
    pairs in row-major order and their group; ``crow [P + 1]`` the rows of ``(i, j)`` as a CSR
    pattern, and ``lower [Q]`` with ``lower_crow [P + 1]`` the same pairs as ``(j, i)`` (the
    transposed pattern, for the backward)."""

    inv: Tensor
    members: Tensor
    i: Tensor
    j: Tensor
    group: Tensor
    crow: Tensor
    lower: Tensor
    lower_crow: Tensor


def _pairs(group: Tensor) -> _Pairs:
    _, inv = torch.unique(group, return_inverse=True)
    k = torch.arange(len(inv), device=inv.device)
    upper = (inv[:, None] == inv[None, :]) & (k[:, None] < k[None, :])  # [P, P] bool: i < j, one group
    i, j = upper.nonzero(as_tuple=True)  # row-major
    crow, lower_crow = (F.pad(upper.sum(dim=d).cumsum(0), (1, 0)) for d in (1, 0))
    lower = torch.argsort(j * len(inv) + i)  # rows j, columns i: the transposed pattern's order
    return _Pairs(inv, torch.bincount(inv), i, j, inv[i], crow, lower, lower_crow)


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: int) -> Tensor:
    """A ``[size, size]`` CSR matrix (torch marks its CSR support beta: that note is not for users)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, (size, size), check_invariants=False)


def _sampled(x: Tensor) -> bool:
    return x.device.type in SAMPLED_DEVICES


def _pair_products(x: Tensor, pairs: _Pairs) -> Tensor:
    """``x_i·x_j`` for every pair ``[Q]`` (``x [P, E]``)."""
    if len(pairs.i) == 0:
        return x.new_zeros(0)
    if not _sampled(x):
        return (x @ x.T)[pairs.i, pairs.j]
    pattern = _csr(pairs.crow, pairs.j, x.new_ones(len(pairs.j)), len(x))
    return torch.sparse.sampled_addmm(pattern, x, x.T, beta=0.0).values()


def _pair_spread(w: Tensor, x: Tensor, pairs: _Pairs) -> Tensor:
    """``Σ_j w_ij x_j`` for each token ``[P, E]``, ``w [Q]`` given once per pair (symmetric)."""
    if len(pairs.i) == 0:
        return torch.zeros_like(x)
    if not _sampled(x):
        full = x.new_zeros(len(x), len(x)).index_put_((pairs.i, pairs.j), w).index_put_((pairs.j, pairs.i), w)
        return full @ x
    upper = _csr(pairs.crow, pairs.j, w, len(x))
    lower = _csr(pairs.lower_crow, pairs.i[pairs.lower], w[pairs.lower], len(x))
    return torch.sparse.mm(upper, x) + torch.sparse.mm(lower, x)


class _PairSquaredDistances(torch.autograd.Function):
    """``|x_i|² + |x_j|² - 2x_i·x_j`` ``[Q]`` for the pairs, from ``x [P, E]``. On the CPU only the
    pairs' products are computed, forward and backward (a few percent of ``x @ x.T``'s)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, pairs: _Pairs) -> Tensor:
        ctx.save_for_backward(x)
        ctx.pairs = pairs
        sq = x.pow(2).sum(dim=1)  # [P]
        return sq[pairs.i] + sq[pairs.j] - 2.0 * _pair_products(x, pairs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        pairs = ctx.pairs
        weight = x.new_zeros(len(x)).index_add_(0, pairs.i, grad).index_add_(0, pairs.j, grad)  # [P]
        # d²_ij moves with x_i by 2(x_i - x_j) and with x_j by 2(x_j - x_i)
        return 2.0 * (weight[:, None] * x - _pair_spread(grad, x, pairs)), None


def _pair_distances(e: Tensor, pairs: _Pairs) -> Tensor:
    """``sqrt(max(d², 1e-12))`` ``[Q]`` of the pairs: each group centred on its mean, then
    :class:`_PairSquaredDistances` (:func:`token_distances`)."""
    with torch.autocast(e.device.type, enabled=False):
        x = e if e.dtype in (torch.float32, torch.float64) else e.float()
        with torch.no_grad():  # a constant shift per group: the gradient is the distances' own
            count = pairs.members.to(x.dtype)  # [G]
            centre = x.new_zeros(len(count), x.shape[1]).index_add_(0, pairs.inv, x) / count[:, None]  # [G, E]
        d2 = _PairSquaredDistances.apply(x - centre[pairs.inv], pairs)  # [Q]
        return d2.clamp(min=EPS).sqrt()


def token_distances(e: Tensor, group: Tensor) -> Tensor:
    """Euclidean distances among the tokens of each group: ``e [P, E]``, ``group [P]`` int ->
    ``[P, P]``, ``sqrt(max(d², 1e-12))`` between two tokens of one group, 0 across groups and on
    the diagonal.

    Each group is centred on its mean first (a shift: its distances are unchanged in exact
    arithmetic), then ``d² = |x|² + |y|² - 2x·y``. Uncentred, that form loses
    ``(|a|² + |b|²) / d²`` times the rounding for tokens close together far from the origin (up
    to 67,000 among the digits teacher's tokens of one class); centred, the norms it subtracts
    are about the size of the group's spread, so it keeps nearly float32's precision. Only the
    pairs of one group are computed on the CPU (a sampled matrix product), with buffers of
    ``[P, E]`` and the pairs, never ``[P, P, E]``. Computed in float32 at least, outside any
    autocast region.
    """
    pairs = _pairs(group)
    d = _pair_distances(e, pairs)
    out = d.new_zeros(len(group), len(group))
    return out.index_put((pairs.i, pairs.j), d).index_put((pairs.j, pairs.i), d)


def _relational(d_s: Tensor, d_t: Tensor, pairs: _Pairs) -> Tensor:
    """:func:`rd` from the distances of the pairs ``[Q]``; each pair stands for both of its
    entries of the symmetric matrix."""
    g = len(pairs.members)
    members = pairs.members.to(d_s.dtype)  # [G]
    count = members * (members - 1) / 2  # [G] pairs per group

    def normalised(d: Tensor) -> Tensor:
        total = d.new_zeros(g).index_add(0, pairs.group, d)  # [G] sum of the group's distances
        mean = torch.where(count > 0, total / count.clamp(min=1), torch.ones_like(total))
        return d / mean[pairs.group]

    n_s = normalised(d_s)
    with torch.no_grad():
        n_t = normalised(d_t.to(d_s.dtype))
    err = F.smooth_l1_loss(n_s, n_t, reduction="none", beta=1.0)  # [Q]
    return (d_s.new_zeros(g).index_add(0, pairs.group, err) * 2.0 / members).sum()  # groups of 1 add 0


def rd(d_s: Tensor, d_t: Tensor, group: Tensor) -> Tensor:
    """Relational distance loss summed over groups, from symmetric token distance matrices.

    ``d_s, d_t [P, P]`` (student / teacher token distances, read between tokens of one group
    only), ``group [P]`` int (the group of each token: its class for CD, its image for ID). Per
    group: the distances among its members, each matrix divided by the mean of its entries
    (teacher side without grad); smooth-L1 (β=1) between them summed over the member pairs,
    divided by the number of members; groups with fewer than 2 members add 0; summed over groups.
    """
    pairs = _pairs(group)
    return _relational(d_s[pairs.i, pairs.j], d_t[pairs.i, pairs.j], pairs)


def _group_rd(s_tokens: Tensor, t_tokens: Tensor, group: Tensor) -> Tensor:
    """:func:`rd` of the student's and the teacher's token distances within each group."""
    pairs = _pairs(group)
    with torch.no_grad():
        d_t = _pair_distances(t_tokens.to(s_tokens.dtype), pairs)
    return _relational(_pair_distances(s_tokens, pairs), d_t, pairs)


def class_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """CD: :func:`rd` with one group per class over the images carrying it (tokens ``[P, E]``)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()  # 0, still connected to the student graph
    return _group_rd(s_tokens, t_tokens, token_class)


def instance_distance(s_tokens: Tensor, t_tokens: Tensor, token_sample: Tensor, token_class: Tensor) -> Tensor:
    """ID: :func:`rd` with one group per image over its positive labels (tokens ``[P, E]``)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()
    return _group_rd(s_tokens, t_tokens, token_sample)


def led(
    s_tokens: Tensor,
    t_tokens: Tensor,
    token_sample: Tensor,
    token_class: Tensor,
    lambda_cd: float = 100.0,
    lambda_id: float = 1000.0,
) -> Tensor:
    """``λ_cd·CD + λ_id·ID`` over the positive tokens (defaults as L2D's config)."""
    if s_tokens.shape[0] == 0:
        return s_tokens.sum()
    cd, id_ = _group_rd(s_tokens, t_tokens, token_class), _group_rd(s_tokens, t_tokens, token_sample)
    return lambda_cd * cd + lambda_id * id_


@register_loss("LED", slot="le")
class LED(DistillLoss):
    """``{"led_cd": λ_cd·CD, "led_id": λ_id·ID}`` (label-embedding slot); either cache form."""

    terms = ("led_cd", "led_id")

    def __init__(self, lambda_cd: float = 100.0, lambda_id: float = 1000.0) -> None:
        super().__init__()
        self.lambda_cd, self.lambda_id = lambda_cd, lambda_id

    def forward(self, batch: KDBatch) -> Dict[str, Tensor]:
        s_tokens, t_tokens, token_sample, token_class = batch.positive_tokens()
        if s_tokens.shape[0] == 0:
            zero = s_tokens.sum()
            return {"led_cd": zero, "led_id": zero}
        return {
            "led_cd": self.lambda_cd * class_distance(s_tokens, t_tokens, token_sample, token_class),
            "led_id": self.lambda_id * instance_distance(s_tokens, t_tokens, token_sample, token_class),
        }
