"""mlkd-cache: offline multi-label knowledge distillation from a cached teacher."""

__version__ = "0.1.0"
