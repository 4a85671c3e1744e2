"""The target-cache schema: shard names, datasets, dtypes, attributes, format version and checks.

A cache is a directory of HDF5 shards (``shard-00000.h5`` ...) plus ``manifest.json``, written
last. Shard ``k`` holds the contiguous sample range :meth:`CacheSpec.shard_range` ``(k)``; with
``n`` samples, ``V`` views, ``C`` classes, ``D`` feature dims, ``E`` embedding dims and ``P``
positive labels in the shard its datasets are (all contiguous, uncompressed, so a reader can
memory-map them at ``dset.id.get_offset()``):

==============  =================  ===========================================================
``keys``        ``[n]`` vlen str   sample keys (UTF-8)
``labels``      ``[n, C]`` u1      0/1 label matrix
``view_seed``   ``[n, V]`` u8      seed of each stored augmented view
``fingerprint`` ``[n, V]`` u8      64-bit fingerprint of each view's input tensor
``logits``      ``[n, V, C]``      float16 (float32 when ``spec.dtype`` is)
``features``    ``[n, V, D]``      ``spec.dtype`` as stored (cache/codec.py), pooled backbone features
``emb_offsets`` ``[n + 1]`` i8     positive mode: tokens of sample i are rows offsets[i]:offsets[i+1]
``emb_class``   ``[P]`` i2         positive mode: class of each token, ascending within a sample
``emb``         ``[P, V, E]``      positive mode (``[n, V, C, E]`` in dense mode), ``spec.dtype`` as stored
``*_scale``     ``[n, V]``, ``[P, V]`` float32 scales of ``features`` and ``emb`` (``[n, V, C]`` dense), int8 only
``images``      ``[n, S, S, 3]`` u1 ``images="raw"``: each image after decode and resize (S = img_size)
``jpeg_offsets`` ``[n + 1]`` i8    ``images="jpeg"``: image i is bytes offsets[i]:offsets[i+1] of ``jpeg``
``jpeg``        ``[B]`` u1         ``images="jpeg"``: the images re-encoded at ``jpeg_quality``
==============  =================  ===========================================================

With an image store the evaluation split is stored too, in ``eval-00000.h5`` ... (``keys``,
``labels`` and the same image datasets; :data:`EVAL_PREFIX`), listed under ``eval`` in the manifest.

The format versions are declared once, in :data:`FORMATS`: what each one's fingerprints hash
(format 2 on: a view's uint8 pixels ``[3, S, S]``; format 1, still read: its float32 input) and
which caches need it; :data:`FORMAT_VERSION` and the version a cache is written at derive from it.

A cache may hold only some of the teacher's outputs (:data:`TEACHER_OUTPUTS`): those a factory
teacher gives (logits alone, or logits and features), or those ``cache.fields`` asks for (by
default logits and what the config's distiller reads). It then lacks the datasets of the others:
``spec.outputs`` lists what it holds, the sizes of absent outputs are 0, nothing is zero-filled.
Such a cache is format 3 (an older reader refuses it by version); a cache with every output of
format 2 (:data:`UNRECORDED_OUTPUTS`) keeps the format-2 attributes byte for byte.

The per-view datasets are declared once, in :data:`VIEW_FIELDS` (name, trailing dims, dtype,
the teacher output that fills it, the ``KDBatch`` field it feeds), and the label-wise embeddings'
two layouts in :data:`LAYOUTS`; the writer, the reader, ``dump-targets`` (its ``--dry-run``:
:func:`plan_parts`), ``verify`` and the distillation batch derive from them. What each teacher
output is, its shape and its size attribute come from the one table of model outputs,
:data:`~mlkd_cache.losses.base.MODEL_OUTPUTS` (:data:`OUTPUT_WORDS`, :data:`OUTPUT_SIZES`).
Every shard carries :meth:`CacheSpec.to_attrs` as HDF5 attributes plus ``shard_index``,
``sample_start``, ``sample_stop`` and ``created``. :func:`check_request` is the one place that compares a cache with what a config asks for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .._version import __version__
from ..config import CACHE_DTYPES, EMBEDDING_LAYOUTS, IMAGE_STORES
from ..data.holdout import describe_val_split, val_split_record
from ..data.transforms import TransformSpec
from ..data.views import FINGERPRINT_INPUTS
from ..errors import CacheCorruptError, CacheMismatchError
from ..losses.base import MODEL_OUTPUTS, OUTPUT_SIZES
from ..models.card import OUTPUTS
from .codec import COMPACT, SCALE_DTYPE, SCALED, STORAGE, logits_dtype, value_dtype

__all__ = [
    "ViewField",
    "VIEW_FIELDS",
    "EmbeddingLayout",
    "LAYOUTS",
    "EMB_DATASETS",
    "FormatVersion",
    "FORMATS",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "DTYPES",
    "EMBEDDINGS",
    "SHARD_ATTRS",
    "QUANTISATION_ATTR",
    "EMB_SCALE",
    "CacheSpec",
    "shard_name",
    "labels_digest",
    "SAME_INPUTS",
    "inputs_difference",
    "split_digest",
    "check_request",
    "dataset_shapes",
    "image_shapes",
    "eval_shapes",
    "eval_name",
    "part_ranges",
    "EVAL_PREFIX",
    "SHARD_PREFIX",
    "part_glob",
    "index_array",
    "TEACHER_OUTPUTS",
    "UNRECORDED_OUTPUTS",
    "OUTPUT_SIZES",
    "OUTPUT_WORDS",
    "BOOKKEEPING_PART",
    "plan_parts",
    "PLAN_PARTS",
    "spec_difference",
]

# What a teacher can give: the fields of models.Outputs, in its order; logits always. A cache
# stores those it gave; the spec attribute of each one's size (0 when absent), and how messages
# name each, come from the one table of model outputs (losses.base.MODEL_OUTPUTS).
TEACHER_OUTPUTS: Tuple[str, ...] = OUTPUTS
# The outputs of a cache that does not record them: every teacher output there was before caches
# recorded theirs (format 2). A cache holding exactly these leaves ``outputs`` out of its
# attributes (they stay those of format 2); any other set is recorded, a new output's included.
UNRECORDED_OUTPUTS: Tuple[str, ...] = ("features", "label_emb", "logits")
OUTPUT_WORDS: Dict[str, str] = {name: out.description for name, out in MODEL_OUTPUTS.items()}  # "logits [N, C]"
MANIFEST_NAME = "manifest.json"
EMB_SCALE = "emb_scale"  # int8 caches: the scale of each stored label-wise embedding
SHARD_PREFIX = "shard"  # shard-00000.h5 ...: the targets (and the train images of a store)
EVAL_PREFIX = "eval"  # eval-00000.h5 ...: the stored evaluation split
DTYPES = CACHE_DTYPES  # the choices live with the config keys that take them
EMBEDDINGS = EMBEDDING_LAYOUTS
QUANTISATION_ATTR = "quantisation"  # per shard: the error of storing each output (writer.ShardBuffer.attrs)
SHARD_ATTRS = ("shard_index", "sample_start", "sample_stop", "created", QUANTISATION_ATTR)  # per-shard, not in the spec
_JSON_FIELDS = ("class_names", "transform", "normalisation", "outputs", "val_split")  # stored as JSON strings in HDF5
# Fields a cache without an image store leaves out (its attributes, and so its hashes, stay those
# of the caches written before the store existed), and their values there; likewise ``outputs``
# when the cache holds UNRECORDED_OUTPUTS, and ``val_split`` when no val split was held out of its
# train split (_OPTIONAL: every field an older cache may lack).
_STORE_DEFAULTS: Dict[str, Any] = {"images": "none", "jpeg_quality": 0}
_OPTIONAL: Dict[str, Any] = {**_STORE_DEFAULTS, "outputs": UNRECORDED_OUTPUTS, "val_split": {}}
_KEY_ITEMSIZE = 8  # h5py reports a vlen-string dataset's nbytes as 8 bytes per element


@dataclass(frozen=True)
class ViewField:
    """One dataset holding a value per (sample, view): shape ``[n, V, *dims]``."""

    name: str  # HDF5 dataset name, and the key TargetCache.get() returns it under
    dims: Tuple[str, ...]  # trailing dims, as CacheSpec attributes: ("num_classes",) -> [n, V, C]
    dtype: Optional[str]  # numpy dtype name; None = a float of the cache's precision (codec.py)
    output: Optional[str] = None  # the teacher output (models.Outputs field) dump-targets stores; None = from the data
    kd: Optional[str] = None  # the KDBatch field it feeds (losses.base.KDBatch), None = bookkeeping only
    coded: bool = False  # stored in the cache's precision (cache.dtype), int8 with a scale per vector; else as logits are

    @property
    def part(self) -> str:
        """What ``--dry-run`` counts its bytes under: its teacher output, else :data:`BOOKKEEPING_PART`."""
        return self.output or BOOKKEEPING_PART

    def shape(self, spec: "CacheSpec", n: int) -> Tuple[int, ...]:
        return (n, spec.views, *(int(getattr(spec, d)) for d in self.dims))

    def np_dtype(self, spec: "CacheSpec") -> np.dtype:
        """How the field is stored."""
        if self.dtype is not None:
            return np.dtype(self.dtype)
        return spec.storage_dtype if self.coded else np.dtype(logits_dtype(spec.dtype))

    @property
    def scale_name(self) -> str:
        """The dataset of its per-vector scales (int8 caches)."""
        return f"{self.name}_scale"


# In file order. A uint64 field is returned by TargetCache.get() as int64 with the same bits.
VIEW_FIELDS: Tuple[ViewField, ...] = (
    ViewField("view_seed", (), "uint64"),  # the seed the view was augmented from
    ViewField("fingerprint", (), "uint64"),  # 64-bit fingerprint of the view's input tensor
    ViewField("logits", ("num_classes",), None, output="logits", kd="z_t"),
    ViewField("features", ("feature_dim",), None, output="features", kd="f_t", coded=True),
)


@dataclass(frozen=True)
class EmbeddingLayout:
    """How a cache stores the teacher's label-wise embeddings ``[V, C, E]`` per sample.

    ``positive``: only the rows of the sample's positive labels, CSR-style (``emb_offsets``
    ``[n + 1]``, ``emb_class`` ``[P]``, ``emb`` ``[P, V, E]``): a few per cent of dense for
    COCO-like label densities. ``dense``: every class (``emb`` ``[n, V, C, E]``).
    ``batch_keys`` maps what ``TargetCache.get`` returns for this layout to ``KDBatch`` fields.
    """

    name: str
    batch_keys: Tuple[Tuple[str, str], ...]  # (TargetCache.get key, KDBatch field)

    @property
    def positive(self) -> bool:
        return self.name == "positive"

    def shapes(self, spec: "CacheSpec", n: int, positives: int) -> Dict[str, Tuple[Tuple[int, ...], int]]:
        """``{dataset: (shape, itemsize)}`` of this layout's datasets, in file order."""
        V, C, E, s = spec.views, spec.num_classes, spec.embed_dim, spec.storage_dtype.itemsize
        scale = spec.scaled
        if self.positive:
            shapes = {"emb_offsets": ((n + 1,), 8), "emb_class": ((positives,), 2), "emb": ((positives, V, E), s)}
            return {**shapes, **({EMB_SCALE: ((positives, V), SCALE_DTYPE.itemsize)} if scale else {})}
        return {"emb": ((n, V, C, E), s), **({EMB_SCALE: ((n, V, C), SCALE_DTYPE.itemsize)} if scale else {})}


