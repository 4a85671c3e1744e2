"""Config files: Python modules of plain assignments, in the L2D/MPSCD seed format.

A config file is read with :func:`load_config`; every top-level name that does not start with
an underscore is a key. The keys of L2D's ``configs/coco/resnet101_to_resnet34_l2d.py`` keep
their meaning (``dataset, img_size, batch_size, model_t, lr_t, max_epoch_t, stop_epoch_t,
model_s, lr_s, max_epoch_s, stop_epoch_s, criterion_t2s_para, teacher_pretrained``); the rest
are this tool's own. Defaults live here and only here (:data:`FIELDS`).

The whole config is validated once, before any work: an unknown key, a wrong type or an
impossible value raises :class:`~mlkd_cache.errors.ConfigError` naming the key (and the closest
valid key or choice for a typo). Names that a layer above defines are checked against a list
here or in a registry below: dataset names against :data:`DATASET_NAMES` (data's ``DATASETS``
registry takes no other), loss names and the teacher outputs ``cache.fields`` may name against
the losses layer (imported when a config is validated, as the losses need torch).
"""

from __future__ import annotations

import ast
import copy
import runpy
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigError
from .registry import did_you_mean

# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

L2D_CRITERION = dict(
    name="L2D",
    para=dict(
        lambda_ft=0.0,
        ft_dis=None,
        lambda_le=1.0,
        le_dis=dict(name="LED", para=dict(lambda_cd=100.0, lambda_id=1000.0)),
        lambda_logits=10.0,
        logits_dis=dict(name="MLD", para=dict()),
    ),
)


@dataclass(frozen=True)
class Field:
    """One config key: its type (``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"dict"``,
    ``"float3"``; a trailing ``?`` allows ``None``), default, one-line meaning and an optional
    value check returning an error text or ``None``."""

    kind: str
    default: Any
    doc: str
    check: Optional[Callable[[Any], Optional[str]]] = None


def _positive(v) -> Optional[str]:
    return None if v > 0 else "must be > 0"


def _at_least(n: int) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v >= n else f"must be >= {n}"


def _unit_interval(v) -> Optional[str]:
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1]"


def _open_unit_interval(v) -> Optional[str]:
    return None if 0.0 < v < 1.0 else "must be in (0, 1)"


class _OneOf:
    """A value check: one of ``options`` (a sequence, or a function giving one when a registry
    below holds them); a refused value is told the closest (:meth:`hint`)."""

    def __init__(self, options: Union[Sequence[str], Callable[[], Sequence[str]]]) -> None:
        self._options = options

    def options(self) -> Sequence[str]:
        return self._options() if callable(self._options) else self._options

    def __call__(self, v: Any) -> Optional[str]:
        return None if v in self.options() else f"must be one of {', '.join(self.options())}"

    def hint(self, v: Any) -> str:
        return did_you_mean(v, self.options()) if isinstance(v, str) else ""


def _one_of(*options: str) -> _OneOf:
    return _OneOf(options)


def _positive_triple(v) -> Optional[str]:
    return None if all(x > 0 for x in v) else "every entry must be > 0"


# The datasets (mlkd_cache/data/, one module each). data's DATASETS registry takes these names and
# no other, so that a config's dataset is checked here, below data (tests/test_config.py checks
# that each is registered).
DATASET_NAMES = ("voc", "coco", "nus", "csv", "digits")
# How photographs are decoded: "full" (every pixel) or "reduced" (JPEG files larger than twice
# img_size decoded at 1/2, 1/4 or 1/8 scale by libjpeg, both sides staying >= img_size; the
# pixels differ slightly from a full decode, so the mode is part of the transform spec's hash).
DECODE_MODES = ("full", "reduced")
# Resize filters (Pillow's of the same name).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# How the cache stores its floats (cache/codec.py), and which label-wise embeddings it keeps (docs/cache.md).
CACHE_DTYPES = ("float16", "float32", "bfloat16", "int8")
EMBEDDING_LAYOUTS = ("positive", "dense")
# The image store of a cache (docs/cache.md): none, raw uint8 pixels, or JPEG at a stated quality
# (JPEG_QUALITIES, Pillow's useful range), each image after the deterministic first step (decode,
# RGB, resize to img_size square).
IMAGE_STORES = ("none", "raw", "jpeg")
JPEG_QUALITIES = (1, 95)
# The splits a model can be scored on during training (eval_split) and that a cache's image store keeps.
EVAL_SPLITS = ("test", "val")
# What an image file that cannot be decoded does (data/bad_images.py).
BAD_IMAGE_POLICIES = ("error", "skip")
# The optimizers (config key `optimizer`), each with the torch.optim class it names.
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW"}
# Who wrote a teacher checkpoint that import-teacher reads (--format).
IMPORT_FORMATS = ("l2d", "factory")
# The files export writes (--format), each with what runs it; predict reads them all.
EXPORT_FORMATS = {"onnx": "onnxruntime, any language", "pt2": "torch.export, PyTorch only"}
# The files predict writes (--format, else from the output's suffix: .csv, .jsonl, .parquet).
PREDICTION_FORMATS = ("csv", "jsonl", "parquet")

