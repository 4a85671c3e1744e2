"""A small name -> factory registry, the shape timm uses for models.

``DATASETS = Registry("dataset")``; ``@DATASETS.register("voc")`` on a factory;
``DATASETS.get("voc")`` returns it; an unknown name raises :class:`ConfigError` listing the
valid names and the closest one.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, List, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=Callable)


def closest(name: str, candidates, n: int = 1, cutoff: float = 0.5) -> List[str]:
    """The ``n`` candidates closest to ``name`` (difflib ratio), best first."""
    return difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=cutoff)


class Registry:
    """Maps names to factories for one kind of thing (``kind`` appears in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._entries[name]
        except KeyError:
            hint = closest(name, self._entries)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean}; valid: {', '.join(self.names())}") from None

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
