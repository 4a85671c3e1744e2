"""The dataset wrapper every trainer uses: items with replayable augmented views.

An item is a :class:`ViewItem` ``(image, labels, sample, view, fingerprint)``, and torch's
default collation turns a list of them into one ``ViewItem`` of batched tensors:

* ``image``: ``[3, img_size, img_size]``; for training the view
  :class:`~mlkd_cache.data.transforms.ReplayableTransform` makes from the seed
  ``view_seed(base_seed, keys[index], view)``, for evaluation the
  :class:`~mlkd_cache.data.transforms.EvalTransform` view; float32 (the model's input) or, with
  ``image_dtype="uint8"``, its uint8 pixels (:func:`~mlkd_cache.data.transforms.model_input`
  converts a batch on the device, to the same floats);
* ``labels``: float32 ``[C]`` (0/1);
* ``sample`` (the sample's index in the split), ``view``: Python ints (collated into int64 ``[N]``);
* ``epoch``: the epoch the item was drawn for (an int; -1 for an explicit ``(sample, view)``
  pair of :meth:`ViewDataset.get`), and ``epoch_from_index``: True when that epoch came with the
  index (an :class:`~mlkd_cache.data.sampler.EpochIndex`), False when it came from
  :meth:`ViewDataset.set_epoch`, the dataset's state in the process that built the item;
* ``fingerprint``: the 64-bit :func:`~mlkd_cache.data.transforms.fingerprint` of the view's
  uint8 pixels (``fingerprint_of="uint8"``, cache format 2) or of its float32 input
  (``"float32"``, the caches of format 1), as a *signed* int64 (``to_signed``; ``to_unsigned`` gives back the value stored in the
  cache), or 0 when the item is not fingerprinted: ``with_fingerprint=True`` fingerprints
  every item, a float ``p`` in (0, 1) a deterministic share ``p`` of the samples of each epoch
  (chosen by :meth:`ViewDataset.is_checked`), False none.

An index is an int (the epoch is the dataset's, set by :meth:`ViewDataset.set_epoch`) or an
:class:`~mlkd_cache.data.sampler.EpochIndex` ``(index, epoch)`` that carries its epoch to the
DataLoader worker, persistent or not (:class:`~mlkd_cache.data.sampler.EpochSampler` draws them).

Which view an epoch uses (:meth:`ViewDataset.view_of`):

* teacher training (``train=True, views=None``): view = epoch, a fresh view every epoch that
  can still be regenerated later;
* student replay of a cache with V views (``train=True, views=V``): view =
  ``(epoch + offset_i) % V`` with ``offset_i = view_seed(base_seed, key_i, -1) % V``, so over
  any V consecutive epochs each sample visits each cached view exactly once, and samples are
  not all on the same view in the same epoch;
* evaluation (``train=False``): view 0 (the deterministic eval transform).
"""

from __future__ import annotations

import collections
import operator
from typing import Any, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .sampler import EpochIndex
from .transforms import EvalTransform, ReplayableTransform, TransformSpec, fingerprint, to_float, to_signed, view_seed

__all__ = ["ViewItem", "ViewDataset", "PairViews", "view_pairs", "eval_inputs", "IMAGE_DTYPES", "FINGERPRINT_INPUTS"]

IMAGE_DTYPES = ("float32", "uint8")  # what a ViewItem's image holds: the model's input, or its pixels
FINGERPRINT_INPUTS = ("uint8", "float32")  # what a fingerprint hashes: the pixels, or the float input


class ViewItem(NamedTuple):
    """One item of a :class:`ViewDataset`, or a batch of them (``[N, ...]`` once collated)."""

    image: torch.Tensor  # float32 or uint8 [3, H, W] (batch: [N, 3, H, W])
    labels: torch.Tensor  # float32 [C] 0/1 (batch: [N, C])
    sample: Any  # int index of the sample in the split (batch: int64 [N])
    view: Any  # int view (batch: int64 [N])
    fingerprint: Any  # signed int64 fingerprint of image, 0 = not fingerprinted (batch: int64 [N])
    epoch: Any = -1  # int epoch the item was drawn for, -1 = an explicit (sample, view) (batch: int64 [N])
    epoch_from_index: Any = False  # bool: the epoch came with the index, not from set_epoch (batch: bool [N])

    @staticmethod
    def with_targets(typename: str, module: str) -> Any:
        """A named-tuple class of these fields, then ``cached``: the base of a batch that a
        collate function returns with the cached teacher targets of its (sample, view) pairs
        (``class CachedBatch(Base)``, ``Base = ViewItem.with_targets("CachedBatch", __name__)``),
        which adds its methods and the type of ``cached``. Its fields are read from here, so a
        field added to ``ViewItem`` reaches every such batch."""
        return collections.namedtuple(typename, (*ViewItem._fields, "cached"), module=module)


