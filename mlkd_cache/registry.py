"""A small name -> factory registry, the shape timm uses for models.

``DATASETS = Registry("dataset")``; ``@DATASETS.register("voc")`` on a factory;
``DATASETS.get("voc")`` returns it; an unknown name raises :class:`ConfigError` listing the
valid names and the closest one. A registry made with ``names`` takes only those (a list that a
lower layer declares, so that it can check a name without importing the registry's layer).

:func:`did_you_mean` is the one spelling of a suggestion in every error that names a typo.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Iterable, List, Optional, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=Callable)


def closest(name: str, candidates: Iterable[str], n: int = 1, cutoff: float = 0.5) -> List[str]:
    """The ``n`` candidates closest to ``name`` (difflib ratio), best first."""
    return difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=cutoff)


def did_you_mean(name: str, candidates: Iterable[str], n: int = 1, cutoff: float = 0.5) -> str:
    """The suggestion an error appends after the name it refuses: ``" (did you mean 'img_size'?)"``
    (``'a', 'b' or 'c'`` with ``n`` > 1), or ``""`` when no candidate is close (:func:`closest`)."""
    hints = [repr(h) for h in closest(name, candidates, n=n, cutoff=cutoff)]
    if not hints:
        return ""
    listed = hints[0] if len(hints) == 1 else f"{', '.join(hints[:-1])} or {hints[-1]}"
    return f" (did you mean {listed}?)"


class Registry:
    """Maps names to factories for one kind of thing (``kind`` appears in error messages)."""

    def __init__(self, kind: str, names: Optional[Iterable[str]] = None, declared_in: str = "") -> None:
        """``names``: the only names it takes, declared in ``declared_in`` (said when another is registered)."""
        self.kind = kind
        self._entries: Dict[str, Callable] = {}
        self._declared = None if names is None else tuple(names)
        self._declared_in = declared_in

    def register(self, name: str) -> Callable[[T], T]:
        if self._declared is not None and name not in self._declared:
            raise KeyError(
                f"{self.kind} {name!r} is not declared; add it to {self._declared_in or 'the names this registry takes'}"
            )

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
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; valid: {', '.join(self.names())}"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
