"""``mlkd-cache sweep``: tune a student's loss weights and learning rate from one cache."""

from __future__ import annotations

from pathlib import Path

import click

from .common import CONTEXT_SETTINGS, build_config, regime_options

EPILOG = """\b
Examples:
  mlkd-cache sweep -c configs/voc-rf144/resnet10t_to_test_resnet_l2d.py \\
      --data-root ../shared/data/voc2007-rf144 --cache runs/voc/cache -o runs/voc/sweep --trials 24
  mlkd-cache sweep -c CONFIG --no-kd -o runs/voc/sweep-no-kd --trials 24      # the baseline, tuned alike
  mlkd-cache sweep -c CONFIG --cache CACHE -o OUT --space lr_s=log:3e-4:3e-3 \\
      --space criterion_t2s_para.para.lambda_logits=log:1:100
  mlkd-cache sweep -c CONFIG --cache CACHE -o OUT --jobs 2                    # two local workers
  mlkd-cache sweep -c CONFIG --cache CACHE -o OUT --storage journal:/nfs/sweeps/voc.log   # one study, many machines
  mlkd-cache distill-student -c OUT/best.py --cache CACHE -o OUT/best         # the best trial, trained again
"""


@click.command("sweep", context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.option("--config", "-c", "config_path", required=True, help="config file (.py), or a shipped one")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="sweep folder: sweep.db (the default storage), trials/NNNN/, sweep.json, best.py, plots; run the same command again to go on",
)
@regime_options
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="trials to finish (complete, pruned or diverged), over every worker and run",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="local worker processes; each gets an equal share of the cores as threads and, with GPUs, one GPU",
)
@click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="the study's storage, shared by every worker and machine that names it: sqlite:///PATH (one machine), journal:PATH (a file on a shared filesystem) or an RDB URL  [default: sqlite:///OUT/sweep.db]",
)
@click.option("--study-name", default=None, help="study name in the storage  [default: <config name>-<offline|online|no-kd>]")
@click.option(
    "--space",
    "space_items",
    multiple=True,
    metavar="KEY=SPEC",
    help="a tuned key, over the config's search_space: lr_s=log:1e-4:1e-2, a dotted key into criterion_t2s_para, float:LO:HI, int:LO:HI, choice:A,B (repeatable)  [default: each active loss weight and lr_s, log-uniform over /10 to x10 of the config's value]",
)
@click.option("--metric", default="mAP", show_default=True, help="val metric to maximise (mAP, OF1_topk, CF1@0.5, ...)")
@click.option(
    "--pruner",
    type=click.Choice(["median", "none"]),
    default="median",
    show_default=True,
    help="median: stop a trial whose val score falls below the median of earlier trials at the same epoch (never in the first quarter of the epochs)",
)
@click.option("--no-plots", is_flag=True, help="write no PNG plots (history, importances, slices)")
@click.option("--data-root", default=None, help="dataset folder (overrides data_root)")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers per trial")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="any config key (repeatable)")
def sweep(
    config_path,
    out,
    cache,
    teacher,
    fresh_views,
    views,
    no_kd,
    trials,
    jobs,
    storage,
    study_name,
    space_items,
    metric,
    pruner,
    no_plots,
    data_root,
    workers,
    settings,
) -> None:
    """Tune the student of a config from one cache: each trial trains model_s with the config's
    epochs and the trial's loss weights and learning rate, scored on the val split (test is never
    scored); prints the trials best first, each tuned key's importance, and writes OUT/best.py,
    a config that distill-student trains into the best trial's student again."""
    from ..commands import sweep as sweep_command  # imported on use: --help stays free of torch
    from ..runtime.regimes import Regime
    from ..runtime.search_space import parse_space_item

    cfg = build_config("s", config_path, settings, data_root=data_root, workers=workers)
    regime = Regime.of(list(cache) or None, teacher, fresh_views=fresh_views, no_kd=no_kd, views=views)
    result = sweep_command.run(
        cfg,
        out,
        regime,
        trials=trials,
        jobs=jobs,
        storage=storage,
        study_name=study_name,
        space=[parse_space_item(item) for item in space_items],
        metric=metric,
        pruner=pruner,
        plots=not no_plots,
    )
    click.echo(sweep_command.render(result))