TRANSFORM_FIELDS: Dict[str, Field] = {
    "cutout": Field("float", 0.5, "Cutout box side as a fraction of the image side (0 = off)", _unit_interval),
    "randaugment": Field("str?", "rand-m9-n2-mstd0.5", "timm RandAugment config string (None = off)"),
    "hflip": Field("float", 0.0, "probability of a horizontal flip", _unit_interval),
    "mean": Field("float3", (0.0, 0.0, 0.0), "per-channel mean subtracted after ToTensor (L2D: none)"),
    "std": Field("float3", (1.0, 1.0, 1.0), "per-channel std divided after ToTensor (L2D: none)", _positive_triple),
    "interpolation": Field("str", "bilinear", "resize filter", _one_of(*INTERPOLATIONS)),
    "decode": Field(
        "str",
        "full",
        "JPEG decoding: full, or reduced (photographs over twice img_size decoded at 1/2-1/8 scale, sides >= img_size; faster, slightly other pixels)",
        _one_of(*DECODE_MODES),
    ),
}


def _cache_fields(v: Any) -> Optional[str]:
    """``cache.fields``: ``auto``, or teacher outputs (the losses layer's table of what a model
    gives; imported here, as the losses need torch), logits among them."""
    if v == "auto":
        return None
    from .losses.base import MODEL_OUTPUTS

    unknown = [name for name in v if name not in MODEL_OUTPUTS]
    if unknown:
        return (
            f"names {unknown[0]!r}{did_you_mean(unknown[0], MODEL_OUTPUTS)}, not a teacher output; "
            f"choose among {', '.join(MODEL_OUTPUTS)}, or 'auto'"
        )
    if "logits" not in v:
        return "must hold logits (every distiller, inspect and verify read them); add 'logits'"
    return None


CACHE_FIELDS: Dict[str, Field] = {
    "views": Field(
        "int",
        16,
        "augmented views stored per training sample: 16, and not fewer than 8 (docs/results.md#how-many-views-to-store); storage is linear in it",
        _at_least(1),
    ),
    "dtype": Field(
        "str",
        "float16",
        "precision of the cached features and embeddings: float16, float32, bfloat16, or int8 (one scale per vector); logits are float16 (float32 in a float32 cache)",
        _one_of(*CACHE_DTYPES),
    ),
    "fields": Field(
        "names",
        "auto",
        "teacher outputs the cache stores: auto (logits and what the config's distiller reads), or a list of logits, features, label_emb",
        _cache_fields,
    ),
    "embedding": Field(
        "str", "positive", "label-wise embeddings stored for positives only or for all classes", _one_of(*EMBEDDING_LAYOUTS)
    ),
    "shard_size": Field("int", 4096, "samples per HDF5 shard", _at_least(1)),
    "images": Field(
        "str",
        "none",
        "store each train and eval image in the cache after decode and resize: none, raw (uint8 pixels) or jpeg (re-encoded at jpeg_quality); a student then needs only the cache",
        _one_of(*IMAGE_STORES),
    ),
    "jpeg_quality": Field(
        "int",
        90,
        f"JPEG quality of images='jpeg' ({JPEG_QUALITIES[0]}-{JPEG_QUALITIES[1]})",
        lambda v: (
            None if JPEG_QUALITIES[0] <= v <= JPEG_QUALITIES[1] else f"must be in [{JPEG_QUALITIES[0]}, {JPEG_QUALITIES[1]}]"
        ),
    ),
}


def _fraction_below_one(v) -> Optional[str]:
    """0 (off), or a share that holds out something and leaves something: [1e-6, 1 - 1e-6]."""
    return None if v == 0.0 or 1e-6 <= v <= 1.0 - 1e-6 else "must be 0 (off) or in [1e-06, 0.999999]"


