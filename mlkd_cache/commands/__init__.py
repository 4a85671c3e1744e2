"""One module per CLI verb, each importing only the runtime and the layers below it (``demo``,
which runs the others end to end, is the one exception; ``tests/test_layers.py`` checks it)."""