LAYOUTS: Dict[str, EmbeddingLayout] = {
    "positive": EmbeddingLayout(
        "positive", (("tokens", "t_tokens"), ("token_sample", "token_sample"), ("token_class", "token_class"))
    ),
    "dense": EmbeddingLayout("dense", (("label_emb", "e_t"),)),
}


# The datasets of the label-wise embeddings, in either layout (EmbeddingLayout.shapes).
EMB_DATASETS = ("emb", EMB_SCALE, "emb_offsets", "emb_class")
BOOKKEEPING_PART = "seeds/fingerprints"  # what every cache keeps to replay and identify its views
_KEYS_PART = "keys/labels"


def plan_parts(view_fields: Optional[Sequence[ViewField]] = None) -> Dict[str, str]:
    """``{dataset: part}``: what each dataset of a shard's targets holds, as ``--dry-run`` splits
    the bytes per view, derived from ``view_fields`` (default :data:`VIEW_FIELDS`, as it is
    when called): the teacher outputs by name (the fields that fill them, their int8 scales, the
    label-wise embeddings' :data:`EMB_DATASETS`), then :data:`BOOKKEEPING_PART` and the keys and
    labels. The parts are in the order ``--dry-run`` prints them."""
    fields = VIEW_FIELDS if view_fields is None else tuple(view_fields)
    parts: Dict[str, str] = {}
    for field in fields:
        if field.output is not None:
            parts[field.name] = field.part
            if field.coded:
                parts[field.scale_name] = field.part
    parts.update(dict.fromkeys(EMB_DATASETS, "label_emb"))
    parts.update({field.name: field.part for field in fields if field.output is None})
    return {**parts, "keys": _KEYS_PART, "labels": _KEYS_PART}


