"""The package version, in one place (setup.cfg and every module read it from here)."""

__version__ = "0.1.0"
