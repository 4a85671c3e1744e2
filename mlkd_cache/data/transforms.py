"""Replayable augmentation: every augmented view is a pure function of ``(image, seed)``.

Offline distillation only works if the student sees, bit for bit, the picture the teacher saw
when its targets were dumped (DESIGN.md section 4). So the train transform never draws from an
RNG whose state depends on history (worker id, epoch, what ran before in the process); every
random decision derives from the *view seed* of one ``(sample, view)`` pair::

    view_seed(base_seed, key, view) = uint64_le(blake2b(f"{base_seed}:{key}:{view}", 8 bytes))

and a 64-bit :func:`fingerprint` of the resulting tensor is stored next to the cached targets so
that a diverging replay (other library version, other transform) is detected, not trained on.

Train pipeline (:class:`ReplayableTransform`, the L2D/ASL recipe plus options)::

    Resize(img_size, img_size) -> Cutout -> timm RandAugment -> horizontal flip
    -> ToTensor -> Normalize(mean, std)

Randomness sources, all derived from the view seed through :class:`numpy.random.SeedSequence`
(one independent child seed per consumer):

* our own steps (Cutout box and colour, flip) draw from a local ``numpy.random.Generator``;
* timm's RandAugment (``timm/data/auto_augment.py``, checked against timm 1.0.x) draws from the
  *global* generators and cannot be given one: ``RandAugment.__call__`` picks its ops with
  ``np.random.choice``; each ``AugmentOp`` uses ``random.random`` (apply probability),
  ``random.gauss`` / ``random.uniform`` (magnitude noise, ``mstd``) and ``random.choice`` (the
  resample filter when none is fixed) plus ``random.random`` in ``_randomly_negate``. It uses no
  torch randomness, and PIL operations themselves are deterministic. We therefore run it inside
  :func:`_seeded_global_rngs`, which takes a module-level lock, saves the states of ``random``
  and ``numpy.random``, seeds both from the view seed, runs, and restores the saved states.
  The call is thus a pure function of ``(image, seed)`` *and* invisible to other users of the
  global RNGs in this process (DataLoader shuffling, other augmentations, user code). The torch
  RNG is never used or touched.

The lock serialises our own calls across threads of one process (DataLoader workers are
processes, each with its own globals, so they never contend). It cannot stop *other* code in
another thread from drawing from ``random``/``numpy.random`` during the short window in which
RandAugment runs; such draws would see (and shift) our seeded state. Nothing in this project does
that; code that does should not share a process with a dump or a student run.

All tensor work is elementwise float32 (exactly rounded IEEE operations) on CPU, so the result
does not depend on the thread count or the machine; PIL's 8-bit resize and RandAugment ops are
integer/fixed-point and deterministic for a given Pillow version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from ..config import DECODE_MODES, INTERPOLATIONS, TRANSFORM_FIELDS
from ..errors import ConfigError

__all__ = [
    "view_seed",
    "fingerprint",
    "to_signed",
    "to_unsigned",
    "TransformSpec",
    "ReplayableTransform",
    "EvalTransform",
    "to_pixels",
    "to_float",
    "input_table",
    "model_input",
]

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1

# --------------------------------------------------------------------------------------------
# Seeds and fingerprints
# --------------------------------------------------------------------------------------------


def view_seed(base_seed: int, sample_key: str, view: int) -> int:
    """The seed of one augmented view: the 8-byte blake2b digest of
    ``f"{base_seed}:{sample_key}:{view}"`` read as an unsigned little-endian 64-bit integer.

    ``view = -1`` is used by :class:`~mlkd_cache.data.views.ViewDataset` for the per-sample
    view offset; real views are ``>= 0``.
    """
    digest = hashlib.blake2b(f"{base_seed}:{sample_key}:{view}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=False)


def fingerprint(x: torch.Tensor) -> int:
    """64-bit blake2b fingerprint (unsigned) of the exact tensor: dtype name, shape and the raw
    bytes of its contiguous CPU copy. Any flipped bit, other dtype or other shape changes it
    (so do ``-0.0`` vs ``0.0`` and NaN payloads: it compares bytes, not values)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fingerprint expects a torch.Tensor, got {type(x).__name__}")
    t = x.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    h = hashlib.blake2b(digest_size=8)
    h.update(str(t.dtype).encode("ascii"))
    h.update(b"|")
    h.update(",".join(str(int(s)) for s in t.shape).encode("ascii"))
    h.update(b"|")
    if t.numel() > 0:
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little", signed=False)