PLAN_PARTS: Dict[str, str] = plan_parts()


@dataclass(frozen=True)
class FormatVersion:
    """One cache format version: what its fingerprints hash, and which caches are written at it."""

    fingerprint_input: str  # what a view's fingerprint hashes: ViewDataset.fingerprint_of ("uint8" pixels, "float32" input)
    needed_by: Optional[Callable[["CacheSpec"], bool]]  # the caches that need it (None: read only, never written)

    def __post_init__(self) -> None:
        if self.fingerprint_input not in FINGERPRINT_INPUTS:
            raise ValueError(f"fingerprint_input must be one of {', '.join(FINGERPRINT_INPUTS)}, got {self.fingerprint_input!r}")


# Every format version, oldest first. A cache is written at the newest version whose needed_by
# holds for it: the oldest that holds it, so an older reader still opens every cache it can.
FORMATS: Dict[int, FormatVersion] = {
    1: FormatVersion("float32", None),  # fingerprints of the float32 input: read, no longer written
    2: FormatVersion("uint8", lambda spec: True),  # fingerprints of the uint8 pixels
    3: FormatVersion("uint8", lambda spec: spec.outputs != UNRECORDED_OUTPUTS),  # the stored outputs recorded
    4: FormatVersion("uint8", lambda spec: spec.dtype in COMPACT),  # bfloat16 and int8 features and embeddings
}
FORMAT_VERSION = max(FORMATS)  # the newest this version reads and writes


