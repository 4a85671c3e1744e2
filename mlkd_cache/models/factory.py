"""Teachers from a user's own code: a factory ``package.module:function``.

The factory takes no arguments and returns ``(model, class_names)``: an ``nn.Module`` and the
``C`` class names in the order of its logits. The model's forward, on a float batch ``[N, 3, S,
S]`` prepared by the config's transform, returns any of:

* a tensor: the logits ``[N, C]`` (a plain timm classifier trained with BCE);
* an object with attributes ``logits`` and optionally ``label_emb`` ``[N, C, E]`` and
  ``features`` ``[N, D]`` (this tool's :class:`~mlkd_cache.models.Outputs`, a dataclass, ...),
  or a mapping with those keys; an attribute that is ``None`` or missing is not given;
* a tuple or list ``(logits, label_emb, features)``, the last two optional or ``None``.

:class:`FactoryTeacher` wraps the model so that its forward returns ``Outputs`` like every
teacher here, with ``None`` for what it does not give; :attr:`FactoryTeacher.outputs` names what
it gives (a :data:`~mlkd_cache.cache.format.TEACHER_OUTPUTS` subset, read once from a probe
forward pass). Its module is imported from ``sys.path``, with the working directory first, as
``python -m`` does.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, cast

import torch
from torch import Tensor, nn

from ..errors import ModelError, reason_of
from ..losses.base import MODEL_OUTPUTS, SIZE_DIMS
from .model import Outputs

__all__ = ["FactoryTeacher", "is_factory_spec", "resolve_factory", "build_factory_teacher", "weights_sha256"]

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
# A returned tuple's positions: the contract with a user's forward, every Outputs field once
# (tests/models/test_outputs.py checks it)
_ORDER = ("logits", "label_emb", "features")


def is_factory_spec(text: Any) -> bool:
    """True for ``package.module:function`` (and not an existing file of that name)."""
    return isinstance(text, str) and bool(_SPEC.match(text)) and not Path(text).exists()


def resolve_factory(spec: str) -> Callable[[], Any]:
    """Import the function ``spec`` names; raises :class:`ModelError` in one line naming the fix."""
    if not is_factory_spec(spec):
        raise ModelError(f"teacher factory {spec!r} is not package.module:function")
    module_name, attr = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: a factory next to the user's config imports
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"cannot import {module_name} for the teacher factory {spec} ({type(exc).__name__}: {exc}); run from the "
            f"folder that holds it or add that folder to PYTHONPATH"
        ) from None
    except Exception as exc:  # the user's module failed while importing: its own error, in one line
        raise ModelError(
            f"importing {module_name} for the teacher factory {spec} failed ({_first_line(exc)}); fix that module"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ModelError(f"{module_name} ({module.__file__}) has no function {attr!r} for the teacher factory {spec}")
    return cast(Callable[[], Any], fn)


def _first_line(exc: BaseException) -> str:
    """The user's error, typed, as :func:`~mlkd_cache.errors.reason_of` quotes it (cut at a word)."""
    return f"{type(exc).__name__}: {reason_of(exc)}" if str(exc).strip() else type(exc).__name__


def _field(raw: Any, name: str) -> Optional[Tensor]:
    if isinstance(raw, Mapping):
        return raw.get(name)
    return getattr(raw, name, None)


def read_outputs(raw: Any, num_classes: int, spec: str) -> Dict[str, Tensor]:
    """``{output: tensor}`` of what a factory model's forward returned (module docstring), each
    of the shape :data:`~mlkd_cache.losses.base.MODEL_OUTPUTS` gives it (``N`` the same for all,
    ``C`` = ``num_classes``)."""
    if isinstance(raw, Tensor):
        found: Dict[str, Any] = {"logits": raw}
    elif isinstance(raw, (tuple, list)) and not hasattr(raw, "_fields"):
        if not 1 <= len(raw) <= 3:
            raise ModelError(f"teacher factory {spec}: forward returned a {len(raw)}-tuple; return (logits, label_emb, features)")
        found = dict(zip(_ORDER, raw))
    else:
        found = {name: _field(raw, name) for name in _ORDER}
    if found.get("logits") is None:
        raise ModelError(
            f"teacher factory {spec}: forward returned a {type(raw).__name__} without logits; return the logits [N, C], "
            f"a (logits, label_emb, features) tuple or an object with .logits"
        )
    out = {name: value for name, value in found.items() if value is not None}
    for name, value in out.items():
        if not isinstance(value, Tensor):
            raise ModelError(f"teacher factory {spec}: its {name} is a {type(value).__name__}, not a tensor")
    logits = out["logits"]
    fixed = {"N": logits.shape[0] if logits.dim() else 0, "C": num_classes}
    for name, value in out.items():
        dims = MODEL_OUTPUTS[name].dims
        if value.dim() != len(dims) or any(value.shape[i] != fixed[d] for i, d in enumerate(dims) if d in fixed):
            raise ModelError(
                f"teacher factory {spec}: {name} has shape {list(value.shape)}, expected "
                f"{MODEL_OUTPUTS[name].shape({'C': num_classes})} "
                f"({num_classes} = the number of class names the factory returned)"
            )
    return out


