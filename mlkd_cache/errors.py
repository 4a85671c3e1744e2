"""Error classes a user can cause, and the helpers that keep their messages to one line.

The library raises these and never prints or exits; the CLI turns any :class:`MlkdError` into
one line on stderr and exit code 2. Each class also inherits the matching builtin, so callers
may catch either (``except ValueError`` still works for a bad config value).

An optional package is imported through :func:`require_module`, which says in one line what
needs it and how to install it: with its extra of ``setup.cfg`` (:data:`EXTRAS`), else by name.
"""

from __future__ import annotations

import importlib
import re
import shlex
from types import ModuleType
from typing import Dict, Optional, Tuple

# The extras of setup.cfg ([options.extras_require], less ``test``) and the packages each
# installs: where an optional package comes from (tests/engine/test_export.py compares the two).
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "plot": ("matplotlib",),
    "tensorboard": ("tensorboard",),
    "deploy": ("onnx", "onnxruntime", "onnxscript"),
    "sweep": ("optuna", "matplotlib"),
}


class MlkdError(Exception):
    """Base class of every error whose cause is the user's input, files or environment."""


class ConfigError(MlkdError, ValueError):
    """A config file or option is unknown, of the wrong type, or impossible."""


class DataError(MlkdError, ValueError):
    """A dataset folder, annotation file or image is missing or malformed."""


class ModelError(MlkdError, ValueError):
    """A model name is unknown or a checkpoint does not fit the model."""


class MissingWeightsError(MlkdError, FileNotFoundError):
    """Pretrained weights were asked for but no readable local file was given."""


class CheckpointError(MlkdError, ValueError):
    """A checkpoint file is missing, unreadable or was written for something else."""


class CacheMismatchError(MlkdError, ValueError):
    """A target cache was built for other classes, labels, image size or transform."""


class CacheCorruptError(MlkdError, OSError):
    """A target cache file is truncated, missing or fails its checksum."""


class RunFolderError(MlkdError, ValueError):
    """A folder given as a training run has no readable metrics.jsonl or no finished epoch in it."""


class TrainingDiverged(MlkdError, ArithmeticError):
    """A training loss became non-finite: the run's settings (a learning rate, a loss weight) do
    not train; a sweep records the trial as failed and goes on."""


class MissingDependencyError(MlkdError, ImportError):
    """An optional dependency (a package extra) that the asked-for work needs is not installed."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line.

    An error raised inside a DataLoader worker reaches the main process re-wrapped, with the
    worker's traceback in its message; the last line of that text is the original message.
    """
    text = str(exc).strip()
    if "\n" not in text:
        return text
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    head, sep, rest = last.partition(": ")
    if sep and "." in head and " " not in head:  # "mlkd_cache.errors.DataError: msg"
        return rest
    return last


def clipped(text: str, limit: int = 160) -> str:
    """``text`` cut to at most ``limit`` characters at a space, never inside a word, with ``…``
    where it stops (a first word longer than ``limit`` is cut all the same)."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return head.rstrip() + "…"


def reason_of(exc: BaseException, limit: int = 160) -> str:
    """What a foreign exception (torch, onnxruntime, an exporter) says, for the parentheses of
    one line: its first non-empty line, :func:`clipped` to ``limit``; its type name when empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return clipped(lines[0], limit) if lines else type(exc).__name__


def install_hint(requirement: str) -> str:
    """How to install ``requirement`` (a package name, maybe with a version: ``click>=8.2``):
    ``pip install 'mlkd-cache[EXTRA]'`` for a package of an extra (:data:`EXTRAS`), else
    ``pip install REQUIREMENT``."""
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
    extra = next((extra for extra, packages in EXTRAS.items() if name in packages), None)
    return f"pip install 'mlkd-cache[{extra}]'" if extra else f"pip install {shlex.quote(requirement)}"


def missing_dependency(
    requirement: str, purpose: str, installed: Optional[str] = None, instead: Optional[str] = None
) -> MissingDependencyError:
    """The one line for ``purpose`` (what needs it: "plotting") lacking ``requirement``:
    ``PURPOSE needs REQUIREMENT (installed: VERSION): INSTALL HINT, INSTEAD``."""
    have = f" (installed: {installed})" if installed else ""
    alternative = f", {instead}" if instead else ""
    return MissingDependencyError(f"{purpose} needs {requirement}{have}: {install_hint(requirement)}{alternative}")


def require_module(module: str, purpose: str, package: Optional[str] = None, instead: Optional[str] = None) -> ModuleType:
    """Import the optional ``module``, or :class:`MissingDependencyError` in one line
    (:func:`missing_dependency`). ``package``: the package that provides it when that is not
    the module's first dotted name (``torch.utils.tensorboard`` needs ``tensorboard``);
    ``instead``: what the user may do without it ("or write csv or jsonl")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_dependency(package or module.split(".")[0], purpose, instead=instead) from None