def shard_name(k: int) -> str:
    """File name of shard ``k``: ``shard-00000.h5``."""
    return f"{SHARD_PREFIX}-{int(k):05d}.h5"


def index_array(x: Any) -> np.ndarray:
    """Indices (sample, view or row numbers) given as a tensor, array or sequence, as int64 ``[K]``."""
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).reshape(-1)


def part_glob(prefix: str = SHARD_PREFIX, tail: str = "") -> str:
    """The glob pattern of a cache's files named ``prefix`` (:data:`SHARD_PREFIX` or
    :data:`EVAL_PREFIX`): ``shard-*.h5``, with ``tail`` appended (``".tmp"``: a write cut short;
    ``"*"``: either)."""
    return f"{prefix}-*.h5{tail}"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> Any:
    """An h5py attribute value as a plain Python object (str, int, ...)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


@dataclass(frozen=True)
class CacheSpec:
    """What every shard of one cache shares (HDF5 attributes of every shard and ``manifest.json``)."""

    num_samples: int
    views: int
    num_classes: int
    feature_dim: int
    embed_dim: int
    dtype: str  # the precision of features and emb (codec.STORAGE); logits float16, float32 in a float32 cache
    embedding: str  # "positive" | "dense"
    shard_size: int
    class_names: Tuple[str, ...]
    dataset: str
    split: str
    img_size: int
    transform: Dict[str, Any]  # JSON-able transform spec
    transform_hash: str
    normalisation: Dict[str, Any]  # {"mean": [...], "std": [...]}
    base_seed: int
    teacher_arch: str
    teacher_sha256: str
    labels_sha256: str  # labels_digest() of the uint8 [N, C] label matrix
    tool_version: str = __version__
    images: str = "none"  # the image store: none | raw | jpeg
    jpeg_quality: int = 0  # images="jpeg": the encoder's quality, else 0
    outputs: Tuple[str, ...] = UNRECORDED_OUTPUTS  # the teacher outputs stored (TEACHER_OUTPUTS order); logits always
    # the val split held out of the dataset's train split before this one was dumped
    # (data.holdout.val_split_record: {"fraction", "seed"}, {} when none)
    val_split: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once here so equal caches compare equal
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"CacheSpec.{name} must be an int, got {type(value).__name__}")
            set_(self, name, int(value))
        outputs = self.outputs
        if isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs):
            raise TypeError(f"CacheSpec.outputs must be a sequence of names, got {outputs!r}")
        unknown = sorted(set(outputs) - set(TEACHER_OUTPUTS))
        if unknown or "logits" not in outputs:
            raise ValueError(f"CacheSpec.outputs must hold logits and only {', '.join(TEACHER_OUTPUTS)}, got {list(outputs)}")
        set_(self, "outputs", tuple(o for o in TEACHER_OUTPUTS if o in outputs))
        for name in ("num_samples", "views", "num_classes", "shard_size", "img_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"CacheSpec.{name} must be >= 1, got {getattr(self, name)}")
        for output, name in OUTPUT_SIZES.items():
            size = getattr(self, name)
            if (output in self.outputs) != (size >= 1) or size < 0:
                raise ValueError(f"CacheSpec.{name} {size} does not fit outputs {list(self.outputs)} (>= 1 when given, else 0)")
        if not -(2**63) <= self.base_seed < 2**63:
            raise ValueError(f"CacheSpec.base_seed must fit in int64, got {self.base_seed}")
        if self.dtype not in DTYPES:
            raise ValueError(f"CacheSpec.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"CacheSpec.embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if self.images not in IMAGE_STORES:
            raise ValueError(f"CacheSpec.images must be one of {', '.join(IMAGE_STORES)}, got {self.images!r}")
        if (self.images == "jpeg") != (self.jpeg_quality > 0) or not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"CacheSpec.jpeg_quality {self.jpeg_quality} does not fit images={self.images!r}")
        if self.num_classes > np.iinfo(np.int16).max:
            raise ValueError(f"CacheSpec.num_classes {self.num_classes} does not fit emb_class (int16)")
        names = tuple(str(c) for c in self.class_names)
        if len(names) != self.num_classes:
            raise ValueError(f"CacheSpec has {len(names)} class names for num_classes {self.num_classes}")
        set_(self, "class_names", names)
        for name in ("transform", "normalisation", "val_split"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise TypeError(f"CacheSpec.{name} must be a dict, got {type(value).__name__}")
            set_(self, name, json.loads(_canonical_json(dict(value))))  # tuples -> lists, like a reload
        if self.val_split != val_split_record(self.val_split):
            raise ValueError(f"CacheSpec.val_split must be {{}} or {{fraction, seed}} with fraction > 0, got {self.val_split!r}")
        for name in (
            "dataset",
            "split",
            "transform_hash",
            "teacher_arch",
            "teacher_sha256",
            "labels_sha256",
            "tool_version",
            "images",
        ):
            set_(self, name, str(getattr(self, name)))

    def __hash__(self) -> int:
        return hash(_canonical_json(self.to_dict()))

    # -- geometry ------------------------------------------------------------------------------

    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_range(self, k: int) -> Tuple[int, int]:
        """``[start, stop)`` sample indices of shard ``k``."""
        if not 0 <= k < self.num_shards():
            raise IndexError(f"shard {k} out of range: the cache has {self.num_shards()} shards")
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.num_samples)

    @property
    def storage_dtype(self) -> np.dtype:
        """How the features and embeddings are stored (:data:`~mlkd_cache.cache.codec.STORAGE`)."""
        return STORAGE[self.dtype]

    @property
    def value_dtype(self) -> np.dtype:
        """What the reader returns for the features and embeddings (float32 for bfloat16 and int8)."""
        return value_dtype(self.dtype)

    @property
    def scaled(self) -> bool:
        """The features and embeddings carry one float32 scale per vector (int8)."""
        return self.dtype in SCALED

    @property
    def layout(self) -> EmbeddingLayout:
        return LAYOUTS[self.embedding]

    @property
    def view_fields(self) -> Tuple[ViewField, ...]:
        """The :data:`VIEW_FIELDS` this cache holds (those of outputs it does not store are absent)."""
        return tuple(f for f in VIEW_FIELDS if f.output is None or f.output in self.outputs)

    @property
    def has_embeddings(self) -> bool:
        """The cache holds the teacher's label-wise embeddings (the datasets of :attr:`layout`)."""
        return "label_emb" in self.outputs

    @property
    def absent(self) -> Tuple[str, ...]:
        """The teacher outputs this cache lacks (its teacher did not give them, or cache.fields left them out)."""
        return tuple(o for o in TEACHER_OUTPUTS if o not in self.outputs)

    @property
    def format_version(self) -> int:
        """The oldest format that holds this cache: the newest of :data:`FORMATS` that it needs
        (2 for every cache, 3 when it records its outputs, 4 for bfloat16 and int8)."""
        return max(v for v, f in FORMATS.items() if f.needed_by is not None and f.needed_by(self))

    @property
    def stores_images(self) -> bool:
        """The cache holds the train and eval images (``images`` raw or jpeg)."""
        return self.images != "none"

    # -- serialisation -------------------------------------------------------------------------

    @property
    def transform_spec(self) -> TransformSpec:
        """:attr:`transform` (a plain dict, as stored) as the :class:`~mlkd_cache.data.transforms.TransformSpec`
        the views were made with."""
        return TransformSpec.from_dict(self.transform)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able dict of every field (the ``spec`` of ``manifest.json``)."""
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        d["outputs"] = list(self.outputs)
        if not self.stores_images:
            for name in _STORE_DEFAULTS:
                del d[name]
        if self.outputs == UNRECORDED_OUTPUTS:
            del d["outputs"]
        if not self.val_split:
            del d["val_split"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CacheSpec":
        """Inverse of :meth:`to_dict`; raises :class:`CacheCorruptError` on missing or bad fields."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d and n not in _OPTIONAL]
        if missing:
            raise CacheCorruptError(f"cache spec lacks {', '.join(missing)}; re-run dump-targets")
        try:
            return cls(**{n: d[n] for n in names if n in d})
        except (TypeError, ValueError) as exc:
            raise CacheCorruptError(f"cache spec is invalid ({exc}); re-run dump-targets") from None

    def to_attrs(self) -> Dict[str, Any]:
        """Flat HDF5-attribute dict: ints and strings, dicts/lists as JSON, plus ``format_version``."""
        attrs: Dict[str, Any] = {"format_version": self.format_version}
        for name, value in self.to_dict().items():
            attrs[name] = _canonical_json(value) if name in _JSON_FIELDS else value
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "CacheSpec":
        """Inverse of :meth:`to_attrs` (accepts an ``h5py`` AttributeManager).

        Raises :class:`CacheMismatchError` for a newer ``format_version`` and
        :class:`CacheCorruptError` for missing or malformed attributes.
        """
        if "format_version" not in attrs:
            raise CacheCorruptError("cache attributes lack format_version; is this an mlkd-cache shard?")
        version = _plain(attrs["format_version"])
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CacheMismatchError(
                f"cache has format version {version}, this mlkd-cache {__version__} reads up to "
                f"{FORMAT_VERSION}; upgrade mlkd-cache or re-run dump-targets"
            )
        names = [f.name for f in dataclasses.fields(cls) if f.name in attrs or f.name not in _OPTIONAL]
        missing = [n for n in names if n not in attrs]
        if missing:
            raise CacheCorruptError(f"cache attributes lack {', '.join(missing)}; re-run dump-targets")
        values: Dict[str, Any] = {}
        for name in names:
            value = _plain(attrs[name])
            if name in _JSON_FIELDS:
                try:
                    value = json.loads(value)
                except (TypeError, ValueError):
                    raise CacheCorruptError(f"cache attribute {name} is not valid JSON; re-run dump-targets") from None
            values[name] = value
        return cls.from_dict(values)

    # -- sizes ---------------------------------------------------------------------------------

    def shard_nbytes(self, labels_of_shard: np.ndarray) -> int:
        """Payload bytes of one shard's targets: the sum of its datasets' ``nbytes`` (as h5py
        reports them), the image store aside (:meth:`image_nbytes`)."""
        return sum(self.dataset_nbytes(labels_of_shard).values())

    def dataset_nbytes(self, labels_of_shard: np.ndarray) -> Dict[str, int]:
        """``{dataset: nbytes}`` of one shard's targets (as h5py reports them), the image store aside."""
        labels_of_shard = np.asarray(labels_of_shard)
        positives = int(np.count_nonzero(labels_of_shard))
        targets = dataclasses.replace(self, **_STORE_DEFAULTS)
        return {
            name: int(np.prod(shape, dtype=np.int64)) * itemsize
            for name, (shape, itemsize) in dataset_shapes(targets, len(labels_of_shard), positives).items()
        }

    def image_nbytes(
        self, images: int, mode: Optional[str] = None, jpeg_bytes_per_image: Optional[float] = None
    ) -> Optional[int]:
        """Payload bytes of ``images`` stored images in ``mode`` (default: this cache's): raw
        exactly, jpeg from ``jpeg_bytes_per_image`` (a measured mean; ``None`` when not given)."""
        mode = self.images if mode is None else mode
        if mode == "raw":
            return images * self.img_size * self.img_size * 3
        if mode == "jpeg":
            return None if jpeg_bytes_per_image is None else int(round(images * jpeg_bytes_per_image)) + 8 * (images + 1)
        return 0

    def plan(self, labels: np.ndarray) -> Dict[str, Any]:
        """Sizes of the whole cache for ``labels`` (uint8 ``[N, C]``), in this mode and in dense mode.

        Keys: ``bytes_per_view`` (payload bytes per sample-view), ``bytes_per_view_by_part`` (the
        same split by what it holds: :func:`plan_parts`), ``bytes_per_sample``,
        ``payload_bytes``, ``dense_payload_bytes``, ``positive_tokens``, and the label-wise
        embeddings alone: ``emb_payload_bytes``, ``dense_emb_payload_bytes``.
        """
        labels = np.asarray(labels)
        if labels.shape != (self.num_samples, self.num_classes):
            raise ValueError(f"labels have shape {labels.shape}, the cache needs ({self.num_samples}, {self.num_classes})")
        dense = dataclasses.replace(self, embedding="dense")
        payload = dense_payload = 0
        per_part: Dict[str, int] = {}
        parts = plan_parts()
        for k in range(self.num_shards()):
            start, stop = self.shard_range(k)
            for name, nbytes in self.dataset_nbytes(labels[start:stop]).items():
                part = parts[name]
                per_part[part] = per_part.get(part, 0) + nbytes
                payload += nbytes
            dense_payload += dense.shard_nbytes(labels[start:stop])
        tokens = int(np.count_nonzero(labels))
        row = self.views * (
            self.embed_dim * self.storage_dtype.itemsize + SCALE_DTYPE.itemsize * self.scaled
        )  # a token, all views
        emb = (tokens if self.layout.positive else self.num_samples * self.num_classes) * row
        pairs = self.num_samples * self.views
        return {
            "bytes_per_view": payload / pairs,
            "bytes_per_view_by_part": {
                part: per_part[part] / pairs for part in dict.fromkeys(parts.values()) if part in per_part
            },
            "bytes_per_sample": payload / self.num_samples,
            "payload_bytes": payload,
            "dense_payload_bytes": dense_payload,
            "positive_tokens": tokens,
            "emb_payload_bytes": emb,
            "dense_emb_payload_bytes": self.num_samples * self.num_classes * row,
        }