class FactoryTeacher(nn.Module):
    """A user's model whose forward returns :class:`Outputs`: ``None`` for what it does not give."""

    def __init__(self, model: nn.Module, class_names: Sequence[str], spec: str) -> None:
        super().__init__()
        self.model = model
        self.class_names: List[str] = [str(c) for c in class_names]
        self.num_classes = len(self.class_names)
        self.spec = spec
        self.outputs: Tuple[str, ...] = ("logits",)
        self.feature_dim = 0
        self.embed_dim = 0

    def forward(self, x: Tensor) -> Outputs:
        found = read_outputs(self.model(x), self.num_classes, self.spec)
        lost = [name for name in self.outputs if name not in found]
        if lost:  # the probe saw them: a forward that sometimes omits an output would corrupt a cache
            raise ModelError(f"teacher factory {self.spec}: forward gave no {', '.join(lost)} this time, the first forward did")
        # the Outputs fields a factory model does not give are None (self.outputs names the others)
        return Outputs(**{name: cast(Tensor, found.get(name)) for name in Outputs._fields})

    @torch.no_grad()
    def probe(self, img_size: int) -> None:
        """Run one batch of two blank images ``[2, 3, S, S]`` (in eval mode) and record what the
        model gives: :attr:`outputs` (TEACHER_OUTPUTS order), :attr:`feature_dim`, :attr:`embed_dim`."""
        was_training = self.training
        self.eval()
        try:
            device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
            out = self(torch.zeros(2, 3, img_size, img_size, device=device))
        except ModelError:
            raise
        except Exception as exc:  # the user's forward: its own error, in one line
            raise ModelError(
                f"teacher factory {self.spec}: forward on a [2, 3, {img_size}, {img_size}] batch failed ({_first_line(exc)})"
            ) from None
        finally:
            self.train(was_training)
        self.outputs = tuple(name for name in Outputs._fields if getattr(out, name) is not None)
        for size in SIZE_DIMS.values():  # each size of SIZE_DIMS (feature_dim, embed_dim): 0 unless an output gives it
            setattr(self, size, 0)
        for name in self.outputs:
            for i, d in enumerate(MODEL_OUTPUTS[name].dims):
                if d in SIZE_DIMS:
                    setattr(self, SIZE_DIMS[d], int(getattr(out, name).shape[i]))


def build_factory_teacher(spec: str, img_size: int) -> FactoryTeacher:
    """Call the factory ``spec`` and wrap its model (eval mode, gradients off, on CPU as returned),
    probed at ``img_size``; raises :class:`ModelError` in one line for anything it returns wrong."""
    fn = resolve_factory(spec)
    try:
        made = fn()
    except ModelError:
        raise
    except Exception as exc:  # the user's factory (a weights file it cannot find, ...): one line
        raise ModelError(f"teacher factory {spec} failed ({_first_line(exc)})") from None
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise ModelError(f"teacher factory {spec} returned a {type(made).__name__}; return (model, class_names)")
    model, class_names = made
    if not isinstance(model, nn.Module):
        raise ModelError(f"teacher factory {spec} returned a {type(model).__name__} as its model; return an nn.Module")
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or not class_names:
        raise ModelError(f"teacher factory {spec}: class_names must be a non-empty list of names, got {class_names!r}")
    teacher = FactoryTeacher(model, class_names, spec)
    teacher.probe(img_size)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def weights_sha256(model: nn.Module) -> str:
    """sha256 (hex) of a model's ``state_dict``: names, dtypes, shapes and bytes in key order;
    what a cache records as the teacher's identity when there is no teacher file."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
