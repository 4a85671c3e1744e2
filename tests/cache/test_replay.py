"""CachedBatch: the fields of a ViewItem batch, read from ViewItem, then the cached targets."""

from __future__ import annotations

import pickle

import torch
from torch.utils.data._utils.collate import default_collate

from mlkd_cache.cache.replay import CachedBatch, CachedTargetsCollate
from mlkd_cache.data.views import ViewItem


class _Cache:
    """What the collate function asks of a TargetCache: ``get(sample, view)``."""

    def get(self, sample, view):
        return {"logits": (sample * 10 + view).float()[:, None].repeat(1, 3)}


def items():
    return [ViewItem(torch.full((3, 2, 2), float(i)), torch.tensor([1.0, 0.0, 1.0]), i, i % 2, 100 + i, 5) for i in range(4)]


def test_a_batch_with_targets_has_the_fields_of_view_item_then_cached():
    assert CachedBatch._fields == (*ViewItem._fields, "cached")
    other = ViewItem.with_targets("OtherBatch", __name__)
    assert other._fields == CachedBatch._fields and other.__name__ == "OtherBatch"
    batch = CachedTargetsCollate(_Cache())(items())
    assert isinstance(batch, CachedBatch) and repr(batch).startswith("CachedBatch(image=tensor(")
    plain = default_collate(items())
    for name in ViewItem._fields:
        assert torch.equal(getattr(batch, name), getattr(plain, name)), name
    assert batch.view.tolist() == [0, 1, 0, 1] and batch.epoch.tolist() == [5] * 4
    assert batch.cached["logits"][:, 0].tolist() == [0.0, 11.0, 20.0, 31.0]


def test_a_batch_with_targets_survives_a_worker_and_pinning():
    """A DataLoader worker pickles the batch; pin_memory rebuilds a named tuple from its values."""
    batch = CachedTargetsCollate(_Cache())(items())
    for copy in (pickle.loads(pickle.dumps(batch)), type(batch)(*batch)):
        assert type(copy) is CachedBatch and copy._fields == batch._fields
        assert all(torch.equal(a, b) for a, b in zip(copy[:-1], batch[:-1]))
        assert torch.equal(copy.cached["logits"], batch.cached["logits"])
    moved = batch._replace(image=batch.image + 1)
    assert type(moved) is CachedBatch and torch.equal(moved.image, batch.image + 1) and moved.cached is batch.cached
    assert batch._asdict()["cached"] is batch.cached
