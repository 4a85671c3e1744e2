"""A cache replayed: each sample's augmented view, rebuilt from the cache's seeds, next to the
teacher's targets for exactly that view. This is what a training loop reads, ours or yours.

* :func:`~mlkd_cache.cache.reader.open_cache` opens a cache and checks it against the dataset
  and input pipeline a student trains on (the checks of ``distill-student``);
* :class:`CachedViews` is a ``torch.utils.data.Dataset`` of :class:`~mlkd_cache.data.views.ViewItem`
  s whose :attr:`~CachedViews.collate` adds the cached targets of the batch's (sample, view)
  pairs (a :class:`CachedBatch`), read inside the DataLoader workers; :meth:`CachedViews.targets`
  compares the fingerprints of a share of the inputs with the cached ones and returns the
  teacher fields of :class:`~mlkd_cache.losses.base.KDBatch`.

In epoch ``e`` sample ``i`` uses view ``(e + offset_i) % V`` (:mod:`mlkd_cache.data.views`), so
any ``V`` consecutive epochs visit every cached view of every sample once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from .._version import __version__
from ..data import build_dataset, dataset_from_config
from ..data.holdout import val_split_record
from ..data.sampler import EpochIndex, EpochSampler
from ..data.transforms import TransformSpec, model_input, to_unsigned
from ..data.views import ViewDataset, ViewItem
from ..device import as_device
from ..errors import CacheCorruptError, CacheMismatchError, ConfigError
from .format import VIEW_FIELDS
from .reader import TargetCache, check_fits, check_store_fits, open_cache

__all__ = [
    "CachedBatch",
    "CachedTargetsCollate",
    "CachedViews",
    "check_replay",
    "check_finite",
]


_CachedBatchFields: Any = ViewItem.with_targets("CachedBatch", __name__)


class CachedBatch(_CachedBatchFields):
    """A named tuple: the fields of a batch of :class:`~mlkd_cache.data.views.ViewItem` (in
    its order, each ``[N, ...]`` as documented there), then ``cached``, the cached teacher
    targets of exactly its (sample, view) pairs (:meth:`TargetCache.get`)."""

    __slots__ = ()
    cached: Dict[str, Tensor]  # TargetCache.get(sample, view): logits [N, C], features [N, D], embeddings

    def teacher_targets(self, device: torch.device, layout_keys: Sequence[Sequence[str]]) -> Dict[str, Tensor]:
        """The teacher fields of :class:`~mlkd_cache.losses.base.KDBatch` on ``device``: float32
        ``z_t [N, C]``, ``f_t [N, D]`` and the embeddings of the cache's layout (``layout_keys``:
        ``EmbeddingLayout.batch_keys``), e.g. ``t_tokens [P, E]`` with ``token_sample`` /
        ``token_class [P]`` int64; of those the cache holds (``spec.outputs``)."""
        non_blocking = device.type == "cuda"
        out = {
            f.kd: self.cached[f.name].to(device, non_blocking=non_blocking).float()
            for f in VIEW_FIELDS
            if f.kd and f.name in self.cached  # a teacher that gave only some outputs: only those
        }
        for key, kd in layout_keys:
            if key not in self.cached:
                continue
            t = self.cached[key].to(device, non_blocking=non_blocking)
            out[kd] = t.float() if t.is_floating_point() else t
        return out


class CachedTargetsCollate:
    """DataLoader ``collate_fn``: the default collation of :class:`ViewItem` items plus
    ``cache.get(sample, view)``, as a :class:`CachedBatch`. Runs in the worker processes; the
    cache opens its memory maps lazily in each of them."""

    def __init__(self, cache: TargetCache) -> None:
        self.cache = cache

    def __call__(self, items: List[ViewItem]) -> CachedBatch:
        batch = default_collate(items)
        cached = self.cache.get(batch.sample, batch.view)
        return CachedBatch(**batch._asdict(), cached=cached)


def check_replay(batch: CachedBatch, cache: TargetCache, keys: Sequence[str]) -> int:
    """Compare the fingerprints of the batch's fingerprinted inputs (non-zero) with the cached
    ones; returns how many were compared. A difference means the student does not see the
    picture the teacher saw: :class:`~mlkd_cache.errors.CacheMismatchError` naming the sample."""
    fp, cached = batch.fingerprint, batch.cached["fingerprint"]
    checked = fp != 0
    n = int(checked.sum())
    bad = checked & (fp != cached)
    if n and bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        i, v = int(batch.sample[j]), int(batch.view[j])
        raise CacheMismatchError(
            f"replay diverged: sample {i} ({keys[i]}) view {v} is not the image the teacher saw when the cache "
            f"{cache.directory} was dumped (input fingerprint {to_unsigned(int(fp[j])):016x}, cached "
            f"{to_unsigned(int(cached[j])):016x}); the augmentation code or a library changed "
            f"(cache written by mlkd-cache {cache.spec.tool_version}, this is {__version__}); "
            f"re-run dump-targets in this environment"
        )
    return n


def check_finite(batch: CachedBatch, cache: TargetCache, position: str = "") -> None:
    """:class:`~mlkd_cache.errors.CacheCorruptError` naming the samples when a cached float
    target of the batch is NaN or infinite (a teacher that diverged, or a damaged shard)."""
    for name, t in batch.cached.items():  # the float targets: VIEW_FIELDS of the cache dtype and the embeddings
        if not t.is_floating_point() or bool(torch.isfinite(t).all()):
            continue
        rows = ~torch.isfinite(t).reshape(len(t), -1).all(dim=1)
        where = batch.cached["token_sample"][rows] if name == "tokens" else rows.nonzero()[:, 0]
        samples = sorted({int(batch.sample[int(b)]) for b in where[:8]})
        at = f" (at {position})" if position else ""
        raise CacheCorruptError(
            f"{cache.directory}: cached teacher {name} are not finite for samples {samples}{at}; the teacher "
            f"diverged or the shard is damaged: run `mlkd-cache verify` and re-run dump-targets"
        )


class CachedViews(Dataset):
    """The train split ``dataset`` replayed under a cache's views, with the cached targets.

    Items are :class:`~mlkd_cache.data.views.ViewItem` (``image [3, H, W]`` float32, ``labels
    [C]``, ``sample``, ``view``, ``fingerprint``, ``epoch``); pass :attr:`collate` as the
    DataLoader's ``collate_fn`` to get :class:`CachedBatch` es. The epoch decides each sample's
    view: draw indices with :meth:`sampler` (each index carries its epoch, and each pass is the
    next epoch), or call :meth:`set_epoch` before each epoch with a sampler of your own (not with
    persistent workers, which keep the epoch they started with). :meth:`targets` refuses a batch
    whose epoch could not have reached its worker, an epoch skipped by a pass that did not train,
    and a second pass over the data when the epoch was never set. ``replay_check`` is the share
    of each epoch's samples whose input fingerprints :meth:`targets` compares with the cache
    (0 = off, 1 = all).
    """

    def __init__(self, dataset: Any, cache: TargetCache, replay_check: float = 0.05, image_dtype: str = "float32") -> None:
        spec = cache.spec
        self.cache = cache
        self.transform = spec.transform_spec
        self.view_data = ViewDataset(
            dataset,
            self.transform,
            spec.base_seed,
            train=True,
            views=spec.views,
            with_fingerprint=replay_check,
            image_dtype=image_dtype,
            fingerprint_of=cache.fingerprint_of,
        )
        self.checked = 0  # fingerprints compared (this process; set_epoch resets it)
        self._epoch_set = False  # set_epoch was called: int indices follow it
        self._drawn = 0  # samples of int indices seen by targets() while set_epoch was never called
        self._last_carried: Optional[int] = None  # the newest epoch an index carried to targets()

    @classmethod
    def from_cache(
        cls,
        directory: Union[str, Path],
        data_root: Optional[str] = None,
        config: Any = None,
        replay_check: float = 0.05,
        verify_checksums: bool = False,
        image_dtype: str = "float32",
    ) -> "CachedViews":
        """The views of the cache in ``directory``. A cache with an image store serves its stored
        train split (no dataset folder) unless ``data_root`` or ``config`` is given. Otherwise
        the split is rebuilt from what the cache records (the manifest's ``made_with``: dataset,
        ``dataset_para``, data root; the spec's ``val_split``, held out as the dump held it out),
        with no config. ``data_root`` overrides the recorded folder
        (the data moved). With a ``config`` (:class:`~mlkd_cache.config.Config`) the split is the
        config's, and it and the config's transform must be the dump's, as :func:`open_cache`
        checks them (:class:`CacheMismatchError` naming the first difference). ``image_dtype``:
        ``"float32"`` inputs or ``"uint8"`` pixels (convert batches with :meth:`to_input`)."""
        cache = open_cache(Path(directory), verify_checksums=verify_checksums)
        if cache.spec.stores_images and data_root is None:  # the store is the split: no dataset folder
            if config is not None:
                spec = TransformSpec.from_config(config)
                check_store_fits(cache, config.dataset, config.dataset_params("s"), config.bad_images, spec)
                check_fits(cache, None, spec, val_split=val_split_record(config.val_split))
            return cls(cache.stored_split("train"), cache, replay_check, image_dtype)
        if cache.spec.images == "jpeg":
            raise CacheMismatchError(
                f"{directory}: its views were made from its stored JPEG pixels, not from the photographs in {data_root}; "
                f"drop data_root to read the store"
            )
        made = cache.manifest.get("made_with")
        if not isinstance(made, dict):
            raise CacheMismatchError(
                f"{directory}: this cache does not record how its train split was built (written by mlkd-cache "
                f"{cache.spec.tool_version}); build the split yourself and pass it: CachedViews(dataset, open_cache(...)), "
                f"or re-run dump-targets with this version"
            )
        if config is not None:  # the config's split and pipeline, checked against the dump as open_cache checks them
            root = data_root if data_root is not None else (config.data_root or made.get("data_root"))
            dataset = dataset_from_config(config.replace(data_root=root), "train")
            check_fits(cache, dataset, TransformSpec.from_config(config), name=config.dataset)
        else:
            root = data_root if data_root is not None else made.get("data_root")
            params = dict(made.get("dataset_para") or {})
            dataset = build_dataset(
                cache.spec.dataset,
                "train",
                root,
                bad_images=made.get("bad_images", "error"),
                val_split=cache.spec.val_split,  # the dump's train split: the same val split held out
                **params,
            )
            check_fits(cache, dataset)
        return cls(dataset, cache, replay_check, image_dtype)

    def eval_split(self) -> ViewDataset:
        """The evaluation split the cache's image store holds, as eval :class:`ViewItem` s
        (``image_dtype`` as these views'); :class:`CacheMismatchError` without a store."""
        split = self.cache.stored_split("eval")
        return ViewDataset(split, self.transform, self.cache.spec.base_seed, train=False, image_dtype=self.view_data.image_dtype)

    def to_input(self, image: Tensor, device: Union[str, torch.device]) -> Tensor:
        """A batch's ``image`` (uint8 pixels or float32) as the model's float32 input on
        ``device``, the same floats as the dump's (:func:`~mlkd_cache.data.transforms.model_input`)."""
        return model_input(image, self.transform, as_device(device))

    def __len__(self) -> int:
        return len(self.view_data)

    def __getitem__(self, index: Union[int, EpochIndex]) -> ViewItem:
        return self.view_data[index]

    def sampler(
        self,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> EpochSampler:
        """An :class:`~mlkd_cache.data.sampler.EpochSampler` over these views: pass it as the
        DataLoader's ``sampler`` (any ``num_workers``, persistent or not). Each pass over the
        loader is the next epoch; ``sampler.set_epoch(e)`` chooses the next one (a resume).
        ``num_replicas`` and ``rank`` default to the process group's (torchrun), else 1 and 0."""
        return EpochSampler(self, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's views for plain int indices (DataLoader workers started after this
        call see it; persistent ones do not: use :meth:`sampler` with them)."""
        self.view_data.set_epoch(epoch)
        self.checked = 0
        self._epoch_set = True

    @property
    def collate(self) -> CachedTargetsCollate:
        return CachedTargetsCollate(self.cache)

    def _check_epochs(self, batch: CachedBatch) -> None:
        """One line naming the fix when the epoch could not have reached a batch's items: indices
        that carry their epoch skipped one (a pass that did not train took it); a persistent
        worker built the views of an epoch before the last set_epoch; or the epoch was never
        set and more samples were drawn than the data holds (every pass replays one view)."""
        carried, epochs = batch.epoch_from_index, batch.epoch
        if bool(carried.any()):
            newest = int(epochs[carried].max())
            last = self._last_carried
            if last is not None and last < newest - 1 and int(epochs[carried].min()) > last:
                raise ConfigError(
                    f"CachedViews: batches jumped from epoch {last} to {newest}: a pass over the loader that did not "
                    f"train (train-set metrics, next(iter(loader))) took epoch {last + 1}; give such passes a "
                    f"DataLoader of their own, or call sampler.set_epoch(epoch) before each training epoch"
                )
            self._last_carried = newest  # lower than before: a new run started over
        state = ~carried & (epochs >= 0)  # the epoch came from set_epoch (-1: an explicit (sample, view) pair)
        if not bool(state.any()):
            return
        now = self.view_data.epoch
        if self._epoch_set:
            stale = state & (epochs != now)
            if bool(stale.any()):
                raise ConfigError(
                    f"CachedViews: a batch drawn for epoch {int(epochs[stale][0])} arrived after set_epoch({now}): "
                    f"DataLoader workers that persist (persistent_workers=True) keep the epoch they started with; "
                    f"pass sampler=views.sampler() to the DataLoader (each index then carries its epoch) or drop "
                    f"persistent_workers"
                )
            return
        self._drawn += int(state.sum())
        if self._drawn > len(self):
            raise ConfigError(
                f"CachedViews: {self._drawn} samples drawn under epoch {now} and set_epoch never called, more than the "
                f"{len(self)} the data holds: every pass would replay the same view of each sample; pass "
                f"sampler=views.sampler() to the DataLoader (each pass is then the next epoch) or call "
                f"views.set_epoch(epoch) before each epoch"
            )

    def targets(self, batch: CachedBatch, device: Union[str, torch.device], position: str = "") -> Dict[str, Tensor]:
        """The teacher fields of :class:`~mlkd_cache.losses.base.KDBatch` for ``batch``, on
        ``device`` (a ``torch.device`` or a name such as ``"cuda:0"``), after the epoch,
        fingerprint and finiteness checks (:func:`check_replay`, :func:`check_finite`);
        ``position`` (e.g. "epoch 3 step 20") is named by their errors."""
        if not isinstance(batch, CachedBatch):
            raise TypeError(f"CachedViews.targets needs a CachedBatch (collate_fn=views.collate), got {type(batch).__name__}")
        device = as_device(device)
        self._check_epochs(batch)
        self.checked += check_replay(batch, self.cache, self.view_data.keys)
        check_finite(batch, self.cache, position)
        return batch.teacher_targets(device, self.cache.spec.layout.batch_keys)