def to_signed(u: int) -> int:
    """uint64 -> int64 with the same bits (two's complement), e.g. to put a fingerprint or seed
    into a ``torch.int64`` tensor."""
    u = int(u)
    if not 0 <= u < _U64:
        raise ValueError(f"to_signed expects an unsigned 64-bit integer, got {u}")
    return u - _U64 if u > _I64_MAX else u


def to_unsigned(s: int) -> int:
    """int64 -> uint64 with the same bits; inverse of :func:`to_signed`."""
    s = int(s)
    if not -(1 << 63) <= s <= _I64_MAX:
        raise ValueError(f"to_unsigned expects a signed 64-bit integer, got {s}")
    return s + _U64 if s < 0 else s


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------

_INTERPOLATIONS = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}

# RandAugment fill colour (ImageNet mean in 0-255, timm's convention).
_RA_IMG_MEAN = (124, 116, 104)


@dataclass(frozen=True)
class TransformSpec:
    """Everything that determines an augmented view besides the image and the seed."""

    img_size: int
    # defaults: config.TRANSFORM_FIELDS (a spec without "decode", from a cache written before the
    # key existed, means a full decode)
    cutout: float = TRANSFORM_FIELDS["cutout"].default
    randaugment: Optional[str] = TRANSFORM_FIELDS["randaugment"].default
    hflip: float = TRANSFORM_FIELDS["hflip"].default
    mean: Tuple[float, float, float] = TRANSFORM_FIELDS["mean"].default
    std: Tuple[float, float, float] = TRANSFORM_FIELDS["std"].default
    interpolation: str = TRANSFORM_FIELDS["interpolation"].default
    decode: str = TRANSFORM_FIELDS["decode"].default

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        if isinstance(self.img_size, bool) or not isinstance(self.img_size, (int, np.integer)) or self.img_size < 1:
            raise ConfigError(f"transform img_size must be a positive int, got {self.img_size!r}")
        set_("img_size", int(self.img_size))
        for key in ("cutout", "hflip"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"config key 'transform.{key}' must be in [0, 1], got {v!r}")
            set_(key, float(v))
        for key in ("mean", "std"):
            v = getattr(self, key)
            try:
                t = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                t = ()
            if len(t) != 3 or not all(np.isfinite(t)):
                raise ConfigError(f"config key 'transform.{key}' must be 3 finite numbers, got {v!r}")
            if key == "std" and not all(x > 0 for x in t):
                raise ConfigError(f"config key 'transform.std' entries must be > 0, got {v!r}")
            set_(key, t)
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"config key 'transform.interpolation' must be one of {', '.join(_INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if self.decode not in DECODE_MODES:
            raise ConfigError(f"config key 'transform.decode' must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        if self.randaugment is not None:
            if not isinstance(self.randaugment, str):
                raise ConfigError(f"config key 'transform.randaugment' must be a string or None, got {self.randaugment!r}")
            _build_randaugment(self)  # validates the timm config string

    @classmethod
    def from_config(cls, cfg: Any) -> "TransformSpec":
        """Build from a :class:`~mlkd_cache.config.Config` (``cfg.img_size``, ``cfg.transform``);
        missing transform keys take the defaults of ``config.TRANSFORM_FIELDS``."""
        transform = dict(getattr(cfg, "transform", None) or {})
        unknown = sorted(set(transform) - set(TRANSFORM_FIELDS))
        if unknown:
            raise ConfigError(f"unknown config key 'transform.{unknown[0]}'")
        values = {k: transform.get(k, f.default) for k, f in TRANSFORM_FIELDS.items()}
        return cls(img_size=cfg.img_size, **values)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TransformSpec":
        """Inverse of :meth:`to_dict` (e.g. from a cache's attributes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown transform spec key {unknown[0]!r}")
        return cls(**dict(d))

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {
            "img_size": self.img_size,
            "cutout": self.cutout,
            "randaugment": self.randaugment,
            "hflip": self.hflip,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            # "full" is left out, so the hashes of specs written before the key existed still match
            **({"decode": self.decode} if self.decode != "full" else {}),
        }

    @property
    def decode_size(self) -> Optional[int]:
        """The side a photograph may be decoded down to (``decode="reduced"``), else ``None``."""
        return self.img_size if self.decode == "reduced" else None

    def spec_hash(self) -> str:
        """16 hex chars of sha256 over the canonical JSON of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _build_randaugment(spec: TransformSpec) -> Any:
    from timm.data.auto_augment import rand_augment_transform

    if spec.randaugment is None:
        raise ValueError("the spec has no RandAugment")

    hparams = dict(translate_const=int(spec.img_size * 0.45), img_mean=_RA_IMG_MEAN)
    sections = spec.randaugment.split("-")
    # timm silently skips a section without a number ("rand-mfoo"); refuse it instead
    if sections[0] != "rand" or any(not (c.startswith("t") or re.fullmatch(r"[a-z]+\d[\d.e+]*", c)) for c in sections[1:]):
        raise ConfigError(
            f"config key 'transform.randaugment' must be a timm RandAugment string like "
            f"'rand-m9-n2-mstd0.5', got {spec.randaugment!r}"
        )
    try:
        return rand_augment_transform(spec.randaugment, hparams)
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"config key 'transform.randaugment' is not a valid timm RandAugment string: "
            f"{spec.randaugment!r} ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
        ) from None


