"""EpochSampler: DistributedSampler's order, indices that carry their epoch, one epoch per pass."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mlkd_cache.data.sampler import EpochIndex, EpochSampler


class Epochs(Dataset):
    """Items that say which epoch reached them."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: EpochIndex) -> torch.Tensor:
        return torch.tensor([key.sample, key.epoch])


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_the_order_is_distributed_samplers(world, rank):
    for epoch in (0, 4):
        ours, theirs = EpochSampler(Epochs(), world, rank, seed=5), DistributedSampler(Epochs(), world, rank, seed=5)
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert list(ours) == [EpochIndex(i, epoch) for i in theirs]


@pytest.mark.parametrize("batch_size", [None, 3])
def test_each_pass_is_the_next_epoch_in_persistent_workers(batch_size):
    """Without set_epoch, pass e carries epoch e to a worker that persists; with batch_size=None
    the DataLoader makes an iterator it never reads, which takes no epoch. set_epoch chooses the
    next pass's epoch, and the passes after it follow on."""
    sampler = EpochSampler(Epochs(), seed=0)
    loader = DataLoader(Epochs(), batch_size=batch_size, sampler=sampler, num_workers=1, persistent_workers=True)

    def one_pass():
        items = torch.cat([b.reshape(-1, 2) for b in loader])
        assert sorted(items[:, 0].tolist()) == list(range(10))
        return sorted(set(items[:, 1].tolist()))

    assert [one_pass() for _ in range(3)] == [[0], [1], [2]]
    sampler.set_epoch(7)
    assert [one_pass() for _ in range(2)] == [[7], [8]]


def test_defaults_and_bad_epochs():
    sampler = EpochSampler(Epochs(), num_replicas=2)  # no process group: the first share
    assert (sampler.num_replicas, sampler.rank) == (2, 0)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        sampler.set_epoch(-1)