# CacheSpec's int attributes (sizes, counts, seed), checked and normalised by __post_init__
_INT_FIELDS = tuple(f.name for f in dataclasses.fields(CacheSpec) if f.type in ("int", int))


def image_shapes(spec: CacheSpec, n: int, jpeg_bytes: int = 0) -> Dict[str, Tuple[Tuple[int, ...], int]]:
    """``{name: (shape, itemsize)}`` of the image store's datasets for ``n`` images (``jpeg_bytes``:
    the encoded bytes of all of them, ``images="jpeg"``); empty without a store."""
    if spec.images == "raw":
        return {"images": ((n, spec.img_size, spec.img_size, 3), 1)}
    if spec.images == "jpeg":
        return {"jpeg_offsets": ((n + 1,), 8), "jpeg": ((int(jpeg_bytes),), 1)}
    return {}


def dataset_shapes(spec: CacheSpec, n: int, positives: int, jpeg_bytes: int = 0) -> Dict[str, Tuple[Tuple[int, ...], int]]:
    """``{name: (shape, itemsize)}`` of every dataset of a shard with ``n`` samples, ``positives``
    tokens and ``jpeg_bytes`` of stored JPEG images."""
    shapes = {"keys": ((n,), _KEY_ITEMSIZE), "labels": ((n, spec.num_classes), 1)}
    for field in spec.view_fields:
        shapes[field.name] = (field.shape(spec, n), field.np_dtype(spec).itemsize)
        if field.coded and spec.scaled:
            shapes[field.scale_name] = ((n, spec.views), SCALE_DTYPE.itemsize)
    if spec.has_embeddings:
        shapes.update(spec.layout.shapes(spec, n, positives))
    shapes.update(image_shapes(spec, n, jpeg_bytes))
    return shapes