# --------------------------------------------------------------------------------------------
# Global RNG isolation
# --------------------------------------------------------------------------------------------

_GLOBAL_RNG_LOCK = threading.Lock()


def _reinit_lock_after_fork() -> None:  # a fork while another thread held the lock must not deadlock the child
    global _GLOBAL_RNG_LOCK
    _GLOBAL_RNG_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_lock_after_fork)


@contextlib.contextmanager
def _seeded_global_rngs(py_seed: int, np_seed: np.ndarray) -> Iterator[None]:
    """Run a block with ``random`` and ``numpy.random`` seeded as given; restore their previous
    states afterwards (also on error). Holds a module-level lock for the duration."""
    with _GLOBAL_RNG_LOCK:
        py_state = random.getstate()
        np_state = np.random.get_state()
        try:
            random.seed(py_seed)
            np.random.seed(np_seed)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        if isinstance(seed, torch.Tensor) and seed.numel() == 1 and not seed.is_floating_point():
            seed = int(seed.item())
        else:
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:  # a signed int64 that travelled through a tensor
        seed = to_unsigned(seed)
    if seed >= _U64:
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    return seed


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def to_pixels(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> uint8 ``[3, H, W]`` tensor (what DataLoader workers hand over)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - images are converted to RGB first
        raise ValueError(f"expected an RGB image, got array of shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_float(pixels: torch.Tensor, mean: Tuple[float, ...], std: Tuple[float, ...]) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32 in [0, 1], then ``(x - mean) / std`` per channel: the
    model's input, computed by elementwise float32 operations (exactly rounded) on CPU."""
    x = pixels.to(torch.float32).div_(255.0)
    if tuple(mean) != (0.0, 0.0, 0.0) or tuple(std) != (1.0, 1.0, 1.0):
        m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        x.sub_(m).div_(s)
    return x


def _to_tensor(img: Image.Image, mean: Tuple[float, ...], std: Tuple[float, ...]) -> torch.Tensor:
    """uint8 RGB PIL image -> float32 [3, H, W] in [0, 1], then ``(x - mean) / std``."""
    return to_float(to_pixels(img), mean, std)


_TABLES: Dict[Tuple[Any, ...], torch.Tensor] = {}


def input_table(mean: Tuple[float, ...], std: Tuple[float, ...], device: torch.device) -> torch.Tensor:
    """float32 ``[3, 256]``: :func:`to_float` of every uint8 value in every channel, computed on
    CPU and copied to ``device`` (kept per device and normalisation)."""
    key = (tuple(float(x) for x in mean), tuple(float(x) for x in std), str(device))
    table = _TABLES.get(key)
    if table is None:
        values = torch.arange(256, dtype=torch.uint8).expand(3, 256).reshape(3, 256, 1)
        table = _TABLES[key] = to_float(values, key[0], key[1]).reshape(3, 256).to(device)
    return table


def model_input(image: torch.Tensor, spec: "TransformSpec", device: torch.device) -> torch.Tensor:
    """A batch ``[N, 3, H, W]`` as the model's float32 input on ``device``, channels-last on CUDA.

    uint8 pixels (what the training loaders hand over: 4x fewer bytes to copy, no float work in
    the workers) are looked up in :func:`input_table`, so the floats are bit for bit those of
    :func:`to_float` on CPU, on every device; float32 images pass unchanged."""
    cuda = device.type == "cuda"
    x = image.to(device, non_blocking=cuda)
    if x.dtype == torch.uint8:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"uint8 images must be [N, 3, H, W], got {tuple(x.shape)}")
        table = input_table(spec.mean, spec.std, device)
        out = torch.empty(x.shape, dtype=torch.float32, device=device)
        for c in range(3):  # one gather per channel (index_select takes int32 indices: half of int64's memory)
            out[:, c] = table[c].index_select(0, x[:, c].reshape(-1).int()).view(x.shape[0], *x.shape[2:])
        x = out
    elif x.dtype != torch.float32:
        raise TypeError(f"images must be uint8 pixels or float32 inputs, got {x.dtype}")
    return x.contiguous(memory_format=torch.channels_last) if cuda else x


def _rgb(img: Image.Image) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    return img if img.mode == "RGB" else img.convert("RGB")


class _SquareResize:
    """The deterministic first step every view of an image shares: RGB, resized to ``img_size``
    square with the spec's filter."""

    def __init__(self, spec: TransformSpec) -> None:
        self.spec = spec
        self._filter = _INTERPOLATIONS[spec.interpolation]

    def prepare(self, img: Image.Image) -> Image.Image:
        """RGB, resized to ``img_size`` square. An image already that size is kept as it is
        (Pillow's resize to an image's own size is a copy), so a prepared image gives the same
        views as the original: V views need one decode and one resize, and a cache's stored
        images need none."""
        s = self.spec.img_size
        img = _rgb(img)
        return img if img.size == (s, s) else img.resize((s, s), self._filter)


class EvalTransform(_SquareResize):
    """Deterministic test-time transform: resize to ``img_size`` square, ToTensor, Normalize."""

    def pixels(self, img: Image.Image) -> torch.Tensor:
        """uint8 ``[3, img_size, img_size]``: the eval view before the float conversion."""
        return to_pixels(self.prepare(img))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_float(self.pixels(img), self.spec.mean, self.spec.std)

    def __repr__(self) -> str:
        return f"EvalTransform({self.spec})"


class ReplayableTransform(_SquareResize):
    """Train transform whose output is a pure function of ``(image, seed)``.

    ``Resize -> Cutout -> RandAugment -> hflip -> ToTensor -> Normalize``; see the module
    docstring for where each random decision comes from.
    """

    def __init__(self, spec: TransformSpec) -> None:
        super().__init__(spec)
        self._randaugment = _build_randaugment(spec) if spec.randaugment is not None else None

    # the timm object is rebuilt on unpickling (spawned DataLoader workers) rather than shipped
    def __getstate__(self) -> Dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        ReplayableTransform.__init__(self, state["spec"])

    def _cutout(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """L2D/ASL-style Cutout: a box of side ``round(cutout * side)`` centred at a uniformly
        random pixel, clipped to the image, filled with a uniformly random RGB colour."""
        w, h = img.size
        bh = int(self.spec.cutout * h + 0.5)
        bw = int(self.spec.cutout * w + 0.5)
        yc = int(rng.integers(0, h))
        xc = int(rng.integers(0, w))
        colour = rng.integers(0, 256, size=3, dtype=np.int64).astype(np.uint8)
        y1, x1 = yc - bh // 2, xc - bw // 2
        y1c, y2c = max(y1, 0), min(y1 + bh, h)
        x1c, x2c = max(x1, 0), min(x1 + bw, w)
        out = img.copy()
        if y2c > y1c and x2c > x1c:  # a paste of one colour: the pixels of an array assignment, 10x cheaper
            out.paste(tuple(int(c) for c in colour), (x1c, y1c, x2c, y2c))
        return out

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        """float32 ``[3, img_size, img_size]``: :meth:`pixels` as the model's input."""
        return to_float(self.pixels(img, seed), self.spec.mean, self.spec.std)

    def pixels(self, img: Image.Image, seed: int) -> torch.Tensor:
        """uint8 ``[3, img_size, img_size]``: the augmented view of ``(img, seed)`` before the
        float conversion (:func:`to_float`, or :func:`model_input` on the device)."""
        seed = _check_seed(seed)
        own_ss, py_ss, np_ss = np.random.SeedSequence(seed).spawn(3)
        rng = np.random.Generator(np.random.PCG64(own_ss))
        img = self.prepare(img)
        if self.spec.cutout > 0:
            img = self._cutout(img, rng)
        if self._randaugment is not None:
            py_seed = int.from_bytes(py_ss.generate_state(4, np.uint32).tobytes(), "little")
            np_seed = np_ss.generate_state(8, np.uint32)
            with _seeded_global_rngs(py_seed, np_seed):
                img = self._randaugment(img)
            img = _rgb(img)
        if self.spec.hflip > 0 and rng.random() < self.spec.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_pixels(img)

    def __repr__(self) -> str:
        return f"ReplayableTransform({self.spec})"