# What a message suggests to a user who needs a val split (the shipped configs' setting).
VAL_SPLIT_HINT = "val_split = dict(fraction=0.1, seed=0)"
# The val split carved out of the train split (data/holdout.py): every dataset then has one.
VAL_SPLIT_FIELDS: Dict[str, Field] = {
    "fraction": Field(
        "float",
        0.0,
        "share of the train split held out as the val split, stratified per class (0 = off); those images are in no train split: not the teacher's, the cache's or a student's",
        _fraction_below_one,
    ),
    "seed": Field("int", 0, "seed of the val split's tie-breaking (independent of the config's seed)", _at_least(0)),
}


def _hard_losses() -> Sequence[str]:
    from .losses.hard import HARD_LOSSES  # the registry owns the names; imported here, as the losses need torch

    return HARD_LOSSES.names()


FIELDS: Dict[str, Field] = {
    # L2D seed keys
    "dataset": Field(
        "str", "digits", f"dataset name: {', '.join(DATASET_NAMES[:-1])} or {DATASET_NAMES[-1]}", _one_of(*DATASET_NAMES)
    ),
    "teacher_pretrained": Field("bool", False, "the teacher is already trained (teacher-train then only checks OUT/teacher.pt)"),
    "img_size": Field("int", 224, "input side in pixels (images are resized to img_size x img_size)", _at_least(16)),
    "batch_size": Field("int", 64, "batch size per process", _at_least(1)),
    "model_t": Field("str", "resnet101", "teacher backbone: a seed name (resnet101, wrn50, swin_t, ...) or any timm model"),
    "lr_t": Field("float", 1e-4, "teacher peak learning rate (OneCycle)", _positive),
    "max_epoch_t": Field("int", 80, "teacher epochs the OneCycle schedule is planned for", _at_least(1)),
    "stop_epoch_t": Field("int?", None, "teacher stops after this many epochs (None = max_epoch_t)", _at_least(1)),
    "model_s": Field("str", "resnet34", "student backbone: a seed name or any timm model"),
    "lr_s": Field("float", 1e-4, "student peak learning rate (OneCycle)", _positive),
    "max_epoch_s": Field("int", 80, "student epochs the OneCycle schedule is planned for", _at_least(1)),
    "stop_epoch_s": Field("int?", None, "student stops after this many epochs (None = max_epoch_s)", _at_least(1)),
    "criterion_t2s_para": Field(
        "dict", L2D_CRITERION, "distiller in the L2D seed format (lambda_ft/ft_dis, lambda_le/le_dis, lambda_logits/logits_dis)"
    ),
    # this tool's keys
    "data_root": Field("str?", None, "dataset folder (not needed for digits)"),
    "dataset_para": Field("dict", {}, "extra dataset arguments (e.g. csv file names, digits sizes)"),
    "dataset_para_t": Field(
        "dict",
        {},
        "dataset arguments for teacher-train only, over dataset_para (e.g. a larger digits train_size: a teacher that saw more images than its students; the cache covers dataset_para's train split)",
    ),
    "val_split": Field(
        "dict",
        {k: f.default for k, f in VAL_SPLIT_FIELDS.items()},
        "the val split held out of the train split (for eval_split='val' and decision thresholds)",
    ),
    "bad_images": Field(
        "str",
        "error",
        "an image file that cannot be decoded: error (stop, naming it) or skip (decode every image once at start-up, leave out the bad ones, warn with their count)",
        _one_of(*BAD_IMAGE_POLICIES),
    ),
    "workers": Field("int", 2, "DataLoader worker processes per rank", _at_least(0)),
    "seed": Field(
        "int",
        0,
        "base seed of initialisation, shuffling and every augmented view (a student distilled from a cache replays the cache's views)",
        _at_least(0),
    ),
    "pretrained_t": Field("str?", None, "local weights file for the teacher backbone (timm/torchvision state dict)"),
    "pretrained_s": Field("str?", None, "local weights file for the student backbone"),
    "embed_dim": Field("int", 768, "ML-Decoder label-wise embedding size E", _at_least(1)),
    "loss_t": Field("str", "bce", "teacher hard-label loss: bce (sum-reduced, as L2D) or asl", _OneOf(_hard_losses)),
    "loss_s": Field("str", "bce", "student hard-label loss: bce or asl", _OneOf(_hard_losses)),
    "asl_para": Field("dict", dict(gamma_neg=4.0, gamma_pos=0.0, clip=0.05), "ASL parameters (used when a loss is asl)"),
    "optimizer": Field("str", "adam", "adam or adamw (L2D: Adam, weight decay on weights only)", _one_of(*OPTIMIZERS)),
    "weight_decay": Field("float", 1e-4, "weight decay of non-bias, non-norm parameters", _at_least(0)),
    "pct_start": Field("float", 0.2, "OneCycle warm-up fraction", _open_unit_interval),
    "amp": Field("bool", True, "mixed precision on CUDA (ignored on CPU)"),
    "eval_every": Field("int", 1, "evaluate on eval_split every this many epochs (and after the last)", _at_least(1)),
    "eval_split": Field(
        "str",
        "test",
        "split scored during training and reported: test, or val to choose epochs and hyper-parameters without the test split (digits, csv with a val_file, and every dataset with val_split on have one)",
        _one_of(*EVAL_SPLITS),
    ),
    "log_every": Field("int", 10, "write the loss terms of every N-th training step to OUT/steps.jsonl (0 = off)", _at_least(0)),
    "tensorboard": Field(
        "bool",
        False,
        "also write what steps.jsonl and metrics.jsonl hold as TensorBoard event files in OUT/tensorboard/ (needs the tensorboard extra)",
    ),
    "replay_check": Field(
        "float",
        0.05,
        "share of each epoch's student inputs whose fingerprints are compared with the cache (0 = off)",
        _unit_interval,
    ),
    "transform": Field("dict", {k: f.default for k, f in TRANSFORM_FIELDS.items()}, "train augmentation spec"),
    "cache": Field("dict", {k: f.default for k, f in CACHE_FIELDS.items()}, "target cache settings"),
    "search_space": Field(
        "dict",
        {},
        "what mlkd-cache sweep tunes: a dict of dotted keys to 'log:LO:HI', 'float:LO:HI', 'int:LO:HI' or 'choice:A,B' ({} = each active loss weight and lr_s, log-uniform over a tenth to ten times the config's value; docs/sweep.md)",
    ),
}

