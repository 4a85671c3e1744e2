"""The runtime: what the commands share. Training (``train``, ``students``, ``optim``), run
folders and logs (``runlog``), checkpoints and model cards (``checkpoint``), the checks across
ranks (``ranks``), teachers (``teachers``), the sources of teacher targets (``targets``,
``ensemble``), scoring and threshold tuning (``scoring``), student recipes (``recipes``) and the
deployed model's runners and file formats (``deploy``). Nothing here is a command."""
