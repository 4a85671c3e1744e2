"""Shipped config files (installed as ``mlkd_cache.configs`` so ``--config digits/<name>.py``
works from any folder). Each file is a plain Python module of assignments, read by
:func:`mlkd_cache.config.load_config`; this package file only makes the folder installable."""