class ViewDataset(torch.utils.data.Dataset):
    """:class:`ViewItem` items for one split, with replayable views."""

    def __init__(
        self,
        dataset: Any,
        spec: TransformSpec,
        base_seed: int,
        train: bool,
        views: Optional[int] = None,
        with_fingerprint: Union[bool, float] = False,
        image_dtype: str = "float32",
        fingerprint_of: str = "uint8",
    ) -> None:
        if not isinstance(spec, TransformSpec):
            raise TypeError(
                f"spec must be a TransformSpec, got {type(spec).__name__}: TransformSpec.from_config(cfg), "
                f"TransformSpec.from_dict(d) or a cache's spec.transform_spec"
            )
        if isinstance(base_seed, bool) or not isinstance(base_seed, (int, np.integer)):
            raise TypeError(f"base_seed must be an int, got {type(base_seed).__name__}")
        if views is not None:
            if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or views < 1:
                raise ValueError(f"views must be a positive int or None, got {views!r}")
            views = int(views)
        share = float(with_fingerprint)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"with_fingerprint must be a bool or a share in [0, 1], got {with_fingerprint!r}")
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {', '.join(IMAGE_DTYPES)}, got {image_dtype!r}")
        if fingerprint_of not in FINGERPRINT_INPUTS:
            raise ValueError(f"fingerprint_of must be one of {', '.join(FINGERPRINT_INPUTS)}, got {fingerprint_of!r}")
        n_keys, n_labels = len(dataset.keys), len(dataset.labels)
        if n_keys != n_labels:
            raise ValueError(f"dataset has {n_keys} keys but {n_labels} label rows")
        self.dataset = dataset
        self.spec = spec
        self.base_seed = int(base_seed)
        self.train = bool(train)
        self.views = views
        self.fingerprint_share = share
        self.image_dtype = image_dtype
        self.fingerprint_of = fingerprint_of
        self.epoch = 0
        self.transform = ReplayableTransform(spec) if self.train else EvalTransform(spec)

    # -- bookkeeping ------------------------------------------------------------------------

    @property
    def keys(self):
        return self.dataset.keys

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels

    @property
    def class_names(self):
        return self.dataset.class_names

    def __len__(self) -> int:
        return len(self.dataset.keys)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views :meth:`__getitem__` returns (call before each epoch;
        DataLoader workers created afterwards, or persistent ones re-created, see it)."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def _index(self, index: Any) -> int:
        i = operator.index(index)
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        return i

    def seed_of(self, index: int, view: int) -> int:
        """The unsigned 64-bit view seed of ``(index, view)``."""
        return view_seed(self.base_seed, self.dataset.keys[self._index(index)], int(view))

    def is_checked(self, index: int, epoch: int) -> bool:
        """Whether sample ``index`` is fingerprinted in ``epoch``: always for a share of 1, never
        for 0, else when ``view_seed(base_seed, key, -2 - epoch) < share * 2**64`` (a fresh,
        reproducible draw per sample and epoch)."""
        share = self.fingerprint_share
        if share >= 1.0 or share <= 0.0:
            return share >= 1.0
        draw = view_seed(self.base_seed, self.dataset.keys[self._index(index)], -2 - operator.index(epoch))
        return draw < share * 2.0**64

    def view_of(self, index: int, epoch: int) -> int:
        """The view sample ``index`` uses in ``epoch`` (rules in the module docstring)."""
        if not self.train:
            return 0
        epoch = operator.index(epoch)
        if self.views is None:
            return epoch
        offset = view_seed(self.base_seed, self.dataset.keys[self._index(index)], -1) % self.views
        return (epoch + offset) % self.views

    # -- items ------------------------------------------------------------------------------

    def get(self, index: int, view: int, with_fingerprint: Optional[bool] = None) -> ViewItem:
        """The item of an explicit ``(sample, view)`` (used by the cache dump); fingerprinted when
        ``with_fingerprint`` says so (None: when the share is 1)."""
        return self.get_views(index, [view], with_fingerprint)[0]

    def prepared(self, index: int) -> Image.Image:
        """Sample ``index``'s image after the deterministic first step every view shares
        (decode, RGB, resize to ``img_size`` square): what a cache's image store holds."""
        i = self._index(index)
        size = self.spec.decode_size  # asked only when decode='reduced': datasets may define load_image(index)
        img = self.dataset.load_image(i) if size is None else self.dataset.load_image(i, size)
        return self.transform.prepare(img)

    def get_views(self, index: int, views: Sequence[int], with_fingerprint: Optional[bool] = None) -> List[ViewItem]:
        """The items of sample ``index`` under each of ``views``, from one decode and one resize
        of its image (:meth:`prepared`): the same items as :meth:`get` of each ``(index, view)``,
        for a fraction of the work (the cache dump makes all V views at once)."""
        return self.views_from(self.prepared(index), index, views, with_fingerprint)

    def views_from(
        self, prepared: Image.Image, index: int, views: Sequence[int], with_fingerprint: Optional[bool] = None
    ) -> List[ViewItem]:
        """The items of sample ``index`` under ``views``, made from ``prepared`` (its
        :meth:`prepared` image, or the image a cache stores for it)."""
        i = self._index(index)
        wanted = [operator.index(v) for v in views]
        for view in wanted:
            if self.views is not None and self.train and not 0 <= view < self.views:
                raise IndexError(f"view {view} out of range for {self.views} views")
        labels = torch.from_numpy(np.asarray(self.dataset.labels[i], dtype=np.float32).copy())
        if with_fingerprint is None:
            with_fingerprint = self.fingerprint_share >= 1.0
        transform = self.transform
        if isinstance(transform, ReplayableTransform):  # train=True
            pixels = [transform.pixels(prepared, self.seed_of(i, view)) for view in wanted]
        else:
            pixels = [transform.pixels(prepared) for _ in wanted]
        mean, std = self.spec.mean, self.spec.std
        floats = [to_float(p, mean, std) for p in pixels] if self.image_dtype == "float32" else None
        prints = [0] * len(pixels)
        if with_fingerprint:
            hashed = pixels if self.fingerprint_of == "uint8" else floats or [to_float(p, mean, std) for p in pixels]
            prints = [to_signed(fingerprint(x)) for x in hashed]
        images = floats if floats is not None else pixels
        return [ViewItem(image, labels, i, view, fp) for image, view, fp in zip(images, wanted, prints)]

    def __getitem__(self, index: Union[int, EpochIndex]) -> ViewItem:
        """The item of ``index`` under the view of its epoch: the one an
        :class:`~mlkd_cache.data.sampler.EpochIndex` carries, else the dataset's (:meth:`set_epoch`)."""
        if isinstance(index, tuple):
            i, epoch = EpochIndex(*index)
            epoch = operator.index(epoch)
            if epoch < 0:
                raise ValueError(f"epoch must be >= 0, got {epoch} in {index!r}")
            carried = True
        else:
            i, epoch, carried = index, self.epoch, False
        item = self.get(i, self.view_of(i, epoch), self.is_checked(i, epoch))
        return item._replace(epoch=epoch, epoch_from_index=carried)

    def __repr__(self) -> str:
        name = getattr(self.dataset, "name", type(self.dataset).__name__)
        split = getattr(self.dataset, "split", "?")
        mode = "eval" if not self.train else ("epoch views" if self.views is None else f"{self.views} views")
        return f"ViewDataset({name}/{split}, n={len(self)}, {mode}, seed={self.base_seed})"


