"""Stage 1b: ``dump-targets``. Runs the trained teacher once over every (training sample, view)
and writes logits, pooled features and label-wise embeddings into HDF5 shards.

Each shard is computed by exactly one process (the shards still to write are dealt out over the
ranks in turn: on a fresh dump, shard k by rank ``k % world``) in the same batches whatever the
world size, so a torchrun dump equals a single-process dump. Shards are
atomic; a re-run skips complete shards whose attributes match and redoes the rest;
``manifest.json`` is written last, by rank 0, once every shard is complete.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate
from tqdm import tqdm

from .._version import __version__
from ..cache.format import (
    EVAL_PREFIX,
    MANIFEST_NAME,
    OUTPUT_SIZES,
    OUTPUT_WORDS,
    SHARD_PREFIX,
    TEACHER_OUTPUTS,
    CacheSpec,
    eval_name,
    labels_digest,
    part_glob,
    part_ranges,
    shard_name,
    split_digest,
)
from ..cache.h5 import open_read
from ..cache.images import encode_image
from ..cache.writer import EvalBuffer, ShardBuffer, ShardWriter, eval_is_complete, shard_entry, shard_is_complete, write_manifest
from ..config import Config
from ..data import MultiLabelDataset, dataset_from_config
from ..data.base import label_summary
from ..data.holdout import val_split_record
from ..data.planning import PlannedSplit, planned_train_split
from ..data.transforms import TransformSpec, model_input
from ..data.views import ViewDataset, ViewItem, eval_inputs
from ..device import amp_enabled, autocast_for, place_model
from ..distributed import (
    DistInfo,
    agree,
    all_gather_objects,
    bar_disabled,
    barrier,
    check_shared_folder,
    init_distributed,
)
from ..errors import CacheMismatchError, ConfigError, MlkdError
from ..fileio import file_sha256
from ..models.card import ModelCard
from ..runtime.ranks import check_same_config, check_same_split
from ..runtime.targets import outputs_needed
from ..runtime.teachers import TeacherSpec, check_teacher_fits, open_teacher, open_teacher_on_ranks, planned_card

log = logging.getLogger("mlkd_cache")


Stored = List[Tuple[int, np.ndarray]]  # (sample index, what the image store keeps for it)


class SampleViews(Dataset):
    """The ``views`` views of each sample ``start..stop-1`` of ``view_data``, one sample an item
    (a :class:`ViewItem` batch ``[V, ...]`` and the sample's stored image, or ``None``), each
    from one decode and resize of its image. With an image store (``images`` raw or jpeg) the
    views are made from what the store keeps: a JPEG's decoding, so replay is exact."""

    def __init__(self, view_data: ViewDataset, start: int, stop: int, views: int, images: str = "none", quality: int = 0) -> None:
        self.view_data, self.start, self.stop, self.views = view_data, start, stop, views
        self.images, self.quality = images, quality

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, j: int) -> Tuple[ViewItem, Optional[np.ndarray]]:
        i = self.start + j
        prepared, stored = self.view_data.prepared(i), None
        if self.images != "none":
            stored, prepared = encode_image(prepared, self.images, self.quality)
        return default_collate(self.view_data.views_from(prepared, i, range(self.views))), stored


def _cat(batches: Sequence[ViewItem]) -> ViewItem:
    return ViewItem(*(torch.cat(parts) for parts in zip(*batches)))


def _cat_loaded(items: Sequence[Tuple[ViewItem, Optional[np.ndarray]]]) -> Tuple[ViewItem, Stored]:
    batch = _cat([views for views, _ in items])
    return batch, [(int(views.sample[0]), data) for views, data in items if data is not None]


