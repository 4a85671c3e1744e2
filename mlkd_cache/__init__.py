"""mlkd-cache: offline multi-label knowledge distillation from a cached teacher."""

from ._version import __version__

__all__ = ["__version__"]
