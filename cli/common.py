"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import click

from ..config import Config, epochs_override, load_config, parse_override, resolve_config_path

CONTEXT_SETTINGS = dict(help_option_names=["-h", "--help"], show_default=True, max_content_width=100)


class TeacherParam(click.ParamType):
    """``--teacher``: a teacher.pt (a :class:`Path`) or a factory ``package.module:function`` (a str)."""

    name = "TEACHER"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        from ..models.factory import is_factory_spec  # imported on use: --help stays light

        if isinstance(value, Path) or not is_factory_spec(str(value)):
            path = Path(value)
            if path.is_dir():
                self.fail(f"{path} is a folder; give the teacher.pt in it, or a factory package.module:function", param, ctx)
            return path
        return str(value)


TEACHER = TeacherParam()


def config_options(role: str, out_default: str = "runs/<config name>") -> Callable:
    """``--config`` plus the overrides every training command accepts; ``role`` is ``t``/``s``."""

    def decorate(fn: Callable) -> Callable:
        options = [
            click.option(
                "--config",
                "-c",
                "config_path",
                required=True,
                help="config file (.py), or a shipped one such as digits/resnet10t_to_test_resnet_l2d.py",
            ),
            click.option(
                "--out",
                "-o",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help=f"output folder  [default: {out_default}]",
            ),
            click.option("--data-root", default=None, help="dataset folder (overrides data_root)"),
            click.option("--model", default=None, help=f"backbone (overrides model_{role}): seed name or timm name"),
            click.option(
                "--pretrained",
                default=None,
                metavar="PATH",
                help=f"local backbone weights file (overrides pretrained_{role}); nothing is ever downloaded",
            ),
            click.option(
                "--epochs",
                type=click.IntRange(min=1),
                default=None,
                help=f"epochs to plan and run (sets max_epoch_{role}, clears stop_epoch_{role})",
            ),
            click.option(
                "--lr",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help=f"peak learning rate (overrides lr_{role})",
            ),
            click.option("--batch-size", type=click.IntRange(min=1), default=None, help="batch size per process"),
            click.option("--img-size", type=click.IntRange(min=16), default=None, help="input side in pixels"),
            click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers per process"),
            click.option(
                "--seed",
                type=click.IntRange(min=0),
                default=None,
                help="seed of initialisation, shuffling and augmented views (views from a cache keep the cache's seed)",
            ),
            click.option(
                "--set",
                "settings",
                multiple=True,
                metavar="KEY=VALUE",
                help="any config key, value as a Python literal (repeatable; cache.views=4 for sub-keys)",
            ),
            click.option(
                "--tensorboard",
                is_flag=True,
                help="also write the step and epoch logs as TensorBoard event files in OUT/tensorboard/ (sets tensorboard)",
            ),
            click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint"),
            click.option("--no-progress", is_flag=True, help="hide progress bars"),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


OUTPUT_RULE = "folders above it are made, an existing file is refused unless --overwrite"


def output_options(what: str, required: bool = True, default_text: str = "") -> Callable:
    """``--out/-o FILE`` and ``--overwrite`` of a command that writes one file (predict, export,
    tune-thresholds): one rule for all of them. ``what``: the file, in words; ``default_text``:
    what happens without ``--out`` when it is optional."""

    def decorate(fn: Callable) -> Callable:
        shown = f"  [default: {default_text}]" if default_text else ""
        fn = click.option("--overwrite", is_flag=True, help="replace the --out file when it exists")(fn)
        return click.option(
            "--out",
            "-o",
            type=click.Path(dir_okay=False, path_type=Path),
            required=required,
            default=None,
            help=f"{what}; {OUTPUT_RULE}{shown}",
        )(fn)

    return decorate


def build_config(role: str, config_path: str, settings: Iterable[str], **cli: Any) -> Config:
    """Load ``config_path`` with the named CLI options (unset ones never override) and then the
    ``--set`` items (``--set pretrained_t=None`` does clear a key) applied."""
    mapping = {
        "data_root": cli.get("data_root"),
        f"model_{role}": cli.get("model"),
        f"pretrained_{role}": cli.get("pretrained"),
        f"lr_{role}": cli.get("lr"),
        "batch_size": cli.get("batch_size"),
        "img_size": cli.get("img_size"),
        "workers": cli.get("workers"),
        "seed": cli.get("seed"),
        "tensorboard": True if cli.get("tensorboard") else None,  # a flag: left off, the config's value stays
    }
    clear: Iterable[str] = ()
    if cli.get("epochs") is not None:
        planned, clear = epochs_override(role, cli["epochs"])
        mapping.update(planned)
    given = dict(parse_override(item) for item in settings)
    return load_config(config_path, mapping, clear=clear, settings=given)


def default_out(config_path: str, out: Optional[Path]) -> Path:
    if out is not None:
        return out
    return Path("runs") / resolve_config_path(config_path).stem


def human_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def regime_options(fn: Callable) -> Callable:
    """The options that say where a student's targets come from (``distill-student`` and
    ``sweep`` alike): ``--cache``, ``--teacher``, ``--fresh-views``, ``--views``, ``--no-kd``."""
    options = [
        click.option(
            "--cache",
            type=click.Path(path_type=Path),
            multiple=True,
            help="cache folder written by dump-targets (offline distillation); its image store, if any, is the data (no dataset folder needed); with --no-kd or --teacher only its images are read. Repeat it to distil from several teachers (caches of the same views; the loss terms are averaged over teachers)",
        ),
        click.option(
            "--teacher",
            "-t",
            type=TEACHER,
            default=None,
            help="teacher.pt, or a factory package.module:function, run live on every batch instead of a cache: online on the cached views (those of the --cache whose image store it reads, else of a cache of --views views; the equivalence check), or with --fresh-views online on fresh views",
        ),
        click.option(
            "--fresh-views",
            is_flag=True,
            help="with --teacher: online on fresh views, a fresh augmentation every epoch (L2D's regime; the tables' 'online fresh' rows), instead of online on the cached views",
        ),
        click.option(
            "--views",
            type=click.IntRange(min=1),
            default=None,
            help="with --teacher, without --fresh-views: how many views the live teacher replays  [default: those of the --cache whose images it reads, else the config's cache.views]; give the V of the cache the run is compared with",
        ),
        click.option(
            "--no-kd",
            is_flag=True,
            help="no distillation: the hard-label loss alone, a fresh view every epoch, same loop and schedule (the baseline row of a KD table)",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