def view_pairs(start: int, stop: int, views: int) -> np.ndarray:
    """The (sample, view) pairs of samples ``start..stop-1`` under ``views`` views, sample-major
    (the order a dump runs the teacher in): int64 ``[(stop - start) * views, 2]``."""
    samples = np.repeat(np.arange(start, stop, dtype=np.int64), views)
    return np.stack([samples, np.tile(np.arange(views, dtype=np.int64), stop - start)], axis=1)


class PairViews(torch.utils.data.Dataset):
    """The items of ``view_data`` for an explicit list of (sample, view) ``pairs`` (int64 ``[P, 2]``)."""

    def __init__(self, view_data: ViewDataset, pairs: np.ndarray) -> None:
        self.view_data, self.pairs = view_data, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, j: int) -> ViewItem:
        index, view = self.pairs[j]
        return self.view_data.get(int(index), int(view))


def eval_inputs(dataset: Any, spec: TransformSpec, image_dtype: str = "uint8") -> ViewDataset:
    """The one eval input pipeline: every sample of ``dataset`` (a split, a cache's stored split
    or :class:`~mlkd_cache.data.image_files.ImageFiles`) as a model with input spec ``spec``
    sees it at test time: decoded (at reduced size where ``spec.decode`` says so), RGB, resized
    to ``img_size`` square, as uint8 pixels ``[3, S, S]`` (``image_dtype="float32"``: the float
    input itself). :func:`~mlkd_cache.data.transforms.model_input` converts a uint8 batch on the
    device to the floats :meth:`~mlkd_cache.data.transforms.EvalTransform.__call__` gives.
    Items are in dataset order; no view seed is drawn (the base seed plays no part)."""
    return ViewDataset(dataset, spec, 0, train=False, image_dtype=image_dtype)