def view_batches(
    view_data: ViewDataset,
    start: int,
    stop: int,
    views: int,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    images: str = "none",
    quality: int = 0,
) -> Iterator[Tuple[ViewItem, Stored]]:
    """:class:`ViewItem` batches of the (sample, view) pairs of samples ``start..stop-1`` in
    :func:`~mlkd_cache.data.views.view_pairs` order, ``batch_size`` pairs each (the last may hold fewer): the batches
    the teacher has always been run on, while the loader's workers decode each sample once. Each
    comes with the stored images (``images`` raw or jpeg) of the samples loaded since the last."""
    loader = DataLoader(
        SampleViews(view_data, start, stop, views, images, quality),
        batch_size=max(1, -(-batch_size // views)),  # samples per load: about one teacher batch
        shuffle=False,
        num_workers=workers,
        collate_fn=_cat_loaded,
    )

    def own(batch: ViewItem) -> ViewItem:  # images in a buffer of their own (pinned for CUDA), as a loader's batch
        return batch._replace(image=batch.image.pin_memory() if pin_memory else batch.image.clone())

    pending: Optional[ViewItem] = None
    stored: Stored = []
    for loaded, encoded in loader:
        pending = loaded if pending is None else _cat([pending, loaded])
        stored.extend(encoded)
        while len(pending.sample) >= batch_size:
            yield own(ViewItem(*(t[:batch_size] for t in pending))), stored
            stored = []
            pending = ViewItem(*(t[batch_size:] for t in pending))
    if pending is not None and len(pending.sample):
        yield own(pending), stored


class StoreImages(Dataset):
    """What the image store keeps for each eval sample ``start..stop-1`` (its eval transform's
    resize, encoded): one ``(index, data)`` an item."""

    def __init__(self, view_data: ViewDataset, start: int, stop: int, images: str, quality: int) -> None:
        self.view_data, self.start, self.stop, self.images, self.quality = view_data, start, stop, images, quality

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, j: int) -> Tuple[int, np.ndarray]:
        i = self.start + j
        return i, encode_image(self.view_data.prepared(i), self.images, self.quality)[0]


def stored_outputs(cfg: Config, given: Sequence[str]) -> Tuple[str, ...]:
    """The teacher outputs a dump under ``cfg`` stores, of those the teacher ``given`` s
    (``cache.fields``): with ``auto``, logits and what the config's distiller reads (an output
    the teacher lacks is left out; a student that needs it is refused); else the listed ones,
    each of which the teacher must give."""
    fields = cfg.cache["fields"]
    if fields == "auto":
        return tuple(o for o in outputs_needed(cfg.criterion_t2s_para) if o in given)
    unknown = [f for f in fields if f not in TEACHER_OUTPUTS]
    if unknown:
        raise ConfigError(f"cache.fields names {unknown[0]!r}; choose among {', '.join(TEACHER_OUTPUTS)}, or 'auto'")
    if "logits" not in fields:
        raise ConfigError("cache.fields must hold logits (every distiller, inspect and verify read them); add 'logits'")
    missing = [f for f in fields if f not in given]
    if missing:
        raise CacheMismatchError(
            f"cache.fields asks for the teacher's {OUTPUT_WORDS[missing[0]]}, and the teacher gives only "
            f"{', '.join(OUTPUT_WORDS[o] for o in given)}; drop {missing[0]!r} from cache.fields"
        )
    return tuple(o for o in TEACHER_OUTPUTS if o in fields)


def build_spec(cfg: Config, card: ModelCard, teacher_sha256: str, dataset, views: int, transform: TransformSpec) -> CacheSpec:
    """The cache a dump of ``dataset`` by the teacher of ``card`` under this config will produce."""
    outputs = stored_outputs(cfg, card.outputs)
    # the size of each stored output, as the card records it (feature_dim, embed_dim); 0 for the others
    sizes: Dict[str, Any] = {size: getattr(card, size) if output in outputs else 0 for output, size in OUTPUT_SIZES.items()}
    return CacheSpec(
        num_samples=len(dataset),
        views=views,
        num_classes=card.num_classes,
        **sizes,
        dtype=cfg.cache["dtype"],
        embedding=cfg.cache["embedding"],
        shard_size=cfg.cache["shard_size"],
        class_names=tuple(dataset.class_names),
        dataset=cfg.dataset,
        split="train",
        img_size=cfg.img_size,
        transform=transform.to_dict(),
        transform_hash=transform.spec_hash(),
        normalisation={"mean": list(transform.mean), "std": list(transform.std)},
        base_seed=cfg.seed,
        teacher_arch=card.arch,
        teacher_sha256=teacher_sha256,
        outputs=outputs,
        labels_sha256=labels_digest(dataset.labels),
        tool_version=__version__,
        images=cfg.cache["images"],
        jpeg_quality=cfg.cache["jpeg_quality"] if cfg.cache["images"] == "jpeg" else 0,
        val_split=val_split_record(cfg.val_split),
    )


def _existing_conflicts(out: Path, spec: CacheSpec) -> List[str]:
    """Shard files in ``out`` that belong to another dump (readable, attributes differ)."""
    conflicts = []
    for path in sorted(out.glob(part_glob(SHARD_PREFIX))):
        try:
            with open_read(path) as fh:
                other = CacheSpec.from_attrs(dict(fh.attrs))
        except Exception:
            continue  # unreadable: damaged, it will be rewritten
        if other != spec:
            conflicts.append(path.name)
    return conflicts


def _previous_entries(out: Path, spec: CacheSpec, stored_eval: bool = False) -> Dict[int, Dict[str, Any]]:
    """Shard entries (size, sha256) of the manifest in ``out`` when it records this same dump
    (``stored_eval``: its eval parts' entries instead); empty when there is none, it is
    unreadable or it belongs to another dump."""
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
        if CacheSpec.from_dict(manifest["spec"]) != spec:
            return {}
        entries = manifest["eval"]["shards"] if stored_eval else manifest["shards"]
        return {int(e["index"]): dict(e) for e in entries}
    except Exception:  # absent or damaged: every file is then judged by its attributes alone
        return {}


def _kept(path: Path, entry: Dict[str, Any], previous: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``entry`` when ``path`` matches the size and sha256 an earlier manifest of this dump lists
    (or none lists it), else ``None`` with a warning: its bytes changed since that dump."""
    if previous is None:
        return entry
    if path.stat().st_size == int(previous["bytes"]) and file_sha256(path) == previous["sha256"]:
        return previous
    log.warning(
        "dump-targets: %s changed since the dump that wrote it (sha256 differs from %s); rewriting it", path.name, MANIFEST_NAME
    )
    return None


def _reusable_entry(out: Path, spec: CacheSpec, k: int, previous: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The manifest entry of shard ``k`` if the file in ``out`` can be kept, else ``None``.

    A kept shard has this dump's attributes and shapes and, when an earlier manifest of this dump
    lists it, the same size and sha256 (bytes flipped inside a data block pass every other check).
    """
    path = out / shard_name(k)
    if not shard_is_complete(path, spec, k):
        return None
    return _kept(path, shard_entry(out, spec, k) if previous is None else previous, previous)


def prepare_out_dir(out: Path, spec: CacheSpec, overwrite: bool, info: DistInfo) -> Tuple[List[int], List[Dict[str, Any]]]:
    """Make ``out`` ready; return (shard indices still to write, manifest entries of the shards
    kept from an earlier run); every rank judges its share of the shards and gets the whole answer.

    A folder whose manifest records this same dump is ours: its missing, truncated, foreign or
    altered shards are rewritten. Without such a manifest, shards of another dump are refused
    (they may be someone's cache) unless ``overwrite``.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    previous = {} if overwrite or not out.exists() else _previous_entries(out, spec)
    conflicts = [] if overwrite or previous or not out.exists() else _existing_conflicts(out, spec)
    if conflicts:  # every rank reads the same files, so every rank stops here alike
        raise CacheMismatchError(
            f"{out} holds shards of another dump ({conflicts[0]}: other teacher, data, views or "
            f"settings); pass --overwrite to replace them or choose another --out"
        )
    barrier(info)  # every rank has read the old manifest before rank 0 removes it
    if info.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / MANIFEST_NAME).unlink(missing_ok=True)  # never look complete while shards change
            for prefix in (SHARD_PREFIX, EVAL_PREFIX):
                for path in out.glob(part_glob(prefix, "*" if overwrite else ".tmp")):
                    path.unlink()  # every file of the cache with --overwrite, else a write cut short by a kill
        except OSError as exc:
            raise ConfigError(f"--out {out} is not writable ({exc.strerror}); choose another folder") from None
    barrier(info)
    # each rank judges (and hashes) its share of the shards, so no rank waits long in a collective
    mine = {k: _reusable_entry(out, spec, k, previous.get(k)) for k in range(info.rank, spec.num_shards(), info.world_size)}
    judged = {k: entry for part in all_gather_objects(mine, info) for k, entry in part.items()}
    todo = [k for k in range(spec.num_shards()) if judged[k] is None]
    kept = [judged[k] for k in range(spec.num_shards()) if judged[k] is not None]
    return todo, kept


@torch.no_grad()
def dump_shard(
    model: torch.nn.Module,
    view_data: ViewDataset,
    spec: CacheSpec,
    k: int,
    batch_size: int,
    workers: int,
    info: DistInfo,
    amp: bool,
    bar: Optional[tqdm] = None,
) -> ShardBuffer:
    """Run the teacher on every (sample, view) of shard ``k``; returns the filled buffer."""
    start, stop = spec.shard_range(k)
    buffer = ShardBuffer(spec, k, list(view_data.keys[start:stop]), view_data.labels[start:stop])
    cuda = info.device.type == "cuda"
    batches = view_batches(view_data, start, stop, spec.views, batch_size, workers, cuda, spec.images, spec.jpeg_quality)
    for batch, stored in batches:
        image, index, view, fp = (
            model_input(batch.image, view_data.spec, info.device),
            batch.sample,
            batch.view,
            batch.fingerprint,
        )
        if stored:
            buffer.images.put([i - start for i, _ in stored], [data for _, data in stored])
        with autocast_for(info.device, amp):
            out = model(image)
        index_np, view_np = index.numpy(), view.numpy()
        seeds = np.fromiter(
            (view_data.seed_of(int(i), int(v)) for i, v in zip(index_np, view_np)), dtype=np.uint64, count=len(index_np)
        )
        from_data = {"view_seed": seeds, "fingerprint": fp.numpy().view(np.uint64)}
        from_teacher = {f.name: getattr(out, f.output).float() for f in spec.view_fields if f.output is not None}
        label_emb = out.label_emb.float() if spec.has_embeddings else None
        buffer.put(rows=index_np - start, views=view_np, label_emb=label_emb, **from_data, **from_teacher)
        if bar is not None:
            bar.update(len(index_np))
    return buffer


def dump_eval_store(
    cfg: Config,
    spec: CacheSpec,
    out: Path,
    transform: TransformSpec,
    info: DistInfo,
    previous: Dict[int, Dict[str, Any]],
    dataset: Optional[MultiLabelDataset] = None,
) -> Dict[str, Any]:
    """Store the images of the config's eval split (``eval_split``) in ``out/eval-*.h5``, part
    ``k`` by rank ``k % world``, each as its eval transform's resize makes it; complete parts of
    this dump are kept. Returns the manifest's ``eval`` entry (every rank)."""
    split = cfg.eval_split
    dataset = dataset if dataset is not None else dataset_from_config(cfg, split)
    if list(dataset.class_names) != list(spec.class_names):
        raise CacheMismatchError(
            f"the {cfg.dataset} {split} split has other classes than its train split; check the dataset files"
        )
    view_data = eval_inputs(dataset, transform)
    total, size = len(dataset), spec.shard_size
    digest = split_digest(dataset.keys, dataset.labels)
    kept, written = [], []
    with ShardWriter(out) as writer:
        for k, start, stop in part_ranges(total, size)[info.rank :: info.world_size]:
            path = out / eval_name(k)
            if eval_is_complete(path, spec, split, k, start, stop, total, digest):
                entry = _kept(path, shard_entry(out, spec, k, eval_name(k), (start, stop)), previous.get(k))
                if entry is not None:
                    kept.append(entry)
                    continue
            buffer = EvalBuffer(spec, split, k, start, stop, total, dataset.keys[start:stop], dataset.labels[start:stop], digest)
            loader = DataLoader(
                StoreImages(view_data, start, stop, spec.images, spec.jpeg_quality),
                batch_size=64,
                num_workers=cfg.workers,
                collate_fn=list,
            )
            for items in loader:
                buffer.images.put([i - start for i, _ in items], [data for _, data in items])
            writer.submit(buffer)
        written = writer.close()
    entries = [e for part in all_gather_objects(kept + written, info) for e in part]
    if info.is_main:  # parts of an earlier, longer eval split
        listed = {e["file"] for e in entries}
        for path in out.glob(part_glob(EVAL_PREFIX)):
            if path.name not in listed:
                path.unlink()
    return {"split": split, "num_samples": total, "labels_sha256": labels_digest(dataset.labels), "shards": entries}


JPEG_ESTIMATE_IMAGES = 32  # the images of a split whose JPEG sizes --dry-run measures (fewer in a smaller split)


def jpeg_bytes_per_image(view_data: ViewDataset, quality: int, count: int = JPEG_ESTIMATE_IMAGES) -> Tuple[float, int]:
    """``(mean bytes, images measured)`` of ``count`` evenly spaced images of ``view_data`` (all
    of a smaller split) stored as JPEG at ``quality``, decoded and resized as the store keeps
    them: the estimate ``--dry-run`` plans with, and what it rests on."""
    n = len(view_data)
    picks: List[int] = np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(np.int64)).tolist() if n else []
    sizes = [len(encode_image(view_data.prepared(int(i)), "jpeg", quality)[0]) for i in picks]
    return (float(np.mean(sizes)) if sizes else 0.0), len(sizes)


def plan_text(
    spec: CacheSpec,
    labels: np.ndarray,
    eval_samples: Optional[int] = None,
    jpeg_per_image: Optional[float] = None,
    jpeg_quality: Optional[int] = None,
    jpeg_images: Optional[int] = None,
) -> Dict[str, Any]:
    """The planned size of the cache (``--dry-run``), computed by the code that writes it, and
    of its image store in each mode (``image_bytes``: raw exact, jpeg from ``jpeg_per_image``,
    a mean measured on ``jpeg_images`` images at ``jpeg_quality``, or ``None``) for the train
    split and ``eval_samples`` eval images."""
    plan = spec.plan(labels)
    images = spec.num_samples + (eval_samples or 0)
    return {
        "samples": spec.num_samples,
        "views": spec.views,
        "shards": spec.num_shards(),
        "embedding": spec.embedding,
        "dtype": spec.dtype,
        **plan,
        "images": spec.images,
        "eval_samples": eval_samples,
        "jpeg_quality": jpeg_quality if jpeg_quality is not None else (spec.jpeg_quality or None),
        "jpeg_bytes_per_image": jpeg_per_image,
        "jpeg_images": jpeg_images,
        "image_bytes": {mode: spec.image_nbytes(images, mode, jpeg_per_image) for mode in ("raw", "jpeg")},
    }


def made_with(cfg: Config) -> Dict[str, Any]:
    """How the dumped train split is built (the manifest's ``made_with``): the config file, the
    dataset, its parameters (``dataset_para``, as the students' split), data root,
    ``bad_images`` and, when one was held out, ``val_split`` (as the spec records it), as JSON
    values (a tuple becomes a list; anything else its repr)."""
    record = {
        "config": cfg.source,
        "dataset": cfg.dataset,
        "dataset_para": cfg.dataset_params("s"),
        "data_root": str(Path(cfg.data_root).resolve()) if cfg.data_root else None,
        "bad_images": cfg.bad_images,
    }
    held_out = val_split_record(cfg.val_split)
    if held_out:  # left out otherwise: a manifest without a val split stays as it was
        record["val_split"] = held_out
    return json.loads(json.dumps(record, default=repr))


def _views(cfg: Config, views: Optional[int]) -> int:
    views = int(views if views is not None else cfg.cache["views"])
    if views < 1:
        raise ConfigError(f"--views must be >= 1, got {views}")
    return views


def plan(cfg: Config, teacher: Optional[TeacherSpec] = None, views: Optional[int] = None) -> Dict[str, Any]:
    """``--dry-run``: the planned sizes of the cache of the train split of ``cfg``; nothing is
    written. Without ``teacher`` the sizes come from ``model_t`` of the config (the card
    teacher-train will write); without a data root the published train split of the dataset
    stands in for its labels (:mod:`mlkd_cache.data.planning`)."""
    info = init_distributed()
    views = _views(cfg, views)
    loaded = open_teacher(teacher, cfg) if teacher is not None else None
    transform = TransformSpec.from_config(cfg)
    held_out = val_split_record(cfg.val_split).get("fraction", 0.0)
    planned = planned_train_split(cfg.dataset, held_out, **cfg.dataset_para) if not cfg.data_root else None
    dataset: Union[PlannedSplit, MultiLabelDataset]
    if planned is not None:  # no data: the published train split stands in
        dataset, source = planned, planned.source
    else:
        real = dataset_from_config(cfg, "train")
        dataset, source = real, f"the labels of {real.describe()}"
    unhashed = "0" * 64  # sizes do not depend on the teacher's sha256: a plan never hashes its file
    if loaded is None:  # before the teacher exists: sizes from the config's model_t
        spec = build_spec(cfg, planned_card(cfg, dataset.class_names), unhashed, dataset, views, transform)
    else:
        if planned is not None:  # no data to check the teacher against: plan for its classes
            if loaded.card.num_classes != len(planned.class_names):
                raise CacheMismatchError(
                    f"teacher {teacher} has {loaded.card.num_classes} classes, {cfg.dataset} {len(planned.class_names)}; "
                    f"pass --data-root to plan from the real labels"
                )
            planned.class_names = list(loaded.card.class_names)
        check_teacher_fits(cfg, loaded.card, dataset, transform, str(teacher))
        spec = build_spec(cfg, loaded.card, unhashed, dataset, views, transform)
    eval_samples, jpeg, jpeg_images = None, None, None
    if planned is None:  # real images: the eval split's size and a measured JPEG size
        try:
            eval_samples = len(dataset_from_config(cfg, cfg.eval_split))
        except MlkdError:
            if cfg.cache["images"] != "none":  # a dump with a store would need that split
                raise
        jpeg, jpeg_images = jpeg_bytes_per_image(ViewDataset(dataset, transform, cfg.seed, train=True), cfg.cache["jpeg_quality"])
    result = plan_text(spec, dataset.labels, eval_samples, jpeg, cfg.cache["jpeg_quality"], jpeg_images)
    # what was read from the data (None for a published split standing in: its labels are not real)
    result["understood"] = label_summary(dataset.class_names, dataset.labels) if planned is None else None
    result["ignored_columns"] = list(getattr(dataset, "ignored_columns", []))
    return {"dry_run": True, "plan": {**result, "source": source}, "is_main": info.is_main}


def run(
    cfg: Config,
    teacher: TeacherSpec,
    out: Path,
    views: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Dump the teacher's targets for the train split of ``cfg`` into ``out`` (:func:`plan`
    gives the sizes without writing). ``teacher``: a teacher.pt, or a factory
    ``package.module:function`` (:func:`~mlkd_cache.runtime.teachers.open_teacher`); the cache
    holds the outputs it gives."""
    info = init_distributed()
    views = _views(cfg, views)
    if teacher is None or out is None:
        raise ConfigError("dump-targets needs --teacher and --out (only --dry-run works without them)")
    transform = TransformSpec.from_config(cfg)
    check_same_config(cfg, info)
    loaded = open_teacher_on_ranks(teacher, cfg, info)

    def inputs() -> Tuple[MultiLabelDataset, CacheSpec, Optional[MultiLabelDataset]]:
        """Train split, planned cache and stored eval split (a missing split fails before work)."""
        dataset = dataset_from_config(cfg, "train")
        check_teacher_fits(cfg, loaded.card, dataset, transform, str(teacher))
        spec = build_spec(cfg, loaded.card, loaded.sha256, dataset, views, transform)
        eval_set = dataset_from_config(cfg, cfg.eval_split) if spec.stores_images else None
        return dataset, spec, eval_set

    dataset, spec, eval_set = agree(info, inputs)  # one node lacking an input stops every node alike
    check_same_split(dataset, f"{cfg.dataset} train split", info)
    if eval_set is not None:
        check_same_split(eval_set, f"{cfg.dataset} {cfg.eval_split} split", info)

    out = Path(out)
    check_shared_folder(out, info, "--out")  # every rank writes its shards where rank 0 lists them
    previous_eval = {} if overwrite else _previous_entries(out, spec, stored_eval=True)  # before the manifest goes
    todo, kept = prepare_out_dir(out, spec, overwrite, info)
    mine = todo[info.rank :: info.world_size]  # the shards to write, dealt out in turn
    rounds = -(-len(todo) // info.world_size)
    view_data = ViewDataset(dataset, transform, cfg.seed, train=True, views=views, with_fingerprint=True, image_dtype="uint8")
    model = place_model(loaded.model, info.device)
    amp = amp_enabled(cfg.amp, info.device)

    started = time.perf_counter()
    total_pairs = sum((spec.shard_range(k)[1] - spec.shard_range(k)[0]) * views for k in mine)
    bar = tqdm(total=total_pairs, desc="dump-targets", unit="view", disable=bar_disabled(progress, info), dynamic_ncols=True)
    try:
        with ShardWriter(out) as writer:  # writes shard k while the teacher runs on shard k+1
            for step in range(rounds):
                if step < len(mine):
                    writer.submit(dump_shard(model, view_data, spec, mine[step], cfg.batch_size, cfg.workers, info, amp, bar))
                    bar.set_postfix(MB=f"{writer.bytes_written / 2**20:.0f}")
                barrier(info)  # after each round of shards: a rank whose peer died stops within a shard's time
            written = writer.close()  # manifest entries (size, sha256) of the shards this rank wrote
    finally:
        bar.close()
    written = [entry for rank_entries in all_gather_objects(written, info) for entry in rank_entries]
    stored_eval = dump_eval_store(cfg, spec, out, transform, info, previous_eval, eval_set) if eval_set is not None else None
    elapsed = time.perf_counter() - started

    result: Dict[str, Any] = {
        "dry_run": False,
        "out": str(out),
        "shards_written": len(todo),
        "shards_skipped": spec.num_shards() - len(todo),
        "samples": spec.num_samples,
        "views": views,
        "seconds": elapsed,
        "is_main": info.is_main,
    }
    entries = written + kept  # this run's shards (hashed by the writers) and the ones kept

    def finish() -> Optional[Path]:  # refuses entries that miss or repeat a shard, or files the folder lacks
        return write_manifest(out, spec, entries, made_with(cfg), stored_eval) if info.is_main else None

    manifest = agree(info, finish)
    if info.is_main:
        stored_bytes = sum(e["bytes"] for e in stored_eval["shards"]) if stored_eval else 0
        result.update(manifest=str(manifest), total_bytes=sum(e["bytes"] for e in entries) + stored_bytes)
        log.info(
            "dump-targets: %d shards (%d written, %d already complete), %d samples x %d views, %.1f s",
            spec.num_shards(),
            len(todo),
            result["shards_skipped"],
            spec.num_samples,
            views,
            elapsed,
        )
    barrier(info)
    return result
