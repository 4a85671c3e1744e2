"""Indices that carry their epoch: :class:`EpochIndex` and :class:`EpochSampler`.

Which cached view a sample replays depends on the epoch. A dataset that keeps the epoch as state
(``set_epoch``) is wrong in DataLoader workers that outlive an epoch (``persistent_workers=True``:
they keep the epoch they started with) and in every loop that forgets to call it: the student
then replays one view per sample for the whole run. An :class:`EpochIndex` takes the epoch to
the worker with the index, so every worker, persistent or not, builds the view of the epoch the
index was drawn for.

:class:`EpochSampler` is :class:`torch.utils.data.DistributedSampler` (the same order for the
same seed, epoch, rank and number of processes; one process by default) whose indices are
:class:`EpochIndex` es. Each pass over it is the next epoch: ``for epoch in range(E): for batch
in loader`` replays the right views without a call; :meth:`EpochSampler.set_epoch` chooses the
epoch of the next pass (a resumed run), as ``DistributedSampler.set_epoch`` does.
"""

from __future__ import annotations

import operator
from typing import Any, Iterator, NamedTuple, Optional

import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = ["EpochIndex", "EpochSampler"]


class EpochIndex(NamedTuple):
    """A dataset index (``sample``) and the epoch it was drawn for."""

    sample: int
    epoch: int


class EpochSampler(DistributedSampler):
    """:class:`~torch.utils.data.DistributedSampler` yielding :class:`EpochIndex` items.

    Args:
        dataset: anything with ``len()`` (a :class:`~mlkd_cache.data.views.ViewDataset`, a
            ``CachedViews``).
        num_replicas, rank: the processes sharing each epoch (default: the process group's when
            one is initialised as the sampler is built, else 1 and 0; with ``num_replicas`` given
            and other than the group's size, ``rank`` defaults to 0).
        shuffle, seed, drop_last: as ``DistributedSampler`` (a new permutation per epoch from
            ``seed + epoch``; ``drop_last`` drops the tail that does not split evenly over the
            processes).

    Each pass is one epoch: 0 first, then the next one, unless :meth:`set_epoch` chose it. A pass
    begins when its first index is drawn; a pass that does not train (train-set metrics over the
    same loader, a ``next(iter(loader))`` to look at a batch) takes an epoch too: give such passes
    a loader of their own.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        grouped = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if grouped else 1
        num_replicas = world if num_replicas is None else num_replicas
        if rank is None:  # this process's rank when the sampler spans the process group, else the first share
            rank = dist.get_rank() if grouped and num_replicas == world else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._chosen = True  # the first pass is epoch 0 (or what set_epoch says before it)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next pass; later passes continue from it."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        super().set_epoch(epoch)
        self._chosen = True

    def __iter__(self) -> Iterator[EpochIndex]:
        # A generator: the epoch moves on when a pass draws its first index, not when iter() is
        # called (a DataLoader may create an iterator it never reads).
        if not self._chosen:
            self.epoch += 1  # a new pass without set_epoch: the next epoch
        self._chosen = False
        epoch = self.epoch
        for i in super().__iter__():
            yield EpochIndex(int(i), epoch)
