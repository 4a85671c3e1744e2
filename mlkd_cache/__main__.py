"""``python -m mlkd_cache`` (and ``torchrun -m mlkd_cache``) runs the ``mlkd-cache`` CLI."""

from mlkd_cache.cli.main import main

main()