def eval_shapes(spec: CacheSpec, n: int, jpeg_bytes: int = 0) -> Dict[str, Tuple[Tuple[int, ...], int]]:
    """``{name: (shape, itemsize)}`` of every dataset of an ``eval-NNNNN.h5`` file with ``n`` images."""
    return {"keys": ((n,), _KEY_ITEMSIZE), "labels": ((n, spec.num_classes), 1), **image_shapes(spec, n, jpeg_bytes)}


def part_ranges(total: int, size: int) -> List[Tuple[int, int, int]]:
    """``(k, start, stop)`` of the parts of ``size`` samples that ``total`` samples fill (the
    shards of a cache, the parts of its stored eval split)."""
    return [(k, k * size, min(k * size + size, total)) for k in range(-(-total // size))]


def eval_name(k: int) -> str:
    """File name of the stored eval split's part ``k``: ``eval-00000.h5``."""
    return f"{EVAL_PREFIX}-{int(k):05d}.h5"


def split_digest(keys: Sequence[str], labels: np.ndarray) -> str:
    """sha256 (hex) of a split's keys and label matrix: what a stored eval part belongs to."""
    h = hashlib.sha256("\0".join(str(k) for k in keys).encode("utf-8"))
    h.update(b"\1")
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def labels_digest(labels: np.ndarray) -> str:
    """sha256 (hex) of the uint8 ``[N, C]`` label matrix bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()


def spec_difference(a: CacheSpec, b: CacheSpec) -> Optional[str]:
    """``"name a vs b"`` for the first field where ``a`` and ``b`` differ, ``None`` when equal."""
    attrs_a, attrs_b = a.to_attrs(), b.to_attrs()
    for name, value in attrs_a.items():
        if attrs_b.get(name) != value:
            return f"{name} {_short(value)} vs {_short(attrs_b.get(name))}"
    return None


# The CacheSpec fields that decide which (sample, view) inputs a cache's targets belong to, with
# the words an error uses: caches equal in these hold targets of the very same inputs, whatever
# their teachers (what an ensemble of caches needs). jpeg_quality: a JPEG store's views are made
# from its decoded pixels (0 for no store or a raw one: the dataset's own pixels).
SAME_INPUTS: Dict[str, str] = {
    "dataset": "dataset",
    "split": "split",
    "num_samples": "number of samples",
    "class_names": "classes",
    "labels_sha256": "labels",
    "img_size": "img_size",
    "transform_hash": "transform",
    "base_seed": "seed",
    "views": "views",
    "jpeg_quality": "JPEG quality of the image store",
    "val_split": "val split held out",
}


def inputs_difference(a: CacheSpec, b: CacheSpec) -> Optional[str]:
    """``"words (b's vs a's)"`` for the first :data:`SAME_INPUTS` field where two caches differ
    (a class list by its first differing name), ``None`` when their targets belong to the same inputs."""
    for field, words in SAME_INPUTS.items():
        va, vb = getattr(a, field), getattr(b, field)
        if va == vb:
            continue
        if field == "class_names" and len(va) == len(vb):
            k = next(i for i, (x, y) in enumerate(zip(va, vb)) if x != y)
            return f"{words} (#{k} {vb[k]!r} vs {va[k]!r})"
        if field == "class_names":
            return f"{words} ({len(vb)} vs {len(va)})"
        return f"{words} ({_short(vb, 24)} vs {_short(va, 24)})"
    return None


def _short(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _preview(names: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(names[:count])
    return shown + (", ..." if len(names) > count else "")


def check_request(
    spec: CacheSpec,
    *,
    class_names: Optional[Sequence[str]] = None,
    labels: Optional[np.ndarray] = None,
    img_size: Optional[int] = None,
    transform_hash: Optional[str] = None,
    views: Optional[int] = None,
    val_split: Optional[Mapping[str, Any]] = None,
    where: str = "",
) -> None:
    """Raise :class:`CacheMismatchError` (one line) when the cache was built for something else.

    Arguments left ``None`` are not checked. ``val_split``: the val split held out of the train
    split asked for (``{}``: none), checked before the labels, whose digest it changes.
    ``where`` (e.g. the cache directory) prefixes the message.
    """
    prefix = f"{where}: " if where else ""

    def fail(message: str) -> None:
        raise CacheMismatchError(prefix + message)

    if class_names is not None:
        asked = [str(c) for c in class_names]
        built = list(spec.class_names)
        if len(asked) != len(built):
            fail(
                f"cache built for {len(built)} classes ({_preview(built)}), the dataset has {len(asked)} "
                f"({_preview(asked)}); re-run dump-targets for this dataset or pass another --cache"
            )
        if asked != built:
            i = next(j for j, (x, y) in enumerate(zip(built, asked)) if x != y)
            fail(
                f"cache built for other class names (class {i} is {built[i]!r}, the dataset has {asked[i]!r}); "
                f"re-run dump-targets for this dataset or pass another --cache"
            )
    if val_split is not None and val_split_record(val_split) != spec.val_split:
        fix = (
            f"val_split = dict(fraction={spec.val_split['fraction']!r}, seed={spec.val_split['seed']})"
            if spec.val_split
            else "val_split.fraction = 0"
        )
        fail(
            f"cache built with {describe_val_split(spec.val_split)}, the config asks for {describe_val_split(val_split)}; "
            f"re-run dump-targets with this config or set {fix}"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (spec.num_samples, spec.num_classes):
            hint = (
                " (a dump with bad_images='skip' leaves out undecodable images: set it here too)"
                if labels.shape[0] > spec.num_samples
                else ""
            )
            fail(
                f"cache built for labels of shape ({spec.num_samples}, {spec.num_classes}), the dataset has "
                f"{tuple(labels.shape)}; re-run dump-targets or check the dataset split{hint}"
            )
        digest = labels_digest(labels)
        if digest != spec.labels_sha256:
            fail(
                f"cache built for other labels (sha256 {spec.labels_sha256[:8]}… vs {digest[:8]}…); "
                f"re-run dump-targets or check the dataset's annotation files"
            )
    if img_size is not None and int(img_size) != spec.img_size:
        fail(f"cache built for img_size {spec.img_size}, config asks for {img_size}; re-run dump-targets or fix img_size")
    if transform_hash is not None and str(transform_hash) != spec.transform_hash:
        fail(
            f"cache built with transform {spec.transform_hash}, config gives {transform_hash}; "
            f"re-run dump-targets or restore the transform settings"
        )
    if views is not None and int(views) != spec.views:
        fail(
            f"cache built with {spec.views} views, config asks for {views}; re-run dump-targets or set cache.views = {spec.views}"
        )