_SUB_SCHEMAS: Dict[str, Dict[str, Field]] = {"transform": TRANSFORM_FIELDS, "cache": CACHE_FIELDS, "val_split": VAL_SPLIT_FIELDS}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _coerce(key: str, value: Any, kind: str) -> Any:
    """Return ``value`` checked (and, for int -> float, widened) against ``kind``."""
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} must not be None (expected {base})")
    ok: bool
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base == "dict":
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    elif base == "names":  # "auto", or a list of names (cache.fields)
        ok = value == "auto" or (isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(x, str) for x in value))
        value = value if value == "auto" or not ok else tuple(value)
    elif base == "float3":
        ok = (
            isinstance(value, (list, tuple))
            and len(value) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        )
        value = tuple(float(x) for x in value) if ok else value
    else:  # pragma: no cover - schema error
        raise AssertionError(kind)
    if not ok:
        expected = {"float3": "3 numbers", "names": "'auto' or a list of names"}.get(base, base)
        raise ConfigError(
            f"config key {key!r} must be {expected}{' or None' if optional else ''}, got {type(value).__name__} {value!r}"
        )
    return value


def _validate(values: Mapping[str, Any], schema: Mapping[str, Field], where: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in values:
        if key not in schema:
            raise ConfigError(f"unknown config key '{where}{key}'{did_you_mean(key, schema)}")
    for key, field in schema.items():
        value = copy.deepcopy(values[key]) if key in values else copy.deepcopy(field.default)
        value = _coerce(where + key, value, field.kind)
        if key in _SUB_SCHEMAS and where == "":
            value = _validate(value, _SUB_SCHEMAS[key], f"{key}.")
        if value is not None and field.check is not None:
            problem = field.check(value)
            if problem:
                hint = field.check.hint(value) if isinstance(field.check, _OneOf) else ""
                raise ConfigError(f"config key '{where}{key}' {problem}, got {value!r}{hint}")
        out[key] = value
    return out


def _check_relations(v: Dict[str, Any]) -> None:
    for role in ("t", "s"):
        stop, total = v[f"stop_epoch_{role}"], v[f"max_epoch_{role}"]
        if stop is not None and stop > total:
            raise ConfigError(f"config key 'stop_epoch_{role}' ({stop}) must not exceed 'max_epoch_{role}' ({total})")
    from .losses.hard import check_asl_para  # the loss owns its parameters; imported here, as the losses need torch

    check_asl_para(v["asl_para"], "config key 'asl_para'")
    for key in ("dataset_para", "dataset_para_t"):
        top_level = sorted({"bad_images", "workers"} & set(v[key]))  # build_dataset takes these itself
        if top_level:
            raise ConfigError(
                f"config key {key!r} holds {top_level[0]!r}, a top-level key; set {top_level[0]} = ... outside {key}"
            )
    pool_keys = sorted(set(v["dataset_para_t"]) - {"train_size"})
    if v["val_split"]["fraction"] > 0 and pool_keys:  # one pool, one val split for teacher and students
        raise ConfigError(
            f"config key 'dataset_para_t' sets {pool_keys[0]!r} while val_split is on: the teacher's train split would be "
            f"carved from other images than the students'; set it in dataset_para, or keep only train_size in dataset_para_t"
        )
    crit = v["criterion_t2s_para"]
    if "para" not in crit or not isinstance(crit.get("para"), Mapping):
        raise ConfigError("config key 'criterion_t2s_para' must be dict(name=..., para=dict(...))")
    from .losses.distiller import check_criterion  # imported here: the losses need torch

    check_criterion(crit)  # loss names, slots, weights and parameters, before any command works


# --------------------------------------------------------------------------------------------
# Config object
# --------------------------------------------------------------------------------------------


class Config:
    """A validated, read-only set of config values; attribute access (``cfg.img_size``).

    Build with :func:`load_config` or :meth:`from_dict`; :meth:`to_dict` gives a plain dict
    (JSON-able) that :meth:`from_dict` accepts again, for checkpoint snapshots.
    """

    __slots__ = ("_values", "source")

    def __init__(self, values: Mapping[str, Any], source: Optional[str] = None) -> None:
        validated = _validate(values, FIELDS, "")
        _check_relations(validated)
        object.__setattr__(self, "_values", validated)
        object.__setattr__(self, "source", source)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use replace(**changes)")

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickled as its values (validated again on load): a config crosses to spawned processes."""
        return (Config, (self.to_dict(), self.source))

    def replace(self, **changes: Any) -> "Config":
        """A new config with ``changes`` applied (validated again)."""
        merged = self.to_dict()
        for key, value in changes.items():
            if key in _SUB_SCHEMAS and isinstance(value, Mapping) and key in merged:
                value = {**merged[key], **value}
            merged[key] = value
        return Config(merged, self.source)

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self._values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: Optional[str] = None) -> "Config":
        return cls(values, source)

    @classmethod
    def from_record(cls, values: Mapping[str, Any], source: Optional[str] = None) -> "Config":
        """A config that an earlier version recorded (a model card's): the keys today's schema
        no longer has are dropped (what they set no longer exists), every other value is
        validated as :meth:`from_dict` validates it."""
        kept = {k: v for k, v in values.items() if k in FIELDS}
        for key, schema in _SUB_SCHEMAS.items():
            if isinstance(kept.get(key), Mapping):
                kept[key] = {k: v for k, v in kept[key].items() if k in schema}
        return cls(kept, source)

    def dataset_params(self, role: str) -> Dict[str, Any]:
        """Dataset arguments of role ``"t"`` (``dataset_para`` with ``dataset_para_t`` over it) or
        ``"s"`` (``dataset_para``: the students' data, which the cache covers)."""
        params = dict(self._values["dataset_para"])
        if role == "t":
            params.update(self._values["dataset_para_t"])
        return copy.deepcopy(params)

    def epochs(self, role: str) -> Tuple[int, int]:
        """``(planned, run)`` epochs for role ``"t"`` or ``"s"``: the schedule length and where
        training stops."""
        total = self._values[f"max_epoch_{role}"]
        stop = self._values[f"stop_epoch_{role}"]
        return total, total if stop is None else stop

    def __repr__(self) -> str:
        return f"Config({self.source or '<dict>'})"


_SHOWN_DEFAULTS = {  # defaults too long for a table cell, said in words
    "criterion_t2s_para": "L2D's: `lambda_logits=10` × MLD, `lambda_le=1` × LED(`lambda_cd=100`, `lambda_id=1000`), no feature loss",
}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "`(" + ", ".join(repr(v) for v in value) + ")`"
    return f"`{value!r}`"


def reference_markdown() -> str:
    """The config reference of the README, from the key tables of this module: one row per key
    (``transform.*``, ``cache.*`` and ``val_split.*`` sub-keys each on their own row) with its type, default and
    meaning. A test keeps the README's copy equal to it."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in FIELDS.items():
        sub = _SUB_SCHEMAS.get(name)
        entries = [(f"{name}.{k}", f) for k, f in sub.items()] if sub else [(name, field)]
        for key, f in entries:
            kind = f.kind.replace("float3", "3 floats").replace("names", "auto or list").replace("?", " or None")
            default = _SHOWN_DEFAULTS.get(key) or _shown(f.default)
            rows.append(f"| `{key}` | {kind} | {default} | {f.doc} |")
    return "\n".join(rows) + "\n"


def shipped_configs_dir() -> Optional[Path]:
    """Folder of the configs shipped with the package (``configs/`` of the source tree)."""
    try:
        from importlib.resources import files

        return Path(str(files("mlkd_cache.configs")))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None


def resolve_config_path(value: str | Path) -> Path:
    """``value`` as given if that file exists, else the shipped config of that name
    (``digits/resnet10t_to_test_resnet_l2d.py`` or ``configs/digits/...``)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = shipped_configs_dir()
    if shipped is not None:
        parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
        candidate = shipped.joinpath(*parts) if parts else shipped
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {value}")


def read_config_file(path: str | Path) -> Dict[str, Any]:
    """Execute a config module and return its plain assignments (no validation)."""
    path = resolve_config_path(path)
    if path.suffix != ".py":
        raise ConfigError(f"config file must be a Python module (.py), got {path}")
    try:
        namespace = runpy.run_path(str(path))
    except SyntaxError as exc:
        raise ConfigError(f"config file {path} has a syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # a config that raises is the user's error, reported in one line
        raise ConfigError(f"config file {path} failed to run: {type(exc).__name__}: {exc}") from None
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }


class _DictCalls(ast.NodeTransformer):
    """``dict(a=1, b=dict())`` -> ``{'a': 1, 'b': {}}`` (the notation of config files), so that
    ``ast.literal_eval`` accepts it; any other call is left alone, so the value stays a bare string."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args and all(k.arg for k in node.keywords):
            return ast.Dict(keys=[ast.Constant(k.arg) for k in node.keywords], values=[k.value for k in node.keywords])
        return node


def parse_override(text: str) -> Tuple[str, Any]:
    """Parse one ``--set key=value`` item; the value is a Python literal (``dict(k=v, ...)``
    included, as in config files) or a bare string.

    Dotted keys address a sub-dict: ``cache.views=4``.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(_DictCalls().visit(ast.parse(raw.strip(), mode="eval")))
    except (ValueError, SyntaxError, TypeError):
        value = raw
    return key.strip(), value


def epochs_override(role: str, epochs: int) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
    """``(overrides, clear)`` for :func:`load_config` that plan and run ``epochs`` epochs of
    role ``"t"`` or ``"s"``: ``max_epoch_<role>`` is set and ``stop_epoch_<role>`` cleared, so a
    config that stopped its schedule early does not stop this one."""
    if role not in ("t", "s"):
        raise ValueError(f"role must be 't' or 's', got {role!r}")
    return {f"max_epoch_{role}": epochs}, (f"stop_epoch_{role}",)


def load_config(
    path: Optional[str | Path] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    clear: Iterable[str] = (),
    settings: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Read ``path`` (or start from defaults), reset the keys in ``clear`` to their defaults,
    apply ``overrides`` (named CLI options: ``None`` values are dropped so an unset option never
    overrides the file), then ``settings`` (``--set KEY=VALUE`` items: applied as given, ``None``
    included), and validate the result. Dotted keys address a sub-dict (``cache.views``)."""
    values: Dict[str, Any] = read_config_file(path) if path is not None else {}
    for key in clear:
        values.pop(key, None)
    given = [(k, v) for k, v in (overrides or {}).items() if v is not None] + list((settings or {}).items())
    for key, value in given:
        if "." in key:
            top, sub = key.split(".", 1)
            if top not in _SUB_SCHEMAS:
                raise ConfigError(f"config key {top!r} has no sub-keys{did_you_mean(top, _SUB_SCHEMAS)}")
            values[top] = {**dict(values.get(top, {})), sub: value}
        else:
            values[key] = value
    return Config(values, str(path) if path is not None else None)
